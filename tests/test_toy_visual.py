"""The shipped toy-visual model: one-shot beats zero-shot, search finds a task vector that closes
most of the gap (on the tasks where the card says the bars are met; the others are strict
xfails), the weights match their model card, the trainer writes a loadable model and card, and
the CLI writes the image grid."""

from __future__ import annotations

import json

import pytest
import torch
from nnvtv.adapters.mae_vqgan import train_toy
from nnvtv.adapters.mae_vqgan.catalog import WEIGHTS_DIR
from typer.testing import CliRunner

import nnvtv
from nnvtv.cli import app

# the bars live beside the trainer that writes them into the model card
TASKS = train_toy.TASKS
# tasks whose bars the shipped weights do not reach (strict xfails: they fail loudly once met)
# (MODEL_CARD.md: in-painting's 4-px hole is 7% of the cell, and the zero-shot guess already
# restores it about as well as the one-shot prompt does, so the MSE does not move by 10%)
NOT_REACHED: tuple[str, ...] = ("inpainting",)
REACHED = tuple(t for t in TASKS if t not in NOT_REACHED)
SEARCH_BUDGET = 1024

runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def toy():
    return nnvtv.load("toy-visual")


@pytest.fixture(scope="module")
def card():
    return json.loads((WEIGHTS_DIR / "toy-visual" / "metrics.json").read_text())


def test_shipped_weights_are_small_and_load(toy):
    f = WEIGHTS_DIR / "toy-visual" / "model.safetensors"
    assert f.stat().st_size < 20 * 2**20
    assert (WEIGHTS_DIR / "toy-visual" / "MODEL_CARD.md").exists()
    assert toy.adapter.name == "mae_vqgan" and len(toy.sites("head")) == 112
    assert toy.io.geometry.size == 32 and toy.io.geometry.cell == 15


def _clearly_better(s: nnvtv.Scores) -> bool:
    return train_toy.one_shot_clearly_better(s.metric, s.zero_shot, s.icl)


@pytest.mark.parametrize("task", NOT_REACHED)
@pytest.mark.xfail(strict=True, reason="not reached by the shipped toy-visual weights (MODEL_CARD.md)")
def test_one_shot_clearly_beats_zero_shot_not_yet(toy, task):
    assert _clearly_better(nnvtv.evaluate(toy, task, seed=0))


@pytest.mark.parametrize("task", TASKS)
def test_scores_match_the_model_card(toy, card, task):
    s = nnvtv.evaluate(toy, task, seed=0)
    assert s.zero_shot == pytest.approx(card["metrics"][task]["zero_shot"], abs=2e-4)
    assert s.icl == pytest.approx(card["metrics"][task]["icl_1shot"], abs=2e-4)


@pytest.mark.parametrize("task", REACHED)
def test_one_shot_clearly_beats_zero_shot(toy, task):
    s = nnvtv.evaluate(toy, task, seed=0)
    assert _clearly_better(s), s


@pytest.mark.slow
@pytest.mark.parametrize("task", REACHED)
def test_search_finds_a_task_vector_closing_most_of_the_gap(toy, task):
    r = nnvtv.find(toy, task, strategy="reinforce", budget=SEARCH_BUDGET, seed=0)
    s = r.scores
    row = json.loads((WEIGHTS_DIR / "toy-visual" / "search.json").read_text())["tasks"][task]
    assert s.task_vector == pytest.approx(row["task_vector"], abs=2e-4)  # the card's search, reproduced
    assert [str(x) for x in r.task_vector.sites] == row["sites"]
    assert s.gap_closed is not None and s.gap_closed >= train_toy.MIN_GAP_CLOSED, (task, s, r.n_sites)
    assert 0 < r.n_sites < len(r.space) and r.forward_passes <= SEARCH_BUDGET


def test_search_report_covers_every_task():
    report = json.loads((WEIGHTS_DIR / "toy-visual" / "search.json").read_text())
    assert report["budget"] == SEARCH_BUDGET and set(report["tasks"]) == set(TASKS)


def test_trainer_writes_a_loadable_model_and_card(tmp_path):
    rec = train_toy.train_visual(tmp_path, n_episodes=16, vq_steps=2, vq_batch=4, mae_steps=3, batch=4, zs_batch=2,
                                 tvp_batch=2, tvp_from=0.0, search_budget=32)
    for f in ("model.safetensors", "config.json", "metrics.json", "search.json", "MODEL_CARD.md"):
        assert (tmp_path / f).exists(), f
    assert set(rec["metrics"]) == set(TASKS)
    card = (tmp_path / "MODEL_CARD.md").read_text()
    assert "## Bars" in card and "| low-light |" in card
    m = nnvtv.load("toy-visual", weights_dir=tmp_path)
    assert m.adapter.name == "mae_vqgan" and len(m.sites("head")) == 112


@pytest.mark.slow
def test_cli_find_writes_the_image_grid(tmp_path):
    res = runner.invoke(app, ["find", "--model", "toy-visual", "--task", "segmentation", "--strategy", "reinforce",
                              "--budget", "128", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    for f in ("examples.png", "sites.png", "history.png", "results.json", "task_vector.safetensors"):
        assert (tmp_path / f).exists(), f
    from PIL import Image

    with Image.open(tmp_path / "examples.png") as im:
        assert im.size[0] > im.size[1] > 200  # 5 columns x 4 rows of pictures
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["model"] == "toy-visual" and data["scores"]["metric"] == "iou"
    again = runner.invoke(app, ["evaluate", "--vector", str(tmp_path), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["scores"]["task_vector"] == pytest.approx(data["scores"]["task_vector"])
