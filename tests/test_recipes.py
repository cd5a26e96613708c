"""LLM recipes (nnvtv.recipes) on tiny random-init causal LMs: shapes, exactness, determinism, errors."""

from __future__ import annotations

import dataclasses

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


def _hand_accuracy(model, task, batch, patch=None) -> float:
    out = model.run(batch.inputs, patch, readout=True)
    return float(task.score(out, batch.targets).mean())


def _block_outputs_at_last_token(model, batch, layer) -> torch.Tensor:
    """``[N, d_model]``: block ``layer``'s output at each prompt's last token, read with a plain
    torch hook, one prompt at a time (no nnvtv tracing, no padding)."""
    seen: list[torch.Tensor] = []
    hook = model.module.model.layers[layer].register_forward_hook(
        lambda module, args, out: seen.append(out[0] if isinstance(out, tuple) else out)
    )
    rows = []
    try:
        for i in range(len(batch)):
            one = batch.inputs.rows(slice(i, i + 1))
            with torch.no_grad():
                model.module(**one.kwargs)
            rows.append(seen[-1][0, int(one.group_positions("", "last").flatten()[0])].float())
    finally:
        hook.remove()
    return torch.stack(rows)


def test_layer_sweep_values_are_the_hand_computed_ones(llama, task):
    sweep = recipes.layer_sweep(llama, task, n_mean_prompts=8, n_queries=6)
    assert sweep.layers == [0, 1]
    assert len(sweep.accuracy) == 2 and sweep.means.shape == (2, 16)
    assert sweep.forward_passes == 2 and sweep.example_forwards == 12
    # the means are block outputs at the last token averaged over the 8 clean ICL prompts
    # (train queries in order, 3 shots, seed 0), read here with a plain forward hook
    split = task.split(0)
    icl = task.icl(llama, [split.train[i % len(split.train)] for i in range(8)], split.train, shots=3, seed=0)
    for i, layer in enumerate(sweep.layers):
        expected = _block_outputs_at_last_token(llama, icl, layer).mean(0)
        assert torch.allclose(sweep.means[i], expected, atol=1e-5), layer
    # the accuracy at each layer is what patching that layer by hand gives; the baselines too
    zs = task.zero_shot(llama, split.test[:6])
    by_hand = [_hand_accuracy(llama, task, zs, sweep.patch(layer)) for layer in sweep.layers]
    assert sweep.accuracy == pytest.approx(by_hand)
    assert sweep.zero_shot == pytest.approx(_hand_accuracy(llama, task, zs))
    icl_test = task.icl(llama, split.test[:6], split.train, shots=3, seed=1)
    assert sweep.icl == pytest.approx(_hand_accuracy(llama, task, icl_test))
    # the best layer is the first arg-max of those accuracies
    first_best = by_hand.index(max(by_hand))
    assert sweep.best_layer == sweep.layers[first_best] and sweep.best_accuracy == pytest.approx(by_hand[first_best])
    tie = dataclasses.replace(sweep, accuracy=[0.5, 0.5])
    assert tie.best_layer == 0 and dataclasses.replace(sweep, accuracy=[0.25, 0.5]).best_layer == 1
    with pytest.raises(ConfigError, match="not swept"):
        sweep.patch(5)


