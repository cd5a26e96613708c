"""LLM recipes (nnvtv.recipes) on tiny random-init causal LMs: shapes, exactness, determinism, errors."""

from __future__ import annotations

import pytest
import torch

import nnvtv
from nnvtv import recipes
from nnvtv.errors import CheckpointError, ConfigError, ShapeMismatchError
from nnvtv.tasks import WordPairTask

FORMAT = {"demo": "{input} w1 {output}", "query": "{input} w1", "separator": " w2 "}


@pytest.fixture(scope="module")
def llama(kit, tokenizer) -> nnvtv.Model:
    module = kit.FAMILIES["llama"].build(0)
    return nnvtv.wrap(module, tokenizer, name="tiny-llama", meta={"prompt_format": FORMAT})


@pytest.fixture(scope="module")
def task() -> WordPairTask:
    # w4..w39 -> a fixed permutation of themselves; 3 shots keep prompts under 32 positions
    words = [f"w{i}" for i in range(4, 40)]
    pairs = [(w, words[(i * 7 + 3) % len(words)]) for i, w in enumerate(words)]
    return WordPairTask("tiny-perm", pairs, default_shots=3)


def test_layer_sweep_shapes_and_patch_is_the_measured_one(llama, task):
    sweep = recipes.layer_sweep(llama, task, n_mean_prompts=8, n_queries=6)
    assert sweep.layers == [0, 1]
    assert len(sweep.accuracy) == 2 and sweep.means.shape == (2, 16)
    assert sweep.forward_passes == 2 and sweep.example_forwards == 12
    assert sweep.best_layer in (0, 1) and sweep.best_accuracy == max(sweep.accuracy)
    # the accuracy at each layer is what patching that layer by hand gives
    split = task.split(0)
    zs = task.zero_shot(llama, split.test[:6])
    for i, layer in enumerate(sweep.layers):
        out = llama.run(zs.inputs, sweep.patch(layer), readout=True)
        assert float(task.score(out, zs.targets).mean()) == pytest.approx(sweep.accuracy[i])
    with pytest.raises(ConfigError, match="not swept"):
        sweep.patch(5)


def test_layer_sweep_save_load_round_trip(llama, task, tmp_path):
    sweep = recipes.layer_sweep(llama, task, n_mean_prompts=4, n_queries=4, layers=[1])
    sweep.save(tmp_path / "s")
    back = recipes.LayerSweep.load(tmp_path / "s")
    assert back.as_dict() == sweep.as_dict()
    assert torch.equal(back.means, sweep.means)
    with pytest.raises(CheckpointError, match="no saved layer_sweep"):
        recipes.LayerSweep.load(tmp_path / "nothing")
    (tmp_path / "s" / "layer_sweep.json").write_text("{not json")
    with pytest.raises(CheckpointError):
        recipes.LayerSweep.load(tmp_path / "s")


def test_cached_cie_equals_full_forward_cie(llama, task):
    means = recipes.icl_means(llama, task, llama.sites("head", groups=["last"]), n_prompts=6)
    fast = recipes.causal_indirect_effects(llama, task, means, n_prompts=5, fast=True, max_rows=8)
    full = recipes.causal_indirect_effects(llama, task, means, n_prompts=5, fast=False)
    assert fast.shape == (2, 4)
    assert torch.allclose(fast, full, atol=1e-5)
    assert full.abs().sum() > 0  # patching heads does change the prediction


def test_cie_is_the_probability_gain_of_one_patched_head(llama, task):
    means = recipes.icl_means(llama, task, llama.sites("head", groups=["last"]), n_prompts=6)
    cie = recipes.causal_indirect_effects(llama, task, means, n_prompts=4, fast=False)
    split = task.split(0)
    batch = task.icl(llama, [split.train[i % len(split.train)] for i in range(4)], split.train, shots=3, seed=7, shuffle_labels=True)

    def p(patch):
        out = llama.run(batch.inputs, patch, readout=True)
        return torch.softmax(out, -1).gather(-1, batch.targets[:, None])[:, 0]

    site = nnvtv.Site(1, 2, "last")
    expected = (p(means.patch([site])) - p(None)).mean()
    assert float(cie[1, 2]) == pytest.approx(float(expected), abs=1e-6)


