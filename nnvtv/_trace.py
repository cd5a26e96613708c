"""Internal: read and write site activations inside one nnsight trace.

Everything here runs *inside* ``with model.nnsight.trace(...)``. Modules must be visited
in forward order (nnsight interleaves with the real forward), so callers describe their
work as a list of :class:`Visit` s and :func:`walk` sorts and executes them.

Tensor conventions (TransformerLens-style names):

* attention-output input, ``attn_out``: ``[batch, pos, n_heads * head_dim]``, viewed as
  ``[batch, pos, n_heads, head_dim]``;
* block output, ``block``: ``[batch, pos, d_model]``, viewed as ``[batch, pos, 1, d_model]``
  (a layer site is "head 0 of width d_model").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from nnvtv.sites import Site

ATTN_OUT = "attn_out"
BLOCK = "block"


def where_of(site: Site) -> str:
    """Which module value a site lives in."""
    return BLOCK if site.head is None else ATTN_OUT


@dataclass
class Edit:
    """Change ``heads`` of one module value at the positions of one group.

    Attributes:
        positions: ``LongTensor [batch, P]`` token positions of the group.
        heads: ``LongTensor [k]`` head indices (``[0]`` for a layer site).
        values: ``[P, k, width]`` (same for every row).
        mode: ``"replace"`` or ``"add"``.
        select: optional ``BoolTensor [batch, k]``; where False the row keeps its own value.
    """

    positions: torch.Tensor
    heads: torch.Tensor
    values: torch.Tensor
    mode: str = "replace"
    select: torch.Tensor | None = None


@dataclass
class Visit:
    """Work at one module: ``edits`` to apply and/or ``reader`` to call on the value."""

    stream_index: int
    layer: int
    where: str
    path: str
    edits: list[Edit] = field(default_factory=list)
    reader: Callable[[torch.Tensor], None] | None = None

    @property
    def order(self) -> tuple[int, int, int]:
        return (self.stream_index, self.layer, 0 if self.where == ATTN_OUT else 1)


ModuleKey = tuple[str, int, str]  # (stream, layer, where)


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


def envoy_at(root: Any, path: str) -> Any:
    """The nnsight Envoy at dotted ``path`` (``"model.layers.3.self_attn.o_proj"``)."""
    env = root
    for part in path.split("."):
        env = env[int(part)] if part.isdigit() else getattr(env, part)
    return env


def _as_heads(x: torch.Tensor, where: str, n_heads: int) -> torch.Tensor:
    b, t, w = x.shape
    return x.view(b, t, n_heads, w // n_heads) if where == ATTN_OUT else x.view(b, t, 1, w)


def apply_edits(x: torch.Tensor, edits: Iterable[Edit], where: str, n_heads: int) -> torch.Tensor:
    """Return a copy of ``x [batch, pos, width]`` with ``edits`` applied."""
    x4 = _as_heads(x, where, n_heads).clone()
    rows = torch.arange(x4.shape[0], device=x4.device)[:, None]
    for e in edits:
        block = x4[rows, e.positions]  # [batch, P, heads, width]
        cur = block[:, :, e.heads]  # [batch, P, k, width]
        vals = e.values.to(dtype=cur.dtype, device=cur.device)
        new = vals.expand_as(cur) if e.mode == "replace" else cur + vals
        if e.select is not None:
            new = torch.where(e.select[:, None, :, None].to(cur.device), new, cur)
        block[:, :, e.heads] = new
        x4[rows, e.positions] = block
    return x4.reshape(x.shape)


def read_heads(x: torch.Tensor, positions: torch.Tensor, where: str, n_heads: int) -> torch.Tensor:
    """``[batch, P, heads, width]`` values of ``x [batch, pos, width]`` at ``positions [batch, P]``."""
    x4 = _as_heads(x, where, n_heads)
    rows = torch.arange(x4.shape[0], device=x4.device)[:, None]
    return x4[rows, positions]


def walk(root: Any, visits: list[Visit], n_heads_of: Callable[[Visit], int]) -> None:
    """Execute ``visits`` in forward order inside the current trace."""
    for v in sorted(visits, key=lambda v: v.order):
        env = envoy_at(root, v.path)
        if v.where == ATTN_OUT:
            x = env.input
            if v.reader is not None:
                v.reader(x)
            if v.edits:
                env.input = apply_edits(x, v.edits, v.where, n_heads_of(v))
        else:
            out = env.output
            is_tuple = isinstance(out, tuple)
            h = out[0] if is_tuple else out
            if v.reader is not None:
                v.reader(h)
            if v.edits:
                new = apply_edits(h, v.edits, v.where, 1)
                env.output = (new, *out[1:]) if is_tuple else new