def test_layer_sweep_save_load_round_trip(llama, task, tmp_path):
    sweep = recipes.layer_sweep(llama, task, n_mean_prompts=4, n_queries=4, layers=[1])
    sweep.save(tmp_path / "s")
    back = recipes.LayerSweep.load(tmp_path / "s")
    assert back.as_dict() == sweep.as_dict()
    assert torch.equal(back.means, sweep.means)
    with pytest.raises(CheckpointError, match="holds no saved layer sweep"):
        recipes.LayerSweep.load(tmp_path / "nothing")
    (tmp_path / "s" / "layer_sweep.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="layer_sweep.json is not valid JSON"):
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

    clean = p(None)
    expected = torch.tensor([[float((p(means.patch([nnvtv.Site(layer, head, "last")])) - clean).mean()) for head in range(4)] for layer in range(2)])
    assert torch.allclose(cie, expected, atol=1e-6)  # every head, one patched forward each


def test_function_vector_is_sum_of_projected_head_means(llama, task, tmp_path):
    fv = recipes.function_vector(llama, task, k=3, n_mean_prompts=6, n_cie_prompts=4, n_queries=6)
    assert fv.layer == 0 and len(fv.heads) == 3 and fv.vector.shape == (16,)
    # the chosen heads are the top-3 of the CIE matrix, best first (ties: the earlier head)
    ranked = sorted(((layer, head) for layer in range(2) for head in range(4)), key=lambda lh: (-float(fv.cie[lh]), lh))
    assert [(s.layer, s.head) for s in fv.heads] == ranked[:3]
    # the CIE it ranked by is the one causal_indirect_effects measures for these settings
    means = recipes.icl_means(llama, task, llama.sites("head", groups=["last"]), n_prompts=6)
    assert torch.allclose(fv.cie, recipes.causal_indirect_effects(llama, task, means, n_prompts=4), atol=1e-6)
    # every accuracy is the one measured by hand with the vector added (or not)
    split = task.split(0)
    zs = task.zero_shot(llama, split.test[:6])
    shuffled = task.icl(llama, split.test[:6], split.train, shots=3, seed=1, shuffle_labels=True)
    assert fv.layer_accuracy == pytest.approx([_hand_accuracy(llama, task, zs, fv.patch(layer)) for layer in range(2)])
    assert fv.zero_shot == pytest.approx(_hand_accuracy(llama, task, zs))
    assert fv.zero_shot_fv == pytest.approx(fv.layer_accuracy[fv.layer])
    assert fv.shuffled == pytest.approx(_hand_accuracy(llama, task, shuffled))
    assert fv.shuffled_fv == pytest.approx(_hand_accuracy(llama, task, shuffled, fv.patch()))
    # vector = sum of o_proj(head mean in its slice), computed here with the weight matrix
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
    with pytest.raises(ConfigError, match=r"layer must be an int in \[0, 1\] \(the model has 2 layers\), got 7"):
        recipes.function_vector(llama, task, k=2, layer=7)
    with pytest.raises(ShapeMismatchError, match=r"\[2, 4\]"):
        recipes.function_vector(llama, task, k=2, cie=torch.zeros(3, 3), n_mean_prompts=2, n_queries=2)
    with pytest.raises(ConfigError, match="n_mean_prompts must be an int >= 1, got 0"):
        recipes.layer_sweep(llama, task, n_mean_prompts=0)
    with pytest.raises(ConfigError, match=r"n_queries must be an int >= 1, got True \(a bool"):
        recipes.layer_sweep(llama, task, n_mean_prompts=2, n_queries=True)
    with pytest.raises(ConfigError, match="at least one strategy"):
        recipes.head_search(llama, task, strategies=())
    with pytest.raises(ShapeMismatchError, match=r"\[4\]"):
        recipes.head_vector(llama, nnvtv.Site(0, 0, "last"), torch.zeros(5))
    assert not kit_leftover(llama)


def test_head_search_reports_each_strategy(llama, task):
    options = {"reinforce": {"samples": 4}}
    out = recipes.head_search(llama, task, ["ranking", "reinforce"], budget=12, n_mean_prompts=4, options=options)
    assert [s.strategy for s in out] == ["ranking", "reinforce"]
    zs = task.zero_shot(llama, task.split(0).test)
    for s in out:
        # each row is the find() run with the same settings, reduced ...
        res = nnvtv.find(llama, task, strategy=s.strategy, budget=12, seed=0, sites="head", groups=["last"], n_mean_prompts=4, **options.get(s.strategy, {}))
        again = recipes.SearchSummary.from_result(res).as_dict()
        assert {**s.as_dict(), "seconds": 0} == {**again, "seconds": 0}
        assert s.total_sites == 8 and s.n_sites == len(s.sites) and s.forward_passes <= 12
        # ... and its accuracy is what those sites' means give the held-out queries, by hand
        patch = res.means.patch([nnvtv.Site.parse(n) for n in s.sites])
        assert s.accuracy == pytest.approx(_hand_accuracy(llama, task, zs, patch))
        assert s.zero_shot == pytest.approx(_hand_accuracy(llama, task, zs))


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
