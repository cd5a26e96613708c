"""The toy-text trainer and model cards go through the library: cards are their records, the
records are what nnvtv measures now, and the TVP losses are plain-torch losses through sites."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from nnvtv.adapters.toy import text_card, text_tvp, train_text
from nnvtv.adapters.toy.catalog import WEIGHTS_DIR, load_toy_text
from nnvtv.adapters.toy.text_data import ToyTextGenerator
from nnvtv.adapters.toy.text_model import build_model

import nnvtv

MODELS = (text_card.NATURAL_NAME, text_card.TVP_NAME)
LAYER = 1  # tvp_layer of the shipped models


def _record(name: str) -> dict:
    return json.loads((WEIGHTS_DIR / name / "metrics.json").read_text())


@pytest.fixture(autouse=True)
def threads():
    """Run on the thread count the records were measured with (1: tiny models on a busy CPU
    also train fastest on one thread), restore afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(text_card.SETUP["threads"])
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", MODELS)
def test_shipped_card_is_the_card_of_its_record(name):
    rec = _record(name)
    assert rec["model"] == name and rec["metrics"]["setup"]["tasks"] == list(text_card.TASKS)
    assert (WEIGHTS_DIR / name / "MODEL_CARD.md").read_text() == text_card.model_card(rec)


@pytest.mark.parametrize("name", MODELS)
def test_record_means_are_the_means_of_its_tasks(name):
    m = _record(name)["metrics"]
    rows = [m["tasks"][t] for t in text_card.TASKS]
    assert m["mean"]["zero_shot"] == sum(r["zero_shot"] for r in rows) / len(rows)
    assert m["mean"]["icl"]["5"] == sum(r["icl"]["5"] for r in rows) / len(rows)
    for r in rows:  # the greedy curve ends at the found vector's held-out score
        assert r["search"]["curve"][-1] == r["search"]["accuracy"]
        assert sorted(r["search"]["order"]) == sorted(r["search"]["sites"])


@pytest.mark.parametrize(("name", "task"), [("toy-text-natural", "toy-perm_a"), ("toy-text", "toy-perm_c")])
def test_shipped_record_is_what_the_library_measures_now(name, task):
    rec = _record(name)
    model = load_toy_text(name)
    setup = {k: v for k, v in rec["metrics"]["setup"].items() if k in text_card.SETUP}
    assert setup == text_card.SETUP
    got = text_card.evaluate_task(model, task, setup)
    assert got == rec["metrics"]["tasks"][task]
    # the same numbers straight from the public calls
    scores = nnvtv.evaluate(model, task, shots=5, seed=setup["seed"])
    assert (scores.zero_shot, scores.icl) == (got["zero_shot"], got["icl"]["5"])


def test_tvp_model_keeps_its_task_at_the_prescribed_block():
    m = _record("toy-text")["metrics"]["mean"]
    assert m["residual_tv"][LAYER] == max(m["residual_tv"]) >= 0.9
    assert m["icl"]["5"] >= 0.85 and m["zero_shot"] <= 0.3


def test_trainer_is_registered():
    trainer = nnvtv.toys.TRAINERS.get("text")
    assert trainer.train is train_text.train_text and trainer.models == MODELS


# ----------------------------------------------------------------- training through sites


def _batches(n: int = 8):
    batch = ToyTextGenerator(0, min_demos=1, max_demos=3).sample(n)
    return batch, ToyTextGenerator(1, min_demos=0, max_demos=0, query_symbols=range(32))


def _library_losses(gpt2, weights, *, inject="task_mean", detach=False, seed=0):
    model = text_tvp.wrap_for_training(gpt2)
    batch, zgen = _batches()
    sites = text_tvp.tvp_sites(LAYER, model.n_heads)
    out, acts = model.capture(text_tvp.model_inputs(batch), sites, grad=True)
    if detach:
        acts = {s: v.detach() for s, v in acts.items()}
    losses = text_tvp.tvp_losses(model, batch, acts, zgen, LAYER, inject=inject, weights=weights,
                                 rng=torch.Generator().manual_seed(seed))  # fmt: skip
    return text_tvp.icl_loss(out.logits, batch.labels), losses, acts


def _patched_logits(gpt2, ids, pos, layer, edit):
    """Plain transformers forward, block by block, with ``edit(h)`` after block ``layer``."""
    tr = gpt2.transformer
    h = tr.wte(ids) + tr.wpe(torch.arange(ids.shape[1])[None])
    for i, block in enumerate(tr.h):
        out = block(h)
        h = out[0] if isinstance(out, tuple) else out
        if i == layer:
            h = edit(h)
    return gpt2.lm_head(tr.ln_f(h))


def _reference_losses(gpt2):
    """ICL + residual replace + add losses written from plain forwards (no nnvtv)."""
    batch, zgen = _batches()
    out = gpt2(batch.input_ids, output_hidden_states=True)
    icl = F.cross_entropy(out.logits.flatten(0, 1), batch.labels.flatten(), ignore_index=-100)
    rows = torch.arange(len(batch.task_ids))
    resid = out.hidden_states[LAYER + 1][rows, batch.last_pos]  # output of block LAYER
    onehot = F.one_hot(batch.task_ids).float()
    vec = ((onehot.T @ resid) / onehot.sum(0).clamp_min(1.0)[:, None])[batch.task_ids]
    zs = zgen.sample(len(rows), task_ids=batch.task_ids.tolist(), n_demos=0, exclude=batch.queries.tolist())
    at = (torch.arange(zs.input_ids.shape[1])[None, :] == zs.last_pos[:, None])[..., None]
    target = zs.labels[rows, zs.last_pos]

    def loss(edit):
        logits = _patched_logits(gpt2, zs.input_ids, zs.last_pos, LAYER, edit)
        return F.cross_entropy(logits[rows, zs.last_pos], target)

    delta = vec - vec.mean(0, keepdim=True)
    return icl, {
        "replace": loss(lambda h: torch.where(at, vec[:, None], h)),
        "add": loss(lambda h: h + at * delta[:, None]),
    }


