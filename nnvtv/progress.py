"""Progress reports for long steps (model loads and conversions, mean collection, search, evaluation).

One event source, three displays. Library functions emit :class:`Progress` events
``(stage, completed, total, info, label)``; every long step accepts ``progress=``:

* ``None`` (the default): report. Inside another reporting call (``find`` inside ``compare``,
  ``evaluate`` inside ``find``) the events join the outer display; otherwise a new one is
  opened, unless ``NNVTV_PROGRESS=0`` (or ``nnvtv.progress.enabled = False``).
* ``True``: open a display even when ``NNVTV_PROGRESS=0``; ``False``: silent (nested calls too).
* a callable: receives the events (as before; :func:`nnvtv.compare` keeps its
  ``callback(label, event)`` and :func:`nnvtv.mean_activations` its ``callback(rows)``).

The display is chosen where it runs (:func:`choose_bar`):

* **Jupyter** (:func:`in_notebook`: an ipykernel shell; JupyterLab, Notebook, VS Code, Colab):
  :class:`NotebookBar`, one output updated in place through an IPython display handle
  (``display(..., display_id=True)`` then ``handle.update``), as HTML with a text/plain twin.
  Chosen over ``tqdm.auto`` and rich's Jupyter support because both draw their notebook bars
  with ipywidgets, which nnvtv does not depend on (without it tqdm warns "IProgress not found"
  and falls back to a text bar that re-prints on stderr, and rich warns and shows nothing
  live), and because a widget bar saved in a notebook shows on GitHub or in nbconvert as a
  widget placeholder, not as a bar. A display handle needs only IPython, which the kernel
  already has; nbclient applies the updates, so an executed tutorial stores the final bar as
  plain HTML that GitHub renders (block characters, no styles, which GitHub strips).
* **a terminal** (stderr is a TTY): :class:`RichBar`, the ``nnvtv`` CLI's rich bars (same columns).
* **anything else** (logs, CI, pytest, pipes): :class:`LineBar`, one line on stderr when a stage
  starts and one when it ends, like :func:`status`.

:func:`with_progress` turns a function's ``progress=`` argument into that display for the
duration of the call; :func:`status` reports a step that has no count (a model conversion).
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

__all__ = [
    "Progress", "ProgressArg", "ProgressSink", "RichBar", "NotebookBar", "LineBar",
    "status", "enabled", "in_notebook", "choose_bar", "reporting", "with_progress", "STAGES",
]

#: report long steps by default (``NNVTV_PROGRESS=0`` turns the default off)
enabled: bool = os.environ.get("NNVTV_PROGRESS", "1").strip().lower() not in ("0", "false", "no", "off")

#: how each stage is named on a bar
STAGES = {
    "load": "loading the model",
    "means": "mean activations",
    "search": "search",
    "evaluate": "held-out scores",
    "transfer": "transfer",
    "layers": "layer sweep",
    "cie": "causal indirect effects",
}


@dataclass(frozen=True)
class Progress:
    """A progress event.

    Attributes:
        stage: ``"load"``, ``"means"``, ``"search"``, ``"evaluate"``, ``"transfer"``,
            ``"layers"``, ``"cie"`` (:data:`STAGES`) or a caller's own.
        completed, total: how far the stage is (``total`` 0: unknown).
        info: details, e.g. the search's ``best_loss``, ``heldout``, ``n_sites``, ``strategy``.
        label: which run the event belongs to (a comparison's run label, a strategy name) or ``""``.
    """

    stage: str
    completed: int
    total: int
    info: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def description(self) -> str:
        """What a bar calls the stage: ``"toy-text#1: search (greedy)"``."""
        name = STAGES.get(self.stage, self.stage)
        if self.stage == "search" and self.info.get("strategy"):
            name += f" ({self.info['strategy']})"
        if self.stage == "load" and self.info.get("model"):
            name = f"loading {self.info['model']}"
        return f"{self.label}: {name}" if self.label else name

    @property
    def detail(self) -> str:
        """The short right-hand text: the search's best held-out score and site count."""
        if self.stage == "search" and self.info.get("heldout") is not None:
            return f"best mask so far: held-out {self.info['heldout']:.2f}, {self.info.get('n_sites', '?')} sites"
        return ""


#: what a ``progress=`` argument may be
ProgressArg = bool | Callable[..., Any] | None


class ProgressSink:
    """Receives :class:`Progress` events (``sink(event)``); ``close()`` ends its display.
    Also a context manager."""

    def __call__(self, event: Progress) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """End the display (idempotent)."""

    def __enter__(self) -> ProgressSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Callback(ProgressSink):
    """A user's event callback, as a sink (nested calls forward their events to it)."""

    def __init__(self, fn: Callable[[Progress], Any]):
        self.fn = fn

    def __call__(self, event: Progress) -> None:
        self.fn(event)


class _Silent(ProgressSink):
    def __call__(self, event: Progress) -> None:
        pass


SILENT = _Silent()
_current: ContextVar[ProgressSink | None] = ContextVar("nnvtv_progress", default=None)


def _bar_text(completed: int, total: int, width: int = 20) -> str:
    if total <= 0:
        return "░" * width
    filled = round(width * min(1.0, completed / total))
    return "█" * filled + "░" * (width - filled)


def _count(completed: int, total: int) -> str:
    return f"{completed}/{total}" if total > 0 else str(completed)


class _Rows:
    """Rows keyed by (label, stage): description, completed, total, start time, detail."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}

    def update(self, e: Progress) -> tuple[dict[str, Any], bool]:
        key = (e.label, e.stage)
        new = key not in self.rows
        row = self.rows.setdefault(key, {"t0": time.perf_counter(), "done": False})
        row.update(description=e.description, completed=e.completed, total=e.total, detail=e.detail or row.get("detail", ""))
        row["elapsed"] = time.perf_counter() - row["t0"]
        return row, new


class LineBar(ProgressSink):
    """One line on ``file`` (default stderr) when a stage starts, one when it ends: for logs,
    CI and anything that is not a terminal."""

    def __init__(self, file: Any = None):
        self.file = file
        self._rows = _Rows()

    def _print(self, text: str) -> None:
        print(f"nnvtv: {text}", file=self.file or sys.stderr, flush=True)

    def _end(self, row: dict[str, Any]) -> None:
        if not row["done"]:
            row["done"] = True
            extra = f" ({row['detail']})" if row["detail"] else ""
            count = "done" if row["total"] == 1 and row["completed"] == 1 else _count(row["completed"], row["total"])
            self._print(f"{row['description']}: {count} in {row['elapsed']:.1f} s{extra}")

    def __call__(self, event: Progress) -> None:
        row, new = self._rows.update(event)
        if new:
            for other in self._rows.rows.values():  # a new stage ends the ones before it
                if other is not row:
                    self._end(other)
            self._print(f"{row['description']} ...")
        if row["total"] > 0 and row["completed"] >= row["total"]:
            self._end(row)

    def close(self) -> None:
        for row in self._rows.rows.values():
            self._end(row)


class RichBar(ProgressSink):
    """The CLI's rich progress bars (one per stage and run) on ``console`` (default: stderr)."""

    def __init__(self, console: Any = None, *, transient: bool = False):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        self.bar = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[best]}"), console=console or Console(stderr=True), transient=transient,
        )
        self._tasks: dict[tuple[str, str], Any] = {}
        self._started = self._closed = False

    def __call__(self, event: Progress) -> None:
        if self._closed:
            return
        if not self._started:
            self.bar.start()
            self._started = True
        key = (event.label, event.stage)
        total = event.total if event.total > 0 else None
        if key not in self._tasks:
            self._tasks[key] = self.bar.add_task(event.description, total=total, best="")
        self.bar.update(self._tasks[key], description=event.description, completed=event.completed, total=total, best=event.detail)

    def close(self) -> None:
        if self._started and not self._closed:
            self.bar.stop()
        self._closed = True


