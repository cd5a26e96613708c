"""Adapter families on tiny random configs, and the adapter registry (class MRO, entry points)."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import sys
import types
from dataclasses import dataclass

import pytest
import torch
import transformers as T

import nnvtv
import nnvtv.adapter as adapter_mod
from nnvtv import registry as registry_mod
from nnvtv.errors import AdapterError, ConfigError, UnknownModelError
from nnvtv.text_io import TextIO

# --------------------------------------------------------------------------- families


def test_wrap_picks_adapter_and_sizes(zoo, kit, family):
    fam = kit.FAMILIES[family]
    model = zoo(family)
    assert model.adapter.name == fam.name
    assert list(model.streams) == list(fam.sizes)  # streams in forward order
    for stream, (n_layers, n_heads, head_dim, d_model) in fam.sizes.items():
        info = model.stream(stream)
        assert (info.n_layers, info.n_heads, info.head_dim, info.d_model) == (
            n_layers,
            n_heads,
            head_dim,
            d_model,
        )
        assert info.groups == fam.groups[stream]
        block, attn_out = fam.paths[stream]
        assert info.block_paths == tuple(block.format(i=i) for i in range(n_layers))
        assert info.attn_out_paths == tuple(attn_out.format(i=i) for i in range(n_layers))
    if len(fam.sizes) == 1:
        n_layers, n_heads, head_dim, d_model = fam.sizes[""]
        assert (model.n_layers, model.n_heads, model.head_dim, model.d_model) == fam.sizes[""]
    else:
        with pytest.raises(nnvtv.errors.ConfigError, match="several streams"):
            _ = model.n_heads


def test_heads_are_query_heads_not_kv_heads(zoo):
    for name in ("llama", "mistral", "qwen2", "gemma"):
        cfg = zoo(name).module.config
        assert cfg.num_key_value_heads < cfg.num_attention_heads
        assert zoo(name).n_heads == cfg.num_attention_heads
    gemma = zoo("gemma")
    assert gemma.head_dim == 8 != gemma.d_model // gemma.n_heads


def test_site_counts(zoo, kit, family):
    fam = kit.FAMILIES[family]
    model = zoo(family)
    expected_heads = sum(
        n_layers * n_heads * len(fam.groups[s])
        for s, (n_layers, n_heads, _, _) in fam.sizes.items()
    )
    expected_layers = sum(n_layers * len(fam.groups[s]) for s, (n_layers, *_) in fam.sizes.items())
    assert len(model.sites("head")) == expected_heads
    assert len(model.sites("layer")) == expected_layers
    assert all(s.kind == "head" for s in model.sites("head"))
    assert all(s.kind == "layer" for s in model.sites("layer"))


def test_site_space_order_stable_and_printable(zoo, kit, family):
    fam = kit.FAMILIES[family]
    model = zoo(family)
    space = model.sites("head")
    # streams in forward order, then layer, then head, then group
    expected = [
        nnvtv.Site(layer, head, group, stream)
        for stream, (n_layers, n_heads, _, _) in fam.sizes.items()
        for layer in range(n_layers)
        for head in range(n_heads)
        for group in fam.groups[stream]
    ]
    assert list(space) == expected
    assert model.sites("head") == space  # same order on every call
    names = space.to_list()
    assert nnvtv.SiteSpace.from_list(names) == space  # printable and parseable
    assert all(nnvtv.Site.parse(str(s)) == s for s in space)
    assert repr(space).startswith("SiteSpace([") and str(len(space) - 4) in repr(space)
    assert family in repr(model) or fam.name in repr(model)


def test_vit_mae_fixed_noise_makes_runs_identical(zoo, kit):
    model = zoo("vit_mae")
    px = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(123)
    a = model.run(px, readout=True)
    torch.manual_seed(456)
    b = model.run(px, readout=True)
    assert torch.equal(a, b)
    # the raw HF model masks at random without a fixed noise: the I/O is what makes it stable
    with torch.no_grad():
        outs = []
        for seed in range(6):
            torch.manual_seed(seed)
            outs.append(model.module(pixel_values=px).logits)
    assert any(not torch.allclose(outs[0], o) for o in outs[1:])


def test_vit_mae_visible_option_picks_patches(kit):
    hf = kit.FAMILIES["vit_mae"].build(0)
    model = nnvtv.wrap(hf, visible=[3, 1])
    inputs = model.inputs(torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        out = hf(**inputs.kwargs)
    # HF's mask: 0 = kept, 1 = removed
    assert out.mask.tolist() == [[1, 0, 1, 0], [1, 0, 1, 0]]
    with pytest.raises(nnvtv.errors.ConfigError, match="visible"):
        nnvtv.wrap(hf, visible=[0])


def test_model_describe_is_plain_data(zoo, family):
    d = zoo(family).describe()
    assert d["adapter"] == zoo(family).adapter.name
    assert len(d["fingerprint"]) == 16
    assert set(d["streams"]) == set(zoo(family).streams)


# --------------------------------------------------------------------------- registry


@pytest.fixture
def isolated_registry():
    """The adapter registry (plug-ins loaded); what a test registers is undone afterwards."""
    with adapter_mod.ADAPTERS.scoped() as registry:
        yield registry


@dataclass
class TinyConfig:
    model_type: str = "tiny_custom"
    layers: int = 2
    heads: int = 2
    width: int = 8
    vocab_size: int = 16


class TinyAttention(torch.nn.Module):
    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = torch.nn.Linear(cfg.width, 3 * cfg.width)
        self.proj = torch.nn.Linear(cfg.width, cfg.width)

    def forward(self, x, mask):
        b, t, w = x.shape
        q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2) for z in self.qkv(x).chunk(3, -1))
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        allowed = causal[None, None] & mask[:, None, None, :].bool()
        att = (q @ k.transpose(-1, -2) / (w // self.heads) ** 0.5).masked_fill(~allowed, -1e9)
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, t, w)
        return self.proj(y)


class TinyBlock(torch.nn.Module):
    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.attn = TinyAttention(cfg)
        self.mlp = torch.nn.Linear(cfg.width, cfg.width)

    def forward(self, x, mask):
        x = x + self.attn(x, mask)
        return x + torch.tanh(self.mlp(x))


class TinyNet(torch.nn.Module):
    """A custom transformer nnvtv knows nothing about."""

    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.config = cfg
        self.emb = torch.nn.Embedding(cfg.vocab_size, cfg.width)
        self.blocks = torch.nn.ModuleList(TinyBlock(cfg) for _ in range(cfg.layers))
        self.head = torch.nn.Linear(cfg.width, cfg.vocab_size)

    def forward(self, input_ids, attention_mask=None):
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        x = self.emb(input_ids)
        for blk in self.blocks:
            x = blk(x, mask)
        return types.SimpleNamespace(logits=self.head(x))


TINY_SPEC = nnvtv.AdapterSpec(
    name="tiny_custom",
    model_types=("tiny_custom",),
    model_classes=("TinyNet",),
    io=TextIO,
    streams=(
        nnvtv.StreamSpec(
            block=("blocks.{i}",),
            attn_out=("blocks.{i}.attn.proj",),
            n_layers=("layers",),
            n_heads=("heads",),
            d_model=("width",),
        ),
    ),
)


def _tiny_net(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(TinyConfig()).eval()


def test_register_custom_adapter_works_through_wrap(isolated_registry):
    net = _tiny_net()
    with pytest.raises(UnknownModelError) as err:
        nnvtv.wrap(net)
    assert "TinyNet" in str(err.value)
    nnvtv.register_adapter(TINY_SPEC)
    assert TINY_SPEC in nnvtv.list_adapters()
    model = nnvtv.wrap(net)
    assert model.adapter is TINY_SPEC
    assert (model.n_layers, model.n_heads, model.head_dim, model.d_model) == (2, 2, 4, 8)
    assert model.sites("head").to_list() == ["L0.H0@last", "L0.H1@last", "L1.H0@last", "L1.H1@last"]

    # a patched run equals a raw-hook reference on the custom module too
    ids = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    value = torch.randn(1, 4, generator=torch.Generator().manual_seed(0))
    got = model.run(
        {"input_ids": ids, "attention_mask": mask},
        nnvtv.Patch({nnvtv.Site(1, 1, "last"): value}),
        readout=True,
    )

    def pre_hook(module, args):
        x = args[0].clone()
        for row, last in enumerate([3, 1]):
            x[row, last, 4:8] = value[0]
        return (x, *args[1:])

    handle = net.blocks[1].attn.proj.register_forward_pre_hook(pre_hook)
    try:
        with torch.no_grad():
            logits = net(ids, mask).logits
    finally:
        handle.remove()
    ref = logits[torch.arange(2), torch.tensor([3, 1])]
    assert torch.allclose(got, ref, atol=1e-5)


def test_register_adapter_refuses_silent_replacement(isolated_registry):
    nnvtv.register_adapter(TINY_SPEC)
    nnvtv.register_adapter(TINY_SPEC)  # same spec again: fine
    other = nnvtv.AdapterSpec(**{**TINY_SPEC.__dict__, "model_types": ("other",)})
    with pytest.raises(ConfigError, match="replace=True"):
        nnvtv.register_adapter(other)
    nnvtv.register_adapter(other, replace=True)
    assert isolated_registry["tiny_custom"] is other
    with pytest.warns(DeprecationWarning, match="replace="):  # the old keyword still works, with a warning
        nnvtv.register_adapter(TINY_SPEC, override=True)
    assert isolated_registry["tiny_custom"] is TINY_SPEC
    with pytest.raises(AdapterError, match="AdapterSpec"):
        nnvtv.register_adapter("not a spec")  # type: ignore[arg-type]


def test_registries_share_one_convention(isolated_registry):
    """Adapters, models, tasks, strategies and toy trainers: same keyword, same errors."""
    from nnvtv.catalog import MODELS
    from nnvtv.search import STRATEGIES
    from nnvtv.tasks import TASKS
    from nnvtv.toys import TRAINERS

    def different(item):  # another item under the same name
        if dataclasses.is_dataclass(item):
            field = "model_types" if isinstance(item, nnvtv.AdapterSpec) else "description"
            return dataclasses.replace(item, **{field: ("x",) if field == "model_types" else "x"})
        if isinstance(item, type):  # a strategy class
            return type("Other", (item,), {})
        return nnvtv.tasks.WordPairTask(item.name, [(f"a{i}", "b") for i in range(4)])  # inputs must differ

    registries = [isolated_registry, MODELS, TASKS, STRATEGIES, TRAINERS]
    for registry in registries:
        name, item = next(iter(registry.items()))
        with registry.scoped():
            registry.register(item, name=name)  # the same object again: a no-op
            with pytest.raises(ConfigError, match="already registered.*replace=True"):
                registry.register(different(item), name=name)
            registry.register(different(item), name=name, replace=True)
            assert registry.get(name) is not item
        assert registry.get(name) is item  # scoped() undid the replacement
        with pytest.raises(KeyError, match=f"unknown {registry.kind}") as err:
            registry.get(name + "x")
        assert repr(name) in str(err.value)  # "Did you mean '<name>'?"
        assert isinstance(err.value, nnvtv.errors.NnvtvError)


def test_wrong_adapter_table_gives_adapter_error(isolated_registry):
    bad = nnvtv.AdapterSpec(
        **{
            **TINY_SPEC.__dict__,
            "streams": (
                nnvtv.StreamSpec(
                    **{**TINY_SPEC.streams[0].__dict__, "attn_out": ("blocks.{i}.nope",)}
                ),
            ),
        }
    )
    with pytest.raises(AdapterError, match=r"blocks\.0\.nope"):
        nnvtv.wrap(_tiny_net(), adapter=bad)
    wrong_heads = nnvtv.AdapterSpec(
        **{
            **TINY_SPEC.__dict__,
            "streams": (
                nnvtv.StreamSpec(**{**TINY_SPEC.streams[0].__dict__, "head_dim": ("vocab_size",)}),
            ),
        }
    )
    with pytest.raises(AdapterError, match="n_heads"):
        nnvtv.wrap(_tiny_net(), adapter=wrong_heads)


class MyGPT2Config(T.GPT2Config):
    model_type = "my_gpt2"


class MyGPT2(T.GPT2LMHeadModel):
    config_class = MyGPT2Config


def test_subclass_of_gpt2_finds_gpt2_adapter_by_class(kit):
    cfg = MyGPT2Config(vocab_size=kit.VOCAB, n_positions=32, n_embd=16, n_layer=2, n_head=2)
    torch.manual_seed(0)
    net = MyGPT2(cfg)
    assert net.config.model_type == "my_gpt2"  # so only the class MRO can find it
    assert nnvtv.find_adapter(net).name == "gpt2"
    model = nnvtv.wrap(net)
    assert model.adapter.name == "gpt2" and model.n_heads == 2


def test_subclass_spec_overrides_base_class_spec(isolated_registry, kit):
    class ProbeGPT2(T.GPT2LMHeadModel):
        pass

    spec = nnvtv.AdapterSpec(
        **{
            **nnvtv.find_adapter(kit.FAMILIES["gpt2"].build()).__dict__,
            "name": "probe_gpt2",
            "model_types": (),
            "model_classes": ("ProbeGPT2",),
        }
    )
    nnvtv.register_adapter(spec)
    torch.manual_seed(0)
    net = ProbeGPT2(kit.FAMILIES["gpt2"].make_config())
    assert nnvtv.find_adapter(net) is spec  # most specific class first
    assert nnvtv.wrap(net).adapter is spec


def test_unknown_model_lists_families():
    class PlainNet(torch.nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(UnknownModelError) as err:
        nnvtv.find_adapter(PlainNet())
    msg = str(err.value)
    for word in ("PlainNet", "gpt2", "llama", "vit_mae", "register_adapter", "nnvtv.adapters"):
        assert word in msg


# --------------------------------------------------------------------------- entry points


def test_entry_point_group_name():
    assert adapter_mod.ENTRY_POINT_GROUP == "nnvtv.adapters"


def test_entry_point_plugin_is_loaded(monkeypatch, isolated_registry):
    plugin = types.ModuleType("nnvtv_test_plugin")
    plugin.SPEC = TINY_SPEC
    builtin_clash = nnvtv.AdapterSpec(**{**TINY_SPEC.__dict__, "name": "gpt2"})
    plugin.CLASH = [builtin_clash]
    monkeypatch.setitem(sys.modules, "nnvtv_test_plugin", plugin)
    eps = [
        importlib.metadata.EntryPoint("tiny", "nnvtv_test_plugin:SPEC", "nnvtv.adapters"),
        importlib.metadata.EntryPoint("gone", "nnvtv_no_such_module:SPEC", "nnvtv.adapters"),
        importlib.metadata.EntryPoint("clash", "nnvtv_test_plugin:CLASH", "nnvtv.adapters"),
    ]
    asked = []

    def fake_entry_points(**kw):
        asked.append(kw.get("group"))
        return [ep for ep in eps if ep.group == kw.get("group")]

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    monkeypatch.setitem(registry_mod._STATE, "loaded", False)
    with pytest.warns(UserWarning) as record:
        specs = nnvtv.list_adapters()
    messages = " | ".join(str(w.message) for w in record)
    assert asked == ["nnvtv.adapters"]
    assert TINY_SPEC in specs
    assert "gone" in messages  # a broken plug-in warns, nothing breaks
    assert "gpt2" in messages and "replace=True" in messages  # cannot replace a built-in
    assert isolated_registry["gpt2"] is not builtin_clash
    assert nnvtv.wrap(_tiny_net()).adapter is TINY_SPEC


def test_builtin_families_come_from_nnvtvs_own_entry_points():
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="nnvtv.adapters")}
    assert {"hf_causal_lm", "hf_vit", "hf_seggpt", "mae_vqgan", "smollm2", "toy"} <= set(eps)
    assert all(registry_mod._is_builtin(ep) for name, ep in eps.items() if ep.value.startswith("nnvtv."))
    assert {"gpt2", "llama", "vit_mae", "seggpt", "mae_vqgan"} <= set(adapter_mod.ADAPTERS.names())
