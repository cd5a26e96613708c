"""SegGPT adapter on a tiny random config: 2-D grid sites, stacked copies, zero-shot, loading.

Facts used here come from transformers' ``modeling_seggpt`` (read independently of nnvtv):
the canvas is prompt over query (``image_size = (2 * h, w)``); through layer ``merge_index``
the image copy (rows ``0..B-1``) and the mask copy (rows ``B..2B-1``) are separate batch rows
of ``[2B, rows, cols, C]``; afterwards one ``[B, rows, cols, C]`` grid; ``pred_masks`` is the
whole ``[B, 3, 2h, w]`` canvas.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import transformers as T
from safetensors import safe_open

import nnvtv
from nnvtv.errors import ConfigError, ShapeMismatchError
from nnvtv.inputs import ModelInputs

H, W, PATCH = 8, 8, 4  # one image 8 x 8 px; canvas 16 x 8 -> grid 4 rows x 2 cols
ROWS, COLS, HALF = 4, 2, 2  # patch rows, cols, prompt rows
N_LAYERS, N_HEADS, D = 4, 2, 16
MERGE = 1  # layers 0..1 run two copies, layers 2..3 one merged grid
GROUPS = ("prompt_image", "prompt_mask", "query_image", "query_pred")


def tiny_config() -> T.SegGptConfig:
    return T.SegGptConfig(
        hidden_size=D,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS,
        image_size=(2 * H, W),
        patch_size=PATCH,
        pretrain_image_size=8,
        decoder_hidden_size=8,
        merge_index=MERGE,
        intermediate_hidden_state_indices=(1, 3),
        mlp_dim=32,
        drop_path_rate=0.0,
    )


def tiny_seggpt(seed: int = 0) -> T.SegGptForImageSegmentation:
    torch.manual_seed(seed)
    return T.SegGptForImageSegmentation(tiny_config()).eval()


def images(seed: int, batch: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(batch, 3, H, W, generator=g) for k in ("pixel_values", "prompt_pixel_values", "prompt_masks")}


@pytest.fixture(scope="module")
def net() -> T.SegGptForImageSegmentation:
    return tiny_seggpt(0)


@pytest.fixture(scope="module")
def model(net) -> nnvtv.Model:
    return nnvtv.wrap(net)


def raw_forward(net, data, pre_hooks: dict[int, object] | None = None) -> torch.Tensor:
    """Reference: the plain HF forward with raw pre-hooks on ``attention.proj``; query half."""
    handles = [net.model.encoder.layers[i].attention.proj.register_forward_pre_hook(h) for i, h in (pre_hooks or {}).items()]
    try:
        with torch.no_grad():
            pred = net(**data).pred_masks
    finally:
        for h in handles:
            h.remove()
    return pred[:, :, H:, :]


def cells(group: str) -> tuple[int, slice]:
    """(copy, row slice) of a group on the grid: copy 0 = image copy, 1 = mask copy."""
    return {
        "prompt_image": (0, slice(0, HALF)),
        "query_image": (0, slice(HALF, ROWS)),
        "prompt_mask": (1, slice(0, HALF)),
        "query_pred": (1, slice(HALF, ROWS)),
    }[group]


def test_wrap_sizes_groups_and_site_count(model):
    assert model.adapter.name == "seggpt"
    assert (model.n_layers, model.n_heads, model.head_dim, model.d_model) == (N_LAYERS, N_HEADS, D // N_HEADS, D)
    assert model.groups == {"": GROUPS}
    space = model.sites("head")
    assert len(space) == N_LAYERS * N_HEADS * len(GROUPS)
    assert space.to_list()[:4] == [f"L0.H0@{g}" for g in GROUPS]
    assert len(model.sites("layer")) == N_LAYERS * len(GROUPS)
    inputs = model.inputs(images(0))
    for g in GROUPS:
        assert inputs.group_size("", g) == HALF * COLS


def test_clean_run_matches_hf(model, net):
    data = images(1)
    assert torch.allclose(model.run(data, readout=True), raw_forward(net, data), atol=1e-6)


@pytest.mark.parametrize("layer", [0, MERGE, MERGE + 1, N_LAYERS - 1])
def test_patching_equals_raw_hook_reference(model, net, layer):
    """Replace and add on every group at pre-merge (2 copies) and post-merge (merged) layers."""
    data = images(2)
    b = data["pixel_values"].shape[0]
    g = torch.Generator().manual_seed(layer)
    hd = D // N_HEADS
    values = {nnvtv.Site(layer, (i % N_HEADS), grp): torch.randn(HALF * COLS, hd, generator=g) for i, grp in enumerate(GROUPS)}
    merged = layer > MERGE
    for mode in ("replace", "add"):
        got = model.run(data, nnvtv.Patch(values, mode=mode), readout=True)

        def pre_hook(module, args, mode=mode):
            x = args[0].clone()  # [copies * b, ROWS, COLS, D]
            assert x.shape[0] == (b if merged else 2 * b)
            for site, v in values.items():
                copy, rows = cells(site.group)
                rr = slice(0, b) if merged else slice(copy * b, (copy + 1) * b)
                hs = slice(site.head * hd, (site.head + 1) * hd)
                val = v.reshape(HALF, COLS, hd)
                if mode == "replace":
                    x[rr, rows, :, hs] = val
                else:
                    x[rr, rows, :, hs] = x[rr, rows, :, hs] + val
            return (x,)

        ref = raw_forward(net, data, {layer: pre_hook})
        assert torch.allclose(got, ref, atol=1e-5), (layer, mode)
        assert not torch.allclose(got, raw_forward(net, data), atol=1e-4)


def test_means_equal_raw_reads(model, net):
    data = images(3)
    b = data["pixel_values"].shape[0]
    space = nnvtv.SiteSpace([nnvtv.Site(layer, 1, grp) for layer in (0, N_LAYERS - 1) for grp in GROUPS])
    means = nnvtv.mean_activations(model, [data], space)
    seen: dict[int, torch.Tensor] = {}

    def keep(layer):
        def hook(module, args):
            seen[layer] = args[0].detach().clone()

        return hook

    raw_forward(net, data, {0: keep(0), N_LAYERS - 1: keep(N_LAYERS - 1)})
    hd = D // N_HEADS
    for site in space:
        x = seen[site.layer]
        copy, rows = cells(site.group)
        rr = slice(copy * b, (copy + 1) * b) if site.layer <= MERGE else slice(0, b)
        ref = x[rr, rows, :, hd : 2 * hd].mean(0).reshape(HALF * COLS, hd)
        assert torch.allclose(means[site], ref, atol=1e-5), site
    # after the merge, prompt_image and prompt_mask address the same merged cells
    last = N_LAYERS - 1
    assert torch.equal(means[nnvtv.Site(last, 1, "prompt_image")], means[nnvtv.Site(last, 1, "prompt_mask")])
    assert not torch.allclose(means[nnvtv.Site(0, 1, "prompt_image")], means[nnvtv.Site(0, 1, "prompt_mask")])


def test_run_masks_rows_equal_single_patches(model):
    icl, zs = images(4), {"pixel_values": images(5)["pixel_values"]}
    space = model.sites("head", layers=[0, 2])
    means = nnvtv.mean_activations(model, [icl], space)
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(3, len(space), generator=g) < 0.4
    masks[0] = False
    out = nnvtv.patching.run_masks(model, zs, means, space, masks)
    assert out.shape == (3, 3, 3, H, W)
    for row in range(3):
        one = model.run(zs, means.patch(space.select(masks[row])), readout=True)
        assert torch.allclose(out[row], one, atol=1e-5)


def test_zero_shot_is_a_blank_prompt(model, net):
    q = images(6)["pixel_values"]
    zs = model.inputs({"pixel_values": q})
    assert torch.equal(zs.kwargs["prompt_pixel_values"], torch.zeros_like(q))
    assert torch.equal(zs.kwargs["prompt_masks"], torch.zeros_like(q))
    blank = {"pixel_values": q, "prompt_pixel_values": torch.zeros_like(q), "prompt_masks": torch.zeros_like(q)}
    assert torch.allclose(model.run({"pixel_values": q}, readout=True), raw_forward(net, blank), atol=1e-6)
    # the zero-shot input keeps every group, with the same sizes as the ICL input
    icl = model.inputs(images(6))
    for grp in GROUPS:
        assert torch.equal(zs.group_positions("", grp), icl.group_positions("", grp))


@dataclass
class _Geometry:  # the 2 x 2 canvas geometry visual tasks use (cells of 6 px, 2 px gap)
    size: int = 14
    gap: int = 2

    @property
    def cell(self) -> int:
        return (self.size - self.gap) // 2

    def cell_box(self, quadrant: str) -> tuple[int, int]:
        o = self.cell + self.gap
        return {"example_in": (0, 0), "example_out": (0, o), "query": (o, 0), "answer": (o, o)}[quadrant]


@dataclass
class _Canvas:
    pixels: torch.Tensor
    zero_shot: bool
    geometry: _Geometry


def test_canvas_prompts_become_prompt_pair_and_query(model, net):
    geo = _Geometry()
    g = torch.Generator().manual_seed(7)
    px = torch.rand(2, 3, geo.size, geo.size, generator=g)
    out = model.run(_Canvas(px, False, geo), readout=True)
    assert out.shape == (2, 3, geo.cell, geo.cell)
    icl = model.inputs(_Canvas(px, False, geo))
    zs = model.inputs(_Canvas(px, True, geo))
    assert torch.equal(icl.kwargs["pixel_values"], zs.kwargs["pixel_values"])
    assert not torch.equal(icl.kwargs["prompt_masks"], zs.kwargs["prompt_masks"])
    assert torch.equal(zs.kwargs["prompt_masks"], torch.zeros(2, 3, H, W))
    # the query cell (resized to 8 x 8, ImageNet-normalised) is what the model sees
    o = geo.cell + geo.gap
    q = torch.nn.functional.interpolate(px[:, :, o:, : geo.cell], size=(H, W), mode="bilinear", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    assert torch.allclose(icl.kwargs["pixel_values"], (q - mean) / std, atol=1e-6)


def test_bad_inputs_raise_clear_errors(model):
    q = images(8)["pixel_values"]
    with pytest.raises(ShapeMismatchError, match=r"\[batch, 3, 8, 8\]"):
        model.inputs({"pixel_values": torch.randn(2, 3, 16, 8)})
    with pytest.raises(ConfigError, match="both"):
        model.inputs({"pixel_values": q, "prompt_masks": q})
    with pytest.raises(ConfigError, match="pixel_values"):
        model.inputs({"pixel_values": q, "labels": q})
    with pytest.raises(ShapeMismatchError, match="rows"):
        model.inputs({"pixel_values": q, "prompt_pixel_values": q[:2], "prompt_masks": q[:2]})
    with pytest.raises(ShapeMismatchError, match="CanvasPrompts"):
        model.inputs([q])


def test_nothing_leaks_after_errors(model, net, kit):
    data = images(9)
    clean = model.run(data, readout=True)
    bad_value = nnvtv.Patch({nnvtv.Site(0, 0, "query_pred"): torch.zeros(3, D // N_HEADS)})
    with pytest.raises(ShapeMismatchError, match="positions_in_group"):
        model.run(data, bad_value)
    # an error inside the trace, at a pre-merge layer: positions that cannot index the grid
    inputs = model.inputs(data)
    broken = ModelInputs(
        kwargs=inputs.kwargs,
        positions={"": {**inputs.positions[""], "query_pred": inputs.positions[""]["query_pred"].float()}},
    )
    with pytest.raises(Exception):  # noqa: B017 - any error from inside the traced forward
        model.run(broken, nnvtv.Patch({nnvtv.Site(0, 0, "query_pred"): torch.zeros(HALF * COLS, D // N_HEADS)}))
    assert kit.leftover_hooks(net) == []
    assert torch.equal(model.run(data, readout=True), clean)


def test_real_size_geometry():
    from nnvtv.adapters.hf_seggpt import seggpt_geometry

    # BAAI/seggpt-vit-large: canvas 896 x 448, 16-px patches -> 56 x 28 grid, 28 x 28 per image
    assert seggpt_geometry(T.SegGptConfig()) == {"height": 448, "width": 448, "rows": 56, "cols": 28}


def test_load_local_folder_with_real_key_names(tmp_path, net):
    """The loading path for real weights: a folder saved by transformers, loaded with nnvtv.load."""
    net.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    # key names of BAAI/seggpt-vit-large (SegGptForImageSegmentation)
    for k in (
        "model.embeddings.mask_token",
        "model.embeddings.patch_embeddings.projection.weight",
        "model.encoder.layers.0.attention.qkv.weight",
        "model.encoder.layers.0.attention.proj.weight",
        "model.encoder.layers.0.attention.rel_pos_h",
        "model.encoder.layernorm.weight",
        "decoder.decoder_embed.weight",
        "decoder.decoder_pred.head.weight",
    ):
        assert k in keys, k
    loaded = nnvtv.load(str(tmp_path))
    assert type(loaded.module).__name__ == "SegGptForImageSegmentation"
    assert loaded.adapter.name == "seggpt"
    data = images(10)
    assert torch.allclose(loaded.run(data, readout=True), raw_forward(net, data), atol=1e-6)


def test_wrap_rejects_group_positions_outside_the_grid(net):
    """An I/O whose groups point past the widest (two-copy) grid fails at wrap time."""
    from nnvtv.adapters.hf_seggpt import SEGGPT, SegGptIO

    from nnvtv.errors import AdapterError

    class ShiftedIO(SegGptIO):
        def positions(self, batch: int) -> dict[str, torch.Tensor]:
            pos = super().positions(batch)
            return {**pos, "query_pred": pos["query_pred"] + ROWS * COLS}  # a third copy

    spec = nnvtv.AdapterSpec(**{**SEGGPT.__dict__, "name": "seggpt_shifted", "io": ShiftedIO})
    with pytest.raises(AdapterError, match="query_pred"):
        nnvtv.wrap(net, adapter=spec)
    nnvtv.wrap(net, adapter=SEGGPT)  # the real table passes


def test_visual_tasks_run_on_seggpt(model):
    """The canvas tasks (nnvtv.tasks.visual) drive SegGPT through its geometry: cell = image side."""
    from nnvtv.canvas import CanvasGeometry
    from nnvtv.tasks import get as get_task

    assert model.io.geometry == CanvasGeometry(size=2 * H + 2, patch=1, gap=2)
    task = get_task("segmentation")
    split = task.split(0)
    icl = task.icl(model, split.test[:3], split.train, shots=1, seed=1)
    zs = task.zero_shot(model, split.test[:3])
    assert torch.equal(zs.inputs.kwargs["prompt_masks"], torch.zeros(3, 3, H, W))
    assert not torch.equal(icl.inputs.kwargs["prompt_masks"], zs.inputs.kwargs["prompt_masks"])
    out = model.run(icl.inputs, readout=True)
    assert out.shape == icl.targets.shape == (3, 3, H, W)
    assert task.score(out, icl.targets).shape == (3,)
