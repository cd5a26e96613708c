"""Display and plot methods of nnvtv's result objects, as mixins.

:class:`~nnvtv.SearchResult`, :class:`~nnvtv.TaskVector`, :class:`~nnvtv.Scores`,
:class:`~nnvtv.Comparison`, :class:`~nnvtv.recipes.LayerSweep`,
:class:`~nnvtv.recipes.FunctionVector`, :class:`~nnvtv.Means` and :class:`~nnvtv.SiteSpace`
inherit one of these (dataclasses with ``repr=False``, so the short repr here is the one used):

* ``repr(obj)``: one line, under 200 characters (:mod:`nnvtv.display`);
* ``obj._repr_html_()``: what Jupyter shows (:mod:`nnvtv.display_html`): the scores table, the
  chosen sites, warnings, and where it helps a small inline figure;
* ``obj.plot(path=None)``: a matplotlib :class:`~nnvtv.figures.Figure` (shown inline in Jupyter;
  written to ``path`` too when given). Only :meth:`SearchResultView.plot_examples` runs the model.

Nothing is imported until used, so these cost nothing at import.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nnvtv.figures import Figure
    from nnvtv.model import Model

__all__ = [
    "ScoresView", "SearchResultView", "TaskVectorView", "ComparisonView", "LayerSweepView",
    "FunctionVectorView", "MeansView", "SiteSpaceView",
]


def _saved(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        fig.save(path)
    return fig


class ScoresView:
    """``repr`` and HTML of :class:`~nnvtv.Scores`."""

    def __repr__(self) -> str:
        from nnvtv.display import scores_repr

        return scores_repr(self)

    def _repr_html_(self) -> str | None:
        from nnvtv.display_html import scores_html

        return scores_html(self)


class SearchResultView:
    """``repr``, HTML and figures of :class:`~nnvtv.SearchResult`."""

    def __repr__(self) -> str:
        from nnvtv.display import search_result_repr

        return search_result_repr(self)

    def _repr_html_(self) -> str | None:
        from nnvtv.display_html import search_result_html

        return search_result_html(self)

    def plot(self, path: str | Path | None = None) -> Figure:
        """Site heatmap (layer x head per stream and token group; selection probability, chosen
        sites outlined) above the search history (held-out score of the best set and search
        loss against forward passes); saved to ``path`` if given."""
        from nnvtv.figures import result_figure

        return _saved(result_figure(self), path)  # type: ignore[arg-type]

    def plot_sites(self, path: str | Path | None = None) -> Figure:
        """The site heatmap alone (:meth:`TaskVectorView.plot` of the task vector)."""
        from nnvtv.figures import sites_figure

        return _saved(sites_figure(self.task_vector), path)  # type: ignore[attr-defined]

    def plot_history(self, path: str | Path | None = None, *, others: Sequence[Any] = ()) -> Figure:
        """Held-out score against forward passes; with ``others`` (results of other strategies
        on the same task), one line per strategy."""
        from nnvtv.figures import history_figure

        return _saved(history_figure([self, *others]), path)  # type: ignore[list-item]

    def plot_examples(self, model: Model, *, n: int = 4, seed: int | None = None, path: str | Path | None = None) -> Figure:
        """Image grid of ``n`` held-out queries of a visual task: canvas, ground truth, ICL,
        zero-shot and task-vector outputs, each output's score under it. Runs the model (the
        one the vector was found on); raises :class:`~nnvtv.errors.ConfigError` for tasks
        without pictures (text tasks)."""
        from nnvtv.errors import ConfigError
        from nnvtv.figures import image_grid_figure

        vector = self.task_vector  # type: ignore[attr-defined]
        task = self.task if self.task is not None else vector.task_object()  # type: ignore[attr-defined]
        if not hasattr(task, "example_images"):
            raise ConfigError(f"task {task.name!r} has no pictures to show (plot_examples is for visual tasks); use result.plot()")
        vector.check_model(model)
        seed = int(vector.meta.get("seed", 0)) if seed is None else seed
        images = task.example_images(model, vector, n=n, seed=seed)
        scores = {k: task.score(v, images["target"]).tolist() for k, v in images.items() if k in ("icl", "zero_shot", "task_vector")}
        title = f"{model.name} / {task.name}: held-out queries ({task.metric} under each output)"
        return _saved(image_grid_figure(images, title=title, scores=scores), path)


class TaskVectorView:
    """``repr``, HTML and figure of :class:`~nnvtv.TaskVector`."""

    def __repr__(self) -> str:
        from nnvtv.display import task_vector_repr

        return task_vector_repr(self)

    def _repr_html_(self) -> str | None:
        from nnvtv.display_html import task_vector_html

        return task_vector_html(self)

    def plot(self, path: str | Path | None = None, *, title: str | None = None) -> Figure:
        """Where the vector's sites are: layer x head heatmap per stream and token group (colour:
        selection probability when the strategy has one), chosen sites outlined in red."""
        from nnvtv.figures import sites_figure

        return _saved(sites_figure(self, title=title), path)  # type: ignore[arg-type]


class ComparisonView:
    """``repr``, HTML and figure of :class:`~nnvtv.Comparison`."""

    def __repr__(self) -> str:
        from nnvtv.display import comparison_repr

        return comparison_repr(self)

    def _repr_html_(self) -> str | None:
        from nnvtv.display_html import comparison_html

        return comparison_html(self)

    def plot(self, path: str | Path | None = None) -> Figure:
        """Four panels: scores per run, where the sites sit by relative depth, site-set overlap
        (Jaccard) and transfer (row's vector on column's model)."""
        from nnvtv.figures import comparison_figure

        return _saved(comparison_figure(self), path)


class LayerSweepView:
    """``repr``, HTML and figure of :class:`~nnvtv.recipes.LayerSweep`."""

    def __repr__(self) -> str:
        from nnvtv.display import layer_sweep_repr

        return layer_sweep_repr(self)

    def _repr_html_(self) -> str | None:
        from nnvtv.display_html import layer_sweep_html

        return layer_sweep_html(self)

    def plot(self, path: str | Path | None = None, *, others: Sequence[Any] = (), fvs: Sequence[Any] = ()) -> Figure:
        """Held-out accuracy against the layer replaced (ICL marked on the right); ``others``:
        sweeps of more tasks on the same axes; ``fvs``: function vectors added per layer (dotted)."""
        from nnvtv.recipes.plots import layer_sweep_figure

        return _saved(layer_sweep_figure([self, *others], fvs=fvs), path)  # type: ignore[list-item]


class FunctionVectorView:
    """``repr``, HTML and figures of :class:`~nnvtv.recipes.FunctionVector`."""

    def __repr__(self) -> str:
        from nnvtv.display import function_vector_repr

        return function_vector_repr(self)

    def _repr_html_(self) -> str | None:
        from nnvtv.display_html import function_vector_html

        return function_vector_html(self)

    def plot(self, path: str | Path | None = None) -> Figure:
        """CIE heatmap (layer x head, chosen heads outlined) and, when swept, zero-shot accuracy
        with the vector added at each layer."""
        from nnvtv.recipes.plots import function_vector_figure

        return _saved(function_vector_figure(self), path)  # type: ignore[arg-type]


class MeansView:
    """``repr`` and HTML of :class:`~nnvtv.Means`."""

    def __repr__(self) -> str:
        from nnvtv.display import means_repr

        return means_repr(self)

    def _repr_html_(self) -> str | None:
        from nnvtv.display_html import means_html

        return means_html(self)


class SiteSpaceView:
    """HTML of :class:`~nnvtv.SiteSpace` (its ``repr`` stays its own)."""

    def _repr_html_(self) -> str | None:
        from nnvtv.display_html import site_space_html

        return site_space_html(self)
