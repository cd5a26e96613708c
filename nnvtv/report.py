"""Figures and tables: where a task vector lives, how the search went.

* :func:`plot_sites` — layer x head heatmap per (stream, group): selection probability
  (or the 0/1 selection), selected sites outlined.
* :func:`plot_history` — held-out score of the best site set and search loss vs forward passes.
* :func:`plot_comparison`, :func:`plot_image_grid` — a comparison's panels; visual outputs.
* :func:`results_table`, :func:`comparison_table` — rich tables of the scores.

The ``plot_*`` functions write files; the figures themselves come from :mod:`nnvtv.figures`
(matplotlib's object API, no pyplot, no backend switch, so importing this in a notebook leaves
its inline plots alone) and are what ``result.plot()``, ``vector.plot()``, ``comparison.plot()``
return. Objects display themselves in Jupyter through :mod:`nnvtv.display`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from nnvtv.figures import (
    Figure,
    comparison_figure,
    history_figure,
    image_grid_figure,
    result_figure,
    save_figure,
    site_grids,
    sites_figure,
)
from nnvtv.sites import Site

if TYPE_CHECKING:
    from nnvtv.find import SearchResult
    from nnvtv.vector import TaskVector

__all__ = [
    "site_grids", "plot_sites", "plot_history", "plot_result", "plot_comparison", "plot_image_grid",
    "results_table", "comparison_table", "Figure", "sites_figure", "history_figure", "result_figure",
    "comparison_figure", "image_grid_figure",
]


def plot_sites(vector: TaskVector, path: str | Path, *, title: str | None = None) -> Path:
    """Heatmap of the selected sites (colour: selection probability when the strategy has one)."""
    return save_figure(sites_figure(vector, title=title), path)


def plot_history(result: SearchResult | Sequence[SearchResult], path: str | Path) -> Path:
    """Best held-out score (and, for one result, search loss) against forward passes."""
    return save_figure(history_figure(result), path)


def plot_result(result: SearchResult, path: str | Path) -> Path:
    """Site heatmap and history of one search in one file."""
    return save_figure(result_figure(result), path)


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
    """``compare.png`` for an :class:`nnvtv.compare.Comparison`: four panels (see
    :func:`nnvtv.figures.comparison_figure`)."""
    return save_figure(comparison_figure(cmp), path)


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
    return Printable(Group(*parts))


class Printable:
    """Rich renderables that also ``print()`` as plain text (not ``<rich.console.Group object>``)
    and render as themselves in a rich console or a notebook."""

    def __init__(self, renderable: Any) -> None:
        self.renderable = renderable

    def __rich__(self) -> Any:
        return self.renderable

    def __str__(self) -> str:
        from rich.console import Console

        console = Console(width=120, record=True, file=io.StringIO())
        console.print(self.renderable)
        return console.export_text()

    __repr__ = __str__


def plot_image_grid(images: dict[str, Any], path: str | Path, *, title: str | None = None, scores: dict[str, Sequence[float]] | None = None) -> Path:
    """One row per example, one column per entry of ``images`` (``{name: [n, 3, H, W]}`` in ``[0, 1]``).

    Columns are shown in the given order (e.g. canvas, ground truth, ICL output, zero-shot
    output, task-vector output); ``scores`` (``{name: n values}``) are printed under the images.
    """
    return save_figure(image_grid_figure(images, title=title, scores=scores), path)
