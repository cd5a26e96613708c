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
from nnvtv.checks import choice, int_at_least, number_in, positive_int
from nnvtv.errors import ConfigError, RemoteError
from nnvtv.mean_prompts import check_mean_prompts, icl_means
from nnvtv.model import Model
from nnvtv.objective import MaskObjective
from nnvtv.patching import MODES, run_masks
from nnvtv.progress import Progress, ProgressArg, with_progress
from nnvtv.search import GRADIENT_ROW_COST, SearchProgress, SearchRun, run_search
from nnvtv.sites import SiteSpace
from nnvtv.surrogate import gradient_loss
from nnvtv.tasks import Task, TaskBatch
from nnvtv.tasks import get as get_task
from nnvtv.vector import TaskVector
from nnvtv.views import ScoresView, SearchResultView

__all__ = ["find", "SearchResult", "Progress", "evaluate", "Scores", "check_find", "check_fit", "ICL_MARGIN", "ZERO_SHOT_SOLVED"]


#: a callback receiving :class:`~nnvtv.progress.Progress` events (``Progress`` lives in
#: :mod:`nnvtv.progress`, the one event source every long step reports through)
ProgressFn = Callable[[Progress], None]


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
        """Task-vector score as a fraction of the ICL score (``None`` if undefined)."""
        if self.task_vector is None or self.icl == 0:
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


def _run_warnings(model: Model, task: Task, shots: int, dropped: int, n_prompts: int) -> list[str]:
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
        out.append(_dropped_warning(model, dropped, shots, n_prompts))
    models = tuple(getattr(task, "models", ()) or ())
    if models and model.name not in models:
        out.append(f"task {task.name!r} is written for {', '.join(models)}, not {model.name}")
    return out


def _dropped_warning(model: Model, dropped: int, shots: int, n_prompts: int) -> str:
    return (
        f"{dropped} of {shots * n_prompts} demonstrations were dropped to fit max_length="
        f"{getattr(model.io, 'max_length', None)}: ICL prompts hold fewer than {shots} shots"
    )


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


def score_batch(model: Model, task: Task, batch: TaskBatch, patch: Any = None) -> float:
    """Mean task metric of ``batch`` (optionally patched)."""
    out = model.run(batch.inputs, patch, readout=True)
    return float(task.score(out, batch.targets).mean())


def _check_model(model: Any) -> Model:
    if not isinstance(model, Model):
        raise ConfigError(
            f"model must be an nnvtv.Model (nnvtv.load(name) or nnvtv.wrap(module, tokenizer)) or a catalogue name, "
            f"got {model!r} ({type(model).__name__})"
        )
    return model


def check_fit(model: Model, task: Task) -> None:
    """Raise :class:`ConfigError` unless ``task`` can run on ``model`` (modality, vocabulary ...):
    the message says what does not fit and which tasks suit the model."""
    from nnvtv.tasks import misfit_error

    err = misfit_error(task, model)
    if err is not None:
        raise err


def _check_shots(task: Task, split: Any, shots: int, *, train_queries: bool) -> None:
    top = task.max_shots(split, train_queries=train_queries)
    if top is not None and shots > top:
        why = ""
        if hasattr(task, "pairs"):
            why = f" (it keeps {len(split.train)} pairs to learn from{', none of them the query' if train_queries else ''})"
        raise ConfigError(f"shots={shots} is more than task {task.name!r} can put in one prompt: at most {top}{why}; use shots <= {top}")


