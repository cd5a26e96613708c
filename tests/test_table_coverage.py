"""Every row of the causal-LM adapter table has a tiny config in ``conftest.FAMILIES``.

The parametrized family tests (``test_adapters``, ``test_patching``) only reach the rows that
have one, so a new row without a tiny config would go untested; this fails instead.
"""

from __future__ import annotations

from nnvtv.adapters.hf_causal_lm import ROWS


def test_row_names_are_unique():
    names = [row.name for row in ROWS]
    assert len(names) == len(set(names)), names


def test_every_row_has_a_tiny_config(kit):
    tested = {f.name for f in kit.FAMILIES.values()}
    missing = [row.name for row in ROWS if row.name not in tested]
    assert not missing, f"hf_causal_lm rows without a tiny config in tests/conftest.py: {missing}"


def test_every_model_type_and_class_of_a_row_has_a_tiny_config(kit):
    """A row serving several ``model_type`` values (olmo, olmo2) is tested on each of them."""
    for row in ROWS:
        families = [f for f in kit.FAMILIES.values() if f.name == row.name]
        types = {f.make_config().model_type for f in families}
        classes = {c.__name__ for f in families for c in f.cls.__mro__}
        assert set(row.model_types) <= types, (row.name, set(row.model_types) - types)
        assert set(row.model_classes) <= classes, (row.name, set(row.model_classes) - classes)
