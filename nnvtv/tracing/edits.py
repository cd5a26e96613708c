"""What a traced forward does at one module: :class:`Edit` s to apply and a reader to call.

Everything here runs *inside* an nnsight trace, on real tensors. Tensor conventions
(TransformerLens-style names):

* attention-output input, ``attn_out``: ``[batch, pos, n_heads * head_dim]``, viewed as
  ``[batch, pos, n_heads, head_dim]``;
* block output, ``block``: ``[batch, pos, d_model]``, viewed as ``[batch, pos, 1, d_model]``
  (a layer site is "head 0 of width d_model").

A module value of another shape (a grid, stacked copies of the batch) is first folded onto
``[batch, pos, width]`` by the adapter's :class:`~nnvtv.adapter.ValueLayout`; nothing here
knows any model family.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from nnvtv.model_io import ValueLayout
from nnvtv.sites import Site

__all__ = [
    "ATTN_OUT",
    "BLOCK",
    "Edit",
    "Visit",
    "ModuleKey",
    "Reader",
    "where_of",
    "group_sites",
    "head_index",
    "apply_edits",
    "read_heads",
]

ATTN_OUT = "attn_out"
BLOCK = "block"

ModuleKey = tuple[str, int, str]  # (stream, layer, where)
#: ``reader(value, layout)``: called with the module value and its layout (``None`` when the
#: adapter cannot fold it); its return value comes back from the trace
Reader = Callable[[torch.Tensor, ValueLayout | None], Any]


def where_of(site: Site) -> str:
    """Which module value a site lives in: the attention-output input or the block output."""
    return BLOCK if site.head is None else ATTN_OUT


@dataclass
class Edit:
    """Change ``heads`` of one module value at the positions of one group.

    Attributes:
        positions: ``LongTensor [batch, P]`` token positions of the group.
        heads: ``LongTensor [k]`` head indices (``[0]`` for a layer site).
        values: ``[P, k, width]`` (the same for every row) or ``[batch, P, k, width]`` (per row).
        mode: ``"replace"`` or ``"add"``.
        select: optional ``BoolTensor [batch, k]``; where False the row keeps its own value.
        weight: optional ``FloatTensor [batch, k]`` or ``[k]`` in ``[0, 1]``: a relaxed patch
            (gradients flow into it). ``replace`` gives ``a + w * (value - a)`` (``torch.lerp``:
            exactly ``a`` at ``w = 0`` and exactly ``value`` at ``w = 1``), ``add`` gives
            ``a + w * value``. ``None`` is ``w = 1``.
    """

    positions: torch.Tensor
    heads: torch.Tensor
    values: torch.Tensor
    mode: str = "replace"
    select: torch.Tensor | None = None
    weight: torch.Tensor | None = None


@dataclass
class Visit:
    """Work at one module of one traced forward: ``edits`` to apply and/or a ``reader``.

    Attributes:
        stream_index: the stream's index in forward order (visits run in forward order).
        layer: layer index within the stream.
        where: :data:`ATTN_OUT` or :data:`BLOCK`.
        path: dotted module path (``"model.layers.3.self_attn.o_proj"``).
        edits: :class:`Edit` s applied to the value.
        reader: :data:`Reader` called on the value before the edits.
    """

    stream_index: int
    layer: int
    where: str
    path: str
    edits: list[Edit] = field(default_factory=list)
    reader: Reader | None = None

    @property
    def order(self) -> tuple[int, int, int]:
        return (self.stream_index, self.layer, 0 if self.where == ATTN_OUT else 1)


def group_sites(sites: Iterable[Site]) -> dict[tuple[ModuleKey, str], list[tuple[int, Site]]]:
    """Sites keyed by (module, group), each with its index in ``sites`` (e.g. its mask column).

    One module value and one token group form one :class:`Edit`, so every caller that turns
    sites into edits or reads groups them this way.
    """
    out: dict[tuple[ModuleKey, str], list[tuple[int, Site]]] = {}
    for i, s in enumerate(sites):
        out.setdefault(((s.stream, s.layer, where_of(s)), s.group), []).append((i, s))
    return out


def head_index(items: Iterable[tuple[int, Site]]) -> torch.Tensor:
    """``LongTensor [k]`` of head indices of grouped sites (``0`` for a layer site)."""
    return torch.tensor([0 if s.head is None else s.head for _, s in items])


def _as_heads(x: torch.Tensor, where: str, n_heads: int) -> torch.Tensor:
    b, t, w = x.shape
    return x.view(b, t, n_heads, w // n_heads) if where == ATTN_OUT else x.view(b, t, 1, w)


def apply_edits(x: torch.Tensor, edits: Iterable[Edit], where: str, n_heads: int, layout: ValueLayout) -> torch.Tensor:
    """A copy of the module value ``x`` with ``edits`` applied (``x`` itself is never written)."""
    edits = list(edits)
    if not edits:
        return x
    x4 = _as_heads(layout.fold(x), where, n_heads).clone()
    rows = torch.arange(x4.shape[0], device=x4.device)[:, None]
    for e in edits:
        positions = layout.positions(e.positions.to(x4.device))
        block = x4[rows, positions]  # [batch, P, heads, width]
        cur = block[:, :, e.heads]  # [batch, P, k, width]
        vals = e.values.to(dtype=cur.dtype, device=cur.device)
        if e.weight is None:
            new = vals.expand_as(cur) if e.mode == "replace" else cur + vals
        else:  # [batch, k] or [k] -> broadcast over positions and width
            w = e.weight.to(dtype=cur.dtype, device=cur.device)
            w = w[:, None, :, None] if w.dim() == 2 else w[None, None, :, None]
            new = torch.lerp(cur, vals.expand_as(cur), w) if e.mode == "replace" else cur + w * vals
        if e.select is not None:
            new = torch.where(e.select[:, None, :, None].to(cur.device), new, cur)
        block[:, :, e.heads] = new
        x4[rows, positions] = block
    return layout.unfold(x4.reshape(x4.shape[0], x4.shape[1], -1))


def read_heads(x: torch.Tensor, positions: torch.Tensor, where: str, n_heads: int, layout: ValueLayout) -> torch.Tensor:
    """``[batch, P, heads, width]`` values of the module value ``x`` at ``positions [batch, P]``."""
    x4 = _as_heads(layout.fold(x), where, n_heads)
    rows = torch.arange(x4.shape[0], device=x4.device)[:, None]
    return x4[rows, layout.positions(positions.to(x4.device))]
