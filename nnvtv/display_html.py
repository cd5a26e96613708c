"""The HTML nnvtv's objects show in Jupyter (``_repr_html_``); the pieces are in :mod:`nnvtv.display`.

Each function reads only what its object holds and never raises (``None``: IPython shows the
text repr instead). Figures are small inline PNGs: a search result's site heatmap and history,
a task vector's heatmap, a comparison's four panels, a layer sweep's curve, a function
vector's CIE heatmap.
"""

from __future__ import annotations

from typing import Any

from nnvtv.display import (
    box,
    compact_sites,
    esc,
    field_of,
    image,
    never_raises,
    num,
    scores_rows,
    table,
    warnings_html,
)

__all__ = [
    "scores_html", "search_result_html", "task_vector_html", "comparison_html", "layer_sweep_html",
    "function_vector_html", "means_html", "site_space_html", "model_html", "learn_result_html",
]


def _sites_line(sites: list[Any], total: int | None) -> str:
    of = f" of {total}" if total else ""
    return f"{len(sites)}{of}: {compact_sites(sites, 400) or '(none)'}"


@never_raises("html")
def scores_html(s: Any) -> str:
    rows = scores_rows(field_of(s, "metric"), field_of(s, "zero_shot"), field_of(s, "icl"), field_of(s, "task_vector"), field_of(s, "shots", "?"),
                       field_of(s, "fraction_of_icl"), field_of(s, "gap_closed"))  # fmt: skip
    rows.append(["held-out queries", str(field_of(s, "n_queries", "?"))])
    direction = "higher is better" if field_of(s, "higher_is_better", True) else "lower is better"
    return box(f"Scores: held-out {esc(field_of(s, 'metric', '?'))} ({direction})", table(rows), warnings_html(field_of(s, "warnings")))


@never_raises("html")
def search_result_html(r: Any) -> str:
    from nnvtv.figures import result_figure

    tv, s, run = field_of(r, "task_vector"), field_of(r, "scores"), field_of(r, "run")
    space = field_of(r, "space")
    rows = scores_rows(field_of(s, "metric"), field_of(s, "zero_shot"), field_of(s, "icl"), field_of(s, "task_vector"), field_of(s, "shots", "?"),
                       field_of(s, "fraction_of_icl"), field_of(s, "gap_closed"))  # fmt: skip
    timings = field_of(r, "timings") or {}
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in timings.items() if k != "total" and isinstance(v, (int, float)))
    total = timings.get("total")
    passes = f"{field_of(r, 'forward_passes', '?')} of {field_of(run, 'budget', '?')}"
    if field_of(run, "gradient_rows"):
        passes += f" ({field_of(run, 'exact_rows', '?')} exact rows, {field_of(run, 'gradient_rows')} gradient rows x 3)"
    facts = [
        ["sites", _sites_line(list(field_of(tv, "values", None) or {}), len(space) if space is not None else None)],
        ["strategy", f"{field_of(tv, 'strategy', '?')}, mode {field_of(tv, 'mode', '?')}"],
        ["forward passes", passes],
        ["stopped by", str(field_of(run, "stop_reason", "?"))],
        ["wall time", (f"{total:.1f} s" if isinstance(total, (int, float)) else "?") + (f" ({steps})" if steps else "")],
    ]
    title = f"SearchResult: {esc(field_of(tv, 'model', '?'))} / {esc(field_of(tv, 'task', '?'))}"
    metric = esc(field_of(s, "metric", "?"))
    fig = image(lambda: result_figure(r)) if field_of(tv, "values") is not None and field_of(r, "history") is not None else ""
    return box(title, table(rows, ["", f"held-out {metric}"]), table(facts), warnings_html(field_of(r, "warnings")), fig)


@never_raises("html")
def task_vector_html(v: Any) -> str:
    from nnvtv.figures import sites_figure

    scores = field_of(v, "scores") or {}
    meta = field_of(v, "meta") or {}
    sites = list(field_of(v, "values", None) or {})
    rows = scores_rows(scores.get("metric"), scores.get("zero_shot"), scores.get("icl"), scores.get("task_vector"),
                       scores.get("shots", meta.get("shots", "?")), scores.get("fraction_of_icl"), scores.get("gap_closed")) if scores else []  # fmt: skip
    facts = [
        ["sites", _sites_line(sites, len(field_of(v, "space", None) or []) or None)],
        ["mode", str(field_of(v, "mode", "?"))],
        ["strategy", str(field_of(v, "strategy", "?"))],
        ["model", f"{field_of(v, 'model', '?')} (fingerprint {str(field_of(v, 'fingerprint', '?'))[:16]})"],
    ]
    facts += [[k, str(meta[k])] for k in ("shots", "seed", "budget", "forward_passes", "n_mean_prompts") if k in meta]
    learned = field_of(v, "learned")
    if isinstance(learned, dict) and learned:  # a learned vector's training record (nnvtv.learn)
        facts.append(["learned", ", ".join(f"{k} {x}" for k, x in learned.items() if isinstance(x, (str, int, float, bool)))])
    title = f"TaskVector: {esc(field_of(v, 'model', '?'))} / {esc(field_of(v, 'task', '?'))}"
    metric = esc(scores.get("metric", "score"))
    parts = [table(rows, ["", f"held-out {metric}"]) if rows else "", table(facts), warnings_html(scores.get("warnings"))]
    return box(title, *parts, image(lambda: sites_figure(v)) if sites else "")


