"""The same patching guarantees on a CUDA device (skipped where there is none).

Run on a GPU machine with ``pytest -m cuda``; ``benchmarks/gpu.py`` measures the costs there.
"""

from __future__ import annotations

import pytest
import torch

import nnvtv

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]


@pytest.mark.parametrize("name", ["gpt2", "llama"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_patched_run_matches_raw_hook_reference_on_cuda(kit, tokenizer, name, dtype):
    module = kit.FAMILIES[name].build(0).to("cuda", dtype)
    model = nnvtv.wrap(module, tokenizer)
    ids = torch.tensor([[4, 5, 6, 7], [8, 9, 10, 11]])
    site = nnvtv.Site(1, 1, "last")
    value = torch.randn(1, model.head_dim, generator=torch.Generator().manual_seed(0))
    got = model.run({"input_ids": ids}, nnvtv.Patch({site: value}), readout=True)
    assert got.device.type == "cuda" and got.dtype == dtype
    d = model.head_dim

    def pre(mod, args):
        x = args[0].clone()
        x[:, -1, d : 2 * d] = value[0].to(x)
        return (x, *args[1:])

    handle = module.get_submodule(model.site_path(site)).register_forward_pre_hook(pre)
    try:
        with torch.no_grad():
            ref = module(input_ids=ids.cuda()).logits[:, -1]
    finally:
        handle.remove()
    torch.testing.assert_close(got, ref)


def test_run_masks_rows_equal_single_patched_runs_on_cuda(kit, tokenizer):
    module = kit.FAMILIES["llama"].build(0).to("cuda")
    model = nnvtv.wrap(module, tokenizer)
    ids = torch.randint(4, 40, (3, 6), generator=torch.Generator().manual_seed(0))
    space = model.sites("head")
    means = nnvtv.mean_activations(model, [ids], space)
    assert next(iter(means.values())).device.type == "cpu"  # means live on the CPU, in float32
    masks = torch.rand(5, len(space), generator=torch.Generator().manual_seed(1)) < 0.4
    out = nnvtv.run_masks(model, ids, means, space, masks)
    assert out.device.type == "cuda"
    for b in range(len(masks)):
        single = model.run(ids, means.patch(space.select(masks[b])), readout=True)
        torch.testing.assert_close(out[b], single, atol=1e-4, rtol=1e-4)
