"""Argument validators shared by every public function: one wording for one kind of mistake.

Each validator returns the value it accepted (so ``x = positive_int("x", x)`` reads well) and
otherwise raises :class:`~nnvtv.errors.ConfigError` naming the argument, what was given and
what fits, e.g. ``budget must be an int >= 1, got 0``. Booleans are never accepted as
numbers (``True`` is an ``int`` to Python, but ``budget=True`` is a mistake).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from nnvtv.errors import ConfigError

__all__ = ["choice", "int_at_least", "int_in", "number_in", "positive_int", "writable_folder"]

T = TypeVar("T")


def _given(value: Any) -> str:
    if isinstance(value, bool):
        return f"{value!r} (a bool, not a number)"
    if isinstance(value, (int, float, str)) or value is None:
        return repr(value)
    return f"{value!r} (a {type(value).__name__})"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def int_at_least(name: str, value: Any, minimum: int, *, allow_none: bool = False) -> Any:
    """``value`` if it is an int ``>= minimum`` (or ``None`` when ``allow_none``)."""
    if value is None and allow_none:
        return None
    if not _is_int(value) or value < minimum:
        extra = " or None" if allow_none else ""
        raise ConfigError(f"{name} must be an int >= {minimum}{extra}, got {_given(value)}")
    return value


def positive_int(name: str, value: Any, *, allow_none: bool = False) -> Any:
    """``value`` if it is an int ``>= 1`` (or ``None`` when ``allow_none``)."""
    return int_at_least(name, value, 1, allow_none=allow_none)


def int_in(name: str, value: Any, low: int, high: int, *, what: str = "") -> int:
    """``value`` if it is an int with ``low <= value <= high``; ``what`` says what the range is."""
    if not _is_int(value) or not low <= value <= high:
        hint = f" ({what})" if what else ""
        raise ConfigError(f"{name} must be an int in [{low}, {high}]{hint}, got {_given(value)}")
    return value


def number_in(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``float(value)`` if it is a finite number within the bounds (``None``: unbounded).

    ``low_open`` / ``high_open`` exclude the bound itself (``lr`` must be ``> 0``).
    """
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high}")
    wanted = "a finite number" + (" " + " and ".join(bounds) if bounds else "")
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ConfigError(f"{name} must be {wanted}, got {_given(value)}")
    return float(value)


def choice(name: str, value: T, choices: Iterable[T]) -> T:
    """``value`` if it is one of ``choices``."""
    options = tuple(choices)
    if value not in options:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, options))}; got {_given(value)}")
    return value


def writable_folder(name: str, path: Any) -> Path:
    """``path`` as a :class:`~pathlib.Path` if it is a folder that can be written, or created.

    Refused: a path that is a file (or has a file where a parent folder should be), and a
    folder (or the nearest existing parent of a new one) where a file cannot be created; the
    check creates and removes one empty temporary file there, so it is true for any user.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ConfigError(f"{name} must be a folder path, got {_given(path)}")
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{name} must be a folder, but {p} is a file; give a folder path (it is created if missing)")
    existing = p
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{name} {p}: {existing} is a file, so no folder can be made under it; give another path")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".nnvtv-write-check-")
    except OSError as exc:
        raise ConfigError(
            f"{name} {p}: cannot write into {existing} ({exc.strerror or exc}); give a folder you can write"
        ) from None
    os.close(fd)
    os.unlink(probe)
    return p
