"""Canvas geometry (pixel-exact), visual metrics (hand-computed), procedural data, visual tasks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nnvtv.adapters.mae_vqgan import MaeVqgan, tiny
from PIL import Image

import nnvtv
from nnvtv.canvas import (
    OFFICIAL,
    CanvasGeometry,
    CanvasPrompts,
    as_cell,
    denormalize,
    make_canvas,
    normalize,
)
from nnvtv.errors import ConfigError, EmptyDataError, ShapeMismatchError
from nnvtv.tasks import get as get_task
from nnvtv.tasks.image_metrics import binarize, iou, mse, quantize
from nnvtv.tasks.procedural import PALETTES, hole_origin, hole_side, render_pair
from nnvtv.tasks.sources import FolderImages, FolderSegmentation, Procedural
from nnvtv.tasks.visual import VisualTask, prompt_candidates, select_prompts


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return nnvtv.wrap(MaeVqgan(tiny()).eval(), name="tiny-mae-vqgan")


# ------------------------------------------------------------------ canvas


def test_official_geometry_pixel_exact():
    g = OFFICIAL
    assert (g.size, g.cell, g.gap, g.origin, g.grid) == (224, 111, 2, 113, 14)
    imgs = [torch.full((3, 111, 111), v) for v in (0.1, 0.2, 0.3, 0.4)]
    c = make_canvas(*imgs, geometry=g, background=1.0)
    assert c.shape == (3, 224, 224)
    assert torch.all(c[:, :111, :111] == 0.1) and torch.all(c[:, :111, 113:] == 0.2)
    assert torch.all(c[:, 113:, :111] == 0.3) and torch.all(c[:, 113:, 113:] == 0.4)
    assert torch.all(c[:, 111:113, :] == 1.0) and torch.all(c[:, :, 111:113] == 1.0)
    assert torch.equal(g.crop_answer(c), imgs[3])
    # the answer quadrant is rows/cols 112..223 (7 x 7 patches); the answer cell starts 1 px in
    assert g.answer_offset == 1
    assert torch.equal(g.crop_quadrant_block(c[:, 112:, 112:]), imgs[3])
    ans = g.patches("answer")
    assert len(ans) == 49 and ans[0] == 7 * 14 + 7 and ans[-1] == 14 * 14 - 1
    assert g.patches("query")[:2] == [98, 99] and g.patches("example_out")[0] == 7
    # no answer given: the cell stays background
    assert torch.all(make_canvas(*imgs[:3], geometry=g, background=0.0)[:, 113:, 113:] == 0.0)


def test_scaled_geometry():
    g = CanvasGeometry.scaled(32, patch=4)
    assert (g.cell, g.origin, g.grid, g.answer_offset) == (15, 17, 8, 1)
    with pytest.raises(ConfigError, match="even number"):
        CanvasGeometry(36, 4)  # 9 patches: no whole-patch quadrants


def test_as_cell_inputs():
    pil = Image.fromarray(np.full((40, 30, 3), 255, dtype=np.uint8))
    t = as_cell(pil, 15)
    assert t.shape == (3, 15, 15) and torch.allclose(t, torch.ones(3, 15, 15))
    gray = as_cell(np.full((15, 15), 51, dtype=np.uint8), 15)
    assert gray.shape == (3, 15, 15) and torch.allclose(gray, torch.full((3, 15, 15), 0.2))
    hwc = as_cell(torch.zeros(15, 15, 3), 15)
    assert hwc.shape == (3, 15, 15)
    with pytest.raises(ShapeMismatchError):
        as_cell("image.png", 15)
    x = torch.rand(2, 3, 4, 4)
    assert torch.allclose(denormalize(normalize(x)), x, atol=1e-6)
    assert torch.allclose(normalize(torch.tensor([0.485, 0.456, 0.406])[:, None, None]), torch.zeros(3, 1, 1))


# ------------------------------------------------------------------ metrics


def test_binarize_and_iou_by_hand():
    # 2 x 2 images. pred pixels (RGB): white, near-white, dark gray, (0.6, 0.6, 0.3) -> mean 0.5 -> black
    pred = torch.tensor([[[1.0, 0.9], [0.2, 0.6]], [[1.0, 0.8], [0.2, 0.6]], [[1.0, 0.7], [0.2, 0.3]]])
    assert binarize(pred).tolist() == [[True, True], [False, False]]
    target = torch.zeros(3, 2, 2)
    target[:, 0, 0] = 1.0
    target[:, 1, 0] = 1.0
    # pred fg {(0,0), (0,1)}, target fg {(0,0), (1,0)}: IoU = 1 / 3
    assert float(iou(pred, target)) == pytest.approx(1 / 3)
    assert float(iou(torch.zeros(3, 2, 2), torch.zeros(3, 2, 2))) == 1.0  # empty union
    batch = torch.stack([pred, target])
    assert iou(batch, torch.stack([target, target])).tolist() == pytest.approx([1 / 3, 1.0])


def test_mse_by_hand():
    a = torch.zeros(3, 2, 2)
    b = torch.zeros(3, 2, 2)
    b[0] = 1.0  # red channel off by 1 everywhere: normalised difference 1 / 0.229
    assert float(mse(a, b)) == pytest.approx((1 / 0.229) ** 2 / 3, rel=1e-5)
    # predictions are quantised to uint8 first: 0.5 / 255 rounds away
    assert float(mse(torch.full((3, 2, 2), 0.4 / 255), a)) == 0.0
    assert torch.allclose(quantize(torch.tensor([0.0, 0.5, 1.2, -1.0])), torch.tensor([0.0, 128 / 255, 1.0, 0.0]))


# ------------------------------------------------------------------ procedural data


def test_render_pair_is_deterministic_and_well_formed():
    a, b = render_pair("segmentation", "disk", 7, 15)
    a2, b2 = render_pair("segmentation", "disk", 7, 15)
    assert torch.equal(a, a2) and torch.equal(b, b2)
    assert not torch.equal(a, render_pair("segmentation", "disk", 8, 15)[0])
    assert set(b.unique().tolist()) <= {0.0, 1.0} and 0 < float(b.mean()) < 1  # a non-empty binary mask
    dark, bright = render_pair("low-light", "restore", 3, 15)
    assert torch.allclose(dark, bright * 0.5)
    keep = render_pair("low-light", "keep", 3, 15)
    assert torch.allclose(keep[0], keep[1])
    holed, full = render_pair("inpainting", "restore", 4, 111)
    hole = (holed != full).any(0) | (holed == 0).all(0) & (full != 0).any(0)
    rows, cols = hole.nonzero(as_tuple=True)
    assert int(rows.max() - rows.min() + 1) <= 27 and int(cols.max() - cols.min() + 1) <= 27
    _, red = render_pair("inpainting", "fill-red", 4, 111)
    assert torch.allclose(red[:, rows[0], cols[0]], torch.tensor([0.9, 0.1, 0.1]))
    g, c = render_pair("colorization", 0, 5, 15)
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])
    assert torch.allclose(g[0], (c * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0), atol=1e-6)
    with pytest.raises(ConfigError, match="latent"):
        Procedural("low-light", "sideways")


def _hole(holed: torch.Tensor) -> tuple[int, int, int]:
    """Top-left row, col and side of the black square in an in-painting input ``[3, n, n]``."""
    rows, cols = (holed == 0).all(0).nonzero(as_tuple=True)
    return int(rows.min()), int(cols.min()), int(rows.max() - rows.min() + 1)


def test_inpainting_hole_placements():
    side = hole_side(111)
    assert side == 27 and hole_side(15) == 4 and hole_side(4) == 3
    holed, _ = render_pair("inpainting", "restore", 4, 111, hole="centre")
    assert _hole(holed) == (42, 42, 27)  # (111 - 27) // 2
    holed, kept = render_pair("inpainting", "keep", 4, 15, hole=(2, 9))
    assert _hole(holed) == (2, 9, 4) and torch.equal(holed, kept)  # "keep": the hole stays black
    # random placement is the default and varies with the pair seed
    assert len({_hole(render_pair("inpainting", "restore", i, 15)[0])[:2] for i in range(8)}) > 1
    rng = np.random.default_rng(0)
    for bad in ("middle", (12, 0), (-1, 0), (1.5, 2)):
        with pytest.raises(ConfigError, match="hole must be"):
            hole_origin(15, bad, rng)
    with pytest.raises(ConfigError, match="hole must be"):
        Procedural("inpainting", "restore", hole="middle")
    centred = VisualTask("c", Procedural("inpainting", "restore", hole="centre"), metric="mse")
    assert {_hole(centred.pair(i, 15)[0]) for i in (0, 1, 500)} == {(5, 5, 4)}
    assert "centre hole" in centred.description


def test_colorization_palettes_share_lumas_so_only_the_example_reveals_the_palette():
    g0, c0 = render_pair("colorization", 0, 5, 15)
    for k in range(1, len(PALETTES)):
        g, c = render_pair("colorization", k, 5, 15)
        assert (g - g0).abs().max() < 0.02  # the same grey query for every palette ...
        assert (c - c0).abs().max() > 0.3  # ... with different colours
    with pytest.raises(ConfigError, match="palette index"):
        render_pair("colorization", len(PALETTES), 5, 15)


def test_named_tasks_registered():
    for name, metric in (("segmentation", "iou"), ("low-light", "mse"), ("inpainting", "mse"), ("colorization", "mse")):
        t = get_task(name)
        assert isinstance(t, VisualTask) and t.metric == metric and t.modality == "image"
        s = t.split(0)
        assert not set(s.train) & set(s.test) and len(s.test) == 32 and len(s.train) == 16
        assert t.split(1).train != s.train and t.split(1).test == s.test


def test_task_batches_and_scoring(model):
    task = get_task("segmentation")
    s = task.split(0)
    icl = task.icl(model, s.test[:3], s.train, shots=1, seed=0)
    zs = task.zero_shot(model, s.test[:3])
    assert len(icl) == 3 and icl.targets.shape == (3, 3, 7, 7)
    assert icl.inputs.kwargs["visible"].shape == (3, 12) and zs.inputs.kwargs["visible"].shape == (3, 4)
    out = model.run(icl.inputs, readout=True)
    assert task.score(out, icl.targets).shape == (3,)
    stacked = torch.stack([out, out])  # [B, N, 3, H, W] as run_masks gives
    assert task.loss(stacked, icl.targets).shape == (2, 3)
    assert torch.allclose(task.loss(out, icl.targets), 1 - task.score(out, icl.targets))
    with pytest.raises(ConfigError, match="shots=1"):
        task.icl(model, s.test[:3], s.train, shots=2)
    with pytest.raises(ShapeMismatchError, match="images"):
        task.score(torch.zeros(3, 10), icl.targets)


def test_find_runs_on_a_visual_task(model):
    res = nnvtv.find(model, "low-light", strategy="greedy", budget=24, n_mean_prompts=8, seed=0)
    assert res.scores.metric == "mse" and res.forward_passes <= 24
    assert res.scores.zero_shot >= 0 and res.scores.icl >= 0


def test_select_prompts_keeps_the_best(model):
    task = get_task("low-light")
    best = select_prompts(model, task, k=3, n_candidates=6, n_queries=2, seed=0)
    assert best.demo_pool is not None and len(best.demo_pool) == 3
    queries, cands = prompt_candidates(task, n_candidates=6, n_queries=2, seed=0)
    train = list(task.split(0).train)
    g = model.io.geometry
    scores = {}
    for c in cands:
        px, tg = task.canvases(g, queries, [c, c])
        scores[c] = float(task.score(model.run(CanvasPrompts(px, False, g), readout=True), tg).mean())
    assert set(best.demo_pool) == set(sorted(cands, key=scores.get)[:3])  # MSE: lower is better
    icl = best.icl(model, task.split(0).test[:4], train, shots=1)
    assert all(d in best.demo_pool for d, _ in icl.prompts)


def test_folder_sources(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.jpg")
        m = np.zeros((20, 24), dtype=np.uint8)
        m[5:15, 6:18] = 255
        Image.fromarray(m).save(tmp_path / "masks" / f"{i}.png")
    src = FolderSegmentation(tmp_path)
    assert len(src) == 4
    img, mask = src.pair(0, 15)
    assert img.shape == mask.shape == (3, 15, 15) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert 0.2 < float(mask.mean()) < 0.4  # 10 x 12 of 20 x 24 = 0.25
    task = VisualTask("my-seg", src, metric="iou", n_test=1)
    assert len(task.split(0).train) == 3
    lowlight = FolderImages(tmp_path / "images", "low-light")
    dark, out = lowlight.pair(1, 15)
    assert torch.allclose(dark, out * 0.5)
    with pytest.raises(EmptyDataError, match="images/"):
        FolderSegmentation(tmp_path / "images")
    with pytest.raises(EmptyDataError, match="no images"):
        FolderImages(tmp_path / "nothing", "low-light")


def test_visual_task_needs_a_canvas_model():
    class FakeIO:
        pass

    class Fake:
        name = "text-model"
        io = FakeIO()

    with pytest.raises(ConfigError, match="not a visual-prompting model"):
        get_task("inpainting").zero_shot(Fake(), [1])  # type: ignore[arg-type]
