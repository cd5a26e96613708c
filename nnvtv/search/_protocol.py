"""The :class:`Strategy` protocol every search algorithm speaks, and shared bookkeeping.

A strategy searches over binary masks of a *site space* of ``n_sites`` sites. It uses the
cmaes verbs (``ask`` / ``tell`` / ``should_stop``) and the caller owns the loop::

    while not strategy.should_stop():
        masks = strategy.ask()              # BoolTensor[B, n_sites], B <= population_size
        losses = objective(masks)           # FloatTensor[B]; one row = one forward pass
        strategy.tell(masks, losses)        # losses are ALWAYS minimized
    final = strategy.result()               # StrategyResult

Gradient strategies (``needs_gradients = True``: ``attribution``, ``gradient``) may also ask
for *weights*: ``ask()`` returns ``FloatTensor[B, n_sites]`` in ``[0, 1]`` (a relaxed patch,
see :mod:`nnvtv.relaxed`), the caller scores them with
``objective.value_and_grad(weights) -> (FloatTensor[B], FloatTensor[B, n_sites])`` and calls
``strategy.tell(weights, losses, grads)``. A boolean ask keeps meaning exact patched forwards.
One weight row costs 3 forward-pass equivalents (a forward and a backward, 1 + 2).

:func:`nnvtv.search.run_search` is that loop with a budget, a sparsity penalty, held-out
evaluation and history. Strategies never see a model: only masks (or weights) in, losses
(and gradients) out.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from nnvtv.checks import int_at_least, positive_int
from nnvtv.errors import ObjectiveError, ShapeMismatchError, StrategyStateError

__all__ = [
    "GRADIENT_ROW_COST",
    "BaseStrategy",
    "ObjectiveError",
    "Strategy",
    "StrategyResult",
    "StrategyStateError",
]

#: forward-pass equivalents of one weight row scored with gradients: forward 1 + backward 2
GRADIENT_ROW_COST = 3


@dataclass
class StrategyResult:
    """What a strategy selects at the end of (or at any point during) a search.

    Attributes:
        mask: ``BoolTensor[n_sites]``, the final site selection.
        probabilities: ``FloatTensor[n_sites]`` with per-site selection probabilities for
            strategies that keep a distribution (reinforce, cmaes), else ``None``.
        extra: strategy-specific details (e.g. ranking's per-site ``effects``).
    """

    mask: torch.Tensor
    probabilities: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Strategy(Protocol):
    """A search algorithm over binary site masks (cmaes-style ask/tell, always minimizing).

    ``ask()`` returns ``BoolTensor[B, n_sites]`` with ``1 <= B <= population_size``; every row
    costs one forward pass of the objective. ``tell(masks, losses)`` takes those masks and
    ``FloatTensor[B]`` losses (lower is better) and must not modify the caller's tensors.
    ``result()`` may be called at any time (e.g. when the budget ran out mid-search).

    Optional:

    * ``current_probabilities() -> FloatTensor[n_sites] | None``; when present,
      :func:`~nnvtv.search.run_search` logs its mean per step (``SearchStep.p_mean``).
    * ``needs_gradients: bool`` (class attribute); when true, ``ask()`` may return
      ``FloatTensor[B, n_sites]`` weights in ``[0, 1]``, each row costing 3 forward-pass
      equivalents, and ``tell(weights, losses, grads)`` then also gets ``FloatTensor[B,
      n_sites]`` gradients of the losses with respect to the weights. The objective must offer
      ``value_and_grad``; :func:`~nnvtv.search.run_search` refuses a plain function.
    * ``plan_budget(budget: int) -> None``; called once before the first ``ask()`` with the
      budget in forward-pass equivalents, so a strategy can split it into phases (e.g. train,
      then check with exact forwards).
    """

    @property
    def n_sites(self) -> int:
        """Size of the site space (mask width)."""
        ...

    @property
    def population_size(self) -> int:
        """The largest number of masks a single ``ask()`` returns."""
        ...

    @property
    def generation(self) -> int:
        """Number of completed ``tell`` calls."""
        ...

    def ask(self) -> torch.Tensor:
        """Return the next batch of candidate masks, ``BoolTensor[B, n_sites]``."""
        ...

    def tell(self, masks: torch.Tensor, losses: torch.Tensor) -> None:
        """Report ``FloatTensor[B]`` losses (minimized) for the ``BoolTensor[B, n_sites]`` masks."""
        ...

    def should_stop(self) -> bool:
        """True when the strategy has nothing useful left to ask."""
        ...

    def result(self) -> StrategyResult:
        """The current final selection."""
        ...


class BaseStrategy(abc.ABC):
    """Optional base class with the bookkeeping every strategy needs.

    It validates ``n_sites`` and ``seed``, owns a seeded ``torch.Generator`` (``self._generator``;
    draw all randomness from it so equal seeds give equal searches), counts generations, and
    offers :meth:`_check_tell` to validate and copy what ``tell`` receives. State is picklable.

    Subclasses implement ``population_size``, ``ask``, ``tell``, ``result`` and may override
    ``should_stop`` (default: never) and ``current_probabilities`` (default: ``None``).
    Gradient strategies set ``needs_gradients = True`` and validate what ``tell`` gets for a
    weight ask with :meth:`_check_tell_grads`.
    """

    #: whether ``ask()`` may return float weights scored with gradients (see :class:`Strategy`)
    needs_gradients: ClassVar[bool] = False

    def __init__(self, n_sites: int, *, seed: int = 0) -> None:
        positive_int("n_sites", n_sites)
        int_at_least("seed", seed, 0)
        self._n_sites = n_sites
        self._seed = seed
        self._generation = 0
        self._generator = torch.Generator().manual_seed(seed)
        self._pending: torch.Tensor | None = None

    @property
    def n_sites(self) -> int:
        return self._n_sites

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def generation(self) -> int:
        return self._generation

    @property
    @abc.abstractmethod
    def population_size(self) -> int: ...

    @abc.abstractmethod
    def ask(self) -> torch.Tensor: ...

    @abc.abstractmethod
    def tell(self, masks: torch.Tensor, losses: torch.Tensor) -> None: ...

    @abc.abstractmethod
    def result(self) -> StrategyResult: ...

    def should_stop(self) -> bool:
        return False

    def current_probabilities(self) -> torch.Tensor | None:
        """``FloatTensor[n_sites]`` per-site selection probability now, if the strategy has one."""
        return None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n_sites={self._n_sites}, seed={self._seed}, "
            f"population_size={self.population_size}, generation={self._generation})"
        )

    # -- helpers -------------------------------------------------------------------------------

    def _remember(self, masks: torch.Tensor) -> torch.Tensor:
        """Record the batch an ``ask`` hands out; return a copy for the caller.

        Floating-point input is kept as weights (``float32``; a gradient ask), anything else
        becomes a ``torch.bool`` mask.
        """
        x = masks.detach()
        self._pending = x.to(torch.float32).clone() if x.is_floating_point() else x.to(torch.bool).clone()
        return self._pending.clone()

    def _check_losses(self, batch: int, losses: torch.Tensor) -> torch.Tensor:
        losses = torch.as_tensor(losses)
        if losses.ndim != 1 or losses.shape[0] != batch:
            raise ShapeMismatchError(
                f"tell() expects one loss per mask: losses of shape [{batch}], "
                f"got {tuple(losses.shape)}"
            )
        losses = losses.detach().to("cpu", torch.float64).clone()
        if not bool(torch.isfinite(losses).all()):
            bad = int((~torch.isfinite(losses)).sum())
            raise ObjectiveError(
                f"{bad} of {losses.numel()} losses are NaN or infinite; the objective must return "
                "finite losses (check the metric, e.g. an empty prediction or a log(0))"
            )
        return losses

    def _check_tell_grads(
        self, weights: torch.Tensor, losses: torch.Tensor, grads: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Validate ``tell`` input for a weight ask; return private copies
        ``(float32[B, n], float64[B], float64[B, n])``.

        ``weights`` must be exactly the last ``ask()`` (a ``FloatTensor``), ``grads`` one
        finite gradient per weight. Clears the pending batch.
        """
        name = type(self).__name__
        if self._pending is None or not self._pending.is_floating_point():
            asked = "nothing" if self._pending is None else "boolean masks"
            raise StrategyStateError(
                f"{name}.tell(weights, losses, grads) called but the last ask() handed out "
                f"{asked}; tell() must answer the pending ask() exactly once"
            )
        if isinstance(weights, torch.Tensor) and not weights.is_floating_point():
            raise StrategyStateError(
                f"{name}.tell() got {weights.dtype} masks but the last ask() handed out weights; "
                "answer a weight ask with tell(weights, losses, grads)"
            )
        if not isinstance(weights, torch.Tensor) or tuple(weights.shape) != tuple(self._pending.shape):
            shape = tuple(weights.shape) if isinstance(weights, torch.Tensor) else type(weights).__name__
            raise ShapeMismatchError(
                f"tell() expects the asked weights of shape {tuple(self._pending.shape)}, got {shape}"
            )
        losses = self._check_losses(weights.shape[0], losses)
        if grads is None:
            raise ObjectiveError(
                f"{name} asked for weights and needs their gradients: call "
                "tell(weights, losses, grads) with grads from objective.value_and_grad(weights)"
            )
        grads = torch.as_tensor(grads)
        if tuple(grads.shape) != tuple(weights.shape):
            raise ShapeMismatchError(
                f"tell() expects one gradient per weight, shape {tuple(weights.shape)}; "
                f"got {tuple(grads.shape)}"
            )
        grads = grads.detach().to("cpu", torch.float64).clone()
        if not bool(torch.isfinite(grads).all()):
            raise ObjectiveError(
                f"{int((~torch.isfinite(grads)).sum())} gradients are NaN or infinite; the "
                "objective's loss must be differentiable and finite"
            )
        weights = weights.detach().to("cpu", torch.float32)
        if not torch.equal(weights, self._pending):
            raise StrategyStateError(
                f"{name}.tell() got weights that differ from the last ask(); pass the asked "
                "weights unchanged, in the same order"
            )
        self._pending = None
        return weights.clone(), losses, grads

    def _check_tell(
        self, masks: torch.Tensor, losses: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate ``tell`` input; return private copies ``(BoolTensor[B, n], float64[B])``.

        ``masks`` must be exactly the batch of the last ``ask()`` (same rows, same order): the
        strategies map rows back to their own candidates. Clears the pending batch.
        """
        if self._pending is None:
            raise StrategyStateError(
                f"{type(self).__name__}.tell() called without a pending ask(); call ask() first "
                "and tell() exactly once with its masks"
            )
        if (
            not isinstance(masks, torch.Tensor)
            or masks.ndim != 2
            or masks.shape[1] != self._n_sites
        ):
            shape = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
            raise ShapeMismatchError(
                f"tell() expects masks of shape [B, {self._n_sites}] (BoolTensor), got {shape}"
            )
        losses = self._check_losses(masks.shape[0], losses)
        if self._pending.is_floating_point():
            raise StrategyStateError(
                f"{type(self).__name__}.tell() got masks but the last ask() handed out weights; "
                "answer a weight ask with tell(weights, losses, grads)"
            )
        if masks.is_floating_point():
            raise StrategyStateError(
                f"{type(self).__name__}.tell() got {masks.dtype} weights but the last ask() handed "
                "out boolean masks (exact forwards); pass the asked masks unchanged"
            )
        masks = masks.detach().to("cpu", torch.bool)
        if masks.shape != self._pending.shape or not torch.equal(masks, self._pending):
            raise StrategyStateError(
                f"{type(self).__name__}.tell() got masks that differ from the last ask() "
                f"(asked {tuple(self._pending.shape)}, told {tuple(masks.shape)}); pass the "
                "asked masks unchanged, in the same order"
            )
        self._pending = None
        return masks.clone(), losses

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_generator"] = self._generator.get_state()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        gen_state = state.pop("_generator")
        self.__dict__.update(state)
        self._generator = torch.Generator()
        self._generator.set_state(gen_state)
