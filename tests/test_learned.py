"""Learned task vectors (issue 19): values trained by gradient descent at found sites or at one
residual layer; saved, loaded and applied like any task vector; arguments checked first."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from typer.testing import CliRunner

import nnvtv
from nnvtv.cli import app
from nnvtv.errors import ConfigError, NnvtvError
from nnvtv.learn_plan import planned_cost


@functools.cache
def _toy() -> nnvtv.Model:
    return nnvtv.load("toy-text")


@functools.cache
def _found() -> nnvtv.TaskVector:
    return nnvtv.find(_toy(), "toy-perm_c", strategy="greedy", budget=64, seed=0).task_vector


@functools.cache
def _layer0() -> nnvtv.LearnResult:
    """toy-perm_c, the residual stream of layer 0 (measured: extracted means 0.125 held-out,
    fit loss 2.33; learned 0.69 held-out, fit loss 0.011 after 100 steps)."""
    return nnvtv.learn(_toy(), "toy-perm_c", layer=0, steps=60)


def test_learned_values_beat_the_extracted_means_on_the_training_loss():
    res = _layer0()
    fit = res.fit_loss
    assert fit["learned"] < 0.5 * fit["extracted"]
    assert res.scores.task_vector > res.extracted_score  # held out too, here
    assert [str(s) for s in res.task_vector.sites] == ["L0@last"] and res.extracted.sites == res.task_vector.sites
    # at a found vector's sites the extracted means are the vector's own values
    found = _found()
    res = nnvtv.learn(_toy(), start=found, steps=20, validation=0)
    assert res.fit_loss["learned"] <= res.fit_loss["extracted"]
    assert res.extracted.sites == found.sites
    for s in found.sites:
        torch.testing.assert_close(res.extracted.values[s], found.values[s])
    assert res.task_vector.meta["learned_from"] == {"strategy": "greedy", "n_sites": len(found)}


def test_a_learned_vector_is_marked_and_records_its_training():
    res = _layer0()
    tv = res.task_vector
    assert tv.strategy == "learned" and tv.is_learned and not res.extracted.is_learned
    rec = tv.learned
    assert rec["steps"] == 60 and rec["lr"] == 0.05 and rec["init"] == "mean" and rec["optimizer"] == "adam"
    assert rec["forward_passes"] == res.forward_passes == planned_cost(60, type("P", (), {"eval_every": 5}), True)
    assert rec["forward_passes"] == 3 * 60 + 1 + (60 // 5 + 1)  # steps, final pass, validation passes
    assert rec["loss"]["source"] == "task loss" and rec["seconds"] > 0 and len(rec["train_losses"]) == 61
    assert tv.scores["extracted"] == res.extracted_score == rec["extracted_score"]
    assert set(res.as_dict()) >= {"scores", "extracted_score", "fit_loss", "learned", "history", "forward_passes"}
    json.dumps(res.as_dict())  # plain JSON (no NaN)


def test_save_load_apply_round_trip(tmp_path):
    res = _layer0()
    tv = res.task_vector
    tv.save(tmp_path / "v")
    saved = json.loads((tmp_path / "v" / "task_vector.json").read_text())
    assert saved["learned"]["steps"] == 60
    back = nnvtv.TaskVector.load(tmp_path / "v")
    assert back.is_learned and back.strategy == "learned" and back.learned == tv.learned and back.sites == tv.sites
    for s in tv.sites:
        torch.testing.assert_close(back.values[s], tv.values[s])
    task = nnvtv.tasks.get("toy-perm_c")
    zs = task.zero_shot(_toy(), task.split(0).test)
    torch.testing.assert_close(back.apply(_toy(), zs.inputs), _toy().run(zs.inputs, tv.patch(), readout=True))
    assert nnvtv.evaluate(_toy(), vector=back, shots=5, seed=0).task_vector == res.scores.task_vector
    # a vector that is not learned writes no 'learned' field (older nnvtv reads it) and loads as such
    res.extracted.save(tmp_path / "e")
    assert "learned" not in json.loads((tmp_path / "e" / "task_vector.json").read_text())
    assert nnvtv.TaskVector.load(tmp_path / "e").learned is None


def test_budget_early_stopping_zeros_and_add():
    res = nnvtv.learn(_toy(), "toy-perm_c", layer=1, budget=40, init="zeros")
    assert res.task_vector.mode == "add" and res.task_vector.learned["init"] == "zeros"
    assert res.forward_passes <= 40 and res.task_vector.learned["steps"] == 11  # 33 + the final pass + 4 validation passes = 38; 12 steps need 41
    assert res.fit_loss["extracted"] is None  # the start is not the means
    res = nnvtv.learn(_toy(), "toy-perm_c", layer=1, steps=200, lr=0.5, eval_every=1, patience=2)
    rec = res.task_vector.learned
    assert rec["stopped_early"] and rec["steps"] < 200 and res.forward_passes < planned_cost(200, type("P", (), {"eval_every": 1}), True)


def test_learn_on_a_visual_toy_minimises_its_surrogate():
    model = nnvtv.load("toy-visual")
    res = nnvtv.learn(model, "segmentation", layer=1, stream="enc", groups=["cls"], steps=4, validation=0)
    assert res.task_vector.learned["loss"]["source"] == "model surrogate"
    assert res.fit_loss["learned"] <= res.fit_loss["extracted"]
    assert 0 <= res.scores.task_vector <= 1


def test_learn_on_toy_seggpt_at_attributions_sites_follows_the_task_surrogate():
    """SegGPT (continuous pixels, IoU): the sites attribution finds, then learned values; the
    gradients follow the task's soft IoU and the kept values fit at least as well as the means."""
    model = nnvtv.load("toy-seggpt")
    found = nnvtv.find(model, "segmentation", strategy="attribution", budget=32, progress=False)
    res = nnvtv.learn(model, start=found.task_vector, steps=3, validation=0, progress=False)
    assert res.task_vector.learned["loss"]["source"] == "task surrogate"
    assert res.task_vector.sites == found.task_vector.sites
    assert res.fit_loss["learned"] <= res.fit_loss["extracted"]
    # measured: extracted 0.783, learned 0.81 held-out IoU (zero-shot 0.403, one-shot 0.999)
    assert res.scores.task_vector > res.scores.zero_shot + 0.2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "learn needs the sites to train"),
        ({"layer": 1, "start": "L1@last"}, "not both"),
        ({"start": "L1@last"}, "start must be a TaskVector"),
        ({"start": []}, "empty list of sites"),
        ({"layer": "1"}, "layer must be an int"),
        ({"layer": 9}, "out of range"),
        ({"layer": 1, "init": "random"}, "init must be one of"),
        ({"layer": 1, "mode": "swap"}, "mode must be one of"),
        ({"layer": 1, "steps": 0}, "steps must be an int >= 1"),
        ({"layer": 1, "steps": 5, "budget": 30}, "not both"),
        ({"layer": 1, "budget": 5}, "budget=5 pays for no training step"),
        ({"layer": 1, "lr": 0}, "lr must be a finite number > 0"),
        ({"layer": 1, "lr": float("nan")}, "lr must be a finite number"),
        ({"layer": 1, "validation": 1.0}, "validation must be a finite number >= 0.0 and < 1.0"),
        ({"layer": 1, "eval_every": 0}, "eval_every must be an int >= 1"),
        ({"layer": 1, "patience": True}, "patience must be an int >= 1"),
        ({"layer": 1, "seed": -1}, "seed must be an int >= 0"),
        ({"layer": 1, "shots": 0}, "shots must be an int >= 1"),
        ({"layer": 1, "shots": 99}, "shots=99 is more than"),
        ({"layer": 1, "mean_prompts": "best", "mean_candidates": 8}, "fewer than n_mean_prompts=64"),
        ({"layer": 1, "stream": "enc"}, "no stream 'enc'"),
        ({"layer": 1, "groups": "last"}, "groups must be a list"),
    ],
)
def test_bad_arguments_are_refused_before_any_forward(kwargs, match, refuse_forwards):
    model = refuse_forwards(_toy())
    with pytest.raises(NnvtvError, match=match):
        nnvtv.learn(model, "toy-perm_c", **kwargs)


