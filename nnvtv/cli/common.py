"""What every ``nnvtv`` command shares: the typer app, one-line errors, argument checks, staged output folders."""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from nnvtv.checks import writable_folder
from nnvtv.errors import ConfigError, NnvtvError

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
def _ending_in_one_line(out_dir: Path | None) -> Iterator[None]:
    """Around a command's work: an nnvtv error, an ``--out`` folder that cannot be written, or an
    interruption each end with one line on stderr and exit 2 (the folder left as it was)."""
    try:
        yield
    except NnvtvError as exc:
        _fail(exc)
    except OSError as exc:
        _fail(f"cannot write {out_dir}: {exc.strerror or exc}; {out_dir} was left as it was")
    except KeyboardInterrupt:
        _interrupted(out_dir)


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


def _print_warnings(warnings: list[str]) -> None:
    for w in warnings:
        out.print(Text.assemble(("warning: ", "bold yellow"), w))


@app.callback(invoke_without_command=True)
def _main(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        err.print(ctx.get_help())