@with_progress
def evaluate(
    model: Model,
    task: Task | str | None = None,
    vector: TaskVector | None = None,
    *,
    shots: int | None = None,
    seed: int = 0,
    progress: ProgressArg = None,
) -> Scores:
    """Held-out zero-shot, ICL and (if given) task-vector scores of ``task`` on ``model``.

    Args:
        model: a wrapped model.
        task: a task, its name or a word-pair JSON file; default: the vector's own task
            (:meth:`TaskVector.task_object`: rebuilt from the data saved with it, or by name).
        vector: a task vector to score (found on this model: same fingerprint).
        shots: demonstrations per ICL prompt (default: the task's); ``0`` makes the ICL row the
            zero-shot prompt.
        seed: seeds the split and the demonstrations.
        progress: ``None`` (default: a progress display, see :mod:`nnvtv.progress`), ``False``
            (silent), ``True``, or a callback receiving :class:`~nnvtv.progress.Progress`
            events (stage ``"evaluate"``: batches scored of 2 or 3).

    Every argument, and whether the task fits the model, is checked before any forward pass.
    The returned :attr:`Scores.warnings` say what makes the numbers hard to read.
    """
    model = _check_model(model)
    if task is None:
        if vector is None:
            raise ConfigError("evaluate needs a task (a name, a word-pair JSON file or a Task) or a vector to take it from")
        task = vector.task_object()
    task = get_task(task)
    int_at_least("seed", seed, 0)
    int_at_least("shots", shots, 0, allow_none=True)
    if vector is not None and not isinstance(vector, TaskVector):
        raise ConfigError(f"vector must be an nnvtv.TaskVector (TaskVector.load(DIR)), got {type(vector).__name__}")
    check_fit(model, task)
    if vector is not None:
        vector.check_model(model)
    shots = shots if shots is not None else getattr(task, "default_shots", 5)
    split = task.split(seed)
    _check_shots(task, split, shots, train_queries=False)
    zs = task.zero_shot(model, split.test)
    icl = task.icl(model, split.test, split.train, shots=shots, seed=seed + 1)
    n_scored, done = (2 if vector is None else 3), [0]

    def scored(value: float) -> float:  # one "evaluate" event per batch scored
        done[0] += 1
        if progress:
            progress(Progress("evaluate", done[0], n_scored))
        return value

    if progress:
        progress(Progress("evaluate", 0, n_scored))
    scores = Scores(
        metric=task.metric,
        zero_shot=scored(score_batch(model, task, zs)),
        icl=scored(score_batch(model, task, icl)),
        task_vector=None if vector is None else scored(score_batch(model, task, zs, vector.patch())),
        n_queries=len(zs),
        shots=shots,
        higher_is_better=bool(task.higher_is_better),
    )
    scores.warnings = score_warnings(scores) + _run_warnings(model, task, shots, icl.dropped_demos, len(icl))
    return scores


@dataclass
class _Plan:
    """:func:`find`'s arguments, checked and resolved (defaults filled in)."""

    task: Task
    budget: int
    sparsity: float
    shots: int
    space: SiteSpace
    split: Any
    strategy_options: dict[str, Any]


