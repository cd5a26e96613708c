"""How nnvtv's objects show themselves: a short one-line ``repr`` and, in Jupyter, HTML.

Each result class's ``__repr__`` / ``_repr_html_`` calls a function here. They read only what
the object already holds (no forward pass, no model load, no file); the inline figures
(a site heatmap, a layer curve) are small PNGs drawn by :mod:`nnvtv.figures` and embedded as
base64. Nothing here raises: an object built by hand with missing or odd fields still prints
(a field that cannot be read shows as ``?``; HTML that cannot be built falls back to the text).
"""

from __future__ import annotations

import base64
import functools
import html
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # sites are only read (layer, head, group, stream)
    from nnvtv.sites import Site

__all__ = ["compact_sites", "never_raises"]

MAX_REPR = 200  #: a repr is one line of at most this many characters
IMAGE_DPI = 60  #: inline figures are small

T = TypeVar("T")


def _shorten(text: str, limit: int = MAX_REPR) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 2] + "…)"


def never_raises(kind: str) -> Callable[[Callable[..., T]], Callable[..., T | str | None]]:
    """Decorator: ``kind="repr"`` returns a one-line fallback, ``kind="html"`` returns ``None``
    (IPython then shows the text repr) instead of raising."""

    def wrap(fn: Callable[..., T]) -> Callable[..., T | str | None]:
        @functools.wraps(fn)
        def inner(obj: Any, *args: Any, **kwargs: Any) -> T | str | None:
            try:
                out = fn(obj, *args, **kwargs)
                return _shorten(out) if kind == "repr" and isinstance(out, str) else out
            except Exception as exc:  # noqa: BLE001 - a repr must never fail
                if kind == "repr":
                    return _shorten(f"{type(obj).__name__}(<cannot show: {type(exc).__name__}: {exc}>)")
                return None

        return inner

    return wrap


def field_of(obj: Any, name: str, default: Any = None) -> Any:
    try:
        return getattr(obj, name, default)
    except Exception:  # noqa: BLE001 - properties of half-built objects may fail
        return default


