"""Execute the tutorials and store their outputs, or check that the stored outputs are current.

    python tutorials/execute.py                 # execute every notebook, write its outputs in place
    python tutorials/execute.py 01 quickstart   # only these (a number, a name or a part of one)
    python tutorials/execute.py --check         # execute copies; exit 1 if a stored output is stale
    python tutorials/execute.py --list          # the notebooks, what they need, their last run time

Each notebook runs top to bottom in a fresh Jupyter kernel (``python3``), with its working
directory in ``tutorials/``, matplotlib's inline backend, ``HF_HUB_OFFLINE=1`` (nothing is
downloaded), no ``NDIF_API_KEY`` (tutorial 4's NDIF cell then says it sent nothing; run that
notebook by hand in Jupyter to use NDIF) and ``NNVTV_TUTORIAL_OUT`` set to a temporary folder,
where the notebook writes its files (a reader running it by hand gets ``tutorials/runs/``,
which git ignores). A notebook's metadata may name modules it ``needs`` (it is skipped
without them) and mark it ``slow`` (``tests/test_tutorials.py`` runs it only with
``NNVTV_SLOW_TUTORIALS=1``; this script always runs it). Stored
outputs are scrubbed: that folder reads ``runs``, the repository ``.``, the home folder ``~``;
no execution timestamps, no Python version in the metadata.

``tests/test_tutorials.py`` runs ``--check`` on every notebook (``pytest`` runs it).

What ``--check`` fails on
--------------------------
* a cell that raises (the error names the cell);
* a code cell with no output (nothing printed, displayed or returned) unless it is tagged
  ``no-output`` (the set-up cells); progress bars and status lines do not count as output;
* a **stale** stored output. The fresh run's outputs are compared cell by cell with the stored
  ones, after normalisation:

  - code cells must have the same source (edit a cell, re-execute the notebook);
  - progress bars and ``nnvtv: ... done in X s`` status lines are skipped (they hold timings
    and depend on caches, e.g. a first SmolLM2 conversion); so is ``stderr``;
  - figures (``image/png``) are compared by presence only, never by bytes; an HTML output's
    inline ``<img src="data:...">`` is reduced to ``<img>``;
  - rich outputs are compared by their ``text/html``, others by ``text/plain`` / ``stdout``;
  - durations (``21.5 s``, ``300 ms``, ``2 min``) and object addresses (``0x7f...``) are masked;
  - the text between numbers must match exactly (whitespace runs count as one space);
  - **numbers**: integers must be equal; a decimal ``a`` (stored) and ``b`` (fresh) match when
    ``|a - b| <= ATOL + RTOL * max(|a|, |b|)`` with ``ATOL = 0.01`` and ``RTOL = 0.02``, a
    percentage when ``|a - b| <= 100 * ATOL + RTOL * max(|a|, |b|)`` (one point plus 2%).

  That tolerance absorbs the last displayed digit flipping under float noise (``0.062`` vs
  ``0.063``, ``77%`` vs ``78%``); a score moving by one held-out query (1/16 = 0.0625), a
  different site, site count or forward-pass count is stale. The outputs are made on CPU with
  2 torch threads (the notebooks set it) and every run is seeded.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TUTORIALS = Path(__file__).resolve().parent
REPO = TUTORIALS.parent
ATOL = 0.01
RTOL = 0.02
TIMEOUT = 600  # seconds per cell
NO_OUTPUT_TAG = "no-output"
INLINE = "module://matplotlib_inline.backend_inline"
#: notebook metadata key: ``{"needs": [importable modules], "slow": bool, "seconds": last run time}``
META = "nnvtv"
#: removed from the kernel's environment: a notebook's NDIF cell says it was not run
HIDDEN = ("NDIF_API_KEY",)

__all__ = [
    "ATOL", "RTOL", "notebooks", "execute", "scrub", "compare", "missing_outputs", "check", "store", "needs_missing",
    "is_slow",
]


def notebooks(names: list[str] | None = None) -> list[Path]:
    """The tutorial notebooks, in order; ``names`` selects by number, name or part of one."""
    paths = sorted(TUTORIALS.glob("[0-9][0-9]_*.ipynb"))
    if not names:
        return paths
    out = []
    for name in names:
        hits = [p for p in paths if p.stem == name or p.stem.startswith(name + "_") or name in p.stem]
        if not hits:
            raise SystemExit(f"no tutorial matches {name!r}; there are: {', '.join(p.stem for p in paths)}")
        out += [p for p in hits if p not in out]
    return out


def read(path: Path) -> Any:
    import nbformat

    return nbformat.read(path, as_version=4)


def needs_missing(nb: Any) -> list[str]:
    """Modules the notebook needs (its ``nnvtv.needs`` metadata) that are not installed here."""
    import importlib.util

    return [m for m in nb.metadata.get(META, {}).get("needs", []) if importlib.util.find_spec(m) is None]


def is_slow(nb: Any) -> bool:
    """Marked ``slow`` in its metadata (the test runs it only with ``NNVTV_SLOW_TUTORIALS=1``)."""
    return bool(nb.metadata.get(META, {}).get("slow"))


# ------------------------------------------------------------------------------------ running


def execute(nb: Any, out_dir: Path, *, timeout: int = TIMEOUT) -> Any:
    """Run ``nb`` (a copy) in a fresh kernel; returns the executed copy, scrubbed.

    Raises ``nbclient.exceptions.CellExecutionError`` naming the cell that failed.
    """
    import nbclient

    nb = copy.deepcopy(nb)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(NNVTV_TUTORIAL_OUT=str(out_dir), MPLBACKEND=INLINE, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONWARNINGS="ignore", TOKENIZERS_PARALLELISM="false")  # fmt: skip
    env.pop("NNVTV_PROGRESS", None)  # the notebooks show their progress bars
    for key in HIDDEN:  # stored outputs never depend on (or show) a key
        env.pop(key, None)
    client = nbclient.NotebookClient(
        nb, timeout=timeout, kernel_name="python3", record_timing=False, kernel_manager_class=_this_python(),
        resources={"metadata": {"path": str(TUTORIALS)}},
    )  # fmt: skip
    t0 = time.perf_counter()
    client.execute(env=env)
    nb.metadata.setdefault(META, {})["seconds"] = round(time.perf_counter() - t0)
    return scrub(nb, out_dir)


def _this_python() -> type:
    """A kernel manager whose ``python3`` kernel is this interpreter (``sys.executable``), whatever
    kernel specs the machine has installed (a system-wide ``python3`` spec may be another Python)."""
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    class ThisPython(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
            return KernelSpec(argv=argv, display_name="Python 3", language="python", resource_dir="")

    class Manager(AsyncKernelManager):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.kernel_spec_manager = ThisPython()

    return Manager


def scrub(nb: Any, out_dir: Path) -> Any:
    """Remove machine-specific text from the outputs and metadata of ``nb`` (in place)."""
    replacements = [(str(Path(out_dir).resolve()), "runs"), (str(out_dir), "runs"), (str(REPO), "."), (str(Path.home()), "~")]

    def fix(text: str) -> str:
        for old, new in replacements:
            text = text.replace(old, new)
        return text

    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        cell.outputs = coalesce(cell.get("outputs", []))
        for out in cell.outputs:
            if "text" in out:
                out["text"] = fix(out["text"])
            for mime, value in out.get("data", {}).items():
                if isinstance(value, str) and not mime.startswith("image/"):
                    out["data"][mime] = fix(value)
            if out.get("output_type") == "error":
                out["traceback"] = [fix(t) for t in out.get("traceback", [])]
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata.pop("widgets", None)
    return nb


def coalesce(outputs: list[Any]) -> list[Any]:
    """Consecutive ``stdout`` (or ``stderr``) pieces joined into one output: how a kernel cuts a
    stream depends on timing (it flushes every few tenths of a second)."""
    merged: list[Any] = []
    for out in outputs:
        prev = merged[-1] if merged else None
        if out.get("output_type") == "stream" and prev is not None and prev.get("output_type") == "stream" and prev.get("name") == out.get("name"):
            prev["text"] = _text(prev["text"]) + _text(out["text"])
        else:
            merged.append(copy.deepcopy(out))
    return merged


def store(path: Path, nb: Any) -> None:
    import nbformat

    nbformat.write(nb, path)


# ------------------------------------------------------------------------------------ comparing

_PROGRESS = re.compile(r"^\s*(<table class='nnvtv-progress'>|<code>nnvtv: )")
_IMG = re.compile(r"<img\b[^>]*>")
_TIME = re.compile(r"\b\d+(?:\.\d+)?\s?(?:s|ms|min|seconds?)\b")
_ADDR = re.compile(r"0x[0-9a-fA-F]{4,}")
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:[eE][-+]?\d+)?%?")


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def is_progress(out: Any) -> bool:
    """A progress bar or a status line of nnvtv (a display updated in place)."""
    html = out.get("data", {}).get("text/html")
    return html is not None and bool(_PROGRESS.match(_text(html)))


def view(out: Any) -> tuple[str, str] | None:
    """What is compared of one output: ``(kind, text)``, or ``None`` when it is skipped."""
    kind = out.get("output_type")
    if kind == "stream":
        return None if out.get("name") == "stderr" else ("stdout", _text(out.get("text", "")))
    if kind == "error":
        return ("error", f"{out.get('ename')}: {out.get('evalue')}")
    if kind not in ("display_data", "execute_result") or is_progress(out):
        return None
    data = out.get("data", {})
    if "text/html" in data:
        return ("html", _IMG.sub("<img>", _text(data["text/html"])))
    if any(m.startswith("image/") for m in data):
        return ("image", "")
    return ("text", _text(data.get("text/plain", "")))


def views(cell: Any) -> list[tuple[str, str]]:
    """The compared outputs of a cell, consecutive ``stdout`` pieces joined."""
    out: list[tuple[str, str]] = []
    for v in (view(o) for o in cell.get("outputs", [])):
        if v is None:
            continue
        if out and v[0] == "stdout" and out[-1][0] == "stdout":
            out[-1] = ("stdout", out[-1][1] + v[1])
        else:
            out.append(v)
    return out


def _normal(text: str) -> str:
    return " ".join(_ADDR.sub("0x…", _TIME.sub("<time>", text)).split())


def _close(a: str, b: str) -> bool:
    if a == b:
        return True
    pct = a.endswith("%")
    if pct != b.endswith("%"):
        return False
    x, y = a.rstrip("%"), b.rstrip("%")
    if not pct and ("." not in x + y and "e" not in (x + y).lower()):
        return False  # integers are equal or different
    fx, fy = float(x), float(y)
    scale = 100 if pct else 1
    return abs(fx - fy) <= scale * ATOL + RTOL * max(abs(fx), abs(fy))


def same_text(stored: str, fresh: str) -> str | None:
    """``None`` when the two outputs match under the rule above, else what differs."""
    a, b = _normal(stored), _normal(fresh)
    words_a, words_b = _NUMBER.split(a), _NUMBER.split(b)
    nums_a, nums_b = _NUMBER.findall(a), _NUMBER.findall(b)
    if words_a != words_b:
        for i, (x, y) in enumerate(zip(words_a, words_b, strict=False)):
            if x != y:
                return f"text differs: stored {_around(words_a, nums_a, i)!r}, now {_around(words_b, nums_b, i)!r}"
        return f"text differs in length: stored {a[:300]!r}, now {b[:300]!r}"
    for i, (x, y) in enumerate(zip(nums_a, nums_b, strict=True)):
        if not _close(x, y):
            return f"number {x} is now {y} (in {_around(words_a, nums_a, i)!r})"
    return None


def _around(words: list[str], nums: list[str], i: int) -> str:
    """The text around the ``i``-th piece, for messages."""
    parts = []
    for j in range(max(0, i - 2), min(len(words), i + 3)):
        parts.append(words[j])
        if j < len(nums):
            parts.append(nums[j])
    return re.sub(r"<[^>]+>", " ", "".join(parts)).strip()[:200]


def compare(stored: Any, fresh: Any) -> list[str]:
    """What makes the outputs stored in ``stored`` stale against the ``fresh`` run (empty: current)."""
    a = [c for c in stored.cells if c.cell_type == "code"]
    b = [c for c in fresh.cells if c.cell_type == "code"]
    if len(a) != len(b):
        return [f"{len(a)} code cells stored, {len(b)} now"]
    problems = []
    for n, (x, y) in enumerate(zip(a, b, strict=True), 1):
        where = f"code cell {n} ({_first_line(x)})"
        if x.source != y.source:
            problems.append(f"{where}: its source changed since the outputs were stored")
            continue
        vx, vy = views(x), views(y)
        if [k for k, _ in vx] != [k for k, _ in vy]:
            problems.append(f"{where}: outputs stored {[k for k, _ in vx]}, now {[k for k, _ in vy]}")
            continue
        for (kind, tx), (_, ty) in zip(vx, vy, strict=True):
            diff = same_text(tx, ty)
            if diff:
                problems.append(f"{where}: {kind} output: {diff}")
                break
    return problems


def _first_line(cell: Any) -> str:
    lines = [line for line in cell.source.splitlines() if line.strip() and not line.startswith("#")]
    return (lines[0] if lines else "").strip()[:60]


def missing_outputs(nb: Any) -> list[str]:
    """Code cells (not tagged ``no-output``) with no output but progress bars."""
    out = []
    for n, cell in enumerate((c for c in nb.cells if c.cell_type == "code"), 1):
        if NO_OUTPUT_TAG in cell.metadata.get("tags", []):
            continue
        shown = [o for o in cell.get("outputs", []) if not is_progress(o) and not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
        if not shown:
            out.append(f"code cell {n} ({_first_line(cell)}) has no output")
    return out


def errors(nb: Any) -> list[str]:
    return [
        f"code cell {n} ({_first_line(c)}): {o.get('ename')}: {o.get('evalue')}"
        for n, c in enumerate((c for c in nb.cells if c.cell_type == "code"), 1)
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]


@dataclass
class Report:
    path: Path
    problems: list[str]
    seconds: float
    fresh: Any = None


def check(path: Path, out_dir: Path | None = None, *, timeout: int = TIMEOUT) -> Report:
    """Execute a copy of the notebook at ``path`` and list what is wrong with the stored one."""
    stored = read(path)
    problems = [f"stored: {p}" for p in missing_outputs(stored) + errors(stored)]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nnvtv-tutorial-") as tmp:
        fresh = execute(stored, Path(out_dir or tmp), timeout=timeout)
    seconds = time.perf_counter() - t0
    problems += [f"now: {p}" for p in missing_outputs(fresh)]
    problems += compare(stored, fresh)
    return Report(path, problems, seconds, fresh)


# ------------------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="notebooks to run (number, name or part of one); default: all")
    parser.add_argument("--check", action="store_true", help="execute copies and compare with the stored outputs; change nothing")
    parser.add_argument("--list", action="store_true", help="list the notebooks and exit")
    parser.add_argument("--timeout", type=int, default=TIMEOUT, help="seconds per cell (default %(default)s)")
    args = parser.parse_args(argv)
    paths = notebooks(args.names)
    if args.list:
        for p in paths:
            meta = read(p).metadata.get(META, {})
            slow = " (slow)" if meta.get("slow") else ""
            print(f"{p.name:36s} {meta.get('seconds', '?'):>4} s{slow:7s} needs: {', '.join(meta.get('needs', [])) or '-'}")
        return 0
    failed = 0
    total = time.perf_counter()
    for path in paths:
        nb = read(path)
        missing = needs_missing(nb)
        if missing:
            print(f"{path.name}: skipped, needs {', '.join(missing)}", flush=True)
            continue
        print(f"{path.name} ...", flush=True)
        if args.check:
            try:
                report = check(path, timeout=args.timeout)
            except Exception as exc:  # a cell raised: nbclient names it
                print(f"{path.name}: ERROR\n{exc}", flush=True)
                failed += 1
                continue
            status = "current" if not report.problems else "STALE"
            print(f"{path.name}: {status} ({report.seconds:.0f} s)", flush=True)
            for p in report.problems:
                print(f"  - {p}")
            failed += bool(report.problems)
        else:
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="nnvtv-tutorial-") as tmp:
                fresh = execute(nb, Path(tmp), timeout=args.timeout)
            store(path, fresh)
            gaps = missing_outputs(fresh)
            print(f"{path.name}: stored ({time.perf_counter() - t0:.0f} s, {path.stat().st_size / 1024:.0f} KB)", flush=True)
            for g in gaps:
                print(f"  - warning: {g}")
            failed += bool(gaps)
    print(f"total {time.perf_counter() - total:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
