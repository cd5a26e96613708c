"""The LLM task-vector recipes of the papers, for any wrapped text model (group ``last``).

* :func:`layer_sweep` — task vector by residual replacement (Hendel et al., EMNLP 2023): the
  mean residual stream at the last token of ICL prompts, taken at block ``L``, replaces the
  zero-shot query's; swept over every ``L`` -> held-out accuracy per layer and the best layer.
* :func:`causal_indirect_effects` and :func:`function_vector` — function vectors (Todd et al.,
  ICLR 2024): every head's clean mean output at the last token is patched, one head at a time,
  into shuffled-label ICL prompts; the causal indirect effect (CIE) is the gain in probability
  of the correct answer. The top-``k`` heads' means, mapped through the attention output
  projection and summed, are *added* to the residual stream near depth/3.
* :func:`head_search` — head-level search with each strategy through :func:`nnvtv.find`.

Everything runs through :func:`nnvtv.run_masks` / :class:`nnvtv.Patch` (no hooks). Results are
small dataclasses that save to ``<dir>/<kind>.json`` + ``<dir>/<kind>.safetensors``.

CIE cost: a head patched at the last token changes nothing at earlier positions (causal
attention), so :func:`run_masks` runs the prompt prefix once and every candidate head set only
re-runs the last token against a copy of its key/value cache (``fast=True`` = ``share_prefix``;
exact up to float rounding; tested against the full run).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from nnvtv.activations import Means, mean_activations
from nnvtv.errors import CheckpointError, ConfigError, EmptyDataError, ShapeMismatchError
from nnvtv.find import SearchResult, find
from nnvtv.inputs import ModelInputs
from nnvtv.model import Model
from nnvtv.patching import Patch, run_masks
from nnvtv.sites import Site, SiteSpace
from nnvtv.tasks import Task, TaskBatch
from nnvtv.tasks import get as get_task

__all__ = [
    "LayerSweep",
    "FunctionVector",
    "SearchSummary",
    "layer_sweep",
    "causal_indirect_effects",
    "function_vector",
    "head_search",
    "icl_means",
    "head_vector",
    "plot_layer_sweep",
    "plot_cie",
]

GROUP = "last"


# ----------------------------------------------------------------------------- helpers


def _check_text_model(model: Model) -> None:
    if list(model.streams) != [""] or GROUP not in model.groups[""]:
        raise ConfigError(
            f"the LLM recipes need a single-stack text model with token group {GROUP!r}; "
            f"{model.name!r} has groups {model.groups}"
        )


def _cycle(items: Sequence[Any], n: int) -> list[Any]:
    if not items:
        raise EmptyDataError("the task's train split is empty")
    return [items[i % len(items)] for i in range(n)]


def _chunks(inputs: ModelInputs, size: int) -> list[ModelInputs]:
    return [inputs.rows(slice(s, s + size)) for s in range(0, inputs.batch_size, size)]


def _positive(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def icl_means(
    model: Model,
    task: Task | str,
    space: SiteSpace,
    *,
    shots: int | None = None,
    n_prompts: int = 32,
    seed: int = 0,
    batch_size: int = 16,
) -> Means:
    """Mean activations of ``space`` over ``n_prompts`` clean ICL prompts on the train split.

    Returns:
        :class:`Means`: ``[1, width]`` per site (group ``last`` has one position).
    """
    task = get_task(task)
    shots = shots if shots is not None else getattr(task, "default_shots", 5)
    split = task.split(seed)
    batch = task.icl(model, _cycle(split.train, _positive("n_prompts", n_prompts)), split.train, shots=shots, seed=seed)
    return mean_activations(
        model, _chunks(batch.inputs, batch_size), space,
        meta={"task": task.name, "shots": shots, "n_prompts": n_prompts, "seed": seed},
    )


def _accuracy(model: Model, task: Task, batch: TaskBatch, patch: Patch | None = None, batch_size: int = 16) -> float:
    hits = []
    for start in range(0, len(batch), batch_size):
        rows = slice(start, start + batch_size)
        out = model.run(batch.inputs.rows(rows), patch, readout=True)
        hits.append(task.score(out, batch.targets[rows]))
    return float(torch.cat(hits).mean())


def _masked_accuracy(
    model: Model, task: Task, batch: TaskBatch, means: Means, space: SiteSpace, mode: str, max_rows: int
) -> list[float]:
    """Accuracy with each single site of ``space`` patched (one-hot masks, batched)."""
    masks = torch.eye(len(space), dtype=torch.bool)
    n = len(batch)
    out = run_masks(model, batch.inputs, means, space, masks, mode=mode, max_rows=max(max_rows, n))
    return task.score(out, batch.targets).mean(-1).tolist()  # [n_sites]


def _save(directory: str | Path, kind: str, info: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()}, str(d / f"{kind}.safetensors"))
    (d / f"{kind}.json").write_text(json.dumps({"format": f"nnvtv.{kind}/1", **info}, indent=1))
    return d


def _load(directory: str | Path, kind: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    d = Path(directory)
    meta, tens = d / f"{kind}.json", d / f"{kind}.safetensors"
    if not meta.is_file() or not tens.is_file():
        raise CheckpointError(f"{d} holds no saved {kind}: expected {meta.name} and {tens.name}")
    try:
        info = json.loads(meta.read_text())
        tensors = load_file(str(tens))
    except Exception as exc:  # JSON or safetensors corruption
        raise CheckpointError(f"cannot read the {kind} saved in {d}: {exc}") from exc
    if not isinstance(info, dict) or info.get("format") != f"nnvtv.{kind}/1":
        raise CheckpointError(f"{meta} is not an nnvtv {kind} file (format {info.get('format') if isinstance(info, dict) else None!r})")
    info.pop("format")
    return info, tensors


# ----------------------------------------------------------------------------- a. layer sweep


@dataclass
class LayerSweep:
    """Residual-replacement task vector (Hendel et al.) at every layer.

    Attributes:
        accuracy: held-out zero-shot accuracy with layer ``layers[i]`` replaced, per layer.
        means: ``FloatTensor [n_layers_swept, d_model]``: the ICL mean residual at the last token.
        zero_shot, icl: held-out baselines on the same queries (``shots``-shot ICL).
        forward_passes: patched candidate site sets evaluated (one per layer).
        example_forwards: prompt rows run for them.
    """

    model: str
    fingerprint: str
    task: str
    layers: list[int]
    accuracy: list[float]
    means: torch.Tensor
    zero_shot: float
    icl: float
    shots: int
    n_queries: int
    n_mean_prompts: int
    forward_passes: int
    example_forwards: int
    seconds: float
    seed: int = 0

    @property
    def best_layer(self) -> int:
        """Layer with the highest accuracy (the earliest among ties)."""
        return self.layers[max(range(len(self.layers)), key=lambda i: (self.accuracy[i], -i))]

    @property
    def best_accuracy(self) -> float:
        return max(self.accuracy)

    def patch(self, layer: int | None = None) -> Patch:
        """The task vector at ``layer`` (default: the best) as a replace :class:`Patch`."""
        layer = self.best_layer if layer is None else layer
        if layer not in self.layers:
            raise ConfigError(f"layer {layer} was not swept; swept layers: {self.layers}")
        return Patch({Site(layer, None, GROUP): self.means[self.layers.index(layer)][None]}, mode="replace")

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "means"}
        d.update(best_layer=self.best_layer, best_accuracy=self.best_accuracy)
        return d

    def save(self, directory: str | Path) -> Path:
        info = {k: v for k, v in self.as_dict().items() if k not in ("best_layer", "best_accuracy")}
        return _save(directory, "layer_sweep", info, {"means": self.means})

    @classmethod
    def load(cls, directory: str | Path) -> LayerSweep:
        info, tensors = _load(directory, "layer_sweep")
        try:
            return cls(means=tensors["means"], **info)
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"layer sweep in {directory} is incomplete: {exc}") from exc


def layer_sweep(
    model: Model,
    task: Task | str,
    *,
    layers: Sequence[int] | None = None,
    shots: int | None = None,
    n_mean_prompts: int = 32,
    n_queries: int | None = None,
    seed: int = 0,
    max_rows: int = 256,
    means: Means | None = None,
) -> LayerSweep:
    """Replace the last-token residual of held-out zero-shot queries by its ICL mean, per layer.

    Args:
        model: a wrapped text model.
        task: task or name.
        layers: layers to sweep (default: all).
        shots: demonstrations per ICL prompt (default: the task's).
        n_mean_prompts: ICL prompts (train split) averaged into the means.
        n_queries: held-out queries scored (default: the whole test split).
        seed: seeds the split and the prompts.
        max_rows: rows per batched forward (memory bound).
        means: precomputed :class:`Means` covering the layer sites (skips collection).
    """
    t0 = time.perf_counter()
    _check_text_model(model)
    task = get_task(task)
    shots = shots if shots is not None else getattr(task, "default_shots", 5)
    space = model.sites("layer", layers=layers, groups=[GROUP])
    if means is None:
        means = icl_means(model, task, space, shots=shots, n_prompts=n_mean_prompts, seed=seed)
    split = task.split(seed)
    queries = split.test if n_queries is None else split.test[: _positive("n_queries", n_queries)]
    zs = task.zero_shot(model, queries)
    icl = task.icl(model, queries, split.train, shots=shots, seed=seed + 1)
    acc = _masked_accuracy(model, task, zs, means, space, "replace", max_rows)
    return LayerSweep(
        model=model.name, fingerprint=model.fingerprint, task=task.name,
        layers=[s.layer for s in space], accuracy=acc,
        means=torch.stack([means[s][0] for s in space]),
        zero_shot=_accuracy(model, task, zs), icl=_accuracy(model, task, icl),
        shots=shots, n_queries=len(zs), n_mean_prompts=means.count,
        forward_passes=len(space), example_forwards=len(space) * len(zs),
        seconds=time.perf_counter() - t0, seed=seed,
    )


# ----------------------------------------------------------------------------- b. function vectors


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

    Returns:
        ``FloatTensor [n_layers, n_heads]``.
    """
    _check_text_model(model)
    task = get_task(task)
    shots = shots if shots is not None else getattr(task, "default_shots", 5)
    if shots < 2:
        raise ConfigError(f"shuffled-label prompts need at least 2 shots, got {shots}")
    space = model.sites("head", groups=[GROUP])
    means.check_covers(model, space)
    split = task.split(seed)
    queries = _cycle(split.train, _positive("n_prompts", n_prompts))
    batch = task.icl(model, queries, split.train, shots=shots, seed=seed + 7, shuffle_labels=True)
    masks = torch.cat([torch.zeros(1, len(space), dtype=torch.bool), torch.eye(len(space), dtype=torch.bool)])
    out = run_masks(model, batch.inputs, means, space, masks, max_rows=max(max_rows, len(batch)), share_prefix=fast)
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


@dataclass
class FunctionVector:
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

    def patch(self, layer: int | None = None) -> Patch:
        """An ``add`` :class:`Patch` of the vector at the last token of ``layer`` (default: its own)."""
        layer = self.layer if layer is None else layer
        return Patch({Site(layer, None, GROUP): self.vector[None]}, mode="add")

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("vector", "cie")}
        d["heads"] = [str(s) for s in self.heads]
        d["best_layer"] = self.best_layer
        d["best_layer_accuracy"] = max(self.layer_accuracy) if self.layer_accuracy else None
        return d

    def save(self, directory: str | Path) -> Path:
        info = {k: v for k, v in self.as_dict().items() if k not in ("best_layer", "best_layer_accuracy")}
        return _save(directory, "function_vector", info, {"vector": self.vector, "cie": self.cie})

    @classmethod
    def load(cls, directory: str | Path) -> FunctionVector:
        info, tensors = _load(directory, "function_vector")
        try:
            info["heads"] = [Site.parse(s) for s in info["heads"]]
            return cls(vector=tensors["vector"], cie=tensors["cie"], **info)
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"function vector in {directory} is incomplete: {exc}") from exc


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
    """
    t0 = time.perf_counter()
    _check_text_model(model)
    task = get_task(task)
    shots = shots if shots is not None else getattr(task, "default_shots", 5)
    n_layers, n_heads = model.n_layers, model.n_heads
    layer = n_layers // 3 if layer is None else layer
    if not 0 <= layer < n_layers:
        raise ConfigError(f"layer {layer} out of range [0, {n_layers})")
    if not 1 <= _positive("k", k) <= n_layers * n_heads:
        raise ConfigError(f"k must be in [1, {n_layers * n_heads}] (the number of heads), got {k}")
    space = model.sites("head", groups=[GROUP])
    if means is None:
        means = icl_means(model, task, space, shots=shots, n_prompts=n_mean_prompts, seed=seed)
    fp = 0
    if cie is None:
        cie = causal_indirect_effects(model, task, means, n_prompts=n_cie_prompts, shots=shots, seed=seed, max_rows=max_rows, fast=fast)
        fp += len(space) + 1
    if tuple(cie.shape) != (n_layers, n_heads):
        raise ShapeMismatchError(f"cie must be [n_layers, n_heads] = [{n_layers}, {n_heads}], got {tuple(cie.shape)}")
    top = torch.argsort(cie.flatten(), descending=True, stable=True)[:k].tolist()
    heads = [Site(i // n_heads, i % n_heads, GROUP) for i in top]
    vector = torch.stack([head_vector(model, s, means[s][0]) for s in heads]).sum(0)

    split = task.split(seed)
    queries = split.test if n_queries is None else split.test[: _positive("n_queries", n_queries)]
    zs = task.zero_shot(model, queries)
    shuf = task.icl(model, queries, split.train, shots=shots, seed=seed + 1, shuffle_labels=True)
    icl = task.icl(model, queries, split.train, shots=shots, seed=seed + 1)
    fv_patch = Patch({Site(layer, None, GROUP): vector[None]}, mode="add")
    layer_acc: list[float] = []
    if sweep_layers:
        lspace = model.sites("layer", groups=[GROUP])
        add = Means({s: vector[None] for s in lspace}, count=1, fingerprint=model.fingerprint)
        layer_acc = _masked_accuracy(model, task, zs, add, lspace, "add", max_rows)
        fp += len(lspace)
    result = FunctionVector(
        model=model.name, fingerprint=model.fingerprint, task=task.name, layer=layer, heads=heads,
        vector=vector, cie=cie.detach().float().cpu(),
        zero_shot=_accuracy(model, task, zs), zero_shot_fv=_accuracy(model, task, zs, fv_patch),
        shuffled=_accuracy(model, task, shuf), shuffled_fv=_accuracy(model, task, shuf, fv_patch),
        icl=_accuracy(model, task, icl), shots=shots, n_queries=len(zs), n_mean_prompts=means.count,
        n_cie_prompts=n_cie_prompts, forward_passes=fp + 2, seconds=0.0, layer_accuracy=layer_acc, seed=seed,
    )
    result.seconds = time.perf_counter() - t0
    return result


# ----------------------------------------------------------------------------- c. head search


@dataclass
class SearchSummary:
    """One :func:`nnvtv.find` run, reduced to what a benchmark table needs."""

    model: str
    task: str
    strategy: str
    budget: int
    accuracy: float
    zero_shot: float
    icl: float
    n_sites: int
    total_sites: int
    sites: list[str]
    forward_passes: int
    example_forwards: int
    seconds: float

    @classmethod
    def from_result(cls, result: SearchResult) -> SearchSummary:
        s = result.scores
        return cls(
            model=result.task_vector.model, task=result.task_vector.task, strategy=result.task_vector.strategy,
            budget=result.run.budget, accuracy=float(s.task_vector if s.task_vector is not None else math.nan),
            zero_shot=s.zero_shot, icl=s.icl, n_sites=result.n_sites, total_sites=len(result.space),
            sites=[str(x) for x in result.task_vector.sites], forward_passes=result.forward_passes,
            example_forwards=result.example_forwards, seconds=result.timings["total"],
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def head_search(
    model: Model,
    task: Task | str,
    strategies: Sequence[str] = ("reinforce", "greedy", "cmaes", "ranking"),
    *,
    budget: int = 256,
    seed: int = 0,
    options: dict[str, dict[str, Any]] | None = None,
    **find_options: Any,
) -> list[SearchSummary]:
    """Head-level search (group ``last``, mean replacement) with each strategy at ``budget``.

    Args:
        strategies: strategy names, each run once through :func:`nnvtv.find`.
        budget: forward passes (candidate site sets) per strategy.
        options: per-strategy options, ``{"greedy": {"candidates": 32}}``.
        **find_options: passed to :func:`nnvtv.find` (``shots``, ``n_mean_prompts``, ``sites`` as
            an explicit :class:`SiteSpace` ...).
    """
    _check_text_model(model)
    if not strategies:
        raise ConfigError("head_search needs at least one strategy")
    out = []
    for name in strategies:
        opts = dict((options or {}).get(name, {}))
        kw = {"sites": "head", "groups": [GROUP], **find_options, **opts}
        if not isinstance(kw["sites"], str):
            kw.pop("groups", None)  # an explicit SiteSpace already names its groups
        res = find(model, task, strategy=name, budget=budget, seed=seed, **kw)
        out.append(SearchSummary.from_result(res))
    return out


# ----------------------------------------------------------------------------- figures


def plot_layer_sweep(sweeps: Sequence[LayerSweep], path: str | Path, *, fvs: Sequence[FunctionVector] = ()) -> Path:
    """Held-out accuracy against layer, one line per task (report.py style, Agg backend).

    Solid: residual replacement (task vector); dotted, if ``fvs`` are given: the function
    vector added at that layer. ICL accuracy of each task is marked on the right edge.
    """
    from nnvtv.report import plt  # Agg is selected there

    if not sweeps:
        raise EmptyDataError("plot_layer_sweep needs at least one LayerSweep")
    fig, ax = plt.subplots(figsize=(7, 4))
    fv_of = {f.task: f for f in fvs}
    for i, s in enumerate(sweeps):
        color = f"C{i % 10}"
        ax.plot(s.layers, s.accuracy, "-o", ms=3, color=color, label=f"{s.task} (ICL {s.icl:.2f})")
        ax.plot([s.layers[-1] + 0.8], [s.icl], "<", color=color, ms=6)
        f = fv_of.get(s.task)
        if f is not None and f.layer_accuracy:
            ax.plot(range(len(f.layer_accuracy)), f.layer_accuracy, ":", color=color, lw=1.2)
    ax.set_xlabel("layer (block output patched at the last token)")
    ax.set_ylabel("held-out zero-shot accuracy")
    ax.set_ylim(-0.02, 1.02)
    title = f"{sweeps[0].model}: task vector by residual replacement (solid)"
    if fvs:
        title += ", function vector added (dotted)"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_cie(cie: torch.Tensor, path: str | Path, *, heads: Sequence[Site] = (), title: str = "") -> Path:
    """Layer x head heatmap of causal indirect effects ``[n_layers, n_heads]``; ``heads`` outlined."""
    from nnvtv.report import plt

    a = cie.detach().float().cpu().numpy()
    if a.ndim != 2:
        raise ShapeMismatchError(f"cie must be [n_layers, n_heads], got {tuple(a.shape)}")
    lim = float(abs(a).max()) or 1.0
    fig, ax = plt.subplots(figsize=(max(5.0, 0.28 * a.shape[0] + 2), 0.3 * a.shape[1] + 1.6))
    im = ax.imshow(a.T, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    for s in heads:
        ax.add_patch(plt.Rectangle((s.layer - 0.5, s.head - 0.5), 1, 1, fill=False, ec="black", lw=1.5))
    ax.set_xlabel("layer")
    ax.set_ylabel("head")
    ax.set_xticks(range(0, a.shape[0], max(1, a.shape[0] // 15)))
    ax.set_yticks(range(a.shape[1]))
    fig.colorbar(im, ax=ax, label="causal indirect effect (P(correct) gain)")
    ax.set_title(title or "causal indirect effect per head (outlined: function-vector heads)", fontsize=9)
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
