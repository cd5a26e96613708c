"""Streaming means (float64 accumulation), their files, and their model fingerprint."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import nnvtv
from nnvtv.errors import CheckpointError, FingerprintMismatchError, ShapeMismatchError, SiteError

PROMPTS = [
    "w1 w2 w3 w4",
    "w5 w6",
    "w7 w8 w9",
    "w10 w11 w12 w13 w14",
    "w15",
    "w16 w17 w18",
]


@pytest.fixture(scope="module")
def text_model(kit):
    return nnvtv.wrap(kit.FAMILIES["qwen2"].build(0), kit.make_tokenizer("left"))


def _space(model: nnvtv.Model) -> nnvtv.SiteSpace:
    return nnvtv.SiteSpace([*model.sites("head"), *model.sites("layer")])


def test_streaming_equals_one_batch_text(text_model):
    space = _space(text_model)
    whole = nnvtv.mean_activations(text_model, [PROMPTS], space)
    seen = []
    streamed = nnvtv.mean_activations(
        text_model, iter([PROMPTS[:2], PROMPTS[2:5], PROMPTS[5:]]), space, progress=seen.append
    )
    assert whole.count == streamed.count == len(PROMPTS)
    assert seen == [2, 5, 6]
    assert list(whole) == list(streamed) == list(space)
    for s in space:
        assert whole[s].dtype == torch.float32
        assert whole[s].shape == (1, text_model.site_width(s))
        assert torch.allclose(whole[s], streamed[s], atol=1e-6)
    # the mean over rows is the average of one-row means
    singles = [nnvtv.mean_activations(text_model, [[p]], space) for p in PROMPTS]
    for s in space:
        avg = torch.stack([m[s] for m in singles]).mean(0)
        assert torch.allclose(whole[s], avg, atol=1e-6)


def test_streaming_equals_one_batch_two_streams(zoo, kit):
    model = zoo("vit_mae")
    px = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    space = _space(model)
    whole = nnvtv.mean_activations(model, [px], space)
    streamed = nnvtv.mean_activations(model, (px[i : i + 2] for i in range(0, 6, 2)), space)
    assert streamed.count == 6
    for s in space:
        p = {"cls": 1, "visible": 2, "patches": 4}[s.group]
        assert whole[s].shape == (p, model.site_width(s))
        assert torch.allclose(whole[s], streamed[s], atol=1e-6)


def test_float64_accumulation(kit):
    """Activations near 1000 over 1024 rows: float32 running sums would be off by ~1e-3."""
    hf = kit.FAMILIES["gpt2"].build(0)
    with torch.no_grad():
        hf.transformer.wte.weight += 1000.0  # every residual stream value is ~1000
    model = nnvtv.wrap(hf)
    site = nnvtv.Site(0, None, "last")
    ids = torch.randint(3, kit.VOCAB, (1024, 4), generator=torch.Generator().manual_seed(0))
    batches = list(ids.split(16))
    means = nnvtv.mean_activations(model, batches, [site])
    rows = []
    handle = hf.transformer.h[0].register_forward_hook(
        lambda mod, args, out: rows.append(
            (out[0] if isinstance(out, tuple) else out)[:, -1].clone()
        )
    )
    try:
        with torch.no_grad():
            for b in batches:
                hf(b)
    finally:
        handle.remove()
    ref = torch.cat(rows).double().mean(0)
    float32_running = sum(r.sum(0) for r in rows) / len(ids)
    assert (float32_running.double() - ref).abs().max() > 2e-4  # the test can tell them apart
    assert (means[site][0].double() - ref).abs().max() < 1e-4


def test_group_size_must_not_change_between_batches(zoo):
    from nnvtv.inputs import ModelInputs

    model = zoo("gpt2")
    ids = torch.randint(3, 60, (2, 4), generator=torch.Generator().manual_seed(0))
    a = model.inputs(ids)
    b = ModelInputs(kwargs=dict(a.kwargs), positions={"": {"last": torch.tensor([[2, 3], [2, 3]])}})
    with pytest.raises(ShapeMismatchError, match="same size"):
        nnvtv.mean_activations(model, [a, b], model.sites("head"))


def test_save_load_round_trip(tmp_path, text_model):
    space = _space(text_model)
    means = nnvtv.mean_activations(text_model, [PROMPTS], space, meta={"task": "demo", "shots": 0})
    path = means.save(tmp_path / "sub" / "means")
    assert path.name == "means.safetensors"
    assert (tmp_path / "sub" / "means.json").exists()
    info = json.loads((tmp_path / "sub" / "means.json").read_text())
    assert info["format"] == "nnvtv.means/1" and info["sites"] == space.to_list()
    for given in (path, tmp_path / "sub" / "means", tmp_path / "sub" / "means.json"):
        loaded = nnvtv.Means.load(given)
        assert list(loaded) == list(means)
        assert loaded.count == means.count and loaded.fingerprint == means.fingerprint
        assert loaded.meta == {"model": text_model.name, "task": "demo", "shots": 0}  # the model is recorded too
        for s in means:
            assert torch.equal(loaded[s], means[s])
    # loaded means drive run_masks exactly like the originals
    masks = torch.zeros(2, len(space), dtype=torch.bool)
    masks[1, ::3] = True
    zs = ["w3 w4", "w20"]
    a = nnvtv.run_masks(text_model, zs, means, space, masks)
    b = nnvtv.run_masks(text_model, zs, nnvtv.Means.load(path), space, masks)
    assert torch.equal(a, b)


@pytest.fixture
def saved(tmp_path, zoo, kit):
    model = zoo("gpt2")
    means = nnvtv.mean_activations(
        model, [kit.make_batch(kit.FAMILIES["gpt2"]).data], model.sites("head")
    )
    means.save(tmp_path / "m")
    return tmp_path / "m"


def _expect_checkpoint_error(base, *words):
    with pytest.raises(CheckpointError) as err:
        nnvtv.Means.load(base)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_load_missing_files(tmp_path, saved):
    _expect_checkpoint_error(tmp_path / "nothing_here", "nothing_here")
    (tmp_path / "m.safetensors").unlink()
    _expect_checkpoint_error(saved, "m")


def test_load_corrupt_safetensors(saved):
    saved.with_suffix(".safetensors").write_bytes(b"\x00\x01 definitely not safetensors")
    _expect_checkpoint_error(saved, "m")


def test_load_corrupt_json(saved):
    saved.with_suffix(".json").write_text("{ not json")
    _expect_checkpoint_error(saved, "m")


def test_load_foreign_json(saved):
    saved.with_suffix(".json").write_text(json.dumps({"format": "something/else", "sites": []}))
    _expect_checkpoint_error(saved, "format")
    saved.with_suffix(".json").write_text(json.dumps([1, 2, 3]))
    _expect_checkpoint_error(saved)


def test_load_foreign_tensors(saved):
    """A valid nnvtv JSON next to a safetensors file of someone else's tensors."""
    save_file({"weight": torch.zeros(2, 2)}, str(saved.with_suffix(".safetensors")))
    _expect_checkpoint_error(saved, "L0.H0@last")


