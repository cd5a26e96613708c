"""Remote tracing: run nnvtv on models hosted by NDIF, through nnsight.

>>> model = nnvtv.wrap("meta-llama/Llama-3.1-8B", remote=True)      # needs NDIF_API_KEY
>>> result = nnvtv.find(model, "antonyms", strategy="greedy", budget=256)

Every traced forward nnvtv makes (mean collection, the batched candidate masks of every
strategy, held-out scoring, validation) goes through :meth:`nnvtv.Model.trace_jobs`, which
hands it to the model's backend. :class:`RemoteBackend` ships ALL the forwards of one call
to the server as ONE request: an nnsight ``session`` whose body is
:func:`nnvtv.tracing.local.run_jobs`. So:

* means: one request per ``remote_batches`` batches of ICL prompts (default 16);
* search: ONE request per step (the step's candidate masks, all chunks of ``max_rows``),
  plus one every ``eval_every`` steps for the held-out score of the best mask;
* evaluation: one request per scored batch (zero-shot, ICL, task vector).

:attr:`nnvtv.Model.remote_requests` counts them.

``remote="local"`` runs exactly that path through nnsight's local emulation (the request
is serialized, deserialized with the user's own modules hidden, and run here), which is how
the tests and tutorial 4 exercise it without a network. The code shipped to the server
is nnvtv's own (registered for by-value pickling), plain data (token ids, positions, mean
values, masks) and a copy of the adapter's I/O that holds no model or tokenizer.

Pitfall guarded here: a plain ``nnsight.NNsight(module)`` accepts ``remote=True`` and
silently runs locally; nnvtv refuses to mark such a wrapper remote (:class:`RemoteError`).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import nnsight
import torch

from nnvtv.errors import ConfigError, NnvtvError, RemoteError
from nnvtv.tracing.local import Job, Result, run_jobs

if TYPE_CHECKING:
    from nnvtv.model_io import ModelIO

__all__ = [
    "REMOTE_MODES",
    "RemoteBackend",
    "api_key",
    "remote_wrapper",
    "check_wrapper",
    "light_io",
    "errors_as_remote_error",
]

REMOTE_MODES = (False, True, "local")
KEY_HELP = (
    "set the environment variable NDIF_API_KEY (get a key at https://login.ndif.us), or run "
    "`python -c \"import nnsight; nnsight.CONFIG.set_default_api_key('KEY')\"` once"
)


def api_key() -> str | None:
    """The NDIF API key nnsight will send: ``NDIF_API_KEY`` or nnsight's saved config."""
    from nnsight import CONFIG

    return os.environ.get("NDIF_API_KEY") or CONFIG.API.APIKEY or None


def _check_mode(remote: Any) -> None:
    if remote not in REMOTE_MODES or isinstance(remote, int) and not isinstance(remote, bool):
        raise ConfigError(f"remote must be False, True or 'local', got {remote!r}")


def _register_nnvtv() -> None:
    """Ship nnvtv's own code with every request (NDIF servers do not have nnvtv installed)."""
    nnsight.register("nnvtv")


def remote_wrapper(model: Any, tokenizer: Any, remote: bool | str) -> tuple[torch.nn.Module, Any, Any]:
    """Build nnsight's remote-capable wrapper: ``(module, wrapper, tokenizer)``.

    ``remote=True`` takes a hub id (the weights stay on NDIF; only a meta-device skeleton is
    built here from the hub config). ``remote="local"`` takes a loaded transformers model.
    """
    _check_mode(remote)
    try:
        from nnsight.modeling.transformers import TransformersModel
    except ImportError as exc:  # pragma: no cover - nnsight is a dependency
        raise RemoteError(f"this nnsight has no TransformersModel ({exc}); nnvtv needs nnsight>=0.8") from exc
    _register_nnvtv()
    if remote is True:
        if not isinstance(model, str):
            raise RemoteError(
                f"remote=True runs on NDIF's copy of a hosted model, so give its hub id "
                f"(e.g. nnvtv.wrap('meta-llama/Llama-3.1-8B', remote=True)), not a loaded "
                f"{type(model).__name__}; to test the remote path on a local model use remote='local'"
            )
        if not api_key():
            raise RemoteError(f"remote=True needs an NDIF API key and none is set: {KEY_HELP}")
        try:
            kwargs = {"tokenizer": tokenizer} if tokenizer is not None else {}
            wrapper = TransformersModel(model, **kwargs)
        except Exception as exc:  # hub unreachable, unknown repo, gated model ...
            raise RemoteError(
                f"could not build the remote model {model!r}: {type(exc).__name__}: {exc}. "
                "nnvtv reads the model's config and tokenizer from the Hugging Face hub (no "
                "weights); check the network, the hub id, and HF_TOKEN for gated models"
            ) from exc
    else:
        if isinstance(model, str):
            raise RemoteError(
                f"remote='local' runs the remote code path on a model loaded here; got the hub id "
                f"{model!r}. Load it (transformers.AutoModelForCausalLM.from_pretrained) and pass "
                "the module, or use remote=True to run on NDIF"
            )
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
            raise RemoteError(
                f"remote tracing needs a Hugging Face transformers model (nnsight's "
                f"TransformersModel), got {type(model).__name__}; run it locally (remote=False)"
            )
        model.eval()
        try:
            kwargs = {"tokenizer": tokenizer} if tokenizer is not None else {}
            wrapper = TransformersModel(model, **kwargs)
        except Exception as exc:
            raise RemoteError(
                f"nnsight's TransformersModel cannot wrap this {type(model).__name__}: "
                f"{type(exc).__name__}: {exc}. Text models need their tokenizer "
                "(nnvtv.wrap(model, tokenizer, remote='local'))"
            ) from exc
    check_wrapper(wrapper, remote)
    return wrapper._module, wrapper, getattr(wrapper, "tokenizer", None) or tokenizer