def _display(obj: Any) -> Any:
    """``IPython.display.display(obj, display_id=True)``: a handle whose ``update`` redraws in place."""
    from IPython.display import display

    return display(obj, display_id=True)


class _BarView:
    """What a :class:`NotebookBar` shows: HTML for notebooks, plain text for consoles."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows

    def _repr_html_(self) -> str:
        from html import escape

        cells = "".join(
            "<tr>"
            f"<td style='text-align:left'>{escape(r['description'])}</td>"
            f"<td><code>{_bar_text(r['completed'], r['total'])}</code></td>"
            f"<td style='text-align:right'>{_count(r['completed'], r['total'])}</td>"
            f"<td style='text-align:right'>{r['elapsed']:.1f} s</td>"
            f"<td style='text-align:left'>{escape(r['detail'])}</td>"
            "</tr>"
            for r in self.rows
        )
        return f"<table class='nnvtv-progress'>{cells}</table>"

    def __repr__(self) -> str:
        return "\n".join(
            f"{r['description']}  {_bar_text(r['completed'], r['total'])}  {_count(r['completed'], r['total'])}"
            f"  {r['elapsed']:.1f} s  {r['detail']}".rstrip()
            for r in self.rows
        )


class NotebookBar(ProgressSink):
    """Progress in a notebook: one output cell updated in place (see the module docstring for
    why a display handle, not ipywidgets). Redraws at most every ``interval`` seconds, and
    whenever a stage starts or ends."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self._rows = _Rows()
        self._handle: Any = None
        self._last = 0.0
        self._closed = False

    def _draw(self) -> None:
        view = _BarView(list(self._rows.rows.values()))
        if self._handle is None:
            self._handle = _display(view)
        elif hasattr(self._handle, "update"):
            self._handle.update(view)
        self._last = time.perf_counter()

    def __call__(self, event: Progress) -> None:
        if self._closed:
            return
        row, new = self._rows.update(event)
        ended = row["total"] > 0 and row["completed"] >= row["total"]
        if new or ended or time.perf_counter() - self._last >= self.interval:
            self._draw()

    def close(self) -> None:
        if not self._closed and self._rows.rows:
            self._draw()
        self._closed = True


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (an ipykernel ``ZMQInteractiveShell``: Jupyter,
    VS Code, Colab); a plain IPython terminal is not one. Never imports IPython."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # noqa: BLE001 - detection must never fail
        return False
    return shell is not None and any(c.__name__ == "ZMQInteractiveShell" for c in type(shell).__mro__)


