"""Held-out :class:`Scores` of a task on a model, and the warnings that say when they are hard to read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nnvtv import catalog
from nnvtv.views import ScoresView

if TYPE_CHECKING:
    from nnvtv.model import Model
    from nnvtv.tasks import Task

__all__ = ["ICL_MARGIN", "ZERO_SHOT_SOLVED", "Scores", "score_warnings", "model_max_shots", "run_warnings", "dropped_warning"]


#: ICL must beat zero-shot by *more* than this for a task vector's score to mean something:
#: 0.1 of the metric for higher-is-better metrics in [0, 1] (accuracy, IoU: 0.1 is under 2 of
#: 16 held-out queries, within the noise of a few queries), and more than a 10% cut of the
#: error for lower-is-better ones (MSE). At or below it, :attr:`Scores.warnings` says so.
ICL_MARGIN = 0.1
#: a higher-is-better zero-shot score at or above this means the model already does the task
ZERO_SHOT_SOLVED = 0.9


@dataclass(repr=False)
class Scores(ScoresView):
    """Held-out scores of one task on one model (task metric, e.g. accuracy).

    Attributes:
        metric: the task's metric; zero_shot, icl, task_vector: the held-out scores.
        n_queries: held-out queries scored; shots: demonstrations per ICL prompt.
        higher_is_better: the metric's direction (``False`` for MSE).
        warnings: what makes these numbers hard to read (ICL no better than zero-shot, zero-shot
            already solving the task, more shots than the model was made for ...), in words.
    """

    metric: str
    zero_shot: float
    icl: float
    task_vector: float | None = None
    n_queries: int = 0
    shots: int = 0
    higher_is_better: bool = True
    warnings: list[str] = field(default_factory=list)

    @property
    def icl_gain(self) -> float:
        """How much better ICL scores than zero-shot, in the metric's direction (positive: better)."""
        return self.icl - self.zero_shot if self.higher_is_better else self.zero_shot - self.icl

    @property
    def has_gap(self) -> bool:
        """ICL scores better than zero-shot at all (there is a gap for a task vector to close)."""
        return self.icl_gain > 0

    @property
    def fraction_of_icl(self) -> float | None:
        """Task-vector score as a fraction of the ICL score; ``None`` if undefined, and for
        lower-is-better metrics (an MSE 1.1x ICL's is worse, not better: read :attr:`gap_closed`)."""
        if self.task_vector is None or self.icl == 0 or not self.higher_is_better:
            return None
        return self.task_vector / self.icl

    @property
    def gap_closed(self) -> float | None:
        """``(task vector - zero-shot) / (ICL - zero-shot)``: the share of the ICL gain the task
        vector recovers, meaningful for lower-is-better metrics (MSE) too; ``None`` when there is
        no task vector or no gap (ICL no better than zero-shot)."""
        if self.task_vector is None or not self.has_gap:
            return None
        return (self.task_vector - self.zero_shot) / (self.icl - self.zero_shot)

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "zero_shot": self.zero_shot,
            "icl": self.icl,
            "task_vector": self.task_vector,
            "fraction_of_icl": self.fraction_of_icl,
            "gap_closed": self.gap_closed,
            "n_queries": self.n_queries,
            "shots": self.shots,
            "higher_is_better": self.higher_is_better,
            "warnings": list(self.warnings),
        }


def score_warnings(scores: Scores) -> list[str]:
    """What makes ``scores`` hard to read: ICL not clearly better than zero-shot (by
    :data:`ICL_MARGIN`), or zero-shot already solving the task (:data:`ZERO_SHOT_SOLVED`)."""
    out = []
    zs, icl, m = scores.zero_shot, scores.icl, scores.metric
    if scores.icl_gain <= 0:
        out.append(
            f"ICL ({scores.shots}-shot) scores no better than zero-shot ({icl:.3f} vs {zs:.3f} {m}): there is no gap "
            "for a task vector to close, so its score says nothing about a task representation; check that the "
            "task suits the model and the number of shots does too"
        )
    elif scores.higher_is_better and scores.icl_gain <= ICL_MARGIN + 1e-9:
        out.append(
            f"ICL is not clearly better than zero-shot ({icl:.3f} vs {zs:.3f} {m}, a gain of no more than the "
            f"{ICL_MARGIN} margin): the task vector has little to recover and its share of the gap is noise"
        )
    elif not scores.higher_is_better and icl >= (1 - ICL_MARGIN) * zs - 1e-12:
        out.append(
            f"ICL is not clearly better than zero-shot ({icl:.4g} vs {zs:.4g} {m}, less than a {ICL_MARGIN:.0%} cut): "
            "the task vector has little to recover and its share of the gap is noise"
        )
    if scores.higher_is_better and zs >= ZERO_SHOT_SOLVED:
        out.append(
            f"zero-shot already scores {zs:.3f} {m}: the model does the task without demonstrations, so a task "
            "vector has little to add"
        )
    return out


def model_max_shots(model: Model) -> int | None:
    """The most demonstrations ``model`` was made to read (its catalogue entry's ``max_shots``,
    else ``model.meta["max_shots"]``), or ``None`` if unknown."""
    entry = catalog.entry(model.name)
    if entry is not None and entry.max_shots is not None:
        return entry.max_shots
    value = model.meta.get("max_shots")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def run_warnings(model: Model, task: Task, shots: int, dropped: int, n_prompts: int) -> list[str]:
    """Warnings about the setup (not the scores): shots beyond the model's, demonstrations
    dropped to fit ``max_length``, a task written for other models."""
    out = []
    top = model_max_shots(model)
    if top is not None and shots > top:
        out.append(
            f"shots={shots} is more than {model.name} was made to read (at most {top} demonstrations, see its "
            f"catalogue entry and model card): its ICL score is out of distribution; use shots <= {top}"
        )
    if dropped:
        out.append(dropped_warning(model, dropped, shots, n_prompts))
    models = tuple(getattr(task, "models", ()) or ())
    if models and model.name not in models:
        out.append(f"task {task.name!r} is written for {', '.join(models)}, not {model.name}")
    return out


def dropped_warning(model: Model, dropped: int, shots: int, n_prompts: int) -> str:
    return (
        f"{dropped} of {shots * n_prompts} demonstrations were dropped to fit max_length="
        f"{getattr(model.io, 'max_length', None)}: ICL prompts hold fewer than {shots} shots"
    )
