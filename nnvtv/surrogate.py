"""The loss gradient paths minimise: the task loss, or a differentiable stand-in for it.

Gradient strategies (``attribution``, ``gradient``) and learned task vectors
(:func:`nnvtv.learn`) backpropagate a loss into patch weights or patch values. A task metric
computed after an argmax, a rounding or a threshold has no gradient (MAE-VQGAN's readout
decodes argmax codes; the visual metrics quantise pixels to ``uint8`` and IoU binarises them),
so the gradient paths may use a *surrogate*; exact patched forwards (every candidate a search
scores exactly, every held-out score) keep scoring the real metric.

:func:`gradient_loss` picks, in this order:

1. the family's surrogate, when the adapter's I/O offers one
   (:attr:`ModelIO.surrogate <nnvtv.model_io.ModelIO.surrogate>` non-empty): computed from the
   model's raw output and the inputs, before any readout (MAE-VQGAN: cross-entropy of the answer
   patches' code logits against the VQGAN codes of the ground-truth answer cell);
2. the task's surrogate on the readout (:meth:`Task.surrogate_loss
   <nnvtv.tasks.base.Task.surrogate_loss>`; visual tasks: pixel MSE without rounding), which
   is the task loss itself unless the task says otherwise (word-pair tasks: cross-entropy).

The core names no family: it only asks the model's I/O and the task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from nnvtv.errors import ObjectiveError

if TYPE_CHECKING:
    from nnvtv.inputs import ModelInputs
    from nnvtv.model import Model
    from nnvtv.patching import Patch
    from nnvtv.tasks import Task

__all__ = ["GradientLoss", "gradient_loss"]

#: ``(raw model output, inputs) -> FloatTensor [rows]``: a family's per-row surrogate loss
OutputFn = Callable[[Any, "ModelInputs"], torch.Tensor]


@dataclass(frozen=True)
class GradientLoss:
    """A per-query loss with a gradient, for relaxed patching and learned values.

    Attributes:
        loss_fn: ``values [B, N, ...] -> FloatTensor [B, N]`` per candidate and query, where
            ``values`` is the adapter's readout or, with ``output_fn``, what it returned.
        output_fn: ``(raw output, inputs) -> FloatTensor [rows]`` applied to the raw model
            output instead of the readout (a family's surrogate); ``None``: the readout.
        source: ``"task loss"``, ``"task surrogate"`` or ``"model surrogate"``.
        description: what is minimised, in words (saved with results).
    """

    loss_fn: Callable[[torch.Tensor], torch.Tensor]
    output_fn: OutputFn | None
    source: str
    description: str

    def per_query(self, model: Model, inputs: ModelInputs, patch: Patch | None = None, *, grad: bool = True) -> torch.Tensor:
        """``FloatTensor [N]``: the loss of each of ``inputs``' ``N`` rows under ``patch``, with
        its autograd graph when ``grad`` (``loss.sum().backward()`` fills the ``.grad`` of patch
        values that require grad). One traced forward (gradients are refused on remote models)."""
        if self.output_fn is not None:
            out = model.run(inputs, patch, readout=False, grad=grad)
            values = self.output_fn(out, inputs)
        else:
            values = model.run(inputs, patch, readout=True, grad=grad)
        losses = self.loss_fn(values[None])
        n = inputs.batch_size
        if not isinstance(losses, torch.Tensor) or tuple(losses.shape) != (1, n):
            got = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
            raise ObjectiveError(f"the {self.source} ({self.description}) gave per-query losses of shape {got}, expected (1, {n})")
        return losses[0]

    def as_dict(self) -> dict[str, str]:
        return {"source": self.source, "description": self.description}


def _identity(values: torch.Tensor) -> torch.Tensor:
    return values


def gradient_loss(model: Model, task: Task, targets: torch.Tensor) -> GradientLoss:
    """The differentiable loss for ``task`` on ``model`` with these per-query ``targets``
    (see the module docstring for the order: the family's surrogate, else the task's).

    The family's surrogate reads its targets from the inputs (a visual canvas holds the
    ground-truth answer cell), so it serves any task of the model's modality.
    """
    io = model.io
    described = getattr(io, "surrogate", "") or ""
    if described:
        return GradientLoss(loss_fn=_identity, output_fn=io.surrogate_loss, source="model surrogate", description=described)
    task_described = getattr(task, "surrogate", "") or ""
    fn = getattr(task, "surrogate_loss", None) or task.loss

    def loss_fn(readout: torch.Tensor) -> torch.Tensor:
        return fn(readout, targets)

    if task_described:
        return GradientLoss(loss_fn=loss_fn, output_fn=None, source="task surrogate", description=task_described)
    return GradientLoss(loss_fn=loss_fn, output_fn=None, source="task loss", description=f"the task loss of {task.name!r} ({task.metric})")
