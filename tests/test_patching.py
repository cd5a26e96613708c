"""Patched runs against raw-torch references, batched masks, padding, and bad input.

The references here use raw ``register_forward_pre_hook`` / ``register_forward_hook`` on
the HF modules (the library itself must not: it goes through nnsight).
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from typing import Any

import pytest
import torch

import nnvtv
from nnvtv.errors import (
    ConfigError,
    DTypeMismatchError,
    EmptyDataError,
    NnvtvError,
    ShapeMismatchError,
    SiteError,
    UnknownModelError,
)
from nnvtv.inputs import ModelInputs

# --------------------------------------------------------------------------- reference


def reference_run(kit, family: str, hf: torch.nn.Module, batch, values, mode: str) -> torch.Tensor:
    """Readout of ``hf`` on ``batch`` with ``values`` patched through raw torch hooks."""
    fam = kit.FAMILIES[family]
    per_module: dict[tuple[str, bool], list[tuple[Any, torch.Tensor]]] = defaultdict(list)
    for site, value in values.items():
        block, attn_out = fam.paths[site.stream]
        path = (attn_out if site.head is not None else block).format(i=site.layer)
        per_module[(path, site.head is not None)].append((site, value))

    def edit(x: torch.Tensor, items, n_heads: int) -> torch.Tensor:
        x = x.clone()
        b, t, w = x.shape
        x4 = x.view(b, t, n_heads, w // n_heads)
        for site, value in items:
            pos = batch.positions[(site.stream, site.group)]
            head = 0 if site.head is None else site.head
            for r in range(b):
                for j in range(pos.shape[1]):
                    if mode == "replace":
                        x4[r, pos[r, j], head] = value[j]
                    else:
                        x4[r, pos[r, j], head] += value[j]
        return x

    def pre_hook_for(items, n_heads):
        def hook(module, args):
            assert args, "the output projection was called without a positional input"
            return (edit(args[0], items, n_heads), *args[1:])

        return hook

    def hook_for(items):
        def hook(module, args, out):
            if isinstance(out, tuple):
                return (edit(out[0], items, 1), *out[1:])
            return edit(out, items, 1)

        return hook

    handles = []
    try:
        for (path, is_head), items in per_module.items():
            module = hf.get_submodule(path)
            if is_head:
                n_heads = fam.sizes[items[0][0].stream][1]
                handles.append(module.register_forward_pre_hook(pre_hook_for(items, n_heads)))
            else:
                handles.append(module.register_forward_hook(hook_for(items)))
        with torch.no_grad():
            return batch.readout(hf(**batch.raw_kwargs))
    finally:
        for h in handles:
            h.remove()


def random_values(model: nnvtv.Model, batch, sites, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for s in sites:
        p = batch.positions[(s.stream, s.group)].shape[1]
        out[s] = torch.randn(p, model.site_width(s), generator=g)
    return out


def pick(space: nnvtv.SiteSpace, k: int, seed: int) -> list[nnvtv.Site]:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(space), generator=g)[:k].sort().values
    return [space[int(i)] for i in idx]


# --------------------------------------------------------------------------- golden


@pytest.mark.parametrize("mode", ["replace", "add"])
@pytest.mark.parametrize("kind", ["head", "layer"])
def test_run_matches_raw_hook_reference(zoo, kit, family, mode, kind):
    model = zoo(family)
    batch = kit.make_batch(kit.FAMILIES[family], seed=1)
    space = model.sites(kind)
    sites = pick(
        space, 4 if kind == "head" else 2, seed=zlib.crc32(f"{family}/{mode}/{kind}".encode())
    )
    # every group and stream appears at least once across the two kinds / families
    values = random_values(model, batch, sites, seed=2)
    got = model.run(batch.data, nnvtv.Patch(values, mode=mode), readout=True)
    ref = reference_run(kit, family, model.module, batch, values, mode)
    base = model.run(batch.data, readout=True)
    assert got.shape == ref.shape == base.shape
    assert torch.allclose(got, ref, atol=1e-5), (got - ref).abs().max()
    assert not torch.allclose(got, base, atol=1e-4)  # the patch did something
    assert kit.leftover_hooks(model.module) == []


def test_every_site_of_every_group_matches_reference(zoo, kit, family):
    """One site per (stream, group, kind) at the last layer and last head: covers every group."""
    model = zoo(family)
    batch = kit.make_batch(kit.FAMILIES[family], seed=3)
    sites = []
    for stream, info in model.streams.items():
        for group in info.groups:
            sites.append(nnvtv.Site(info.n_layers - 1, info.n_heads - 1, group, stream))
            sites.append(nnvtv.Site(0, None, group, stream))
    values = random_values(model, batch, sites, seed=4)
    got = model.run(batch.data, nnvtv.Patch(values), readout=True)
    ref = reference_run(kit, family, model.module, batch, values, "replace")
    assert torch.allclose(got, ref, atol=1e-5)


def test_unpatched_run_equals_plain_forward(zoo, kit, family):
    model = zoo(family)
    batch = kit.make_batch(kit.FAMILIES[family], seed=5)
    fresh = kit.Zoo.fresh(family)
    with torch.no_grad():
        ref = batch.readout(fresh(**batch.raw_kwargs))
    assert torch.allclose(model.run(batch.data, readout=True), ref, atol=1e-6)
    assert torch.allclose(model.run(batch.data, nnvtv.Patch({}), readout=True), ref, atol=1e-6)


# --------------------------------------------------------------------------- own activations


@pytest.mark.parametrize("kind", ["head", "layer"])
def test_patching_own_activations_changes_nothing(zoo, kit, family, kind):
    model = zoo(family)
    batch = kit.make_batch(kit.FAMILIES[family], seed=6, size=2)
    for i in range(batch.size):
        row = batch.row(i)
        space = model.sites(kind)
        means = nnvtv.mean_activations(model, [row.data], space)
        assert means.count == 1
        base = model.run(row.data, readout=True)
        for mode_patch in (means.patch(), means.patch(pick(space, 3, seed=i))):
            assert torch.allclose(model.run(row.data, mode_patch, readout=True), base, atol=1e-5)
        # adding zero is the identity too
        zero = nnvtv.Patch({s: torch.zeros_like(v) for s, v in means.items()}, mode="add")
        assert torch.allclose(model.run(row.data, zero, readout=True), base, atol=1e-6)


def test_per_row_values_reproduce_batch(zoo, kit):
    """Replacing every head of row i by row i's own values, in a one-row run, is the identity."""
    model = zoo("llama")
    batch = kit.make_batch(kit.FAMILIES["llama"], seed=7, size=3)
    base = model.run(batch.data, readout=True)
    for i in range(batch.size):
        row = batch.row(i)
        means = nnvtv.mean_activations(model, [row.data], model.sites("head"))
        patched = model.run(row.data, means.patch(), readout=True)
        assert torch.allclose(patched[0], base[i], atol=1e-5)