@never_raises("html")
def comparison_html(c: Any) -> str:
    from nnvtv.figures import comparison_figure

    runs = field_of(c, "runs") or []
    rows = []
    for k, r in enumerate(runs, 1):
        s = field_of(r, "scores") or {}
        frac = s.get("fraction_of_icl")
        depth = field_of(r, "mean_depth")
        rows.append([
            f"{k} {field_of(r, 'label', '?')}", num(s.get("zero_shot"), 2), num(s.get("icl"), 2), num(s.get("task_vector"), 2),
            f"{frac:.0%}" if isinstance(frac, (int, float)) else "-", f"{len(field_of(r, 'sites') or [])}/{len(field_of(r, 'space') or [])}",
            "-" if depth is None else f"{depth:.2f}", str(field_of(r, "forward_passes", "?")),
        ])  # fmt: skip
    parts = [table(rows, ["run", "zero-shot", "ICL", "task vector", "% of ICL", "sites", "mean depth", "passes"])]
    if len(runs) > 1:
        cols = [str(k) for k in range(1, len(runs) + 1)]
        for name, matrix in (("site-set overlap (Jaccard)", field_of(c, "jaccard")), ("transfer: row's vector on column's model", field_of(c, "transfer"))):
            body = [[f"{k} {field_of(r, 'label', '?')}", *[num(x, 2) for x in row]] for k, (r, row) in enumerate(zip(runs, matrix or [], strict=False), 1)]
            parts.append(f"<p>{esc(name)}</p>" + table(body, ["", *cols]))
    notes = field_of(c, "transfer_notes") or {}
    if notes:
        parts.append(warnings_html([f"no transfer {k}: {v}" for k, v in notes.items()]))
    if runs:
        parts.append(image(lambda: comparison_figure(c)))
    budget = field_of(c, "budget")
    title = f"Comparison: {esc(field_of(c, 'task', '?'))} ({esc(field_of(c, 'metric', '?'))}), {esc(field_of(c, 'strategy', '?'))}, budget {esc(budget or 'default')}"
    return box(title, *parts)


@never_raises("html")
def layer_sweep_html(w: Any) -> str:
    from nnvtv.recipes.plots import layer_sweep_figure

    layers, acc = field_of(w, "layers") or [], field_of(w, "accuracy") or []
    facts = [
        ["best layer", f"{field_of(w, 'best_layer', '?')} of {len(layers)} swept: {num(field_of(w, 'best_accuracy'))}" if layers and acc else "-"],
        [f"ICL ({field_of(w, 'shots', '?')}-shot)", num(field_of(w, "icl"))],
        ["zero-shot", num(field_of(w, "zero_shot"))],
        ["per layer", ", ".join(f"L{layer} {num(a, 2)}" for layer, a in zip(layers, acc, strict=False))],
        ["held-out queries / mean prompts", f"{field_of(w, 'n_queries', '?')} / {field_of(w, 'n_mean_prompts', '?')}"],
        ["forward passes, time", f"{field_of(w, 'forward_passes', '?')}, {num(field_of(w, 'seconds'), 1)} s"],
    ]
    fig = image(lambda: layer_sweep_figure(w)) if layers and acc else ""
    title = f"LayerSweep (residual replacement): {esc(field_of(w, 'model', '?'))} / {esc(field_of(w, 'task', '?'))}"
    return box(title, table(facts), fig)


