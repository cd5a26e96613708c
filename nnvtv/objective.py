"""The search objective over a site space: masks (or relaxed weights) -> task losses.

:class:`MaskObjective` is what a search minimizes: ``objective(masks)`` patches each candidate
site set with its means (:func:`nnvtv.run_masks`, no gradients) and returns the mean task loss
over the queries; ``objective.value_and_grad(weights)`` does the same for relaxed weights
(:func:`nnvtv.relaxed.run_weights`) and also returns the gradient of each row's loss with
respect to its weights, which gradient strategies (``attribution``, ``gradient``) ask for.

>>> objective = MaskObjective(model, zs.inputs, means, space,
...                           lambda out: task.loss(out, zs.targets))   # doctest: +SKIP
>>> run = nnvtv.search.run_search(objective, len(space), "attribution", budget=64)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from nnvtv.errors import ConfigError, ObjectiveError, ShapeMismatchError
from nnvtv.patching import MODES, auto_max_rows, run_masks
from nnvtv.relaxed import check_weights, run_weights
from nnvtv.sites import SiteSpace

if TYPE_CHECKING:
    from nnvtv.activations import Means
    from nnvtv.model import Model
    from nnvtv.surrogate import GradientLoss

__all__ = ["LossFn", "MaskObjective"]

#: ``readout [B, N, ...] -> FloatTensor [B, N]``: per candidate and query, lower is better
#: (e.g. ``lambda out: task.loss(out, targets)``); must be differentiable for gradients
LossFn = Callable[[torch.Tensor], torch.Tensor]


class MaskObjective:
    """Mean task loss of patched forwards over fixed queries, for masks and relaxed weights.

    Args:
        model: the wrapped model.
        inputs: the queries (zero-shot prompts or :class:`~nnvtv.inputs.ModelInputs`), ``N`` rows.
        means: mean activations covering every site of ``space``.
        space: the site space the mask columns refer to.
        loss_fn: ``readout [B, N, ...] -> [B, N]`` per-query losses (minimized).
        mode: ``"replace"`` or ``"add"``.
        max_rows: memory bound: at most this many rows (candidates x ``N``) per forward.
            ``None``: :func:`~nnvtv.patching.auto_max_rows` for masks and, for gradient rows
            (whose forward keeps every layer's activations for the backward), that bound
            divided by the model's total number of layers (at least one candidate).
        share_prefix: as in :func:`nnvtv.run_masks`.
        gradient_loss: what :meth:`value_and_grad` differentiates
            (:func:`nnvtv.surrogate.gradient_loss`: the task loss, or a surrogate where the
            task metric has no gradient); ``None``: ``loss_fn`` on the readout. Exact masks
            (``objective(masks)``) always score ``loss_fn``.

    Calls:
        ``objective(masks: BoolTensor[B, n_sites]) -> FloatTensor[B]`` and
        ``objective.value_and_grad(weights: FloatTensor[B, n_sites]) -> (FloatTensor[B],
        FloatTensor[B, n_sites])``; both count their rows in :attr:`rows` and
        :attr:`gradient_rows`.
    """

    def __init__(
        self,
        model: Model,
        inputs: Any,
        means: Means,
        space: SiteSpace,
        loss_fn: LossFn,
        *,
        mode: str = "replace",
        max_rows: int | None = None,
        share_prefix: bool = True,
        gradient_loss: GradientLoss | None = None,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
        if not callable(loss_fn):
            raise ConfigError(f"loss_fn must be callable (readout -> [B, N] losses), got {loss_fn!r}")
        self.model = model
        self.inputs = model.inputs(inputs)
        self.means = means
        self.space = space
        self.loss_fn = loss_fn
        self.mode = mode
        self.max_rows = max_rows
        self.share_prefix = share_prefix
        self.gradient_loss = gradient_loss
        self.rows = 0
        self.gradient_rows = 0

    @property
    def n_sites(self) -> int:
        return len(self.space)

    def _losses(self, out: torch.Tensor, b: int, loss_fn: LossFn | None = None) -> torch.Tensor:
        losses = (loss_fn or self.loss_fn)(out)
        n = self.inputs.batch_size
        if not isinstance(losses, torch.Tensor) or tuple(losses.shape) != (b, n):
            shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
            raise ShapeMismatchError(
                f"loss_fn must return per-query losses of shape [{b}, {n}] (candidates x queries) "
                f"for a readout of shape {tuple(out.shape)}; got {shape}"
            )
        return losses.mean(-1)

    def __call__(self, masks: torch.Tensor) -> torch.Tensor:
        """``FloatTensor[B]``: mean loss of each mask row's exact patched forward (no gradients)."""
        out = run_masks(
            self.model, self.inputs, self.means, self.space, masks,
            mode=self.mode, max_rows=self.max_rows, share_prefix=self.share_prefix,
        )  # fmt: skip
        self.rows += out.shape[0]
        with torch.no_grad():
            return self._losses(out, out.shape[0]).detach().float()

    def gradient_chunk(self) -> int:
        """Weight rows per relaxed forward (each forward is followed by its backward)."""
        n = self.inputs.batch_size
        if self.max_rows is not None:
            if self.max_rows < n:
                raise ConfigError(f"max_rows={self.max_rows} is smaller than one batch of {n} inputs; raise max_rows")
            return max(1, self.max_rows // n)
        layers = sum(info.n_layers for info in self.model.streams.values())
        return max(1, auto_max_rows(self.model, self.inputs) // max(1, layers) // n)

    def value_and_grad(self, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Losses and their gradients for ``B`` relaxed weight rows.

        Args:
            weights: ``FloatTensor [B, n_sites]`` in ``[0, 1]`` (0: the site's own activation,
                1: patched with its mean).

        Returns:
            ``(losses FloatTensor[B], grads FloatTensor[B, n_sites])``; ``grads[b, i]`` is
            ``d losses[b] / d weights[b, i]`` (rows are independent candidates). At ``w = 0``
            it is attribution patching's estimate of site ``i``'s effect,
            ``mean over queries of (mean_i - a_i) . dL/da_i``.

        Raises:
            ObjectiveError: the loss does not depend differentiably on the weights (a metric
                computed after an argmax or a threshold: no graph, or a gradient that is exactly
                zero for every weight).
        """
        weights = check_weights(weights, self.n_sites)
        losses, grads = [], []
        chunk = self.gradient_chunk()
        gl = self.gradient_loss
        for start in range(0, weights.shape[0], chunk):
            w = weights[start : start + chunk].detach().to(torch.float32).clone().requires_grad_(True)
            out = run_weights(
                self.model, self.inputs, self.means, self.space, w,
                mode=self.mode, share_prefix=self.share_prefix, output_fn=None if gl is None else gl.output_fn,
            )  # fmt: skip
            loss = self._losses(out, w.shape[0], None if gl is None else gl.loss_fn)
            if not loss.requires_grad:
                raise ObjectiveError(
                    "the loss does not depend differentiably on the patch weights (loss_fn gave a "
                    "tensor without a graph: a metric after an argmax or a threshold?); gradient "
                    "strategies need a differentiable loss, e.g. cross-entropy on logits or MSE "
                    "on pixels before any argmax"
                )
            (g,) = torch.autograd.grad(loss.sum(), w, allow_unused=True)
            losses.append(loss.detach().float().cpu())
            grads.append((torch.zeros_like(w) if g is None else g).detach().float().cpu())
            self.gradient_rows += w.shape[0]
        grad = torch.cat(grads)
        if not bool(grad.any()):
            raise ObjectiveError(
                f"the loss's gradient with respect to all {grad.numel()} patch weights is exactly "
                "zero: the loss is piecewise constant in the readout (rounded, quantised or "
                "thresholded, e.g. uint8 pixels or a binarised IoU); gradient strategies need a "
                "differentiable loss, e.g. cross-entropy on logits or MSE on raw pixels"
            )
        return torch.cat(losses), grad

    def __repr__(self) -> str:
        return (
            f"MaskObjective(model={self.model.name!r}, queries={self.inputs.batch_size}, "
            f"sites={self.n_sites}, mode={self.mode!r}, rows={self.rows}, "
            f"gradient_rows={self.gradient_rows})"
        )
