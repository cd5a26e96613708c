"""Means from the best ICL prompts (issue 19): find(mean_prompts="best") keeps the candidates with
the lowest task loss on their own train query, for text and visual tasks alike."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from typer.testing import CliRunner

import nnvtv
from nnvtv.activations import mean_activations
from nnvtv.cli import app
from nnvtv.errors import ConfigError
from nnvtv.mean_prompts import (
    CANDIDATES_PER_PROMPT,
    check_mean_prompts,
    icl_means,
    mean_prompt_batch,
)
from nnvtv.tasks.base import cycle


@functools.cache
def _toy(name: str = "toy-text") -> nnvtv.Model:
    return nnvtv.load(name)


@pytest.mark.parametrize(("name", "task"), [("toy-text", "toy-successor"), ("toy-visual", "segmentation")])
def test_best_keeps_the_lowest_loss_candidates(name, task):
    model, task = _toy(name), nnvtv.tasks.get(task)
    split = task.split(0)
    shots = task.default_shots
    kept, built, record = mean_prompt_batch(model, task, split, shots=shots, n_mean_prompts=8, mean_prompts="best", mean_candidates=32, seed=0)
    assert len(kept) == 8 and len(built) == 32
    assert record == {"mean_prompts": "best", "n_mean_prompts": 8, "mean_candidates": 32,
                      "candidate_loss": record["candidate_loss"], "kept_loss": record["kept_loss"]}  # fmt: skip
    losses = task.loss(model.run(built.inputs, readout=True), built.targets)
    best = torch.sort(losses, stable=True).indices[:8]
    torch.testing.assert_close(task.loss(model.run(kept.inputs, readout=True), kept.targets), losses[best])
    assert record["kept_loss"] == pytest.approx(float(losses[best].mean()), rel=1e-5)
    assert record["kept_loss"] <= record["candidate_loss"]


def test_random_is_the_default_and_unchanged():
    model, task = _toy(), nnvtv.tasks.get("toy-successor")
    split, space = task.split(0), model.sites("head")
    means, built, record = icl_means(model, task, split, space, shots=5, n_mean_prompts=16, seed=0)
    assert record == {"mean_prompts": "random", "n_mean_prompts": 16} and len(built) == 16
    icl = task.icl(model, cycle(split.train, 16), split.train, shots=5, seed=0)  # what find always did
    want = mean_activations(model, icl.chunks(64), space)
    for s in space:
        torch.testing.assert_close(means[s], want[s])
    assert means.meta["mean_prompts"] == "random"


def test_find_with_the_best_mean_prompts_records_them():
    result = nnvtv.find(_toy(), "toy-successor", strategy="attribution", budget=8, n_mean_prompts=16, mean_prompts="best")
    meta = result.task_vector.meta
    assert meta["mean_prompts"] == "best" and meta["n_mean_prompts"] == 16
    assert meta["mean_candidates"] == CANDIDATES_PER_PROMPT * 16 and meta["kept_loss"] <= meta["candidate_loss"]
    assert result.means.meta["mean_prompts"] == "best"
    default = nnvtv.find(_toy(), "toy-successor", strategy="attribution", budget=8, n_mean_prompts=16)
    assert default.task_vector.meta["mean_prompts"] == "random" and "mean_candidates" not in default.task_vector.meta


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mean_prompts": "worst"}, "mean_prompts must be one of 'random', 'best'"),
        ({"mean_prompts": "best", "mean_candidates": 10}, "mean_candidates=10 is fewer than n_mean_prompts=64"),
        ({"mean_candidates": 100}, "only applies to mean_prompts='best'"),
        ({"mean_prompts": "best", "mean_candidates": 0}, "mean_candidates must be an int >= 1"),
        ({"n_mean_prompts": 0}, "n_mean_prompts must be an int >= 1"),
    ],
)
def test_bad_mean_prompt_options_are_refused_before_any_forward(kwargs, match, refuse_forwards):
    model = refuse_forwards(_toy())
    with pytest.raises(ConfigError, match=match):
        nnvtv.find(model, strategy="attribution", budget=8, **kwargs)
    with pytest.raises(ConfigError, match=match):
        check_mean_prompts(kwargs.get("mean_prompts", "random"), kwargs.get("n_mean_prompts", 64), kwargs.get("mean_candidates"))


def test_cli_find_mean_prompts_best():
    runner = CliRunner()
    res = runner.invoke(app, ["find", "--strategy", "attribution", "--budget", "8", "--mean-prompts", "best", "--mean-candidates", "128", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["strategy"] == "attribution"
    for args, match in [
        (["--mean-prompts", "worst"], "--mean-prompts must be one of random, best"),
        (["--mean-candidates", "100"], "--mean-candidates only applies with --mean-prompts best"),
        (["--mean-prompts", "best", "--mean-candidates", "0"], "--mean-candidates must be >= 1"),
    ]:
        res = runner.invoke(app, ["find", *args])
        assert res.exit_code == 2 and match in res.stderr, (args, res.stderr)
