"""``run_search``: the ask/tell loop with a forward-pass budget, sparsity and held-out scoring.

The budget is counted in forward-pass equivalents: a boolean mask row (one exact patched
forward of the training queries) costs 1, a weight row of a gradient strategy (a relaxed
forward and its backward, see :mod:`nnvtv.relaxed`) costs :data:`GRADIENT_ROW_COST` = 3.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from nnvtv.checks import number_in, positive_int
from nnvtv.errors import ConfigError

from ._checks import check_grads, check_losses, check_masks, no_gradients_error
from ._protocol import GRADIENT_ROW_COST, ObjectiveError, Strategy
from ._registry import get_strategy, strategy_name

__all__ = ["GRADIENT_ROW_COST", "SearchProgress", "SearchRun", "SearchStep", "run_search"]

#: ``masks: BoolTensor[B, n_sites] -> FloatTensor[B]``; an object whose
#: ``value_and_grad(weights: FloatTensor[B, n_sites]) -> (FloatTensor[B], FloatTensor[B, n_sites])``
#: also scores relaxed weights with gradients (e.g. :class:`nnvtv.objective.MaskObjective`)
Objective = Callable[[torch.Tensor], torch.Tensor]
Heldout = Callable[[torch.Tensor], float]

_POPULATION_HINTS = {
    "reinforce": "samples=",
    "greedy": "candidates= or batch_size=",
    "cmaes": "population_size=",
    "ranking": "batch_size=",
    "attribution": "batch_size=",
    "gradient": "samples=",
}


@dataclass(frozen=True)
class SearchProgress:
    """Passed to ``callback`` after every step.

    Attributes:
        step: steps done (one step = one ``ask``/``tell``).
        forward_passes: forward-pass equivalents spent so far (gradient rows count 3).
        budget: the budget in forward-pass equivalents.
        best_loss: lowest penalised loss seen (``inf`` before the first step).
        best_heldout: held-out score of the best mask at its last evaluation, or ``None``.
        n_sites: number of sites in the best mask.
    """

    step: int
    forward_passes: int
    budget: int
    best_loss: float
    best_heldout: float | None
    n_sites: int


@dataclass(frozen=True)
class SearchStep:
    """One row of :attr:`SearchRun.history`.

    Attributes:
        step: 1-based step index.
        forward_passes: cumulative forward-pass equivalents after this step (an exact mask row
            is 1, a gradient row 3).
        loss: mean penalised loss of this step's batch (relaxed losses for a gradient step).
        best_loss: lowest penalised loss of an exactly evaluated mask so far.
        n_sites: number of sites in the best mask so far.
        heldout: held-out score of the best mask if evaluated at this step, else ``None``.
        p_mean: mean per-site selection probability (reinforce, cmaes, gradient), else ``None``.
        kind: ``"exact"`` (boolean masks, patched forwards) or ``"gradient"`` (weights scored
            with gradients).
        gradient_rows: cumulative weight rows scored with gradients.
        wall_time: seconds since the search started, after this step.
    """

    step: int
    forward_passes: int
    loss: float
    best_loss: float
    n_sites: int
    heldout: float | None = None
    p_mean: float | None = None
    kind: str = "exact"
    gradient_rows: int = 0
    wall_time: float = 0.0


@dataclass
class SearchRun:
    """What :func:`run_search` returns.

    Attributes:
        mask: ``BoolTensor[n_sites]``, the strategy's final selection (``strategy.result()``).
        best_mask: ``BoolTensor[n_sites]``, the lowest-loss mask evaluated during the search.
        best_loss: its penalised loss (``inf`` if nothing was evaluated).
        probabilities: ``FloatTensor[n_sites]`` from the strategy's result, or ``None``.
        history: one :class:`SearchStep` per step.
        forward_passes: forward-pass equivalents spent, exactly (never more than ``budget``):
            ``exact_rows + GRADIENT_ROW_COST * gradient_rows``.
        heldout_evaluations: calls of ``heldout`` (not part of the budget).
        heldout: held-out score of ``mask`` (if ``heldout`` was given).
        best_heldout: held-out score of ``best_mask`` (if ``heldout`` was given).
        wall_time: seconds spent in the loop.
        strategy: strategy name; seed, budget: as given.
        stop_reason: ``"budget"`` (next batch would not fit) or ``"strategy"`` (should_stop).
        extra: the strategy result's ``extra``.
        exact_rows: boolean mask rows scored (exact patched forwards, 1 equivalent each).
        gradient_rows: weight rows scored with gradients (3 equivalents each).
    """

    mask: torch.Tensor
    best_mask: torch.Tensor
    best_loss: float
    probabilities: torch.Tensor | None
    history: list[SearchStep]
    forward_passes: int
    heldout_evaluations: int
    heldout: float | None
    best_heldout: float | None
    wall_time: float
    strategy: str
    seed: int
    budget: int
    stop_reason: str
    extra: dict[str, Any] = field(default_factory=dict)
    exact_rows: int = 0
    gradient_rows: int = 0


def _resolve_strategy(strategy: str | Strategy, n_sites: int, seed: int, options: dict[str, Any]) -> tuple[Strategy, str]:
    if isinstance(strategy, str):
        return get_strategy(strategy, n_sites, seed=seed, **options), strategy
    if not isinstance(strategy, Strategy):
        raise ConfigError(
            f"strategy must be a registered name or a Strategy instance, got {strategy!r}"
        )
    if options:
        raise ConfigError(
            f"strategy options {sorted(options)} only apply when the strategy is "
            "given by name; set them on the instance you passed"
        )
    if strategy.n_sites != n_sites:
        raise ConfigError(
            f"strategy works on n_sites={strategy.n_sites} but run_search got n_sites={n_sites}"
        )
    return strategy, strategy_name(strategy)


def run_search(
    objective: Objective,
    n_sites: int,
    strategy: str | Strategy = "reinforce",
    *,
    budget: int,
    seed: int = 0,
    sparsity: float = 0.0,
    heldout: Heldout | None = None,
    eval_every: int = 10,
    callback: Callable[[SearchProgress], None] | None = None,
    **strategy_options: Any,
) -> SearchRun:
    """Search for a site mask that minimizes ``objective`` within ``budget`` forward passes.

    Args:
        objective: ``masks: BoolTensor[B, n_sites] -> FloatTensor[B]`` losses (minimized); each
            row is one forward pass. It gets a copy of the strategy's masks. Gradient
            strategies (``attribution``, ``gradient``) also need
            ``objective.value_and_grad(weights: FloatTensor[B, n_sites]) -> (FloatTensor[B],
            FloatTensor[B, n_sites])`` (e.g. :class:`nnvtv.objective.MaskObjective`); each
            weight row costs :data:`GRADIENT_ROW_COST` forward-pass equivalents.
        n_sites: size of the site space.
        strategy: a registered name (``reinforce``, ``greedy``, ``cmaes``, ``ranking``,
            ``attribution``, ``gradient``, ...) or a :class:`~nnvtv.search.Strategy` instance
            (then ``seed`` is only recorded and ``strategy_options`` must be empty).
        budget: the most forward-pass equivalents to spend; never exceeded: the search stops
            when the next batch would not fit.
        seed: seed of the strategy; the same seed gives the same search.
        sparsity: penalty per selected site added to every loss (``loss + sparsity * |mask|``;
            for weights ``loss + sparsity * sum(w)``, and ``sparsity`` is added to every
            gradient).
        heldout: ``BoolTensor[n_sites] -> float`` score of a mask on held-out data; evaluated on
            the best mask every ``eval_every`` steps and at the end, and on the final mask.
            Only reported, never used to select. Not counted in ``budget``.
        eval_every: steps between held-out evaluations.
        callback: called with a :class:`SearchProgress` after every step.
        **strategy_options: keyword options of the named strategy (validated by name).

    Returns:
        A :class:`SearchRun`. Its best mask is the lowest-loss mask evaluated exactly: boolean
        rows, and weight rows whose every weight is 0 or 1 (a relaxed patch at 0/1 is the
        exact patched forward).
    """
    positive_int("n_sites", n_sites)
    positive_int("budget", budget)
    positive_int("eval_every", eval_every)
    number_in("sparsity", sparsity, low=0.0)
    strat, name = _resolve_strategy(strategy, n_sites, seed, strategy_options)
    gradients = bool(getattr(strat, "needs_gradients", False))
    value_and_grad = getattr(objective, "value_and_grad", None)
    if gradients and not callable(value_and_grad):
        raise no_gradients_error(name, objective)
    if hasattr(strat, "plan_budget"):
        strat.plan_budget(budget)
    population = int(strat.population_size)
    if population > budget:
        hint = _POPULATION_HINTS.get(name, "its population option")
        raise ConfigError(
            f"strategy {name!r} asks up to {population} masks per step (population_size) but the "
            f"budget is {budget} forward passes; raise budget to at least {population} or lower "
            f"the population with {hint}"
        )

    start = time.perf_counter()
    history: list[SearchStep] = []
    forward_passes = exact_rows = gradient_rows = 0
    heldout_evaluations = 0
    best_mask: torch.Tensor | None = None
    best_loss = math.inf
    best_heldout: float | None = None
    heldout_cache: dict[bytes, float] = {}
    stop_reason = "strategy"

    def score_heldout(mask: torch.Tensor) -> float:
        nonlocal heldout_evaluations
        assert heldout is not None
        key = mask.numpy().tobytes()
        if key not in heldout_cache:
            heldout_cache[key] = float(heldout(mask.clone()))
            heldout_evaluations += 1
        return heldout_cache[key]

    step = 0
    while not strat.should_stop():
        masks = check_masks(strat.ask(), n_sites, population, name, gradients)
        batch, relaxed = masks.shape[0], masks.is_floating_point()
        cost = batch * (GRADIENT_ROW_COST if relaxed else 1)
        if forward_passes + cost > budget:
            if step == 0 and relaxed:
                hint = _POPULATION_HINTS.get(name, "its population option")
                raise ConfigError(
                    f"strategy {name!r} starts with {batch} gradient rows = {cost} forward-pass "
                    f"equivalents ({GRADIENT_ROW_COST} per row: forward + backward) but the budget is "
                    f"{budget}; raise budget to at least {cost} or lower the rows with {hint}"
                )
            stop_reason = "budget"
            break
        if relaxed:
            weights = masks.to(torch.float32)
            pair = value_and_grad(weights.clone())  # type: ignore[misc]
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise ObjectiveError(
                    "objective.value_and_grad(weights) must return a (losses, grads) pair, got "
                    f"{type(pair).__name__}"
                )
            losses = check_losses(pair[0], batch)
            grads = check_grads(pair[1], (batch, n_sites))
            gradient_rows += batch
        else:
            losses = check_losses(objective(masks.clone()), batch)
            exact_rows += batch
        forward_passes += cost
        if sparsity:
            losses = losses + sparsity * masks.sum(dim=1, dtype=torch.float64)
        if relaxed:
            grads = grads + sparsity if sparsity else grads
            strat.tell(weights, losses, grads)  # type: ignore[call-arg]
            exact = ((masks == 0) | (masks == 1)).all(dim=1)  # 0/1 weights: exact forwards
        else:
            strat.tell(masks, losses)
            exact = torch.ones(batch, dtype=torch.bool)
        step += 1
        if bool(exact.any()):
            keyed = torch.where(exact, losses, torch.full_like(losses, math.inf))
            i = int(torch.argmin(keyed))
            if float(keyed[i]) < best_loss:
                best_loss, best_mask = float(keyed[i]), masks[i].detach().to(torch.bool).clone()
        evaluated: float | None = None
        if heldout is not None and best_mask is not None and step % eval_every == 0:
            evaluated = best_heldout = score_heldout(best_mask)
        probs = strat.current_probabilities() if hasattr(strat, "current_probabilities") else None
        n_best = int(best_mask.sum()) if best_mask is not None else 0
        history.append(
            SearchStep(
                step=step,
                forward_passes=forward_passes,
                loss=float(losses.mean()),
                best_loss=best_loss,
                n_sites=n_best,
                heldout=evaluated,
                p_mean=float(probs.mean()) if probs is not None else None,
                kind="gradient" if relaxed else "exact",
                gradient_rows=gradient_rows,
                wall_time=time.perf_counter() - start,
            )
        )
        if callback is not None:
            callback(SearchProgress(step, forward_passes, budget, best_loss, best_heldout, n_best))
        if forward_passes >= budget:
            stop_reason = "budget"
            break

    result = strat.result()
    final_mask = result.mask.detach().to("cpu", torch.bool).clone()
    if best_mask is None:
        best_mask = final_mask.clone()
    final_heldout: float | None = None
    if heldout is not None:
        best_heldout = score_heldout(best_mask)
        final_heldout = score_heldout(final_mask)
        if history and history[-1].heldout is None:
            history[-1] = dataclasses.replace(history[-1], heldout=best_heldout)
    return SearchRun(
        mask=final_mask,
        best_mask=best_mask,
        best_loss=best_loss,
        probabilities=result.probabilities,
        history=history,
        forward_passes=forward_passes,
        heldout_evaluations=heldout_evaluations,
        heldout=final_heldout,
        best_heldout=best_heldout,
        wall_time=time.perf_counter() - start,
        strategy=name,
        seed=seed,
        budget=budget,
        stop_reason=stop_reason,
        extra=dict(result.extra),
        exact_rows=exact_rows,
        gradient_rows=gradient_rows,
    )
