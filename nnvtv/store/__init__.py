"""One persistence helper for every object nnvtv saves: a JSON info file + a safetensors file.

A *bundle* is named by a stem path: ``<stem>.json`` holds a JSON object whose ``format``
field tags what it is (``"nnvtv.task_vector/1"``), ``<stem>.safetensors`` holds named
tensors (absent for JSON-only bundles such as a comparison). Each saved type declares a
:class:`Schema`: its format tag, every JSON field (kind, required or default) and its
tensors (fixed names, or the names listed in one JSON field; number of dimensions; finite).

:func:`load` is strict: a missing file, corrupt JSON or safetensors, a foreign or wrong format
tag, a missing, unexpected or mistyped field, a tensor listed in the JSON but absent from the
safetensors file (or the reverse), a non-float, misshapen or non-finite tensor each raise
:class:`~nnvtv.errors.CheckpointError` naming the file, the field, what was found, what was
expected, and how to fix it. :func:`save` checks what it writes the same way, writes both
files to temporary names in the target folder and renames them into place, the JSON last:
a reader never sees a JSON beside tensors it was not written with (an interrupted save
leaves the JSON missing, and the bundle reads as absent, never as complete).

>>> SCHEMA = Schema("nnvtv.demo/1", "demo", "Demo.save", {"name": Field(STR)}, Tensors(names=("w",)))
>>> save("out/demo", SCHEMA, {"name": "x"}, {"w": torch.zeros(3)})
>>> info, tensors = load("out/demo", SCHEMA)
"""

from nnvtv.store.bundle import field_error, load, save
from nnvtv.store.schema import (
    ANY_DICT,
    BOOL,
    INT,
    NUMBER,
    SITE,
    STR,
    Field,
    Kind,
    Record,
    Schema,
    Tensors,
    at_least,
    dict_of,
    list_of,
    nullable,
    one_of,
    paths,
)

__all__ = [
    "ANY_DICT",
    "BOOL",
    "INT",
    "NUMBER",
    "SITE",
    "STR",
    "Field",
    "Kind",
    "Record",
    "Schema",
    "Tensors",
    "at_least",
    "dict_of",
    "field_error",
    "list_of",
    "load",
    "nullable",
    "one_of",
    "paths",
    "save",
]
