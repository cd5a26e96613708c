"""Saving and loading bundles strictly (see :mod:`nnvtv.store`): messages, checks, atomic writes."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nnvtv.errors import CheckpointError, ConfigError
from nnvtv.store.schema import MISSING, SCHEMAS, UNKNOWN, Schema, paths

__all__ = ["field_error", "load", "save"]


# ----------------------------------------------------------------------------- messages


def _show(value: Any) -> str:
    if value is MISSING:
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
    if found is UNKNOWN:
        head = f"{file}: field '{field_path}' is not a field of an nnvtv {schema.what}; expected {expected}"
    else:
        head = f"{file}: field '{field_path}' is {'missing' if found is MISSING else _show(found)}; expected {expected}"
    return CheckpointError(f"{head}. {_fix(schema, writing)}")


def _foreign(file: Path, schema: Schema, found: Any) -> CheckpointError:
    other = SCHEMAS.get(found) if isinstance(found, str) else None
    if other is not None:
        hint = f"It holds an nnvtv {other.what} ({found!r}); read it with the loader that matches {other.writer}."
    else:
        hint = f"Pass a file that {schema.writer} wrote."
    return CheckpointError(
        f"{file} is not an nnvtv {schema.what} file: field 'format' is "
        f"{'missing' if found is MISSING else _show(found)}; expected {schema.format!r}. {hint}"
    )


# ----------------------------------------------------------------------------- checks


def _check_info(file: Path, schema: Schema, info: Any, writing: bool) -> dict[str, Any]:
    if not isinstance(info, dict):
        raise CheckpointError(
            f"{file} holds {_show(info)}, not a JSON object; expected an nnvtv {schema.what} "
            f"(format {schema.format!r}). {_fix(schema, writing)}"
        )
    fmt = info.get("format", MISSING)
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_temp(target: Path, write: Callable[[str], None]) -> str:
    """Write through ``write(tmp_path)`` into a temporary file beside ``target``; return its path."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp (and safetensors) make it private; saved files are ordinary files
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
