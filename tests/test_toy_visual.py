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
from nnvtv.errors import CheckpointError, ConfigError

# the bars live beside the trainer that writes them into the model card
TASKS = train_toy.TASKS
# tasks whose bars the shipped weights do not reach (strict xfails: they fail loudly once met)
# (in-painting: the square is 7% of the pixels and the model does not read the example there; ten
# retrained variants did not reach it either: benchmarks/results/toy_visual_inpainting.md)
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
    # the recipe knobs off their defaults (the defaults are the shipped run's, checked by its card below)
    rec = train_toy.train_visual(tmp_path, n_episodes=16, vq_steps=2, vq_batch=4, mae_steps=3, batch=4, zs_batch=2,
                                 tvp_batch=2, tvp_from=0.0, search_budget=32, latents={"inpainting": ("restore", "keep")},
                                 shared_hole=True, change_weight=4.0,
                                 family_weights={"segmentation": 1, "low-light": 1, "inpainting": 2, "colorization": 0})
    for f in ("model.safetensors", "config.json", "metrics.json", "search.json", "MODEL_CARD.md"):
        assert (tmp_path / f).exists(), f
    assert set(rec["metrics"]) == set(TASKS)
    h = rec["hparams"]
    assert h["latents"]["inpainting"] == ["restore", "keep"] and h["shared_hole"] and h["change_weight"] == 4.0
    card = (tmp_path / "MODEL_CARD.md").read_text()
    assert "## Bars" in card and "| low-light |" in card
    assert "restore the square / keep it black; the square sits at the same place" in card
    assert "inpainting 50% / colorization 0%" in card and "weighs 5 times" in card
    m = nnvtv.load("toy-visual", weights_dir=str(tmp_path))  # a str folder works as well as a Path
    assert m.adapter.name == "mae_vqgan" and len(m.sites("head")) == 112


def test_shipped_card_is_what_the_trainer_writes_from_its_records():
    d = WEIGHTS_DIR / "toy-visual"
    rec, search = (json.loads((d / f).read_text()) for f in ("metrics.json", "search.json"))
    assert (d / "MODEL_CARD.md").read_text() == train_toy.model_card(rec, search)


def test_bad_recipe_knobs_are_refused():
    with pytest.raises(ConfigError, match="inpainting training latents"):
        train_toy.resolve_latents({"inpainting": ("restore", "sideways")})
    with pytest.raises(ConfigError, match="non-empty"):
        train_toy.resolve_latents({"inpainting": ()})
    with pytest.raises(ConfigError, match="unknown visual task family"):
        train_toy.resolve_latents({"deblur": ("restore",)})
    with pytest.raises(ConfigError, match="family weights"):
        train_toy.resolve_family_weights({"segmentation": 1.0})  # the other families missing
    with pytest.raises(ConfigError, match="family weights"):
        train_toy.resolve_family_weights({f: -1.0 for f in train_toy.FAMILIES})
    with pytest.raises(SystemExit):
        train_toy.main(["--out", "x", "--family-weights", "segmentation=lots"])


def _toy_geometry():
    from nnvtv.canvas import CanvasGeometry

    return CanvasGeometry(size=32, patch=4, gap=2)


def test_shared_hole_puts_the_example_square_where_the_query_square_is():
    g = _toy_geometry()
    o, c = g.origin, g.cell

    def same_square(canv: torch.Tensor, fam: torch.Tensor) -> list[bool]:
        return [torch.equal((x[:, :c, :c] == 0).all(0), (x[:, o:, :c] == 0).all(0))
                for x, f in zip(canv, fam.tolist(), strict=True) if train_toy.FAMILIES[f] == "inpainting"]

    shared = same_square(*train_toy.make_episodes(64, 0, g, shared_hole=True))
    assert len(shared) >= 4 and all(shared)
    apart = same_square(*train_toy.make_episodes(64, 0, g))  # the shipped recipe: a place per image
    assert len(apart) == len(shared) and not all(apart)


def test_change_weights_single_out_the_codes_that_differ_from_the_query():
    from nnvtv.canvas import make_canvas
    from nnvtv.tasks.procedural import render_pair

    g = _toy_geometry()
    holed, full = render_pair("inpainting", "restore", 3, g.cell, hole=(0, 0))
    seg_in, seg_out = render_pair("segmentation", "disk", 3, g.cell)
    rows = [(holed, full), (holed, holed), (seg_in, seg_out)]  # restore, keep, segmentation
    canv = torch.stack([(make_canvas(None, None, a, b, geometry=g) * 255).round().to(torch.uint8) for a, b in rows])
    w = train_toy.change_weights(canv, g, 4.0)
    assert w.shape == (3, len(g.patches("answer")))
    assert torch.allclose(w.mean(1), torch.ones(3))
    # restore: the hole (rows/cols 0-3 of the cell = pixels 1-4 of the answer block) touches the
    # top-left 2 x 2 patches, which weigh 5x the others
    big = (w[0] > 1).reshape(4, 4)
    assert big[:2, :2].all() and big.sum() == 4
    assert torch.allclose(w[0][w[0] > 1] / w[0][w[0] < 1].max(), torch.tensor(5.0))
    assert torch.allclose(w[1], torch.ones(16)) and torch.allclose(w[2], w[2][0].expand(16))  # nothing / everything changed


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
    assert json.loads(again.stdout)["scores"]["task_vector"] == pytest.approx(data["scores"]["task_vector"])


def test_weights_dir_is_the_model_folder_or_one_that_holds_it(tmp_path):
    """``weights_dir`` takes the trainer's ``--out`` (the model's own folder) or a folder holding
    ``toy-visual/`` (as the text and SegGPT toys' trainers write); anything else says how to rebuild."""
    import shutil

    shutil.copytree(WEIGHTS_DIR / "toy-visual", tmp_path / "toy-visual")
    shipped = nnvtv.load("toy-visual")
    for folder in (tmp_path, tmp_path / "toy-visual"):
        assert nnvtv.load("toy-visual", weights_dir=folder).fingerprint == shipped.fingerprint
    (tmp_path / "half").mkdir()
    shutil.copy(WEIGHTS_DIR / "toy-visual" / "model.safetensors", tmp_path / "half")  # no config.json
    with pytest.raises(CheckpointError, match=r"config\.json.*train-toy visual --out"):
        nnvtv.load("toy-visual", weights_dir=tmp_path / "half")