def check_wrapper(wrapper: Any, remote: bool | str) -> None:
    """Raise :class:`RemoteError` unless ``wrapper`` really runs ``remote`` traces remotely.

    A plain ``nnsight.NNsight(module)`` accepts ``remote=True`` and silently runs locally.
    """
    _check_mode(remote)
    from nnsight.modeling.mixins.remotable import Remotable

    if remote and not isinstance(wrapper, Remotable):
        raise RemoteError(
            f"remote={remote!r} needs nnsight's remote-capable wrapper (TransformersModel), got "
            f"{type(wrapper).__name__}: a plain NNsight(module) would silently run locally. "
            "Use nnvtv.wrap(hub_id, remote=True), or nnvtv.wrap(module, tokenizer, remote='local')"
        )


def light_io(io: ModelIO) -> ModelIO:
    """A copy of the adapter's I/O that holds no model or tokenizer.

    Its ``readout`` and ``layout`` run inside the remote request; the copy keeps the request
    small and makes sure no local weights travel with it.
    """
    light = copy.copy(io)
    light.module = None
    light.tokenizer = None
    return light


class RemoteBackend:
    """Runs all the jobs of one call as ONE request (an nnsight session) on NDIF or its local emulation.

    Attributes:
        remote: ``True`` (NDIF) or ``"local"`` (nnsight's local emulation of the remote path).
        requests: requests sent so far.
        name: the model's display name (for error messages).
    """

    def __init__(self, remote: bool | str, name: str = "model") -> None:
        _check_mode(remote)
        if not remote:
            raise ConfigError("RemoteBackend needs remote=True or 'local'")
        self.remote = remote
        self.requests = 0
        self.name = name

    def run(self, root: Any, io: ModelIO, jobs: Sequence[Job], n_heads: Sequence[int], *,
            readout: bool, output: bool, grad: bool) -> list[Result]:
        if grad:
            raise RemoteError(
                "gradients through a remote trace are not supported by nnvtv yet; run gradient-based "
                "work on a local model (remote=False)"
            )
        light = light_io(io)
        self.requests += 1
        with errors_as_remote_error(self):
            with root.session(remote=self.remote):
                results = run_jobs(root, light, jobs, n_heads, readout=readout, output=output)
                results = nnsight.save(results)
        return results

    def parameter_samples(self, root: Any, inputs: Any, names: Sequence[str], numels: Sequence[int]) -> dict[str, torch.Tensor]:
        """The fingerprint's sample of every named parameter, read on the server (ONE request).

        ``inputs`` is any small valid batch (the values are read inside one traced forward).
        """
        from nnvtv.fingerprint import SAMPLES, sample_index
        from nnvtv.tracing.local import envoy_at

        self.requests += 1
        with errors_as_remote_error(self):
            with root.session(remote=self.remote):
                with torch.no_grad(), root.trace(**inputs.kwargs):
                    out = {}
                    for name, numel in zip(names, numels, strict=True):
                        path, _, attr = name.rpartition(".")
                        param = getattr(envoy_at(root, path) if path else root, attr)
                        flat = param.detach().reshape(-1)
                        out[name] = flat[sample_index(numel)][:SAMPLES].to(torch.bfloat16).float().cpu()
                    out = nnsight.save(out)
        return out


@contextmanager
def errors_as_remote_error(model: Any) -> Iterator[None]:
    """Turn a failed request (no network, refused key, server error) into :class:`RemoteError`."""
    try:
        yield
    except NnvtvError:
        raise
    except Exception as exc:
        from nnsight.intervention.backends.remote import RemoteError as NnsightRemoteError

        network = isinstance(exc, (OSError, ConnectionError, TimeoutError)) or type(exc).__module__.split(".")[0] in ("httpx", "httpcore", "websocket")
        if model.remote is True and (network or isinstance(exc, NnsightRemoteError)):
            from nnsight import CONFIG

            raise RemoteError(
                f"remote request for {model.name!r} to {CONFIG.API.HOST} failed: "
                f"{type(exc).__name__}: {exc}. Check the network (NDIF_HOST overrides the host) "
                f"and the API key ({KEY_HELP})"
            ) from exc
        raise
