"""The shipped ``toy-seggpt``: loads offline, meets its bar, and its trainer runs."""

from __future__ import annotations

import json

import pytest
import torch
from nnvtv.adapters.toy import seggpt as toy

import nnvtv
from nnvtv.canvas import CanvasGeometry
from nnvtv.errors import CheckpointError


@pytest.fixture(scope="module")
def model() -> nnvtv.Model:
    torch.set_num_threads(1)
    return nnvtv.load("toy-seggpt")


def test_loads_with_the_seggpt_adapter(model):
    assert model.adapter.name == "seggpt"
    assert type(model.module).__name__ == "SegGptForImageSegmentation"
    cfg = toy.TOY_SEGGPT_CONFIG
    assert len(model.sites("head")) == cfg["num_hidden_layers"] * cfg["num_attention_heads"] * 4
    # the same 32-px canvas (15-px cells) as toy-visual: both toys see the same pairs
    assert model.io.geometry == CanvasGeometry.scaled(32, patch=4)
    assert nnvtv.catalog.entry("toy-seggpt").default_task == "segmentation"


def test_one_shot_clearly_beats_zero_shot(model):
    scores = nnvtv.evaluate(model, "segmentation")
    assert scores.metric == "iou"
    # measured: zero-shot 0.403, one-shot 0.999 (model card): the prompt says which class to segment
    assert scores.icl >= 0.9
    assert scores.icl - scores.zero_shot >= 0.4
    card = json.loads((toy.WEIGHTS_DIR / "toy-seggpt" / "metrics.json").read_text())
    assert card["metrics"]["disk"]["zero_shot_miou"] == pytest.approx(scores.zero_shot, abs=1e-6)


def test_card_is_what_nnvtv_evaluate_measures(model, tmp_path):
    """Every number of the shipped card's metrics is nnvtv.evaluate's, and the card is what the
    trainer writes from its record (a card cannot disagree with what a user measures)."""
    import shutil

    from nnvtv.adapters.toy.train_seggpt import latent_task, refresh_card

    from nnvtv.tasks.procedural import SHAPES

    shipped = toy.WEIGHTS_DIR / "toy-seggpt"
    rec = json.loads((shipped / "metrics.json").read_text())
    assert set(rec["metrics"]) == set(SHAPES)
    for shape in SHAPES:
        s = nnvtv.evaluate(model, latent_task(shape), shots=1, seed=0, progress=False)
        assert rec["metrics"][shape]["one_shot_miou"] == pytest.approx(s.icl, abs=1e-6)
        assert rec["metrics"][shape]["zero_shot_miou"] == pytest.approx(s.zero_shot, abs=1e-6)
    # re-measuring a copy of the shipped folder rewrites exactly the shipped record and card
    copy = tmp_path / "toy-seggpt"
    shutil.copytree(shipped, copy)
    refresh_card(copy)
    assert (copy / "metrics.json").read_text() == (shipped / "metrics.json").read_text()
    assert (copy / "MODEL_CARD.md").read_text() == (shipped / "MODEL_CARD.md").read_text()


def test_missing_weights_say_how_to_rebuild(tmp_path):
    with pytest.raises(CheckpointError, match="train-toy seggpt"):
        toy.load_toy_seggpt(weights_dir=tmp_path)


def test_trainer_writes_a_loadable_model(tmp_path):
    from nnvtv.adapters.toy.train_seggpt import train_seggpt

    r = train_seggpt(tmp_path, steps=2, batch=4, episodes=8, warmup=1, log_every=1)
    d = tmp_path / "toy-seggpt"
    assert {"model.safetensors", "config.json", "metrics.json", "MODEL_CARD.md"} <= {p.name for p in d.iterdir()}
    assert set(r["metrics"]) == {"disk", "square", "cross"}
    m = toy.load_toy_seggpt(weights_dir=tmp_path)
    assert m.adapter.name == "seggpt"
    assert toy.load_toy_seggpt(weights_dir=d).fingerprint == m.fingerprint  # the model's own folder works too


def test_compare_runs_on_both_visual_toys(tmp_path):
    """`nnvtv compare --models toy-visual,toy-seggpt --task segmentation` end to end, small budget."""
    from typer.testing import CliRunner

    from nnvtv.cli import app

    res = CliRunner().invoke(
        app,
        ["compare", "--models", "toy-visual,toy-seggpt", "--task", "segmentation", "--strategy", "reinforce",
         "--budget", "64", "--out", str(tmp_path), "--json"],
    )
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "compare.json").read_text())
    runs = {r["model"]: r for r in data["runs"]}
    assert set(runs) == {"toy-visual", "toy-seggpt"}
    assert len(runs["toy-seggpt"]["space"]) == 5 * 8 * 4
    for r in runs.values():
        assert r["forward_passes"] <= 64
        assert all(0 < row["depth"] < 1 for row in r["depth"])
    assert (tmp_path / "compare.png").stat().st_size > 0
