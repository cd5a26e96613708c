"""The ``nnvtv`` command line (typer + rich).

    nnvtv find                                   # toy-text, its default task, REINFORCE
    nnvtv find --model toy-text --task toy-successor --strategy greedy --budget 2000 --out runs/x
    nnvtv find --task my_pairs.json --out runs/mine  # a word-pair file of your own
    nnvtv evaluate --vector runs/x                 # re-evaluate a saved vector (its task travels with it)
    nnvtv learn --vector runs/x --steps 200 --out runs/x-learned   # train the vector's values (learned task vector)
    nnvtv learn --model toy-text --task toy-perm_a --layer 1       # or one residual layer's
    nnvtv models | nnvtv tasks [--model NAME]
    nnvtv train-toy text --out DIR

Every argument is checked before a model is loaded or run; a bad one, an unfit task, an
interruption or a folder that cannot be written ends with one line on stderr and exit code 2.
``--out`` folders are written through a temporary folder beside them and filled last with the
file that marks a finished run (``results.json``, ``compare.json``), so an interrupted run never
leaves a folder that reads as complete.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from nnvtv.checks import writable_folder
from nnvtv.errors import ConfigError, NnvtvError
from nnvtv.progress import RichBar

err = Console(stderr=True)
out = Console()

# typer raises its own (vendored) click's exceptions: take the classes from typer itself
_ClickException: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class _OneLineErrors(typer.core.TyperGroup):
    """Usage errors (an unknown option, a value of the wrong type) as one line on stderr with
    exit code 2, like every other error of the command, instead of click's boxed usage text."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:  # fmt: skip
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra)
        except _ClickException as exc:
            if not standalone_mode:
                raise
            ctx = getattr(exc, "ctx", None)
            where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            message = exc.format_message()  # type: ignore[attr-defined]
            err.print(Text.assemble(("error: ", "bold red"), _one_line(message) + where), soft_wrap=True)
            sys.exit(int(getattr(exc, "exit_code", 2)))
        except typer.Abort:
            if not standalone_mode:
                raise
            err.print(Text.assemble(("error: ", "bold red"), "interrupted"), soft_wrap=True)
            sys.exit(2)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)


app = typer.Typer(cls=_OneLineErrors, add_completion=False, no_args_is_help=False,
                  help="Find, measure and use task vectors in in-context models.")  # fmt: skip

DEVICE_HELP = "auto (CUDA when available, else CPU) | cpu | cuda | cuda:N | mps"
DTYPE_HELP = "auto (as stored) | float32 | bfloat16 | float16"
SITES = ("head", "layer")


def _catalogue_default(key: str, fallback: str) -> str:
    """``--help`` text of a default that comes from the model's catalogue entry, e.g.
    ``"the model's catalogue value: 2048 for toy-text, ...; 1024 for ...; else 4096"``."""
    try:
        from nnvtv.catalog import list_models

        by_value: dict[Any, list[str]] = {}
        for e in list_models():
            if key in e.defaults:
                by_value.setdefault(e.defaults[key], []).append(e.name)
    except Exception:  # noqa: BLE001 - help text must never break the CLI
        by_value = {}
    listed = "; ".join(f"{v} for {', '.join(names)}" for v, names in by_value.items())
    return f"the model's catalogue value: {listed}; else {fallback}" if listed else f"the model's catalogue value, else {fallback}"


def _one_line(exc: BaseException | str) -> str:
    return " ".join(str(exc).split())


def _fail(exc: BaseException | str) -> NoReturn:
    """One line on stderr (never wrapped, never read as markup), exit code 2."""
    err.print(Text.assemble(("error: ", "bold red"), _one_line(exc)), soft_wrap=True)
    raise typer.Exit(code=2)


def _interrupted(out_dir: Path | None) -> NoReturn:
    where = f"; {out_dir} was left as it was (nothing of this run was written there)" if out_dir is not None else ""
    _fail(f"interrupted{where}")


def _at_least(flag: str, value: int | None, minimum: int, what: str) -> None:
    if value is not None and value < minimum:
        raise ConfigError(f"{flag} must be >= {minimum} ({what}), got {value}")


