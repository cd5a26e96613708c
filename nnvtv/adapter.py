"""Adapter tables and the adapter registry.

An adapter says, as data, where a model family keeps what nnvtv patches (the pyvene
idea): for each stream, a path template to the transformer blocks and to the attention
output projection (whose *input* holds the per-head outputs, ``[batch, pos, n_heads *
head_dim]``), and the config keys that give ``n_layers``, ``n_heads``, ``d_model`` and
``head_dim``. Every path and key is a tuple of alternatives tried in order, so one entry
covers renames across library versions. The only code an adapter carries is its
:class:`ModelIO`: how prompts become :class:`~nnvtv.inputs.ModelInputs` (with group
positions) and how the output is read.

The :class:`ModelIO` is the one place a family's code lives: it builds inputs and group
positions, reads the output, says how a grid-shaped module value folds onto
``[batch, pos, width]`` (:meth:`ModelIO.layout`), and places inputs on the model's device
(:meth:`ModelIO.place`). The core only ever sees sequences.

Adapters are found by walking the model's class MRO (so subclasses match), then by
``config.model_type``. They live in the registry :data:`ADAPTERS` (the convention of
:mod:`nnvtv.registry`), filled from the entry-point group ``nnvtv.adapters``: nnvtv's own
families are registered there exactly like a third-party package's (each entry point loads
an :class:`AdapterSpec` or a list of them), or at run time with :func:`register_adapter`.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from nnvtv.errors import AdapterError, ConfigError, ShapeMismatchError, UnknownModelError
from nnvtv.inputs import ModelInputs
from nnvtv.registry import ENTRY_POINT_GROUP, Registry, deprecated_replace

__all__ = [
    "ADAPTERS",
    "ENTRY_POINT_GROUP",
    "StreamSpec",
    "AdapterSpec",
    "ModelIO",
    "ValueLayout",
    "SEQUENCE",
    "SharedPrefix",
    "StreamInfo",
    "register_adapter",
    "find_adapter",
    "list_adapters",
    "config_value",
    "resolve_path",
]


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


class ValueLayout:
    """How one module value maps onto the canonical ``[batch, pos, width]`` the core works in.

    The base class is the identity, for sequence models whose values already are
    ``[batch, pos, width]`` (:data:`SEQUENCE`). A family whose values are grids, or that
    stacks copies of the batch, returns its own subclass from :meth:`ModelIO.layout` (SegGPT:
    ``[copies * batch, H, W, width]``, see ``nnvtv.adapters.hf_seggpt``).
    """

    def fold(self, x: torch.Tensor) -> torch.Tensor:
        """The module value ``x`` as ``[batch, pos, width]``."""
        return x

    def unfold(self, y: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`fold`: ``[batch, pos, width]`` back to the module value's shape."""
        return y

    def positions(self, positions: torch.Tensor) -> torch.Tensor:
        """Group positions ``LongTensor [batch, P]`` as indices into the folded value."""
        return positions


#: the identity layout of ``[batch, pos, width]`` sequences
SEQUENCE = ValueLayout()


class ModelIO(ABC):
    """The code part of an adapter: prompts -> :class:`ModelInputs`, output -> readout.

    Subclasses declare ``modality`` and ``groups`` (per stream) and implement :meth:`build`,
    :meth:`readout` and :meth:`example`; grid-shaped models override :meth:`layout`. Options
    are keyword-only ``__init__`` arguments; unknown options are rejected by :func:`make_io`,
    never silently ignored.
    """

    #: what the model reads: ``"text"`` (token ids) or ``"image"`` (pixels, canvases); tasks
    #: of another modality are refused before any forward pass
    modality: ClassVar[str] = ""

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

    def layout(self, x: torch.Tensor, batch: int) -> ValueLayout:
        """How a site's module value ``x`` folds onto ``[batch, pos, width]`` for an input batch of ``batch``.

        Sequence models (the default) need nothing: ``x`` must already be ``[batch, pos, width]``.

        Raises:
            ShapeMismatchError: ``x`` has a shape this I/O cannot fold.
        """
        if x.dim() != 3 or x.shape[0] != batch:
            raise ShapeMismatchError(
                f"a site value must be [batch, pos, width] for a batch of {batch}; got {tuple(x.shape)} "
                f"(a family with grid-shaped values overrides ModelIO.layout)"
            )
        return SEQUENCE

    def place(self, inputs: ModelInputs) -> ModelInputs:
        """``inputs`` on the device the model's forward expects (that of its first parameter)."""
        device = _input_device(self.module)
        return inputs if device is None else inputs.to(device)

    def shared_prefix(self, inputs: ModelInputs, groups: Collection[tuple[str, str]]) -> SharedPrefix | None:
        """Split ``inputs`` for candidates that patch only ``groups`` (``(stream, group)`` pairs).

        Return ``None`` (the default) when the model cannot share work between candidates;
        :func:`nnvtv.run_masks` then tiles the whole batch.
        """
        return None


def _input_device(module: torch.nn.Module | None) -> torch.device | None:
    if module is None:
        return None
    for p in module.parameters():
        return None if p.device.type == "meta" else p.device
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

#: every adapter, by family name (see :mod:`nnvtv.registry` for the convention)
ADAPTERS: Registry[AdapterSpec] = Registry(
    "adapter",
    AdapterSpec,
    UnknownModelError,
    how_to_add=(
        "To add a family, build an nnvtv.AdapterSpec (paths of the blocks and attention output "
        "projection, config keys, a ModelIO) and call nnvtv.register_adapter(spec), or expose it "
        f"from your package under the entry-point group {ENTRY_POINT_GROUP!r}."
    ),
)


def register_adapter(spec: AdapterSpec, *, replace: bool = False, override: bool | None = None) -> AdapterSpec:
    """Add ``spec`` to :data:`ADAPTERS` (``replace=True`` replaces an adapter of the same name).

    ``override=`` is the deprecated name of ``replace=``.
    """
    replace = deprecated_replace(replace, "override", override, "register_adapter")
    if not isinstance(spec, AdapterSpec):
        raise AdapterError(f"register_adapter expects an AdapterSpec, got {type(spec).__name__}")
    return ADAPTERS.register(spec, replace=replace)


def list_adapters() -> list[AdapterSpec]:
    """Every registered adapter (nnvtv's own and plug-ins)."""
    return ADAPTERS.values()


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
        f"Supported families: {', '.join(families)}. {ADAPTERS.how_to_add} "
        "Or pass adapter=<spec> to nnvtv.wrap."
    )
