"""Mean-activation patching: one :class:`Patch` API and batched mask evaluation.

* :class:`Patch` ``(values, mode)`` patches fixed values into sites: ``replace`` overwrites
  the activation (visual task vectors, Hendel et al.), ``add`` adds to it (function
  vectors, Todd et al.). Head-site values are ``[positions_in_group, head_dim]``, layer-site
  values ``[positions_in_group, d_model]``.
* :func:`run_masks` evaluates ``B`` candidate site sets in ONE traced forward: the input
  batch is tiled ``B`` times and each tiled copy takes the means only where its mask row
  is set (``torch.where`` per row). This is what makes search cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from nnvtv import _trace
from nnvtv.errors import ConfigError, ShapeMismatchError
from nnvtv.inputs import ModelInputs
from nnvtv.sites import Site, SiteSpace

if TYPE_CHECKING:
    from nnvtv.activations import Means
    from nnvtv.model import Model

__all__ = ["Patch", "run_masks", "MODES"]

MODES = ("replace", "add")

#: memory bound (bytes) for the per-candidate copies of a shared prefix's state in one chunk
SHARED_STATE_BYTES = 1 << 30


@dataclass(frozen=True)
class Patch:
    """Values to patch into sites.

    Attributes:
        values: ``{site: tensor}``; ``[positions_in_group, head_dim]`` for head sites,
            ``[positions_in_group, d_model]`` for layer sites.
        mode: ``"replace"`` (overwrite) or ``"add"`` (add to the activation).
    """

    values: Mapping[Site, torch.Tensor] = field(default_factory=dict)
    mode: str = "replace"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"patch mode must be one of {MODES}, got {self.mode!r}")
        bad = [k for k in self.values if not isinstance(k, Site)]
        if bad:
            raise ConfigError(f"Patch keys must be nnvtv.Site, got {type(bad[0]).__name__}: {bad[0]!r}")

    def __len__(self) -> int:
        return len(self.values)

    @property
    def sites(self) -> list[Site]:
        return list(self.values)


def run_masks(
    model: Model,
    inputs: Any,
    means: Means,
    space: SiteSpace,
    masks: torch.Tensor,
    *,
    mode: str = "replace",
    max_rows: int = 2048,
    share_prefix: bool = True,
) -> torch.Tensor:
    """Readouts for ``B`` site sets, each set patched with ``means``; one forward per chunk.

    Args:
        model: the wrapped model.
        inputs: the (zero-shot) batch, prompts or :class:`ModelInputs`, ``N`` rows.
        means: mean activations covering every site of ``space``.
        space: the site space the mask columns refer to.
        masks: ``BoolTensor [B, len(space)]``; row ``b`` selects the sites patched for
            candidate ``b`` (an all-False row is the unpatched model).
        mode: ``"replace"`` or ``"add"``.
        max_rows: memory bound: at most this many rows (``candidates x N``) per forward;
            candidates are chunked to respect it (one traced forward per chunk).
        share_prefix: let the adapter run the part of the prompts no candidate can change
            once (:meth:`~nnvtv.adapter.ModelIO.shared_prefix`; causal LMs patched at
            ``last``: the prefix with a key/value cache, then only the last token per
            candidate). Same readouts up to float rounding; ``False`` tiles whole prompts.
            Never used on remote models. Tiled prefix state is kept under
            ``SHARED_STATE_BYTES`` per chunk.

    Returns:
        ``[B, N, ...]``: the adapter's readout per candidate and input row (text models:
        next-token logits ``[B, N, vocab]``).
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    masks = space.check_masks(masks)
    inputs = model.inputs(inputs)
    n = inputs.batch_size
    if max_rows < n:
        raise ConfigError(f"max_rows={max_rows} is smaller than one batch of {n} inputs; raise max_rows")
    means.check_covers(model, space)
    plan = _mask_plan(model, inputs, means, space)
    per_chunk = max(1, max_rows // n)
    shared = None
    if share_prefix and not model.remote:
        shared = model.io.shared_prefix(inputs, {(key[0], group) for key, group, *_ in plan})
    if shared is not None:
        # the prefix no candidate can change runs once; only the step is tiled per candidate
        prefix_out = model.trace_jobs([(shared.prefix, [])], readout=False)[0][0]
        state_rows = max(n, SHARED_STATE_BYTES // max(1, shared.row_bytes(prefix_out)))
        per_chunk = max(1, min(max_rows, state_rows) // n)
    jobs, sizes = [], []
    for start in range(0, masks.shape[0], per_chunk):
        chunk = masks[start : start + per_chunk]
        k = chunk.shape[0]
        if shared is not None:
            tiled = shared.step(prefix_out, torch.arange(n).repeat(k))
        else:
            tiled = inputs.repeat(k)
        row_mask = chunk.repeat_interleave(n, dim=0)  # [k*n, n_sites]
        visits = model.visits(space)
        for key, group, heads, values, cols in plan:
            visits[key].edits.append(
                _trace.Edit(tiled.group_positions(key[0], group), heads, values, mode, select=row_mask[:, cols])
            )
        jobs.append((tiled, list(visits.values())))
        sizes.append(k)
    # one traced forward per chunk; on a remote model all chunks travel in ONE request
    results = model.trace_jobs(jobs, readout=True)
    return torch.cat([out.reshape(k, n, *out.shape[1:]) for (out, _), k in zip(results, sizes, strict=True)])


def _mask_plan(
    model: Model, inputs: ModelInputs, means: Means, space: SiteSpace
) -> list[tuple[tuple[str, int, str], str, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Group the space's sites by (module, group): heads, stacked means, mask columns."""
    plan = []
    for (key, group), items in _trace.group_sites(space).items():
        p = inputs.group_size(key[0], group)
        vals = []
        for _, site in items:
            v = means[site]
            if v.shape[0] != p:
                raise ShapeMismatchError(
                    f"means for site {site} cover {v.shape[0]} positions but the inputs' group "
                    f"{group!r} has {p}; collect means on prompts with the same group layout"
                )
            vals.append(v)
        cols = torch.tensor([c for c, _ in items])
        plan.append((key, group, _trace.head_index(items), torch.stack(vals, dim=1), cols))
    return plan
