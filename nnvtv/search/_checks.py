"""What :func:`~nnvtv.search.run_search` checks in what strategies and objectives hand it."""

from __future__ import annotations

from typing import Any

import torch

from nnvtv.errors import ConfigError, DTypeMismatchError, ObjectiveError, ShapeMismatchError

__all__ = ["check_grads", "check_losses", "check_masks", "no_gradients_error"]


def check_masks(masks: Any, n_sites: int, population: int, name: str, gradients: bool) -> torch.Tensor:
    if not isinstance(masks, torch.Tensor):
        raise ShapeMismatchError(
            f"{name}.ask() must return a BoolTensor, got {type(masks).__name__}"
        )
    if masks.is_floating_point() and not gradients:
        raise DTypeMismatchError(
            f"{name}.ask() returned {masks.dtype} weights but the strategy does not declare "
            "needs_gradients = True; return a torch.bool mask, or set needs_gradients on the class"
        )
    if masks.dtype != torch.bool and not masks.is_floating_point():
        raise DTypeMismatchError(f"{name}.ask() must return a torch.bool tensor, got {masks.dtype}")
    if masks.ndim != 2 or masks.shape[1] != n_sites or not 1 <= masks.shape[0] <= population:
        raise ShapeMismatchError(
            f"{name}.ask() must return masks of shape [B, {n_sites}] with 1 <= B <= "
            f"population_size={population}, got {tuple(masks.shape)}"
        )
    if masks.is_floating_point():
        w = masks.detach()
        if not bool(torch.isfinite(w).all()) or bool(((w < 0) | (w > 1)).any()):
            raise ShapeMismatchError(f"{name}.ask() returned weights outside [0, 1] (or not finite)")
    return masks


def check_losses(losses: Any, batch: int) -> torch.Tensor:
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


def check_grads(grads: Any, shape: tuple[int, int]) -> torch.Tensor:
    grads = torch.as_tensor(grads)
    if tuple(grads.shape) != shape or not grads.is_floating_point():
        raise ShapeMismatchError(
            f"objective.value_and_grad must return gradients of shape {list(shape)} (one per "
            f"weight, floating point); got {grads.dtype} {tuple(grads.shape)}"
        )
    grads = grads.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(grads).all()):
        raise ObjectiveError(
            f"objective.value_and_grad returned {int((~torch.isfinite(grads)).sum())} non-finite "
            "gradients; the loss must be differentiable and finite"
        )
    return grads


def no_gradients_error(name: str, objective: Any) -> ConfigError:
    return ConfigError(
        f"strategy {name!r} needs gradients: it asks for relaxed weights scored by "
        "objective.value_and_grad(weights) -> (losses, grads), but the objective given "
        f"({type(objective).__name__}) has no value_and_grad. Pass an "
        "nnvtv.objective.MaskObjective (what nnvtv.find builds) or another object with "
        "value_and_grad, or use a black-box strategy (reinforce, greedy, cmaes, ranking)"
    )
