"""Families by structure: decoders and ViT-style classifiers with no table row.

Each family below has no row in the adapter table; nnvtv must find its blocks and attention
output projection from the module tree and the config. The expected paths and sizes are
written here by hand (from reading each family's transformers source), and a patched run
is compared with a raw ``register_forward_pre_hook`` reference on the expected module.
"""

from __future__ import annotations

import logging

import pytest
import torch
import transformers as T
from nnvtv.adapters.discover import (
    CAUSAL_LM_DISCOVERY,
    discover_causal_lm,
    find_structure,
)
from nnvtv.adapters.hf_vit import ViTIO

import nnvtv
import nnvtv.adapter as adapter_mod
from nnvtv.adapter import AdapterDiscovery, register_discovery
from nnvtv.errors import AdapterError, UnknownModelError
from nnvtv.text_io import TextIO

V = 64
SPECIAL = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
IMAGE = dict(image_size=8, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=2,
             num_attention_heads=2, num_labels=3)


def _family(kit, name, cls, make_config, block, attn_out, n_heads, head_dim, kind="text"):
    groups = {"": ("last",)} if kind == "text" else {"": ("cls", "patches")}
    return kit.Family(name, cls, make_config, {"": (2, n_heads, head_dim, 16)},
                      {"": (block, attn_out)}, groups, kind)


def unlisted(kit) -> dict:
    """Tiny families with no table row: (adapter name expected, class, config, facts)."""
    fams = [
        # decoder under model.decoder, attention output `out_proj`
        _family(kit, "opt", T.OPTForCausalLM, lambda: T.OPTConfig(
            vocab_size=V, hidden_size=16, num_hidden_layers=2, ffn_dim=32, num_attention_heads=4,
            max_position_embeddings=32, word_embed_proj_dim=16, **SPECIAL),
            "model.decoder.layers.{i}", "model.decoder.layers.{i}.self_attn.out_proj", 4, 4),
        # fused query_key_value, `self_attention.dense`, config keys n_layer / n_head
        _family(kit, "bloom", T.BloomForCausalLM, lambda: T.BloomConfig(
            vocab_size=V, hidden_size=16, n_layer=2, n_head=4, **SPECIAL),
            "transformer.h.{i}", "transformer.h.{i}.self_attention.dense", 4, 4),
        # multi-query attention, `c_proj` as an nn.Linear (GPT-2 has Conv1D)
        _family(kit, "gpt_bigcode", T.GPTBigCodeForCausalLM, lambda: T.GPTBigCodeConfig(
            vocab_size=V, n_embd=16, n_layer=2, n_head=4, n_positions=32, **SPECIAL),
            "transformer.h.{i}", "transformer.h.{i}.attn.c_proj", 4, 4),
        # fused qkv_proj next to out_proj
        _family(kit, "codegen", T.CodeGenForCausalLM, lambda: T.CodeGenConfig(
            vocab_size=V, n_embd=16, n_layer=2, n_head=4, n_positions=32, rotary_dim=2, **SPECIAL),
            "transformer.h.{i}", "transformer.h.{i}.attn.out_proj", 4, 4),
        # mixture of experts, grouped-query, explicit head_dim 8 != 16 / 4: o_proj takes 32
        _family(kit, "mixtral", T.MixtralForCausalLM, lambda: T.MixtralConfig(
            vocab_size=V, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, intermediate_size=32, num_local_experts=2,
            num_experts_per_tok=1, max_position_embeddings=32, **SPECIAL),
            "model.layers.{i}", "model.layers.{i}.self_attn.o_proj", 4, 8),
        # `self_attn.dense` after a fused query_key_value and q/k layer norms
        _family(kit, "persimmon", T.PersimmonForCausalLM, lambda: T.PersimmonConfig(
            vocab_size=V, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=32, max_position_embeddings=32, **SPECIAL),
            "model.layers.{i}", "model.layers.{i}.self_attn.dense", 4, 4),
        # ViT-style classifiers, CLS + patches
        _family(kit, "dinov2", T.Dinov2ForImageClassification,
                lambda: T.Dinov2Config(**IMAGE, mlp_ratio=2),
                "dinov2.encoder.layer.{i}", "dinov2.encoder.layer.{i}.attention.o_proj", 2, 8, "vit"),
        _family(kit, "beit", T.BeitForImageClassification,
                lambda: T.BeitConfig(**IMAGE, intermediate_size=32),
                "beit.layers.{i}", "beit.layers.{i}.attention.o_proj", 2, 8, "vit"),
    ]
    return {f.name: f for f in fams}


