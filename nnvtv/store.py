"""One persistence helper for every object nnvtv saves: a JSON info file + a safetensors file.

A *bundle* is named by a stem path: ``<stem>.json`` holds a JSON object whose ``format``
field tags what it is (``"nnvtv.task_vector/1"``), ``<stem>.safetensors`` holds named
tensors (absent for JSON-only bundles such as a comparison). Each saved type declares a
:class:`Schema`: its format tag, every JSON field (kind, required or default) and its
tensors (fixed names, or the names listed in one JSON field; number of dimensions; finite).

:func:`load` is strict: a missing file, corrupt JSON or safetensors, a foreign or wrong format
tag, a missing, unexpected or mistyped field, a tensor listed in the JSON but absent from the
safetensors file (or the reverse), a non-float, misshapen or non-finite tensor each raise
:class:`~nnvtv.errors.CheckpointError` naming the file, the field, what was found, what was
expected, and how to fix it. :func:`save` checks what it writes the same way, writes both
files to temporary names in the target folder and renames them into place, the JSON last:
a reader never sees a JSON beside tensors it was not written with (an interrupted save
leaves the JSON missing, and the bundle reads as absent, never as complete).

>>> SCHEMA = Schema("nnvtv.demo/1", "demo", "Demo.save", {"name": Field(STR)}, Tensors(names=("w",)))
>>> save("out/demo", SCHEMA, {"name": "x"}, {"w": torch.zeros(3)})
>>> info, tensors = load("out/demo", SCHEMA)
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nnvtv.errors import CheckpointError, ConfigError, SiteError
from nnvtv.sites import Site

__all__ = [
    "ANY_DICT",
    "BOOL",
    "INT",
    "NUMBER",
    "SITE",
    "STR",
    "Field",
    "Kind",
    "Record",
    "Schema",
    "Tensors",
    "at_least",
    "dict_of",
    "field_error",
    "list_of",
    "load",
    "nullable",
    "one_of",
    "paths",
    "save",
]

_MISSING: Any = object()  # "found" of a required field that is absent
_UNKNOWN: Any = object()  # "found" of a field the schema does not declare
_SCHEMAS: dict[str, Schema] = {}


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
    default: Any = _MISSING

    @property
    def required(self) -> bool:
        return self.default is _MISSING


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
                    return (prefix + name, _MISSING, f.kind.expected)
                continue
            p = f.kind.problem(value[name], prefix + name)
            if p is not None:
                return p
        unknown = [k for k in value if k not in self.fields]
        if unknown:
            return (prefix + str(unknown[0]), _UNKNOWN, f"one of the fields {', '.join(sorted(self.fields))}")
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
        _SCHEMAS[self.format] = self

    @property
    def record(self) -> Record:
        return Record(self.fields, expected=f"a JSON object (an nnvtv {self.what})")


def paths(stem: str | Path, schema: Schema) -> tuple[Path, Path | None]:
    """``(<stem>.json, <stem>.safetensors)``; the second is ``None`` for a JSON-only schema."""
    stem = Path(stem)
    meta = stem.with_name(stem.name + ".json")
    return meta, (stem.with_name(stem.name + ".safetensors") if schema.tensors is not None else None)


# ----------------------------------------------------------------------------- messages


def _show(value: Any) -> str:
    if value is _MISSING:
        return "missing"
    if isinstance(value, (dict, list, str, int, float, bool, type(None))):
        text = json.dumps(value)
    else:
        text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    words = {"NoneType": "null", "str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean", "list": "a list", "dict": "a JSON object"}
    return f"{text} ({words.get(type(value).__name__, type(value).__name__)})"


def _fix(schema: Schema, writing: bool) -> str:
    if writing:
        return f"Nothing was written: the {schema.what} is inconsistent; correct it before saving."
    return (
        f"The file was edited or damaged after {schema.writer} wrote it: restore it from a copy, "
        f"or write it again with {schema.writer}."
    )


def field_error(file: Path, schema: Schema, field_path: str, found: Any, expected: str, *, writing: bool = False) -> CheckpointError:
    """The :class:`CheckpointError` for one bad field: the file, the field, found, expected, the fix."""
    if found is _UNKNOWN:
        head = f"{file}: field '{field_path}' is not a field of an nnvtv {schema.what}; expected {expected}"
    else:
        head = f"{file}: field '{field_path}' is {'missing' if found is _MISSING else _show(found)}; expected {expected}"
    return CheckpointError(f"{head}. {_fix(schema, writing)}")


def _foreign(file: Path, schema: Schema, found: Any) -> CheckpointError:
    other = _SCHEMAS.get(found) if isinstance(found, str) else None
    if other is not None:
        hint = f"It holds an nnvtv {other.what} ({found!r}); read it with the loader that matches {other.writer}."
    else:
        hint = f"Pass a file that {schema.writer} wrote."
    return CheckpointError(
        f"{file} is not an nnvtv {schema.what} file: field 'format' is "
        f"{'missing' if found is _MISSING else _show(found)}; expected {schema.format!r}. {hint}"
    )


# ----------------------------------------------------------------------------- checks


def _check_info(file: Path, schema: Schema, info: Any, writing: bool) -> dict[str, Any]:
    if not isinstance(info, dict):
        raise CheckpointError(
            f"{file} holds {_show(info)}, not a JSON object; expected an nnvtv {schema.what} "
            f"(format {schema.format!r}). {_fix(schema, writing)}"
        )
    fmt = info.get("format", _MISSING)
    if fmt != schema.format:
        raise _foreign(file, schema, fmt)
    body = {k: v for k, v in info.items() if k != "format"}
    problem = schema.record.problem(body, "")
    if problem is not None:
        raise field_error(file, schema, *problem, writing=writing)
    return schema.record.filled(body)


def _check_tensors(
    file: Path, meta_file: Path, schema: Schema, info: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], writing: bool
) -> None:
    spec = schema.tensors
    assert spec is not None
    fix = _fix(schema, writing)
    expected = spec.expected_names(info)
    if spec.listed_in:
        where = f"listed in field '{spec.listed_in}' of {meta_file.name}"
        not_where = f"not listed in field '{spec.listed_in}' of {meta_file.name}"
    else:
        where = f"of a {schema.what} (it has {', '.join(spec.names)})"
        not_where = f"that a {schema.what} does not have (it has {', '.join(spec.names)})"
    missing = [n for n in expected if n not in tensors]
    if missing:
        held = sorted(tensors)
        raise CheckpointError(
            f"{file} lacks {len(missing)} tensor(s) {where}, e.g. {missing[:3]}; it holds "
            f"{held[:5]}{' ...' if len(held) > 5 else ''}. The two files do not belong together. {fix}"
        )
    known = set(expected)
    extra = [n for n in tensors if n not in known]
    if extra:
        raise CheckpointError(
            f"{file} holds {len(extra)} tensor(s) {not_where}, e.g. {sorted(extra)[:3]}. The two files "
            f"do not belong together. {fix}"
        )
    for name in expected:
        t = tensors[name]
        if not t.is_floating_point():
            raise CheckpointError(f"{file}: tensor {name!r} has dtype {t.dtype}; expected a floating-point tensor. {fix}")
        ndim = spec.ndim_of(name)
        if ndim is not None and t.dim() != ndim:
            raise CheckpointError(
                f"{file}: tensor {name!r} has shape {list(t.shape)} ({t.dim()} dimensions); expected {ndim} dimensions. {fix}"
            )
        if spec.finite and not bool(torch.isfinite(t).all()):
            nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
            raise CheckpointError(
                f"{file}: tensor {name!r} holds {nan} NaN and {inf} infinite value(s) of {t.numel()}; "
                f"expected finite values. {fix}"
            )


def _check_rest(
    meta_path: Path, tensor_path: Path | None, schema: Schema, info: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], writing: bool
) -> None:
    """The tensors and the cross-field rules, once the JSON fields passed :func:`_check_info`."""
    if tensor_path is not None:
        _check_tensors(tensor_path, meta_path, schema, info, tensors, writing)
    if schema.check is not None:
        problem = schema.check(info, tensors)
        if problem is not None:
            raise field_error(meta_path, schema, *problem, writing=writing)


# ----------------------------------------------------------------------------- save / load


def _jsonable(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return str(x)  # paths, sites, anything else: its text


def _write_temp(target: Path, write: Callable[[str], None]) -> str:
    """Write through ``write(tmp_path)`` into a temporary file beside ``target``; return its path."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def save(
    stem: str | Path,
    schema: Schema,
    info: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``<stem>.json`` (``info`` + the ``format`` tag) and ``<stem>.safetensors``.

    Args:
        stem: the bundle's path without suffix (``run/task_vector``); its folder is created.
        schema: the saved type's :class:`Schema`.
        info: the JSON fields (without ``format``).
        tensors: ``{name: floating-point tensor of any shape the schema allows}``.

    Tensors are stored as given (detached, on the CPU, contiguous; the caller picks the dtype).
    What is written is checked against ``schema`` first: a bundle :func:`load` would refuse is
    never written (:class:`~nnvtv.errors.CheckpointError`, nothing on disk changes). Values JSON
    cannot hold in free-form fields (tensors, paths, sites) are stored as lists / strings.

    Returns:
        the JSON path.
    """
    meta_path, tensor_path = paths(stem, schema)
    if tensor_path is None and tensors:
        raise ConfigError(f"a {schema.what} is stored as JSON only; got tensors {sorted(tensors)}")
    text = json.dumps({"format": schema.format, **info}, indent=1, default=_jsonable)
    stored = {k: v.detach().cpu().contiguous() for k, v in (tensors or {}).items()}
    checked = _check_info(meta_path, schema, json.loads(text), writing=True)
    _check_rest(meta_path, tensor_path, schema, checked, stored, writing=True)

    meta_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_meta = _write_temp(meta_path, lambda p: Path(p).write_text(text))
    tmp_tensors = None
    try:
        if tensor_path is not None:
            tmp_tensors = _write_temp(tensor_path, lambda p: save_file(stored, p, metadata={"format": schema.format}))
        meta_path.unlink(missing_ok=True)  # until the last rename the bundle reads as absent
        if tmp_tensors is not None:
            os.replace(tmp_tensors, tensor_path)
        os.replace(tmp_meta, meta_path)  # the JSON last: it marks the bundle complete
    except BaseException:
        for tmp in (tmp_meta, tmp_tensors):
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
        raise
    return meta_path


def load(stem: str | Path, schema: Schema) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and check the bundle at ``stem`` (the module docstring lists what is refused).

    Returns:
        ``(info, tensors)``: every declared field (absent optional ones at their default; no
        ``format``), and ``{name: tensor}`` (CPU, the dtype and shape as saved) in the declared
        order; empty for a JSON-only schema.
    """
    meta_path, tensor_path = paths(stem, schema)
    wanted = [p for p in (meta_path, tensor_path) if p is not None]
    absent = [p for p in wanted if not p.is_file()]
    if absent:
        raise CheckpointError(
            f"{meta_path.parent} holds no saved {schema.what}: {absent[0].name} is missing (expected "
            f"{' and '.join(p.name for p in wanted)}, written by {schema.writer}). Check the path, "
            f"or save the {schema.what} again."
        )
    try:
        raw = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{meta_path} is not valid JSON ({exc}); the file is corrupt or truncated. {_fix(schema, False)}"
        ) from exc
    info = _check_info(meta_path, schema, raw, writing=False)  # a foreign JSON fails before its tensors are read
    tensors: dict[str, torch.Tensor] = {}
    if tensor_path is not None:
        try:
            tensors = load_file(str(tensor_path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"{tensor_path} cannot be read as safetensors ({exc}); the file is corrupt or truncated. {_fix(schema, False)}"
            ) from exc
    _check_rest(meta_path, tensor_path, schema, info, tensors, writing=False)
    names = schema.tensors.expected_names(info) if schema.tensors is not None else []
    return info, {n: tensors[n] for n in names}
