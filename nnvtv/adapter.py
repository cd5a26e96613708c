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

Families by structure. A model that no table row matches is offered to each
:class:`AdapterDiscovery` in :data:`DISCOVERIES` (same convention, filled from the same
entry-point group): a rule that reads the module tree and the config and returns the row
it infers (nnvtv's own rules, for Hugging Face decoders and ViT-style classifiers, live in
``nnvtv.adapters.discover``). The table always wins; an inferred row is announced once per
family on the ``nnvtv`` logger, with the code that makes it a table row; ``nnvtv.wrap``
checks it with the same validation forward as any row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nnvtv.errors import (
    AdapterError,
    NnvtvError,
    UnknownModelError,
)
from nnvtv.model_io import SEQUENCE, ModelIO, SharedPrefix, ValueLayout, make_io
from nnvtv.registry import ENTRY_POINT_GROUP, Registry, deprecated_replace

__all__ = [
    "ADAPTERS",
    "make_io",
    "DISCOVERIES",
    "AdapterDiscovery",
    "ENTRY_POINT_GROUP",
    "StreamSpec",
    "AdapterSpec",
    "ModelIO",
    "ValueLayout",
    "SEQUENCE",
    "SharedPrefix",
    "StreamInfo",
    "register_adapter",
    "register_discovery",
    "find_adapter",
    "list_adapters",
    "list_discoveries",
    "spec_source",
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
class AdapterDiscovery:
    """A rule that infers the table row of a model no row matches, from its structure.

    :func:`find_adapter` tries the table first (class MRO, then ``config.model_type``), then
    each registered discovery in order; the first :class:`AdapterSpec` returned is used.

    Attributes:
        name: shown in messages and in the log line announcing an inferred row.
        discover: ``model -> AdapterSpec | None``. ``None``: the rule does not apply to this
            kind of model (another rule may). It raises an :class:`~nnvtv.errors.NnvtvError`
            (usually :class:`~nnvtv.errors.AdapterError`) when it applies but cannot find the
            structure without ambiguity; the message says what it tried and found, and
            :func:`find_adapter` passes it on in its :class:`~nnvtv.errors.UnknownModelError`.
        hint: where a permanent table row for such a model belongs (added to the log line).
    """

    name: str
    discover: Callable[[torch.nn.Module], AdapterSpec | None]
    hint: str = ""


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


#: structural discoveries, tried in order when no table row matches (same convention)
DISCOVERIES: Registry[AdapterDiscovery] = Registry(
    "adapter discovery",
    AdapterDiscovery,
    UnknownModelError,
    how_to_add=(
        "To add one, build an nnvtv.adapter.AdapterDiscovery(name, discover) and call "
        "nnvtv.adapter.register_discovery(it), or expose it from your package under the "
        f"entry-point group {ENTRY_POINT_GROUP!r}."
    ),
)


def register_discovery(discovery: AdapterDiscovery, *, replace: bool = False) -> AdapterDiscovery:
    """Add ``discovery`` to :data:`DISCOVERIES` (``replace=True`` replaces one of the same name)."""
    if not isinstance(discovery, AdapterDiscovery):
        raise AdapterError(
            f"register_discovery expects an AdapterDiscovery, got {type(discovery).__name__}"
        )
    return DISCOVERIES.register(discovery, replace=replace)


def list_discoveries() -> list[AdapterDiscovery]:
    """Every registered structural discovery, in the order :func:`find_adapter` tries them."""
    return DISCOVERIES.values()


#: the ``nnvtv`` logger (inferred rows are announced there)
LOGGER = logging.getLogger("nnvtv")
#: ``(discovery name, spec)`` pairs already announced: one log line per inferred family
_ANNOUNCED: set[tuple[str, AdapterSpec]] = set()


def find_adapter(model: torch.nn.Module) -> AdapterSpec:
    """The adapter for ``model``.

    By class (MRO, most specific first), then ``config.model_type``; when no table row
    matches, each :class:`AdapterDiscovery` in :data:`DISCOVERIES` may infer one from the
    model's structure (announced once per family on the ``nnvtv`` logger).

    Raises:
        UnknownModelError: no row matches and no discovery infers one; the message lists
            the families in the table and what each discovery tried.
    """
    specs = list_adapters()
    for cls in type(model).__mro__:
        for spec in specs:
            if cls.__name__ in spec.model_classes:
                return spec
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for spec in specs:
        if model_type is not None and model_type in spec.model_types:
            return spec
    failures: list[str] = []
    discoveries = list_discoveries()
    for discovery in discoveries:
        try:
            found = discovery.discover(model)
        except NnvtvError as exc:
            failures.append(f"[{discovery.name}] {exc}")
            continue
        except Exception as exc:  # a broken discovery plug-in must not hide the others
            failures.append(f"[{discovery.name}] failed with {type(exc).__name__}: {exc}")
            continue
        if found is None:
            continue
        if not isinstance(found, AdapterSpec):
            failures.append(
                f"[{discovery.name}] returned a {type(found).__name__}, expected an AdapterSpec or None"
            )
            continue
        _announce(discovery, model, found)
        return found
    families = sorted({t for s in specs for t in s.model_types})
    if failures:
        tried = "Structural discovery could not infer a row: " + " ".join(failures) + " "
    elif discoveries:
        names = ", ".join(d.name for d in discoveries)
        tried = f"No structural discovery applies to it (tried {names}). "
    else:
        tried = ""
    raise UnknownModelError(
        f"no nnvtv adapter for {type(model).__name__} (config.model_type={model_type!r}): no table "
        f"row matches its class or model_type. {tried}Supported families: {', '.join(families)}. "
        f"{ADAPTERS.how_to_add} Or pass adapter=<spec> to nnvtv.wrap."
    )


def _announce(discovery: AdapterDiscovery, model: torch.nn.Module, spec: AdapterSpec) -> None:
    # WARNING, not INFO: the row decides what every site means and is a guess from names and
    # widths, so it should be seen without configuring logging (Python shows WARNING by
    # default) and pinned; once per family keeps it from being noise.
    key = (discovery.name, spec)
    if key in _ANNOUNCED:
        return
    _ANNOUNCED.add(key)
    paths = "; ".join(
        (f"stream {st.name!r}: " if st.name else "")
        + f"blocks {' | '.join(st.block)}, attention output projection {' | '.join(st.attn_out)}, "
        + f"config keys n_layers={_keys(st.n_layers)} n_heads={_keys(st.n_heads)} "
        + f"d_model={_keys(st.d_model)} head_dim={_keys(st.head_dim) if st.head_dim else 'd_model // n_heads'}"
        for st in spec.streams
    )
    hint = discovery.hint
    LOGGER.warning(
        "nnvtv: no adapter table row for %s (model_type=%r); discovery %r inferred adapter %r from "
        "its module tree: %s. nnvtv.wrap checks it with one validation forward. To make it a "
        "table row (pinned, and this message goes away), register it before wrapping, or pass it "
        "as adapter= to nnvtv.wrap:\n%s\n%s",
        type(model).__name__,
        getattr(getattr(model, "config", None), "model_type", None),
        discovery.name,
        spec.name,
        paths,
        spec_source(spec),
        hint,
    )


def _keys(keys: Sequence[str]) -> str:
    return " | ".join(keys)


def spec_source(spec: AdapterSpec) -> str:
    """Python source that registers ``spec`` as a table row (what an inferred row is logged as)."""

    def stream(st: StreamSpec) -> str:
        fields = [f"{f}={getattr(st, f)!r}" for f in ("block", "attn_out", "n_layers", "n_heads", "d_model")]
        if st.head_dim:
            fields.append(f"head_dim={st.head_dim!r}")
        if st.name:
            fields.append(f"name={st.name!r}")
        return "            StreamSpec(\n" + "".join(f"                {f},\n" for f in fields) + "            ),\n"

    io = spec.io
    lines = [
        "from nnvtv.adapter import AdapterSpec, StreamSpec, register_adapter",
        f"from {io.__module__} import {io.__qualname__}",
        "",
        "register_adapter(",
        "    AdapterSpec(",
        f"        name={spec.name!r},",
        f"        model_types={spec.model_types!r},",
        f"        model_classes={spec.model_classes!r},",
        f"        io={io.__qualname__},",
    ]
    if spec.io_options:
        lines.append(f"        io_options={spec.io_options!r},")
    text = "\n".join(lines) + "\n        streams=(\n" + "".join(stream(st) for st in spec.streams)
    return text + "        ),\n    )\n)"
