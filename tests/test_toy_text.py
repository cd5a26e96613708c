"""The shipped toy text model meets its bars, and `nnvtv find` works end to end on it."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import nnvtv
from nnvtv.cli import app
from nnvtv.errors import (
    CheckpointError,
    FingerprintMismatchError,
    UnknownModelError,
    UnknownTaskError,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    return nnvtv.load("toy-text")


@pytest.fixture(scope="module")
def default_result(toy):
    # exactly what `nnvtv find` runs with no arguments
    return nnvtv.find(toy, seed=0)


def test_shipped_weights_load_through_wrap(toy):
    assert toy.adapter.name == "gpt2"
    assert (toy.n_layers, toy.n_heads, toy.d_model) == (4, 4, 128)
    assert len(toy.sites("head")) == 16


def test_icl_is_high_and_zero_shot_near_chance(toy):
    names = [t.name for t in nnvtv.tasks.list_tasks() if t.name.startswith("toy-")]
    assert len(names) == 8
    scores = [nnvtv.evaluate(toy, name) for name in names]
    icl = sum(s.icl for s in scores) / len(scores)
    zero = sum(s.zero_shot for s in scores) / len(scores)
    assert icl >= 0.9, [(n, s.icl) for n, s in zip(names, scores, strict=True)]
    assert zero <= 0.3, zero  # 8 tasks: guessing the task is right ~1/8 of the time


def test_default_find_is_reproducible_and_within_budget(toy, default_result):
    r = default_result
    assert r.forward_passes == r.run.forward_passes == r.history[-1].forward_passes <= r.run.budget
    # the saved vector is what the search chose: the sites of its final mask, in site-space
    # order, each holding its ICL mean (seed 0: 4 of 16 heads, L1.H0-H3)
    assert r.task_vector.sites == r.space.select(r.run.mask)
    assert r.n_sites == int(r.run.mask.sum()) >= 1
    assert all(torch.equal(r.task_vector.values[s], r.means[s]) for s in r.task_vector.sites)
    again = nnvtv.find(toy, seed=0)
    assert again.task_vector.sites == r.task_vector.sites
    assert again.scores.task_vector == r.scores.task_vector


def test_default_search_recovers_icl_with_few_heads(default_result):
    r = default_result
    assert r.scores.zero_shot <= 0.3, r.scores
    assert r.scores.task_vector >= 0.85 * r.scores.icl, r.scores
    assert r.n_sites <= 0.25 * len(r.space), [str(s) for s in r.task_vector.sites]


def test_found_sites_sit_where_tvp_put_the_task(default_result):
    # toy-text was trained to carry the task at blocks 0-1 (last token): the search must find it there
    assert all(s.layer <= 1 for s in default_result.task_vector.sites)


def test_save_reload_evaluate_round_trip(toy, default_result, tmp_path):
    tv = default_result.task_vector
    tv.save(tmp_path)
    back = nnvtv.TaskVector.load(tmp_path)
    assert back.sites == tv.sites and back.fingerprint == toy.fingerprint
    s = nnvtv.evaluate(toy, back.task, back, shots=back.meta["shots"], seed=back.meta["seed"])
    assert s.task_vector == pytest.approx(default_result.scores.task_vector)


def test_vector_for_another_model_is_refused(default_result):
    other = nnvtv.load("toy-text-natural")
    with pytest.raises(FingerprintMismatchError, match="toy-text"):
        default_result.task_vector.apply(other, ["s16 ->"])


def test_corrupt_vector_files_give_clear_errors(default_result, tmp_path):
    default_result.task_vector.save(tmp_path)
    (tmp_path / "task_vector.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(CheckpointError, match="corrupt"):
        nnvtv.TaskVector.load(tmp_path)
    (tmp_path / "task_vector.json").write_text("{")
    with pytest.raises(CheckpointError, match="JSON"):
        nnvtv.TaskVector.load(tmp_path)
    with pytest.raises(CheckpointError, match="holds no saved task vector"):
        nnvtv.TaskVector.load(tmp_path / "nowhere")


def test_unknown_model_and_task(toy):
    with pytest.raises(UnknownModelError, match="toy-text"):
        nnvtv.load("no-such-model")
    with pytest.raises(UnknownTaskError, match="toy-perm_a"):
        nnvtv.find(toy, "no-such-task", budget=8)


def test_cli_find_writes_everything_and_evaluate_reproduces(tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["find", "--task", "toy-successor", "--strategy", "greedy", "--budget", "40", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["forward_passes"] <= 40 and data["total_sites"] == 16
    for name in ("task_vector.safetensors", "task_vector.json", "sites.png", "history.png", "results.json"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "task_vector.json").read_text())
    assert saved["fingerprint"] == nnvtv.load("toy-text").fingerprint
    res2 = runner.invoke(app, ["evaluate", "--vector", str(out), "--json"])
    assert res2.exit_code == 0, res2.output
    again = json.loads(res2.stdout)
    assert again["scores"]["task_vector"] == pytest.approx(data["scores"]["task_vector"])


def test_cli_bad_input_exits_with_message():
    res = runner.invoke(app, ["find", "--model", "nope", "--budget", "4"])
    assert res.exit_code == 2 and "unknown model" in res.stderr
    res = runner.invoke(app, ["find", "--task", "nope", "--budget", "4"])
    assert res.exit_code == 2 and "unknown task" in res.stderr
    res = runner.invoke(app, ["find", "--budget", "0"])
    assert res.exit_code == 2 and "budget" in res.stderr


def test_cli_lists_models_and_tasks():
    res = runner.invoke(app, ["models"])
    assert res.exit_code == 0 and "toy-text" in res.stdout
    res = runner.invoke(app, ["tasks"])
    assert res.exit_code == 0 and "toy-perm_a" in res.stdout and "antonyms" in res.stdout
