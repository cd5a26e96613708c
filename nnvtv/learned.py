"""Learned task vectors: patched values optimised by gradient descent, not averaged.

A found task vector patches its sites with mean ICL activations. "Learned Task Vectors"
(ICLR 2026) trains the values themselves on the task loss of zero-shot queries and finds
that they beat the extracted means. :func:`learn` does that at the sites a search found (a
:class:`~nnvtv.vector.TaskVector`, or any list of sites) or at one residual layer
(``layer=L``: ``Site(L, None, group)`` for each group, as in the paper), starting from the ICL
means (``init="mean"``) or from zeros (``init="zeros"``, natural with ``mode="add"``):

* each value is ``init + scale * delta`` with ``delta`` trained by Adam; ``scale`` is the
  RMS of the site's extracted mean, so ``lr`` is a step in units of the site's own size
  and one ``lr`` suits any model;
* the loss is :func:`nnvtv.surrogate.gradient_loss` on the training queries' zero-shot
  prompts: the task loss (cross-entropy for word pairs) or the surrogate where the metric has
  no gradient (visual tasks);
* a share ``validation`` of the training queries is held out of the fit; the values with the
  lowest validation loss are kept (the extracted means included, at step 0), and
  ``patience`` stops early;
* cost is counted in forward-pass equivalents of the training queries: a training step 3
  (forward and backward), each validation pass 1, the final fit-loss pass 1.

The result is an ordinary :class:`TaskVector` (``strategy="learned"``, its training record in
:attr:`TaskVector.learned`), saved, loaded and applied like any other, with held-out scores
beside those of the extracted means at the same sites.

>>> found = nnvtv.find(model, "toy-perm_a", budget=256)                    # doctest: +SKIP
>>> res = nnvtv.learn(model, start=found.task_vector, steps=100)           # doctest: +SKIP
>>> res.scores.task_vector, res.extracted_score                            # doctest: +SKIP
>>> res = nnvtv.learn(model, "toy-perm_a", layer=1, init="zeros", mode="add")  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nnvtv import catalog
from nnvtv.errors import ConfigError, RemoteError
from nnvtv.evaluation import check_fit, check_model, check_shots, evaluate, score_batch
from nnvtv.find import SearchResult
from nnvtv.learn_plan import LearnPlan, plan_learning, planned_cost
from nnvtv.mean_prompts import icl_means
from nnvtv.model import Model
from nnvtv.patching import Patch
from nnvtv.progress import Progress, ProgressArg, with_progress
from nnvtv.scores import Scores
from nnvtv.sites import Site
from nnvtv.surrogate import gradient_loss
from nnvtv.tasks import Task
from nnvtv.vector import TaskVector

__all__ = ["learn", "LearnResult", "INITS"]

#: how the values start: the extracted ICL means, or zeros
INITS = ("mean", "zeros")

ProgressFn = Callable[[Progress], None]


@dataclass
class LearnResult:
    """What :func:`learn` returns.

    Attributes:
        task_vector: the learned :class:`TaskVector` (``strategy="learned"``, training record
            in :attr:`TaskVector.learned`, held-out scores in ``scores`` with the extracted
            means' score under ``"extracted"``).
        extracted: the same sites with their extracted ICL means (the baseline).
        scores: held-out :class:`~nnvtv.find.Scores`; ``task_vector`` is the learned vector's.
        extracted_score: the extracted means' held-out score (same metric, same queries).
        history: one row per step: ``step``, ``train_loss`` (fit queries, the values after
            ``step`` updates) and, where measured, ``validation_loss``.
        forward_passes: forward-pass equivalents spent (training step 3, validation pass 1,
            the final fit-loss pass 1; the means are not counted, as in :func:`nnvtv.find`).
        timings: seconds per stage (``means``, ``learn``, ``evaluate``, ``total``).
        task: the task.
        warnings: what makes the numbers hard to read, in words.
    """

    task_vector: TaskVector
    extracted: TaskVector
    scores: Scores
    extracted_score: float
    history: list[dict[str, Any]]
    forward_passes: int
    timings: dict[str, float]
    task: Task
    warnings: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        try:
            tv, s = self.task_vector, self.scores
            rec = tv.learned or {}
            return (
                f"LearnResult({tv.model} / {tv.task}: {len(tv)} site{'s' if len(tv) != 1 else ''}, held-out {s.metric} "
                f"learned {s.task_vector:.3g} vs extracted {self.extracted_score:.3g} (ICL {s.icl:.3g}, zero-shot "
                f"{s.zero_shot:.3g}), {rec.get('steps')} steps, {self.forward_passes} forward passes)"
            )
        except Exception:  # noqa: BLE001 - a repr never raises
            return "LearnResult(...)"

    def _repr_html_(self) -> str:
        from nnvtv.display_html import learn_result_html

        return learn_result_html(self)

    def plot(self, path: str | Path | None = None) -> Any:
        """The training curve (fit and validation loss against the step), a matplotlib Figure;
        also saved to ``path`` if given."""
        from nnvtv.figures import learn_history_figure, save_figure

        fig = learn_history_figure(self)
        if path is not None:
            save_figure(fig, path)
        return fig

    @property
    def fit_loss(self) -> dict[str, float]:
        """Loss on the fit queries: ``{"extracted": ..., "learned": ...}``."""
        return dict(self.task_vector.learned["fit_loss"]) if self.task_vector.learned else {}

    def as_dict(self) -> dict[str, Any]:
        tv = self.task_vector
        return {
            "model": tv.model,
            "fingerprint": tv.fingerprint,
            "task": tv.task,
            "strategy": tv.strategy,
            "scores": self.scores.as_dict(),
            "extracted_score": self.extracted_score,
            "fit_loss": self.fit_loss,
            "warnings": list(self.warnings),
            "n_sites": len(tv),
            "sites": [str(s) for s in tv.sites],
            "forward_passes": self.forward_passes,
            "learned": tv.learned,
            "timings": self.timings,
            "history": self.history,
        }


def _resolve_sites(model: Model, start: Any, layer: Any, stream: Any, groups: Any) -> tuple[list[Site], TaskVector | None]:
    """The sites to learn and the vector they came from (if any)."""
    if isinstance(start, SearchResult):
        start = start.task_vector
    if start is not None and layer is not None:
        raise ConfigError(f"give the sites to learn either as start= (a task vector or sites) or as layer=, not both (layer={layer!r})")
    if isinstance(start, TaskVector):
        start.check_model(model)
        if len(start) == 0:
            raise ConfigError("start is a task vector with no sites; give one with sites, or layer=")
        return list(start.values), start
    if start is not None:
        if isinstance(start, (str, Site)) or not all(isinstance(s, Site) for s in start):
            raise ConfigError(
                f"start must be a TaskVector (TaskVector.load(DIR)), a SearchResult or a list of nnvtv.Site; got {start!r}"
            )
        sites = list(dict.fromkeys(start))
        if not sites:
            raise ConfigError("start is an empty list of sites; give at least one site, or layer=")
        for s in sites:
            model.check_site(s)
        return sites, None
    if layer is None:
        raise ConfigError("learn needs the sites to train: start= (a task vector, e.g. find(...).task_vector, or sites) or layer=L")
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise ConfigError(f"layer must be an int (a layer index; negative counts from the end), got {layer!r}")
    if stream is None and len(model.streams) > 1:
        raise ConfigError(f"model {model.name} has several streams {list(model.streams)}; pass stream= to say which one layer={layer} is in")
    if stream is not None:
        model.stream(stream)  # SiteError naming the streams
    if groups is not None and (isinstance(groups, str) or not all(isinstance(g, str) for g in groups)):
        raise ConfigError(f"groups must be a list of group names such as ['last'], got {groups!r}")
    return list(model.sites("layer", layers=[layer], groups=groups, stream=stream)), None


@with_progress
def learn(
    model: Model | str,
    task: Task | str | None = None,
    start: TaskVector | SearchResult | Sequence[Site] | None = None,
    *,
    layer: int | None = None,
    stream: str | None = None,
    groups: Sequence[str] | None = None,
    init: str = "mean",
    mode: str | None = None,
    steps: int | None = None,
    budget: int | None = None,
    lr: float = 0.05,
    validation: float = 0.25,
    eval_every: int = 5,
    patience: int | None = None,
    seed: int | None = None,
    shots: int | None = None,
    n_mean_prompts: int | None = None,
    mean_prompts: str | None = None,
    mean_candidates: int | None = None,
    progress: ProgressArg = None,
) -> LearnResult:
    """Learn a task vector's values by gradient descent (see the module docstring).

    Args:
        model: a wrapped model or a catalogue name.
        task: a task, its name or a word-pair JSON file; default: the start vector's own task,
            else the model's default task.
        start: the sites to train: a :class:`TaskVector` (or a :class:`SearchResult`) found on
            this model (its values are the extracted means; its seed, shots and means options
            are the defaults here), or a list of :class:`Site`.
        layer, stream, groups: instead of ``start``: the residual stream of ``layer`` at
            ``groups`` (default every group) of ``stream`` (needed when the model has several).
        init: ``"mean"`` (start at the extracted means) or ``"zeros"``.
        mode: ``"replace"`` or ``"add"``; default the start vector's, else ``"add"`` with
            ``init="zeros"`` and ``"replace"`` otherwise.
        steps: Adam steps (default 100 unless ``budget`` is given; not both).
        budget: forward-pass equivalents to spend instead of ``steps`` (the most steps whose
            training, validation and final passes fit).
        lr: Adam step size in units of each site's extracted-mean RMS (> 0).
        validation: share of the training queries held out to choose the best step, in
            ``[0, 1)``; ``0``: the step with the lowest training loss is kept.
        eval_every: steps between validation passes (and checks for ``patience``).
        patience: stop after this many validation passes without improvement (``None``: never).
        seed: seeds the split, the prompts and the validation split (default: the start
            vector's, else 0).
        shots: demonstrations per ICL prompt for the means and the ICL score.
        n_mean_prompts, mean_prompts, mean_candidates: the means, as in :func:`nnvtv.find`
            (default: the start vector's; a vector's own values are used as its means unless
            one of these is given or the vector is itself learned).
        progress: as in :func:`nnvtv.find` (``None``: a display, ``False``: silent, or a callback
            receiving :class:`~nnvtv.progress.Progress` events: stages ``means``, ``learn``,
            ``evaluate``).

    Every argument is checked before the first forward pass.
    """
    t0 = time.perf_counter()
    if isinstance(model, str):
        model = catalog.load(model)
    model = check_model(model)
    if model.remote:
        raise RemoteError(
            "learned task vectors backpropagate into the patched values, and nnvtv runs no gradients through a remote "
            "(NDIF) trace; load the model locally (nnvtv.load) to learn a vector, then use it anywhere"
        )
    given = dict(start=start, layer=layer, stream=stream, groups=groups, init=init, mode=mode, steps=steps, budget=budget,
                 lr=lr, validation=validation, eval_every=eval_every, patience=patience, seed=seed, shots=shots,
                 n_mean_prompts=n_mean_prompts, mean_prompts=mean_prompts, mean_candidates=mean_candidates)  # fmt: skip
    sites, vector = _resolve_sites(model, start, layer, stream, groups)
    plan = plan_learning(model, task, vector, sites, given)
    task, split = plan.task, plan.split
    check_fit(model, task)
    check_shots(task, split, plan.shots, train_queries=True)
    timings: dict[str, float] = {}

    # 1. the extracted means at these sites (the vector's own values when they are its means)
    t = time.perf_counter()
    if plan.reuse_vector_values and vector is not None:
        extracted_values = {s: v.detach().float().clone() for s, v in vector.values.items()}
        mean_record = {k: vector.meta[k] for k in ("mean_prompts", "n_mean_prompts", "mean_candidates") if k in vector.meta}
    else:

        def mean_progress(done: int, total: int) -> None:
            if progress:
                progress(Progress("means", done, total))

        means, _, mean_record = icl_means(
            model, task, split, sites, shots=plan.shots, n_mean_prompts=plan.n_mean_prompts, seed=plan.seed,
            mean_prompts=plan.mean_prompts, mean_candidates=plan.mean_candidates, progress=mean_progress,
        )  # fmt: skip
        extracted_values = {s: means[s].float().clone() for s in sites}
    bad = [s for s, v in extracted_values.items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise ConfigError(f"the extracted means of {len(bad)} site(s), e.g. {bad[0]}, are not finite; load the model in float32")
    timings["means"] = time.perf_counter() - t

    # 2. training
    t = time.perf_counter()
    trained = _train(model, task, split, plan, extracted_values, progress)
    timings["learn"] = time.perf_counter() - t

    # 3. vectors and held-out scores
    t = time.perf_counter()
    common = dict(mode=plan.mode, fingerprint=model.fingerprint, model=model.name, task=task.name,
                  space=[str(s) for s in sites], task_data=task.to_dict())  # fmt: skip
    meta = {"shots": plan.shots, "seed": plan.seed, **mean_record}
    if vector is not None:
        meta["learned_from"] = {"strategy": vector.strategy, "n_sites": len(vector)}
    extracted = TaskVector(values=extracted_values, strategy=vector.strategy if vector is not None and not vector.learned else "means",
                           meta=dict(meta), **common)  # fmt: skip
    learned = TaskVector(values=trained.values, strategy="learned", meta=dict(meta), **common)
    scores = evaluate(model, task, learned, shots=plan.shots, seed=plan.seed)
    zs_test = task.zero_shot(model, split.test)
    extracted_score = score_batch(model, task, zs_test, extracted.patch())
    timings["evaluate"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    record = {**trained.record, "seconds": round(timings["learn"], 3), "extracted_score": extracted_score}
    learned.learned = record
    learned.scores = {**scores.as_dict(), "extracted": extracted_score}
    extracted.scores = {**scores.as_dict(), "task_vector": extracted_score}
    if progress:
        progress(Progress("learn", trained.record["steps"], trained.record["planned_steps"], {"done": True}))
    return LearnResult(
        task_vector=learned, extracted=extracted, scores=scores, extracted_score=extracted_score, history=trained.history,
        forward_passes=record["forward_passes"], timings=timings, task=task, warnings=list(scores.warnings),
    )  # fmt: skip


@dataclass
class _Trained:
    values: dict[Site, torch.Tensor]
    history: list[dict[str, Any]]
    record: dict[str, Any]


def _r(x: float) -> float:
    return float(f"{x:.6g}")


def _train(model: Model, task: Task, split: Any, plan: LearnPlan, extracted: dict[Site, torch.Tensor],
           progress: ProgressFn | None) -> _Trained:  # fmt: skip
    """Adam on ``delta`` (values ``init + scale * delta``); keeps the best validated values."""
    zs = task.zero_shot(model, split.train)
    n = len(zs)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(plan.seed))
    n_val = plan.n_validation(n)
    fit_rows, val_rows = order[n_val:].sort().values, order[:n_val].sort().values
    fit_inputs, fit_targets = zs.inputs.rows(fit_rows), zs.targets[fit_rows]
    fit_loss = gradient_loss(model, task, fit_targets)
    val_loss = gradient_loss(model, task, zs.targets[val_rows]) if n_val else None
    val_inputs = zs.inputs.rows(val_rows) if n_val else None
    device = model.device
    sites = list(extracted)
    init = {s: (extracted[s] if plan.init == "mean" else torch.zeros_like(extracted[s])) for s in sites}
    scale = {s: float(extracted[s].pow(2).mean().sqrt()) or 1.0 for s in sites}
    deltas = {s: torch.zeros_like(extracted[s], device=device, requires_grad=True) for s in sites}
    init = {s: v.to(device) for s, v in init.items()}
    optimizer = torch.optim.Adam(list(deltas.values()), lr=plan.lr)

    def values() -> dict[Site, torch.Tensor]:
        return {s: init[s] + scale[s] * deltas[s] for s in sites}

    def snapshot() -> dict[Site, torch.Tensor]:
        return {s: v.detach().float().cpu().clone() for s, v in values().items()}

    def validate() -> float:
        assert val_loss is not None and val_inputs is not None
        with torch.no_grad():
            return float(val_loss.per_query(model, val_inputs, Patch(values(), plan.mode), grad=False).mean())

    history: list[dict[str, Any]] = []
    spent = 0
    best: tuple[float, int, dict[Site, torch.Tensor]] | None = None
    since_best = 0
    steps = plan.steps
    done = 0
    for step in range(steps + 1):
        row: dict[str, Any] = {"step": step}
        at_eval = n_val and (step % plan.eval_every == 0 or step == steps)
        if at_eval:
            v = validate()
            spent += 1
            row["validation_loss"] = _r(v)
            if best is None or v < best[0]:
                best, since_best = (v, step, snapshot()), 0
            else:
                since_best += 1
        if step == steps or (plan.patience is not None and since_best >= plan.patience):
            history.append(row)
            break
        loss = fit_loss.per_query(model, fit_inputs, Patch(values(), plan.mode)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        spent += 3
        done = step + 1
        row["train_loss"] = _r(float(loss.detach()))
        if not n_val and (best is None or float(loss.detach()) < best[0]):
            best = (float(loss.detach()), step, snapshot())
        history.append(row)
        if progress:
            progress(Progress("learn", done, steps, {"train_loss": float(loss.detach())}))
    # the loss of the values after the last update, on the fit queries (the final pass)
    with torch.no_grad():
        last = float(fit_loss.per_query(model, fit_inputs, Patch(values(), plan.mode), grad=False).mean())
    spent += 1
    history[-1]["train_loss"] = _r(last)
    if not n_val and (best is None or last < best[0]):
        best = (last, done, snapshot())
    assert best is not None
    chosen = best[1]
    train_at = {h["step"]: h["train_loss"] for h in history if "train_loss" in h}
    record = {
        "steps": done, "planned_steps": steps, "best_step": chosen, "lr": plan.lr, "init": plan.init, "mode": plan.mode,
        "optimizer": "adam", "lr_unit": "RMS of each site's extracted mean",
        "validation": plan.validation, "n_fit": n - n_val, "n_validation": n_val, "eval_every": plan.eval_every,
        "patience": plan.patience, "stopped_early": done < steps, "loss": fit_loss.as_dict(),
        "fit_loss": {"extracted": train_at.get(0) if plan.init == "mean" else None, "learned": train_at.get(chosen)},
        "train_losses": [h.get("train_loss") for h in history],
        "validation_losses": {str(h["step"]): h["validation_loss"] for h in history if "validation_loss" in h},
        "forward_passes": spent, "planned_forward_passes": planned_cost(steps, plan, n_val > 0),
    }  # fmt: skip
    return _Trained(values=best[2], history=history, record=record)
