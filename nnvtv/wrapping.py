"""``nnvtv.wrap``: put a model on an nnsight graph with its adapter, and check the adapter fits.

>>> model = nnvtv.wrap(hf_model, tokenizer)   # adapter from the registry, checked by one tiny forward
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from nnvtv.adapter import AdapterSpec, find_adapter
from nnvtv.errors import AdapterError, ConfigError
from nnvtv.model import Model
from nnvtv.model_io import make_io
from nnvtv.tracing import ATTN_OUT, BLOCK, Visit
from nnvtv.tracing.remote import remote_wrapper

__all__ = ["wrap", "validate_model"]


def wrap(
    model: torch.nn.Module | str,
    tokenizer: Any = None,
    *,
    adapter: AdapterSpec | None = None,
    name: str | None = None,
    meta: Mapping[str, Any] | None = None,
    validate: bool = True,
    remote: bool | str = False,
    **io_options: Any,
) -> Model:
    """Wrap a PyTorch / Hugging Face model for nnvtv.

    Args:
        model: the network (put in eval mode).
        tokenizer: for text models, turns prompt strings into ids.
        adapter: an explicit :class:`AdapterSpec`; default: looked up in the registry.
        name: display name.
        meta: metadata kept on the model (e.g. ``{"prompt_format": {...}}``).
        validate: run one tiny forward to check every site's width against the table
            (skipped for ``remote=True``: it would cost a request).
        remote: ``True``: ``model`` is a Hugging Face hub id of a model hosted on NDIF; every
            trace (means, batched masks, every strategy) runs there, grouped into one
            request per call (API key from ``NDIF_API_KEY``). ``"local"``: ``model`` is a
            loaded transformers model; traces go through nnsight's serialization path but
            run here (tests, tutorials). See :mod:`nnvtv.tracing.remote`.
        **io_options: options of the adapter's I/O (unknown names raise ``ConfigError``).
    """
    nn_model: Any = None
    if remote:
        model, nn_model, tokenizer = remote_wrapper(model, tokenizer, remote)
        validate = validate and remote is not True
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(
            f"nnvtv.wrap expects a torch.nn.Module, got {type(model).__name__}; "
            "for a shipped or cached model use nnvtv.load(name); for a model hosted on NDIF "
            "use nnvtv.wrap(hub_id, remote=True)"
        )
    model.eval()
    spec = adapter if adapter is not None else find_adapter(model)
    io = make_io(spec.io, model, tokenizer, dict(io_options))
    m = Model(model, spec, io, name=name, meta=meta, nnsight_model=nn_model, remote=remote)
    if validate:
        validate_model(m)
    return m


def validate_model(model: Model) -> None:
    """One tiny traced forward that checks every head and block value against the table.

    Every module value must fold (through the adapter's :meth:`~nnvtv.adapter.ModelIO.layout`)
    onto ``[batch, pos, width]`` with the width the table implies, and every group's positions
    must fall inside the values of its stream.

    Raises:
        AdapterError: naming each misfit (module path, shape found, shape expected).
    """
    inputs = model.inputs(model.io.example(2))
    batch = inputs.batch_size
    visits = []
    stream_of: list[str] = []
    for k, (sname, info) in enumerate(model.streams.items()):
        for layer in range(info.n_layers):
            for where, path, width in (
                (ATTN_OUT, info.attn_out_paths[layer], info.n_heads * info.head_dim),
                (BLOCK, info.block_paths[layer], info.d_model),
            ):
                def check(x: torch.Tensor, layout: Any, path: str = path, width: int = width) -> tuple[str | None, int]:
                    # returns (problem, positions in the folded value)
                    if layout is not None:
                        y = layout.fold(x)
                        if y.dim() == 3 and y.shape[0] == batch and y.shape[-1] == width:
                            return None, int(y.shape[1])
                    return (
                        f"{path}: got {tuple(x.shape)}, expected [batch, pos, {width}] (batch {batch}) "
                        "or a shape the adapter's ModelIO.layout folds onto it"
                    ), 0

                visits.append(Visit(k, layer, where, path, reader=check))
                stream_of.append(sname)
    (_, reads), = model.trace_jobs([(inputs, visits)], readout=True)
    problems = [reads[i][0] for i in sorted(reads) if reads[i][0] is not None]
    for sname in model.streams:  # group positions must fall inside the widest value of their stream
        widest = max((reads[i][1] for i in range(len(visits)) if stream_of[i] == sname), default=0)
        for group, pos in inputs.positions.get(sname, {}).items():
            if pos.numel() and (int(pos.min()) < 0 or int(pos.max()) >= widest):
                problems.append(
                    f"group {group!r} of stream {sname!r} has positions in [{int(pos.min())}, {int(pos.max())}] "
                    f"but the stream's values hold {widest} positions; fix the I/O's group positions"
                )
    if problems:
        raise AdapterError(
            f"adapter {model.adapter.name!r} does not fit {type(model.module).__name__}: "
            + "; ".join(problems[:4])
        )