def _prepare(
    model: Model,
    task: Task | str | None,
    *,
    strategy: Any,
    budget: int | None,
    seed: int,
    shots: int | None,
    sites: SiteSpace | str,
    groups: Sequence[str] | None,
    mode: str,
    sparsity: float | None,
    n_mean_prompts: int,
    max_rows: int | None,
    eval_every: int,
    strategy_options: dict[str, Any],
    mean_prompts: str = "random",
    mean_candidates: int | None = None,
) -> _Plan:
    """Every check :func:`find` makes before its first forward pass (see its docstring)."""
    model = _check_model(model)
    entry = catalog.entry(model.name)
    defaults = dict(entry.defaults) if entry is not None else {}
    # plain arguments first: cheap, and the message names the argument
    int_at_least("seed", seed, 0)
    positive_int("budget", budget, allow_none=True)
    if isinstance(shots, int) and not isinstance(shots, bool) and shots == 0:
        raise ConfigError(
            "shots=0 asks for ICL prompts with no demonstrations, which are the zero-shot prompts: a task vector "
            "is the mean over prompts *with* demonstrations; use shots >= 1 (or leave it unset for the task's default)"
        )
    positive_int("shots", shots, allow_none=True)
    if sparsity is not None:
        number_in("sparsity", sparsity, low=0.0)
    choice("mode", mode, MODES)
    check_mean_prompts(mean_prompts, n_mean_prompts, mean_candidates)
    positive_int("max_rows", max_rows, allow_none=True)
    positive_int("eval_every", eval_every)
    if not isinstance(sites, SiteSpace):
        choice("sites", sites, ("head", "layer"))
    if groups is not None and (isinstance(groups, str) or not all(isinstance(g, str) for g in groups)):
        raise ConfigError(f"groups must be a list of group names such as ['last'], got {groups!r}")
    if isinstance(strategy, str):
        from nnvtv.search import STRATEGIES

        if strategy not in STRATEGIES:
            STRATEGIES.get(strategy)  # UnknownStrategyError listing them
    # the task, and whether it fits this model
    if task is None:
        task = entry.default_task if entry is not None else None
        if task is None:
            raise ConfigError(f"model {model.name!r} has no catalogue entry, so no default task; pass task= (`nnvtv tasks --model {model.name}`)")
    task = get_task(task)
    check_fit(model, task)
    budget = budget if budget is not None else int(defaults.get("budget", 4096))
    sparsity = sparsity if sparsity is not None else float(defaults.get("sparsity", 0.0))
    options = dict(strategy_options)
    if isinstance(strategy, str):
        for k, v in defaults.get("strategy_options", {}).get(strategy, {}).items():
            options.setdefault(k, v)
    shots = shots if shots is not None else int(defaults.get("shots", getattr(task, "default_shots", 5)))
    split = task.split(seed)
    _check_shots(task, split, shots, train_queries=True)
    space = sites if isinstance(sites, SiteSpace) else model.sites(sites, groups=groups)
    if len(space) == 0:
        raise ConfigError(f"the site space is empty (sites={sites!r}, groups={groups!r}); model {model.name} has groups {model.groups}")
    if isinstance(strategy, str):
        from nnvtv.search import get_strategy

        # build it once to check its options and its population against the budget
        probe = get_strategy(strategy, len(space), seed=seed, **options)
        if hasattr(probe, "plan_budget"):
            probe.plan_budget(budget)  # a gradient strategy says when the budget pays for no step
        population = int(probe.population_size)
        if getattr(probe, "needs_gradients", False) and model.remote:
            raise RemoteError(
                f"strategy {strategy!r} backpropagates through patched forwards, and nnvtv runs no gradients through "
                "a remote (NDIF) trace; search a remote model with reinforce, greedy, cmaes or ranking, or load it locally"
            )
        if getattr(probe, "needs_gradients", False):
            population = max(population, GRADIENT_ROW_COST)  # its first step: one gradient row or more
        if population > budget:
            raise ConfigError(
                f"budget={budget} is less than what strategy {strategy!r} spends in one step ({population} forward-pass "
                f"equivalents: candidate site sets, or gradient rows at {GRADIENT_ROW_COST} each, over {len(space)} sites); "
                f"use budget >= {population} or a smaller population option"
            )
    return _Plan(task=task, budget=budget, sparsity=sparsity, shots=shots, space=space, split=split, strategy_options=options)


def check_find(model: Model | str, task: Task | str | None = None, **options: Any) -> Task:
    """Every check :func:`find` makes before its first forward pass, without running anything
    (e.g. for each model of a comparison before the first search); returns the resolved task."""
    if isinstance(model, str):
        model = catalog.load(model)
    keys = {"strategy": "reinforce", "budget": None, "seed": 0, "shots": None, "sites": "head", "groups": None, "mode": "replace",
            "sparsity": None, "n_mean_prompts": 64, "max_rows": None, "eval_every": 10, "mean_prompts": "random",
            "mean_candidates": None}  # fmt: skip
    given = {k: options.pop(k, v) for k, v in keys.items()}
    options.pop("progress", None)
    return _prepare(model, task, strategy_options=options, **given).task


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
    plan = _prepare(
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
        warnings.append("means: " + _dropped_warning(model, icl_train.dropped_demos, shots, len(icl_train)))
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
