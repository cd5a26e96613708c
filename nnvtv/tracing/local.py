"""Run traced forwards: one nnsight trace per job, visits executed in forward order.

:func:`run_jobs` is the whole body of every forward nnvtv makes. It needs nothing but the
nnsight root, plain data (inputs, visits) and the adapter's I/O, so the same call runs here
(:class:`LocalBackend`) or inside a remote nnsight session (:mod:`nnvtv.tracing.remote`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import nnsight
import torch

from nnvtv.errors import ShapeMismatchError
from nnvtv.tracing.edits import ATTN_OUT, Visit, apply_edits

if TYPE_CHECKING:
    from nnvtv.inputs import ModelInputs
    from nnvtv.model_io import ModelIO, ValueLayout

__all__ = ["Job", "Result", "envoy_at", "walk", "run_jobs", "LocalBackend"]

Job = tuple["ModelInputs", list[Visit]]
#: ``(readout or raw output or None, {visit index: what its reader returned})``
Result = tuple[Any, dict[int, Any]]


def envoy_at(root: Any, path: str) -> Any:
    """The nnsight Envoy at dotted ``path`` (``"model.layers.3.self_attn.o_proj"``)."""
    env = root
    for part in path.split("."):
        env = env[int(part)] if part.isdigit() else getattr(env, part)
    return env


def _layout(io: ModelIO, x: torch.Tensor, batch: int) -> ValueLayout | None:
    try:
        return io.layout(x, batch)
    except ShapeMismatchError:
        return None


def walk(root: Any, visits: Sequence[Visit], n_heads_of: Callable[[Visit], int], io: ModelIO, batch: int) -> dict[int, Any]:
    """Execute ``visits`` in forward order inside the current trace.

    Returns ``{i: reader result}`` for every ``visits[i]`` that has a reader. Readers hand
    their results back by *returning* them (never by writing to outer variables), so the
    same code works when the trace runs on a remote server and only saved values return.
    """
    reads: dict[int, Any] = {}
    for i, v in sorted(enumerate(visits), key=lambda iv: iv[1].order):
        env = envoy_at(root, v.path)
        if v.where == ATTN_OUT:
            x, out, is_tuple = env.input, None, False
        else:
            out = env.output
            is_tuple = isinstance(out, tuple)
            x = out[0] if is_tuple else out
        layout = _layout(io, x, batch)
        if v.reader is not None:
            reads[i] = v.reader(x, layout)
        if v.edits:
            if layout is None:
                io.layout(x, batch)  # raises the adapter's own ShapeMismatchError
            new = apply_edits(x, v.edits, v.where, n_heads_of(v) if v.where == ATTN_OUT else 1, layout)
            if v.where == ATTN_OUT:
                env.input = new
            else:
                env.output = (new, *out[1:]) if is_tuple else new
    return reads


def run_jobs(
    root: Any,
    io: ModelIO,
    jobs: Sequence[Job],
    n_heads: Sequence[int],
    *,
    readout: bool = True,
    output: bool = True,
    grad: bool = False,
) -> list[Result]:
    """One traced forward per ``(inputs, visits)`` job; ``[(output, reads), ...]``.

    Args:
        root: the nnsight model.
        io: the adapter's I/O (folds module values, reads the output).
        jobs: ``(ModelInputs, visits)`` pairs.
        n_heads: head count of each stream, in forward order (``Visit.stream_index``).
        readout: return ``io.readout(output, inputs)`` instead of the raw output.
        output: return anything but the reads at all (``False``: the first element is ``None``).
        grad: run with autograd on (values keep their graph: training, gradient search);
            otherwise under ``torch.no_grad``.
    """

    def n_heads_of(v: Visit) -> int:
        return n_heads[v.stream_index]

    results: list[Result] = []
    for inputs, visits in jobs:
        out = None  # only saved values leave a trace block, so set defaults outside it
        with torch.enable_grad() if grad else torch.no_grad(), root.trace(**inputs.kwargs):
            reads = walk(root, visits, n_heads_of, io, inputs.batch_size)
            if output:
                out = root.output if not readout else io.readout(root.output, inputs)
                out = nnsight.save(out)
            reads = nnsight.save(reads)
        results.append((out, reads))
    return results


class LocalBackend:
    """Runs every job here, one nnsight trace each."""

    remote: bool | str = False

    def __init__(self) -> None:
        self.requests = 0

    def run(self, root: Any, io: ModelIO, jobs: Sequence[Job], n_heads: Sequence[int], *,
            readout: bool, output: bool, grad: bool) -> list[Result]:
        return run_jobs(root, io, jobs, n_heads, readout=readout, output=output, grad=grad)