NAMES = ["opt", "bloom", "gpt_bigcode", "codegen", "mixtral", "persimmon", "dinov2", "beit"]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fresh_log(monkeypatch):
    """No inferred family announced yet (the once-per-family memory is process-wide)."""
    monkeypatch.setattr(adapter_mod, "_ANNOUNCED", set())


def _reference(hf, path: str, head: int, head_dim: int, positions: torch.Tensor, value, batch):
    """Readout with ``value`` written into one head's slice of ``path``'s input, by a raw pre-hook."""

    def pre_hook(module, args):
        x = args[0].clone()
        for r in range(x.shape[0]):
            for j, p in enumerate(positions[r].tolist()):
                x[r, p, head * head_dim : (head + 1) * head_dim] = value[j]
        return (x, *args[1:])

    handle = hf.get_submodule(path).register_forward_pre_hook(pre_hook)
    try:
        with torch.no_grad():
            return batch.readout(hf(**batch.raw_kwargs))
    finally:
        handle.remove()


# --------------------------------------------------------------------------- found by structure


@pytest.mark.parametrize("name", NAMES)
def test_unlisted_family_found_by_structure_matches_raw_hook(kit, name, fresh_log):
    fam = unlisted(kit)[name]
    hf = fam.build(0)
    assert not any(  # really no table row: neither its class nor its model_type
        type(hf).__name__ in s.model_classes or hf.config.model_type in s.model_types
        for s in nnvtv.list_adapters()
    )
    model = nnvtv.wrap(hf)  # inferred, then checked by wrap's validation forward
    block, attn_out = fam.paths[""]
    n_layers, n_heads, head_dim, d_model = fam.sizes[""]
    info = model.stream("")
    assert model.adapter.name == name
    assert model.adapter.io is (TextIO if fam.kind == "text" else ViTIO)
    assert (info.n_layers, info.n_heads, info.head_dim, info.d_model) == fam.sizes[""]
    assert info.block_paths == tuple(block.format(i=i) for i in range(n_layers))
    assert info.attn_out_paths == tuple(attn_out.format(i=i) for i in range(n_layers))
    assert info.groups == fam.groups[""]

    batch = kit.make_batch(fam, seed=1)
    group = fam.groups[""][-1]  # text: last token; ViT: every patch
    positions = batch.positions[("", group)]
    site = nnvtv.Site(1, n_heads - 1, group)
    value = torch.randn(positions.shape[1], head_dim, generator=torch.Generator().manual_seed(2))
    got = model.run(batch.data, nnvtv.Patch({site: value}), readout=True)
    ref = _reference(hf, attn_out.format(i=1), n_heads - 1, head_dim, positions, value, batch)
    base = model.run(batch.data, readout=True)
    assert torch.allclose(got, ref, atol=1e-5), (got - ref).abs().max()
    assert not torch.allclose(got, base, atol=1e-4)  # the patch did something
    assert not kit.leftover_hooks(hf)


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("dinov2", "beit")])
def test_unlisted_decoder_shares_its_prefix_exactly(kit, name, fresh_log):
    """An inferred decoder row reads text with TextIO, whose fast path (the prefix run once with
    a key/value cache, only the last token tiled per candidate) must equal whole prompts."""
    model = nnvtv.wrap(unlisted(kit)[name].build(0), kit.make_tokenizer("left"))
    inputs = model.inputs(["w1 w2 w3 w4 w5", "w6 w7", "w8 w9 w10", "w11"])
    space = model.sites("head")
    g = torch.Generator().manual_seed(3)
    values = {s: torch.randn(1, model.site_width(s), generator=g) for s in space}
    means = nnvtv.Means(values, count=1, fingerprint=model.fingerprint)
    masks = torch.rand(4, len(space), generator=g) < 0.4
    assert model.io.shared_prefix(inputs, {("", "last")}) is not None
    whole = nnvtv.run_masks(model, inputs, means, space, masks, share_prefix=False)
    shared = nnvtv.run_masks(model, inputs, means, space, masks)
    assert torch.allclose(shared, whole, atol=1e-5), (shared - whole).abs().max()
    assert not torch.allclose(whole[0], whole[1], atol=1e-4)  # different masks, different readouts


