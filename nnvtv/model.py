"""``nnvtv.Model``: an nnsight-wrapped network plus the adapter that describes it.

>>> model = nnvtv.wrap(hf_model, tokenizer)            # adapter picked from the registry
>>> space = model.sites("head", groups=["last"])       # SiteSpace over every head
>>> out = model.run(["France -> Paris ; Spain ->"], patch=some_patch)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import nnsight
import torch
from nnsight import NNsight

from nnvtv import _trace
from nnvtv.adapter import (
    AdapterSpec,
    ModelIO,
    StreamInfo,
    config_value,
    find_adapter,
    make_io,
    resolve_path,
)
from nnvtv.errors import (
    AdapterError,
    ConfigError,
    DTypeMismatchError,
    ShapeMismatchError,
    SiteError,
)
from nnvtv.inputs import ModelInputs
from nnvtv.sites import Site, SiteSpace

__all__ = ["Model", "wrap"]


class Model:
    """A wrapped model: sizes per stream, token groups, site spaces, and patched runs.

    Attributes:
        module: the underlying ``torch.nn.Module`` (eval mode).
        nnsight: the nnsight wrapper around it, for power users.
        adapter: the :class:`~nnvtv.adapter.AdapterSpec` in use.
        io: the adapter's :class:`~nnvtv.adapter.ModelIO` (builds inputs, reads outputs).
        streams: ``{stream: StreamInfo}`` in forward order.
        name: a display name (shipped models use their catalogue name).
        meta: free-form metadata (e.g. a prompt format for text models).
        remote: ``False`` (local traces), ``True`` (every trace runs on NDIF) or ``"local"``
            (nnsight's local emulation of the remote path); see :mod:`nnvtv.remote`.
        remote_requests: remote requests sent so far (one per :meth:`trace_jobs` call).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        adapter: AdapterSpec,
        io: ModelIO,
        *,
        nnsight_model: Any = None,
        name: str | None = None,
        meta: Mapping[str, Any] | None = None,
        remote: bool | str = False,
    ) -> None:
        self.module = module
        self.adapter = adapter
        self.io = io
        self.nnsight = nnsight_model if nnsight_model is not None else NNsight(module)
        self.name = name or type(module).__name__
        self.meta: dict[str, Any] = dict(meta or {})
        if remote:
            from nnvtv import remote as _remote

            _remote.check_wrapper(self.nnsight, remote)
        self.remote: bool | str = remote
        self.remote_requests = 0
        self.remote_batches = 16  # mean-collection batches per remote request
        self.streams: dict[str, StreamInfo] = self._resolve_streams()
        self._fingerprint: str | None = None

    # ------------------------------------------------------------------ structure
    def _resolve_streams(self) -> dict[str, StreamInfo]:
        cfg = getattr(self.module, "config", None)
        groups = self.io.groups()
        out: dict[str, StreamInfo] = {}
        a = self.adapter.name
        for spec in self.adapter.streams:
            n_layers = config_value(cfg, spec.n_layers, adapter=a, field="n_layers")
            n_heads = config_value(cfg, spec.n_heads, adapter=a, field="n_heads")
            d_model = config_value(cfg, spec.d_model, adapter=a, field="d_model")
            head_dim = d_model // n_heads
            if spec.head_dim and any(getattr(cfg, k, None) is not None for k in spec.head_dim):
                head_dim = config_value(cfg, spec.head_dim, adapter=a, field="head_dim")
            blocks = tuple(resolve_path(self.module, spec.block, i, adapter=a, field="block") for i in range(n_layers))
            attn = tuple(resolve_path(self.module, spec.attn_out, i, adapter=a, field="attn_out") for i in range(n_layers))
            width = _in_features(self.module.get_submodule(attn[0]))
            if width is not None and width != n_heads * head_dim:
                raise AdapterError(
                    f"adapter {a!r}: {attn[0]} takes {width} features but n_heads*head_dim = "
                    f"{n_heads}*{head_dim} = {n_heads * head_dim}; fix the 'n_heads'/'head_dim' keys"
                )
            if spec.name not in groups:
                raise AdapterError(f"adapter {a!r}: its I/O defines no token groups for stream {spec.name!r}")
            out[spec.name] = StreamInfo(
                name=spec.name,
                n_layers=n_layers,
                n_heads=n_heads,
                head_dim=head_dim,
                d_model=d_model,
                groups=tuple(groups[spec.name]),
                block_paths=blocks,
                attn_out_paths=attn,
            )
        return out

    def stream(self, name: str = "") -> StreamInfo:
        """Sizes of one stream (``""`` for single-stack models, ``"enc"``/``"dec"`` otherwise)."""
        if name not in self.streams:
            raise SiteError(f"model {self.name!r} has no stream {name!r}; streams: {list(self.streams)}")
        return self.streams[name]

    def _only_stream(self, attr: str) -> int:
        if len(self.streams) != 1:
            per = {k: getattr(v, attr) for k, v in self.streams.items()}
            raise ConfigError(f"{self.name} has several streams, {attr} per stream is {per}; use model.stream(name).{attr}")
        return getattr(next(iter(self.streams.values())), attr)

    @property
    def n_layers(self) -> int:
        return self._only_stream("n_layers")

    @property
    def n_heads(self) -> int:
        return self._only_stream("n_heads")

    @property
    def head_dim(self) -> int:
        return self._only_stream("head_dim")

    @property
    def d_model(self) -> int:
        return self._only_stream("d_model")

    @property
    def groups(self) -> dict[str, tuple[str, ...]]:
        """``{stream: (group, ...)}``."""
        return {k: v.groups for k, v in self.streams.items()}

    def sites(
        self,
        kind: str = "head",
        *,
        layers: Iterable[int] | None = None,
        groups: Iterable[str] | None = None,
        stream: str | Iterable[str] | None = None,
    ) -> SiteSpace:
        """Ordered site space: streams in forward order, then layer, head, group.

        Args:
            kind: ``"head"`` (per-head outputs) or ``"layer"`` (residual stream).
            layers: layer indices (negative counts from the end); default all.
            groups: group names; default every group of each stream.
            stream: one stream name or several; default all.
        """
        if kind not in ("head", "layer"):
            raise ConfigError(f"kind must be 'head' or 'layer', got {kind!r}")
        names = list(self.streams) if stream is None else [stream] if isinstance(stream, str) else list(stream)
        want_groups = None if groups is None else list(groups)
        out: list[Site] = []
        for s in names:
            info = self.stream(s)
            ls = range(info.n_layers) if layers is None else [self._layer_index(info, i) for i in layers]
            gs = info.groups if want_groups is None else [g for g in want_groups if g in info.groups]
            if want_groups is not None:
                unknown = [g for g in want_groups if all(g not in i.groups for i in self.streams.values())]
                if unknown:
                    raise SiteError(f"unknown group(s) {unknown}; groups per stream: {self.groups}")
            heads: list[int | None] = list(range(info.n_heads)) if kind == "head" else [None]
            out.extend(Site(layer, h, g, s) for layer in ls for h in heads for g in gs)
        return SiteSpace(out)

    @staticmethod
    def _layer_index(info: StreamInfo, i: int) -> int:
        j = i + info.n_layers if i < 0 else i
        if not 0 <= j < info.n_layers:
            raise SiteError(f"layer {i} out of range for stream {info.name!r} with {info.n_layers} layers")
        return j

    def check_site(self, site: Site) -> StreamInfo:
        """Raise :class:`SiteError` unless ``site`` exists in this model."""
        if site.stream not in self.streams:
            raise SiteError(f"site {site}: model {self.name!r} has no stream {site.stream!r}; streams: {list(self.streams)}")
        info = self.streams[site.stream]
        if not 0 <= site.layer < info.n_layers:
            raise SiteError(f"site {site}: layer {site.layer} out of range [0, {info.n_layers}) for stream {site.stream!r}")
        if site.head is not None and not 0 <= site.head < info.n_heads:
            raise SiteError(f"site {site}: head {site.head} out of range [0, {info.n_heads})")
        if site.group not in info.groups:
            raise SiteError(f"site {site}: unknown group {site.group!r}; stream {site.stream!r} has {list(info.groups)}")
        return info

    def site_width(self, site: Site) -> int:
        info = self.check_site(site)
        return info.d_model if site.head is None else info.head_dim

    def site_path(self, site: Site) -> str:
        info = self.check_site(site)
        return info.block_paths[site.layer] if site.head is None else info.attn_out_paths[site.layer]

    # ------------------------------------------------------------------ inputs and runs
    def inputs(self, data: Any) -> ModelInputs:
        """Build :class:`ModelInputs` from prompts with the adapter's I/O."""
        return data if isinstance(data, ModelInputs) else self.io.build(data)

    def visits(self, sites: Iterable[Site]) -> dict[tuple[str, int, str], _trace.Visit]:
        """One empty :class:`_trace.Visit` per module the ``sites`` touch."""
        order = {name: i for i, name in enumerate(self.streams)}
        out: dict[tuple[str, int, str], _trace.Visit] = {}
        for s in sites:
            where = _trace.where_of(s)
            key = (s.stream, s.layer, where)
            if key not in out:
                path = self.site_path(s)  # validate first: SiteError, not a bare KeyError
                out[key] = _trace.Visit(order[s.stream], s.layer, where, path)
        return out

    def trace_visits(self, inputs: ModelInputs, visits: Iterable[_trace.Visit], *, readout: bool = True) -> Any:
        """Run one traced forward executing ``visits``; return the readout (or raw output)."""
        vs = list(visits)
        return self.trace_jobs([(inputs, vs)], readout=readout)[0][0]

    def trace_jobs(
        self,
        jobs: Iterable[tuple[ModelInputs, list[_trace.Visit]]],
        *,
        readout: bool = True,
        output: bool = True,
    ) -> list[tuple[Any, dict[int, Any]]]:
        """One traced forward per ``(inputs, visits)`` job: ``[(readout or output, reads), ...]``.

        ``reads[i]`` is what the reader of ``visits[i]`` returned; with ``output=False`` the
        first element is ``None`` (nothing but the reads comes back). On a remote model
        (``remote=True`` or ``"local"``) all jobs go to the server as ONE request (an nnsight
        session), counted in :attr:`remote_requests`.
        """
        jobs = [(inputs, list(visits)) for inputs, visits in jobs]
        heads = [info.n_heads for info in self.streams.values()]
        root = self.nnsight
        if not self.remote:
            read = self.io.readout if readout else None
            return _trace.run_jobs(root, jobs, heads, read, output)
        from nnvtv import remote as _remote

        read = _remote.shippable_readout(self.io) if readout else None
        self.remote_requests += 1
        with _remote.errors_as_remote_error(self):
            with root.session(remote=self.remote):
                results = _trace.run_jobs(root, jobs, heads, read, output)
                results = nnsight.save(results)
        return results

    def run(self, data: Any, patch: Any = None, *, readout: bool = False) -> Any:
        """Forward ``data`` (prompts or :class:`ModelInputs`), optionally with a :class:`~nnvtv.Patch`.

        Returns the model's own output (e.g. a ``CausalLMOutput``), or with
        ``readout=True`` what the adapter reads from it (text: next-token logits at the
        ``last`` token, ``[batch, vocab]``). The model is never left patched.
        """
        inputs = self.inputs(data)
        visits: dict[tuple[str, int, str], _trace.Visit] = {}
        if patch is not None:
            visits = self.patch_visits(patch, inputs)
        return self.trace_visits(inputs, visits.values(), readout=readout)

    def patch_visits(self, patch: Any, inputs: ModelInputs) -> dict[tuple[str, int, str], _trace.Visit]:
        """Validate ``patch`` against this model and ``inputs`` and turn it into visits."""
        from nnvtv.patching import Patch

        if not isinstance(patch, Patch):
            raise ConfigError(f"patch must be an nnvtv.Patch, got {type(patch).__name__}")
        visits = self.visits(patch.values)
        for site, value in patch.values.items():
            self.check_value(site, value, inputs)
        for (key, group), items in _trace.group_sites(patch.values).items():
            values = torch.stack([patch.values[s] for _, s in items], dim=1)  # [P, k, width]
            visits[key].edits.append(
                _trace.Edit(inputs.group_positions(key[0], group), _trace.head_index(items), values, patch.mode)
            )
        return visits

    def check_value(self, site: Site, value: torch.Tensor, inputs: ModelInputs | None = None) -> None:
        """Raise unless ``value`` fits ``site``: ``[positions_in_group, width]``, floating point."""
        width = self.site_width(site)
        if not isinstance(value, torch.Tensor):
            raise DTypeMismatchError(f"value for site {site} must be a torch.Tensor, got {type(value).__name__}")
        if not value.is_floating_point():
            raise DTypeMismatchError(f"value for site {site} must be floating point, got {value.dtype}")
        if inputs is not None:
            p = inputs.group_size(site.stream, site.group)
            expected: tuple[int | str, ...] = (p, width)
            ok = tuple(value.shape) == (p, width)
        else:
            expected = ("positions_in_group", width)
            ok = value.dim() == 2 and value.shape[1] == width
        if not ok:
            kind = "head_dim" if site.head is not None else "d_model"
            raise ShapeMismatchError(
                f"value for site {site} has shape {tuple(value.shape)}, expected {expected} "
                f"([positions_in_group, {kind}])"
            )

    # ------------------------------------------------------------------ identity
    @property
    def fingerprint(self) -> str:
        """Stable id of architecture + weights (config, parameter shapes, a sample of values)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(self.adapter.name.encode())
            cfg = getattr(self.module, "config", None)
            if cfg is not None and hasattr(cfg, "to_dict"):
                d = {k: v for k, v in cfg.to_dict().items() if not k.startswith("_") and k not in _VOLATILE_CONFIG}
                h.update(json.dumps(d, sort_keys=True, default=str).encode())
            if self.remote is True:  # the weights live on the server: its hub id stands for them
                h.update(str(getattr(cfg, "_name_or_path", "")).encode())
            for name, p in self.module.state_dict().items():
                h.update(f"{name}:{tuple(p.shape)}".encode())
                if p.numel() and p.device.type != "meta":  # a remote model's skeleton has no values
                    sample = p.detach().reshape(-1)[:: max(1, p.numel() // 64)][:64]
                    h.update(sample.to(torch.float64).cpu().numpy().tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        """Plain-dict summary (for JSON outputs and reports)."""
        return {
            "name": self.name,
            "adapter": self.adapter.name,
            "class": type(self.module).__name__,
            "fingerprint": self.fingerprint,
            "streams": {
                k: {"n_layers": v.n_layers, "n_heads": v.n_heads, "head_dim": v.head_dim, "d_model": v.d_model, "groups": list(v.groups)}
                for k, v in self.streams.items()
            },
        }

    def __repr__(self) -> str:
        parts = [
            f"{k or 'main'}: {v.n_layers} layers x {v.n_heads} heads (head_dim {v.head_dim}, d_model {v.d_model}), groups {list(v.groups)}"
            for k, v in self.streams.items()
        ]
        return f"nnvtv.Model({self.name!r}, adapter={self.adapter.name!r}; " + "; ".join(parts) + ")"


_VOLATILE_CONFIG = {"transformers_version", "torch_dtype", "dtype", "name_or_path", "architectures", "use_cache"}


def _in_features(module: torch.nn.Module) -> int | None:
    if hasattr(module, "in_features"):
        return int(module.in_features)
    w = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and w is not None:  # GPT-2's transposed linear
        return int(w.shape[0])
    return None


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
            run here (tests, tutorials). See :mod:`nnvtv.remote`.
        **io_options: options of the adapter's I/O (unknown names raise ``ConfigError``).
    """
    nn_model: Any = None
    if remote:
        from nnvtv import remote as _remote

        model, nn_model, tokenizer = _remote.remote_wrapper(model, tokenizer, remote)
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
    """One tiny traced forward that checks every head and block value against the table."""
    inputs = model.io.example(2)
    visits = []
    for sname, info in model.streams.items():
        for layer in range(info.n_layers):
            for where, path, width in (
                (_trace.ATTN_OUT, info.attn_out_paths[layer], info.n_heads * info.head_dim),
                (_trace.BLOCK, info.block_paths[layer], info.d_model),
            ):
                def check(x: torch.Tensor, path: str = path, width: int = width, batch: int = inputs.batch_size) -> tuple[str | None, int]:
                    # a sequence [batch, pos, width] or a grid [copies * batch, *cells, width];
                    # returns (problem, positions in the folded value)
                    ok = x.dim() >= 3 and x.shape[-1] == width and x.shape[0] % batch == 0
                    if ok:
                        return None, (x.shape[0] // batch) * (x.numel() // (x.shape[0] * width))
                    return (
                        f"{path}: got {tuple(x.shape)}, expected [batch, pos, {width}] "
                        f"or [copies * batch, *cells, {width}] (batch {batch})"
                    ), 0
                visits.append(_trace.Visit(list(model.streams).index(sname), layer, where, path, reader=check))
    (_, reads), = model.trace_jobs([(inputs, visits)], readout=True)
    problems = [reads[i][0] for i in sorted(reads) if reads[i][0] is not None]
    # group positions must fall inside the widest value of their stream
    for sname in model.streams:
        widest = max((reads[i][1] for i, v in enumerate(visits) if i in reads and list(model.streams)[v.stream_index] == sname), default=0)
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