def test_a_vector_of_another_model_and_a_multi_stream_layer_are_refused():
    other = nnvtv.load("toy-text-natural")
    with pytest.raises(NnvtvError, match="fingerprint|another model|was made for"):
        nnvtv.learn(other, start=_found())
    with pytest.raises(ConfigError, match="several streams"):
        nnvtv.learn(nnvtv.load("toy-visual"), "segmentation", layer=1)


def test_cli_learn(tmp_path):
    runner = CliRunner()
    _found().save(tmp_path / "found")
    res = runner.invoke(app, ["learn", "--vector", str(tmp_path / "found"), "--steps", "5", "--out", str(tmp_path / "learned"), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["strategy"] == "learned" and data["learned"]["steps"] == 5 and data["fit_loss"]["learned"] is not None
    assert nnvtv.TaskVector.load(tmp_path / "learned").is_learned
    assert json.loads((tmp_path / "learned" / "results.json").read_text())["extracted_score"] == data["extracted_score"]
    res = runner.invoke(app, ["learn", "--layer", "1", "--steps", "3"])
    assert res.exit_code == 0, res.output
    assert "extracted means" in res.stdout and "learned" in res.stdout
    for args, match in [
        ([], "give --vector DIR"),
        (["--layer", "1", "--vector", str(tmp_path / "found")], "exactly one"),
        (["--vector", str(tmp_path / "nothing")], "does not exist"),
        (["--layer", "1", "--steps", "0"], "--steps must be >= 1"),
        (["--layer", "1", "--lr", "-1"], "--lr must be a finite number > 0"),
        (["--layer", "1", "--validation", "1"], "--validation must be in [0, 1)"),
        (["--layer", "1", "--init", "ones"], "--init must be one of mean, zeros"),
        (["--layer", "1", "--mean-prompts", "worst"], "--mean-prompts must be one of random, best"),
        (["--layer", "1", "--steps", "2", "--budget", "9"], "not both"),
    ]:
        res = runner.invoke(app, ["learn", *args])
        assert res.exit_code == 2, (args, res.output)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and match in lines[0], (args, res.stderr)


def test_gradient_work_on_a_remote_model_is_refused_before_any_request(kit, tokenizer):
    """nnvtv runs no gradients through a remote (NDIF) trace: gradient strategies and learned
    vectors say so before the means are collected (nnsight's local emulation of the remote path)."""
    from nnvtv.errors import RemoteError
    from nnvtv.tasks import WordPairTask

    fmt = {"demo": "{input} w39 {output}", "query": "{input} w39", "separator": " w38 "}
    task = WordPairTask("w-shift", [(f"w{i}", f"w{i + 20}") for i in range(16)], default_shots=2)
    remote = nnvtv.wrap(kit.FAMILIES["gpt2"].build(0), tokenizer, meta={"prompt_format": fmt}, remote="local")
    before = remote.remote_requests
    for strategy in ("attribution", "gradient"):
        with pytest.raises(RemoteError, match="no gradients through a remote"):
            nnvtv.find(remote, task, strategy=strategy, budget=64, n_mean_prompts=8)
    with pytest.raises(RemoteError, match="no gradients through a remote"):
        nnvtv.learn(remote, task, layer=0, steps=2)
    assert remote.remote_requests == before


def test_learn_result_prints_in_one_line():
    text = repr(_layer0())
    assert text.startswith("LearnResult(toy-text / toy-perm_c: 1 site, held-out accuracy learned") and "\n" not in text
    assert len(text) < 200


def test_learn_result_displays_itself_and_plots_its_training(tmp_path):
    r = _layer0()
    html = r._repr_html_()
    for part in ("learned values", "extracted means", f"{r.extracted_score:.3f}", f"{r.scores.task_vector:.3f}", "<img"):
        assert part in html, part
    fig = r.plot(tmp_path / "learn.png")
    assert (tmp_path / "learn.png").stat().st_size > 0
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()][:2] == ["fit queries", "validation queries"]
    fit = ax.get_lines()[0].get_ydata()
    assert fit[-1] < fit[0]  # the values were trained: the fit loss went down from the extracted means'