def _stderr_is_terminal() -> bool:
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


def choose_bar() -> ProgressSink:
    """The display for where this runs: :class:`NotebookBar` in Jupyter, :class:`RichBar` in a
    terminal, :class:`LineBar` elsewhere."""
    if in_notebook():
        return NotebookBar()
    if _stderr_is_terminal():
        return RichBar()
    return LineBar()


def current() -> ProgressSink | None:
    """The sink of the reporting call this runs inside, if any."""
    return _current.get()


@contextmanager
def reporting(progress: ProgressArg = None, *, events: bool = True) -> Iterator[Any]:
    """Resolve a ``progress=`` argument for the duration of one call (see the module docstring).

    Yields ``None`` when silent, the caller's callable itself when one was given, else a
    :class:`ProgressSink` (a new display, closed on exit, or the enclosing call's). Nested
    calls that get ``progress=None`` inherit it; ``events=False`` says a given callable does
    not take :class:`Progress` events (``compare``'s ``(label, event)``, ``mean_activations``'
    row counts), so nested calls are not sent to it.
    """
    if not (progress is None or isinstance(progress, bool) or callable(progress)):
        from nnvtv.errors import ConfigError

        raise ConfigError(f"progress must be None, True, False or a callable, got {progress!r}")
    outer = _current.get()
    owned: ProgressSink | None = None
    given: Any
    if progress is False:
        sink: ProgressSink = SILENT
        given = None
    elif callable(progress) and not isinstance(progress, bool):
        sink = progress if isinstance(progress, ProgressSink) else (_Callback(progress) if events else SILENT)
        given = progress
    elif outer is not None and (progress is None or outer is not SILENT):
        sink = outer
        given = None if outer is SILENT else outer
    elif progress is True or enabled:
        sink = owned = choose_bar()
        given = sink
    else:
        sink, given = SILENT, None
    token = _current.set(sink)
    try:
        yield given
    finally:
        _current.reset(token)
        if owned is not None:
            owned.close()


P = ParamSpec("P")
R = TypeVar("R")


def with_progress(fn: Callable[P, R] | None = None, *, events: bool = True) -> Any:
    """Decorator: the function's keyword ``progress=`` goes through :func:`reporting`; the body
    gets ``None`` (silent), the caller's callable, or a :class:`ProgressSink`, and can call
    ``progress(Progress(...))`` whenever it is not ``None``."""

    def wrap(f: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(f)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            with reporting(kwargs.pop("progress", None), events=events) as sink:
                return f(*args, progress=sink, **kwargs)

        return inner

    return wrap if fn is None else wrap(fn)


class _StatusView:
    def __init__(self, text: str):
        self.text = text

    def _repr_html_(self) -> str:
        from html import escape

        return f"<code>nnvtv: {escape(self.text)}</code>"

    def __repr__(self) -> str:
        return f"nnvtv: {self.text}"


@contextmanager
def status(message: str) -> Iterator[None]:
    """``nnvtv: <message> ...`` now, ``nnvtv: <message>: done in X s`` when the block ends: on
    stderr, or in a notebook as one output updated in place. Silent with ``NNVTV_PROGRESS=0``
    (``enabled = False``) or inside a call given ``progress=False``."""
    if not enabled or _current.get() is SILENT:
        yield
        return
    t0 = time.perf_counter()
    handle = _display(_StatusView(f"{message} ...")) if in_notebook() else None
    if handle is None:
        print(f"nnvtv: {message} ...", file=sys.stderr, flush=True)
    yield
    done = f"{message}: done in {time.perf_counter() - t0:.1f} s"
    if handle is not None and hasattr(handle, "update"):
        handle.update(_StatusView(done))
    else:
        print(f"nnvtv: {done}", file=sys.stderr, flush=True)
