"""Figures as matplotlib :class:`Figure` objects: where a task vector lives, how the search went.

Every function returns a :class:`Figure` (a matplotlib figure that shows itself in Jupyter as a
PNG) built with matplotlib's object API: no pyplot, no global backend switch (a notebook's
inline backend and a user's own plots are left alone), nothing kept open. :mod:`nnvtv.report`
writes them to files; the result objects' ``plot()`` methods return them.

* :func:`sites_figure` — layer x head heatmap per (stream, group): selection probability (or
  the 0/1 selection), selected sites outlined in red; streams named (encoder / decoder).
* :func:`history_figure` — held-out score of the best site set vs forward passes, one line per
  search (several results: one per strategy), with the search loss of a single one.
* :func:`result_figure` — both, for one :class:`~nnvtv.SearchResult`.
* :func:`comparison_figure`, :func:`image_grid_figure` — a comparison's four panels; images.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure as _MplFigure
from matplotlib.patches import Rectangle

if TYPE_CHECKING:
    from nnvtv.find import SearchResult
    from nnvtv.sites import Site, SiteSpace
    from nnvtv.vector import TaskVector

__all__ = [
    "Figure", "save_figure", "figure_png", "site_grids", "sites_figure", "history_figure", "result_figure",
    "comparison_figure", "image_grid_figure", "STREAM_NAMES",
]

#: how a stream is named on a figure
STREAM_NAMES = {"": "", "enc": "encoder", "dec": "decoder"}
DPI = 110


class Figure(_MplFigure):
    """A matplotlib figure that displays itself in Jupyter (``_repr_png_``) without pyplot."""

    def _repr_png_(self) -> bytes:
        return figure_png(self)

    def save(self, path: str | Path, *, dpi: int = DPI) -> Path:
        """Write the figure (format from the suffix); returns the path."""
        return save_figure(self, path, dpi=dpi)


def save_figure(fig: _MplFigure, path: str | Path, *, dpi: int = DPI) -> Path:
    """``fig.savefig(path)`` with nnvtv's defaults (tight bounding box); returns the path."""
    path = Path(path)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def figure_png(fig: _MplFigure, *, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def site_grids(space: SiteSpace, values: Sequence[float]) -> dict[tuple[str, str], np.ndarray]:
    """``{(stream, group): array [n_layers, n_heads]}`` of ``values`` (one per site of ``space``).

    Layer sites fill a single column. Cells of sites outside the space are NaN.
    """
    grids: dict[tuple[str, str], dict[tuple[int, int], float]] = {}
    for site, v in zip(space, values, strict=True):
        grids.setdefault((site.stream, site.group), {})[(site.layer, site.head or 0)] = float(v)
    out = {}
    for key, cells in grids.items():
        n_l = max(layer for layer, _ in cells) + 1
        n_h = max(h for _, h in cells) + 1
        a = np.full((n_l, n_h), np.nan)
        for (layer, h), v in cells.items():
            a[layer, h] = v
        out[key] = a
    return out


def _ticks(n: int, most: int = 16) -> list[int]:
    return list(range(0, n, max(1, math.ceil(n / most))))


def panel_title(stream: str, group: str) -> str:
    """``"encoder, tokens 'query'"`` (``"tokens 'last'"`` for a single-stack model)."""
    name = STREAM_NAMES.get(stream, stream)
    return f"{name + ', ' if name else ''}tokens '{group}'"


def draw_sites(fig: Any, space: SiteSpace, values: Sequence[float], chosen: set[Site], *, label: str) -> None:
    """Heatmap panels (one per stream and group) of ``values`` over ``space`` on ``fig`` (a
    figure or subfigure); ``chosen`` sites outlined in red."""
    grid_v = site_grids(space, values)
    grid_s = site_grids(space, [1.0 if s in chosen else 0.0 for s in space])
    keys = list(grid_v)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.9")
    im = None
    for ax, key in zip(axes, keys, strict=True):
        a = grid_v[key]
        im = ax.imshow(np.ma.masked_invalid(a.T), origin="lower", cmap=cmap, vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        for layer, h in np.argwhere(grid_s[key] > 0.5):
            ax.add_patch(Rectangle((layer - 0.5, h - 0.5), 1, 1, fill=False, ec="red", lw=1.8))
        ax.set_title(panel_title(*key), fontsize=9)
        ax.set_xlabel("layer")
        ax.set_xticks(_ticks(a.shape[0]))
        if a.shape[1] > 1:
            ax.set_ylabel("head")
            ax.set_yticks(_ticks(a.shape[1]))
        else:
            ax.set_ylabel("residual")
            ax.set_yticks([])
    if im is not None:
        fig.colorbar(im, ax=list(axes), label=label, shrink=0.9)


def _sites_size(space: SiteSpace) -> tuple[float, float]:
    grids = site_grids(space, [0.0] * len(space))
    layers = max(a.shape[0] for a in grids.values())
    heads = max(a.shape[1] for a in grids.values())
    width = len(grids) * min(8.0, max(2.6, 1.0 + 0.22 * layers)) + 1.0
    return min(width, 16.0), min(6.0, max(2.2, 1.3 + 0.22 * heads))


def _vector_values(vector: TaskVector) -> tuple[SiteSpace, list[float], set[Site], str]:
    space = vector.site_space
    chosen = set(vector.sites)
    if vector.probabilities is not None and len(vector.probabilities) == len(space):
        return space, [float(p) for p in vector.probabilities], chosen, "selection probability"
    return space, [1.0 if s in chosen else 0.0 for s in space], chosen, "selected"


def sites_figure(vector: TaskVector, *, title: str | None = None) -> Figure:
    """Where ``vector``'s sites are: layer x head heatmap per stream and group (colour: the
    strategy's selection probability, if it has one; red outline: selected)."""
    space, values, chosen, label = _vector_values(vector)
    fig = Figure(figsize=_sites_size(space), layout="constrained")
    draw_sites(fig, space, values, chosen, label=label)
    fig.suptitle(title or f"{vector.model} / {vector.task}: {len(vector)} of {len(space)} sites ({vector.strategy}; red = selected)", fontsize=10)
    return fig


def draw_history(ax: Any, results: Sequence[SearchResult], *, loss: bool = True) -> None:
    """Held-out score of the best site set against forward passes, one line per result; ICL and
    zero-shot of the first as lines; with one result and ``loss``, the search loss on a twin axis."""
    first = results[0].scores
    for i, r in enumerate(results):
        pts = [(h.forward_passes, h.heldout) for h in r.history if h.heldout is not None]
        name = r.task_vector.strategy if len(results) > 1 else "task vector (best set, held-out)"
        if pts:  # a one-point history (ranking) gets a large marker so it shows
            ax.plot(*zip(*pts, strict=True), "o-", ms=3 if len(pts) > 1 else 7, color=f"C{i % 10}" if len(results) > 1 else "C0", label=name)
    # the baselines in black and grey, never a strategy's colour
    ax.axhline(first.icl, color="black", ls="--", lw=1, label=f"ICL {first.shots}-shot ({first.icl:.2f})")
    ax.axhline(first.zero_shot, color="0.5", ls=":", lw=1.2, label=f"zero-shot ({first.zero_shot:.2f})")
    ax.set_xlabel("forward passes (candidate site sets; a gradient row counts 3)")
    ax.set_ylabel(f"held-out {first.metric}")
    handles, labels = ax.get_legend_handles_labels()
    if loss and len(results) == 1 and results[0].history:
        hist = results[0].history
        fp = [h.forward_passes for h in hist]
        ax2 = ax.twinx()
        ax2.plot(fp, [h.loss for h in hist], color="0.6", lw=0.8, label="batch mean loss")
        ax2.plot(fp, [h.best_loss for h in hist], color="0.3", lw=1.0, label="best loss")
        ax2.set_ylabel("search loss (minimized)")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=7, loc="best")


def history_figure(results: SearchResult | Sequence[SearchResult], *, title: str | None = None) -> Figure:
    """Score against forward passes: one result (with its search loss) or several (one line per
    strategy, e.g. the results of one task searched with each strategy)."""
    rs = [results] if not isinstance(results, Sequence) else list(results)
    if not rs:
        from nnvtv.errors import EmptyDataError

        raise EmptyDataError("history_figure needs at least one SearchResult")
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    draw_history(fig.subplots(), rs)
    tv = rs[0].task_vector
    what = tv.strategy if len(rs) == 1 else "per strategy"
    fig.suptitle(title or f"{tv.model} / {tv.task} ({what})", fontsize=10)
    return fig


def result_figure(result: SearchResult, *, title: str | None = None) -> Figure:
    """A search result at a glance: its site heatmap (top) and its history (bottom)."""
    space, values, chosen, label = _vector_values(result.task_vector)
    w, h = _sites_size(space)
    fig = Figure(figsize=(max(w, 6.8), h + 3.4), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[h, 3.4])
    draw_sites(top, space, values, chosen, label=label)
    draw_history(bottom.subplots(), [result])
    tv, s = result.task_vector, result.scores
    score = "n/a" if s.task_vector is None else f"{s.task_vector:.3f}"
    fig.suptitle(
        title or f"{tv.model} / {tv.task}: {len(tv)} of {len(space)} sites ({tv.strategy}), task vector {score} vs ICL {s.icl:.3f}",
        fontsize=10,
    )
    return fig


def comparison_figure(cmp: Any) -> Figure:
    """Four panels for an :class:`nnvtv.compare.Comparison`: scores per run (zero-shot / ICL /
    task vector); fraction of each layer's sites selected against relative depth (models of
    different depth line up); Jaccard overlap of the site sets (grey: different site spaces);
    transfer (row's vector on column's model)."""
    labels = cmp.labels
    n = len(labels)
    fig = Figure(figsize=(11, 8.2))
    axes = fig.subplots(2, 2)
    ax = axes[0, 0]
    width = 0.26
    x = np.arange(n)
    for k, (key, name) in enumerate((("zero_shot", "zero-shot"), ("icl", "ICL"), ("task_vector", "task vector"))):
        vals = [np.nan if r.scores.get(key) is None else float(r.scores[key]) for r in cmp.runs]
        ax.bar(x + (k - 1) * width, vals, width, label=name, color=f"C{(3, 2, 0)[k]}")
    ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"held-out {cmp.metric}")
    ax.set_title(f"scores on {cmp.task}", fontsize=10)
    ax.legend(fontsize=7)

    ax = axes[0, 1]
    for i, r in enumerate(cmp.runs):
        d = [row["depth"] for row in r.depth]
        f = [row["selected"] / row["total"] if row["total"] else 0.0 for row in r.depth]
        ax.plot(d, f, "o-", color=f"C{i % 10}", label=f"{r.label} ({r.n_sites} sites)", alpha=0.85)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("relative depth (layer + 0.5) / layers")
    ax.set_ylabel("fraction of the layer's sites selected")
    ax.set_title("where the task vector sits", fontsize=10)
    ax.legend(fontsize=7)

    for ax, matrix, title, vmax in (
        (axes[1, 0], cmp.jaccard, "site-set overlap (Jaccard)", 1.0),
        (axes[1, 1], cmp.transfer, f"transfer: row's vector on column's model ({cmp.metric})", None),
    ):
        a = np.array([[np.nan if v is None else float(v) for v in row] for row in matrix], dtype=float).reshape(n, n)
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
        finite = a[np.isfinite(a)]
        top = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
        bottom = 0.0 if vmax is not None else (float(min(0.0, finite.min())) if finite.size else 0.0)
        im = ax.imshow(np.ma.masked_invalid(a), cmap=cmap, vmin=bottom, vmax=top if top > bottom else bottom + 1)
        for i in range(n):
            for j in range(n):
                txt = "n/a" if np.isnan(a[i, j]) else f"{a[i, j]:.2f}"
                dark = not np.isnan(a[i, j]) and a[i, j] < (bottom + top) / 2
                ax.text(j, i, txt, ha="center", va="center", fontsize=8, color="w" if dark else "k")
        ax.set_xticks(range(n), labels, rotation=20, ha="right", fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(f"{cmp.task}: {n} runs, strategy {cmp.strategy}, budget {cmp.budget or 'default'}", fontsize=11)
    fig.tight_layout()
    return fig


_GRID_TITLES = {
    "canvas": "canvas (answer hidden)",
    "target": "ground truth",
    "icl": "one-shot (ICL)",
    "zero_shot": "zero-shot",
    "task_vector": "task vector",
}


def image_grid_figure(images: dict[str, Any], *, title: str | None = None, scores: dict[str, Sequence[float]] | None = None) -> Figure:
    """One row per example, one column per entry of ``images`` (``{name: [n, 3, H, W]}`` in ``[0, 1]``).

    Columns are shown in the given order (e.g. canvas, ground truth, ICL output, zero-shot
    output, task-vector output); ``scores`` (``{name: n values}``) are printed under the images.
    """
    names = list(images)
    n = min(int(v.shape[0]) for v in images.values())
    fig = Figure(figsize=(1.9 * len(names), 1.9 * n))
    axes = fig.subplots(n, len(names), squeeze=False)
    for j, name in enumerate(names):
        for i in range(n):
            ax = axes[i][j]
            img = images[name][i].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(_GRID_TITLES.get(name, name), fontsize=8)
            if scores and name in scores:
                ax.set_xlabel(f"{scores[name][i]:.3f}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def learn_history_figure(result: Any, *, title: str | None = None) -> Figure:
    """A learned task vector's training: loss on the fit queries and, where measured, on the
    validation queries, against the step (step 0: the extracted means)."""
    hist = list(getattr(result, "history", []) or [])
    fig = Figure(figsize=(6.0, 3.2), layout="constrained")
    ax = fig.subplots()
    steps = [h["step"] for h in hist]
    ax.plot(steps, [h["train_loss"] for h in hist], "-", color="C0", label="fit queries")
    val = [(h["step"], h["validation_loss"]) for h in hist if h.get("validation_loss") is not None]
    if val:
        ax.plot(*zip(*val, strict=True), "o-", ms=3, color="C1", label="validation queries")
    ax.set_xlabel("step (0: the extracted means)")
    ax.set_ylabel("task loss (minimized)")
    ax.legend(fontsize=7)
    tv = getattr(result, "task_vector", None)
    fig.suptitle(title or f"{getattr(tv, 'model', '?')} / {getattr(tv, 'task', '?')}: learning the values", fontsize=10)
    return fig
