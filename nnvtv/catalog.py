"""Named models: shipped toy models, packaged real models, local folders and Hub ids.

>>> model = nnvtv.load("toy-text")                                   # shipped with the package
>>> model = nnvtv.load("/path/to/hf-model")                          # a local transformers folder
>>> model = nnvtv.load("meta-llama/Llama-3.2-1B", device="cuda", dtype="bfloat16")   # the Hub

Catalogue entries live in the registry :data:`MODELS` (the convention of
:mod:`nnvtv.registry`); plug-ins provide them through the entry-point group ``nnvtv.adapters``
(nnvtv's own shipped models included). Nothing here names a model family.
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nnvtv.errors import ConfigError, UnknownModelError
from nnvtv.loading import check_device_map, load_pretrained, resolve_device, resolve_dtype
from nnvtv.registry import Registry, failed_plugins_note
from nnvtv.wrapping import wrap

if TYPE_CHECKING:
    from nnvtv.model import Model

__all__ = ["MODELS", "ModelEntry", "register_model", "list_models", "entry", "load"]


@dataclass(frozen=True)
class ModelEntry:
    """A named, loadable model.

    Attributes:
        name: catalogue name (``"toy-text"``).
        description: one line for ``nnvtv models``.
        loader: builds the wrapped model.
        default_task: task ``nnvtv find`` uses when none is given.
        modality: ``"text"`` or ``"image"``.
        source: where the weights come from (``"shipped"``, ``"package"`` ...).
        defaults: default ``find`` options for this model (``budget``, ``sparsity``,
            ``strategy_options``).
        max_shots: the most demonstrations the model was trained or documented to read in one
            prompt (``None``: unknown); more gets a warning in the results, not an error.
        tasks: the only registered tasks that suit the model (``None``: every task of its
            modality that is not written for other models); ``nnvtv tasks --model NAME`` reads it
            without loading the model.
    """

    name: str
    description: str
    loader: Callable[[], Model]
    default_task: str
    modality: str = "text"
    source: str = "shipped"
    defaults: dict[str, Any] = field(default_factory=dict)
    max_shots: int | None = None
    tasks: tuple[str, ...] | None = None


#: every named model, by catalogue name
MODELS: Registry[ModelEntry] = Registry(
    "model",
    ModelEntry,
    UnknownModelError,
    how_to_add=(
        "Or give the path of a local Hugging Face model folder (with config.json), or wrap a model "
        "you have loaded: nnvtv.wrap(model, tokenizer)."
    ),
)


def register_model(entry: ModelEntry, *, replace: bool = False) -> ModelEntry:
    """Add ``entry`` to :data:`MODELS` (``replace=True`` replaces an entry of the same name)."""
    return MODELS.register(entry, replace=replace)


def list_models() -> list[ModelEntry]:
    """Every catalogue entry."""
    return MODELS.values()


def entry(name: str) -> ModelEntry | None:
    """The catalogue entry called ``name``, or ``None``."""
    return MODELS.get(name) if name in MODELS else None


def load(
    name: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    device_map: Any = None,
    revision: str | None = None,
    **options: Any,
) -> Model:
    """Load a catalogue model by name, a local Hugging Face folder by path, or a Hub id.

    Args:
        name: catalogue name (``nnvtv models``), a folder with ``config.json``, or a Hugging
            Face Hub id (downloaded through transformers' cache; see :mod:`nnvtv.loading`).
        device: ``None``/``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda:1"`` ...
        dtype: ``None`` (as loaded: float32 for catalogue models, the checkpoint's own for the
            Hub), ``"auto"``, ``"float32"``, ``"bfloat16"``, ``"float16"`` or a ``torch.dtype``.
        device_map: for Hub / folder models, e.g. ``"auto"`` to split a model across GPUs
            (needs ``accelerate``); then ``device`` must be left unset.
        revision: Hub branch, tag or commit.
        **options: the catalogue entry's own options (e.g. ``weights_dir=`` for toys,
            ``checkpoint=`` for ``mae-vqgan``) or, for Hub / folder models, ``nnvtv.wrap``'s.

    Every argument is checked before anything is loaded.
    """
    if device_map is not None and device is not None:
        raise ConfigError(f"give device={device!r} or device_map={device_map!r}, not both")
    dev = None if device_map is not None else resolve_device(device)
    dt = resolve_dtype(dtype)
    name = str(name)
    e = entry(name)
    if e is not None:
        if device_map is not None:
            raise ConfigError(f"device_map applies to Hugging Face models; {name!r} is a catalogue model (use device=)")
        if revision is not None:
            raise ConfigError(f"revision applies to Hub models; {name!r} is a catalogue model")
        params = inspect.signature(e.loader).parameters
        unknown = sorted(k for k in options if k not in params)
        if unknown:
            accepted = [p for p in params if p != "self"]
            raise ConfigError(
                f"nnvtv.load({name!r}) got unknown option(s) {unknown}; it accepts device, dtype"
                + (f" and {', '.join(accepted)}" if accepted else "")
            )
        model = e.loader(**options)
        return model.to(device=dev, dtype=None if dt == "auto" else dt)
    check_device_map(device_map)
    try:
        module, tokenizer = load_pretrained(name, revision=revision, dtype=dt, device_map=device_map)
    except UnknownModelError as exc:
        if Path(name).expanduser().is_dir():
            raise
        close = difflib.get_close_matches(name, MODELS.names(), n=1)
        hint = f" Did you mean the catalogue model {close[0]!r}?" if close else ""
        raise type(exc)(
            f"unknown model {name!r}: not a catalogue model ({', '.join(MODELS.names())}; see `nnvtv models`), "
            f"not a local folder, and {exc}{hint}{failed_plugins_note()}"
        ) from exc
    if device_map is None:
        module.to(dev)
    return wrap(module, tokenizer, name=name, **options)
