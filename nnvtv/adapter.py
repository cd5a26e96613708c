"""Adapter tables and the adapter registry.

An adapter says, as data, where a model family keeps what nnvtv patches (the pyvene
idea): for each stream, a path template to the transformer blocks and to the attention
output projection (whose *input* holds the per-head outputs, ``[batch, pos, n_heads *
head_dim]``), and the config keys that give ``n_layers``, ``n_heads``, ``d_model`` and
``head_dim``. Every path and key is a tuple of alternatives tried in order, so one entry
covers renames across library versions. The only code an adapter carries is its
:class:`ModelIO`: how prompts become :class:`~nnvtv.inputs.ModelInputs` (with group
positions) and how the output is read.

Adapters are found by walking the model's class MRO (so subclasses match), then by
``config.model_type``. Third-party packages register adapters through the entry-point
group ``nnvtv.adapters`` (each entry point loads an :class:`AdapterSpec` or a list of them)
or at run time with :func:`register_adapter`.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from nnvtv.errors import AdapterError, ConfigError, UnknownModelError
from nnvtv.inputs import ModelInputs

__all__ = [
    "StreamSpec",
    "AdapterSpec",
    "ModelIO",
    "SharedPrefix",
    "StreamInfo",
    "register_adapter",
    "find_adapter",
    "list_adapters",
    "config_value",
    "resolve_path",
]

ENTRY_POINT_GROUP = "nnvtv.adapters"


@dataclass(frozen=True)
class StreamSpec:
    """Where one stack of blocks lives. Paths are dotted, ``{i}`` is the layer index.

    Attributes:
        name: ``""`` for single-stack models, ``"enc"``/``"dec"`` for encoder-decoder ones.
        block: block module (its output is the residual stream, ``[batch, pos, d_model]``).
        attn_out: attention output projection (its input is ``[batch, pos, n_heads*head_dim]``).
        n_layers, n_heads, d_model: config keys (alternatives).
        head_dim: config keys; empty means ``d_model // n_heads``.
    """

    block: tuple[str, ...]
    attn_out: tuple[str, ...]
    n_layers: tuple[str, ...]
    n_heads: tuple[str, ...]
    d_model: tuple[str, ...]
    head_dim: tuple[str, ...] = ()
    name: str = ""


@dataclass(frozen=True)
class AdapterSpec:
    """One model family, as a table.

    Attributes:
        name: family name shown to users (``"gpt2"``, ``"llama"``, ``"vit_mae"`` ...).
        model_types: ``config.model_type`` values this entry serves.
        model_classes: class names matched anywhere in the model's MRO.
        streams: the stacks, in forward order.
        io: the :class:`ModelIO` subclass that builds inputs and reads outputs.
        io_options: default keyword options for ``io``.
    """

    name: str
    model_types: tuple[str, ...]
    streams: tuple[StreamSpec, ...]
    io: type[ModelIO]
    model_classes: tuple[str, ...] = ()
    io_options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class StreamInfo:
    """Resolved sizes and paths of one stream of a wrapped model."""

    name: str
    n_layers: int
    n_heads: int
    head_dim: int
    d_model: int
    groups: tuple[str, ...]
    block_paths: tuple[str, ...]
    attn_out_paths: tuple[str, ...]


@dataclass(frozen=True)
class SharedPrefix:
    """A batch split into a prefix no patch can change and a short step holding every patched position.

    Causal models let many candidate site sets share the prefix: it runs once, unpatched, and
    only the step (e.g. the last token, attending to the prefix's cached keys and values) is
    tiled per candidate. Same readout, far fewer FLOPs when prompts are long.

    Attributes:
        prefix: inputs of the one unpatched forward over the shared prefix (``N`` rows).
        step: ``(prefix_output, rows LongTensor[R]) -> ModelInputs`` for ``R`` rows, row ``r``
            continuing prefix row ``rows[r]``; its group positions index the step alone.
        row_bytes: ``prefix_output -> int``: memory one step row holds (its copy of the
            prefix state), used to bound chunk sizes.
    """

    prefix: ModelInputs
    step: Callable[[Any, torch.Tensor], ModelInputs]
    row_bytes: Callable[[Any], int]


class ModelIO(ABC):
    """The code part of an adapter: prompts -> :class:`ModelInputs`, output -> readout.

    Subclasses declare ``groups`` (per stream) and implement :meth:`build`,
    :meth:`readout` and :meth:`example`. Options are keyword-only ``__init__`` arguments;
    unknown options are rejected by :func:`make_io`, never silently ignored.
    """

    #: readout kind understood by tasks: "next_token" (logits [B, V]), "class_logits",
    #: "patches" (pixel or code predictions) ...
    readout_kind: ClassVar[str] = "raw"

    def __init__(self, module: torch.nn.Module, tokenizer: Any = None) -> None:
        self.module = module
        self.tokenizer = tokenizer

    @abstractmethod
    def groups(self) -> dict[str, tuple[str, ...]]:
        """``{stream: (group, ...)}`` of token groups this I/O marks in its inputs."""

    @abstractmethod
    def build(self, data: Any) -> ModelInputs:
        """Turn a batch of prompts (strings, images ...) into :class:`ModelInputs`."""

    @abstractmethod
    def readout(self, output: Any, inputs: ModelInputs) -> torch.Tensor:
        """Reduce the raw model output to what tasks score (computed inside the trace)."""

    @abstractmethod
    def example(self, batch_size: int = 2) -> ModelInputs:
        """A small valid batch, used to check the adapter when a model is wrapped."""

    def shared_prefix(self, inputs: ModelInputs, groups: Collection[tuple[str, str]]) -> SharedPrefix | None:
        """Split ``inputs`` for candidates that patch only ``groups`` (``(stream, group)`` pairs).

        Return ``None`` (the default) when the model cannot share work between candidates;
        :func:`nnvtv.run_masks` then tiles the whole batch.
        """
        return None


def make_io(io_cls: type[ModelIO], module: torch.nn.Module, tokenizer: Any, options: dict) -> ModelIO:
    """Construct ``io_cls`` with ``options``; unknown option names raise :class:`ConfigError`."""
    params = inspect.signature(io_cls.__init__).parameters
    allowed = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {unknown} for {io_cls.__name__}; valid options: {allowed or 'none'}"
        )
    return io_cls(module, tokenizer, **options)


# --------------------------------------------------------------------------- config values


def config_value(config: Any, keys: Sequence[str], *, adapter: str, field: str) -> int:
    """First of ``keys`` that ``config`` has (and is not ``None``), as an int."""
    for k in keys:
        v = getattr(config, k, None)
        if v is not None:
            return int(v)
    raise AdapterError(
        f"adapter {adapter!r}: none of the config keys {list(keys)} (field {field!r}) exist on "
        f"{type(config).__name__}; fix the adapter table's {field!r} entry"
    )


def resolve_path(module: torch.nn.Module, templates: Sequence[str], i: int, *, adapter: str, field: str) -> str:
    """First template (``{i}`` filled) naming an existing submodule of ``module``."""
    tried = []
    for t in templates:
        path = t.format(i=i)
        tried.append(path)
        try:
            module.get_submodule(path)
        except AttributeError:
            continue
        return path
    raise AdapterError(
        f"adapter {adapter!r}: no module at any of {tried} (field {field!r}) in "
        f"{type(module).__name__}; fix the adapter table's {field!r} entry"
    )


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, AdapterSpec] = {}
_ENTRY_POINTS_LOADED = False


def register_adapter(spec: AdapterSpec, *, override: bool = False) -> AdapterSpec:
    """Add ``spec`` to the registry (``override=True`` replaces an entry of the same name)."""
    if not isinstance(spec, AdapterSpec):
        raise AdapterError(f"register_adapter expects an AdapterSpec, got {type(spec).__name__}")
    if spec.name in _REGISTRY and not override and _REGISTRY[spec.name] != spec:
        raise AdapterError(
            f"an adapter named {spec.name!r} is already registered; pass override=True to replace it"
        )
    _REGISTRY[spec.name] = spec
    return spec


def _load_builtin() -> None:
    # importing the family modules registers their tables
    import nnvtv.adapters  # noqa: F401


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plug-in must not break nnvtv
            warnings.warn(f"nnvtv: could not load adapter entry point {ep.name!r}: {exc}", stacklevel=2)
            continue
        specs: Iterable[Any] = obj if isinstance(obj, list | tuple) else [obj]
        for spec in specs:
            if spec.name in _REGISTRY:
                warnings.warn(
                    f"nnvtv: entry point {ep.name!r} tries to replace built-in adapter "
                    f"{spec.name!r}; ignored (use register_adapter(..., override=True))",
                    stacklevel=2,
                )
                continue
            register_adapter(spec)


def list_adapters() -> list[AdapterSpec]:
    """Every registered adapter (built-ins and entry points)."""
    _load_builtin()
    _load_entry_points()
    return list(_REGISTRY.values())


def find_adapter(model: torch.nn.Module) -> AdapterSpec:
    """The adapter for ``model``: by class (MRO, most specific first), then ``config.model_type``."""
    specs = list_adapters()
    for cls in type(model).__mro__:
        for spec in specs:
            if cls.__name__ in spec.model_classes:
                return spec
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for spec in specs:
        if model_type is not None and model_type in spec.model_types:
            return spec
    families = sorted({t for s in specs for t in s.model_types})
    raise UnknownModelError(
        f"no nnvtv adapter for {type(model).__name__} (config.model_type={model_type!r}). "
        f"Supported families: {', '.join(families)}. To add one, build an "
        "nnvtv.adapter.AdapterSpec (paths of the blocks and attention output projection, "
        "config keys, a ModelIO) and call nnvtv.register_adapter(spec), or expose it from "
        f"your package under the entry-point group {ENTRY_POINT_GROUP!r}; "
        "or pass adapter=<spec> to nnvtv.wrap."
    )
