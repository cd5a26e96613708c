"""Sites, site spaces and masks; frozen (TransformerLens-style) site names."""

from __future__ import annotations

import pytest
import torch

from nnvtv import Site, SiteSpace
from nnvtv.errors import ShapeMismatchError, SiteError


@pytest.mark.parametrize(
    "text, site",
    [
        ("L3.H5@last", Site(3, 5, "last")),
        ("enc.L12.H0@query", Site(12, 0, "query", "enc")),
        ("dec.L0.H15@query_out", Site(0, 15, "query_out", "dec")),
        ("L7@last", Site(7, None, "last")),
        ("enc.L1@cls", Site(1, None, "cls", "enc")),
    ],
)
def test_site_text_round_trip(text, site):
    assert Site.parse(text) == site
    assert str(site) == text
    assert Site.parse(f"  {text} ") == site
    assert site.kind == ("layer" if site.head is None else "head")


@pytest.mark.parametrize("bad", ["", "L3", "L3.H5", "H5@last", "L-1.H0@last", "L3.H5@", "3.5@last"])
def test_site_parse_errors(bad):
    with pytest.raises(SiteError, match="cannot parse site"):
        Site.parse(bad)


def test_site_space_is_ordered_immutable_and_hashable():
    sites = [Site(0, 0, "last"), Site(0, 1, "last"), Site(1, None, "last")]
    space = SiteSpace(sites)
    assert list(space) == sites and len(space) == 3
    assert (
        space[1] == sites[1] and isinstance(space[1:], SiteSpace) and list(space[1:]) == sites[1:]
    )
    assert space.index(sites[2]) == 2
    assert Site(0, 1, "last") in space and Site(5, 0, "last") not in space
    assert space == SiteSpace(sites) and hash(space) == hash(SiteSpace(sites))
    assert space != SiteSpace(sites[::-1])
    assert space.streams == [""] and space.groups == ["last"]
    assert "2 head sites" in space.summary() and "1 layer sites" in space.summary()
    with pytest.raises(SiteError, match="duplicate"):
        SiteSpace([*sites, sites[0]])
    with pytest.raises(SiteError, match="not in this site space"):
        space.index(Site(9, 9, "last"))


def test_masks_select_round_trip():
    space = SiteSpace(Site(layer, head, "last") for layer in range(3) for head in range(4))
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        mask = torch.rand(len(space), generator=g) < 0.4
        chosen = space.select(mask)
        assert torch.equal(space.mask(chosen), mask)
        assert chosen == [s for s, m in zip(space, mask.tolist(), strict=True) if m]
    assert space.select(torch.zeros(len(space), dtype=torch.bool)) == []
    assert space.select(torch.tensor([1] + [0] * (len(space) - 1))) == [space[0]]


def test_check_masks():
    space = SiteSpace(Site(0, h, "last") for h in range(3))
    ok = space.check_masks(torch.tensor([[1, 0, 1], [0, 0, 0]]))
    assert ok.dtype == torch.bool and ok.tolist() == [[True, False, True], [False, False, False]]
    with pytest.raises(ShapeMismatchError, match=r"\[B, 3\]"):
        space.check_masks(torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ShapeMismatchError, match=r"\[B, 3\]"):
        space.check_masks(torch.ones(3, dtype=torch.bool))
    with pytest.raises(ShapeMismatchError, match="boolean"):
        space.check_masks(torch.tensor([[0, 2, 1]]))
    with pytest.raises(ShapeMismatchError, match="boolean"):
        space.check_masks(torch.tensor([[0.0, 1.0, 1.0]]))
    with pytest.raises(ShapeMismatchError, match="torch.Tensor"):
        space.check_masks([[True, False, True]])  # type: ignore[arg-type]
    with pytest.raises(ShapeMismatchError, match="one mask"):
        space.select(torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(SiteError):
        space.mask([Site(0, 7, "last")])


def test_repr_is_short_and_informative():
    space = SiteSpace(Site(layer, head, "last") for layer in range(4) for head in range(4))
    r = repr(space)
    assert r.startswith("SiteSpace([L0.H0@last, L0.H1@last, L0.H2@last, L0.H3@last, ... (+12)]")
    assert "16 head sites" in r


# --------------------------------------------------------------------------- frozen names
# Changing any of these lists breaks every saved mask and task vector: update with care.

GPT2_HEADS = ["L0.H0@last", "L0.H1@last", "L1.H0@last", "L1.H1@last"]
GPT2_LAYERS = ["L0@last", "L1@last"]
VIT_MAE_HEADS = [
    "enc.L0.H0@cls", "enc.L0.H0@visible", "enc.L0.H1@cls", "enc.L0.H1@visible",
    "enc.L1.H0@cls", "enc.L1.H0@visible", "enc.L1.H1@cls", "enc.L1.H1@visible",
    "dec.L0.H0@cls", "dec.L0.H0@patches", "dec.L0.H1@cls", "dec.L0.H1@patches",
]  # fmt: skip
VIT_HEADS = [
    "L0.H0@cls", "L0.H0@patches", "L0.H1@cls", "L0.H1@patches",
    "L1.H0@cls", "L1.H0@patches", "L1.H1@cls", "L1.H1@patches",
]  # fmt: skip


def test_frozen_gpt2_site_names(zoo):
    model = zoo("gpt2")
    assert (model.n_layers, model.n_heads) == (2, 2)
    assert model.sites("head").to_list() == GPT2_HEADS
    assert model.sites("layer").to_list() == GPT2_LAYERS
    assert model.sites("head", layers=[-1]).to_list() == GPT2_HEADS[2:]
    assert model.sites("head", groups=["last"]).to_list() == GPT2_HEADS


def test_frozen_vit_site_names(zoo):
    assert zoo("vit").sites("head").to_list() == VIT_HEADS
    assert zoo("vit").sites("head", groups=["cls"]).to_list() == VIT_HEADS[::2]


def test_frozen_vit_mae_site_names(zoo):
    model = zoo("vit_mae")
    assert model.sites("head").to_list() == VIT_MAE_HEADS
    assert model.sites("head", stream="dec").to_list() == VIT_MAE_HEADS[8:]
    assert model.sites("layer", groups=["cls"]).to_list() == [
        "enc.L0@cls",
        "enc.L1@cls",
        "dec.L0@cls",
    ]
    with pytest.raises(SiteError, match="no stream"):
        model.sites("head", stream="main")
