"""One fingerprint per checkpoint, wherever and however it runs; every saved vector checks it."""

from __future__ import annotations

import pytest
import torch
import transformers as T

import nnvtv
from nnvtv.errors import FingerprintMismatchError
from nnvtv.fingerprint import fingerprint_of, legacy_fingerprint_of, parameter_samples

FORMAT = {"demo": "{input} = {output}", "query": "{input} =", "separator": " ; "}


def _gpt2(kit, seed: int = 0) -> T.GPT2LMHeadModel:
    return kit.FAMILIES["gpt2"].build(seed)


def test_same_checkpoint_same_fingerprint_in_every_form(kit, tokenizer, tmp_path):
    module = _gpt2(kit)
    wrapped = nnvtv.wrap(module, tokenizer)
    module.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    from_folder = nnvtv.load(str(tmp_path / "m"))
    in_bf16 = nnvtv.load(str(tmp_path / "m"), dtype="bfloat16")
    remote_path = nnvtv.wrap(_gpt2(kit), tokenizer, remote="local")
    fp = wrapped.fingerprint
    assert from_folder.fingerprint == fp and in_bf16.fingerprint == fp and remote_path.fingerprint == fp
    # another checkpoint of the same architecture differs; so does a float16 copy (it rounds differently)
    assert nnvtv.wrap(_gpt2(kit, seed=1), tokenizer).fingerprint != fp
    assert nnvtv.load(str(tmp_path / "m"), dtype="float16").fingerprint != fp


def test_a_remote_model_reads_its_weight_sample_on_the_server(kit, tokenizer):
    """remote=True builds a meta-device skeleton here; the sample comes from the server in one
    request. Through nnsight's local emulation of that path, the server's sample equals the local one,
    and the skeleton's fingerprint with it equals the local fingerprint."""
    module = _gpt2(kit)
    remote = nnvtv.wrap(_gpt2(kit), tokenizer, remote="local")
    named = list(remote.module.named_parameters())
    before = remote.remote_requests
    served = remote.backend.parameter_samples(
        remote.nnsight, remote.inputs(remote.io.example(1)), [n for n, _ in named], [p.numel() for _, p in named]
    )
    assert remote.remote_requests == before + 1
    local = parameter_samples(module.named_parameters())
    assert served.keys() == local.keys()
    for name in local:
        assert torch.equal(served[name], local[name]), name
    with torch.device("meta"):
        skeleton = T.GPT2LMHeadModel(module.config)
    assert fingerprint_of(skeleton, "gpt2", served) == nnvtv.wrap(module, tokenizer).fingerprint


def test_vectors_from_the_remote_path_apply_locally_and_back(kit, tokenizer):
    task = nnvtv.tasks.WordPairTask("pairs", [(f"w{i}", f"w{i + 20}") for i in range(12)])
    local = nnvtv.wrap(_gpt2(kit), tokenizer, meta={"prompt_format": FORMAT})
    remote = nnvtv.wrap(_gpt2(kit), tokenizer, meta={"prompt_format": FORMAT}, remote="local")
    found_remote = nnvtv.find(remote, task, strategy="ranking", budget=8, shots=2, n_mean_prompts=8)
    found_local = nnvtv.find(local, task, strategy="ranking", budget=8, shots=2, n_mean_prompts=8)
    assert nnvtv.evaluate(local, task, found_remote.task_vector, shots=2) == found_local.scores
    assert nnvtv.evaluate(remote, task, found_local.task_vector, shots=2) == found_remote.scores


def test_vectors_made_before_the_new_fingerprint_still_apply(kit, tokenizer):
    module = _gpt2(kit)
    model = nnvtv.wrap(module, tokenizer)
    old = legacy_fingerprint_of(module, "gpt2")
    assert old is not None and old != model.fingerprint
    assert model.matches(old) and model.matches(model.fingerprint)
    assert not model.matches(legacy_fingerprint_of(_gpt2(kit, seed=1), "gpt2"))


def test_recipe_vectors_are_checked_on_apply(kit, tokenizer):
    task = nnvtv.tasks.WordPairTask("pairs", [(f"w{i}", f"w{i + 20}") for i in range(12)])
    model = nnvtv.wrap(_gpt2(kit), tokenizer, meta={"prompt_format": FORMAT})
    other = nnvtv.wrap(_gpt2(kit, seed=1), tokenizer, meta={"prompt_format": FORMAT})
    sweep = nnvtv.recipes.layer_sweep(model, task, shots=2, n_mean_prompts=4)
    fv = nnvtv.recipes.function_vector(model, task, shots=2, n_mean_prompts=4, n_cie_prompts=2, k=2)
    zs = task.zero_shot(model, task.split(0).test)
    for vec in (sweep, fv):
        same = vec.apply(model, zs.inputs)
        torch.testing.assert_close(same, model.run(zs.inputs, vec.patch(), readout=True))
        with pytest.raises(FingerprintMismatchError, match="transfer=True"):
            vec.apply(other, zs.inputs)
        with pytest.raises(FingerprintMismatchError):
            vec.patch(model=other)
        moved = vec.apply(other, zs.inputs, transfer=True)  # the same widths: allowed on purpose
        assert moved.shape == same.shape
