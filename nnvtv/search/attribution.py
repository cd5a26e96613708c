"""Attribution patching (AtP): every site's patch effect from one forward and one backward.

Nanda (2023, "Attribution patching") and Kramar et al. (2024, "AtP*") estimate the effect on
the loss of patching site ``i`` by its first-order Taylor term,
``L(patch i) - L(clean) ~ (mean_i - a_i) . dL/da_i``. With relaxed patching
(:mod:`nnvtv.relaxed`) that is exactly ``dL/dw_i`` at ``w = 0``, so one gradient row (3
forward-pass equivalents) scores all ``n_sites`` sites where the ``ranking`` baseline spends
``n_sites`` exact forwards.

The estimate is linear: it cannot see interactions (two sites that only help together) and
misses saturation (Kramar et al.'s false negatives). It is good at *ordering* sites and bad at
saying *how many* to keep, so by default (``refine``) the rest of the budget goes to exact
patched forwards of the ranking's prefixes: the sizes 1, 2, 4, ... first (one batch), then
the unevaluated sizes between the best size and its evaluated neighbours (bisection on a
unimodal curve), until the best size's neighbours are all evaluated. Exact forwards also guard
against a wrong first-order sign. A dozen forwards choose ``k`` on spaces of hundreds of sites.
"""

from __future__ import annotations

import math

import torch

from nnvtv.checks import number_in, positive_int
from nnvtv.errors import ConfigError, StrategyStateError

from ._protocol import GRADIENT_ROW_COST, BaseStrategy, StrategyResult
from ._registry import register_strategy

__all__ = ["Attribution"]


