"""The ``nnvtv`` command line (typer + rich).

    nnvtv find                                   # toy-text, its default task, REINFORCE
    nnvtv find --model toy-text --task toy-successor --strategy greedy --budget 2000 --out runs/x
    nnvtv evaluate --vector runs/x
    nnvtv models | nnvtv tasks
    nnvtv train-toy text --out DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nnvtv.errors import NnvtvError

app = typer.Typer(add_completion=False, no_args_is_help=False, help="Find, measure and use task vectors in in-context models.")
err = Console(stderr=True)
out = Console()

DEVICE_HELP = "auto (CUDA when available, else CPU) | cpu | cuda | cuda:N | mps"
DTYPE_HELP = "auto (as stored) | float32 | bfloat16 | float16"


def _fail(exc: Exception) -> None:
    err.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(code=2)


@app.callback(invoke_without_command=True)
def _main(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        err.print(ctx.get_help())


@app.command()
def find(
    model: Annotated[str, typer.Option(help="catalogue name (see `nnvtv models`) or a local HF folder")] = "toy-text",
    task: Annotated[str | None, typer.Option(help="task name (see `nnvtv tasks`) or a word-pair JSON file; default: the model's")] = None,
    strategy: Annotated[str, typer.Option(help="reinforce | greedy | cmaes | ranking")] = "reinforce",
    budget: Annotated[int | None, typer.Option(help="forward passes (candidate site sets) the search may spend")] = None,
    seed: Annotated[int, typer.Option(help="seeds the split, prompts and search")] = 0,
    shots: Annotated[int | None, typer.Option(help="demonstrations per ICL prompt")] = None,
    sites: Annotated[str, typer.Option(help="head | layer")] = "head",
    sparsity: Annotated[float | None, typer.Option(help="loss penalty per selected site")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="write the task vector, figures and results here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print results as JSON on stdout")] = False,
    remote: Annotated[bool, typer.Option("--remote", help="run on NDIF: --model is a hub id (needs NDIF_API_KEY)")] = False,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    dtype: Annotated[str, typer.Option(help=DTYPE_HELP)] = "auto",
) -> None:
    """Find a task vector: search for the few sites whose ICL means make the model do the task zero-shot."""
    import nnvtv
    from nnvtv.find import find as run_find
    from nnvtv.report import plot_history, plot_sites, results_table

    try:
        with _progress() as bar:
            tasks: dict[str, Any] = {}

            def on_progress(p: Any) -> None:
                if p.stage not in tasks:
                    label = {"means": "mean activations", "search": f"search ({strategy})", "evaluate": "held-out scores"}[p.stage]
                    tasks[p.stage] = bar.add_task(label, total=p.total, best="")
                best = ""
                if p.stage == "search" and p.info.get("heldout") is not None:
                    best = f"best held-out {p.info['heldout']:.2f}, {p.info['n_sites']} sites"
                bar.update(tasks[p.stage], completed=p.completed, total=p.total, best=best)

            m = nnvtv.wrap(model, remote=True) if remote else nnvtv.load(model, device=device, dtype=dtype)
            result = run_find(m, task, strategy=strategy, budget=budget, seed=seed, shots=shots, sites=sites, sparsity=sparsity, progress=on_progress)
    except NnvtvError as exc:
        _fail(exc)
        return
    data = result.as_dict()
    if m.remote:
        steps = len(result.history)
        data["remote_requests"] = m.remote_requests
        err.print(f"remote: {m.remote_requests} requests, {steps} search steps (one request per step, "
                  "plus means, held-out scores and evaluation)")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        result.task_vector.save(out_dir)
        plot_sites(result.task_vector, out_dir / "sites.png")
        plot_history(result, out_dir / "history.png")
        (out_dir / "results.json").write_text(json.dumps(data, indent=1))
        _example_images(m, result, out_dir, seed)
    if as_json:
        sys.stdout.write(json.dumps(data, indent=1) + "\n")
        return
    out.print(results_table(result))
    out.print(f"sites: {', '.join(data['sites']) or '(none)'}")
    if out_dir is not None:
        out.print(f"wrote {out_dir}/: task_vector.safetensors, task_vector.json, sites.png, history.png, results.json")


@app.command()
def evaluate(
    vector: Annotated[Path, typer.Option(help="directory written by `nnvtv find --out`")],
    model: Annotated[str | None, typer.Option(help="model to apply it to (default: the one it was found on)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    dtype: Annotated[str, typer.Option(help=DTYPE_HELP)] = "auto",
) -> None:
    """Re-apply a saved task vector and measure it on held-out queries."""
    import nnvtv
    from nnvtv.find import evaluate as run_evaluate

    try:
        tv = nnvtv.TaskVector.load(vector)
        m = nnvtv.load(model or tv.model, device=device, dtype=dtype)
        scores = run_evaluate(m, tv.task, tv, shots=tv.meta.get("shots"), seed=tv.meta.get("seed", 0))
    except NnvtvError as exc:
        _fail(exc)
        return
    data = {"model": m.name, "task": tv.task, "n_sites": len(tv), "scores": scores.as_dict(), "saved_scores": tv.scores}
    if as_json:
        sys.stdout.write(json.dumps(data, indent=1) + "\n")
        return
    t = Table(title=f"{m.name} / {tv.task}: {len(tv)} sites from {vector}")
    t.add_column("")
    t.add_column("now", justify="right")
    t.add_column("when saved", justify="right")
    for key in ("zero_shot", "icl", "task_vector"):
        t.add_row(key.replace("_", " "), f"{getattr(scores, key):.3f}", f"{tv.scores.get(key, float('nan')):.3f}")
    out.print(t)


@app.command()
def models() -> None:
    """List models nnvtv can load by name."""
    from nnvtv.catalog import list_models

    t = Table(title="models")
    for col in ("name", "modality", "source", "default task", "description"):
        t.add_column(col)
    for e in list_models():
        t.add_row(e.name, e.modality, e.source, e.default_task, e.description)
    out.print(t)


@app.command()
def tasks() -> None:
    """List tasks (shipped word-pair files and the toy models' tasks)."""
    from nnvtv.tasks import list_tasks

    t = Table(title="tasks")
    for col in ("name", "modality", "metric", "examples", "for models", "description"):
        t.add_column(col)
    for task in list_tasks():
        n = len(getattr(task, "pairs", ())) or ""
        t.add_row(task.name, task.modality, task.metric, str(n), ", ".join(getattr(task, "models", ())) or "any", task.description)
    out.print(t)


@app.command("train-toy")
def train_toy(
    kind: Annotated[str, typer.Argument(help="which toy trainer (see the list under `nnvtv train-toy --help`)")] = "text",
    out_dir: Annotated[Path, typer.Option("--out", help="where to write the weights")] = Path("toy-weights"),
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Retrain a shipped toy model from scratch (deterministic for a given seed).

    The trainers are whatever plug-ins registered (nnvtv.toys.TRAINERS): nnvtv ships
    text (toy-text, toy-text-natural), visual (toy-visual) and seggpt (toy-seggpt).
    """
    from nnvtv.toys import TRAINERS

    try:
        trainer = TRAINERS.get(kind)
    except NnvtvError as exc:
        _fail(exc)
        return
    summary = trainer.train(out_dir, seed=seed)
    out.print_json(json.dumps(summary, default=str))


@app.command()
def compare(
    models: Annotated[str, typer.Option(help="comma-separated catalogue names or local HF folders")] = "toy-text,toy-text-natural",
    task: Annotated[str | None, typer.Option(help="task name; default: the first model's")] = None,
    seeds: Annotated[str, typer.Option(help="comma-separated seeds, each model runs every seed")] = "0",
    strategy: Annotated[str, typer.Option(help="reinforce | greedy | cmaes | ranking")] = "reinforce",
    budget: Annotated[int | None, typer.Option(help="forward passes per run (equal cost for every run)")] = None,
    sites: Annotated[str, typer.Option(help="head | layer")] = "head",
    transfer: Annotated[bool, typer.Option(help="apply every run's vector to every other run's model")] = True,
    out_dir: Annotated[Path | None, typer.Option("--out", help="write compare.json, compare.png and vectors/ here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the comparison as JSON on stdout")] = False,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    dtype: Annotated[str, typer.Option(help=DTYPE_HELP)] = "auto",
) -> None:
    """Run one task on several models (or seeds) and compare scores, sites, depth, overlap and transfer."""
    from nnvtv.compare import compare as run_compare

    try:
        names = [m.strip() for m in models.split(",") if m.strip()]
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError as exc:
        _fail(NnvtvError(f"--seeds must be comma-separated integers, got {seeds!r} ({exc})"))
        return
    try:
        with _progress() as bar:
            tasks: dict[tuple[str, str], Any] = {}

            def on_progress(label: str, p: Any) -> None:
                key = (label, p.stage)
                if key not in tasks:
                    tasks[key] = bar.add_task(f"{label}: {p.stage}", total=p.total, best="")
                best = ""
                if p.stage == "search" and p.info.get("heldout") is not None:
                    best = f"best held-out {p.info['heldout']:.2f}, {p.info['n_sites']} sites"
                bar.update(tasks[key], completed=p.completed, total=p.total, best=best)

            cmp = run_compare(names, task, seeds=seed_list, strategy=strategy, budget=budget, sites=sites, transfer=transfer,
                              progress=on_progress, device=device, dtype=dtype)
    except NnvtvError as exc:
        _fail(exc)
        return
    if out_dir is not None:
        cmp.save(out_dir)
    if as_json:
        sys.stdout.write(json.dumps(cmp.as_dict(), indent=1) + "\n")
        return
    out.print(cmp.table())
    for key, note in cmp.transfer_notes.items():
        out.print(f"no transfer {key}: {note}")
    if out_dir is not None:
        out.print(f"wrote {out_dir}/: compare.json, compare.png, vectors/")


def _example_images(model: Any, result: Any, out_dir: Path, seed: int) -> None:
    """Tasks that can show their outputs (visual tasks) get ``examples.png``: canvas, ground
    truth, ICL, zero-shot and task-vector outputs of a few held-out queries."""
    from nnvtv.tasks import get as get_task

    task = get_task(result.task_vector.task)
    if not hasattr(task, "example_images"):
        return
    from nnvtv.report import plot_image_grid

    images = task.example_images(model, result.task_vector, n=4, seed=seed)
    scores = {k: task.score(v, images["target"]).tolist() for k, v in images.items() if k in ("icl", "zero_shot", "task_vector")}
    title = f"{model.name} / {task.name}: held-out queries ({task.metric} under each output)"
    plot_image_grid(images, out_dir / "examples.png", title=title, scores=scores)
    out.print(f"wrote {out_dir}/examples.png (canvas, ground truth, ICL, zero-shot, task-vector outputs)")


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[best]}"),
        console=err,
        transient=False,
    )


def main() -> None:  # pragma: no cover
    app()
