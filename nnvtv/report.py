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

__all__ = ["site_grids", "plot_sites", "plot_history", "results_table"]


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
    frac = f"  ({s.fraction_of_icl:.0%} of ICL)" if s.fraction_of_icl is not None else ""
    t.add_row("task vector", f"{s.task_vector:.3f}{frac}")
    t.add_section()
    t.add_row("sites", f"{result.n_sites} of {len(result.space)}")
    t.add_row("strategy", result.task_vector.strategy)
    t.add_row("forward passes", f"{result.forward_passes} of {result.run.budget}")
    t.add_row("wall time", f"{result.timings['total']:.1f} s")
    return t


def sites_text(sites: Sequence[Site]) -> str:
    return ", ".join(str(s) for s in sites)