# --------------------------------------------------------------------------- run_masks


def mixed_space(model: nnvtv.Model) -> nnvtv.SiteSpace:
    return nnvtv.SiteSpace([*model.sites("head"), *model.sites("layer")])


@pytest.mark.parametrize("mode", ["replace", "add"])
def test_run_masks_rows_equal_single_patched_runs(zoo, kit, family, mode):
    model = zoo(family)
    fam = kit.FAMILIES[family]
    icl = kit.make_batch(fam, seed=10, size=4)
    zs = kit.make_batch(fam, seed=11, size=2)
    space = mixed_space(model)
    means = nnvtv.mean_activations(model, [icl.data], space)
    g = torch.Generator().manual_seed(12)
    masks = torch.rand(5, len(space), generator=g) < 0.3
    masks = torch.cat(
        [
            torch.zeros(1, len(space), dtype=torch.bool),
            masks,
            torch.ones(1, len(space), dtype=torch.bool),
        ]
    )
    out = nnvtv.run_masks(model, zs.data, means, space, masks, mode=mode)
    base = model.run(zs.data, readout=True)
    assert out.shape == (masks.shape[0], zs.size, *base.shape[1:])
    assert torch.allclose(out[0], base, atol=1e-5)  # an all-False row is the unpatched model
    for b in range(masks.shape[0]):
        single = model.run(zs.data, means.patch(space.select(masks[b]), mode=mode), readout=True)
        assert torch.allclose(out[b], single, atol=1e-5), (family, b)
    assert not torch.allclose(out[-1], base, atol=1e-4)
    # chunking: one candidate per forward gives the same as everything in one forward
    chunked = nnvtv.run_masks(model, zs.data, means, space, masks, mode=mode, max_rows=zs.size)
    assert torch.allclose(chunked, out, atol=1e-5)
    odd = nnvtv.run_masks(model, zs.data, means, space, masks, mode=mode, max_rows=3 * zs.size)
    assert torch.allclose(odd, out, atol=1e-5)
    assert kit.leftover_hooks(model.module) == []


