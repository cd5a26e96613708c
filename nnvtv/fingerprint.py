"""Model fingerprints: a stable id of an architecture and its weights.

A :class:`~nnvtv.TaskVector` or a set of :class:`~nnvtv.Means` records the fingerprint of
the model it came from and refuses any other model.
"""

from __future__ import annotations

import hashlib
import json

import torch

__all__ = ["fingerprint_of", "VOLATILE_CONFIG"]

#: config keys that do not change what a model computes (left out of the fingerprint)
VOLATILE_CONFIG = frozenset({"transformers_version", "torch_dtype", "dtype", "name_or_path", "architectures", "use_cache"})


def fingerprint_of(module: torch.nn.Module, adapter: str, *, remote: bool = False) -> str:
    """16 hex digits of sha256 over the adapter name, the config, parameter names and shapes, and
    a sample of 64 values per parameter (a remote model's meta skeleton has no values: its hub
    id stands for them)."""
    h = hashlib.sha256()
    h.update(adapter.encode())
    cfg = getattr(module, "config", None)
    if cfg is not None and hasattr(cfg, "to_dict"):
        d = {k: v for k, v in cfg.to_dict().items() if not k.startswith("_") and k not in VOLATILE_CONFIG}
        h.update(json.dumps(d, sort_keys=True, default=str).encode())
    if remote:
        h.update(str(getattr(cfg, "_name_or_path", "")).encode())
    for name, p in module.state_dict().items():
        h.update(f"{name}:{tuple(p.shape)}".encode())
        if p.numel() and p.device.type != "meta":
            sample = p.detach().reshape(-1)[:: max(1, p.numel() // 64)][:64]
            h.update(sample.to(torch.float64).cpu().numpy().tobytes())
    return h.hexdigest()[:16]
