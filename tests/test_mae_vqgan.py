"""MAE-VQGAN: model shapes and faithfulness, adapter sites/groups, patching, checkpoints, manifest."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nnvtv.adapters.mae_vqgan import MaeVqgan, load_checkpoint, official, save_checkpoint, tiny
from nnvtv.adapters.mae_vqgan.adapter import MAE_VQGAN, layout
from nnvtv.adapters.mae_vqgan.catalog import ENV_VAR

import nnvtv
from nnvtv.canvas import OFFICIAL, CanvasGeometry, CanvasPrompts
from nnvtv.errors import CheckpointError, ShapeMismatchError


def _find_manifest() -> Path:
    """``$NNVTV_REFERENCE_DIR``, else ``shared/reference`` beside the repo or any folder above it."""
    name = "mae_vqgan_checkpoint_manifest.tsv"
    if os.environ.get("NNVTV_REFERENCE_DIR"):
        return Path(os.environ["NNVTV_REFERENCE_DIR"]) / name
    repo = Path(__file__).resolve().parents[1]
    for up in [repo, *repo.parents]:
        candidate = up / "shared" / "reference" / name
        if candidate.exists():
            return candidate
    return repo.parent / "shared" / "reference" / name


MANIFEST = _find_manifest()
GEOM = CanvasGeometry(16, 4)  # tiny(): 16 px canvas, 4 x 4 patches, 7-px cells


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def module() -> MaeVqgan:
    torch.manual_seed(0)
    return MaeVqgan(tiny()).eval()


@pytest.fixture(scope="module")
def model(module):
    return nnvtv.wrap(module, name="tiny-mae-vqgan")


def canvases(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ model


def test_forward_shapes(module):
    x = canvases(2)
    vis = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13]] * 2)
    tgt = torch.tensor([[10, 11, 14, 15]] * 2)
    assert module(x, vis, tgt).shape == (2, 4, 16)  # [B, M, n_embed]
    assert module.render(torch.zeros(2, 2, 2, dtype=torch.long)).shape == (2, 3, 8, 8)
    codes = module.target_codes(torch.rand(2, 3, 16, 16))
    assert codes.shape == (2, 16) and codes.dtype == torch.long and int(codes.max()) < 16
    with pytest.raises(ShapeMismatchError, match="imgs must be"):
        module(torch.rand(2, 3, 8, 8), vis, tgt)
    with pytest.raises(ShapeMismatchError, match="LongTensor"):
        module(x, vis.float(), tgt)


def _reference_sincos(dim: int, grid: int) -> np.ndarray:
    """MAE's util/pos_embed.get_2d_sincos_pos_embed, written out with numpy."""
    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gw, gh = np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32)
    g = np.stack(np.meshgrid(gw, gh), axis=0).reshape(2, 1, grid, grid)
    emb = np.concatenate([one_d(dim // 2, g[0]), one_d(dim // 2, g[1])], axis=1)
    return np.concatenate([np.zeros((1, dim)), emb], axis=0)


def test_position_tables_match_mae(module):
    ref = _reference_sincos(16, 4)
    assert np.allclose(module.pos_embed[0].numpy(), ref, atol=1e-6)
    assert np.allclose(module.decoder_pos_embed[0].numpy(), _reference_sincos(8, 4), atol=1e-6)
    assert not module.pos_embed.requires_grad


def test_icl_forward_equals_official_algorithm(module):
    """The official eval: fixed shuffle (visible then masked), encoder, unshuffle with mask tokens, decoder."""
    x = canvases(2, seed=3)
    lay = layout(GEOM, zero_shot=False)
    vis, tgt = torch.tensor(lay["visible"]), torch.tensor(lay["target"])
    m = module
    with torch.no_grad():
        # encoder (models_mae.forward_encoder with ids_shuffle = visible + masked)
        h = m.patch_embed.proj(x).flatten(2).transpose(1, 2) + m.pos_embed[:, 1:]
        h = h[:, vis]
        h = torch.cat([(m.cls_token + m.pos_embed[:, :1]).expand(2, -1, -1), h], 1)
        for blk in m.blocks:
            h = blk(h)
        h = m.norm(h)
        # decoder (forward_decoder)
        ids_restore = torch.cat([vis, tgt]).argsort()
        h = m.decoder_embed(h)
        toks = torch.cat([h[:, 1:], m.mask_token.expand(2, len(tgt), -1)], 1)[:, ids_restore]
        h = torch.cat([h[:, :1], toks], 1) + m.decoder_pos_embed
        for blk in m.decoder_blocks:
            h = blk(h)
        ref = m.decoder_pred(m.decoder_norm(h))[:, 1:][:, tgt]
        got = m(x, vis.expand(2, -1), tgt.expand(2, -1))
    assert torch.allclose(got, ref, atol=1e-5)


# ------------------------------------------------------------------ adapter


def test_sites_and_groups(model):
    assert model.adapter is MAE_VQGAN
    assert model.groups == {"enc": ("cls", "query"), "dec": ("cls", "query_in", "query_out")}
    enc, dec = model.stream("enc"), model.stream("dec")
    assert (enc.n_layers, enc.n_heads, enc.head_dim) == (2, 2, 8)
    assert (dec.n_layers, dec.n_heads, dec.head_dim) == (2, 2, 4)
    assert len(model.sites("head")) == 2 * 2 * 2 + 2 * 2 * 3
    assert enc.attn_out_paths == ("blocks.0.attn.proj", "blocks.1.attn.proj")
    assert dec.attn_out_paths == ("decoder_blocks.0.attn.proj", "decoder_blocks.1.attn.proj")


def test_group_positions_by_hand(model):
    icl = model.inputs(CanvasPrompts(canvases(1), False, GEOM))
    zs = model.inputs(CanvasPrompts(canvases(1), True, GEOM))
    pos = lambda inp, s, g: inp.group_positions(s, g)[0].tolist()  # noqa: E731
    # 4 x 4 grid: query patches 8, 9, 12, 13; answer 10, 11, 14, 15
    assert icl.kwargs["visible"][0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13]
    assert pos(icl, "enc", "query") == [9, 10, 11, 12]
    assert pos(icl, "dec", "query_in") == [9, 10, 13, 14]
    assert pos(icl, "dec", "query_out") == [11, 12, 15, 16]
    assert zs.kwargs["visible"][0].tolist() == [8, 9, 12, 13]
    assert pos(zs, "enc", "query") == [1, 2, 3, 4]
    assert pos(zs, "dec", "query_in") == [1, 2, 5, 6]
    assert pos(zs, "dec", "query_out") == [3, 4, 7, 8]


def test_official_layout_token_counts():
    icl, zs = layout(OFFICIAL, False), layout(OFFICIAL, True)
    assert (len(icl["visible"]), len(icl["target"])) == (147, 49)
    assert (len(zs["visible"]), len(zs["target"])) == (49, 49)  # encoder 1 + 49, decoder 1 + 98
    assert all(len(p) == 49 for p in (icl["enc"]["query"], icl["dec"]["query_in"], icl["dec"]["query_out"]))
    assert set(icl["target"]) == {r * 14 + c for r in range(7, 14) for c in range(7, 14)}


def test_zero_shot_drops_example_tokens(model, module):
    lengths: dict[str, int] = {}
    hooks = [
        module.blocks[0].register_forward_pre_hook(lambda m, a: lengths.__setitem__("enc", a[0].shape[1])),
        module.decoder_blocks[0].register_forward_pre_hook(lambda m, a: lengths.__setitem__("dec", a[0].shape[1])),
    ]
    try:
        x = canvases(2)
        model.run(CanvasPrompts(x, True, GEOM), readout=True)
        assert lengths == {"enc": 1 + 4, "dec": 1 + 8}
        model.run(CanvasPrompts(x, False, GEOM), readout=True)
        assert lengths == {"enc": 1 + 12, "dec": 1 + 16}
    finally:
        for h in hooks:
            h.remove()
    # the example quadrants cannot influence a zero-shot output (they are not in the sequence)
    y = x.clone()
    y[:, :, :8, :] = torch.rand(2, 3, 8, 16)
    a = model.run(CanvasPrompts(x, True, GEOM), readout=True)
    b = model.run(CanvasPrompts(y, True, GEOM), readout=True)
    assert torch.equal(a, b)
    assert a.shape == (2, 3, 7, 7) and float(a.min()) >= 0 and float(a.max()) <= 1


def test_patching_equals_raw_hook_reference(model, module):
    x = canvases(2, seed=5)
    prompts = CanvasPrompts(x, True, GEOM)
    inputs = model.inputs(prompts)
    g = torch.Generator().manual_seed(1)
    sites = [nnvtv.Site(1, 0, "query", "enc"), nnvtv.Site(0, 1, "query_out", "dec"), nnvtv.Site(1, 1, "cls", "dec")]
    values = {s: torch.randn(inputs.group_size(s.stream, s.group), model.site_width(s), generator=g) for s in sites}
    got = model.run(prompts, nnvtv.Patch(values), readout=True)

    def hook_for(stream, layer):
        def pre(mod, args):
            h = args[0].clone()
            for s, v in values.items():
                if (s.stream, s.layer) == (stream, layer):
                    info = model.stream(stream)
                    pos = inputs.group_positions(stream, s.group)[0]
                    h[:, pos, s.head * info.head_dim : (s.head + 1) * info.head_dim] = v
            return (h,)
        return pre

    handles = [
        module.blocks[1].attn.proj.register_forward_pre_hook(hook_for("enc", 1)),
        module.decoder_blocks[0].attn.proj.register_forward_pre_hook(hook_for("dec", 0)),
        module.decoder_blocks[1].attn.proj.register_forward_pre_hook(hook_for("dec", 1)),
    ]
    try:
        with torch.no_grad():
            ref = model.io.readout(module(**inputs.kwargs), inputs)
    finally:
        for h in handles:
            h.remove()
    assert torch.allclose(got, ref, atol=1e-6)
    # and the model is left unpatched
    assert torch.equal(model.run(prompts, readout=True), model.run(prompts, readout=True))


def test_bad_prompts_are_rejected(model):
    with pytest.raises(ShapeMismatchError, match="16 px"):
        model.inputs(CanvasPrompts(torch.rand(1, 3, 32, 32), False, CanvasGeometry(32, 4)))
    with pytest.raises(ShapeMismatchError, match="CanvasPrompts"):
        model.inputs(["not an image"])


# ------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_checkpoint_round_trip(tmp_path, module, suffix):
    path = save_checkpoint(module, tmp_path / f"checkpoint-1{suffix}")
    loaded = load_checkpoint(path)
    assert loaded.config == module.config
    a, b = module.state_dict(), loaded.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert {"blocks.0.attn.qkv.weight", "decoder_pred.weight", "vae.quantize.embedding.weight"} <= set(b)
    x = canvases(1)
    vis, tgt = torch.tensor([[0, 1, 2, 3]]), torch.tensor([[10, 11, 14, 15]])
    assert torch.equal(module(x, vis, tgt), loaded(x, vis, tgt))


def test_official_style_training_checkpoint(tmp_path, module):
    """A dict with 'model', optimizer state, epoch and an argparse.Namespace of args loads safely."""
    torch.save(
        {"model": module.state_dict(), "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}, "epoch": 3,
         "args": argparse.Namespace(model="mae_vit_large_patch16", lr=1e-4)},
        tmp_path / "checkpoint-3.pth",
    )
    loaded = load_checkpoint(tmp_path / "checkpoint-3.pth", tiny())
    assert torch.equal(loaded.decoder_pred.weight, module.decoder_pred.weight)


class Evil:  # any class outside the allow-list
    pass


def test_bad_checkpoints(tmp_path, module):
    sd = module.state_dict()
    bad = {k: v for k, v in sd.items() if k != "decoder_pred.bias"}
    bad["module.extra"] = torch.zeros(1)
    torch.save({"model": bad}, tmp_path / "a.pth")
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\), e.g. \['decoder_pred.bias'\].*1 unexpected key\(s\), e.g. \['module.extra'\]"):
        load_checkpoint(tmp_path / "a.pth", tiny())
    wrong = dict(sd)
    wrong["decoder_pred.weight"] = torch.zeros(3, 8)
    torch.save({"model": wrong}, tmp_path / "b.pth")
    with pytest.raises(CheckpointError, match=r"shape mismatch.*decoder_pred.weight: \(3, 8\) \(model: \(16, 8\)\)"):
        load_checkpoint(tmp_path / "b.pth", tiny())
    torch.save({"model": sd, "x": Evil()}, tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match="not loaded for safety.*Evil"):
        load_checkpoint(tmp_path / "c.pth", tiny())
    torch.save({"weights": [1, 2]}, tmp_path / "d.pth")
    with pytest.raises(CheckpointError, match=r"a dict with 1 keys.*'weights'.*expected an MAE checkpoint"):
        load_checkpoint(tmp_path / "d.pth", tiny())
    (tmp_path / "e.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(tmp_path / "e.safetensors", tiny())
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load_checkpoint(tmp_path / "missing.pth")
    # the official config does not fit a tiny checkpoint: the error says so, with examples
    torch.save({"model": sd}, tmp_path / "f.pth")
    with pytest.raises(CheckpointError, match="missing key.*unexpected key|shape mismatch"):
        load_checkpoint(tmp_path / "f.pth", official())


def test_official_config_matches_manifest():
    if not MANIFEST.exists():
        pytest.skip(f"reference manifest not found at {MANIFEST} (it lives outside the repo, in shared/reference)")
    rows = [ln.rstrip("\n").split("\t") for ln in MANIFEST.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    manifest = [(k, tuple(int(d) for d in s.split("x"))) for k, s in rows]
    with torch.device("meta"):
        m = MaeVqgan(official())
    ours = [(k, tuple(v.shape)) for k, v in m.state_dict().items()]
    assert ours == manifest  # same keys, shapes and order (741 tensors)
    assert sum(np.prod(s) for _, s in ours) == 401_814_915


def test_catalog_entry_needs_a_checkpoint(tmp_path, monkeypatch, module):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(CheckpointError, match=ENV_VAR):
        nnvtv.load("mae-vqgan")
    path = save_checkpoint(module, tmp_path / "ck.safetensors")
    m = nnvtv.load("mae-vqgan", checkpoint=str(path))
    assert m.name == "mae-vqgan" and len(m.sites("head")) == 20
    monkeypatch.setenv(ENV_VAR, str(path))
    assert nnvtv.load("mae-vqgan").fingerprint == m.fingerprint


def test_vqgan_pieces(module):
    vae = module.vae
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    ids = vae.encode(x)
    assert ids.shape == (2, 4, 4)
    rec, loss = vae(x)
    assert rec.shape == x.shape and loss.dim() == 0
    # decode_code == decode of looked-up embeddings
    zq = F.embedding(ids, vae.quantize.embedding.weight).permute(0, 3, 1, 2)
    assert torch.allclose(vae.decode_code(ids), vae.decode(zq), atol=1e-5)
