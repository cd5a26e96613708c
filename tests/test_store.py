"""nnvtv.store: every saved type round-trips, and every kind of bad file is refused clearly.

Saved types: TaskVector, Means, LayerSweep, FunctionVector (JSON + safetensors) and Comparison
(JSON only). Each bad-file case damages a freshly saved bundle and checks the CheckpointError
names the file, the field or tensor, what was found and what was expected.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from nnvtv import store
from nnvtv.activations import Means
from nnvtv.compare import Comparison, RunSummary
from nnvtv.errors import CheckpointError, NnvtvError
from nnvtv.recipes import FunctionVector, LayerSweep
from nnvtv.sites import Site
from nnvtv.vector import TaskVector

A, B, C = Site(0, 0, "last"), Site(1, 2, "last"), Site(1, 3, "last")


def _task_vector() -> TaskVector:
    return TaskVector(
        {A: torch.randn(1, 4), B: torch.randn(1, 4)}, "replace", "fp0", "tiny", "perm", "greedy",
        space=[str(A), str(B), str(C)], scores={"zero_shot": 0.25, "task_vector": None},
        probabilities=[0.9, 0.8, 0.1], meta={"seed": 3},
    )


def _means() -> Means:
    return Means({A: torch.randn(1, 4), B: torch.randn(2, 4)}, count=7, fingerprint="fp0", meta={"task": "perm"})


def _layer_sweep() -> LayerSweep:
    return LayerSweep(
        model="tiny", fingerprint="fp0", task="perm", layers=[0, 1], accuracy=[0.5, 0.75], means=torch.randn(2, 4),
        zero_shot=0.0, icl=1.0, shots=3, n_queries=4, n_mean_prompts=8, forward_passes=2, example_forwards=8,
        seconds=0.5, seed=1,
    )


def _function_vector() -> FunctionVector:
    return FunctionVector(
        model="tiny", fingerprint="fp0", task="perm", layer=0, heads=[Site(1, 0, "last"), Site(0, 1, "last")],
        vector=torch.randn(4), cie=torch.randn(2, 2), zero_shot=0.0, zero_shot_fv=0.5, shuffled=0.25,
        shuffled_fv=0.5, icl=1.0, shots=3, n_queries=4, n_mean_prompts=8, n_cie_prompts=4, forward_passes=9,
        seconds=1.5, layer_accuracy=[0.5, 0.25], seed=0,
    )


def _comparison() -> Comparison:
    run = RunSummary(
        label="tiny", model="tiny", fingerprint="fp0", seed=0, layers={"": 2}, scores={"zero_shot": 0.0},
        sites=[str(A)], space=[str(A), str(B)], forward_passes=12,
        depth=[{"stream": "", "layer": 0, "depth": 0.25, "selected": 1, "total": 1}],
    )
    return Comparison(task="perm", metric="accuracy", strategy="greedy", budget=12, runs=[run], jaccard=[[1.0]], transfer=[[0.5]])


@dataclass
class Kind:
    """How one saved type is made, saved, loaded, compared, and where its files are."""

    name: str
    make: Callable[[], Any]
    write: Callable[[Any, Path], Any]  # not "save": nnsight gives every object a .save attribute,
    read: Callable[[Path], Any]  # which a dataclass would take for the field's default
    files: Callable[[Path], tuple[Path, Path | None]]
    same: Callable[[Any, Any], bool]
    format: str
    required: str  # a required field
    wrong: tuple[str, Any, str]  # (field path, bad value, words of what is expected)
    inconsistent: tuple[Callable[[dict], None], str]  # (edit the JSON, a word of the message)


def _eq_tv(a: TaskVector, b: TaskVector) -> bool:
    same = dataclasses.replace(a, values={}) == dataclasses.replace(b, values={})
    return same and list(a.values) == list(b.values) and all(torch.equal(a.values[s], b.values[s]) for s in a.values)


def _eq_means(a: Means, b: Means) -> bool:
    return (list(a) == list(b) and a.count == b.count and a.fingerprint == b.fingerprint and a.meta == b.meta
            and all(torch.equal(a[s], b[s]) for s in a))


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def edit(info: dict) -> None:
        target = info
        *parents, last = path.replace("[", ".").replace("]", "").split(".")
        for p in parents:
            target = target[int(p)] if isinstance(target, list) else target[p]
        target[int(last) if isinstance(target, list) else last] = value

    return edit


KINDS = [
    Kind(
        "task_vector", _task_vector, lambda o, d: o.save(d), TaskVector.load,
        lambda d: (d / "task_vector.json", d / "task_vector.safetensors"), _eq_tv, "nnvtv.task_vector/1",
        required="fingerprint", wrong=("mode", "multiply", "one of 'replace', 'add'"),
        inconsistent=(_set("n_sites", 5), "n_sites"),
    ),
    Kind(
        "means", _means, lambda o, d: o.save(d / "m"), lambda d: Means.load(d / "m"),
        lambda d: (d / "m.json", d / "m.safetensors"), _eq_means, "nnvtv.means/1",
        required="count", wrong=("sites[1]", 3, "a site name"),
        inconsistent=(_set("count", 0), "count"),
    ),
    Kind(
        "layer_sweep", _layer_sweep, lambda o, d: o.save(d), LayerSweep.load,
        lambda d: (d / "layer_sweep.json", d / "layer_sweep.safetensors"),
        lambda a, b: a.as_dict() == b.as_dict() and torch.equal(a.means, b.means), "nnvtv.layer_sweep/1",
        required="accuracy", wrong=("layers[1]", "1", "an integer >= 0"),
        inconsistent=(_set("accuracy", [0.5]), "one accuracy per swept layer"),
    ),
    Kind(
        "function_vector", _function_vector, lambda o, d: o.save(d), FunctionVector.load,
        lambda d: (d / "function_vector.json", d / "function_vector.safetensors"),
        lambda a, b: a.as_dict() == b.as_dict() and torch.equal(a.vector, b.vector) and torch.equal(a.cie, b.cie),
        "nnvtv.function_vector/1",
        required="heads", wrong=("layer", -1, "an integer >= 0"),
        inconsistent=(_set("heads[0]", "L1@last"), "a head site"),
    ),
    Kind(
        "comparison", _comparison, lambda o, d: o.save(d, figure=False), Comparison.load,
        lambda d: (d / "compare.json", None), lambda a, b: a.as_dict() == b.as_dict(), "nnvtv.compare/1",
        required="runs", wrong=("runs[0].seed", "0", "an integer"),
        inconsistent=(_set("jaccard", [[1.0, 0.5]]), "1 x 1 matrix"),
    ),
]
TENSOR_KINDS = [k for k in KINDS if k.name != "comparison"]


def _saved(kind: Kind, tmp_path: Path) -> tuple[Path, Path, Path | None]:
    d = tmp_path / kind.name
    kind.write(kind.make(), d)
    meta, tensors = kind.files(d)
    return d, meta, tensors


def _edit_json(meta: Path, edit: Callable[[dict], Any]) -> None:
    info = json.loads(meta.read_text())
    edit(info)
    meta.write_text(json.dumps(info))


def _edit_tensors(path: Path, edit: Callable[[dict], None]) -> None:
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


def _first_tensor(path: Path) -> str:
    return next(iter(load_file(str(path))))


def _refused(kind: Kind, d: Path, *words: str) -> str:
    with pytest.raises(CheckpointError) as err:
        kind.read(d)
    msg = str(err.value)
    for w in words:
        assert w in msg, (w, msg)
    return msg


# ----------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_round_trip_and_no_temporary_files_left(kind, tmp_path):
    obj = kind.make()
    d = tmp_path / kind.name
    kind.write(obj, d)
    assert kind.same(kind.read(d), obj)
    kind.write(obj, d)  # overwriting an existing bundle
    assert kind.same(kind.read(d), obj)
    meta, tensors = kind.files(d)
    assert json.loads(meta.read_text())["format"] == kind.format
    left = sorted(p.name for p in meta.parent.iterdir() if p.name.endswith(".tmp"))
    assert left == []


# ----------------------------------------------------------------------------- bad files

CASES = [
    "missing json", "missing safetensors", "corrupt json", "json not an object", "foreign format",
    "other nnvtv format", "no format", "missing field", "wrong field type", "unknown field",
    "inconsistent fields", "corrupt safetensors", "truncated safetensors", "tensor missing",
    "extra tensor", "nan", "inf", "integer tensor", "wrong ndim",
]
JSON_ONLY_CASES = {"missing json", "corrupt json", "json not an object", "foreign format", "other nnvtv format",
                   "no format", "missing field", "wrong field type", "unknown field", "inconsistent fields"}


def _params() -> list[Any]:
    out = []
    for kind in KINDS:
        for case in CASES:
            if kind.name == "comparison" and case not in JSON_ONLY_CASES:
                continue
            out.append(pytest.param(kind, case, id=f"{kind.name}-{case}"))
    return out


@pytest.mark.parametrize(("kind", "case"), _params())
def test_bad_file_is_refused_with_a_clear_error(kind, case, tmp_path):
    d, meta, tensors = _saved(kind, tmp_path)
    fix = "write it again with"
    if case == "missing json":
        meta.unlink()
        _refused(kind, d, meta.name, "is missing", "holds no saved")
    elif case == "missing safetensors":
        tensors.unlink()
        _refused(kind, d, tensors.name, "is missing", "holds no saved")
    elif case == "corrupt json":
        meta.write_text(meta.read_text()[:40])
        _refused(kind, d, meta.name, "not valid JSON", "corrupt", fix)
    elif case == "json not an object":
        meta.write_text("[1, 2, 3]")
        _refused(kind, d, meta.name, "[1, 2, 3] (a list)", "not a JSON object", kind.format)
    elif case == "foreign format":
        _edit_json(meta, _set("format", "something/else"))
        _refused(kind, d, meta.name, "field 'format'", '"something/else"', kind.format)
    elif case == "other nnvtv format":
        other = "nnvtv.means/1" if kind.name != "means" else "nnvtv.task_vector/1"
        _edit_json(meta, _set("format", other))
        _refused(kind, d, meta.name, other, kind.format, "Means.save" if kind.name != "means" else "TaskVector.save")
    elif case == "no format":
        _edit_json(meta, lambda info: info.pop("format"))
        _refused(kind, d, meta.name, "field 'format' is missing", kind.format)
    elif case == "missing field":
        _edit_json(meta, lambda info: info.pop(kind.required))
        _refused(kind, d, meta.name, f"field {kind.required!r} is missing", "expected", fix)
    elif case == "wrong field type":
        path, value, expected = kind.wrong
        _edit_json(meta, _set(path, value))
        _refused(kind, d, meta.name, f"field {path!r} is {json.dumps(value)}", expected, fix)
    elif case == "unknown field":
        _edit_json(meta, _set("colour", "blue"))
        _refused(kind, d, meta.name, "field 'colour' is not a field of an nnvtv", "one of the fields", kind.required)
    elif case == "inconsistent fields":
        edit, word = kind.inconsistent
        _edit_json(meta, edit)
        _refused(kind, d, meta.name, word, fix)
    elif case == "corrupt safetensors":
        tensors.write_bytes(b"\x00\x01 definitely not safetensors")
        _refused(kind, d, tensors.name, "cannot be read as safetensors", "corrupt", fix)
    elif case == "truncated safetensors":
        tensors.write_bytes(tensors.read_bytes()[:-7])
        _refused(kind, d, tensors.name, "cannot be read as safetensors", "truncated")
    elif case == "tensor missing":
        name = _first_tensor(tensors)
        _edit_tensors(tensors, lambda t: t.pop(name))
        _refused(kind, d, tensors.name, "lacks 1 tensor", repr(name), "do not belong together")
    elif case == "extra tensor":
        _edit_tensors(tensors, lambda t: t.update(weight=torch.zeros(2)))
        _refused(kind, d, tensors.name, "not", "'weight'", "do not belong together")
    elif case in ("nan", "inf"):
        name = _first_tensor(tensors)

        def poison(t: dict) -> None:
            t[name] = t[name].clone()
            t[name].view(-1)[0] = float(case)

        _edit_tensors(tensors, poison)
        count = "1 NaN and 0 infinite" if case == "nan" else "0 NaN and 1 infinite"
        _refused(kind, d, tensors.name, repr(name), count, "expected finite values", fix)
    elif case == "integer tensor":
        name = _first_tensor(tensors)
        _edit_tensors(tensors, lambda t: t.update({name: t[name].to(torch.int64)}))
        _refused(kind, d, tensors.name, repr(name), "torch.int64", "floating-point")
    elif case == "wrong ndim":
        name = _first_tensor(tensors)
        _edit_tensors(tensors, lambda t: t.update({name: t[name].reshape(1, 1, -1)}))
        _refused(kind, d, tensors.name, repr(name), "3 dimensions", "dimensions")
    else:  # pragma: no cover
        raise AssertionError(case)


def test_every_case_is_covered_for_every_type():
    ids = {p.id for p in _params()}
    for kind in KINDS:
        cases = JSON_ONLY_CASES if kind.name == "comparison" else set(CASES)
        assert {f"{kind.name}-{c}" for c in cases} <= ids


def test_errors_are_checkpoint_errors_and_value_errors(tmp_path):
    kind = KINDS[0]
    d, meta, _ = _saved(kind, tmp_path)
    meta.write_text("{")
    with pytest.raises(ValueError):
        kind.read(d)
    with pytest.raises(NnvtvError):
        kind.read(d)


# ----------------------------------------------------------------------------- writing


@pytest.mark.parametrize("kind", TENSOR_KINDS, ids=lambda k: k.name)
def test_non_finite_values_are_never_written(kind, tmp_path):
    good = kind.make()
    d = tmp_path / kind.name
    kind.write(good, d)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    bad = kind.make()
    t = next(iter(bad.values.values())) if isinstance(bad, TaskVector) else (
        next(iter(bad.values())) if isinstance(bad, Means) else (bad.means if isinstance(bad, LayerSweep) else bad.vector))
    t.view(-1)[0] = float("nan")
    with pytest.raises(CheckpointError, match="Nothing was written"):
        kind.write(bad, d)
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before  # the old bundle is untouched
    assert kind.same(kind.read(d), good)


def test_inconsistent_object_is_not_written(tmp_path):
    tv = dataclasses.replace(_task_vector(), probabilities=[0.5])  # 1 probability for a space of 3
    with pytest.raises(CheckpointError, match=r"field 'probabilities' .* one probability per site of 'space' \(3\)"):
        tv.save(tmp_path / "tv")
    assert not (tmp_path / "tv").exists() or list((tmp_path / "tv").iterdir()) == []


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_interrupted_save_never_looks_complete(kind, tmp_path, monkeypatch):
    """A crash at the last rename (the JSON's) leaves no JSON: the bundle reads as absent."""
    d = tmp_path / kind.name
    kind.write(kind.make(), d)
    meta, _ = kind.files(d)
    real_replace = os.replace

    def crash_on_json(src: str, dst: str) -> None:
        if str(dst).endswith(".json"):
            raise KeyboardInterrupt("power cut")
        real_replace(src, dst)

    monkeypatch.setattr(store.bundle.os, "replace", crash_on_json)
    with pytest.raises(KeyboardInterrupt):
        kind.write(kind.make(), d)
    monkeypatch.undo()
    assert not meta.exists()
    assert [p.name for p in d.iterdir() if p.name.endswith(".tmp")] == []
    _refused(kind, d, meta.name, "is missing")


# ----------------------------------------------------------------------------- older files


def test_files_written_before_the_store_still_load(tmp_path):
    """The JSON + safetensors exactly as the earlier per-class writers made them."""
    a, b = torch.randn(1, 4), torch.randn(1, 4)
    d = tmp_path / "tv"
    d.mkdir()
    save_file({"L0.H0@last": a, "L1.H2@last": b}, str(d / "task_vector.safetensors"))
    (d / "task_vector.json").write_text(json.dumps({
        "format": "nnvtv.task_vector/1", "model": "tiny", "fingerprint": "fp0", "task": "perm", "strategy": "greedy",
        "mode": "replace", "sites": ["L0.H0@last", "L1.H2@last"], "n_sites": 2, "space": ["L0.H0@last", "L1.H2@last"],
        "scores": {"zero_shot": 0.1}, "probabilities": None, "meta": {"seed": 0},
    }, indent=1))
    tv = TaskVector.load(d)
    assert tv.sites == [A, B] and torch.equal(tv.values[B], b) and tv.scores == {"zero_shot": 0.1}

    save_file({"L0.H0@last": a}, str(tmp_path / "m.safetensors"))
    (tmp_path / "m.json").write_text(json.dumps(
        {"format": "nnvtv.means/1", "count": 3, "fingerprint": "fp0", "sites": ["L0.H0@last"], "meta": {}}, indent=1))
    m = Means.load(tmp_path / "m")
    assert m.count == 3 and torch.equal(m[A], a)

    sweep = _layer_sweep()
    save_file({"means": sweep.means}, str(tmp_path / "layer_sweep.safetensors"))
    info = {k: v for k, v in sweep.as_dict().items() if k not in ("best_layer", "best_accuracy")}
    (tmp_path / "layer_sweep.json").write_text(json.dumps({"format": "nnvtv.layer_sweep/1", **info}, indent=1))
    assert LayerSweep.load(tmp_path).as_dict() == sweep.as_dict()

    fv = _function_vector()
    save_file({"vector": fv.vector, "cie": fv.cie}, str(tmp_path / "function_vector.safetensors"))
    info = {k: v for k, v in fv.as_dict().items() if k not in ("best_layer", "best_layer_accuracy")}
    (tmp_path / "function_vector.json").write_text(json.dumps({"format": "nnvtv.function_vector/1", **info}, indent=1))
    assert FunctionVector.load(tmp_path).as_dict() == fv.as_dict()

    cmp = _comparison()
    (tmp_path / "compare.json").write_text(json.dumps(cmp.as_dict(), indent=1))
    assert Comparison.load(tmp_path).as_dict() == cmp.as_dict()


# ----------------------------------------------------------------------------- the helper itself


def test_store_checks_nested_fields_and_fills_defaults(tmp_path):
    schema = store.Schema(
        "nnvtv.test_nested/1", "test bundle", "a test",
        {
            "rows": store.Field(store.list_of(store.Record({"x": store.Field(store.NUMBER)}))),
            "note": store.Field(store.nullable(store.STR), default=None),
            "tags": store.Field(store.dict_of(store.INT), default={}),
        },
        store.Tensors(names=("w",), ndim=1, finite=False),
    )
    store.save(tmp_path / "b", schema, {"rows": [{"x": 1}, {"x": 2.5}]}, {"w": torch.tensor([float("nan")])})
    info, tensors = store.load(tmp_path / "b", schema)
    assert info == {"rows": [{"x": 1}, {"x": 2.5}], "note": None, "tags": {}}  # defaults filled
    assert torch.isnan(tensors["w"]).all()  # finite=False lets NaN through
    info["tags"]["a"] = 1
    assert store.load(tmp_path / "b", schema)[0]["tags"] == {}  # defaults are not shared
    with pytest.raises(CheckpointError, match=r"field 'rows\[1\]\.x' is \"2\" \(a string\); expected a number"):
        store.save(tmp_path / "c", schema, {"rows": [{"x": 1}, {"x": "2"}]}, {"w": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"field 'tags\['a'\]' is true \(a boolean\); expected an integer"):
        store.save(tmp_path / "c", schema, {"rows": [], "tags": {"a": True}}, {"w": torch.zeros(1)})
    assert not (tmp_path / "c.json").exists()


def test_saved_files_follow_the_umask(tmp_path):
    """mkstemp makes files private (0600); a saved bundle is an ordinary file the umask governs."""
    old = os.umask(0o022)
    try:
        TaskVector(values={Site(0, 0, "last"): torch.zeros(1, 4)}, mode="replace", fingerprint="f", model="m",
                   task="t", strategy="s").save(tmp_path / "v")
    finally:
        os.umask(old)
    for f in (tmp_path / "v").iterdir():
        assert f.stat().st_mode & 0o777 == 0o644, f
