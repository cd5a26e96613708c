"""``nnvtv find``, ``evaluate``, ``learn`` and ``compare``: searching, scoring and training task vectors."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from nnvtv.cli.common import (
    DEVICE_HELP,
    DTYPE_HELP,
    _at_least,
    _catalogue_default,
    _check_common,
    _check_model_task,
    _ending_in_one_line,
    _fail,
    _int_list,
    _interrupted,
    _print_warnings,
    _staged,
    app,
    err,
    out,
)
from nnvtv.errors import ConfigError, NnvtvError
from nnvtv.progress import RichBar


@app.command()
def find(
    model: Annotated[str, typer.Option(help="catalogue name (see `nnvtv models`) or a local HF folder")] = "toy-text",
    task: Annotated[str | None, typer.Option(help="task name (see `nnvtv tasks --model NAME`) or a word-pair JSON file",
                                              show_default="the model's default task")] = None,
    strategy: Annotated[str, typer.Option(help="reinforce | greedy | cmaes | ranking | attribution | gradient")] = "reinforce",
    budget: Annotated[int | None, typer.Option(help="forward-pass equivalents the search may spend (a candidate site set 1, a gradient row 3)",
                                               show_default=_catalogue_default("budget", "4096"))] = None,
    seed: Annotated[int, typer.Option(help="seeds the split, prompts and search (>= 0)")] = 0,
    shots: Annotated[int | None, typer.Option(help="demonstrations per ICL prompt (>= 1)",
                                              show_default="the task's: 5 for word-pair tasks, 1 for visual tasks")] = None,
    sites: Annotated[str, typer.Option(help="head | layer")] = "head",
    sparsity: Annotated[float | None, typer.Option(help="loss penalty per selected site (>= 0)",
                                                   show_default=_catalogue_default("sparsity", "0"))] = None,
    mean_prompts: Annotated[str, typer.Option(help="random | best: the means average random ICL prompts, or the best of "
                                                   "--mean-candidates by their own task loss (the visual task-vector recipe)")] = "random",
    mean_candidates: Annotated[int | None, typer.Option(help="ICL prompts scored for --mean-prompts best (>= 64)",
                                                        show_default="8 x 64")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="write the task vector, figures and results.json (last) here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print results as JSON on stdout")] = False,
    remote: Annotated[bool, typer.Option("--remote", help="run on NDIF: --model is a hub id (needs NDIF_API_KEY)")] = False,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    dtype: Annotated[str, typer.Option(help=DTYPE_HELP)] = "auto",
) -> None:
    """Find a task vector: search for the few sites whose ICL means make the model do the task zero-shot."""
    import nnvtv
    from nnvtv.find import find as run_find

    try:
        _check_common(budget=budget, seed=seed, strategy=strategy, sites=sites, sparsity=sparsity, out_dir=out_dir)
        if shots is not None and shots < 1:
            raise ConfigError(
                f"--shots must be >= 1, got {shots}: ICL with 0 demonstrations is the zero-shot prompt, and a task "
                "vector is the mean over prompts with demonstrations"
            )
        _check_mean_prompts(mean_prompts, mean_candidates)
        task_obj = nnvtv.tasks.get(task) if task is not None else None
        if task_obj is not None and not remote:
            _check_model_task(model, task_obj)
        with RichBar(err) as on_progress:  # the same Progress events as in Python (nnvtv.progress)
            m = nnvtv.wrap(model, remote=True) if remote else nnvtv.load(model, device=device, dtype=dtype)
            result = run_find(m, task_obj, strategy=strategy, budget=budget, seed=seed, shots=shots, sites=sites, sparsity=sparsity,
                              mean_prompts=mean_prompts, mean_candidates=mean_candidates, progress=on_progress)  # fmt: skip
    except NnvtvError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _interrupted(out_dir)
    data = result.as_dict()
    if m.remote:
        steps = len(result.history)
        data["remote_requests"] = m.remote_requests
        err.print(f"remote: {m.remote_requests} requests, {steps} search steps (one request per step, "
                  "plus means, held-out scores and evaluation)")
    written: list[str] = []
    if out_dir is not None:
        with _ending_in_one_line(out_dir):
            written = _write_find(m, result, data, out_dir, seed)
    if as_json:
        sys.stdout.write(json.dumps(data, indent=1) + "\n")
        return
    from nnvtv.report import results_table

    out.print(results_table(result))
    out.print(f"sites: {', '.join(data['sites']) or '(none)'}", soft_wrap=True)
    _print_warnings(result.warnings)
    if out_dir is not None:
        out.print(f"wrote {out_dir}/: {', '.join(written)}", soft_wrap=True)


def _check_mean_prompts(mean_prompts: str | None, mean_candidates: int | None) -> None:
    """``--mean-prompts`` / ``--mean-candidates``, named as typed."""
    from nnvtv.mean_prompts import MEAN_PROMPTS

    if mean_prompts is not None and mean_prompts not in MEAN_PROMPTS:
        raise ConfigError(f"--mean-prompts must be one of {', '.join(MEAN_PROMPTS)}; got {mean_prompts!r}")
    _at_least("--mean-candidates", mean_candidates, 1, "ICL prompts scored to choose the best")
    if mean_candidates is not None and mean_prompts != "best":
        raise ConfigError("--mean-candidates only applies with --mean-prompts best (the candidates the best prompts are chosen from)")


def _write_find(model: Any, result: Any, data: dict[str, Any], out_dir: Path, seed: int) -> list[str]:
    """Every file of ``find --out``, ``results.json`` last; returns their names in writing order."""
    from nnvtv.report import plot_history, plot_sites

    written: list[str] = []
    with _staged(out_dir, "results.json") as tmp:
        result.task_vector.save(tmp)
        written += ["task_vector.safetensors", "task_vector.json"]
        plot_sites(result.task_vector, tmp / "sites.png")
        plot_history(result, tmp / "history.png")
        written += ["sites.png", "history.png"]
        if _example_images(model, result, tmp, seed):
            written.append("examples.png")
        (tmp / "results.json").write_text(json.dumps(data, indent=1))
        written.append("results.json")
    return written


@app.command()
def evaluate(
    vector: Annotated[Path, typer.Option(help="directory written by `nnvtv find --out`")],
    model: Annotated[str | None, typer.Option(help="model to apply it to", show_default="the one it was found on")] = None,
    task: Annotated[str | None, typer.Option(help="task name or word-pair JSON file",
                                              show_default="the vector's own task, saved with it")] = None,
    shots: Annotated[int | None, typer.Option(help="demonstrations per ICL prompt (>= 0)", show_default="as when found")] = None,
    seed: Annotated[int | None, typer.Option(help="seeds the split and demonstrations (>= 0)", show_default="as when found")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    dtype: Annotated[str, typer.Option(help=DTYPE_HELP)] = "auto",
) -> None:
    """Re-apply a saved task vector and measure it on held-out queries (its task travels with it)."""
    import nnvtv
    from nnvtv.find import evaluate as run_evaluate

    try:
        _at_least("--shots", shots, 0, "demonstrations per ICL prompt")
        _at_least("--seed", seed, 0, "a non-negative integer")
        if not vector.exists():
            raise ConfigError(f"--vector {vector} does not exist; give a folder written by `nnvtv find --out`")
        tv = nnvtv.TaskVector.load(vector)
        task_obj = nnvtv.tasks.get(task) if task is not None else tv.task_object()
        name = model or tv.model
        _check_model_task(name, task_obj)
        m = nnvtv.load(name, device=device, dtype=dtype)
        shots_ = shots if shots is not None else tv.meta.get("shots")
        seed_ = seed if seed is not None else tv.meta.get("seed", 0)
        scores = run_evaluate(m, task_obj, tv, shots=shots_, seed=seed_)
    except NnvtvError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _interrupted(None)
    warnings = list(scores.warnings)
    if task_obj.name != tv.task:
        warnings.insert(0, f"the vector was found on task {tv.task!r}; it is evaluated here on {task_obj.name!r}")
    data = {"model": m.name, "task": task_obj.name, "n_sites": len(tv), "scores": scores.as_dict(), "saved_scores": tv.scores,
            "warnings": warnings}  # fmt: skip
    if as_json:
        sys.stdout.write(json.dumps(data, indent=1) + "\n")
        return
    t = Table(title=f"{m.name} / {task_obj.name}: {len(tv)} sites from {vector}")
    t.add_column("")
    t.add_column("now", justify="right")
    t.add_column("when saved", justify="right")
    for key in ("zero_shot", "icl", "task_vector"):
        saved = tv.scores.get(key)
        t.add_row(key.replace("_", " "), f"{getattr(scores, key):.3f}", "n/a" if saved is None else f"{saved:.3f}")
    out.print(t)
    _print_warnings(warnings)


@app.command()
def compare(
    models: Annotated[str, typer.Option(help="comma-separated catalogue names or local HF folders")] = "toy-text,toy-text-natural",
    task: Annotated[str | None, typer.Option(help="task name or word-pair JSON file", show_default="the first model's default task")] = None,
    seeds: Annotated[str, typer.Option(help="comma-separated seeds (>= 0), each model runs every seed")] = "0",
    strategy: Annotated[str, typer.Option(help="reinforce | greedy | cmaes | ranking | attribution | gradient")] = "reinforce",
    budget: Annotated[int | None, typer.Option(help="forward-pass equivalents per run (equal cost for every run)",
                                               show_default=_catalogue_default("budget", "4096"))] = None,
    sites: Annotated[str, typer.Option(help="head | layer")] = "head",
    transfer: Annotated[bool, typer.Option(help="apply every run's vector to every other run's model")] = True,
    out_dir: Annotated[Path | None, typer.Option("--out", help="write compare.json (last), compare.png and vectors/ here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the comparison as JSON on stdout")] = False,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    dtype: Annotated[str, typer.Option(help=DTYPE_HELP)] = "auto",
) -> None:
    """Run one task on several models (or seeds) and compare scores, sites, depth, overlap and transfer."""
    import nnvtv
    from nnvtv.compare import compare as run_compare

    try:
        names = [m.strip() for m in models.split(",") if m.strip()]
        if not names:
            raise ConfigError(f"--models must name at least one model (comma-separated), got {models!r}")
        if len(set(names)) != len(names):
            raise ConfigError(f"--models names a model twice ({models!r}); use --seeds for several runs of one model")
        seed_list = _int_list("--seeds", seeds)
        _check_common(budget=budget, seed=None, strategy=strategy, sites=sites, out_dir=out_dir)
        task_obj = nnvtv.tasks.get(task) if task is not None else None
        if task_obj is not None:
            for name in names:
                _check_model_task(name, task_obj)
        with RichBar(err) as on_progress:  # one bar per run and stage, labelled by compare
            cmp = run_compare(names, task_obj, seeds=seed_list, strategy=strategy, budget=budget, sites=sites, transfer=transfer,
                              progress=on_progress, device=device, dtype=dtype)  # fmt: skip
    except NnvtvError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _interrupted(out_dir)
    if out_dir is not None:
        with _ending_in_one_line(out_dir), _staged(out_dir, "compare.json") as tmp:
            cmp.save(tmp)
    if as_json:
        sys.stdout.write(json.dumps(cmp.as_dict(), indent=1) + "\n")
        return
    out.print(cmp.table())
    for key, note in cmp.transfer_notes.items():
        out.print(f"no transfer {key}: {note}")
    if out_dir is not None:
        out.print(f"wrote {out_dir}/: compare.json, compare.png, vectors/")


@app.command()
def learn(
    vector: Annotated[Path | None, typer.Option(help="a task vector folder (`nnvtv find --out`): learn values at its sites")] = None,
    layer: Annotated[int | None, typer.Option(help="instead of --vector: learn the residual stream of this layer")] = None,
    model: Annotated[str | None, typer.Option(help="catalogue name or local HF folder", show_default="the vector's, else toy-text")] = None,
    task: Annotated[str | None, typer.Option(help="task name or word-pair JSON file", show_default="the vector's, else the model's default")] = None,
    stream: Annotated[str | None, typer.Option(help="with --layer on a model of several streams (enc | dec)")] = None,
    init: Annotated[str, typer.Option(help="mean | zeros: start from the extracted ICL means or from zeros")] = "mean",
    mode: Annotated[str | None, typer.Option(help="replace | add", show_default="the vector's; add with --init zeros; else replace")] = None,
    steps: Annotated[int | None, typer.Option(help="Adam steps (>= 1), each 3 forward-pass equivalents", show_default="100")] = None,
    budget: Annotated[int | None, typer.Option(help="forward-pass equivalents to spend instead of --steps")] = None,
    lr: Annotated[float, typer.Option(help="Adam step size in units of each site's mean RMS (> 0)")] = 0.05,
    validation: Annotated[float, typer.Option(help="share of the train queries held out to choose the best step, in [0, 1)")] = 0.25,
    patience: Annotated[int | None, typer.Option(help="stop after this many validation passes without improvement (>= 1)")] = None,
    seed: Annotated[int | None, typer.Option(help="seeds the split and prompts (>= 0)", show_default="the vector's, else 0")] = None,
    shots: Annotated[int | None, typer.Option(help="demonstrations per ICL prompt (>= 1)", show_default="the vector's, else the task's")] = None,
    mean_prompts: Annotated[str | None, typer.Option(help="random | best (see `nnvtv find --help`)", show_default="the vector's, else random")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="write the learned task vector and results.json (last) here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print results as JSON on stdout")] = False,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    dtype: Annotated[str, typer.Option(help=DTYPE_HELP)] = "auto",
) -> None:
    """Learn a task vector: train the patched values by gradient descent (at a vector's sites or one layer)."""
    import nnvtv

    with _ending_in_one_line(out_dir):
        if (vector is None) == (layer is None):
            raise ConfigError("give --vector DIR (learn at a found vector's sites) or --layer L (one residual layer), exactly one")
        if vector is not None and not vector.exists():
            raise ConfigError(f"--vector {vector} does not exist; give a folder written by `nnvtv find --out`")
        for flag, value, choices in (("--init", init, ("mean", "zeros")), ("--mode", mode, ("replace", "add"))):
            if value is not None and value not in choices:
                raise ConfigError(f"{flag} must be one of {', '.join(choices)}; got {value!r}")
        _at_least("--steps", steps, 1, "Adam steps")
        if steps is not None and budget is not None:
            raise ConfigError(f"give --steps or --budget, not both (--steps {steps}, --budget {budget})")
        if not (math.isfinite(lr) and lr > 0):
            raise ConfigError(f"--lr must be a finite number > 0, got {lr}")
        if not (math.isfinite(validation) and 0 <= validation < 1):
            raise ConfigError(f"--validation must be in [0, 1) (a share of the train queries), got {validation}")
        _at_least("--patience", patience, 1, "validation passes without improvement")
        _at_least("--shots", shots, 1, "demonstrations per ICL prompt")
        _check_mean_prompts(mean_prompts, None)
        _check_common(budget=budget, seed=seed, out_dir=out_dir)
        tv = nnvtv.TaskVector.load(vector) if vector is not None else None
        task_obj = nnvtv.tasks.get(task) if task is not None else (tv.task_object() if tv is not None else None)
        name = model or (tv.model if tv is not None else "toy-text")
        if task_obj is not None:
            _check_model_task(name, task_obj)
        with RichBar(err) as on_progress:
            m = nnvtv.load(name, device=device, dtype=dtype)
            result = nnvtv.learn(m, task_obj, tv, layer=layer, stream=stream, init=init, mode=mode, steps=steps, budget=budget, lr=lr,
                                 validation=validation, patience=patience, seed=seed, shots=shots, mean_prompts=mean_prompts,
                                 progress=on_progress)  # fmt: skip
        data = result.as_dict()
        if out_dir is not None:
            with _staged(out_dir, "results.json") as tmp:
                result.task_vector.save(tmp)
                (tmp / "results.json").write_text(json.dumps(data, indent=1))
    if as_json:
        sys.stdout.write(json.dumps(data, indent=1) + "\n")
        return
    s = result.scores
    t = Table(title=f"{m.name} / {result.task.name}: {len(result.task_vector)} learned sites ({s.metric}, {s.n_queries} held-out queries)")
    for col in ("", "held-out", "fit loss"):
        t.add_column(col, justify="right" if col else "left")
    fit = result.fit_loss
    for label, score, loss in (("zero-shot", s.zero_shot, None), (f"ICL ({s.shots}-shot)", s.icl, None),
                               ("extracted means", result.extracted_score, fit.get("extracted")),
                               ("learned", s.task_vector, fit.get("learned"))):  # fmt: skip
        t.add_row(label, f"{score:.3f}", "" if loss is None else f"{loss:.4g}")
    out.print(t)
    rec = result.task_vector.learned or {}
    out.print(f"sites: {', '.join(data['sites'])}; {rec.get('steps')} steps (best {rec.get('best_step')}), "
              f"{result.forward_passes} forward-pass equivalents, {rec.get('seconds', 0):.1f} s", soft_wrap=True)  # fmt: skip
    _print_warnings(result.warnings)
    if out_dir is not None:
        out.print(f"wrote {out_dir}/: task_vector.safetensors, task_vector.json, results.json", soft_wrap=True)


def _example_images(model: Any, result: Any, out_dir: Path, seed: int) -> bool:
    """Tasks that can show their outputs (visual tasks) get ``examples.png``: canvas, ground
    truth, ICL, zero-shot and task-vector outputs of a few held-out queries. Returns whether
    it was written."""
    task = result.task
    if task is None or not hasattr(task, "example_images"):
        return False
    from nnvtv.report import plot_image_grid

    images = task.example_images(model, result.task_vector, n=4, seed=seed)
    scores = {k: task.score(v, images["target"]).tolist() for k, v in images.items() if k in ("icl", "zero_shot", "task_vector")}
    title = f"{model.name} / {task.name}: held-out queries ({task.metric} under each output)"
    plot_image_grid(images, out_dir / "examples.png", title=title, scores=scores)
    return True
