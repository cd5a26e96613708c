"""Internal: read and write site activations inside one nnsight trace.

Everything here runs *inside* ``with model.nnsight.trace(...)``. Modules must be visited
in forward order (nnsight interleaves with the real forward), so callers describe their
work as a list of :class:`Visit` s and :func:`walk` sorts and executes them.

Tensor conventions (TransformerLens-style names):

* attention-output input, ``attn_out``: ``[batch, pos, n_heads * head_dim]``, viewed as
  ``[batch, pos, n_heads, head_dim]``;
* block output, ``block``: ``[batch, pos, d_model]``, viewed as ``[batch, pos, 1, d_model]``
  (a layer site is "head 0 of width d_model").

Grids and stacked copies: a value may also be a grid ``[b', *cells, width]`` (SegGPT keeps
``[batch, height, width, channels]``), and its leading dimension may hold ``m`` stacked
copies of the input batch, ``b' = m * batch``, copy-major (SegGPT runs its image and mask
copies side by side in the batch until it averages them). :func:`fold` turns every such
value into the canonical ``[batch, pos, width]``: copy ``c``, cell ``(i, j, ...)`` in raster
order is position ``c * n_cells + raster(i, j, ...)``, and :func:`unfold` puts edits back.
Group positions are written for the widest layout the inputs produce; where a model has
merged its copies (fewer copies in a later layer), a position of copy ``c`` addresses copy
``c mod m`` of that layer: the merged cell. Plain sequences ``[batch, pos, width]`` are
used as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import nnsight
import torch

from nnvtv.errors import ShapeMismatchError
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


@dataclass(frozen=True)
class Layout:
    """How a module value ``[b', *cells, width]`` folds into ``[batch, pos, width]``.

    Attributes:
        shape: the value's own shape.
        copies: ``m = b' // batch`` stacked copies of the batch (``1`` for most models).
        cells: cells per copy (``prod(cells)``; sequence length for ``[batch, pos, width]``).
    """

    shape: tuple[int, ...]
    copies: int
    cells: int

    @property
    def folded(self) -> bool:
        """False for a plain ``[batch, pos, width]`` sequence (used as it is)."""
        return len(self.shape) != 3 or self.copies != 1

    def positions(self, positions: torch.Tensor) -> torch.Tensor:
        """Group positions ``[batch, P]`` as indices into this layout's folded value."""
        if not self.folded:
            return positions
        copy = torch.div(positions, self.cells, rounding_mode="floor") % self.copies
        return copy * self.cells + positions % self.cells


def layout_of(x: torch.Tensor, batch: int) -> Layout:
    """The :class:`Layout` of a value ``x [b', *cells, width]`` for an input batch of ``batch``."""
    if x.dim() < 3 or x.shape[0] % batch != 0:
        raise ShapeMismatchError(
            f"a site value must be [batch, pos, width] or [copies * batch, *cells, width] for "
            f"a batch of {batch}; got {tuple(x.shape)}"
        )
    cells = 1
    for n in x.shape[1:-1]:
        cells *= int(n)
    return Layout(tuple(x.shape), x.shape[0] // batch, cells)


def fold(x: torch.Tensor, layout: Layout) -> torch.Tensor:
    """``[copies * batch, *cells, width]`` -> ``[batch, copies * n_cells, width]``."""
    if not layout.folded:
        return x
    m, w = layout.copies, x.shape[-1]
    b = x.shape[0] // m
    return x.reshape(m, b, layout.cells, w).transpose(0, 1).reshape(b, m * layout.cells, w)


def unfold(y: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Inverse of :func:`fold`: ``[batch, copies * n_cells, width]`` -> the value's shape."""
    if not layout.folded:
        return y
    b, w = y.shape[0], y.shape[-1]
    return y.reshape(b, layout.copies, layout.cells, w).transpose(0, 1).reshape(layout.shape)


def _as_heads(x: torch.Tensor, where: str, n_heads: int) -> torch.Tensor:
    b, t, w = x.shape
    return x.view(b, t, n_heads, w // n_heads) if where == ATTN_OUT else x.view(b, t, 1, w)


def apply_edits(x: torch.Tensor, edits: Iterable[Edit], where: str, n_heads: int) -> torch.Tensor:
    """Return a copy of ``x`` (``[batch, pos, width]`` or a grid, see :func:`fold`) with ``edits``."""
    edits = list(edits)
    if not edits:
        return x
    layout = layout_of(x, edits[0].positions.shape[0])
    x4 = _as_heads(fold(x, layout), where, n_heads).clone()
    rows = torch.arange(x4.shape[0], device=x4.device)[:, None]
    for e in edits:
        positions = layout.positions(e.positions.to(x4.device))
        block = x4[rows, positions]  # [batch, P, heads, width]
        cur = block[:, :, e.heads]  # [batch, P, k, width]
        vals = e.values.to(dtype=cur.dtype, device=cur.device)
        new = vals.expand_as(cur) if e.mode == "replace" else cur + vals
        if e.select is not None:
            new = torch.where(e.select[:, None, :, None].to(cur.device), new, cur)
        block[:, :, e.heads] = new
        x4[rows, positions] = block
    return unfold(x4.reshape(x4.shape[0], x4.shape[1], -1), layout)


def read_heads(x: torch.Tensor, positions: torch.Tensor, where: str, n_heads: int) -> torch.Tensor:
    """``[batch, P, heads, width]`` values of ``x`` at ``positions [batch, P]``.

    ``x`` is ``[batch, pos, width]`` or a grid with stacked copies (see :func:`fold`).
    """
    layout = layout_of(x, positions.shape[0])
    x4 = _as_heads(fold(x, layout), where, n_heads)
    rows = torch.arange(x4.shape[0], device=x4.device)[:, None]
    return x4[rows, layout.positions(positions.to(x4.device))]


def walk(root: Any, visits: list[Visit], n_heads_of: Callable[[Visit], int]) -> dict[int, Any]:
    """Execute ``visits`` in forward order inside the current trace.

    Returns ``{i: reader result}`` for every ``visits[i]`` that has a reader. Readers hand
    their results back by *returning* them (never by writing to outer variables), so the
    same code works when the trace runs on a remote server and only saved values return.
    """
    reads: dict[int, Any] = {}
    for i, v in sorted(enumerate(visits), key=lambda iv: iv[1].order):
        env = envoy_at(root, v.path)
        if v.where == ATTN_OUT:
            x = env.input
            if v.reader is not None:
                reads[i] = v.reader(x)
            if v.edits:
                env.input = apply_edits(x, v.edits, v.where, n_heads_of(v))
        else:
            out = env.output
            is_tuple = isinstance(out, tuple)
            h = out[0] if is_tuple else out
            if v.reader is not None:
                reads[i] = v.reader(h)
            if v.edits:
                new = apply_edits(h, v.edits, v.where, 1)
                env.output = (new, *out[1:]) if is_tuple else new
    return reads


Job = tuple[Any, list[Visit]]  # (ModelInputs, visits)


def run_jobs(
    root: Any,
    jobs: list[Job],
    n_heads: list[int],
    readout: Callable[[Any, Any], Any] | None,
    output: bool = True,
) -> list[tuple[Any, dict[int, Any]]]:
    """One traced forward per ``(inputs, visits)`` job; ``[(output, reads), ...]``.

    ``output`` is ``readout(model_output, inputs)`` (or the raw output when ``readout`` is
    None; ``None`` when ``output`` is False) and ``reads`` what :func:`walk` returns. Everything this needs is passed in (the
    nnsight root, plain data, and a readout that holds no model), so the whole call can run
    inside a remote nnsight session: see :meth:`nnvtv.Model.trace_jobs`.
    ``n_heads[k]`` is the head count of stream ``k`` (in forward order).
    """

    def n_heads_of(v: Visit) -> int:
        return n_heads[v.stream_index]

    results = []
    for inputs, visits in jobs:
        out = None  # only saved values leave a trace block, so set defaults outside it
        with torch.no_grad(), root.trace(**inputs.kwargs):
            reads = walk(root, visits, n_heads_of)
            if output:
                out = root.output if readout is None else readout(root.output, inputs)
                out = nnsight.save(out)
            reads = nnsight.save(reads)
        results.append((out, reads))
    return results
