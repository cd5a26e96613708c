"""The toy-visual trainer's MAE phase on a tiny run: deterministic, and its task-vector-prompting
(TVP) loss, which runs through the library's site definition (``Model.capture`` of the ICL
episodes' CLS head outputs at encoder block ``tvp_layer``, ``Model.run`` of their zero-shot twins
with those values patched in), backpropagates into the ICL forward exactly up to that point."""

from __future__ import annotations

import pytest
import torch
from nnvtv.adapters.mae_vqgan import train_toy
from nnvtv.adapters.mae_vqgan.config import toy
from nnvtv.adapters.mae_vqgan.model import MaeVqgan

import nnvtv
from nnvtv.canvas import CanvasGeometry

TVP_LAYER = 1


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def episodes():
    cfg = toy()
    geometry = CanvasGeometry(size=cfg.img_size, patch=cfg.patch_size, gap=2)
    canv, _ = train_toy.make_episodes(16, 0, geometry)
    torch.manual_seed(0)
    codes = train_toy.encode_codes(MaeVqgan(cfg).eval(), canv)  # an untrained VQGAN's codes will do
    return canv, codes, geometry


def _model() -> MaeVqgan:
    torch.manual_seed(0)
    model = MaeVqgan(toy())
    for p in model.vae.parameters():  # as train_visual does before the MAE phase
        p.requires_grad_(False)
    return model.train()


def _train(episodes, model: MaeVqgan, *, steps: int = 3, tvp_batch: int = 2) -> list[dict]:
    canv, codes, geometry = episodes
    log: list[dict] = []
    train_toy.train_mae(model, canv, codes, geometry, steps=steps, batch=4, zs_batch=2, lr=1e-3,
                        gen=torch.Generator().manual_seed(0), log=log, tvp_batch=tvp_batch, tvp_from=0.0,
                        tvp_layer=TVP_LAYER)
    return log


def test_tiny_tvp_run_is_deterministic_and_the_tvp_term_counts(episodes):
    a, b, natural = _model(), _model(), _model()
    vae_before = {k: v.clone() for k, v in a.vae.state_dict().items()}
    log_a, log_b = _train(episodes, a), _train(episodes, b)
    _train(episodes, natural, tvp_batch=0)
    assert log_a == log_b and all(r["tvp_ce"] is not None for r in log_a)
    sa, sb, sn = a.state_dict(), b.state_dict(), natural.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sn[k]) for k in sa if not k.startswith("vae."))  # TVP changed the weights
    assert all(torch.equal(v, sa[f"vae.{k}"]) for k, v in vae_before.items())  # the VQGAN is not trained here
    assert a.training  # wrap puts the module in eval mode; the trainer switches it back


def _step_grads(episodes, monkeypatch, *, cut: bool) -> dict[str, torch.Tensor | None]:
    """Gradients of one training step (all its loss terms), read where the trainer clips them;
    ``cut``: the captured task vector is detached, so the TVP term reaches only its zero-shot forward."""
    model = _model()
    names = {id(p): n for n, p in model.named_parameters()}
    seen: dict[str, torch.Tensor | None] = {}
    clip = torch.nn.utils.clip_grad_norm_

    def spy(params, *args, **kwargs):
        params = list(params)
        seen.update({names[id(p)]: None if p.grad is None else p.grad.clone() for p in params})
        return clip(params, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    if cut:
        capture = nnvtv.Model.capture

        def detached(self, *args, **kwargs):
            out, values = capture(self, *args, **kwargs)
            return out, {s: v.detach() for s, v in values.items()}

        monkeypatch.setattr(nnvtv.Model, "capture", detached)
    _train(episodes, model, steps=1)
    monkeypatch.undo()
    seen.update({n: p.grad for n, p in model.named_parameters() if n.startswith("vae.")})
    return seen


def _before_capture(name: str) -> bool:
    """Parameters the CLS head outputs of encoder block TVP_LAYER depend on (the ``attn.proj`` input)."""
    if name in ("cls_token", "pos_embed") or name.startswith("patch_embed."):
        return True
    if name.startswith("blocks."):
        i, rest = int(name.split(".")[1]), name.split(".", 2)[2]
        return i < TVP_LAYER or (i == TVP_LAYER and rest.startswith(("norm1.", "attn.qkv.")))
    return False


def test_the_tvp_loss_reaches_the_icl_forward_up_to_the_capture_point(episodes, monkeypatch):
    full = _step_grads(episodes, monkeypatch, cut=False)
    cut = _step_grads(episodes, monkeypatch, cut=True)
    assert all(g is None for n, g in full.items() if n.startswith("vae."))  # the VQGAN gets no gradient at all
    mae = [n for n in full if not n.startswith("vae.")]
    assert all(full[n] is not None and full[n].abs().sum() > 0 for n in mae)  # every MAE weight learns
    # the difference is the TVP term's path through the captured values into the ICL forward
    reached = {n for n in mae if not torch.allclose(full[n], cut[n], rtol=1e-5, atol=1e-9)}
    expected = {n for n in mae if _before_capture(n)}
    assert reached == expected
    assert {f"blocks.{i}.attn.qkv.weight" for i in range(TVP_LAYER + 1)} <= reached
    assert f"blocks.{TVP_LAYER}.attn.proj.weight" not in reached