def test_load_inconsistent_json(saved):
    info = json.loads(saved.with_suffix(".json").read_text())
    bad_sites = dict(info, sites=["not a site"])
    saved.with_suffix(".json").write_text(json.dumps(bad_sites))
    _expect_checkpoint_error(saved, "not a site")
    no_count = {k: v for k, v in info.items() if k != "count"}
    saved.with_suffix(".json").write_text(json.dumps(no_count))
    _expect_checkpoint_error(saved, "count")


def test_means_from_another_model(zoo, kit):
    model = zoo("gpt2")
    other = nnvtv.wrap(kit.FAMILIES["gpt2"].build(seed=1))  # same config, other weights
    assert other.fingerprint != model.fingerprint
    assert nnvtv.wrap(kit.FAMILIES["gpt2"].build(seed=0)).fingerprint == model.fingerprint
    space = model.sites("head")
    batch = kit.make_batch(kit.FAMILIES["gpt2"])
    foreign = nnvtv.mean_activations(other, [batch.data], space)
    masks = torch.ones(1, len(space), dtype=torch.bool)
    with pytest.raises(FingerprintMismatchError) as err:
        nnvtv.run_masks(model, batch.data, foreign, space, masks)
    assert other.fingerprint in str(err.value) and model.fingerprint in str(err.value)
    assert kit.leftover_hooks(model.module) == []


def test_means_missing_sites(zoo, kit):
    model = zoo("gpt2")
    batch = kit.make_batch(kit.FAMILIES["gpt2"])
    means = nnvtv.mean_activations(model, [batch.data], model.sites("head", layers=[0]))
    space = model.sites("head")
    with pytest.raises(SiteError, match="missing 2 site"):
        nnvtv.run_masks(
            model, batch.data, means, space, torch.ones(1, len(space), dtype=torch.bool)
        )
    with pytest.raises(SiteError, match="L1.H0@last"):
        means[nnvtv.Site(1, 0, "last")]
    sub = means.subset([nnvtv.Site(0, 1, "last")])
    assert len(sub) == 1 and sub.fingerprint == means.fingerprint
