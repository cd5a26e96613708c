"""MAE-VQGAN readouts: ``"full"`` (default) is the official evaluation, ``"answer"`` the old fast one.

References written out here, independent of the adapter:

* official ICL (amirbar/visual_prompting ``evaluate/mae_utils.py``): fixed shuffle (visible then
  masked), encoder, decoder with mask tokens, argmax at all ``grid * grid`` positions, VQGAN decode
  of the whole code map, paste the canvas on visible patches and the prediction on masked ones,
  crop the answer cell;
* zero-shot (alhojel/visual_task_vectors ``evaluate/mae_utils.py``): encoder on CLS + query
  tokens, decoder with the example quadrants' tokens dropped, the ``grid * grid / 2`` predicted
  codes repeated (``hstack([y, y])``) into a full code map, decoded, answer cell cropped.
"""

from __future__ import annotations

import pytest
import torch
from nnvtv.adapters.mae_vqgan import MaeVqgan, official, save_checkpoint, tiny
from nnvtv.adapters.mae_vqgan.adapter import READOUTS, fill_missing_codes, layout
from nnvtv.adapters.mae_vqgan.catalog import TOY_READOUT, WEIGHTS_DIR
from nnvtv.adapters.mae_vqgan.vqgan import VQGAN

import nnvtv
from nnvtv.canvas import CanvasGeometry, CanvasPrompts, denormalize, normalize
from nnvtv.errors import ConfigError, ShapeMismatchError

GEOM = CanvasGeometry(16, 4)  # tiny(): 16 px canvas, 4 x 4 patches, 7-px cells at origin 9


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def module() -> MaeVqgan:
    torch.manual_seed(0)
    return MaeVqgan(tiny()).eval()


@pytest.fixture(scope="module")
def full(module):
    return nnvtv.wrap(module, name="tiny-mae-vqgan")


@pytest.fixture(scope="module")
def answer(module):
    return nnvtv.wrap(module, name="tiny-mae-vqgan", readout="answer")