def _check_common(*, budget: int | None = None, seed: int | None = 0, strategy: str | None = None, sites: str | None = None,
                  sparsity: float | None = None, out_dir: Path | None = None) -> None:  # fmt: skip
    """The checks every search command shares, named as on the command line."""
    _at_least("--budget", budget, 1, "forward passes the search may spend")
    _at_least("--seed", seed, 0, "a non-negative integer")
    if strategy is not None:
        from nnvtv.search import list_strategies

        names = list_strategies()
        if strategy not in names:
            raise ConfigError(f"--strategy must be one of {', '.join(names)}; got {strategy!r}")
    if sites is not None and sites not in SITES:
        raise ConfigError(f"--sites must be one of {', '.join(SITES)} (per-head outputs or whole-layer residual stream); got {sites!r}")
    if sparsity is not None and not (math.isfinite(sparsity) and sparsity >= 0):
        raise ConfigError(f"--sparsity must be a finite number >= 0 (loss penalty per selected site), got {sparsity}")
    if out_dir is not None:
        writable_folder("--out", out_dir)


def _check_model_task(model: str, task: Any) -> None:
    """Before loading: a catalogue model of another modality than the task is refused."""
    from nnvtv.catalog import entry
    from nnvtv.tasks import misfit_error

    if entry(model) is not None:
        problem = misfit_error(task, model)
        if problem is not None:
            raise problem