def test_run_masks_accepts_int_masks_and_subspaces(zoo, kit):
    model = zoo("gpt2")
    fam = kit.FAMILIES["gpt2"]
    space = model.sites("head", layers=[-1])
    assert [s.layer for s in space] == [1, 1]
    means = nnvtv.mean_activations(model, [kit.make_batch(fam, seed=13).data], space)
    zs = kit.make_batch(fam, seed=14, size=2).data
    as_bool = nnvtv.run_masks(model, zs, means, space, torch.tensor([[True, False], [False, True]]))
    as_int = nnvtv.run_masks(model, zs, means, space, torch.tensor([[1, 0], [0, 1]]))
    assert torch.equal(as_bool, as_int)


# --------------------------------------------------------------------------- padding


@pytest.mark.parametrize("side", ["right", "left"])
def test_last_group_under_padding(zoo, kit, text_family, side):
    model = zoo(text_family)
    tok = kit.make_tokenizer(side)
    prompts = ["w1 w2 w3 w4 w5", "w6 w7", "w8 w9 w10", "w11"]
    inputs = model.io.__class__(model.module, tok).build(prompts)
    mask = inputs.kwargs["attention_mask"]
    assert (mask == 0).any()  # mixed lengths really are padded
    pad_at = 0 if side == "left" else -1
    assert (mask[:, pad_at] == 0).any()
    last = inputs.positions[""]["last"][:, 0]
    for r, p in enumerate(prompts):
        real = mask[r].nonzero().flatten()
        assert int(last[r]) == int(real.max())
        assert tok.convert_ids_to_tokens([int(inputs.kwargs["input_ids"][r, last[r]])]) == [
            p.split()[-1]
        ]

    batched = model.run(inputs, readout=True)
    singles = torch.cat([model.run(inputs_for(tok, model, [p]), readout=True) for p in prompts])
    assert torch.allclose(batched, singles, atol=1e-5), (batched - singles).abs().max()

    # a patched run under padding equals the same patch on each prompt alone
    site = nnvtv.Site(1, model.n_heads - 1, "last")
    patch = nnvtv.Patch(
        {site: torch.randn(1, model.head_dim, generator=torch.Generator().manual_seed(0))}
    )
    batched_p = model.run(inputs, patch, readout=True)
    singles_p = torch.cat(
        [model.run(inputs_for(tok, model, [p]), patch, readout=True) for p in prompts]
    )
    assert torch.allclose(batched_p, singles_p, atol=1e-5)
    assert not torch.allclose(batched_p, batched, atol=1e-4)


def inputs_for(tok, model: nnvtv.Model, prompts: list[str]) -> ModelInputs:
    return model.io.__class__(model.module, tok).build(prompts)