def canvases(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _decoder_logits(m: MaeVqgan, x: torch.Tensor, enc_keep: list[int], dec_drop: list[int]) -> torch.Tensor:
    """The visual task vectors' generate_raw_prediction, written out: ICL when nothing is dropped.

    ``x``: normalised canvases ``[B, 3, S, S]``; ``enc_keep``: positions of ``[cls, *visible]``
    the encoder keeps; ``dec_drop``: positions of ``[cls, *all patches]`` the decoder drops.
    Returns logits ``[B, L, V]`` at the decoder's remaining patch positions (CLS removed).
    """
    g = m.config.grid
    lay = layout(GEOM, zero_shot=False)
    vis, tgt = torch.tensor(lay["visible"]), torch.tensor(lay["target"])
    b = x.shape[0]
    h = m.patch_embed.proj(x).flatten(2).transpose(1, 2) + m.pos_embed[:, 1:]
    h = torch.cat([(m.cls_token + m.pos_embed[:, :1]).expand(b, -1, -1), h[:, vis]], 1)  # [B, 1 + K, D]
    full_len = h.shape[1]
    h = h[:, enc_keep]
    for blk in m.blocks:
        h = blk(h)
    h = m.decoder_embed(m.norm(h))
    back = torch.zeros(b, full_len, h.shape[-1])  # dropped encoder tokens come back as zeros
    back[:, enc_keep] = h
    ids_restore = torch.cat([vis, tgt]).argsort()
    toks = torch.cat([back[:, 1:], m.mask_token.expand(b, len(tgt), -1)], 1)[:, ids_restore]
    h = torch.cat([back[:, :1], toks], 1) + m.decoder_pos_embed
    keep = [i for i in range(1 + g * g) if i not in set(dec_drop)]
    h = h[:, keep]
    for blk in m.decoder_blocks:
        h = blk(h)
    return m.decoder_pred(m.decoder_norm(h))[:, 1:]


def _vqgan_pixels(m: MaeVqgan, codes: torch.Tensor) -> torch.Tensor:
    """Code map ``[B, g, g]`` -> ``[B, 3, S, S]`` in ``[0, 1]``: codebook lookup, VQGAN decode, clamp, (x + 1) / 2."""
    zq = m.vae.quantize.embedding.weight[codes].permute(0, 3, 1, 2)
    return (m.vae.decode(zq).clamp(-1, 1) + 1) / 2


def official_icl_readout(m: MaeVqgan, pixels: torch.Tensor) -> torch.Tensor:
    """amirbar/visual_prompting's evaluation on canvases ``[B, 3, S, S]`` in ``[0, 1]`` -> answer cells."""
    g, p = m.config.grid, m.config.patch_size
    x = normalize(pixels)
    logits = _decoder_logits(m, x, enc_keep=list(range(1 + 3 * g * g // 4)), dec_drop=[])  # [B, g * g, V]
    pred = _vqgan_pixels(m, logits.argmax(-1).reshape(-1, g, g))
    mask = torch.zeros(g, g)
    mask[g // 2 :, g // 2 :] = 1  # 1 = removed (the answer quadrant)
    mask = mask.repeat_interleave(p, 0).repeat_interleave(p, 1)
    paste = denormalize(x) * (1 - mask) + pred * mask
    o = GEOM.origin
    return paste[..., o : o + GEOM.cell, o : o + GEOM.cell]


def hojel_zero_shot_readout(m: MaeVqgan, pixels: torch.Tensor) -> torch.Tensor:
    """The visual task vectors' zero-shot output: example tokens dropped, 98 codes repeated to 196."""
    g = m.config.grid
    lay = layout(GEOM, zero_shot=False)
    k = len(lay["visible"])
    query_slots = [1 + lay["visible"].index(q) for q in GEOM.patches("query")]  # encoder positions
    examples = GEOM.patches("example_in") + GEOM.patches("example_out")
    logits = _decoder_logits(m, normalize(pixels), enc_keep=[0, *query_slots], dec_drop=[1 + q for q in examples])
    assert logits.shape[1] == g * g // 2 and k == 3 * g * g // 4
    y = logits.argmax(-1)
    y = torch.hstack([y, y])  # as decode_raw_predicion does for 98 codes
    pred = _vqgan_pixels(m, y.reshape(-1, g, g))
    o = GEOM.origin
    return pred[..., o : o + GEOM.cell, o : o + GEOM.cell]


def old_answer_readout(m: MaeVqgan, pixels: torch.Tensor) -> torch.Tensor:
    """The readout before the option existed: the answer quadrant's codes decoded on their own."""
    lay = layout(GEOM, zero_shot=False)
    b = pixels.shape[0]
    vis = torch.tensor(lay["visible"]).expand(b, -1)
    tgt = torch.tensor(lay["target"]).expand(b, -1)
    h = m.config.grid // 2
    codes = m(normalize(pixels), vis, tgt).argmax(-1).reshape(b, h, h)
    a = GEOM.answer_offset
    return m.render(codes)[..., a : a + GEOM.cell, a : a + GEOM.cell]


# ------------------------------------------------------------------ full (default)


def test_full_is_the_default_and_matches_the_official_evaluation(full, module):
    assert READOUTS[0] == "full" and full.io.readout_mode == "full"
    x = canvases(3, seed=4)
    got = full.run(CanvasPrompts(x, False, GEOM), readout=True)
    with torch.no_grad():
        ref = official_icl_readout(module, x)
    assert got.shape == (3, 3, 7, 7)
    assert torch.allclose(got, ref, atol=1e-5)


def test_all_positions_logits(module, full, answer):
    """decode_tokens(all_positions=True) gives every slot; its answer slots equal the default output."""
    x = canvases(2, seed=6)
    for zero_shot, n in ((False, 16), (True, 8)):
        fi = full.inputs(CanvasPrompts(x, zero_shot, GEOM))
        ai = answer.inputs(CanvasPrompts(x, zero_shot, GEOM))
        assert fi.kwargs["all_positions"] is True and "all_positions" not in ai.kwargs
        with torch.no_grad():
            every = module(**fi.kwargs)
            targets = module(**ai.kwargs)
        assert every.shape == (2, n, 16) and targets.shape == (2, 4, 16)  # [B, K + M, V], [B, M, V]
        assert torch.allclose(full.io.answer_logits(every, fi), targets, atol=1e-6)
        assert torch.equal(answer.io.answer_logits(targets, ai), targets)
    with torch.no_grad():
        ref = _decoder_logits(module, normalize(x), enc_keep=list(range(13)), dec_drop=[])
        every = module(**full.inputs(CanvasPrompts(x, False, GEOM)).kwargs)
    assert torch.allclose(every, ref, atol=1e-5)


def test_zero_shot_full_readout_follows_the_task_vectors_code(full, module):
    x = canvases(3, seed=7)
    prompts = CanvasPrompts(x, True, GEOM)
    a = full.run(prompts, readout=True)
    b = full.run(prompts, readout=True)
    assert torch.equal(a, b)  # deterministic
    assert a.shape == (3, 3, 7, 7) and float(a.min()) >= 0 and float(a.max()) <= 1
    with torch.no_grad():
        ref = hojel_zero_shot_readout(module, x)
    assert torch.allclose(a, ref, atol=1e-5)
    # the example quadrants still cannot reach a zero-shot output
    y = x.clone()
    y[:, :, :8, :] = torch.rand(3, 3, 8, 16)
    assert torch.equal(a, full.run(CanvasPrompts(y, True, GEOM), readout=True))


def test_patched_full_readout(full, answer):
    """A patch changes the full readout the same way whichever readout computed the logits."""
    x = canvases(2, seed=8)
    prompts = CanvasPrompts(x, True, GEOM)
    inputs = full.inputs(prompts)
    g = torch.Generator().manual_seed(2)
    sites = [nnvtv.Site(1, 0, "query", "enc"), nnvtv.Site(0, 1, "query_out", "dec")]
    values = {s: torch.randn(inputs.group_size(s.stream, s.group), full.site_width(s), generator=g) for s in sites}
    got = full.run(prompts, nnvtv.Patch(values), readout=True)
    assert not torch.equal(got, full.run(prompts, readout=True))
    assert torch.equal(full.run(prompts, readout=True), full.run(prompts, readout=True))  # left unpatched


def test_fill_missing_codes():
    # 4 x 4 grid, zero-shot slots = the bottom half (patches 8..15)
    codes = torch.arange(8)[None] + 100
    filled = fill_missing_codes(codes, torch.arange(8, 16)[None], 4)
    assert filled.tolist() == [[*range(100, 108), *range(100, 108)]]  # = hstack([y, y])
    every = torch.randperm(16)[None]
    assert torch.equal(fill_missing_codes(torch.arange(16)[None], every, 4)[0, every[0]], torch.arange(16))
    with pytest.raises(ShapeMismatchError, match="readout='answer'"):
        fill_missing_codes(torch.arange(4)[None], torch.tensor([[8, 9, 10, 11]]), 4)  # rows 0 and 3 empty


# ------------------------------------------------------------------ answer (option)


def test_answer_readout_is_the_old_readout(answer, module):
    x = canvases(3, seed=9)
    got = answer.run(CanvasPrompts(x, False, GEOM), readout=True)
    with torch.no_grad():
        ref = old_answer_readout(module, x)
    assert torch.equal(got, ref)
    zs = answer.run(CanvasPrompts(x, True, GEOM), readout=True)
    assert zs.shape == (3, 3, 7, 7)


def test_the_readouts_differ(full, answer):
    """The VQGAN decodes globally (GroupNorm over the whole map, attention at its lowest level)."""
    x = canvases(4, seed=10)
    for zero_shot in (False, True):
        p = CanvasPrompts(x, zero_shot, GEOM)
        assert float((full.run(p, readout=True) - answer.run(p, readout=True)).abs().mean()) > 1e-3


# ------------------------------------------------------------------ the option


def test_bad_readout_is_refused(module, tmp_path, monkeypatch):
    for bad in ("official", "", 1, None):
        with pytest.raises(ConfigError, match=r"readout=.*'full'.*'answer'"):
            nnvtv.wrap(module, readout=bad)
    monkeypatch.delenv("NNVTV_MAE_VQGAN_CHECKPOINT", raising=False)
    with pytest.raises(ConfigError, match=r"readout='grid'.*'full'.*'answer'"):
        nnvtv.load("mae-vqgan", readout="grid")  # checked before the missing checkpoint
    with pytest.raises(ConfigError, match=r"readout='grid'"):
        nnvtv.load("toy-visual", readout="grid")


def test_catalogue_readouts(module, tmp_path):
    path = save_checkpoint(module, tmp_path / "ck.safetensors")
    assert nnvtv.load("mae-vqgan", checkpoint=str(path)).io.readout_mode == "full"
    assert nnvtv.load("mae-vqgan", checkpoint=str(path), readout="answer").io.readout_mode == "answer"
    if not (WEIGHTS_DIR / "toy-visual" / "model.safetensors").exists():
        pytest.skip("toy-visual weights not shipped in this checkout")
    # toy-visual's VQGAN was trained to decode the answer block alone: its entry pins that readout
    assert TOY_READOUT == "answer"
    toy = nnvtv.load("toy-visual")
    assert toy.io.readout_mode == "answer"
    assert nnvtv.load("toy-visual", readout="full").io.readout_mode == "full"


@pytest.mark.slow
def test_official_vqgan_answer_pixels_depend_on_the_whole_grid():
    """Random weights of the official f16 VQGAN: the answer cell of a 14 x 14 code map decoded whole
    differs from its 7 x 7 block decoded alone (mean |difference| about 0.14 on [0, 1] here)."""
    torch.manual_seed(0)
    vae = VQGAN(official().vqgan).eval()
    codes = torch.randint(0, 1024, (1, 14, 14), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = ((vae.decode_code(codes).clamp(-1, 1) + 1) / 2)[..., 113:, 113:]
        alone = ((vae.decode_code(codes[:, 7:, 7:]).clamp(-1, 1) + 1) / 2)[..., 1:112, 1:112]
    assert float((whole - alone).abs().mean()) > 0.05
