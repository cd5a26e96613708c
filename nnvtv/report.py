"""Figures and tables: where a task vector lives, how the search went.

* :func:`plot_sites` — layer x head heatmap per (stream, group): selection probability
  (or the 0/1 selection), selected sites outlined.
* :func:`plot_history` — held-out score of the best site set and search loss vs forward passes.
* :func:`results_table` — a rich table of the scores.

matplotlib runs headless (Agg) here; figures are written to files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from rich.table import Table  # noqa: E402

from nnvtv.sites import Site, SiteSpace  # noqa: E402

if TYPE_CHECKING:
    from nnvtv.find import SearchResult
    from nnvtv.vector import TaskVector

__all__ = ["site_grids", "plot_sites", "plot_history", "results_table", "plot_image_grid"]


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


def plot_sites(vector: TaskVector, path: str | Path, *, title: str | None = None) -> Path:
    """Heatmap of the selected sites (colour: selection probability when the strategy has one)."""
    space = vector.site_space
    chosen = set(vector.sites)
    selected = [1.0 if s in chosen else 0.0 for s in space]
    probs = vector.probabilities if vector.probabilities is not None else selected
    grid_p = site_grids(space, probs)
    grid_s = site_grids(space, selected)
    keys = list(grid_p)
    fig, axes = plt.subplots(1, len(keys), figsize=(max(3.5, 2.2 + 0.45 * _max_heads(grid_p)) * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        a = grid_p[key]
        im = ax.imshow(a.T, origin="lower", cmap="viridis", vmin=0, vmax=1, aspect="auto")
        sel = np.argwhere(grid_s[key] > 0.5)
        for layer, h in sel:
            ax.add_patch(plt.Rectangle((layer - 0.5, h - 0.5), 1, 1, fill=False, ec="red", lw=2))
        stream, group = key
        ax.set_title(f"{stream + ' ' if stream else ''}group '{group}'", fontsize=9)
        ax.set_xlabel("layer")
        ax.set_ylabel("head" if a.shape[1] > 1 else "")
        ax.set_xticks(range(a.shape[0]))
        ax.set_yticks(range(a.shape[1]))
    label = "selection probability" if vector.probabilities is not None else "selected"
    fig.colorbar(im, ax=axes[0].tolist(), label=label, shrink=0.9)
    fig.suptitle(title or f"{vector.model} / {vector.task}: {len(vector)} of {len(space)} sites ({vector.strategy}; red = selected)", fontsize=10)
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _max_heads(grids: dict[Any, np.ndarray]) -> int:
    return max(a.shape[1] for a in grids.values())


def plot_history(result: SearchResult, path: str | Path) -> Path:
    """Best held-out score and search loss against forward passes."""
    hist = result.history
    fp = [h.forward_passes for h in hist]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    pts = [(h.forward_passes, h.heldout) for h in hist if h.heldout is not None]
    s = result.scores
    if pts:
        ax.plot(*zip(*pts, strict=True), "o-", color="C0", label="task vector (best set, held-out)")
    ax.axhline(s.icl, color="C2", ls="--", label=f"ICL {s.shots}-shot ({s.icl:.2f})")
    ax.axhline(s.zero_shot, color="C3", ls=":", label=f"zero-shot ({s.zero_shot:.2f})")
    ax.set_xlabel("forward passes (candidate site sets evaluated)")
    ax.set_ylabel(f"held-out {s.metric}")
    ax2 = ax.twinx()
    ax2.plot(fp, [h.loss for h in hist], color="0.6", lw=0.8, label="batch mean loss")
    ax2.plot(fp, [h.best_loss for h in hist], color="0.3", lw=1.0, label="best loss")
    ax2.set_ylabel("search loss (minimized)")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="center right")
    ax.set_title(f"{result.task_vector.model} / {result.task_vector.task} ({result.task_vector.strategy})", fontsize=10)
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def results_table(result: SearchResult) -> Table:
    """The end-of-run table: scores, sites used, budget spent, wall time."""
    s = result.scores
    t = Table(title=f"{result.task_vector.model} / {result.task_vector.task}")
    t.add_column("")
    t.add_column(f"held-out {s.metric}", justify="right")
    t.add_row("zero-shot", f"{s.zero_shot:.3f}")
    t.add_row(f"ICL ({s.shots}-shot)", f"{s.icl:.3f}")
    frac = f"  ({s.fraction_of_icl:.0%} of ICL)" if s.fraction_of_icl is not None and s.has_gap else ""
    t.add_row("task vector", f"{s.task_vector:.3f}{frac}")
    if s.gap_closed is not None:
        t.add_row("gap closed", f"{s.gap_closed:.0%} of (ICL - zero-shot)")
    else:  # never a share of a gap that is not there
        t.add_row("gap closed", "n/a: ICL no better than zero-shot")
    t.add_section()
    t.add_row("sites", f"{result.n_sites} of {len(result.space)}")
    t.add_row("strategy", result.task_vector.strategy)
    t.add_row("forward passes", f"{result.forward_passes} of {result.run.budget}")
    t.add_row("wall time", f"{result.timings['total']:.1f} s")
    return t


def sites_text(sites: Sequence[Site]) -> str:
    return ", ".join(str(s) for s in sites)


# ---------------------------------------------------------------------- cross-model comparison


def plot_comparison(cmp: Any, path: str | Path) -> Path:
    """``compare.png`` for an :class:`nnvtv.compare.Comparison`: four panels.

    Scores per run (zero-shot / ICL / task vector); fraction of each layer's sites selected
    against relative depth (models of different depth line up); Jaccard overlap of the site
    sets (grey: different site spaces); transfer (row's vector on column's model).
    """
    labels = cmp.labels
    n = len(labels)
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.2))
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
        a = np.array([[np.nan if v is None else float(v) for v in row] for row in matrix], dtype=float)
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
        finite = a[np.isfinite(a)]
        top = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
        bottom = 0.0 if vmax is not None else (float(min(0.0, finite.min())) if finite.size else 0.0)
        im = ax.imshow(np.ma.masked_invalid(a), cmap=cmap, vmin=bottom, vmax=top if top > bottom else bottom + 1)
        for i in range(n):
            for j in range(n):
                txt = "n/a" if np.isnan(a[i, j]) else f"{a[i, j]:.2f}"
                ax.text(j, i, txt, ha="center", va="center", fontsize=8, color="w" if not np.isnan(a[i, j]) and a[i, j] < (bottom + top) / 2 else "k")
        ax.set_xticks(range(n), labels, rotation=20, ha="right", fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(f"{cmp.task}: {n} runs, strategy {cmp.strategy}, budget {cmp.budget or 'default'}", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def comparison_table(cmp: Any) -> Any:
    """Rich tables for an :class:`nnvtv.compare.Comparison`: runs, overlap, transfer."""
    from rich.console import Group

    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{float(v):.3f}"

    def fmt2(v: Any) -> str:
        return "n/a" if v is None else f"{float(v):.2f}"

    from rich import box

    t = Table(title=f"{cmp.task}: {cmp.strategy}, budget {cmp.budget or 'default'} (held-out {cmp.metric})", box=box.SIMPLE_HEAD)
    width = max(len(label) for label in cmp.labels) + 3
    t.add_column("run", no_wrap=True, min_width=width)
    for col in ("L", "ZS", "ICL", "TV", "%ICL", "sites", "depth", "passes"):
        t.add_column(col, justify="right")
    for k, r in enumerate(cmp.runs, 1):
        s = r.scores
        frac = s.get("fraction_of_icl")
        layers = "+".join(str(v) for v in r.layers.values())
        depth = "-" if r.mean_depth is None else f"{r.mean_depth:.2f}"
        t.add_row(
            f"{k} {r.label}", layers, fmt2(s.get("zero_shot")), fmt2(s.get("icl")), fmt2(s.get("task_vector")),
            "-" if frac is None else f"{frac:.0%}", f"{r.n_sites}/{len(r.space)}", depth, str(r.forward_passes),
        )
    t.caption = "L layers, ZS zero-shot, TV task vector, depth: mean relative depth of its sites"
    parts: list[Any] = [t]
    for title, matrix in (("site-set overlap (Jaccard)", cmp.jaccard), ("transfer: row's vector on column's model", cmp.transfer)):
        if len(cmp.runs) < 2:
            break
        m = Table(title=title, box=box.SIMPLE_HEAD)
        m.add_column("", no_wrap=True, min_width=width)
        for k in range(1, len(cmp.runs) + 1):
            m.add_column(str(k), justify="right")
        for k, (label, row) in enumerate(zip(cmp.labels, matrix, strict=True), 1):
            m.add_row(f"{k} {label}", *[fmt(v) for v in row])
        parts.append(m)
    return Group(*parts)


_GRID_TITLES = {
    "canvas": "canvas (answer hidden)",
    "target": "ground truth",
    "icl": "one-shot (ICL)",
    "zero_shot": "zero-shot",
    "task_vector": "task vector",
}


def plot_image_grid(images: dict[str, Any], path: str | Path, *, title: str | None = None, scores: dict[str, Sequence[float]] | None = None) -> Path:
    """One row per example, one column per entry of ``images`` (``{name: [n, 3, H, W]}`` in ``[0, 1]``).

    Columns are shown in the given order (e.g. canvas, ground truth, ICL output, zero-shot
    output, task-vector output); ``scores`` (``{name: n values}``) are printed under the images.
    """
    names = list(images)
    n = min(int(v.shape[0]) for v in images.values())
    fig, axes = plt.subplots(n, len(names), figsize=(1.9 * len(names), 1.9 * n), squeeze=False)
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
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