def test_function_vector_is_sum_of_projected_head_means(llama, task, tmp_path):
    fv = recipes.function_vector(llama, task, k=3, n_mean_prompts=6, n_cie_prompts=4, n_queries=6)
    assert fv.layer == 0 and len(fv.heads) == 3 and fv.vector.shape == (16,)
    assert len(fv.layer_accuracy) == 2
    # the chosen heads are the top-3 of the CIE matrix
    top = sorted(((float(fv.cie[s.layer, s.head]), s) for s in fv.heads), key=lambda t: -t[0])
    assert min(v for v, _ in top) >= fv.cie.flatten().sort(descending=True).values[2] - 1e-9
    # vector = sum of o_proj(head mean in its slice), computed here with the weight matrix
    means = recipes.icl_means(llama, task, llama.sites("head", groups=["last"]), n_prompts=6)
    expected = torch.zeros(16)
    for s in fv.heads:
        w = llama.module.model.layers[s.layer].self_attn.o_proj.weight
        expected += w[:, s.head * 4 : (s.head + 1) * 4] @ means[s][0]
    assert torch.allclose(fv.vector, expected, atol=1e-5)
    # save / load
    fv.save(tmp_path / "fv")
    back = recipes.FunctionVector.load(tmp_path / "fv")
    assert back.as_dict() == fv.as_dict() and torch.equal(back.vector, fv.vector)
    # its patch adds the vector at the last token of the chosen layer
    p = back.patch()
    assert p.mode == "add" and list(p.values) == [nnvtv.Site(0, None, "last")]


def test_function_vector_is_deterministic(llama, task):
    a = recipes.function_vector(llama, task, k=2, n_mean_prompts=4, n_cie_prompts=3, n_queries=4, sweep_layers=False)
    b = recipes.function_vector(llama, task, k=2, n_mean_prompts=4, n_cie_prompts=3, n_queries=4, sweep_layers=False)
    assert torch.equal(a.cie, b.cie) and torch.equal(a.vector, b.vector) and a.heads == b.heads


def test_head_vector_works_for_gpt2_conv1d(kit, tokenizer):
    gpt2 = nnvtv.wrap(kit.FAMILIES["gpt2"].build(0), tokenizer)
    v = torch.randn(gpt2.head_dim)
    out = recipes.head_vector(gpt2, nnvtv.Site(1, 1, "last"), v)
    w = gpt2.module.transformer.h[1].attn.c_proj.weight  # Conv1D: [in, out]
    hd = gpt2.head_dim
    assert torch.allclose(out, v @ w[hd : 2 * hd], atol=1e-6)


def test_bad_inputs_raise_clear_errors(llama, task):
    with pytest.raises(ConfigError, match="k must be"):
        recipes.function_vector(llama, task, k=99, cie=torch.zeros(2, 4), n_mean_prompts=2)
    with pytest.raises(ConfigError, match="layer 7 out of range"):
        recipes.function_vector(llama, task, k=2, layer=7)
    with pytest.raises(ShapeMismatchError, match=r"\[2, 4\]"):
        recipes.function_vector(llama, task, k=2, cie=torch.zeros(3, 3), n_mean_prompts=2, n_queries=2)
    with pytest.raises(ConfigError, match="positive integer"):
        recipes.layer_sweep(llama, task, n_mean_prompts=0)
    with pytest.raises(ConfigError, match="at least one strategy"):
        recipes.head_search(llama, task, strategies=())
    with pytest.raises(ShapeMismatchError, match=r"\[4\]"):
        recipes.head_vector(llama, nnvtv.Site(0, 0, "last"), torch.zeros(5))
    assert not kit_leftover(llama)


