"""Loading by folder and Hub id (offline, from a cache the test lays out), devices and dtypes.

Nothing here touches the network: Hub ids are resolved with ``HF_HUB_OFFLINE=1`` from a Hugging
Face cache folder the test builds with the real layout (``models--org--name/refs/main`` and
``snapshots/<commit>/``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import transformers as T

import nnvtv
from nnvtv.errors import ConfigError, MissingDependencyError, OfflineError, UnknownModelError

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _tiny_gpt2(tokenizer) -> T.GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = T.GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=16, n_layer=2, n_head=2,
                       bos_token_id=2, eos_token_id=3, pad_token_id=0)
    return T.GPT2LMHeadModel(cfg).eval()


@pytest.fixture
def folder(tmp_path, tokenizer) -> Path:
    d = tmp_path / "tiny-gpt2"
    _tiny_gpt2(tokenizer).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


@pytest.fixture
def hub_cache(tmp_path, folder, monkeypatch) -> Path:
    """A Hub cache holding ``nnvtv-tests/tiny-gpt2`` at one commit, and offline mode on."""
    cache = tmp_path / "hub"
    repo = cache / "models--nnvtv-tests--tiny-gpt2"
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    for f in folder.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_local_folder_loads_and_runs(folder, tokenizer):
    model = nnvtv.load(str(folder), device="cpu")
    assert model.adapter.name == "gpt2" and model.io.tokenizer is not None
    ref = _tiny_gpt2(tokenizer)
    ids = torch.tensor([[4, 5, 6]])
    with torch.no_grad():
        want = ref(ids).logits[:, -1]
    torch.testing.assert_close(model.run({"input_ids": ids}, readout=True), want)


def test_hub_id_loads_from_the_cache_offline(hub_cache, folder):
    model = nnvtv.load("nnvtv-tests/tiny-gpt2")
    assert model.adapter.name == "gpt2"
    assert model.name == "nnvtv-tests/tiny-gpt2"
    same = nnvtv.load(str(folder))
    assert model.fingerprint == same.fingerprint  # the same checkpoint, whichever way it came
    pinned = nnvtv.load("nnvtv-tests/tiny-gpt2", revision=COMMIT)
    assert pinned.fingerprint == model.fingerprint


def test_missing_hub_id_offline_says_so_fast(hub_cache):
    t0 = time.perf_counter()
    with pytest.raises(OfflineError) as err:
        nnvtv.load("nnvtv-tests/not-cached")
    msg = str(err.value)
    assert time.perf_counter() - t0 < 10  # no network retries
    for part in ("nnvtv-tests/not-cached", str(hub_cache), "offline", "local folder", "nnvtv.wrap(model, tokenizer)"):
        assert part in msg
    assert isinstance(err.value, UnknownModelError)


def test_typo_of_a_catalogue_name_offline_suggests_it(hub_cache):
    with pytest.raises(OfflineError, match="Did you mean the catalogue model 'toy-text'"):
        nnvtv.load("toy-txt")


def test_not_a_name_a_folder_or_an_id(tmp_path):
    with pytest.raises(UnknownModelError, match="unknown model .*not a catalogue model.*not a local folder.*not a Hugging Face Hub id"):
        nnvtv.load(str(tmp_path / "no" / "such" / "folder"))


def test_dtype_and_device_are_applied_and_checked(folder):
    model = nnvtv.load(str(folder), dtype="bfloat16", device="cpu")
    assert model.dtype == torch.bfloat16 and model.device == torch.device("cpu")
    toy = nnvtv.load("toy-text", dtype=torch.bfloat16)
    assert toy.dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="unknown dtype 'float8'.*bfloat16"):
        nnvtv.load("toy-text", dtype="float8")
    with pytest.raises(ConfigError, match="floating-point"):
        nnvtv.load("toy-text", dtype=torch.int8)
    with pytest.raises(ConfigError, match="not a device"):
        nnvtv.load("toy-text", device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA.*not available|is_available"):
            nnvtv.load("toy-text", device="cuda")
    assert nnvtv.load("toy-text", device="auto").device == torch.device("cuda" if torch.cuda.is_available() else "cpu")


def test_device_map_needs_accelerate(folder, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "accelerate" else real(name, *a))
    with pytest.raises(MissingDependencyError, match="pip install accelerate"):
        nnvtv.load(str(folder), device_map="auto")
    with pytest.raises(ConfigError, match="not both"):
        nnvtv.load(str(folder), device_map="auto", device="cpu")


def test_catalogue_options_are_checked_by_name():
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['n'\].*device, dtype and weights_dir"):
        nnvtv.load("toy-text", n="toy-text-natural")
    with pytest.raises(ConfigError, match="catalogue model"):
        nnvtv.load("toy-text", device_map="auto")


def test_inputs_follow_the_model(folder):
    model = nnvtv.load(str(folder), dtype="bfloat16")
    inputs = model.inputs({"input_ids": torch.tensor([[4, 5, 6]])})
    assert inputs.kwargs["input_ids"].device == model.device
    out = model.run(inputs, readout=True)
    assert out.dtype == torch.bfloat16


def test_run_masks_in_bfloat16_agrees_with_float32():
    """bfloat16 keeps 8 mantissa bits: logits of the batched candidates stay within 0.1 of float32
    (max abs over 16 candidate site sets x 16 held-out queries) and the argmax rarely moves."""
    f32 = nnvtv.load("toy-text")
    b16 = nnvtv.load("toy-text", dtype="bfloat16")
    task = nnvtv.tasks.get("toy-perm_c")
    split = task.split(0)
    space = f32.sites("head")
    icl = task.icl(f32, split.train, split.train, shots=5)
    means32 = nnvtv.mean_activations(f32, [icl.inputs], space)
    means16 = nnvtv.mean_activations(b16, [task.icl(b16, split.train, split.train, shots=5).inputs], space)
    for s in space:  # float64 sums: the two means differ only by the bf16 forward
        torch.testing.assert_close(means16[s], means32[s], atol=0.05, rtol=0.05)
    masks = torch.rand(16, len(space), generator=torch.Generator().manual_seed(0)) < 0.3
    zs = task.zero_shot(f32, split.test)
    out32 = nnvtv.run_masks(f32, zs.inputs, means32, space, masks)
    out16 = nnvtv.run_masks(b16, task.zero_shot(b16, split.test).inputs, means16, space, masks)
    assert out16.dtype == torch.bfloat16
    assert (out16.float() - out32).abs().max() < 0.1 * out32.abs().max()
    agree = (out16.float().argmax(-1) == out32.argmax(-1)).float().mean()
    assert agree > 0.95


@pytest.mark.slow
def test_find_in_bfloat16_still_finds_the_task_vector():
    b16 = nnvtv.load("toy-text", dtype="bfloat16")
    result = nnvtv.find(b16, "toy-perm_c", strategy="reinforce", budget=1024, seed=0)
    assert result.scores.icl >= 0.9
    assert result.scores.task_vector >= 0.85 * result.scores.icl
    assert result.task_vector.values[result.task_vector.sites[0]].dtype == torch.float32  # means stay float32
