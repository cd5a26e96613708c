"""``nnvtv.compare``: one task across several models or seeds, side by side.

>>> cmp = nnvtv.compare(["toy-text", "toy-text-natural"], "toy-perm_c", strategy="greedy", budget=256)
>>> cmp.table()          # rich table: scores, sites, depth, overlap, transfer
>>> cmp.save("runs/compare")   # compare.json (reload with Comparison.load), compare.png, vectors/

For every (model, seed) *run* it calls :func:`nnvtv.find` and reports:

* scores: zero-shot, ICL and task vector on held-out queries (the task's own metric);
* how many sites the vector uses, of how many searched;
* where they sit: the fraction of each layer's sites selected, placed at the layer's
  **relative depth** ``(index + 0.5) / n_layers`` so models of different depth line up.
  Streams (``enc``, ``dec`` ...) count as one stack in forward order;
* overlap: Jaccard ``|A & B| / |A | B|`` of the site sets of two runs whose site spaces are
  identical (same site names), else ``None``;
* transfer: the score of run *i*'s task vector applied to run *j*'s model on *j*'s held-out
  zero-shot queries (``TaskVector.apply(..., transfer=True)``), where every site exists
  with the same width; otherwise ``None`` with the reason in ``transfer_notes``. The
  diagonal is each run's own task-vector score.

Nothing here knows a modality: tasks score readouts, models describe their own streams.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

from nnvtv import catalog
from nnvtv.checks import int_at_least, positive_int
from nnvtv.comparison import Comparison, RunSummary, depth_profile, jaccard
from nnvtv.errors import ConfigError, NnvtvError
from nnvtv.find import Progress, SearchResult, check_find, find, load_reporting, score_batch
from nnvtv.model import Model
from nnvtv.progress import ProgressArg, ProgressSink, with_progress
from nnvtv.tasks import Task
from nnvtv.tasks import get as get_task
from nnvtv.vector import TaskVector

__all__ = ["Comparison", "RunSummary", "compare", "depth_profile", "jaccard"]

def _label(name: str, seed: int, several_seeds: bool, taken: set[str]) -> str:
    label = f"{name}#{seed}" if several_seeds else name
    base, k = label, 2
    while label in taken:
        label, k = f"{base}({k})", k + 1
    taken.add(label)
    return label


@with_progress(events=False)
def compare(
    models: Sequence[Model | str],
    task: Task | str | None = None,
    *,
    seeds: Sequence[int] = (0,),
    strategy: str = "reinforce",
    budget: int | None = None,
    transfer: bool = True,
    progress: ProgressArg | Callable[[str, Progress], None] = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    **find_options: Any,
) -> Comparison:
    """Run :func:`nnvtv.find` for ``task`` on every model x seed and compare the results.

    Args:
        models: wrapped models or catalogue names / local folders (at least one).
        task: task or task name; default: the first model's catalogue default task.
        seeds: seeds per model (each seeds the split, the prompts and the search).
        strategy, budget: passed to :func:`nnvtv.find` (same for every run: equal cost).
        transfer: also apply every run's task vector to every other run's model.
        progress: ``None`` (default: one progress display for every run, each stage labelled
            with its run, see :mod:`nnvtv.progress`), ``False`` (silent), ``True``, or a
            callback ``progress(label, event)`` for each :class:`~nnvtv.progress.Progress` event.
        device, dtype: where and in what dtype models given by name are loaded (:func:`nnvtv.load`).
        **find_options: further options of :func:`nnvtv.find` (``sites``, ``shots`` ...).

    Returns:
        A :class:`Comparison`.
    """
    if isinstance(models, (str, Model)):
        models = [models]
    models = list(models)
    if not models:
        raise ConfigError("compare needs at least one model, got none")
    bad = [m for m in models if not isinstance(m, (str, Model))]
    if bad:
        raise ConfigError(f"models must be catalogue names, local folders or nnvtv.Model objects; got {bad[0]!r} ({type(bad[0]).__name__})")
    if isinstance(seeds, (str, int)):
        raise ConfigError(f"seeds must be a list of ints >= 0 such as [0, 1], got {seeds!r}")
    seeds = [int_at_least("seeds[]", s, 0) for s in seeds]
    if not seeds:
        raise ConfigError("compare needs at least one seed, got none")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct (a repeated seed repeats the same run), got {seeds}")
    positive_int("budget", budget, allow_none=True)
    if not isinstance(transfer, bool):
        raise ConfigError(f"transfer must be True or False, got {transfer!r}")
    if isinstance(strategy, str):
        from nnvtv.search import STRATEGIES

        STRATEGIES.get(strategy)  # UnknownStrategyError listing them
    if task is not None:
        task = get_task(task)  # a bad name or file fails before any model loads

    def events(label: str) -> Callable[[Progress], None] | None:
        """Where the events of run ``label`` go: the display, the caller's callback, or nowhere."""
        if isinstance(progress, ProgressSink):
            return lambda p: progress(dataclasses.replace(p, label=label))
        if progress is not None:
            return lambda p: progress(label, p)
        return None  # silent: find inherits the silence

    loaded = [load_reporting(m, events(m), device=device, dtype=dtype) if isinstance(m, str) else m for m in models]
    if task is None:
        e = catalog.entry(loaded[0].name)
        if e is None:
            raise ConfigError(f"no default task for model {loaded[0].name!r}; pass task=")
        task = e.default_task
    task = get_task(task)
    for model in loaded:  # every run's arguments and the task's fit, before the first search
        for seed in seeds:
            check_find(model, task, strategy=strategy, budget=budget, seed=seed, **find_options)

    runs: list[RunSummary] = []
    results: list[SearchResult] = []
    owners: list[Model] = []
    taken: set[str] = set()
    for model in loaded:
        for seed in seeds:
            label = _label(model.name, seed, len(seeds) > 1, taken)

            r = find(model, task, strategy=strategy, budget=budget, seed=seed, progress=events(label), **find_options)
            layers = {name: info.n_layers for name, info in model.streams.items()}
            runs.append(
                RunSummary(
                    label=label,
                    model=model.name,
                    fingerprint=model.fingerprint,
                    seed=seed,
                    layers=layers,
                    scores=r.scores.as_dict(),
                    sites=[str(s) for s in r.task_vector.sites],
                    space=r.space.to_list(),
                    forward_passes=r.forward_passes,
                    depth=depth_profile(r.space, r.task_vector.sites, layers),
                )
            )
            results.append(r)
            owners.append(model)

    n = len(runs)
    overlap: list[list[float | None]] = [
        [jaccard(runs[i].sites, runs[j].sites) if runs[i].space == runs[j].space else None for j in range(n)]
        for i in range(n)
    ]
    moved: list[list[float | None]] = [[None] * n for _ in range(n)]
    notes: dict[str, str] = {}
    for i in range(n):
        moved[i][i] = runs[i].scores.get("task_vector")
    if transfer and n > 1:
        report, done = events("all runs"), 0
        if report:
            report(Progress("transfer", 0, n * (n - 1)))
        for i in range(n):
            for j in range(n):
                if i == j:
                    continue
                try:
                    moved[i][j] = transfer_score(results[i].task_vector, owners[j], task, seed=runs[j].seed)
                except NnvtvError as exc:
                    notes[f"{runs[i].label}->{runs[j].label}"] = str(exc)
                done += 1
                if report:
                    report(Progress("transfer", done, n * (n - 1)))
    return Comparison(
        task=task.name,
        metric=task.metric,
        strategy=strategy,
        budget=budget,
        runs=runs,
        jaccard=overlap,
        transfer=moved,
        transfer_notes=notes,
        vectors=[r.task_vector for r in results],
    )


def transfer_score(vector: TaskVector, model: Model, task: Task | str, *, seed: int = 0) -> float:
    """Held-out zero-shot score of ``task`` on ``model`` with ``vector`` patched in.

    The vector may come from another model of the same shape (explicit transfer, see
    :meth:`TaskVector.check_model`); raises :class:`~nnvtv.errors.SiteError` /
    :class:`~nnvtv.errors.ShapeMismatchError` where it does not fit.
    """
    task = get_task(task)
    vector.check_model(model, transfer=True)
    zs = task.zero_shot(model, task.split(seed).test)
    return score_batch(model, task, zs, vector.patch())

