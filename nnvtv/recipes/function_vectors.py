"""Function vectors (Todd et al., ICLR 2024): causal indirect effects, head vectors, the vector.

Every head's clean mean output at the last token is patched, one head at a time, into
shuffled-label ICL prompts; the causal indirect effect (CIE) is the gain in probability of the
correct answer (:func:`causal_indirect_effects`). The top-``k`` heads' means, mapped through
the attention output projection (:func:`head_vector`) and summed, are *added* to the residual
stream near depth/3 (:func:`function_vector`). :class:`FunctionVector` saves to
``<dir>/function_vector.json`` + ``<dir>/function_vector.safetensors``.

CIE cost: a head patched at the last token changes nothing at earlier positions (causal
attention), so :func:`~nnvtv.run_masks` runs the prompt prefix once and every candidate head
set only re-runs the last token against a copy of its key/value cache (``fast=True`` =
``share_prefix``; exact up to float rounding; tested against the full run).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from nnvtv import store
from nnvtv.activations import Means
from nnvtv.checks import int_in, positive_int
from nnvtv.errors import ConfigError, ShapeMismatchError
from nnvtv.model import Model
from nnvtv.patching import Patch, run_masks
from nnvtv.progress import Progress, ProgressArg, with_progress
from nnvtv.recipes.common import (
    GROUP,
    RESULT_FIELDS,
    accuracy,
    check_text_model,
    default_shots,
    icl_means,
    masked_accuracy,
)
from nnvtv.sites import Site
from nnvtv.tasks import Task
from nnvtv.tasks import get as get_task
from nnvtv.tasks.base import cycle
from nnvtv.vector import check_applicable
from nnvtv.views import FunctionVectorView

__all__ = ["FunctionVector", "causal_indirect_effects", "function_vector", "head_vector"]

STEM = "function_vector"


@with_progress
def causal_indirect_effects(
    model: Model,
    task: Task | str,
    means: Means,
    *,
    n_prompts: int = 8,
    shots: int | None = None,
    seed: int = 0,
    max_rows: int = 256,
    fast: bool = True,
    progress: ProgressArg = None,
) -> torch.Tensor:
    """Per-head causal indirect effect on shuffled-label ICL prompts (Todd et al.).

    For every head ``(l, h)``: mean over ``n_prompts`` shuffled-label prompts (train split) of
    ``P(correct first token | head patched with its clean ICL mean at the last token)`` minus the
    same probability unpatched. One-hot masks over the head space go through
    :func:`run_masks`, batched.

    Args:
        means: clean ICL means covering every head site at group ``last``.
        fast: let :func:`run_masks` share the prompt prefix (``share_prefix``): the prefix runs
            once with a key/value cache, each candidate re-runs only the last token (exact).
        progress: see :mod:`nnvtv.progress` (stage ``"cie"``: one batched run, 0 then all heads).

    Returns:
        ``FloatTensor [n_layers, n_heads]``.
    """
    check_text_model(model)
    task = get_task(task)
    shots = default_shots(task, shots)
    if shots < 2:
        raise ConfigError(f"shuffled-label prompts need at least 2 shots, got {shots}")
    space = model.sites("head", groups=[GROUP])
    means.check_covers(model, space)
    split = task.split(seed)
    queries = cycle(split.train, n_prompts, name="n_prompts")
    batch = task.icl(model, queries, split.train, shots=shots, seed=seed + 7, shuffle_labels=True)
    masks = torch.cat([torch.zeros(1, len(space), dtype=torch.bool), torch.eye(len(space), dtype=torch.bool)])
    if progress:
        progress(Progress("cie", 0, len(space)))
    out = run_masks(model, batch.inputs, means, space, masks, max_rows=max(max_rows, len(batch)), share_prefix=fast)
    if progress:
        progress(Progress("cie", len(space), len(space)))
    prob = torch.softmax(out.float(), -1).gather(-1, batch.targets.expand(out.shape[:-1]).unsqueeze(-1))[..., 0]
    cie = (prob[1:] - prob[:1]).mean(-1)  # [n_sites]
    return cie.reshape(model.n_layers, model.n_heads)


def head_vector(model: Model, site: Site, value: torch.Tensor) -> torch.Tensor:
    """``FloatTensor [d_model]``: a head output ``value [head_dim]`` mapped through the output
    projection, without its bias (the projection is applied to the value placed in the head's
    slice minus the projection of zeros, so any affine projection layer works)."""
    info = model.check_site(site)
    if site.head is None:
        raise ConfigError(f"head_vector needs a head site, got layer site {site}")
    if tuple(value.shape) != (info.head_dim,):
        raise ShapeMismatchError(f"head value for {site} must be [{info.head_dim}], got {tuple(value.shape)}")
    proj = model.module.get_submodule(model.site_path(site))
    p = next(proj.parameters())
    x = torch.zeros(2, info.n_heads * info.head_dim, dtype=p.dtype, device=p.device)
    x[0, site.head * info.head_dim : (site.head + 1) * info.head_dim] = value.to(p)
    with torch.no_grad():
        y = proj(x)
    return (y[0] - y[1]).float().cpu()


def _consistent(info: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> tuple[str, Any, str] | None:
    n_layers, n_heads = tensors["cie"].shape
    for i, name in enumerate(info["heads"]):
        s = Site.parse(name)
        if s.head is None or s.layer >= n_layers or s.head >= n_heads:
            return (f"heads[{i}]", name, f"a head site inside the [{n_layers}, {n_heads}] 'cie' tensor")
    if info["layer"] >= n_layers:
        return ("layer", info["layer"], f"a layer below {n_layers} (the rows of the 'cie' tensor)")
    if info["layer_accuracy"] and len(info["layer_accuracy"]) != n_layers:
        return ("layer_accuracy", info["layer_accuracy"], f"one accuracy per layer ({n_layers}), or none")
    return None


SCHEMA = store.Schema(
    "nnvtv.function_vector/1",
    what="function vector",
    writer="FunctionVector.save",
    fields={
        **RESULT_FIELDS,
        "layer": store.Field(store.at_least(store.INT, 0)),
        "heads": store.Field(store.list_of(store.SITE, unique=True)),
        "zero_shot_fv": store.Field(store.NUMBER),
        "shuffled": store.Field(store.NUMBER),
        "shuffled_fv": store.Field(store.NUMBER),
        "n_cie_prompts": store.Field(store.at_least(store.INT, 0)),
        "layer_accuracy": store.Field(store.list_of(store.NUMBER), default=[]),
    },
    tensors=store.Tensors(names=("vector", "cie"), ndim={"vector": 1, "cie": 2}),  # [d_model], [n_layers, n_heads]
    check=_consistent,
)


@dataclass(repr=False)
class FunctionVector(FunctionVectorView):
    """A function vector: top-``k`` CIE heads' mapped means, summed, added at ``layer``.

    Attributes:
        vector: ``FloatTensor [d_model]``.
        cie: ``FloatTensor [n_layers, n_heads]`` the heads were ranked by.
        heads: the chosen head sites, best first.
        layer_accuracy: zero-shot accuracy with the vector added at each layer (index = layer),
            empty if not swept.
        zero_shot / zero_shot_fv: held-out zero-shot accuracy without / with the vector at ``layer``.
        shuffled / shuffled_fv: held-out shuffled-label ICL accuracy without / with it.
        icl: held-out clean ICL accuracy (``shots``).
    """

    model: str
    fingerprint: str
    task: str
    layer: int
    heads: list[Site]
    vector: torch.Tensor
    cie: torch.Tensor
    zero_shot: float
    zero_shot_fv: float
    shuffled: float
    shuffled_fv: float
    icl: float
    shots: int
    n_queries: int
    n_mean_prompts: int
    n_cie_prompts: int
    forward_passes: int
    seconds: float
    layer_accuracy: list[float] = field(default_factory=list)
    seed: int = 0

    @property
    def best_layer(self) -> int | None:
        if not self.layer_accuracy:
            return None
        return max(range(len(self.layer_accuracy)), key=lambda i: (self.layer_accuracy[i], -i))

    def patch(self, layer: int | None = None, *, model: Model | None = None, transfer: bool = False) -> Patch:
        """An ``add`` :class:`Patch` of the vector at the last token of ``layer`` (default: its own);
        with ``model``, first checked to belong to it (see :meth:`check_model`)."""
        layer = self.layer if layer is None else layer
        patch = Patch({Site(layer, None, GROUP): self.vector[None]}, mode="add")
        if model is not None:
            self.check_model(model, patch, transfer=transfer)
        return patch

    def check_model(self, model: Model, patch: Patch | None = None, *, transfer: bool = False) -> None:
        """Raise unless the vector may be added in ``model``: the checkpoint it was made on
        (fingerprint), or with ``transfer=True`` any model with the same residual width."""
        values = (patch or self.patch()).values
        check_applicable(model, values, self.fingerprint, what="this function vector", made_for=self.model, transfer=transfer)

    def apply(self, model: Model, data: Any, layer: int | None = None, *, readout: bool = True, transfer: bool = False) -> Any:
        """Run ``data`` through ``model`` with the vector added at ``layer`` (default: its own)."""
        return model.run(data, self.patch(layer, model=model, transfer=transfer), readout=readout)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("vector", "cie")}
        d["heads"] = [str(s) for s in self.heads]
        d["best_layer"] = self.best_layer
        d["best_layer_accuracy"] = max(self.layer_accuracy) if self.layer_accuracy else None
        return d

    def save(self, directory: str | Path) -> Path:
        """Write ``function_vector.json`` + ``function_vector.safetensors`` (float32) into ``directory``."""
        info = {k: v for k, v in self.as_dict().items() if k not in ("best_layer", "best_layer_accuracy")}
        tensors = {"vector": self.vector.detach().to(torch.float32), "cie": self.cie.detach().to(torch.float32)}
        store.save(Path(directory) / STEM, SCHEMA, info, tensors)
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> FunctionVector:
        """Read what :meth:`save` wrote; strict (:class:`~nnvtv.errors.CheckpointError`, see :mod:`nnvtv.store`)."""
        info, tensors = store.load(Path(directory) / STEM, SCHEMA)
        info["heads"] = [Site.parse(s) for s in info["heads"]]
        return cls(vector=tensors["vector"], cie=tensors["cie"], **info)


@with_progress
def function_vector(
    model: Model,
    task: Task | str,
    *,
    k: int = 10,
    layer: int | None = None,
    shots: int | None = None,
    n_mean_prompts: int = 32,
    n_cie_prompts: int = 8,
    n_queries: int | None = None,
    cie: torch.Tensor | None = None,
    means: Means | None = None,
    sweep_layers: bool = True,
    seed: int = 0,
    max_rows: int = 256,
    fast: bool = True,
    progress: ProgressArg = None,
) -> FunctionVector:
    """Build and score a function vector (Todd et al.) for ``task``.

    Args:
        k: number of top-CIE heads summed.
        layer: residual layer the vector is added to (default ``n_layers // 3``).
        cie: a precomputed ``[n_layers, n_heads]`` ranking (e.g. the mean over several tasks,
            as Todd et al. pick heads by their average indirect effect); default: this task's.
        means: precomputed clean ICL means of every head at group ``last``.
        sweep_layers: also score the vector added at every layer (``layer_accuracy``).
        n_queries: held-out queries scored (default: the whole test split).
        progress: ``None`` (default: a progress display), ``False`` (silent), ``True`` or a
            callback of :class:`~nnvtv.progress.Progress` events: ``means``, ``cie``, ``layers``
            (the vector added at every layer), ``evaluate`` (5 held-out scores); see :mod:`nnvtv.progress`.
    """
    t0 = time.perf_counter()
    check_text_model(model)
    task = get_task(task)
    shots = default_shots(task, shots)
    n_layers, n_heads = model.n_layers, model.n_heads
    layer = n_layers // 3 if layer is None else layer
    int_in("layer", layer, 0, n_layers - 1, what=f"the model has {n_layers} layers")
    int_in("k", k, 1, n_layers * n_heads, what="the number of heads")
    space = model.sites("head", groups=[GROUP])
    if means is None:
        positive_int("n_mean_prompts", n_mean_prompts)
        means = icl_means(model, task, space, shots=shots, n_prompts=n_mean_prompts, seed=seed, progress=progress or False)
    fp = 0
    if cie is None:
        cie = causal_indirect_effects(model, task, means, n_prompts=n_cie_prompts, shots=shots, seed=seed, max_rows=max_rows, fast=fast,
                                      progress=progress or False)  # fmt: skip
        fp += len(space) + 1
    if tuple(cie.shape) != (n_layers, n_heads):
        raise ShapeMismatchError(f"cie must be [n_layers, n_heads] = [{n_layers}, {n_heads}], got {tuple(cie.shape)}")
    top = torch.argsort(cie.flatten(), descending=True, stable=True)[:k].tolist()
    heads = [Site(i // n_heads, i % n_heads, GROUP) for i in top]
    vector = torch.stack([head_vector(model, s, means[s][0]) for s in heads]).sum(0)

    split = task.split(seed)
    queries = split.test if n_queries is None else split.test[: positive_int("n_queries", n_queries)]
    zs = task.zero_shot(model, queries)
    shuf = task.icl(model, queries, split.train, shots=shots, seed=seed + 1, shuffle_labels=True)
    icl = task.icl(model, queries, split.train, shots=shots, seed=seed + 1)
    fv_patch = Patch({Site(layer, None, GROUP): vector[None]}, mode="add")
    layer_acc: list[float] = []
    if sweep_layers:
        lspace = model.sites("layer", groups=[GROUP])
        add = Means({s: vector[None] for s in lspace}, count=1, fingerprint=model.fingerprint)
        if progress:
            progress(Progress("layers", 0, len(lspace)))
        layer_acc = masked_accuracy(model, task, zs, add, lspace, "add", max_rows)
        if progress:
            progress(Progress("layers", len(lspace), len(lspace)))
        fp += len(lspace)
    done = [0]

    def scored(batch: Any, patch: Patch | None = None) -> float:  # one "evaluate" event per score
        if progress and not done[0]:
            progress(Progress("evaluate", 0, 5))
        value = accuracy(model, task, batch, patch)
        done[0] += 1
        if progress:
            progress(Progress("evaluate", done[0], 5))
        return value

    result = FunctionVector(
        model=model.name, fingerprint=model.fingerprint, task=task.name, layer=layer, heads=heads,
        vector=vector, cie=cie.detach().float().cpu(),
        zero_shot=scored(zs), zero_shot_fv=scored(zs, fv_patch),
        shuffled=scored(shuf), shuffled_fv=scored(shuf, fv_patch),
        icl=scored(icl), shots=shots, n_queries=len(zs), n_mean_prompts=means.count,
        n_cie_prompts=n_cie_prompts, forward_passes=fp + 2, seconds=0.0, layer_accuracy=layer_acc, seed=seed,
    )
    result.seconds = time.perf_counter() - t0
    return result
