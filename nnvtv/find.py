"""``nnvtv.find``: the whole pipeline, from a task to a measured, saveable task vector.

Data flows one way (DESIGN.md §3)::

    task.split(seed) -> ICL prompts on train queries -> mean_activations over the site space
    -> zero-shot train batch -> MaskObjective: task loss of run_masks(...)   [budgeted]
    -> strategy search -> TaskVector -> held-out scores (zero-shot, ICL, task vector)

"Forward passes" counts forward-pass equivalents spent by the search: an exact candidate site
set is one patched forward of the training queries; a gradient strategy's weight row (relaxed
patching, :mod:`nnvtv.relaxed`: a forward and a backward) counts 3
(``SearchResult.example_forwards`` counts prompt rows in the same unit).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from nnvtv import catalog
from nnvtv.activations import Means
from nnvtv.errors import ConfigError
from nnvtv.evaluation import check_fit, evaluate, score_batch
from nnvtv.find_plan import check_find, prepare
from nnvtv.mean_prompts import icl_means
from nnvtv.model import Model
from nnvtv.objective import MaskObjective
from nnvtv.patching import run_masks
from nnvtv.progress import Progress, ProgressArg, with_progress
from nnvtv.scores import ICL_MARGIN, ZERO_SHOT_SOLVED, Scores, dropped_warning, score_warnings
from nnvtv.search import SearchProgress, SearchRun, run_search
from nnvtv.sites import SiteSpace
from nnvtv.surrogate import gradient_loss
from nnvtv.tasks import Task
from nnvtv.vector import TaskVector
from nnvtv.views import SearchResultView

# evaluate, Scores and the checks live in nnvtv.evaluation / nnvtv.scores / nnvtv.find_plan and
# stay importable from here
__all__ = [
    "find",
    "SearchResult",
    "Progress",
    "evaluate",
    "score_batch",
    "Scores",
    "score_warnings",
    "check_find",
    "check_fit",
    "ICL_MARGIN",
    "ZERO_SHOT_SOLVED",
]


#: a callback receiving :class:`~nnvtv.progress.Progress` events (``Progress`` lives in
#: :mod:`nnvtv.progress`, the one event source every long step reports through)
ProgressFn = Callable[[Progress], None]


@dataclass(repr=False)
class SearchResult(SearchResultView):
    """What :func:`find` returns.

    Attributes:
        task_vector: the found :class:`TaskVector` (sites + mean values + provenance).
        scores: held-out :class:`Scores`.
        history: the search history (one row per step).
        forward_passes: forward-pass equivalents spent (the budget unit: an exact candidate
            site set 1, a gradient row 3; ``run.exact_rows`` and ``run.gradient_rows`` count them).
        example_forwards: prompt rows run by the search (``forward_passes x train queries``).
        space: the searched :class:`SiteSpace`.
        run: the raw :class:`~nnvtv.search.SearchRun`.
        means: the :class:`Means` the vector's values come from.
        timings: seconds per stage.
        task: the :class:`Task` searched (a name or file given to :func:`find`, resolved).
        warnings: what makes the result hard to read (the scores' warnings and the setup's:
            more shots than the model was made for, demonstrations dropped ...), in words.
    """

    task_vector: TaskVector
    scores: Scores
    history: list[Any]
    forward_passes: int
    example_forwards: int
    space: SiteSpace
    run: SearchRun
    means: Means
    timings: dict[str, float]
    task: Task | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def n_sites(self) -> int:
        return len(self.task_vector)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.task_vector.model,
            "fingerprint": self.task_vector.fingerprint,
            "task": self.task_vector.task,
            "strategy": self.task_vector.strategy,
            "scores": self.scores.as_dict(),
            "warnings": list(self.warnings),
            "n_sites": self.n_sites,
            "total_sites": len(self.space),
            "sites": [str(s) for s in self.task_vector.sites],
            "forward_passes": self.forward_passes,
            "exact_rows": self.run.exact_rows,
            "gradient_rows": self.run.gradient_rows,
            "example_forwards": self.example_forwards,
            "budget": self.run.budget,
            "seed": self.run.seed,
            "stop_reason": self.run.stop_reason,
            "timings": self.timings,
            "history": [h.__dict__ for h in self.history],
        }


@with_progress
def find(
    model: Model | str,
    task: Task | str | None = None,
    *,
    strategy: str = "reinforce",
    budget: int | None = None,
    seed: int = 0,
    shots: int | None = None,
    sites: SiteSpace | str = "head",
    groups: Sequence[str] | None = None,
    mode: str = "replace",
    sparsity: float | None = None,
    n_mean_prompts: int = 64,
    max_rows: int | None = None,
    eval_every: int = 10,
    progress: ProgressArg = None,
    mean_prompts: str = "random",
    mean_candidates: int | None = None,
    **strategy_options: Any,
) -> SearchResult:
    """Find a task vector for ``task`` inside ``model``.

    Args:
        model: a wrapped model or a catalogue name / local folder (``"toy-text"``).
        task: a task, its name or a word-pair JSON file; default: the model's default task.
        strategy: search strategy name (``reinforce``, ``greedy``, ``cmaes``, ``ranking``, and
            the gradient strategies ``attribution`` and ``gradient``, which need a
            differentiable task loss).
        budget: forward-pass equivalents the search may spend (an exact candidate site set 1,
            a gradient row 3); default from
            the model's catalogue entry, else 4096.
        seed: seeds the split, the prompts and the search (an int >= 0).
        shots: demonstrations per ICL prompt, >= 1 (default: the task's); more than the model
            was made for (its catalogue ``max_shots``) is allowed but warned about.
        sites: ``"head"`` or ``"layer"``, or an explicit :class:`SiteSpace`.
        groups: token groups to search over (default: every group).
        mode: ``"replace"`` (mean patching) or ``"add"``.
        sparsity: penalty per selected site added to the loss (default from the catalogue, else 0).
        n_mean_prompts: ICL prompts averaged into the means.
        mean_prompts: which: ``"random"`` (default: demonstrations drawn at random) or
            ``"best"`` (the visual task-vector recipe: the ``n_mean_prompts`` of
            ``mean_candidates`` ICL prompts with the lowest task loss on their own train query;
            see :mod:`nnvtv.mean_prompts`); recorded in the vector's meta.
        mean_candidates: candidate prompts for ``"best"`` (default ``8 * n_mean_prompts``).
        max_rows: memory bound of one batched forward (candidates x queries); default from the
            free memory of the model's device (:func:`nnvtv.patching.auto_max_rows`).
        eval_every: search steps between held-out evaluations of the best mask.
        progress: ``None`` (default: a progress display fit for where this runs, a rich bar in
            a terminal, an in-place bar in Jupyter, lines in logs; ``NNVTV_PROGRESS=0`` turns
            the default off; see :mod:`nnvtv.progress`), ``False`` (silent), ``True``, or a
            callback receiving :class:`~nnvtv.progress.Progress` events in order: ``load``
            (a model given by name), ``means``, ``search``, ``evaluate``.
        **strategy_options: options of the strategy (validated by name).

    Every argument, the task's fit to the model (modality, vocabulary), the shots the task can
    hold and the strategy's options and population against the budget are checked before the
    first forward pass; a bad one raises a :class:`~nnvtv.errors.NnvtvError` naming it. The
    result's :attr:`SearchResult.warnings` say what makes its numbers hard to read.
    """
    t0 = time.perf_counter()
    if isinstance(model, str):
        model = load_reporting(model, progress)
    plan = prepare(
        model, task, strategy=strategy, budget=budget, seed=seed, shots=shots, sites=sites, groups=groups, mode=mode,
        sparsity=sparsity, n_mean_prompts=n_mean_prompts, max_rows=max_rows, eval_every=eval_every,
        strategy_options=strategy_options, mean_prompts=mean_prompts, mean_candidates=mean_candidates,
    )  # fmt: skip
    task, budget, sparsity, shots, space, split = plan.task, plan.budget, plan.sparsity, plan.shots, plan.space, plan.split
    strategy_options = plan.strategy_options
    timings: dict[str, float] = {}

    # 1. means over ICL prompts of train queries (built, and their length checked, before any forward)
    t = time.perf_counter()
    zs_train = task.zero_shot(model, split.train)
    zs_test = task.zero_shot(model, split.test)

    def mean_progress(done: int, total: int) -> None:
        if progress:
            progress(Progress("means", done, total))

    mean_progress(0, 0)  # the stage starts now (its total is known after choosing the prompts)
    means, icl_train, mean_record = icl_means(
        model, task, split, space, shots=shots, n_mean_prompts=n_mean_prompts, seed=seed,
        mean_prompts=mean_prompts, mean_candidates=mean_candidates, progress=mean_progress,
    )  # fmt: skip
    bad = [s for s in space if not bool(torch.isfinite(means[s]).all())]
    if bad:
        raise ConfigError(
            f"the mean activations of {len(bad)} site(s), e.g. {bad[0]}, hold NaN or infinite values: the model's "
            f"forward overflows in {next(model.module.parameters()).dtype}; load it in float32 (dtype='float32')"
        )
    timings["means"] = time.perf_counter() - t

    # 2. objective on train queries, held-out score on test queries
    grad_loss = gradient_loss(model, task, zs_train.targets)  # what gradient strategies differentiate
    objective = MaskObjective(model, zs_train.inputs, means, space, lambda out: task.loss(out, zs_train.targets), mode=mode, max_rows=max_rows,
                              gradient_loss=grad_loss)  # fmt: skip

    def heldout(mask: torch.Tensor) -> float:
        out = run_masks(model, zs_test.inputs, means, space, mask[None], mode=mode, max_rows=max_rows)
        return float(task.score(out, zs_test.targets).mean())

    def search_progress(p: Any) -> None:
        if progress:
            info = {"best_loss": p.best_loss, "heldout": p.best_heldout, "n_sites": p.n_sites,
                    "strategy": strategy if isinstance(strategy, str) else type(strategy).__name__}
            progress(Progress("search", p.forward_passes, p.budget, info))

    t = time.perf_counter()
    search_progress(SearchProgress(0, 0, budget, math.inf, None, 0))  # the stage starts now
    run = run_search(
        objective, len(space), strategy, budget=budget, seed=seed, sparsity=sparsity,
        heldout=heldout, eval_every=eval_every, callback=search_progress, **strategy_options,
    )
    timings["search"] = time.perf_counter() - t

    # 3. the task vector and its held-out scores
    t = time.perf_counter()
    chosen = space.select(run.mask)
    vector = TaskVector(
        values={s: means[s] for s in chosen},
        mode=mode,
        fingerprint=model.fingerprint,
        model=model.name,
        task=task.name,
        strategy=run.strategy,
        space=space.to_list(),
        probabilities=None if run.probabilities is None else [float(p) for p in run.probabilities],
        meta={
            "shots": shots, "seed": seed, "budget": budget, "sparsity": sparsity,
            "forward_passes": run.forward_passes, **mean_record,
            **({"gradient_loss": grad_loss.as_dict()} if run.gradient_rows else {}),
            "strategy_options": {k: v for k, v in strategy_options.items() if _is_plain(v)},
        },
        task_data=task.to_dict(),
    )
    scores = evaluate(model, task, vector, shots=shots, seed=seed)
    warnings = list(scores.warnings)
    if icl_train.dropped_demos:  # the means came from shorter prompts too
        warnings.append("means: " + dropped_warning(model, icl_train.dropped_demos, shots, len(icl_train)))
    vector.scores = scores.as_dict()
    timings["evaluate"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    return SearchResult(
        task_vector=vector,
        scores=scores,
        history=run.history,
        forward_passes=run.forward_passes,
        example_forwards=run.forward_passes * len(zs_train),
        space=space,
        run=run,
        means=means,
        timings=timings,
        task=task,
        warnings=warnings,
    )


def load_reporting(name: str, progress: Any, **kwargs: Any) -> Model:
    """:func:`nnvtv.load` of a model given by name, reported as stage ``"load"`` to ``progress``."""
    if progress:
        progress(Progress("load", 0, 1, {"model": name}))
    model = catalog.load(name, **kwargs)
    if progress:
        progress(Progress("load", 1, 1, {"model": name}))
    return model


def _is_plain(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) and not (isinstance(v, float) and math.isnan(v))