@never_raises("html")
def function_vector_html(f: Any) -> str:
    from nnvtv.recipes.plots import function_vector_figure

    heads = list(field_of(f, "heads") or [])
    best = field_of(f, "best_layer")
    facts = [
        ["heads", _sites_line(heads, None)],
        ["added at layer", str(field_of(f, "layer", "?")) + ("" if best is None else f" (best when swept: {best})")],
        ["zero-shot", f"{num(field_of(f, 'zero_shot'))} -> {num(field_of(f, 'zero_shot_fv'))} with the vector"],
        ["shuffled labels", f"{num(field_of(f, 'shuffled'))} -> {num(field_of(f, 'shuffled_fv'))} with the vector"],
        [f"ICL ({field_of(f, 'shots', '?')}-shot)", num(field_of(f, "icl"))],
        ["forward passes, time", f"{field_of(f, 'forward_passes', '?')}, {num(field_of(f, 'seconds'), 1)} s"],
    ]
    fig = image(lambda: function_vector_figure(f)) if field_of(f, "cie") is not None else ""
    return box(f"FunctionVector: {esc(field_of(f, 'model', '?'))} / {esc(field_of(f, 'task', '?'))}", table(facts), fig)


@never_raises("html")
def means_html(m: Any) -> str:
    meta = field_of(m, "meta") or {}
    sites = list(m)
    shapes = sorted({tuple(m[s].shape) for s in sites[:256]})
    facts = [
        ["sites", _sites_line(sites, None)],
        ["prompts averaged", str(field_of(m, "count", "?"))],
        ["value shape per site", ", ".join(str(list(x)) for x in shapes) or "-"],
        ["fingerprint", str(field_of(m, "fingerprint", "?"))],
    ]
    facts += [[k, str(v)] for k, v in meta.items() if isinstance(v, (str, int, float, bool))]
    return box("Means", table(facts))


@never_raises("html")
def site_space_html(space: Any) -> str:
    from nnvtv.figures import STREAM_NAMES

    cells: dict[tuple[str, str], dict[str, set[int]]] = {}
    for s in space:
        c = cells.setdefault((s.stream, s.group), {"layers": set(), "heads": set(), "layer_sites": set()})
        (c["heads"] if s.head is not None else c["layer_sites"]).add(s.head if s.head is not None else s.layer)
        c["layers"].add(s.layer)
    rows = [
        [STREAM_NAMES.get(stream, stream) or "main", group, len(c["layers"]), len(c["heads"]) or "-",
         sum(1 for x in space if (x.stream, x.group) == (stream, group))]
        for (stream, group), c in cells.items()
    ]  # fmt: skip
    return box(f"SiteSpace: {esc(space.summary())}", table(rows, ["stream", "tokens", "layers", "heads", "sites"]),
               f"<p><code>{esc(compact_sites(space, 400))}</code></p>")  # fmt: skip


@never_raises("html")
def model_html(model: Any) -> str:
    rows = [
        [k or "main", v.n_layers, v.n_heads, v.head_dim, v.d_model, ", ".join(v.groups)]
        for k, v in (field_of(model, "streams") or {}).items()
    ]
    facts = [["adapter", field_of(field_of(model, "adapter"), "name", "?")], ["class", type(field_of(model, "module")).__name__],
             ["fingerprint", str(field_of(model, "fingerprint", "?"))], ["remote", str(field_of(model, "remote", False))]]  # fmt: skip
    return box(f"nnvtv.Model: {esc(field_of(model, 'name', '?'))}", table(rows, ["stream", "layers", "heads", "head_dim", "d_model", "token groups"]), table(facts))


@never_raises("html")
def learn_result_html(r: Any) -> str:
    """A learned task vector: held-out learned vs extracted vs ICL / zero-shot, its sites, the
    training record, and the loss curve."""
    from nnvtv.figures import learn_history_figure

    tv, s = field_of(r, "task_vector"), field_of(r, "scores")
    rec = field_of(tv, "learned") or {}
    rows = [["zero-shot", num(field_of(s, "zero_shot"))], [f"ICL ({field_of(s, 'shots', '?')}-shot)", num(field_of(s, "icl"))],
            ["extracted means", num(field_of(r, "extracted_score"))], ["learned values", num(field_of(s, "task_vector"))]]  # fmt: skip
    facts = [["sites", _sites_line(list(field_of(tv, "values", None) or {}), None)],
             ["steps", f"{rec.get('steps', '?')} (best {rec.get('best_step', '?')}), lr {rec.get('lr', '?')}, init {rec.get('init', '?')}"],
             ["forward passes", str(field_of(r, "forward_passes", "?"))]]  # fmt: skip
    title = f"LearnResult: {esc(field_of(tv, 'model', '?'))} / {esc(field_of(tv, 'task', '?'))} (held-out {esc(field_of(s, 'metric', '?'))})"
    return box(title, table(rows), table(facts), warnings_html(field_of(r, "warnings")), image(lambda: learn_history_figure(r)))