def test_head_search_reports_each_strategy(llama, task):
    out = recipes.head_search(llama, task, ["ranking", "reinforce"], budget=12, n_mean_prompts=4, options={"reinforce": {"samples": 4}})
    assert [s.strategy for s in out] == ["ranking", "reinforce"]
    for s in out:
        assert s.total_sites == 8 and 0 <= s.n_sites <= 8 and s.forward_passes <= 12
        assert 0.0 <= s.accuracy <= 1.0 and s.seconds > 0


def kit_leftover(model: nnvtv.Model) -> list[str]:
    return [n for n, m in model.module.named_modules() if m._forward_hooks or m._forward_pre_hooks]


def _metaspace_tokenizer(append_eos: bool):
    """A SentencePiece-style (Metaspace, word-boundary marker) tokenizer, optionally adding EOS."""
    import transformers as T
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = ["[PAD]", "[UNK]", "[EOS]", "\u2581"] + [f"\u2581{w}" for w in ("Q:", "A:", "hot", "cold", "up", "down")]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
    if append_eos:
        tok.post_processor = processors.TemplateProcessing(single="$A [EOS]", special_tokens=[("[EOS]", 2)])
    return T.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]")


@pytest.mark.parametrize("append_eos", [False, True])
def test_first_target_is_the_word_not_the_boundary_marker(kit, append_eos):
    from nnvtv.tasks.text import PromptFormat, first_target_ids

    tok = _metaspace_tokenizer(append_eos)
    model = nnvtv.wrap(kit.FAMILIES["llama"].build(0), tok)
    ids = first_target_ids(model, PromptFormat(demo="Q: {input} A: {output}", query="Q: {input} A:"), [("hot", "cold"), ("up", "down")])
    assert tok.convert_ids_to_tokens(ids.tolist()) == ["\u2581cold", "\u2581down"]


class _LegacySentencePiece:
    """Behaves like a legacy SentencePiece tokenizer that appends EOS: a string that starts with a
    space gets a lone word-boundary token first (``" cold"`` -> ``["▁", "▁cold"]``)."""

    all_special_ids = [2]

    def __init__(self) -> None:
        self.vocab = {"[EOS]": 2, "\u2581": 3}

    def _id(self, piece: str) -> int:
        return self.vocab.setdefault(piece, len(self.vocab) + 4)

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        ids = [self._id("\u2581")] if text.startswith(" ") else []
        ids += [self._id("\u2581" + w) for w in text.split()]
        return {"input_ids": ids + ([2] if add_special_tokens else [])}

    def decode(self, ids: list[int]) -> str:
        inv = {v: k for k, v in self.vocab.items()}
        return "".join(inv[i] for i in ids).replace("\u2581", " ")


def test_first_target_with_a_legacy_sentencepiece_tokenizer_that_appends_eos(kit):
    from types import SimpleNamespace

    from nnvtv.tasks.text import PromptFormat, first_target_ids

    tok = _LegacySentencePiece()
    model = SimpleNamespace(io=SimpleNamespace(tokenizer=tok))
    ids = first_target_ids(model, PromptFormat(demo="Q: {input} A: {output}", query="Q: {input} A:"), [("hot", "cold")])
    assert ids.tolist() == [tok.vocab["\u2581cold"]]


def test_figures_are_written(llama, task, tmp_path):
    sweep = recipes.layer_sweep(llama, task, n_mean_prompts=4, n_queries=4)
    fv = recipes.function_vector(llama, task, k=2, n_mean_prompts=4, n_cie_prompts=3, n_queries=4)
    a = recipes.plot_layer_sweep([sweep], tmp_path / "layers.png", fvs=[fv])
    b = recipes.plot_cie(fv.cie, tmp_path / "cie.png", heads=fv.heads)
    assert a.stat().st_size > 1000 and b.stat().st_size > 1000
    with pytest.raises(ShapeMismatchError):
        recipes.plot_cie(torch.zeros(3), tmp_path / "bad.png")
