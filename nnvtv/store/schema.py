"""What a saved type declares: field kinds, :class:`Field`, :class:`Record`, :class:`Tensors`, :class:`Schema`.

The checking and the files are in :mod:`nnvtv.store.bundle`; :mod:`nnvtv.store` re-exports both.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nnvtv.errors import ConfigError, SiteError
from nnvtv.sites import Site

__all__ = [
    "ANY_DICT",
    "BOOL",
    "INT",
    "NUMBER",
    "SITE",
    "STR",
    "MISSING",
    "UNKNOWN",
    "SCHEMAS",
    "Field",
    "Kind",
    "Record",
    "Schema",
    "Tensors",
    "at_least",
    "dict_of",
    "list_of",
    "nullable",
    "one_of",
    "paths",
]

MISSING: Any = object()  # "found" of a required field that is absent
UNKNOWN: Any = object()  # "found" of a field the schema does not declare
#: every declared schema by format tag (so a file of another nnvtv type is named in errors)
SCHEMAS: dict[str, Schema] = {}


# ----------------------------------------------------------------------------- field kinds


class Kind:
    """What one JSON value must be: ``expected`` in words, ``test`` the check.

    :meth:`problem` returns ``None`` when ``value`` fits, else ``(path, found, expected)`` for
    the innermost value that does not (``runs[2].seed``).
    """

    def __init__(self, expected: str, test: Callable[[Any], bool]) -> None:
        self.expected = expected
        self.test = test

    def problem(self, value: Any, path: str) -> tuple[str, Any, str] | None:
        return None if self.test(value) else (path, value, self.expected)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.expected!r})"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_site(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        Site.parse(v)
    except SiteError:
        return False
    return True


STR = Kind("a string", lambda v: isinstance(v, str))
INT = Kind("an integer", _is_int)
NUMBER = Kind("a number", lambda v: _is_int(v) or isinstance(v, float))
BOOL = Kind("true or false", lambda v: isinstance(v, bool))
ANY_DICT = Kind("a JSON object", lambda v: isinstance(v, dict))
SITE = Kind("a site name such as 'L3.H5@last' or 'enc.L0@cls'", _is_site)


def at_least(kind: Kind, minimum: float) -> Kind:
    """``kind`` (a number kind) with a value ``>= minimum``."""
    return Kind(f"{kind.expected} >= {minimum}", lambda v: kind.test(v) and v >= minimum)


def one_of(*choices: Any) -> Kind:
    """One of the given JSON values (e.g. ``one_of("replace", "add")``)."""
    return Kind(f"one of {', '.join(map(repr, choices))}", lambda v: any(type(v) is type(c) and v == c for c in choices))


class _Nullable(Kind):
    def __init__(self, inner: Kind) -> None:
        super().__init__(f"{inner.expected} or null", lambda v: v is None or inner.test(v))
        self.inner = inner

    def problem(self, value: Any, path: str) -> tuple[str, Any, str] | None:
        return None if value is None else self.inner.problem(value, path)


def nullable(kind: Kind) -> Kind:
    """``kind`` or ``null``."""
    return _Nullable(kind)


class _ListOf(Kind):
    def __init__(self, item: Kind, unique: bool) -> None:
        words = f"a list of {'distinct ' if unique else ''}items, each {item.expected}"
        super().__init__(words, lambda v: isinstance(v, list))
        self.item, self.unique = item, unique

    def problem(self, value: Any, path: str) -> tuple[str, Any, str] | None:
        if not isinstance(value, list):
            return (path, value, self.expected)
        for i, v in enumerate(value):
            p = self.item.problem(v, f"{path}[{i}]")
            if p is not None:
                return p
        if self.unique:
            seen: set[str] = set()
            for i, v in enumerate(value):
                key = json.dumps(v, sort_keys=True)
                if key in seen:
                    return (f"{path}[{i}]", v, f"an item not already in {path} (no duplicates)")
                seen.add(key)
        return None


def list_of(item: Kind, *, unique: bool = False) -> Kind:
    """A JSON list whose every item is ``item`` (``unique``: no item twice)."""
    return _ListOf(item, unique)


class _DictOf(Kind):
    def __init__(self, value: Kind) -> None:
        super().__init__(f"a JSON object whose values are each {value.expected}", lambda v: isinstance(v, dict))
        self.value = value

    def problem(self, value: Any, path: str) -> tuple[str, Any, str] | None:
        if not isinstance(value, dict):
            return (path, value, self.expected)
        for k, v in value.items():
            p = self.value.problem(v, f"{path}[{k!r}]")
            if p is not None:
                return p
        return None


def dict_of(value: Kind) -> Kind:
    """A JSON object whose every value is ``value`` (keys are strings in JSON)."""
    return _DictOf(value)


@dataclass(frozen=True)
class Field:
    """One declared JSON field: its :class:`Kind`, and a default if it may be absent.

    ``default`` is copied for every load (a list or dict default is never shared).
    """

    kind: Kind
    default: Any = MISSING

    @property
    def required(self) -> bool:
        return self.default is MISSING


class Record(Kind):
    """A JSON object with declared fields; unknown fields are refused (nested, e.g. in a list)."""

    def __init__(self, fields: Mapping[str, Field], expected: str = "a JSON object") -> None:
        super().__init__(expected, lambda v: isinstance(v, dict))
        self.fields = dict(fields)

    def problem(self, value: Any, path: str) -> tuple[str, Any, str] | None:
        if not isinstance(value, dict):
            return (path or "the file", value, self.expected)
        prefix = f"{path}." if path else ""
        for name, f in self.fields.items():
            if name not in value:
                if f.required:
                    return (prefix + name, MISSING, f.kind.expected)
                continue
            p = f.kind.problem(value[name], prefix + name)
            if p is not None:
                return p
        unknown = [k for k in value if k not in self.fields]
        if unknown:
            return (prefix + str(unknown[0]), UNKNOWN, f"one of the fields {', '.join(sorted(self.fields))}")
        return None

    def filled(self, value: dict[str, Any]) -> dict[str, Any]:
        """``value`` with the defaults of absent optional fields filled in (copies)."""
        out = dict(value)
        for name, f in self.fields.items():
            if name not in out and not f.required:
                out[name] = json.loads(json.dumps(f.default))
        return out


# ----------------------------------------------------------------------------- schemas


@dataclass(frozen=True)
class Tensors:
    """The tensors of a bundle.

    Attributes:
        names: fixed tensor names (``("means",)``), or
        listed_in: the JSON field listing the tensor names (``"sites"``), in order.
        ndim: the number of dimensions every tensor must have (``None``: any), or a
            ``{name: ndim}`` mapping for fixed names.
        finite: refuse NaN and infinite values.
    """

    names: tuple[str, ...] = ()
    listed_in: str | None = None
    ndim: int | Mapping[str, int] | None = None
    finite: bool = True

    def expected_names(self, info: Mapping[str, Any]) -> list[str]:
        return list(info[self.listed_in]) if self.listed_in is not None else list(self.names)

    def ndim_of(self, name: str) -> int | None:
        return self.ndim.get(name) if isinstance(self.ndim, Mapping) else self.ndim


@dataclass(frozen=True)
class Schema:
    """What one saved type writes.

    Attributes:
        format: the tag stored in the JSON ``format`` field (``"nnvtv.means/1"``).
        what: the type in words, for messages (``"set of means"``).
        writer: what writes it, for messages (``"Means.save"``).
        fields: every JSON field besides ``format``.
        tensors: the safetensors content; ``None`` for a JSON-only bundle.
        check: rules across fields and tensors, run after the per-field checks on save and
            load: ``check(info, tensors)`` returns ``None`` or ``(field, found, expected)``
            (e.g. ``("n_sites", 3, "2, the number of names in 'sites'")``).
    """

    format: str
    what: str
    writer: str
    fields: Mapping[str, Field]
    tensors: Tensors | None = None
    check: Callable[[Mapping[str, Any], Mapping[str, torch.Tensor]], tuple[str, Any, str] | None] | None = None

    def __post_init__(self) -> None:
        if "format" in self.fields:
            raise ConfigError(f"schema {self.format!r}: 'format' is written by nnvtv.store itself; do not declare it")
        if self.tensors is not None and self.tensors.listed_in is not None and self.tensors.listed_in not in self.fields:
            raise ConfigError(f"schema {self.format!r}: tensors are listed in {self.tensors.listed_in!r}, which is not a declared field")
        SCHEMAS[self.format] = self

    @property
    def record(self) -> Record:
        return Record(self.fields, expected=f"a JSON object (an nnvtv {self.what})")


def paths(stem: str | Path, schema: Schema) -> tuple[Path, Path | None]:
    """``(<stem>.json, <stem>.safetensors)``; the second is ``None`` for a JSON-only schema."""
    stem = Path(stem)
    meta = stem.with_name(stem.name + ".json")
    return meta, (stem.with_name(stem.name + ".safetensors") if schema.tensors is not None else None)
