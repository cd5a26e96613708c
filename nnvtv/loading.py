"""Loading Hugging Face models by folder or Hub id, and choosing a device and a dtype.

>>> model = nnvtv.load("meta-llama/Llama-3.2-1B", device="cuda", dtype="bfloat16")
>>> model = nnvtv.load("/data/my-model")                  # a local transformers folder
>>> model = nnvtv.load("Qwen/Qwen2.5-7B", device_map="auto")   # split across GPUs (accelerate)

A name that is neither a catalogue entry nor a local folder is a Hub id, loaded through
transformers' own download and cache (``revision=``, the usual token variables ``HF_TOKEN`` /
``huggingface-cli login``). Offline (``HF_HUB_OFFLINE=1`` or ``TRANSFORMERS_OFFLINE=1``, read
at call time) nothing is downloaded: an id missing from the cache raises
:class:`~nnvtv.errors.OfflineError` naming the id, the cache folder and the two ways out.

Devices: ``None``/``"auto"`` is CUDA when available, else the CPU; ``"cpu"``, ``"cuda"``,
``"cuda:1"``, ``"mps"`` or a ``torch.device``. Dtypes: ``"auto"`` (the checkpoint's own),
``"float32"``, ``"bfloat16"``, ``"float16"`` or a ``torch.dtype``. Model inputs always go to
the device of the model's input embedding (:meth:`nnvtv.ModelIO.place`); patched values are
cast to the dtype and device of the activation they replace (:mod:`nnvtv.tracing.edits`).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch

from nnvtv.errors import ConfigError, MissingDependencyError, OfflineError, UnknownModelError

__all__ = [
    "DTYPES",
    "resolve_device",
    "resolve_dtype",
    "check_device_map",
    "is_offline",
    "hub_cache_dir",
    "load_pretrained",
]

#: dtype names accepted everywhere (Python and ``--dtype``)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ACCELERATE_INSTALL = "pip install accelerate  (or: pip install 'nnvtv[multi-gpu]')"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` -> CUDA if available else CPU; anything else is checked to exist here.

    Raises:
        ConfigError: an unparseable device, or an accelerator this machine does not have.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(
            f"device {device!r} is not a device; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {device!r} asked for CUDA but torch.cuda.is_available() is False on this "
                "machine (no GPU, or a CPU-only torch build); use --device cpu or 'auto'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device {device!r}: MPS is not available on this machine; use 'cpu' or 'auto'")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | str | None:
    """``None`` (keep what the loader gives), ``"auto"`` (the checkpoint's own) or a floating dtype.

    Raises:
        ConfigError: an unknown dtype name or a non-floating dtype.
    """
    if dtype is None or dtype == "auto":
        return dtype
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ConfigError(f"dtype must be a floating-point dtype, got {dtype}")
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    raise ConfigError(f"unknown dtype {dtype!r}; use one of: auto, {', '.join(DTYPES)}")


def check_device_map(device_map: Any) -> None:
    """``device_map`` (e.g. ``"auto"``) needs the optional ``accelerate`` package.

    Raises:
        MissingDependencyError: accelerate is not installed (the message gives the install line).
    """
    if device_map is not None and importlib.util.find_spec("accelerate") is None:
        raise MissingDependencyError(
            f"device_map={device_map!r} splits a model across devices with the 'accelerate' package, "
            f"which is not installed: {ACCELERATE_INSTALL}"
        )


def is_offline() -> bool:
    """``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set to a true value (read now, not at import)."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_cache_dir() -> Path:
    """The Hugging Face Hub cache transformers uses: ``$HF_HUB_CACHE``, ``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(p and not p.startswith(".") and " " not in p for p in parts)


def load_pretrained(
    name_or_path: str | os.PathLike[str],
    *,
    revision: str | None = None,
    dtype: str | torch.dtype | None = None,
    device_map: Any = None,
) -> tuple[torch.nn.Module, Any]:
    """``(module, tokenizer or None)`` of a transformers folder or Hub id (causal LM, or the
    class the checkpoint names, or AutoModel), in eval mode, not yet moved to a device.

    Raises:
        OfflineError: offline and the id is not in the cache.
        UnknownModelError: no such folder, and not a Hub id the Hub (or the cache) knows.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    name = str(name_or_path)
    local = Path(name).expanduser()
    is_dir = local.is_dir()
    if not is_dir and not _looks_like_hub_id(name):
        raise UnknownModelError(f"{name!r} is not a Hugging Face Hub id (org/name) either")
    kw: dict[str, Any] = {}
    if not is_dir:
        kw = {"revision": revision, "cache_dir": str(hub_cache_dir())}
        if is_offline():
            kw["local_files_only"] = True
    else:
        kw = {"local_files_only": True}
    where = str(local) if is_dir else name
    try:
        config = AutoConfig.from_pretrained(where, **kw)
    except (OSError, ValueError) as exc:
        raise _load_error(name, is_dir, revision, exc) from exc
    archs = getattr(config, "architectures", None) or []
    model_kw = dict(kw)
    if dtype is not None:
        model_kw["dtype"] = dtype
    if device_map is not None:
        model_kw["device_map"] = device_map
    try:
        if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
            module = AutoModelForCausalLM.from_pretrained(where, **model_kw)
        elif _head_class(archs) is not None:
            # the class the checkpoint was saved from (e.g. SegGptForImageSegmentation, whose
            # head AutoModel would drop)
            module = _head_class(archs).from_pretrained(where, **model_kw)
        else:
            module = AutoModel.from_pretrained(where, **model_kw)
    except (OSError, ValueError) as exc:
        raise _load_error(name, is_dir, revision, exc) from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **kw)
    except (OSError, ValueError, TypeError, KeyError):
        tokenizer = None  # image models have none
    return module.eval(), tokenizer


def _load_error(name: str, is_dir: bool, revision: str | None, exc: Exception) -> Exception:
    if is_dir:
        return UnknownModelError(f"cannot load the transformers folder {name!r}: {type(exc).__name__}: {exc}")
    rev = f" (revision {revision!r})" if revision else ""
    ways_out = (
        "Two ways out: give the path of a local folder holding the model (config.json and weights), "
        "or load it yourself and call nnvtv.wrap(model, tokenizer)"
    )
    if is_offline():
        return OfflineError(
            f"the Hugging Face Hub id {name!r}{rev} is not in the local cache {hub_cache_dir()} and nnvtv is "
            f"offline (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set), so nothing was downloaded. {ways_out}; "
            "or unset HF_HUB_OFFLINE on a machine with a network."
        )
    return UnknownModelError(
        f"the Hugging Face Hub could not give {name!r}{rev}: {type(exc).__name__}: {str(exc).rstrip('.')}. Check the "
        f"id and the network; gated models need a token (HF_TOKEN or `huggingface-cli login`). {ways_out}."
    )


def _head_class(architectures: list[str]) -> Any:
    """The transformers class a checkpoint's ``config.architectures`` names when it is a non-text
    model with a task head (``...ForImageSegmentation``, ``...ForPreTraining``,
    ``...ForImageClassification``); ``None`` otherwise (AutoModel then decides)."""
    import transformers

    for name in architectures:
        if name.endswith(("ForImageSegmentation", "ForPreTraining", "ForImageClassification")):
            cls = getattr(transformers, name, None)
            if isinstance(cls, type):
                return cls
    return None