def test_wrap_with_tokenizer_takes_strings(kit):
    tok = kit.make_tokenizer("left")
    model = nnvtv.wrap(kit.FAMILIES["gpt2"].build(0), tok)
    out = model.run(["w1 w2", "w3"], readout=True)
    assert out.shape == (2, kit.VOCAB)
    with pytest.raises(ConfigError, match="tokenizer"):
        nnvtv.wrap(kit.FAMILIES["gpt2"].build(0)).run(["w1 w2"])
    with pytest.raises(EmptyDataError, match="no prompts"):
        model.run([])


# --------------------------------------------------------------------------- bad input


def assert_clean(kit, family: str, model: nnvtv.Model) -> None:
    """No hooks left behind and an unpatched run equals a freshly built model."""
    assert kit.leftover_hooks(model.module) == []
    batch = kit.make_batch(kit.FAMILIES[family], seed=20)
    with torch.no_grad():
        ref = batch.readout(kit.Zoo.fresh(family)(**batch.raw_kwargs))
    assert torch.allclose(model.run(batch.data, readout=True), ref, atol=1e-6)


@pytest.fixture
def gpt2(kit):
    """A private GPT-2 (its own instance, so a leak could not hide in the shared zoo)."""
    return nnvtv.wrap(kit.FAMILIES["gpt2"].build(0))


def test_unknown_model_class(kit):
    class PlainNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

    net = PlainNet()
    with pytest.raises(UnknownModelError) as err:
        nnvtv.wrap(net)
    msg = str(err.value)
    assert "PlainNet" in msg and "gpt2" in msg and "vit" in msg and "register_adapter" in msg
    assert kit.leftover_hooks(net) == []
    with pytest.raises(ConfigError, match="torch.nn.Module"):
        nnvtv.wrap("gpt2")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "site, words",
    [
        (nnvtv.Site(5, 0, "last"), ["L5.H0@last", "layer 5", "out of range", "2"]),
        (nnvtv.Site(0, 9, "last"), ["L0.H9@last", "head 9", "out of range", "2"]),
        (nnvtv.Site(0, 0, "query"), ["query", "last"]),
        (nnvtv.Site(0, 0, "last", "enc"), ["enc", "stream"]),
        (nnvtv.Site(7, None, "last"), ["L7@last", "layer 7"]),
    ],
)
def test_site_out_of_range(kit, gpt2, site, words):
    batch = kit.make_batch(kit.FAMILIES["gpt2"], seed=21)
    with pytest.raises(SiteError) as err:
        gpt2.run(batch.data, nnvtv.Patch({site: torch.zeros(1, 8)}), readout=True)
    for w in words:
        assert w in str(err.value), (w, str(err.value))
    with pytest.raises(SiteError):
        nnvtv.mean_activations(gpt2, [batch.data], [site])
    assert_clean(kit, "gpt2", gpt2)


def test_sites_out_of_range(gpt2):
    with pytest.raises(SiteError, match="layer 2 out of range"):
        gpt2.sites("head", layers=[2])
    with pytest.raises(SiteError, match="nope"):
        gpt2.sites("head", groups=["nope"])
    with pytest.raises(ConfigError, match="'head' or 'layer'"):
        gpt2.sites("neuron")


def test_wrong_value_shape(kit, gpt2):
    batch = kit.make_batch(kit.FAMILIES["gpt2"], seed=22)
    site = nnvtv.Site(1, 0, "last")
    with pytest.raises(ShapeMismatchError) as err:
        gpt2.run(batch.data, nnvtv.Patch({site: torch.zeros(1, 16)}), readout=True)
    msg = str(err.value)
    assert "L1.H0@last" in msg and "(1, 16)" in msg and "(1, 8)" in msg and "head_dim" in msg
    layer_site = nnvtv.Site(0, None, "last")
    with pytest.raises(ShapeMismatchError) as err:
        gpt2.run(batch.data, nnvtv.Patch({layer_site: torch.zeros(2, 16)}), readout=True)
    assert (
        "L0@last" in str(err.value) and "(2, 16)" in str(err.value) and "(1, 16)" in str(err.value)
    )
    assert_clean(kit, "gpt2", gpt2)


