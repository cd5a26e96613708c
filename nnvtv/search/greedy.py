"""Greedy forward selection of sites (the paper's greedy / random-search baseline)."""

from __future__ import annotations

import torch

from nnvtv.checks import number_in, positive_int

from ._protocol import (
    BaseStrategy,
    StrategyResult,
    StrategyStateError,
)
from ._registry import register_strategy

__all__ = ["Greedy"]


@register_strategy("greedy")
class Greedy(BaseStrategy):
    """Forward selection: grow the site set one site at a time, keeping the best addition.

    The first ``ask()`` scores the current (empty) set alone, ``BoolTensor[1, n_sites]``, so
    every later addition is compared against a measured loss. Each round then proposes
    ``current set + one site`` for every remaining site, or for ``candidates`` sites drawn at
    random from those not yet tried with the current set (the greedy random-search baseline of
    Hojel et al. for large site spaces), and adds the round's lowest-loss site if it beats the
    current loss by more than ``tol``. A round without improvement marks its sites as tried;
    the search stops when every remaining site was tried without improvement, ``max_sites``
    sites are selected, or no site is left.

    Cost: ``1 + sum over rounds of min(candidates, remaining)`` forward passes, i.e. about
    ``k * n_sites`` to select ``k`` sites without subsampling.

    Args:
        n_sites: size of the site space.
        seed: seeds the candidate subsample (unused when ``candidates`` is ``None``).
        candidates: proposals per round (random subset of the remaining sites); ``None``: all.
        batch_size: at most this many masks per ``ask()``; a round larger than that is asked in
            chunks. ``None``: a whole round per ``ask()``.
        max_sites: stop once this many sites are selected; ``None``: no limit.
        tol: minimal loss decrease for a site to be added (>= 0).
    """

    def __init__(
        self,
        n_sites: int,
        *,
        seed: int = 0,
        candidates: int | None = None,
        batch_size: int | None = None,
        max_sites: int | None = None,
        tol: float = 0.0,
    ) -> None:
        super().__init__(n_sites, seed=seed)
        positive_int("candidates", candidates, allow_none=True)
        positive_int("batch_size", batch_size, allow_none=True)
        positive_int("max_sites", max_sites, allow_none=True)
        self._tol = number_in("tol", tol, low=0.0)
        self._candidates = candidates
        self._batch_size = batch_size
        self._max_sites = n_sites if max_sites is None else min(max_sites, n_sites)
        self._selected = torch.zeros(n_sites, dtype=torch.bool)
        self._current_loss: float | None = None  # loss of the selected set, once measured
        self._baseline_loss: float | None = None  # loss of the empty set
        self._untried = torch.ones(n_sites, dtype=torch.bool)  # not yet tried with this set
        self._order: list[int] = []
        self._losses: list[float] = []
        self._finished = False
        # the round being asked: proposed site per row (-1: the current set itself)
        self._round_sites: torch.Tensor | None = None
        self._round_losses: torch.Tensor | None = None
        self._cursor = 0  # next row of the round to ask
        self._asked = 0  # rows of the pending chunk

    @property
    def population_size(self) -> int:
        per_round = (
            self._n_sites if self._candidates is None else min(self._candidates, self._n_sites)
        )
        return per_round if self._batch_size is None else min(per_round, self._batch_size)

    @property
    def selected(self) -> torch.Tensor:
        """``BoolTensor[n_sites]``: the sites selected so far."""
        return self._selected.clone()

    def _new_round(self) -> None:
        if self._current_loss is None:
            sites = torch.tensor([-1])
        else:
            remaining = self._untried.nonzero().flatten()
            if self._candidates is not None and self._candidates < remaining.numel():
                perm = torch.randperm(remaining.numel(), generator=self._generator)
                remaining = remaining[perm[: self._candidates]]
            sites = remaining
        self._round_sites = sites
        self._round_losses = torch.full((sites.numel(),), float("nan"), dtype=torch.float64)
        self._cursor = 0

    def ask(self) -> torch.Tensor:
        """``BoolTensor[B, n_sites]``: current set plus one proposed site per row."""
        if self.should_stop():
            raise StrategyStateError("greedy search has finished; check should_stop() before ask()")
        if self._round_sites is None:
            self._new_round()
        assert self._round_sites is not None
        total = self._round_sites.numel()
        size = total - self._cursor
        if self._batch_size is not None:
            size = min(size, self._batch_size)
        sites = self._round_sites[self._cursor : self._cursor + size]
        masks = self._selected.unsqueeze(0).repeat(size, 1)
        rows = (sites >= 0).nonzero().flatten()
        masks[rows, sites[rows]] = True
        self._asked = size
        return self._remember(masks)

    def tell(self, masks: torch.Tensor, losses: torch.Tensor) -> None:
        """Record losses (``[B]``) of the asked proposals; finish the round when all are in."""
        masks, losses = self._check_tell(masks, losses)
        assert self._round_sites is not None and self._round_losses is not None
        self._round_losses[self._cursor : self._cursor + self._asked] = losses
        self._cursor += self._asked
        self._asked = 0
        self._generation += 1
        if self._cursor < self._round_sites.numel():
            return
        sites, round_losses = self._round_sites, self._round_losses
        self._round_sites = self._round_losses = None
        if self._current_loss is None:  # the baseline round
            self._current_loss = self._baseline_loss = float(round_losses[0])
            return
        best = int(torch.argmin(round_losses))
        best_loss = float(round_losses[best])
        if best_loss < self._current_loss - self._tol:
            site = int(sites[best])
            self._selected[site] = True
            self._current_loss = best_loss
            self._order.append(site)
            self._losses.append(best_loss)
            self._untried = ~self._selected
        else:
            self._untried[sites] = False
            self._finished = not bool(self._untried.any())

    def should_stop(self) -> bool:
        if self._round_sites is not None:  # a round is half asked: finish it first
            return False
        n_selected = int(self._selected.sum())
        return self._finished or n_selected >= self._max_sites or n_selected >= self._n_sites

    def result(self) -> StrategyResult:
        """The selected set; ``extra``: ``order`` of additions, their ``losses``, ``baseline_loss``."""
        return StrategyResult(
            mask=self._selected.clone(),
            probabilities=None,
            extra={
                "order": list(self._order),
                "losses": list(self._losses),
                "baseline_loss": self._baseline_loss,
                "current_loss": self._current_loss,
            },
        )
