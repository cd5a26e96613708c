"""Every check :func:`nnvtv.find` makes before its first forward pass, and the plan it resolves.

:func:`check_find` runs them without running anything (e.g. for each model of a comparison
before the first search).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nnvtv import catalog
from nnvtv.checks import choice, int_at_least, number_in, positive_int
from nnvtv.errors import ConfigError, RemoteError
from nnvtv.evaluation import check_fit, check_model, check_shots
from nnvtv.mean_prompts import check_mean_prompts
from nnvtv.model import Model
from nnvtv.patching import MODES
from nnvtv.search import GRADIENT_ROW_COST, STRATEGIES, get_strategy
from nnvtv.sites import SiteSpace
from nnvtv.tasks import Task
from nnvtv.tasks import get as get_task

__all__ = ["Plan", "prepare", "check_find"]


@dataclass
class Plan:
    """:func:`find`'s arguments, checked and resolved (defaults filled in)."""

    task: Task
    budget: int
    sparsity: float
    shots: int
    space: SiteSpace
    split: Any
    strategy_options: dict[str, Any]


def prepare(
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
) -> Plan:
    """Every check :func:`find` makes before its first forward pass (see its docstring)."""
    model = check_model(model)
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
    check_shots(task, split, shots, train_queries=True)
    space = sites if isinstance(sites, SiteSpace) else model.sites(sites, groups=groups)
    if len(space) == 0:
        raise ConfigError(f"the site space is empty (sites={sites!r}, groups={groups!r}); model {model.name} has groups {model.groups}")
    if isinstance(strategy, str):
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
    return Plan(task=task, budget=budget, sparsity=sparsity, shots=shots, space=space, split=split, strategy_options=options)


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
    return prepare(model, task, strategy_options=options, **given).task
