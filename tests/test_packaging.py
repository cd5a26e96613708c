"""The installed package: ``adapters/`` is importable only as ``nnvtv.adapters``.

A top-level import package called ``adapters`` would shadow the unrelated PyPI package of
that name (installed by many Hugging Face users), so the installation must not provide one.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import nnvtv

REPO = Path(__file__).resolve().parents[1]

FIND_SPEC = (
    "import importlib.util,json;s=importlib.util.find_spec('adapters');"
    "print(json.dumps(None if s is None else s.origin))"
)


def _editable() -> bool:
    return Path(nnvtv.__file__).resolve().parent == REPO / "nnvtv"


def test_nnvtv_adapters_resolves_to_the_adapters_folder():
    where = Path(importlib.import_module("nnvtv.adapters").__file__).resolve().parent
    if _editable():
        assert where == REPO / "adapters"
    else:  # a regular install copies the folder into the package
        assert where == Path(nnvtv.__file__).resolve().parent / "adapters"
    assert {"gpt2", "llama", "vit", "vit_mae"} <= {s.name for s in nnvtv.list_adapters()}


def test_no_top_level_adapters_package_outside_the_repo(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", FIND_SPEC],
        cwd=tmp_path,  # so the repository root is not on sys.path
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    origin = json.loads(proc.stdout.strip().splitlines()[-1])
    if origin is not None:  # e.g. the unrelated PyPI "adapters" package: fine, it is not ours
        assert REPO not in Path(origin).resolve().parents, origin


# Run in a clean interpreter from a temp dir: in this process the repository root may be on
# sys.path (``python -m pytest``), where a stale ``nnvtv.egg-info`` would answer for the
# installed distribution.
METADATA = """
import importlib.metadata as md, json, sys
from pathlib import Path
dist = md.distribution("nnvtv")
files = [str(f) for f in (dist.files or [])]
finders = {}
for f in dist.files or []:
    if "__editable__" in str(f) and str(f).endswith((".py", ".pth")):
        finders[str(f)] = Path(f.locate()).read_text()
print(json.dumps({"files": files, "top_level": dist.read_text("top_level.txt") or "",
                  "finders": finders}))
"""


def _installed_metadata(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", METADATA],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_installed_files_hold_no_top_level_adapters(tmp_path):
    meta = _installed_metadata(tmp_path)
    tops = {Path(f).parts[0] for f in meta["files"]}
    assert "adapters" not in tops, sorted(tops)
    assert "adapters" not in meta["top_level"].split()
    if not meta["finders"]:  # a regular install: the folder lives inside the package
        assert any(Path(f).parts[:2] == ("nnvtv", "adapters") for f in meta["files"])


def test_editable_finder_maps_adapters_under_nnvtv(tmp_path):
    meta = _installed_metadata(tmp_path)
    mapping: dict[str, str] = {}
    for name, text in meta["finders"].items():
        if name.endswith(".pth"):
            # a legacy editable .pth putting the repository root on sys.path would expose
            # `adapters` as a top-level package
            entries = [
                ln.strip().rstrip("/") for ln in text.splitlines() if not ln.startswith("import")
            ]
            assert str(REPO) not in entries
        if name.endswith("_finder.py"):
            for node in ast.walk(ast.parse(text)):
                target = node.target if isinstance(node, ast.AnnAssign) else None
                if isinstance(node, ast.Assign):
                    target = node.targets[0]
                if isinstance(target, ast.Name) and target.id == "MAPPING":
                    mapping.update(ast.literal_eval(node.value))
    if not _editable():
        return
    assert mapping, "an editable install should map its packages in a finder"
    assert "adapters" not in mapping
    assert Path(mapping["nnvtv.adapters"]).resolve() == REPO / "adapters"
    assert Path(mapping["nnvtv"]).resolve() == REPO / "nnvtv"


def test_no_adapters_module_imported_by_nnvtv():
    mod = sys.modules.get("adapters")
    assert mod is None or REPO not in Path(getattr(mod, "__file__", "/") or "/").resolve().parents
    assert importlib.util.find_spec("nnvtv.adapters") is not None