def test_wrong_dtype(kit, gpt2):
    batch = kit.make_batch(kit.FAMILIES["gpt2"], seed=23)
    site = nnvtv.Site(0, 1, "last")
    with pytest.raises(DTypeMismatchError) as err:
        gpt2.run(batch.data, nnvtv.Patch({site: torch.zeros(1, 8, dtype=torch.long)}), readout=True)
    assert "L0.H1@last" in str(err.value) and "floating point" in str(err.value)
    assert "int64" in str(err.value)
    with pytest.raises(DTypeMismatchError, match="torch.Tensor"):
        gpt2.run(batch.data, nnvtv.Patch({site: [[0.0] * 8]}), readout=True)  # type: ignore[dict-item]
    assert_clean(kit, "gpt2", gpt2)


def test_bad_patch_objects(kit, gpt2):
    with pytest.raises(ConfigError, match="replace"):
        nnvtv.Patch({}, mode="multiply")
    with pytest.raises(ConfigError, match="Site"):
        nnvtv.Patch({"L0.H0@last": torch.zeros(1, 8)})  # type: ignore[dict-item]
    batch = kit.make_batch(kit.FAMILIES["gpt2"], seed=24)
    with pytest.raises(ConfigError, match="nnvtv.Patch"):
        gpt2.run(batch.data, {nnvtv.Site(0, 0, "last"): torch.zeros(1, 8)})
    assert_clean(kit, "gpt2", gpt2)


def test_empty_batches_for_means(kit, gpt2):
    with pytest.raises(EmptyDataError, match="no batches"):
        nnvtv.mean_activations(gpt2, [], gpt2.sites("head"))
    with pytest.raises(EmptyDataError, match="site space is empty"):
        nnvtv.mean_activations(gpt2, [kit.make_batch(kit.FAMILIES["gpt2"]).data], [])
    with pytest.raises(EmptyDataError):
        gpt2.run(torch.zeros(0, 4, dtype=torch.long))
    assert_clean(kit, "gpt2", gpt2)


def test_masks_of_wrong_width(kit, gpt2):
    fam = kit.FAMILIES["gpt2"]
    space = gpt2.sites("head")
    means = nnvtv.mean_activations(gpt2, [kit.make_batch(fam).data], space)
    zs = kit.make_batch(fam, seed=25).data
    with pytest.raises(ShapeMismatchError) as err:
        nnvtv.run_masks(gpt2, zs, means, space, torch.ones(3, len(space) + 1, dtype=torch.bool))
    assert f"[B, {len(space)}]" in str(err.value) and f"(3, {len(space) + 1})" in str(err.value)
    with pytest.raises(ShapeMismatchError, match="boolean"):
        nnvtv.run_masks(gpt2, zs, means, space, torch.full((2, len(space)), 0.5))
    with pytest.raises(ShapeMismatchError):
        nnvtv.run_masks(gpt2, zs, means, space, torch.ones(len(space), dtype=torch.bool))
    with pytest.raises(ConfigError, match="max_rows"):
        nnvtv.run_masks(
            gpt2, zs, means, space, torch.ones(1, len(space), dtype=torch.bool), max_rows=1
        )
    with pytest.raises(ConfigError, match="mode"):
        nnvtv.run_masks(
            gpt2, zs, means, space, torch.ones(1, len(space), dtype=torch.bool), mode="x"
        )
    assert_clean(kit, "gpt2", gpt2)


def test_unknown_wrap_option(kit):
    hf = kit.FAMILIES["gpt2"].build(0)
    with pytest.raises(ConfigError) as err:
        nnvtv.wrap(hf, max_lenght=8)
    assert "max_lenght" in str(err.value) and "max_length" in str(err.value)
    assert kit.leftover_hooks(hf) == []


def test_errors_are_catchable_as_builtins():
    assert issubclass(SiteError, KeyError) and issubclass(SiteError, NnvtvError)
    assert issubclass(ShapeMismatchError, ValueError)
    assert issubclass(DTypeMismatchError, TypeError)
    assert str(SiteError("plain message")) == "plain message"  # no KeyError quoting


