"""``nnvtv.find``: the whole pipeline, from a task to a measured, saveable task vector.

Data flows one way (DESIGN.md §3)::

    task.split(seed) -> ICL prompts on train queries -> mean_activations over the site space
    -> zero-shot train batch -> objective(masks) = task loss of run_masks(...)   [budgeted]
    -> strategy search -> TaskVector -> held-out scores (zero-shot, ICL, task vector)

"Forward passes" counts candidate site sets evaluated by the search: each is one patched
forward of the training queries (``SearchResult.example_forwards`` counts prompt rows).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from nnvtv import catalog
from nnvtv.activations import Means, mean_activations
from nnvtv.errors import ConfigError
from nnvtv.model import Model
from nnvtv.patching import MODES, run_masks
from nnvtv.search import SearchRun, run_search
from nnvtv.sites import SiteSpace
from nnvtv.tasks import Task, TaskBatch
from nnvtv.tasks import get as get_task
from nnvtv.tasks.base import cycle
from nnvtv.vector import TaskVector

__all__ = ["find", "SearchResult", "Progress", "evaluate", "Scores"]


@dataclass(frozen=True)
class Progress:
    """A progress event: ``stage`` in {"means", "search", "evaluate"}; ``info`` has e.g. best scores."""

    stage: str
    completed: int
    total: int
    info: dict[str, Any] = field(default_factory=dict)


ProgressFn = Callable[[Progress], None]


@dataclass
class Scores:
    """Held-out scores of one task on one model (task metric, e.g. accuracy)."""

    metric: str
    zero_shot: float
    icl: float
    task_vector: float | None = None
    n_queries: int = 0
    shots: int = 0

    @property
    def fraction_of_icl(self) -> float | None:
        """Task-vector score as a fraction of the ICL score (``None`` if undefined)."""
        if self.task_vector is None or self.icl == 0:
            return None
        return self.task_vector / self.icl

    @property
    def gap_closed(self) -> float | None:
        """``(task vector - zero-shot) / (ICL - zero-shot)``: the share of the ICL gain the task
        vector recovers, meaningful for lower-is-better metrics (MSE) too; ``None`` if undefined."""
        if self.task_vector is None or self.icl == self.zero_shot:
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
        }


@dataclass
class SearchResult:
    """What :func:`find` returns.

    Attributes:
        task_vector: the found :class:`TaskVector` (sites + mean values + provenance).
        scores: held-out :class:`Scores`.
        history: the search history (one row per step).
        forward_passes: candidate site sets evaluated (the budget unit).
        example_forwards: prompt rows run by the search (``forward_passes x train queries``).
        space: the searched :class:`SiteSpace`.
        run: the raw :class:`~nnvtv.search.SearchRun`.
        means: the :class:`Means` the vector's values come from.
        timings: seconds per stage.
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
            "n_sites": self.n_sites,
            "total_sites": len(self.space),
            "sites": [str(s) for s in self.task_vector.sites],
            "forward_passes": self.forward_passes,
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