def num(value: Any, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals, ``"n/a"`` for ``None``, ``"?"`` for what is no number."""
    if value is None:
        return "n/a"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "?"
    return "nan" if math.isnan(v) else f"{v:.{digits}f}"


def _ranges(values: Sequence[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for v in sorted(set(values)):
        if out and v == out[-1][1] + 1:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return out


def _span(prefix: str, a: int, b: int) -> str:
    """``H3``, ``H0-H3``."""
    return f"{prefix}{a}" if a == b else f"{prefix}{a}-{prefix}{b}"


def compact_sites(sites: Iterable[Site], limit: int = 80) -> str:
    """Sites written short: ``L1.H0-H3@last``, ``L0-L3.H0-H3@last`` (a full grid),
    ``enc.L2.H1,H5@query``, ``L7@last``; cut to about ``limit`` characters (``… +N sites``)."""
    per_layer: dict[tuple[str, str, int], list[int | None]] = {}
    for s in sites:
        per_layer.setdefault((s.stream, s.group, s.layer), []).append(s.head)
    # heads of one layer as text, then consecutive layers with the same heads merged
    rows: list[tuple[str, str, int, str, int]] = []  # stream, group, layer, heads text, n sites
    for (stream, group, layer), heads in per_layer.items():
        hs = [h for h in heads if h is not None]
        text = ",".join(_span("H", a, b) for a, b in _ranges(hs)) if hs else ""
        rows.append((stream, group, layer, text, len(heads)))
    tokens: list[tuple[str, int]] = []
    i = 0
    while i < len(rows):
        stream, group, first, text, n = rows[i]
        last = first
        while i + 1 < len(rows) and rows[i + 1][:2] == (stream, group) and rows[i + 1][3] == text and rows[i + 1][2] == last + 1:
            i += 1
            last = rows[i][2]
            n += rows[i][4]
        prefix = f"{stream}." if stream else ""
        layers = _span("L", first, last)
        tokens.append((f"{prefix}{layers}{'.' + text if text else ''}@{group}", n))
        i += 1
    out, used = [], 0
    total = sum(n for _, n in tokens)
    for tok, n in tokens:
        if out and len(", ".join(out)) + len(tok) > limit:
            return ", ".join(out) + f", … +{total - used} sites"
        out.append(tok)
        used += n
    return ", ".join(out)


# ---------------------------------------------------------------------------- one-line reprs


def _model_task(model: Any, task: Any) -> str:
    return f"{model if model else '?'} / {task if task else '?'}"


@never_raises("repr")
def scores_repr(s: Any) -> str:
    """``Scores(accuracy, 16 queries, 5-shot: zero-shot 0.062, ICL 1.000, task vector 1.000, 100% of the gap)``."""
    parts = [f"zero-shot {num(field_of(s, 'zero_shot'))}", f"ICL {num(field_of(s, 'icl'))}"]
    if field_of(s, "task_vector") is not None:
        parts.append(f"task vector {num(field_of(s, 'task_vector'))}")
    gap = field_of(s, "gap_closed")
    if gap is not None:
        parts.append(f"{gap:.0%} of the gap")
    warns = field_of(s, "warnings") or []
    tail = f"; {len(warns)} warning{'s' * (len(warns) != 1)}" if warns else ""
    return f"Scores({field_of(s, 'metric', '?')}, {field_of(s, 'n_queries', '?')} queries, {field_of(s, 'shots', '?')}-shot: {', '.join(parts)}{tail})"


def _of_icl(scores: dict[str, Any]) -> str:
    """``", 1.00 of ICL"`` (higher-is-better metrics) or ``", 99% of the gap"`` (lower-is-better)."""
    if not isinstance(scores, dict):
        return ""
    frac, gap = scores.get("fraction_of_icl"), scores.get("gap_closed")
    if isinstance(frac, (int, float)) and scores.get("higher_is_better", True):
        return f", {float(frac):.2f} of ICL"
    return f", {float(gap):.0%} of the gap" if isinstance(gap, (int, float)) else ""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


@never_raises("repr")
def task_vector_repr(v: Any) -> str:
    """``TaskVector(toy-text / toy-perm_c: 4 sites L1.H0-H3@last, replace, 1.00 of ICL)``."""
    sites = list(field_of(v, "values", None) or {})
    learned = ", learned values" if field_of(v, "learned") else ""
    return (
        f"TaskVector({_model_task(field_of(v, 'model'), field_of(v, 'task'))}: {_plural(len(sites), 'site')} {compact_sites(sites, 60)}, "
        f"{field_of(v, 'mode', '?')}{learned}{_of_icl(field_of(v, 'scores') or {})})"
    )


@never_raises("repr")
def search_result_repr(r: Any) -> str:
    """``SearchResult(toy-text / toy-perm_c, reinforce: task vector 1.000 vs ICL 1.000, zero-shot
    0.062; 4 of 16 sites; 2048 passes, 1.6 s)``."""
    tv, s = field_of(r, "task_vector"), field_of(r, "scores")
    space = field_of(r, "space")
    n_space = len(space) if space is not None else len(field_of(tv, "space", None) or [])
    total = (field_of(r, "timings") or {}).get("total")
    time_part = f", {total:.1f} s" if isinstance(total, (int, float)) else ""
    warns = field_of(r, "warnings") or []
    tail = f"; {len(warns)} warning{'s' * (len(warns) != 1)}" if warns else ""
    return (
        f"SearchResult({_model_task(field_of(tv, 'model'), field_of(tv, 'task'))}, {field_of(tv, 'strategy', '?')}: "
        f"task vector {num(field_of(s, 'task_vector'))} vs ICL {num(field_of(s, 'icl'))}, zero-shot {num(field_of(s, 'zero_shot'))}; "
        f"{len(field_of(tv, 'values', None) or {})} of {n_space} sites; {field_of(r, 'forward_passes', '?')} passes{time_part}{tail})"
    )


@never_raises("repr")
def comparison_repr(c: Any) -> str:
    """``Comparison(toy-perm_c, greedy, budget 256, 2 runs: toy-text TV 1.00 / ICL 1.00; ...)``."""
    runs = field_of(c, "runs") or []
    each = "; ".join(
        f"{field_of(r, 'label', '?')} TV {num((field_of(r, 'scores') or {}).get('task_vector'), 2)} / ICL {num((field_of(r, 'scores') or {}).get('icl'), 2)}"
        for r in runs
    )
    budget = field_of(c, "budget")
    return f"Comparison({field_of(c, 'task', '?')}, {field_of(c, 'strategy', '?')}, budget {budget or 'default'}, {len(runs)} runs: {each})"


@never_raises("repr")
def layer_sweep_repr(w: Any) -> str:
    """``LayerSweep(m / task: best layer 20 of 30 at 0.680 (ICL 0.750, zero-shot 0.000), 12.3 s)``."""
    layers = field_of(w, "layers") or []
    best = field_of(w, "best_layer") if layers and field_of(w, "accuracy") else None
    where = f"best layer {best} of {len(layers)} at {num(field_of(w, 'best_accuracy'))}" if best is not None else f"{len(layers)} layers"
    secs = field_of(w, "seconds")
    return (
        f"LayerSweep({_model_task(field_of(w, 'model'), field_of(w, 'task'))}: {where} (ICL {num(field_of(w, 'icl'))}, "
        f"zero-shot {num(field_of(w, 'zero_shot'))}){f', {secs:.1f} s' if isinstance(secs, (int, float)) else ''})"
    )


@never_raises("repr")
def function_vector_repr(f: Any) -> str:
    """``FunctionVector(m / task: 10 heads L8.H3@last, ... at layer 10: zero-shot 0.00 -> 0.45, ...)``."""
    heads = list(field_of(f, "heads") or [])
    return (
        f"FunctionVector({_model_task(field_of(f, 'model'), field_of(f, 'task'))}: {len(heads)} heads {compact_sites(heads, 40)} "
        f"added at layer {field_of(f, 'layer', '?')}: zero-shot {num(field_of(f, 'zero_shot'), 2)} -> {num(field_of(f, 'zero_shot_fv'), 2)}, "
        f"shuffled {num(field_of(f, 'shuffled'), 2)} -> {num(field_of(f, 'shuffled_fv'), 2)}, ICL {num(field_of(f, 'icl'), 2)})"
    )


@never_raises("repr")
def means_repr(m: Any) -> str:
    """``Means(toy-text / toy-perm_c: 16 sites L0-L3.H0-H3@last, 64 prompts, 5-shot)``."""
    meta = field_of(m, "meta") or {}
    sites = list(m)
    shots = f", {meta['shots']}-shot" if "shots" in meta else ""
    who = meta.get("model") if not meta.get("task") else _model_task(meta.get("model"), meta.get("task"))
    who = f"{who}: " if who else ""
    return f"Means({who}{_plural(len(sites), 'site')} {compact_sites(sites, 60)}, {field_of(m, 'count', '?')} prompts{shots}, fingerprint {str(field_of(m, 'fingerprint', '?'))[:10]})"


# ---------------------------------------------------------------------------- HTML pieces


def esc(value: Any) -> str:
    return html.escape(str(value))


def table(rows: Iterable[Sequence[Any]], header: Sequence[Any] | None = None, *, raw: bool = False) -> str:
    """An HTML table (cells escaped unless ``raw``)."""
    cell = (lambda v: str(v)) if raw else esc
    head = "<tr>" + "".join(f"<th>{cell(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def warnings_html(warnings: Iterable[str] | None) -> str:
    items = [w for w in (warnings or []) if w]
    if not items:
        return ""
    lis = "".join(f"<li>{esc(w)}</li>" for w in items)
    return f"<div><b>⚠ warnings</b><ul>{lis}</ul></div>"


def image(make: Callable[[], Any]) -> str:
    """``<img>`` of the figure ``make()`` builds (PNG, base64), or ``""`` if it cannot be drawn."""
    try:
        from nnvtv.figures import figure_png

        data = base64.b64encode(figure_png(make(), dpi=IMAGE_DPI)).decode("ascii")
    except Exception:  # noqa: BLE001 - a figure that cannot be drawn is left out
        return ""
    return f"<img src='data:image/png;base64,{data}' alt='figure'/>"


def box(title: str, *parts: str) -> str:
    return f"<div class='nnvtv'><p><b>{title}</b></p>{''.join(p for p in parts if p)}</div>"


def scores_rows(metric: Any, zero_shot: Any, icl: Any, tv: Any, shots: Any, frac: Any, gap: Any) -> list[list[str]]:
    rows = [["zero-shot", num(zero_shot)], [f"ICL ({shots}-shot)", num(icl)]]
    if tv is not None:
        share = f" ({float(frac):.0%} of ICL)" if isinstance(frac, (int, float)) else ""
        rows.append(["task vector", num(tv) + share])
        rows.append(["gap closed", f"{float(gap):.0%} of (ICL - zero-shot)" if isinstance(gap, (int, float)) else "n/a: ICL no better than zero-shot"])
    return rows
