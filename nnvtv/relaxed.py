"""Relaxed patching: continuous per-site weights instead of a binary mask, with gradients.

A weight row ``w`` in ``[0, 1]^n_sites`` patches every site ``i`` of a site space a fraction
``w_i`` of the way: ``replace`` gives ``a + w_i * (mean_i - a)`` and ``add`` gives
``a + w_i * mean_i`` (``a`` the site's own activation). ``w = 0`` is the clean forward and a
binary ``w`` is the patched forward of that mask (exactly: ``torch.lerp`` returns its end
points), so

* ``dL/dw_i`` at ``w = 0`` is attribution patching's first-order estimate
  ``(mean_i - a_i) . dL/da_i`` (Nanda 2023; Kramar et al. 2024), summed over the group's
  positions and the input rows;
* a gate in ``[0, 1]`` per site (hard-concrete, sigmoid) can be trained by backpropagation
  through the patched forward.

:func:`run_weights` evaluates ``B`` weight rows in ONE traced forward over the inputs tiled
``B`` times (autograd on), like :func:`nnvtv.run_masks` does for masks; a causal LM patched
only at ``last`` runs the prompts' shared prefix once without gradients (nothing a patch at
the last token does can change it) and tiles only the last token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from nnvtv.errors import ConfigError, DTypeMismatchError, ShapeMismatchError
from nnvtv.patching import MODES, _mask_plan
from nnvtv.sites import SiteSpace
from nnvtv.tracing import Edit

if TYPE_CHECKING:
    from nnvtv.activations import Means
    from nnvtv.inputs import ModelInputs
    from nnvtv.model import Model

__all__ = ["check_weights", "run_weights"]


def check_weights(weights: Any, n_sites: int, *, what: str = "weights") -> torch.Tensor:
    """Validate ``FloatTensor [B, n_sites]`` weights in ``[0, 1]``; return them unchanged.

    Raises:
        DTypeMismatchError: not a floating-point tensor (bool masks go to ``run_masks``).
        ShapeMismatchError: not ``[B, n_sites]`` with ``B >= 1``, or values outside ``[0, 1]``
            or not finite.
    """
    if not isinstance(weights, torch.Tensor) or not weights.is_floating_point():
        given = weights.dtype if isinstance(weights, torch.Tensor) else type(weights).__name__
        raise DTypeMismatchError(
            f"{what} must be a floating-point tensor [B, {n_sites}] (one weight in [0, 1] per site), "
            f"got {given}; boolean masks are exact patches: use nnvtv.run_masks"
        )
    if weights.dim() != 2 or weights.shape[1] != n_sites or weights.shape[0] < 1:
        raise ShapeMismatchError(
            f"{what} must have shape [B, {n_sites}] (one column per site of the space, B >= 1), "
            f"got {tuple(weights.shape)}"
        )
    w = weights.detach()
    if not bool(torch.isfinite(w).all()) or bool(((w < 0) | (w > 1)).any()):
        raise ShapeMismatchError(
            f"{what} must be finite and within [0, 1] (0: the site's own activation, 1: fully "
            f"patched); got values in [{float(w.min()):.4g}, {float(w.max()):.4g}]; clamp them"
        )
    return weights


def run_weights(
    model: Model,
    inputs: Any,
    means: Means,
    space: SiteSpace,
    weights: torch.Tensor,
    *,
    mode: str = "replace",
    share_prefix: bool = True,
    output_fn: Callable[[Any, ModelInputs], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Readouts for ``B`` weight rows in one traced forward, keeping the autograd graph.

    Args:
        model: the wrapped model (local: gradients through a remote trace are refused by the
            remote backend with a :class:`~nnvtv.errors.RemoteError`).
        inputs: the (zero-shot) batch, prompts or :class:`~nnvtv.inputs.ModelInputs`, ``N`` rows.
        means: mean activations covering every site of ``space``.
        space: the site space the weight columns refer to.
        weights: ``FloatTensor [B, len(space)]`` in ``[0, 1]``; may require grad (row ``b``
            patches site ``i`` with weight ``weights[b, i]`` in every input row).
        mode: ``"replace"`` (``a + w (mean - a)``) or ``"add"`` (``a + w mean``).
        share_prefix: as in :func:`nnvtv.run_masks`: run the prefix no candidate can change
            once, without gradients, and tile only the step (causal LMs patched at ``last``).
        output_fn: ``(raw output, tiled inputs) -> [B * N, ...]`` applied to the model's raw
            output instead of the adapter's readout (a family's surrogate loss,
            :meth:`ModelIO.surrogate_loss <nnvtv.model_io.ModelIO.surrogate_loss>`); the
            readout is then never computed.

    Returns:
        ``[B, N, ...]`` readouts (text: next-token logits ``[B, N, vocab]``), or what
        ``output_fn`` gave, with their graph:
        ``loss.backward()`` fills ``weights.grad``. The forward is one trace, so memory grows
        with ``B x N``; chunk rows yourself (see :class:`nnvtv.objective.MaskObjective`).
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    weights = check_weights(weights, len(space))
    inputs = model.inputs(inputs)
    n, b = inputs.batch_size, weights.shape[0]
    means.check_covers(model, space)
    plan = _mask_plan(model, inputs, means, space)
    shared = None
    if share_prefix and not model.remote:
        shared = model.io.shared_prefix(inputs, {(key[0], group) for key, group, *_ in plan})
    if shared is not None:
        prefix_out = model.trace_jobs([(shared.prefix, [])], readout=False)[0][0]  # no grad
        tiled = shared.step(prefix_out, torch.arange(n).repeat(b))
    else:
        tiled = inputs.repeat(b)
    device = model.device
    row_w = weights.repeat_interleave(n, dim=0)  # [B*N, n_sites], still on the graph
    if device is not None:
        row_w = row_w.to(device)
    visits = model.visits(space)
    for key, group, heads, values, cols in plan:
        visits[key].edits.append(
            Edit(tiled.group_positions(key[0], group), heads, values, mode, weight=row_w[:, cols.to(row_w.device)])
        )
    out = model.trace_jobs([(tiled, list(visits.values()))], readout=output_fn is None, grad=True)[0][0]
    if output_fn is not None:
        out = output_fn(out, tiled)
    return out.reshape(b, n, *out.shape[1:])