@register_strategy("attribution")
class Attribution(BaseStrategy):
    """Rank sites by their attribution-patching estimate, then (optionally) choose ``k`` exactly.

    Step 1 asks one weight row ``FloatTensor[1, n_sites]`` of zeros (the clean forward) and gets
    its gradient: ``estimates[i] = dL/dw_i`` (plus the driver's ``sparsity``), the first-order
    change in loss from patching site ``i`` alone; sites are ranked from most loss-decreasing to
    least. Without refinement the final mask keeps the top ``k`` (or ``round(fraction *
    n_sites)``, at least 1). With refinement, later steps ask ``BoolTensor[B, n_sites]`` prefixes
    of the ranking and the final mask is the best prefix evaluated (lowest penalised loss).

    Args:
        n_sites: size of the site space.
        seed: unused (deterministic; ties go to the lower site index).
        fraction: share of sites to keep without refinement, in (0, 1] (the ``ranking``
            baseline's 25%).
        k: number of sites to keep (turns refinement off unless ``refine=True``; then ``k`` is
            only the fallback when no prefix could be evaluated).
        refine: spend the rest of the budget on exact forwards of ranking prefixes to choose
            ``k``; ``None``: on unless ``k`` is given.
        max_fraction: the largest prefix refinement tries, as a share of the sites (in (0, 1]).
        batch_size: at most this many prefixes per ``ask()``; ``None``: the whole first set of
            sizes (1, 2, 4, ...) in one batch.
    """

    needs_gradients = True

    def __init__(
        self,
        n_sites: int,
        *,
        seed: int = 0,
        fraction: float = 0.25,
        k: int | None = None,
        refine: bool | None = None,
        max_fraction: float = 1.0,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(n_sites, seed=seed)
        number_in("fraction", fraction, low=0.0, low_open=True, high=1.0)
        positive_int("k", k, allow_none=True)
        positive_int("batch_size", batch_size, allow_none=True)
        max_fraction = number_in("max_fraction", max_fraction, low=0.0, low_open=True, high=1.0)
        if k is not None and k > n_sites:
            raise ConfigError(f"k={k} is larger than n_sites={n_sites}; pass k <= {n_sites}")
        if refine is not None and not isinstance(refine, bool):
            raise ConfigError(f"refine must be True, False or None, got {refine!r}")
        self._k = k if k is not None else max(1, int(round(fraction * n_sites)))
        self._refine = (k is None) if refine is None else refine
        self._max_k = max(1, int(math.floor(max_fraction * n_sites)))
        self._first = _geometric(self._max_k)
        self._batch_size = batch_size if batch_size is not None else len(self._first)
        self._estimates: torch.Tensor | None = None  # float64[n_sites]
        self._order: torch.Tensor | None = None  # LongTensor[n_sites], best first
        self._base_loss: float | None = None
        self._prefix_losses: dict[int, float] = {}
        self._asked: list[int] = []  # prefix sizes of the pending ask
        self._queue: list[int] = []
        self._room: int | None = None  # forward-pass equivalents left (after plan_budget)

    @property
    def population_size(self) -> int:
        if not self._refine:
            return 1
        size = min(self._batch_size, self._max_k)
        if self._room is not None:  # a planned budget: never ask more than it can pay for
            size = min(size, self._room - (GRADIENT_ROW_COST if self._order is None else 0))
        return max(1, size)

    @property
    def estimates(self) -> torch.Tensor | None:
        """``float64[n_sites]`` first-order loss change of patching each site alone (``None``
        before the gradient step)."""
        return None if self._estimates is None else self._estimates.clone()

    def plan_budget(self, budget: int) -> None:
        """Remember the budget so refinement asks only prefixes that still fit."""
        self._room = int(budget)

    def ask(self) -> torch.Tensor:
        """Step 1: ``FloatTensor[1, n_sites]`` zeros; later: ``BoolTensor[B, n_sites]`` prefixes."""
        if self.should_stop():
            raise StrategyStateError("attribution has nothing left to ask; check should_stop()")
        if self._order is None:
            return self._remember(torch.zeros(1, self._n_sites, dtype=torch.float32))
        if not self._queue:
            self._queue = self._next_sizes()
        take = self.population_size
        self._asked, self._queue = self._queue[:take], self._queue[take:]
        masks = torch.zeros(len(self._asked), self._n_sites, dtype=torch.bool)
        for row, size in enumerate(self._asked):
            masks[row, self._order[:size]] = True
        return self._remember(masks)

    def tell(self, masks: torch.Tensor, losses: torch.Tensor, grads: torch.Tensor | None = None) -> None:
        """Record the gradient row (``grads [1, n_sites]``) or the prefixes' exact losses."""
        if self._order is None:
            _, losses, grads = self._check_tell_grads(masks, losses, grads)
            self._estimates = grads[0].clone()
            self._order = torch.sort(self._estimates, stable=True).indices
            self._base_loss = float(losses[0])
            if self._refine:
                self._queue = list(self._first)
            if self._room is not None:
                self._room -= GRADIENT_ROW_COST
        else:
            masks, losses = self._check_tell(masks, losses)
            if self._room is not None:
                self._room -= masks.shape[0]
            for size, loss in zip(self._asked, losses.tolist(), strict=True):
                self._prefix_losses[size] = loss
            self._asked = []
        self._generation += 1

    def _next_sizes(self) -> list[int]:
        """Unevaluated sizes between the best size and its nearest evaluated neighbours."""
        done = sorted(self._prefix_losses)
        if not done:
            return []
        best = min(done, key=lambda s: (self._prefix_losses[s], s))
        lower = max([s for s in done if s < best], default=0)
        upper = min([s for s in done if s > best], default=self._max_k + 1)
        out = []
        if best - lower > 1:
            out.append((best + lower + 1) // 2)
        if upper - best > 1:
            out.append((best + upper) // 2)
        return [s for s in out if 1 <= s <= self._max_k and s not in self._prefix_losses]

    def should_stop(self) -> bool:
        if self._order is None:
            return False
        if not self._refine or (self._room is not None and self._room <= 0):
            return True
        return not self._queue and not self._next_sizes()

    def result(self) -> StrategyResult:
        """The best evaluated prefix (refinement) or the top ``k`` sites by estimate.

        ``extra``: ``estimates`` (``float64[n_sites]``, NaN before the gradient step),
        ``order`` (sites best first), ``k`` (sites kept), ``base_loss`` (the clean forward's
        loss), ``prefix_losses`` (``{size: penalised exact loss}``), ``refined`` (whether ``k``
        came from exact forwards).
        """
        mask = torch.zeros(self._n_sites, dtype=torch.bool)
        order = [] if self._order is None else self._order.tolist()
        k, refined = self._k, False
        if self._prefix_losses:
            k = min(self._prefix_losses, key=lambda s: (self._prefix_losses[s], s))
            refined = True
        mask[order[:k]] = True
        estimates = self._estimates if self._estimates is not None else torch.full((self._n_sites,), math.nan, dtype=torch.float64)
        return StrategyResult(
            mask=mask,
            probabilities=None,
            extra={
                "estimates": estimates.clone(),
                "order": order,
                "k": int(mask.sum()),
                "base_loss": self._base_loss,
                "prefix_losses": dict(sorted(self._prefix_losses.items())),
                "refined": refined,
            },
        )


def _geometric(n: int) -> list[int]:
    """``1, 2, 4, ..., n`` (``n`` included)."""
    sizes, s = [], 1
    while s < n:
        sizes.append(s)
        s *= 2
    return [*sizes, n]