def evaluate(
    model: Model,
    task: Task | str,
    vector: TaskVector | None = None,
    *,
    shots: int | None = None,
    seed: int = 0,
) -> Scores:
    """Held-out zero-shot, ICL and (if given) task-vector scores of ``task`` on ``model``."""
    task = get_task(task)
    if vector is not None:
        vector.check_model(model)
    shots = shots if shots is not None else getattr(task, "default_shots", 5)
    split = task.split(seed)
    zs = task.zero_shot(model, split.test)
    icl = task.icl(model, split.test, split.train, shots=shots, seed=seed + 1)
    return Scores(
        metric=task.metric,
        zero_shot=score_batch(model, task, zs),
        icl=score_batch(model, task, icl),
        task_vector=None if vector is None else score_batch(model, task, zs, vector.patch()),
        n_queries=len(zs),
        shots=shots,
    )


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
    progress: ProgressFn | None = None,
    **strategy_options: Any,
) -> SearchResult:
    """Find a task vector for ``task`` inside ``model``.

    Args:
        model: a wrapped model or a catalogue name / local folder (``"toy-text"``).
        task: a task or its name; default: the model's default task.
        strategy: search strategy name (``reinforce``, ``greedy``, ``cmaes``, ``ranking``).
        budget: forward passes (candidate site sets) the search may spend; default from
            the model's catalogue entry, else 4096.
        seed: seeds the split, the prompts and the search.
        shots: demonstrations per ICL prompt (default: the task's).
        sites: ``"head"`` or ``"layer"``, or an explicit :class:`SiteSpace`.
        groups: token groups to search over (default: every group).
        mode: ``"replace"`` (mean patching) or ``"add"``.
        sparsity: penalty per selected site added to the loss (default from the catalogue, else 0).
        n_mean_prompts: ICL prompts averaged into the means.
        max_rows: memory bound of one batched forward (candidates x queries); default from the
            free memory of the model's device (:func:`nnvtv.patching.auto_max_rows`).
        eval_every: search steps between held-out evaluations of the best mask.
        progress: callback receiving :class:`Progress` events.
        **strategy_options: options of the strategy (validated by name).
    """
    t0 = time.perf_counter()
    if isinstance(model, str):
        model = catalog.load(model)
    entry = catalog.entry(model.name)
    defaults = dict(entry.defaults) if entry is not None else {}
    if task is None:
        task = entry.default_task if entry is not None else None
        if task is None:
            raise ConfigError(f"no default task for model {model.name!r}; pass task=")
    task = get_task(task)
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    budget = budget if budget is not None else int(defaults.get("budget", 4096))
    sparsity = sparsity if sparsity is not None else float(defaults.get("sparsity", 0.0))
    for k, v in defaults.get("strategy_options", {}).get(strategy, {}).items():
        strategy_options.setdefault(k, v)
    shots = shots if shots is not None else getattr(task, "default_shots", 5)
    space = sites if isinstance(sites, SiteSpace) else model.sites(sites, groups=groups)
    if len(space) == 0:
        raise ConfigError("the site space is empty")
    split = task.split(seed)
    timings: dict[str, float] = {}

    # 1. means over ICL prompts of train queries
    t = time.perf_counter()
    icl_train = task.icl(model, cycle(split.train, n_mean_prompts, name="n_mean_prompts"), split.train, shots=shots, seed=seed)
    def mean_progress(done: int) -> None:
        if progress:
            progress(Progress("means", done, n_mean_prompts))
    means = mean_activations(
        model, icl_train.chunks(64), space, progress=mean_progress,
        meta={"task": task.name, "shots": shots, "n_prompts": n_mean_prompts, "seed": seed},
    )
    timings["means"] = time.perf_counter() - t

    # 2. objective on train queries, held-out score on test queries
    zs_train = task.zero_shot(model, split.train)
    zs_test = task.zero_shot(model, split.test)

    def objective(masks: torch.Tensor) -> torch.Tensor:
        out = run_masks(model, zs_train.inputs, means, space, masks, mode=mode, max_rows=max_rows)
        return task.loss(out, zs_train.targets).mean(-1)

    def heldout(mask: torch.Tensor) -> float:
        out = run_masks(model, zs_test.inputs, means, space, mask[None], mode=mode, max_rows=max_rows)
        return float(task.score(out, zs_test.targets).mean())

    def search_progress(p: Any) -> None:
        if progress:
            info = {"best_loss": p.best_loss, "heldout": p.best_heldout, "n_sites": p.n_sites}
            progress(Progress("search", p.forward_passes, p.budget, info))

    t = time.perf_counter()
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
            "forward_passes": run.forward_passes, "n_mean_prompts": n_mean_prompts,
            "strategy_options": {k: v for k, v in strategy_options.items() if _is_plain(v)},
        },
    )
    if progress:
        progress(Progress("evaluate", 0, 1))
    scores = evaluate(model, task, vector, shots=shots, seed=seed)
    vector.scores = scores.as_dict()
    timings["evaluate"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    if progress:
        progress(Progress("evaluate", 1, 1))
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
    )


def _is_plain(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) and not (isinstance(v, float) and math.isnan(v))
