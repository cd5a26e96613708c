"""Named models: shipped toy models, packaged real models, and local Hugging Face folders.

>>> model = nnvtv.load("toy-text")             # shipped with the package
>>> model = nnvtv.load("/path/to/hf-model")    # a local transformers folder (no downloads)

Catalogue entries live in the registry :data:`MODELS` (the convention of
:mod:`nnvtv.registry`); plug-ins provide them through the entry-point group ``nnvtv.adapters``
(nnvtv's own shipped models included). Nothing here names a model family.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nnvtv.errors import ConfigError, UnknownModelError
from nnvtv.registry import Registry
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
        defaults: default ``find`` options for this model (e.g. strategy options).
    """

    name: str
    description: str
    loader: Callable[[], Model]
    default_task: str
    modality: str = "text"
    source: str = "shipped"
    defaults: dict[str, Any] = field(default_factory=dict)


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


def load(name: str, **kwargs: Any) -> Model:
    """Load a catalogue model by name, or a local Hugging Face folder by path."""
    e = entry(name)
    if e is not None:
        if kwargs:
            params = inspect.signature(e.loader).parameters
            unknown = sorted(k for k in kwargs if k not in params)
            if unknown:
                accepted = [p for p in params if p != "self"]
                raise ConfigError(f"nnvtv.load({name!r}) got unknown option(s) {unknown}; it accepts {accepted or 'none'}")
        return e.loader(**kwargs)
    path = Path(name).expanduser()
    if path.is_dir() and (path / "config.json").exists():
        return load_hf_folder(path, **kwargs)
    raise UnknownModelError(MODELS.unknown_message(name) + " Nothing is downloaded.")


def load_hf_folder(path: Path, **wrap_options: Any) -> Model:
    """Load a local transformers folder (causal LM, or any AutoModel) and wrap it."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(path, local_files_only=True)
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs):
        module = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    elif _head_class(archs) is not None:
        # the class the folder was saved from (e.g. SegGptForImageSegmentation, whose head
        # AutoModel would drop)
        module = _head_class(archs).from_pretrained(path, local_files_only=True)
    else:
        module = AutoModel.from_pretrained(path, local_files_only=True)
    tokenizer = None
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError):
        tokenizer = None
    return wrap(module, tokenizer, name=str(path), **wrap_options)


def _head_class(architectures: list[str]) -> Any:
    """The transformers class named by a folder's ``config.architectures`` when it is a
    non-text model with a task head (``...ForImageSegmentation``, ``...ForPreTraining``,
    ``...ForImageClassification``); ``None`` otherwise (AutoModel then decides)."""
    import transformers

    for name in architectures:
        if name.endswith(("ForImageSegmentation", "ForPreTraining", "ForImageClassification")):
            cls = getattr(transformers, name, None)
            if isinstance(cls, type):
                return cls
    return None
