"""Causal-mediation ranking baseline: score every site alone, keep the best ones."""

from __future__ import annotations

import torch

from nnvtv.checks import number_in, positive_int
from nnvtv.errors import ConfigError

from ._protocol import (
    BaseStrategy,
    StrategyResult,
    StrategyStateError,
)
from ._registry import register_strategy

__all__ = ["Ranking"]


@register_strategy("ranking")
class Ranking(BaseStrategy):
    """Patch one site at a time, rank sites by their single-site loss, keep the top ones.

    ``ask()`` returns rows of the identity, ``BoolTensor[B, n_sites]`` (all ``n_sites`` at once
    or in chunks of ``batch_size``); after all sites are scored ``should_stop()`` is true and
    :meth:`result` selects the ``k`` sites (or ``round(fraction * n_sites)``, at least 1) with
    the lowest loss. This is the causal-mediation baseline of Hojel et al. (keep the top 25%).
    It assumes effects add up; it costs exactly ``n_sites`` forward passes.

    Args:
        n_sites: size of the site space.
        seed: unused (ranking is deterministic; ties go to the lower site index).
        fraction: share of sites to keep, in (0, 1]; ignored when ``k`` is given.
        k: number of sites to keep (overrides ``fraction``).
        batch_size: at most this many masks per ``ask()``; ``None``: all sites at once.
    """

    def __init__(
        self,
        n_sites: int,
        *,
        seed: int = 0,
        fraction: float = 0.25,
        k: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(n_sites, seed=seed)
        self._fraction = number_in("fraction", fraction, low=0.0, low_open=True, high=1.0)
        positive_int("k", k, allow_none=True)
        positive_int("batch_size", batch_size, allow_none=True)
        if k is not None and k > n_sites:
            raise ConfigError(f"k={k} is larger than n_sites={n_sites}; pass k <= {n_sites}")
        self._k = k if k is not None else max(1, int(round(fraction * n_sites)))
        self._batch_size = n_sites if batch_size is None else min(batch_size, n_sites)
        self._effects = torch.full((n_sites,), float("nan"), dtype=torch.float64)
        self._cursor = 0  # next site to ask
        self._asked = 0

    @property
    def population_size(self) -> int:
        return self._batch_size

    @property
    def k(self) -> int:
        """Number of sites the final mask keeps."""
        return self._k

    def ask(self) -> torch.Tensor:
        """The next ``BoolTensor[B, n_sites]`` single-site masks (rows of the identity)."""
        if self.should_stop():
            raise StrategyStateError("ranking has scored every site; check should_stop()")
        size = min(self._batch_size, self._n_sites - self._cursor)
        masks = torch.zeros((size, self._n_sites), dtype=torch.bool)
        masks[torch.arange(size), torch.arange(self._cursor, self._cursor + size)] = True
        self._asked = size
        return self._remember(masks)

    def tell(self, masks: torch.Tensor, losses: torch.Tensor) -> None:
        """Record the single-site losses (``[B]``) of the asked sites."""
        masks, losses = self._check_tell(masks, losses)
        self._effects[self._cursor : self._cursor + self._asked] = losses
        self._cursor += self._asked
        self._asked = 0
        self._generation += 1

    def should_stop(self) -> bool:
        return self._cursor >= self._n_sites

    def result(self) -> StrategyResult:
        """Top-``k`` sites by effect. ``extra["effects"]``: ``float64[n_sites]`` single-site
        losses (NaN where not scored yet; unscored sites are never selected), ``extra["order"]``:
        scored sites from best to worst."""
        scored = ~torch.isnan(self._effects)
        keyed = torch.where(scored, self._effects, torch.full_like(self._effects, float("inf")))
        order = torch.sort(keyed, stable=True).indices
        order = order[scored[order]]
        mask = torch.zeros(self._n_sites, dtype=torch.bool)
        mask[order[: self._k]] = True
        return StrategyResult(
            mask=mask,
            probabilities=None,
            extra={"effects": self._effects.clone(), "order": order.tolist(), "k": self._k},
        )
