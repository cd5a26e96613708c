"""Pluggable search over site masks.

A search minimizes ``objective(masks: BoolTensor[B, n_sites]) -> FloatTensor[B]`` (one row =
one patched forward pass) within a budget of forward passes. Strategies speak the cmaes verbs
``ask`` / ``tell`` / ``should_stop`` / ``result`` (:class:`Strategy`), always minimize, and
never see a model. Built in: ``reinforce`` (Hojel et al.), ``greedy``, ``cmaes``, ``ranking``,
and two gradient strategies that also ask for relaxed weights and their gradients (the
objective must offer ``value_and_grad``, e.g. :class:`nnvtv.objective.MaskObjective`; one
gradient row costs 3 forward-pass equivalents): ``attribution`` (attribution patching) and
``gradient`` (hard-concrete gates trained by backpropagation).

>>> import torch
>>> from nnvtv.search import run_search
>>> planted = torch.zeros(16, dtype=torch.bool); planted[[1, 5, 9]] = True
>>> def objective(masks):  # BoolTensor[B, 16] -> FloatTensor[B]
...     return -(masks & planted).sum(1).float() + 0.25 * (masks & ~planted).sum(1)
>>> run = run_search(objective, 16, "greedy", budget=200)
>>> run.mask.nonzero().flatten().tolist(), run.forward_passes
([1, 5, 9], 59)

A custom strategy, registered by name (random search over masks of density ``p``):

>>> import torch
>>> from nnvtv.search import BaseStrategy, StrategyResult, register_strategy, run_search
>>> @register_strategy("random")
... class RandomSearch(BaseStrategy):
...     def __init__(self, n_sites: int, *, seed: int = 0, batch: int = 16, p: float = 0.25):
...         super().__init__(n_sites, seed=seed)  # seeded self._generator, generation counter
...         self.batch, self.p = batch, p
...         self.best, self.best_loss = torch.zeros(n_sites, dtype=torch.bool), float("inf")
...     @property
...     def population_size(self) -> int:
...         return self.batch
...     def ask(self) -> torch.Tensor:  # BoolTensor[batch, n_sites]
...         u = torch.rand(self.batch, self.n_sites, generator=self._generator)
...         return self._remember(u < self.p)  # keeps a copy for tell() to check against
...     def tell(self, masks: torch.Tensor, losses: torch.Tensor) -> None:
...         masks, losses = self._check_tell(masks, losses)  # validated private copies
...         i = int(losses.argmin())
...         if float(losses[i]) < self.best_loss:
...             self.best, self.best_loss = masks[i], float(losses[i])
...         self._generation += 1
...     def result(self) -> StrategyResult:
...         return StrategyResult(mask=self.best.clone(), extra={"best_loss": self.best_loss})
>>> run = run_search(objective, 16, "random", budget=320, seed=0, p=0.2)
>>> run.strategy, run.forward_passes, run.mask.sum().item() > 0
('random', 320, True)
"""

from __future__ import annotations

from ._protocol import (
    GRADIENT_ROW_COST,
    BaseStrategy,
    ObjectiveError,
    Strategy,
    StrategyResult,
    StrategyStateError,
)
from ._registry import STRATEGIES, get_strategy, list_strategies, register_strategy, strategy_name
from .attribution import Attribution
from .cmaes import CMAES
from .driver import SearchProgress, SearchRun, SearchStep, run_search
from .gradient import Gradient
from .greedy import Greedy
from .ranking import Ranking
from .reinforce import Reinforce

__all__ = [
    "CMAES",
    "GRADIENT_ROW_COST",
    "Attribution",
    "STRATEGIES",
    "BaseStrategy",
    "Gradient",
    "Greedy",
    "ObjectiveError",
    "Ranking",
    "Reinforce",
    "SearchProgress",
    "SearchRun",
    "SearchStep",
    "Strategy",
    "StrategyResult",
    "StrategyStateError",
    "get_strategy",
    "list_strategies",
    "register_strategy",
    "run_search",
    "strategy_name",
]