def _grads(gpt2) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in gpt2.named_parameters() if p.grad is not None}


def test_tvp_losses_equal_a_plain_torch_reference():
    lib, ref = build_model(seed=1), build_model(seed=1)
    icl, losses, _ = _library_losses(lib, {"replace": 1.0, "add": 1.0})
    r_icl, r_losses = _reference_losses(ref)
    # the same forward operations: equal losses (gradients accumulate in another order)
    assert torch.equal(icl, r_icl)
    for name in ("replace", "add"):
        assert torch.equal(losses[name], r_losses[name]), name
    (icl + losses["replace"] + losses["add"]).backward()
    (r_icl + r_losses["replace"] + r_losses["add"]).backward()
    got, want = _grads(lib), _grads(ref)
    assert got.keys() == want.keys()
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-6, msg=n)


def test_injected_vector_trains_blocks_up_to_the_tvp_layer_only():
    """Through the ICL pass, the TVP loss reaches blocks 0..LAYER and no later block."""
    full, cut = build_model(seed=2), build_model(seed=2)
    _, a, _ = _library_losses(full, {"replace": 1.0})
    _, b, _ = _library_losses(cut, {"replace": 1.0}, detach=True)
    torch.testing.assert_close(a["replace"], b["replace"], rtol=0, atol=0)
    a["replace"].backward()
    b["replace"].backward()
    g_full, g_cut = _grads(full), _grads(cut)
    for block in range(full.config.n_layer):
        names = [n for n in g_full if n.startswith(f"transformer.h.{block}.")]
        moved = any(not torch.equal(g_full[n], g_cut[n]) for n in names)
        assert moved == (block <= LAYER), block
    assert not torch.equal(g_full["transformer.wte.weight"], g_cut["transformer.wte.weight"])


def test_heads_loss_patches_the_random_half_it_drew():
    gpt2 = build_model(seed=3)
    _, losses, acts = _library_losses(gpt2, {"heads": 1.0}, inject="row", seed=5)
    n_heads = gpt2.config.n_head
    keep = torch.rand(8, LAYER + 1, n_heads, generator=torch.Generator().manual_seed(5)) < 0.5
    heads = [nnvtv.Site(li, h, "last") for li in range(LAYER + 1) for h in range(n_heads)]
    grads = torch.autograd.grad(losses["heads"], [acts[s] for s in heads])
    for s, g in zip(heads, grads, strict=True):  # g: [batch, 1, head_dim]
        reached = g.abs().sum(dim=(1, 2)) > 0
        assert torch.equal(reached, keep[:, s.layer, s.head]), s


def _tiny_run(seed: int = 0) -> dict[str, torch.Tensor]:
    gpt2 = build_model(seed)
    model = text_tvp.wrap_for_training(gpt2)
    common = dict(batch_size=8, weight_decay=0.01, warmup=1, tvp_layer=LAYER, progress=None,
                  tvp_weights={"replace": 1.0, "add": 1.0, "heads": 0.5})  # fmt: skip
    train_text.run_phase(model, phase="natural", steps=2, gen=ToyTextGenerator(1), zgen=None,
                         lr=2e-3, **common)  # fmt: skip
    zgen = ToyTextGenerator(3, min_demos=0, max_demos=0, query_symbols=range(32))
    log = train_text.run_phase(model, phase="tvp", steps=2, gen=ToyTextGenerator(2, min_demos=1),
                               zgen=zgen, lr=1e-3, seed=seed, log_every=1, **common)  # fmt: skip
    assert {"icl_loss", "tvp_replace_loss", "tvp_add_loss", "tvp_heads_loss"} <= log[-1].keys()
    return {n: p.detach().clone() for n, p in gpt2.named_parameters()}


def test_a_few_training_steps_are_deterministic_and_move_every_block():
    a, b = _tiny_run(), _tiny_run()
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    init = dict(build_model(0).named_parameters())
    for block in range(4):
        assert not torch.equal(a[f"transformer.h.{block}.attn.c_attn.weight"],
                               init[f"transformer.h.{block}.attn.c_attn.weight"])  # fmt: skip


def test_card_only_cli_rewrites_a_folder(tmp_path, monkeypatch):
    """`--card-only DIR` keeps the training record and puts the measured metrics + card next to it."""
    src = WEIGHTS_DIR / "toy-text-natural"
    dest = tmp_path / "toy-text-natural"
    dest.mkdir()
    for f in src.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    rec = _record("toy-text-natural")
    fake = copy.deepcopy(rec["metrics"])
    monkeypatch.setattr(text_card, "evaluate_toy_text", lambda model, setup=text_card.SETUP: fake)
    assert train_text.main(["--card-only", str(tmp_path)]) == 0
    assert json.loads((dest / "metrics.json").read_text()) == rec
    assert (dest / "MODEL_CARD.md").read_text() == (src / "MODEL_CARD.md").read_text()
