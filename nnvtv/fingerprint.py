"""Model fingerprints: one id for one checkpoint, wherever and however it runs.

A :class:`~nnvtv.TaskVector`, a set of :class:`~nnvtv.Means` and the recipes' function and
layer vectors record the fingerprint of the model they came from and refuse any other model.
The fingerprint hashes

* the adapter's name and the model config (keys that do not change what the model computes,
  such as its dtype, name or path, the transformers version, are left out),
* every parameter's name and shape,
* a sample of 64 values of every parameter (every ``numel // 64``-th), rounded to bfloat16.

So the same checkpoint gets the same fingerprint loaded from a folder, from the Hub cache,
wrapped from a module you already have, in float32 or bfloat16, on any device, and on NDIF:
a remote model's weights are not here (its local skeleton lives on the meta device), so the
sample is read on the server with ONE request the first time the fingerprint is needed
(:meth:`nnvtv.Model.fingerprint`). A float16 copy rounds differently and gets another
fingerprint (apply a vector to it with ``transfer=True``). Fingerprints made by nnvtv before
this scheme (a float64 sample of the state dict) are still accepted, see :func:`legacy_fingerprint_of`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from nnvtv.errors import FingerprintMismatchError

__all__ = [
    "fingerprint_of",
    "legacy_fingerprint_of",
    "check_fingerprint",
    "parameter_samples",
    "sample_index",
    "VOLATILE_CONFIG",
    "SAMPLES",
]

#: config keys that do not change what a model computes (left out of the fingerprint)
VOLATILE_CONFIG = frozenset({"transformers_version", "torch_dtype", "dtype", "name_or_path", "architectures", "use_cache"})
#: values sampled from every parameter
SAMPLES = 64


def sample_index(numel: int) -> slice:
    """Which flat positions of a parameter with ``numel`` values are sampled."""
    return slice(None, None, max(1, numel // SAMPLES))


def parameter_samples(named: Iterable[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``{name: FloatTensor [<= 64]}``: each parameter's sample, rounded to bfloat16, on the CPU."""
    out = {}
    for name, p in named:
        flat = p.detach().reshape(-1)
        out[name] = flat[sample_index(flat.numel())][:SAMPLES].to(torch.bfloat16).float().cpu()
    return out


def _config_dict(module: torch.nn.Module) -> dict[str, Any]:
    cfg = getattr(module, "config", None)
    if cfg is None or not hasattr(cfg, "to_dict"):
        return {}
    return {k: v for k, v in cfg.to_dict().items() if not k.startswith("_") and k not in VOLATILE_CONFIG}


def fingerprint_of(module: torch.nn.Module, adapter: str, samples: Mapping[str, torch.Tensor] | None = None) -> str:
    """16 hex digits of sha256 over the adapter name, the config, parameter names and shapes and
    the values ``samples`` gives (default: :func:`parameter_samples` of ``module``'s parameters;
    a remote model passes the samples its server read)."""
    params = list(module.named_parameters())
    if samples is None:
        samples = parameter_samples(params)
    h = hashlib.sha256()
    h.update(adapter.encode())
    h.update(json.dumps(_config_dict(module), sort_keys=True, default=str).encode())
    for name, p in params:
        h.update(f"{name}:{tuple(p.shape)}".encode())
        h.update(samples[name].to(torch.float32).numpy().tobytes())
    return h.hexdigest()[:16]


def legacy_fingerprint_of(module: torch.nn.Module, adapter: str) -> str | None:
    """The fingerprint nnvtv gave before it was made dtype- and location-independent (a float64
    sample of every state-dict entry); ``None`` when the weights are not here (meta skeleton)."""
    h = hashlib.sha256()
    h.update(adapter.encode())
    cfg = getattr(module, "config", None)
    if cfg is not None and hasattr(cfg, "to_dict"):
        h.update(json.dumps(_config_dict(module), sort_keys=True, default=str).encode())
    for name, p in module.state_dict().items():
        h.update(f"{name}:{tuple(p.shape)}".encode())
        if p.numel():
            if p.device.type == "meta":
                return None
            sample = p.detach().reshape(-1)[:: max(1, p.numel() // 64)][:64]
            h.update(sample.to(torch.float64).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def check_fingerprint(model: Any, fingerprint: str, *, what: str, made_for: str, fix: str) -> None:
    """Raise :class:`~nnvtv.errors.FingerprintMismatchError` unless ``model`` (an
    :class:`nnvtv.Model`) is the checkpoint ``fingerprint`` was recorded on.

    ``what`` names the object ("this task vector"), ``made_for`` the model's display name when it
    was made, ``fix`` how to proceed (e.g. "or apply(..., transfer=True) to transfer it on purpose").
    """
    if not model.matches(fingerprint):
        raise FingerprintMismatchError(
            f"{what} was made for model {made_for!r} (fingerprint {fingerprint}); it cannot be applied to "
            f"{model.name!r} (fingerprint {model.fingerprint}): another checkpoint, or the same one in "
            f"float16. {fix}"
        )