def test_inferred_family_is_logged_once_with_a_row_that_pins_it(kit, caplog, fresh_log):
    fam = unlisted(kit)["opt"]
    with caplog.at_level(logging.INFO, logger="nnvtv"):
        first = nnvtv.wrap(fam.build(0))
        nnvtv.wrap(fam.build(1))  # the same family again: no second line
        nnvtv.find_adapter(fam.build(2))
    records = [r for r in caplog.records if r.name == "nnvtv"]
    assert len(records) == 1, [r.getMessage() for r in records]
    record = records[0]
    assert record.levelno == logging.WARNING
    msg = record.getMessage()
    for word in ("OPTForCausalLM", "causal_lm_structure", "model.decoder.layers.{i}",
                 "model.decoder.layers.{i}.self_attn.out_proj", "num_hidden_layers",
                 "register_adapter", "adapter=", "ROWS"):
        assert word in msg, word

    # the logged source, run as is, makes a table row: found by the table, same adapter, no log
    source = msg[msg.index("from nnvtv.adapter import"):msg.index("For a family")]
    caplog.clear()
    with adapter_mod.ADAPTERS.scoped(), caplog.at_level(logging.INFO, logger="nnvtv"):
        exec(source, {})
        pinned = nnvtv.find_adapter(fam.build(0))
        assert pinned is adapter_mod.ADAPTERS.get("opt")
        assert pinned == first.adapter  # same name: same fingerprint as the inferred row
    assert not [r for r in caplog.records if r.name == "nnvtv"]


def test_table_family_is_unaffected(kit, caplog, fresh_log):
    with caplog.at_level(logging.INFO, logger="nnvtv"):
        model = nnvtv.wrap(kit.FAMILIES["gpt2"].build(0))
    assert model.adapter is adapter_mod.ADAPTERS.get("gpt2")  # the row, not an inferred copy
    assert not [r for r in caplog.records if r.name == "nnvtv"]


def test_explicit_adapter_wins_over_discovery(kit, caplog, fresh_log):
    hf = unlisted(kit)["opt"].build(0)
    spec = nnvtv.AdapterSpec(**{**discover_causal_lm(hf).__dict__, "name": "my_opt"})
    with caplog.at_level(logging.INFO, logger="nnvtv"):
        assert nnvtv.wrap(hf, adapter=spec).adapter is spec
    assert not [r for r in caplog.records if r.name == "nnvtv"]


# --------------------------------------------------------------------------- refused


@pytest.mark.parametrize(
    "cls, config, words",
    [
        # CLS + distillation token + patches: ViTIO would call the distillation token patch 0
        (T.DeiTForImageClassification, lambda: T.DeiTConfig(**IMAGE, intermediate_size=32),
         ("distillation_token", "not a CLS + patches sequence")),
        (T.Dinov2WithRegistersForImageClassification,
         lambda: T.Dinov2WithRegistersConfig(**IMAGE, mlp_ratio=2, num_register_tokens=2),
         ("register_tokens", "not a CLS + patches sequence")),
    ],
)
def test_vit_style_classifier_that_is_not_cls_plus_patches_is_refused(cls, config, words):
    torch.manual_seed(0)
    hf = cls(config()).eval()
    with pytest.raises(UnknownModelError) as err:
        nnvtv.wrap(hf)
    msg = str(err.value)
    for word in (*words, "vit_classifier_structure", cls.__name__, "register_adapter", "adapter="):
        assert word in msg, word


def test_ambiguous_attention_output_is_refused_naming_the_candidates(kit):
    hf = unlisted(kit)["opt"].build(0)
    for layer in hf.model.decoder.layers:  # a second usual name taking n_heads * head_dim
        layer.self_attn.dense = torch.nn.Linear(16, 16)
    with pytest.raises(UnknownModelError) as err:
        nnvtv.find_adapter(hf)
    msg = str(err.value)
    for word in ("ambiguous", "model.decoder.layers.0.self_attn.out_proj",
                 "model.decoder.layers.0.self_attn.dense", "register_adapter", "StreamSpec"):
        assert word in msg, word
    with pytest.raises(AdapterError, match="ambiguous"):  # the discovery's own error
        find_structure(hf)


