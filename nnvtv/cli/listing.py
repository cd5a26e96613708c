"""``nnvtv models``, ``tasks`` and ``train-toy``: what the registries hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from nnvtv.cli import common
from nnvtv.cli.common import _check_common, _ending_in_one_line, _fail, _interrupted, _staged, app
from nnvtv.errors import NnvtvError


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
    total = max(common.out.width, sum(widths) + frame)
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
    if total <= common.out.width:
        common.out.print(t)
    else:  # Console.print never goes wider than its console: print through a wider one
        Console(file=common.out.file, width=total, force_terminal=common.out.is_terminal, no_color=common.out.no_color).print(t)


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
        common.out.print(f"no registered task suits {model}; give a word-pair JSON file in its vocabulary with --task FILE")


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

    with _ending_in_one_line(out_dir):
        trainer = TRAINERS.get(kind)
        _check_common(seed=seed, out_dir=out_dir)
        with _staged(out_dir, None) as tmp:
            summary = trainer.train(tmp, seed=seed)
            text = json.dumps(summary, default=str).replace(str(tmp), str(out_dir))
    common.out.print_json(text)
