"""``run_search``: the ask/tell loop with a forward-pass budget, sparsity and held-out scoring."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from nnvtv.checks import number_in, positive_int
from nnvtv.errors import ConfigError, DTypeMismatchError, ShapeMismatchError

from ._protocol import ObjectiveError, Strategy
from ._registry import get_strategy, strategy_name

__all__ = ["SearchProgress", "SearchRun", "SearchStep", "run_search"]

Objective = Callable[[torch.Tensor], torch.Tensor]
Heldout = Callable[[torch.Tensor], float]

_POPULATION_HINTS = {
    "reinforce": "samples=",
    "greedy": "candidates= or batch_size=",
    "cmaes": "population_size=",
    "ranking": "batch_size=",
}


@dataclass(frozen=True)
class SearchProgress:
    """Passed to ``callback`` after every step.

    Attributes:
        step: steps done (one step = one ``ask``/``tell``).
        forward_passes: objective rows spent so far.
        budget: the forward-pass budget.
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
        forward_passes: cumulative objective rows after this step.
        loss: mean penalised loss of this step's batch.
        best_loss: lowest penalised loss seen so far.
        n_sites: number of sites in the best mask so far.
        heldout: held-out score of the best mask if evaluated at this step, else ``None``.
        p_mean: mean per-site selection probability (reinforce, cmaes), else ``None``.
    """

    step: int
    forward_passes: int
    loss: float
    best_loss: float
    n_sites: int
    heldout: float | None = None
    p_mean: float | None = None


@dataclass
class SearchRun:
    """What :func:`run_search` returns.

    Attributes:
        mask: ``BoolTensor[n_sites]``, the strategy's final selection (``strategy.result()``).
        best_mask: ``BoolTensor[n_sites]``, the lowest-loss mask evaluated during the search.
        best_loss: its penalised loss (``inf`` if nothing was evaluated).
        probabilities: ``FloatTensor[n_sites]`` from the strategy's result, or ``None``.
        history: one :class:`SearchStep` per step.
        forward_passes: objective rows spent, exactly (never more than ``budget``).
        heldout_evaluations: calls of ``heldout`` (not part of the budget).
        heldout: held-out score of ``mask`` (if ``heldout`` was given).
        best_heldout: held-out score of ``best_mask`` (if ``heldout`` was given).
        wall_time: seconds spent in the loop.
        strategy: strategy name; seed, budget: as given.
        stop_reason: ``"budget"`` (next batch would not fit) or ``"strategy"`` (should_stop).
        extra: the strategy result's ``extra``.
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


def _check_masks(masks: Any, n_sites: int, population: int, name: str) -> torch.Tensor:
    if not isinstance(masks, torch.Tensor):
        raise ShapeMismatchError(
            f"{name}.ask() must return a BoolTensor, got {type(masks).__name__}"
        )
    if masks.dtype != torch.bool:
        raise DTypeMismatchError(f"{name}.ask() must return a torch.bool tensor, got {masks.dtype}")
    if masks.ndim != 2 or masks.shape[1] != n_sites or not 1 <= masks.shape[0] <= population:
        raise ShapeMismatchError(
            f"{name}.ask() must return masks of shape [B, {n_sites}] with 1 <= B <= "
            f"population_size={population}, got {tuple(masks.shape)}"
        )
    return masks


def _check_losses(losses: Any, batch: int) -> torch.Tensor:
    if not isinstance(losses, torch.Tensor):
        losses = torch.as_tensor(losses)
    if not losses.is_floating_point():
        losses = losses.to(torch.float64)
    if losses.shape != (batch,):
        raise ShapeMismatchError(
            f"objective must return one loss per mask, shape [{batch}]; got {tuple(losses.shape)}"
        )
    losses = losses.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(losses).all()):
        raise ObjectiveError(
            f"objective returned {int((~torch.isfinite(losses)).sum())} non-finite losses of "
            f"{batch}; losses must be finite (they are minimized)"
        )
    return losses


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
            row is one forward pass. It gets a copy of the strategy's masks.
        n_sites: size of the site space.
        strategy: a registered name (``reinforce``, ``greedy``, ``cmaes``, ``ranking``, ...) or
            a :class:`~nnvtv.search.Strategy` instance (then ``seed`` is only recorded and
            ``strategy_options`` must be empty).
        budget: the most forward passes (objective rows) to spend; never exceeded: the search
            stops when the next batch would not fit.
        seed: seed of the strategy; the same seed gives the same search.
        sparsity: penalty per selected site added to every loss (``loss + sparsity * |mask|``).
        heldout: ``BoolTensor[n_sites] -> float`` score of a mask on held-out data; evaluated on
            the best mask every ``eval_every`` steps and at the end, and on the final mask.
            Only reported, never used to select. Not counted in ``budget``.
        eval_every: steps between held-out evaluations.
        callback: called with a :class:`SearchProgress` after every step.
        **strategy_options: keyword options of the named strategy (validated by name).

    Returns:
        A :class:`SearchRun`.
    """
    positive_int("n_sites", n_sites)
    positive_int("budget", budget)
    positive_int("eval_every", eval_every)
    number_in("sparsity", sparsity, low=0.0)
    if isinstance(strategy, str):
        name = strategy
        strat = get_strategy(strategy, n_sites, seed=seed, **strategy_options)
    else:
        if not isinstance(strategy, Strategy):
            raise ConfigError(
                f"strategy must be a registered name or a Strategy instance, got {strategy!r}"
            )
        if strategy_options:
            raise ConfigError(
                f"strategy options {sorted(strategy_options)} only apply when the strategy is "
                "given by name; set them on the instance you passed"
            )
        strat, name = strategy, strategy_name(strategy)
        if strat.n_sites != n_sites:
            raise ConfigError(
                f"strategy works on n_sites={strat.n_sites} but run_search got n_sites={n_sites}"
            )
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
    forward_passes = 0
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
        masks = _check_masks(strat.ask(), n_sites, population, name)
        batch = masks.shape[0]
        if forward_passes + batch > budget:
            stop_reason = "budget"
            break
        losses = _check_losses(objective(masks.clone()), batch)
        forward_passes += batch
        if sparsity:
            losses = losses + sparsity * masks.sum(dim=1, dtype=torch.float64)
        strat.tell(masks, losses)
        step += 1
        i = int(torch.argmin(losses))
        if float(losses[i]) < best_loss:
            best_loss, best_mask = float(losses[i]), masks[i].clone()
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
    )
