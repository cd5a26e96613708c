"""``nnvtv.Model``: an nnsight-wrapped network plus the adapter that describes it.

>>> model = nnvtv.wrap(hf_model, tokenizer)            # adapter picked from the registry
>>> space = model.sites("head", groups=["last"])       # SiteSpace over every head
>>> out = model.run(["France -> Paris ; Spain ->"], patch=some_patch)

A :class:`Model` holds the structure (streams, sizes, module paths, token groups) and the
site spaces; a tracing backend (:mod:`nnvtv.tracing`) runs its forwards, here or on NDIF;
:mod:`nnvtv.patching` turns patches into edits; :mod:`nnvtv.wrapping` builds and checks it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from nnsight import NNsight

from nnvtv.adapter import AdapterSpec, StreamInfo, config_value, resolve_path
from nnvtv.errors import AdapterError, ConfigError, SiteError
from nnvtv.fingerprint import fingerprint_of, legacy_fingerprint_of
from nnvtv.inputs import ModelInputs
from nnvtv.model_io import ModelIO
from nnvtv.patching import Patch, patch_visits
from nnvtv.sites import Site, SiteSpace
from nnvtv.tracing import ATTN_OUT, Job, LocalBackend, Result, Visit, group_sites, where_of
from nnvtv.tracing.remote import RemoteBackend, check_wrapper

__all__ = ["Model"]


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
        backend: where traces run (:class:`~nnvtv.tracing.LocalBackend` or
            :class:`~nnvtv.tracing.remote.RemoteBackend`).
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
            check_wrapper(self.nnsight, remote)
            self.backend: LocalBackend | RemoteBackend = RemoteBackend(remote, self.name)
        else:
            self.backend = LocalBackend()
        self.remote_batches = 16  # mean-collection batches per remote request
        self.streams: dict[str, StreamInfo] = self._resolve_streams()
        self._fingerprint: str | None = None
        self._legacy_fingerprint: str | None = None

    @property
    def remote(self) -> bool | str:
        """``False`` (local traces), ``True`` (every trace runs on NDIF) or ``"local"``
        (nnsight's local emulation of the remote path); see :mod:`nnvtv.tracing.remote`."""
        return self.backend.remote

    @property
    def remote_requests(self) -> int:
        """Remote requests sent so far (one per :meth:`trace_jobs` call on a remote model)."""
        return self.backend.requests

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
            width = getattr(self.module.get_submodule(attn[0]), "in_features", None)
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

    # ------------------------------------------------------------------ where it runs
    @property
    def device(self) -> torch.device | None:
        """Device of the first parameter (where inputs go); ``None`` for a remote skeleton."""
        for p in self.module.parameters():
            return None if p.device.type == "meta" else p.device
        return None

    @property
    def dtype(self) -> torch.dtype | None:
        """Dtype of the first floating-point parameter."""
        for p in self.module.parameters():
            if p.is_floating_point():
                return p.dtype
        return None

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Model:
        """Move the module (in place) to ``device`` and/or cast it to ``dtype``; returns ``self``.

        Remote models stay where they are (their weights live on the server).
        """
        if self.remote or (device is None and dtype is None):
            return self
        self.module.to(device=device, dtype=dtype)
        self._fingerprint = self._legacy_fingerprint = None  # (bfloat16 keeps it, float16 changes it)
        return self

    # ------------------------------------------------------------------ inputs and runs
    def inputs(self, data: Any) -> ModelInputs:
        """Build :class:`ModelInputs` from prompts with the adapter's I/O, on the model's device."""
        inputs = data if isinstance(data, ModelInputs) else self.io.build(data)
        return inputs if self.remote else self.io.place(inputs)

    def visits(self, sites: Iterable[Site]) -> dict[tuple[str, int, str], Visit]:
        """One empty :class:`~nnvtv.tracing.Visit` per module the ``sites`` touch, keyed
        ``(stream, layer, where)``."""
        order = {name: i for i, name in enumerate(self.streams)}
        out: dict[tuple[str, int, str], Visit] = {}
        for s in sites:
            where = where_of(s)
            key = (s.stream, s.layer, where)
            if key not in out:
                path = self.site_path(s)  # validate first: SiteError, not a bare KeyError
                out[key] = Visit(order[s.stream], s.layer, where, path)
        return out

    def trace_jobs(
        self,
        jobs: Iterable[Job],
        *,
        readout: bool = True,
        output: bool = True,
        grad: bool = False,
    ) -> list[Result]:
        """One traced forward per ``(inputs, visits)`` job: ``[(readout or output, reads), ...]``.

        ``reads[i]`` is what the reader of ``visits[i]`` returned; with ``output=False`` the
        first element is ``None`` (nothing but the reads comes back). ``grad=True`` keeps the
        autograd graph (training, gradients). On a remote model all jobs go to the server as
        ONE request (an nnsight session), counted in :attr:`remote_requests`.
        """
        jobs = [(inputs, list(visits)) for inputs, visits in jobs]
        heads = [info.n_heads for info in self.streams.values()]
        return self.backend.run(self.nnsight, self.io, jobs, heads, readout=readout, output=output, grad=grad)

    def trace_visits(self, inputs: ModelInputs, visits: Iterable[Visit], *, readout: bool = True, grad: bool = False) -> Any:
        """Run one traced forward executing ``visits``; return the readout (or raw output)."""
        return self.trace_jobs([(inputs, list(visits))], readout=readout, grad=grad)[0][0]

    def run(self, data: Any, patch: Patch | None = None, *, readout: bool = False, grad: bool = False) -> Any:
        """Forward ``data`` (prompts or :class:`ModelInputs`), optionally with a :class:`~nnvtv.Patch`.

        Returns the model's own output (e.g. a ``CausalLMOutput``), or with
        ``readout=True`` what the adapter reads from it (text: next-token logits at the
        ``last`` token, ``[batch, vocab]``). ``grad=True`` runs with autograd on, so a loss of
        the result can be backpropagated into the weights and into patch values that require
        grad. The model is never left patched.
        """
        return self.capture(data, (), patch=patch, readout=readout, grad=grad)[0]

    def capture(
        self,
        data: Any,
        sites: Iterable[Site],
        *,
        patch: Patch | None = None,
        readout: bool = False,
        grad: bool = False,
    ) -> tuple[Any, dict[Site, torch.Tensor]]:
        """One forward that also returns the activations of ``sites``.

        Returns:
            ``(output, {site: FloatTensor [batch, positions_in_group, width]})``: the output as
            :meth:`run` gives it, and each site's value as the forward computed it (before
            ``patch`` edits that site). With ``grad=True`` both keep their autograd graph.

        The trace returns each touched module's whole value (folded to ``[batch, pos, width]``)
        and the group positions are gathered after the forward, so a loss on the captured values
        backpropagates exactly as through a hand-written forward that slices its activations
        afterwards (same operations, same order of gradient accumulation).
        """
        inputs = self.inputs(data)
        visits = {} if patch is None else patch_visits(self, patch, inputs)
        wanted = list(sites)
        for key, v in self.visits(wanted).items():
            visits.setdefault(key, v)
        groups: dict[tuple[str, int, str], dict[str, torch.Tensor]] = {}
        for (key, group), _ in group_sites(wanted).items():
            groups.setdefault(key, {})[group] = inputs.group_positions(key[0], group)
        for key, positions in groups.items():
            visits[key].reader = _folding_reader(positions)
        keys = list(visits)
        out, reads = self.trace_jobs([(inputs, [visits[k] for k in keys])], readout=readout, grad=grad)[0]
        values: dict[Site, torch.Tensor] = {}
        for i, key in enumerate(keys):
            if key not in groups:
                continue
            folded, positions = reads[i]  # [batch, pos, width], {group: LongTensor [batch, P]}
            n_heads = self.streams[key[0]].n_heads if key[2] == ATTN_OUT else 1
            b, t, w = folded.shape
            x4 = folded.view(b, t, n_heads, w // n_heads)
            rows = torch.arange(b, device=folded.device)[:, None]
            for group, pos in positions.items():
                block = x4[rows, pos.to(folded.device)]  # [batch, P, heads, width]
                for s in wanted:
                    if (s.stream, s.layer, where_of(s)) == key and s.group == group:
                        values[s] = block[:, :, 0 if s.head is None else s.head]
        return out, {s: values[s] for s in wanted}

    # ------------------------------------------------------------------ identity
    @property
    def fingerprint(self) -> str:
        """One id for this checkpoint, the same locally, on NDIF, in float32 or bfloat16 (see
        :mod:`nnvtv.fingerprint`; a remote model reads its weight sample on the server with one
        request, the first time)."""
        if self._fingerprint is None:
            samples = None
            if self.remote is True:
                named = list(self.module.named_parameters())
                samples = self.backend.parameter_samples(
                    self.nnsight, self.inputs(self.io.example(1)), [n for n, _ in named], [p.numel() for _, p in named]
                )
            self._fingerprint = fingerprint_of(self.module, self.adapter.name, samples)
        return self._fingerprint

    def matches(self, fingerprint: str) -> bool:
        """Whether something recorded with ``fingerprint`` was made on this checkpoint (also
        accepts the fingerprint nnvtv gave before it was dtype- and location-independent)."""
        if fingerprint == self.fingerprint:
            return True
        if self.remote is True:
            return False
        if self._legacy_fingerprint is None:
            self._legacy_fingerprint = legacy_fingerprint_of(self.module, self.adapter.name) or ""
        return fingerprint == self._legacy_fingerprint

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

    def _repr_html_(self) -> str | None:
        """Jupyter: the streams as a table (layers, heads, widths, token groups), adapter, fingerprint."""
        from nnvtv.display_html import model_html

        return model_html(self)


def _folding_reader(positions: dict[str, torch.Tensor]) -> Any:
    """A reader returning the module value folded to ``[batch, pos, width]`` and the groups'
    positions as indices into it (gathered after the trace, see :meth:`Model.capture`)."""

    def reader(x: torch.Tensor, layout: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if layout is None:
            raise SiteError(f"cannot capture a value of shape {tuple(x.shape)}: the adapter cannot fold it onto [batch, pos, width]")
        return layout.fold(x), {g: layout.positions(p.to(x.device)) for g, p in positions.items()}

    return reader
