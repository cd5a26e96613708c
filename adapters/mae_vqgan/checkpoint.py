"""Strict, safe loading of MAE-VQGAN checkpoints (official ``checkpoint-*.pth`` or safetensors).

* ``.pth`` / ``.pt`` / ``.ckpt``: ``torch.load(..., weights_only=True)``. MAE training
  checkpoints also hold optimizer state and an ``argparse.Namespace`` of training args;
  only ``argparse.Namespace`` is allow-listed, nothing else is unpickled. The weights are
  the dict under ``"model"`` (a bare state dict is accepted too).
* ``.safetensors``: the state dict as saved by :func:`save_checkpoint` (its metadata may
  carry the config as JSON under ``"nnvtv.config"``).

Loading is strict: every key of the model must be present with its shape, and no other key
may be; otherwise :class:`~nnvtv.errors.CheckpointError` lists a few of each and describes
the file.
"""

from __future__ import annotations

import argparse
import json
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from nnvtv.errors import CheckpointError

from .config import MaeVqganConfig, official
from .model import MaeVqgan

__all__ = ["read_state_dict", "load_checkpoint", "save_checkpoint", "check_state_dict"]

CONFIG_KEY = "nnvtv.config"


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj)
        tensors = sum(isinstance(v, torch.Tensor) for v in obj.values())
        return f"a dict with {len(keys)} keys ({tensors} tensors), e.g. {[str(k) for k in keys[:5]]}"
    return f"a {type(obj).__name__}"


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state dict, info)`` from a checkpoint file; ``info`` may hold ``"config"`` (a dict)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(f"no checkpoint file at {p}")
    info: dict[str, Any] = {}
    if p.suffix == ".safetensors":
        try:
            sd = load_file(str(p))
            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata() or {}
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{p} is not a readable safetensors file: {exc}") from exc
        if CONFIG_KEY in meta:
            info["config"] = json.loads(meta[CONFIG_KEY])
        return sd, info
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln or "Unsupported" in ln]
        why = lines[0] if lines else str(exc).splitlines()[0]
        raise CheckpointError(
            f"{p} holds objects that are not loaded for safety (only tensors, plain containers and "
            f"argparse.Namespace are): {why}. Re-save just the weights, e.g. "
            "torch.save({'model': ckpt['model']}, path), or export them to safetensors"
        ) from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{p} is not a readable torch checkpoint: {exc}") from exc
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        sd = obj["model"]
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = obj
    else:
        raise CheckpointError(
            f"{p} is {_describe(obj)}; expected an MAE checkpoint (a dict whose 'model' entry is the "
            "state dict) or a bare state dict of tensors"
        )
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{p}: 'model' holds non-tensor entries, e.g. {bad[:3]}")
    if isinstance(obj, Mapping) and isinstance(obj.get("nnvtv_config"), Mapping):
        info["config"] = dict(obj["nnvtv_config"])
    return dict(sd), info


def check_state_dict(sd: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], *, source: str) -> None:
    """Raise :class:`CheckpointError` unless ``sd`` has exactly ``expected``'s keys and shapes."""
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k}: {tuple(sd[k].shape)} (model: {tuple(expected[k])})" for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k])]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s), e.g. {missing[:4]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:4]}")
    if wrong:
        parts.append(f"{len(wrong)} shape mismatch(es), e.g. {wrong[:3]}")
    keys = list(sd)
    hint = ""
    if unexpected and all(k.startswith("module.") for k in unexpected[:4]):
        hint = " (keys start with 'module.': a DistributedDataParallel wrapper; strip that prefix)"
    raise CheckpointError(
        f"{source} does not match the MAE-VQGAN config: " + "; ".join(parts)
        + f". The file holds {len(keys)} tensors, e.g. {keys[:3]}; the model expects {len(expected)}" + hint
    )


def load_checkpoint(path: str | Path, config: MaeVqganConfig | None = None) -> MaeVqgan:
    """Build :class:`MaeVqgan` (config from the file, else ``config``, else the official one) and load strictly.

    Parameters are created on the meta device and assigned from the file, so the official
    400M-parameter model is never initialised twice. Returns the model in eval mode.
    """
    sd, info = read_state_dict(path)
    if config is None:
        config = MaeVqganConfig.from_dict(info["config"]) if "config" in info else official()
    with torch.device("meta"):
        model = MaeVqgan(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_state_dict(sd, expected, source=str(path))
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def save_checkpoint(model: MaeVqgan, path: str | Path) -> Path:
    """Write the state dict: ``.safetensors`` (config in the metadata) or ``.pth`` (``{"model": ...}``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    cfg = model.config.to_dict()
    if p.suffix == ".safetensors":
        save_file(sd, str(p), metadata={CONFIG_KEY: json.dumps(cfg)})
    else:
        torch.save({"model": sd, "nnvtv_config": cfg}, str(p))
    return p