@contextmanager
def _staged(out_dir: Path, marker: str | None) -> Iterator[Path]:
    """A temporary folder beside ``out_dir`` to write into; on success its files move into
    ``out_dir`` (created if missing) with ``marker`` last, after any old ``marker`` was removed,
    so ``out_dir`` reads as a finished run only once everything is in place. On any error or
    interruption the temporary folder is removed and ``out_dir`` is left as it was."""
    out_dir = out_dir.expanduser()
    parent = out_dir.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.absolute().name or 'out'}.partial-", dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the folder it becomes should not be
    try:
        yield tmp
        if not out_dir.exists():
            os.replace(tmp, out_dir)  # one rename: the folder appears complete
            return
        if marker is not None:
            (out_dir / marker).unlink(missing_ok=True)
        for entry in sorted(tmp.iterdir(), key=lambda e: e.name == marker):
            dest = out_dir / entry.name
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            os.replace(entry, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@app.callback(invoke_without_command=True)
def _main(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        err.print(ctx.get_help())


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
        try:
            written = _write_find(m, result, data, out_dir, seed)
        except NnvtvError as exc:
            _fail(exc)
        except OSError as exc:
            _fail(f"cannot write {out_dir}: {exc.strerror or exc}; {out_dir} was left as it was")
        except KeyboardInterrupt:
            _interrupted(out_dir)
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


def _print_warnings(warnings: list[str]) -> None:
    for w in warnings:
        out.print(Text.assemble(("warning: ", "bold yellow"), w))


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


def _print_listing(title: str, columns: list[tuple[str, int]], rows: list[list[str]]) -> None:
    """Print a listing so that no name is ever cut.

    ``columns``: ``(header, min_width)``; ``min_width == 0`` marks a column of names, as wide
    as its longest name; the others wrap (descriptions; lists of names, at their spaces, when
    ``min_width`` is the longest name) and share what width is left, each at least its
    ``min_width``. The table takes the console's width, or more when that is too narrow (a
    narrow terminal, or 80 columns when piped): a name is never cut.
    """
    from rich.cells import cell_len

    def longest(i: int, header: str) -> int:
        return max([cell_len(header)] + [cell_len(r[i]) for r in rows])

    widths = [longest(i, h) if m == 0 else m for i, (h, m) in enumerate(columns)]
    frame = 3 * len(columns) + 1  # a space each side of every cell, and the borders
    total = max(out.width, sum(widths) + frame)
    spare = total - sum(widths) - frame
    for i, (header, minimum) in enumerate(columns):  # wrapped columns grow, in order, up to their longest line
        if minimum and spare > 0:
            grow = min(spare, longest(i, header) - widths[i])
            if grow > 0:
                widths[i] += grow
                spare -= grow
    t = Table(title=title)
    for (header, minimum), width in zip(columns, widths, strict=True):
        t.add_column(header, width=width, no_wrap=minimum == 0, overflow="fold")
    for row in rows:
        t.add_row(*row)
    if total <= out.width:
        out.print(t)
    else:  # Console.print never goes wider than its console: print through a wider one
        Console(file=out.file, width=total, force_terminal=out.is_terminal, no_color=out.no_color).print(t)


@app.command()
def models() -> None:
    """List models nnvtv can load by name."""
    from nnvtv.catalog import list_models

    rows = [
        [e.name, e.modality, e.source, e.default_task, "" if e.max_shots is None else str(e.max_shots), e.description]
        for e in list_models()
    ]
    columns = [("name", 0), ("modality", 0), ("source", 12), ("default task", 0), ("max shots", 0), ("description", 24)]
    _print_listing("models", columns, rows)


@app.command()
def tasks(
    model: Annotated[str | None, typer.Option(help="only the tasks that suit this model (catalogue name or local folder)")] = None,
) -> None:
    """List tasks (shipped word-pair files, visual tasks and the toy models' tasks)."""
    from nnvtv.tasks import for_model, list_tasks

    try:
        if model is None:
            listed = list_tasks()
        else:
            from nnvtv.catalog import entry

            if entry(model) is not None:
                listed = for_model(model)  # the catalogue entry says enough: nothing is loaded
            else:
                import nnvtv

                listed = for_model(nnvtv.load(model))  # a folder: its tokenizer and modality decide
    except NnvtvError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _interrupted(None)
    rows = [
        [task.name, task.modality, task.metric, str(len(getattr(task, "pairs", ())) or ""),
         ", ".join(getattr(task, "models", ())) or "any", task.description]
        for task in listed
    ]  # fmt: skip
    longest_model = max([len("for models")] + [len(m) for task in listed for m in getattr(task, "models", ())])
    columns = [("name", 0), ("modality", 0), ("metric", 0), ("examples", 0), ("for models", longest_model), ("description", 24)]
    _print_listing("tasks" if model is None else f"tasks that suit {model}", columns, rows)
    if model is not None and not listed:
        out.print(f"no registered task suits {model}; give a word-pair JSON file in its vocabulary with --task FILE")


@app.command("train-toy")
def train_toy(
    kind: Annotated[str, typer.Argument(help="which toy trainer (see the list under `nnvtv train-toy --help`)")] = "text",
    out_dir: Annotated[Path, typer.Option("--out", help="where to write the weights (filled only when training ends)")] = Path("toy-weights"),
    seed: Annotated[int, typer.Option(help="seeds everything (>= 0)")] = 0,
) -> None:
    """Retrain a shipped toy model from scratch (deterministic for a given seed).

    The trainers are whatever plug-ins registered (nnvtv.toys.TRAINERS): nnvtv ships
    text (toy-text, toy-text-natural), visual (toy-visual) and seggpt (toy-seggpt).
    Training writes into a temporary folder beside --out, moved into place when it ends.
    """
    from nnvtv.toys import TRAINERS

    try:
        trainer = TRAINERS.get(kind)
        _check_common(seed=seed, out_dir=out_dir)
        with _staged(out_dir, None) as tmp:
            summary = trainer.train(tmp, seed=seed)
            text = json.dumps(summary, default=str).replace(str(tmp), str(out_dir))
    except NnvtvError as exc:
        _fail(exc)
    except OSError as exc:
        _fail(f"cannot write {out_dir}: {exc.strerror or exc}; {out_dir} was left as it was")
    except KeyboardInterrupt:
        _interrupted(out_dir)
    out.print_json(text)


def _int_list(flag: str, text: str) -> list[int]:
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"{flag} must be comma-separated integers >= 0 such as 0,1,2; got {text!r}") from None
    if not values:
        raise ConfigError(f"{flag} must name at least one integer >= 0 such as 0,1,2; got {text!r}")
    bad = [v for v in values if v < 0]
    if bad:
        raise ConfigError(f"{flag} must be integers >= 0, got {bad[0]} in {text!r}")
    if len(set(values)) != len(values):
        raise ConfigError(f"{flag} must not repeat a value (a repeated seed repeats the same run), got {text!r}")
    return values


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
        try:
            with _staged(out_dir, "compare.json") as tmp:
                cmp.save(tmp)
        except NnvtvError as exc:
            _fail(exc)
        except OSError as exc:
            _fail(f"cannot write {out_dir}: {exc.strerror or exc}; {out_dir} was left as it was")
        except KeyboardInterrupt:
            _interrupted(out_dir)
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

    try:
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
    except NnvtvError as exc:
        _fail(exc)
    except OSError as exc:
        _fail(f"cannot write {out_dir}: {exc.strerror or exc}; {out_dir} was left as it was")
    except KeyboardInterrupt:
        _interrupted(out_dir)
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


def main() -> None:  # pragma: no cover
    app()