def test_unfindable_attention_output_is_refused_listing_what_was_seen(kit):
    hf = unlisted(kit)["opt"].build(0)
    for layer in hf.model.decoder.layers:  # an unusual name: not guessed
        layer.self_attn.wo = layer.self_attn.out_proj
        del layer.self_attn.out_proj
    with pytest.raises(UnknownModelError) as err:
        nnvtv.find_adapter(hf)
    msg = str(err.value)
    for word in ("found no attention output projection taking 16 features", "self_attn.wo (in 16)",
                 "self_attn.q_proj (in 16)", "o_proj", "register_adapter"):
        assert word in msg, word


def test_no_block_list_of_the_layer_count_is_refused(kit):
    hf = unlisted(kit)["opt"].build(0)
    hf.config.num_hidden_layers = 3
    with pytest.raises(AdapterError, match=r"no nn.ModuleList of num_hidden_layers=3 blocks.*model\.decoder\.layers \(2\)"):
        find_structure(hf)


def test_blocks_that_differ_are_refused(kit):
    hf = unlisted(kit)["opt"].build(0)
    del hf.model.decoder.layers[1].self_attn.out_proj  # a mixed stack: layer 1 keeps heads elsewhere
    with pytest.raises(AdapterError, match=r"model\.decoder\.layers\.1 has no linear self_attn\.out_proj"):
        find_structure(hf)


def test_a_module_no_discovery_applies_to_says_so():
    class PlainNet(torch.nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(UnknownModelError) as err:
        nnvtv.find_adapter(PlainNet())
    msg = str(err.value)
    assert "No structural discovery applies" in msg
    assert "causal_lm_structure" in msg and "vit_classifier_structure" in msg


# --------------------------------------------------------------------------- registry


def test_discoveries_are_plugins_and_a_custom_one_plugs_in(kit, fresh_log, caplog):
    names = adapter_mod.DISCOVERIES.names()
    assert names[:2] == ["causal_lm_structure", "vit_classifier_structure"]
    assert adapter_mod.DISCOVERIES.get("causal_lm_structure") is CAUSAL_LM_DISCOVERY
    with pytest.raises(AdapterError, match="AdapterDiscovery"):
        register_discovery("not a discovery")  # type: ignore[arg-type]

    hf = unlisted(kit)["opt"].build(0)
    calls = []

    def broken(model):
        calls.append(type(model).__name__)
        raise RuntimeError("boom")

    with adapter_mod.DISCOVERIES.scoped():
        register_discovery(AdapterDiscovery("broken", broken))
        # OPT: the built-in discovery answers first, the broken one is never asked
        assert nnvtv.find_adapter(hf).name == "opt" and not calls
        # a model no built-in rule takes: the broken rule is reported, not raised
        with pytest.raises(UnknownModelError, match=r"\[broken\] failed with RuntimeError: boom"):
            nnvtv.find_adapter(torch.nn.Linear(2, 2))
        custom = nnvtv.AdapterSpec(**{**discover_causal_lm(hf).__dict__, "name": "by_rule"})
        register_discovery(AdapterDiscovery("always", lambda m: custom), replace=True)
        assert nnvtv.find_adapter(torch.nn.Linear(2, 2)) is custom
    assert "always" not in adapter_mod.DISCOVERIES


# --------------------------------------------------------------------------- table consistency


def test_every_table_family_is_also_found_by_structure(kit, family):
    """Discovery run directly on each tabled family's tiny config agrees with its table row."""
    fam = kit.FAMILIES[family]
    hf = fam.build(0)
    row = nnvtv.find_adapter(hf)
    found = [s for d in adapter_mod.list_discoveries() if (s := d.discover(hf)) is not None]
    if fam.kind == "vit_mae":
        # ViTMAEForPreTraining is no causal LM nor image classifier: its two streams (encoder
        # and a decoder of another width) and its fixed-noise masking need ViTMAEIO, which a
        # single-stack structural row cannot say. It stays a table row only.
        assert found == []
        return
    (spec,) = found
    assert spec.io is row.io
    (stream,) = spec.streams
    block, attn_out = fam.paths[""]
    assert (stream.block, stream.attn_out) == ((block,), (attn_out,))
    assert stream.block[0] in row.streams[0].block and stream.attn_out[0] in row.streams[0].attn_out
    assert find_structure(hf).sizes == fam.sizes[""]
