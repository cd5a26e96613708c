"""Mean-activation patching: one :class:`Patch` API and batched mask evaluation.

* :class:`Patch` ``(values, mode)`` patches fixed values into sites: ``replace`` overwrites
  the activation (visual task vectors, Hendel et al.), ``add`` adds to it (function
  vectors, Todd et al.). Head-site values are ``[positions_in_group, head_dim]``, layer-site
  values ``[positions_in_group, d_model]`` (the same for every input row), or with a leading
  batch dimension ``[batch, positions_in_group, width]`` (one value per row, e.g. a vector
  taken from each row's own in-context prompt); ``rows`` limits a site's patch to some rows.
  :func:`patch_visits` validates a patch against a model and its inputs and turns it into the
  edits a traced forward applies.
* :func:`run_masks` evaluates ``B`` candidate site sets in ONE traced forward: the input
  batch is tiled ``B`` times and each tiled copy takes the means only where its mask row
  is set (``torch.where`` per row). This is what makes search cheap.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from nnvtv.errors import ConfigError, DTypeMismatchError, ShapeMismatchError
from nnvtv.inputs import ModelInputs
from nnvtv.sites import Site, SiteSpace
from nnvtv.tracing import Edit, Visit, group_sites, head_index

if TYPE_CHECKING:
    from nnvtv.activations import Means
    from nnvtv.model import Model

__all__ = ["Patch", "run_masks", "patch_visits", "check_value", "MODES"]

MODES = ("replace", "add")

#: memory bound (bytes) for the per-candidate copies of a shared prefix's state in one chunk
SHARED_STATE_BYTES = 1 << 30
#: the most rows one batched forward gets when ``max_rows`` is left to nnvtv
MAX_AUTO_ROWS = 4096


@dataclass(frozen=True)
class Patch:
    """Values to patch into sites.

    Attributes:
        values: ``{site: tensor}``; ``[positions_in_group, head_dim]`` for head sites,
            ``[positions_in_group, d_model]`` for layer sites; a leading batch dimension
            (``[batch, positions_in_group, width]``) gives every input row its own value.
        mode: ``"replace"`` (overwrite) or ``"add"`` (add to the activation).
        rows: optional ``{site: BoolTensor [batch]}``: the site is patched only in these rows
            (the others keep their own activation).
    """

    values: Mapping[Site, torch.Tensor] = field(default_factory=dict)
    mode: str = "replace"
    rows: Mapping[Site, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"patch mode must be one of {MODES}, got {self.mode!r}")
        bad = [k for k in self.values if not isinstance(k, Site)]
        if bad:
            raise ConfigError(f"Patch keys must be nnvtv.Site, got {type(bad[0]).__name__}: {bad[0]!r}")
        extra = [str(k) for k in (self.rows or {}) if k not in self.values]
        if extra:
            raise ConfigError(f"Patch rows name sites that have no value: {extra[:3]}")

    def __len__(self) -> int:
        return len(self.values)

    @property
    def sites(self) -> list[Site]:
        return list(self.values)


def check_value(model: Model, site: Site, value: torch.Tensor, inputs: ModelInputs | None = None) -> None:
    """Raise unless ``value`` fits ``site``: floating point, ``[positions_in_group, width]`` or,
    with ``inputs``, also ``[batch, positions_in_group, width]`` (one value per row)."""
    width = model.site_width(site)
    if not isinstance(value, torch.Tensor):
        raise DTypeMismatchError(f"value for site {site} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise DTypeMismatchError(f"value for site {site} must be floating point, got {value.dtype}")
    if inputs is not None:
        p, b = inputs.group_size(site.stream, site.group), inputs.batch_size
        expected: tuple[int | str, ...] = (p, width)
        ok = tuple(value.shape) in ((p, width), (b, p, width))
    else:
        expected = ("positions_in_group", width)
        ok = value.dim() in (2, 3) and value.shape[-1] == width
    if not ok:
        kind = "head_dim" if site.head is not None else "d_model"
        raise ShapeMismatchError(
            f"value for site {site} has shape {tuple(value.shape)}, expected {expected} "
            f"([positions_in_group, {kind}], or [batch, positions_in_group, {kind}] per row)"
        )


def patch_visits(model: Model, patch: Patch, inputs: ModelInputs) -> dict[tuple[str, int, str], Visit]:
    """Validate ``patch`` against ``model`` and ``inputs`` and turn it into visits (one per module)."""
    if not isinstance(patch, Patch):
        raise ConfigError(f"patch must be an nnvtv.Patch, got {type(patch).__name__}")
    visits = model.visits(patch.values)
    for site, value in patch.values.items():
        check_value(model, site, value, inputs)
    rows = dict(patch.rows or {})
    for site, r in rows.items():
        if not isinstance(r, torch.Tensor) or r.dtype != torch.bool or tuple(r.shape) != (inputs.batch_size,):
            raise ShapeMismatchError(
                f"rows for site {site} must be a BoolTensor [{inputs.batch_size}] (one flag per input row), "
                f"got {getattr(r, 'dtype', type(r).__name__)} {tuple(getattr(r, 'shape', ()))}"
            )
    for (key, group), items in group_sites(patch.values).items():
        vals = [patch.values[s] for _, s in items]
        if any(v.dim() == 3 for v in vals):  # per-row values: [batch, P, k, width]
            b = inputs.batch_size
            values = torch.stack([v if v.dim() == 3 else v.expand(b, *v.shape) for v in vals], dim=2)
        else:
            values = torch.stack(vals, dim=1)  # [P, k, width]
        select = None
        if any(s in rows for _, s in items):
            ones = torch.ones(inputs.batch_size, dtype=torch.bool)
            select = torch.stack([rows.get(s, ones) for _, s in items], dim=1)  # [batch, k]
        visits[key].edits.append(
            Edit(inputs.group_positions(key[0], group), head_index(items), values, patch.mode, select=select)
        )
    return visits


def run_masks(
    model: Model,
    inputs: Any,
    means: Means,
    space: SiteSpace,
    masks: torch.Tensor,
    *,
    mode: str = "replace",
    max_rows: int | None = None,
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
            candidates are chunked to respect it (one traced forward per chunk). ``None``:
            :func:`auto_max_rows` (half the free memory of the model's device, at most
            :data:`MAX_AUTO_ROWS`).
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
    if max_rows is None:
        max_rows = auto_max_rows(model, inputs)
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
                Edit(tiled.group_positions(key[0], group), heads, values, mode, select=row_mask[:, cols])
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
    for (key, group), items in group_sites(space).items():
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
        plan.append((key, group, head_index(items), torch.stack(vals, dim=1), cols))
    return plan


def _free_bytes(device: torch.device | None) -> int | None:
    """Free memory of ``device`` (CUDA: the driver's count; CPU: available RAM on Linux), or ``None``."""
    if device is None:
        return None
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            return None
    return None


def auto_max_rows(model: Model, inputs: ModelInputs) -> int:
    """Rows per batched forward that fit in half the free memory of the model's device.

    One row is estimated at ``positions x (16 x widest stream x dtype bytes + 4 x vocabulary)``
    bytes (the forward's largest intermediates and float32 logits at every position); the result
    is at least one batch and at most :data:`MAX_AUTO_ROWS`. Remote models: the constant.
    """
    n = inputs.batch_size
    free = None if model.remote else _free_bytes(model.device)
    if free is None:
        return max(n, MAX_AUTO_ROWS)
    seq = max([int(v.shape[1]) for v in inputs.kwargs.values() if isinstance(v, torch.Tensor) and v.dim() >= 2 and not v.is_floating_point()]
              + [int(p.max()) + 1 for gs in inputs.positions.values() for p in gs.values() if p.numel()] + [1])
    width = max(info.d_model for info in model.streams.values())
    dtype = model.dtype or torch.float32
    vocab = int(getattr(getattr(model.module, "config", None), "vocab_size", 0) or 0)
    per_row = seq * (16 * width * dtype.itemsize + 4 * vocab)
    return max(n, min(MAX_AUTO_ROWS, int(free // 2 // max(1, per_row))))