@pytest.mark.parametrize("name", ["gpt2", "vit_mae"])
def test_exception_mid_trace_leaves_model_clean(kit, name):
    """Positions that only fail while the forward runs (inside the nnsight trace)."""
    model = nnvtv.wrap(kit.FAMILIES[name].build(0))
    batch = kit.make_batch(kit.FAMILIES[name], seed=26)
    good = model.inputs(batch.data)
    positions = {s: {g: p.clone() for g, p in gs.items()} for s, gs in good.positions.items()}
    stream = list(model.streams)[-1]
    group = model.stream(stream).groups[0]
    positions[stream][group][:] = 99  # beyond the sequence
    bad = ModelInputs(kwargs=good.kwargs, positions=positions)
    site = nnvtv.Site(model.stream(stream).n_layers - 1, 0, group, stream)
    value = torch.zeros(bad.group_size(stream, group), model.site_width(site))
    with pytest.raises(Exception):  # noqa: B017 - whatever the indexing error is
        model.run(bad, nnvtv.Patch({site: value}), readout=True)
    assert_clean(kit, name, model)
    # mean collection failing mid-trace is clean too
    with pytest.raises(Exception):  # noqa: B017
        nnvtv.mean_activations(model, [bad], [site])
    assert_clean(kit, name, model)
    # and a reader raising inside the trace
    from nnvtv.tracing import ATTN_OUT, Visit

    def boom(x, layout):
        raise RuntimeError("boom inside the trace")

    visit = Visit(len(model.streams) - 1, 0, ATTN_OUT, model.site_path(site), reader=boom)
    with pytest.raises(RuntimeError, match="boom"):
        model.trace_visits(good, [visit])
    assert_clean(kit, name, model)


# --------------------------------------------------------------------------- shared prefix


@pytest.mark.parametrize("side", ["right", "left"])
def test_run_masks_shared_prefix_equals_whole_prompts(zoo, kit, text_family, side, monkeypatch):
    """Running the prefix once (key/value cache) and tiling only the last token changes nothing."""
    model = zoo(text_family)
    tok = kit.make_tokenizer(side)
    inputs = inputs_for(tok, model, ["w1 w2 w3 w4 w5", "w6 w7", "w8 w9 w10", "w11"])
    space = mixed_space(model)
    g = torch.Generator().manual_seed(3)
    values = {s: torch.randn(1, model.site_width(s), generator=g) for s in space}
    means = nnvtv.Means(values, count=1, fingerprint=model.fingerprint)
    masks = torch.rand(6, len(space), generator=g) < 0.4
    for mode in ("replace", "add"):
        whole = nnvtv.run_masks(model, inputs, means, space, masks, mode=mode, share_prefix=False)
        shared = nnvtv.run_masks(model, inputs, means, space, masks, mode=mode)
        assert torch.allclose(shared, whole, atol=1e-5), (mode, (shared - whole).abs().max())
    # a tiny state budget forces one candidate per chunk: still the same readouts
    monkeypatch.setattr(nnvtv.patching, "SHARED_STATE_BYTES", 1)
    tight = nnvtv.run_masks(model, inputs, means, space, masks, mode="add")
    assert torch.allclose(tight, shared, atol=1e-5)
    assert kit.leftover_hooks(model.module) == []


def test_shared_prefix_only_when_it_is_exact(kit, gpt2):
    tok = kit.make_tokenizer("right")
    inputs = inputs_for(tok, gpt2, ["w1 w2 w3", "w4"])
    assert gpt2.io.shared_prefix(inputs, {("", "last")}) is not None
    # a group other than the last token, or one-token prompts, leave nothing to share
    assert gpt2.io.shared_prefix(inputs, {("", "last"), ("", "all")}) is None
    assert gpt2.io.shared_prefix(inputs_for(tok, gpt2, ["w1", "w2"]), {("", "last")}) is None
    off = nnvtv.wrap(gpt2.module, tok, share_prefix=False, validate=False)
    assert off.io.shared_prefix(inputs, {("", "last")}) is None
