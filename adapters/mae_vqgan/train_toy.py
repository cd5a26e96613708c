"""Train ``toy-visual``: a small MAE-VQGAN on procedurally generated canvases of four task families.

Reproducible (seeded, CPU-deterministic) and cheap: ``nnvtv train-toy visual --out DIR`` or
``python -m nnvtv.adapters.mae_vqgan.train_toy --out DIR``. Two phases, as the real model:

1. the VQGAN (f4, 256 codes) learns to reconstruct canvases (pixel MSE + VQ loss, dead codes
   re-seeded from encoder outputs);
2. the MAE learns to predict the VQGAN codes of the masked answer quadrant (cross-entropy),
   on ICL canvases and, for a quarter of each batch, on the zero-shot layout (example
   quadrants dropped) -- so zero-shot is the model's best guess without the example.

Every episode draws a *latent* that the example pair reveals and the query does not (which
shape class is foreground; restore / keep / invert a darkened image; restore the hole or fill
it with a colour; the colorization palette) -- see :mod:`nnvtv.tasks.visual`.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nnvtv.canvas import CanvasGeometry, make_canvas, normalize
from nnvtv.errors import ConfigError
from nnvtv.tasks.procedural import FAMILIES, LATENTS, PALETTES, SHAPES, hole_origin, render_pair
from nnvtv.toys import ToyTrainer, warmup_cosine

from .adapter import layout
from .checkpoint import save_checkpoint
from .config import toy
from .model import MaeVqgan

__all__ = ["make_episodes", "train_visual", "evaluate_toy", "main"]

EPISODE_SEED_BASE = 50_000_000  # far from the named tasks' pair seeds (0 .. 511)


#: the latents each family trains on by default (the shipped weights'): colorization the fixed
#: iso-luma palettes (not "random"); in-painting restore or fill (``"keep"`` is available, see
#: :func:`train_visual`'s ``latents``)
TRAINING_LATENTS: dict[str, tuple[Any, ...]] = {
    "segmentation": SHAPES,
    "low-light": ("restore", "keep", "invert"),
    "inpainting": ("restore", "fill-red", "fill-green", "fill-blue"),
    "colorization": tuple(range(len(PALETTES))),
}

#: share of training episodes per family (segmentation, the hardest to learn, gets the most)
FAMILY_WEIGHTS = {"segmentation": 0.4, "low-light": 0.15, "inpainting": 0.25, "colorization": 0.2}


def resolve_latents(latents: dict[str, Any] | None = None) -> dict[str, tuple[Any, ...]]:
    """:data:`TRAINING_LATENTS` with the families in ``latents`` replaced (each a non-empty
    sequence of that family's :data:`~nnvtv.tasks.visual.LATENTS`)."""
    out = dict(TRAINING_LATENTS)
    for family, options in (latents or {}).items():
        if family not in FAMILIES:
            raise ConfigError(f"unknown visual task family {family!r}; one of {FAMILIES}")
        options = tuple(options)
        bad = [x for x in options if x not in LATENTS[family] or x == "random"]
        if not options or bad:
            raise ConfigError(f"{family} training latents must be a non-empty list of {[x for x in LATENTS[family] if x != 'random']}, "
                              f"got {list(options)}")
        out[family] = options
    return out


def resolve_family_weights(family_weights: dict[str, float] | None = None) -> dict[str, float]:
    """:data:`FAMILY_WEIGHTS`, or ``family_weights`` (every family, non-negative, some positive)."""
    if family_weights is None:
        return dict(FAMILY_WEIGHTS)
    w = {f: float(family_weights.get(f, -1.0)) for f in FAMILIES}
    if set(family_weights) - set(FAMILIES) or min(w.values()) < 0 or sum(w.values()) <= 0:
        raise ConfigError(f"family weights need a non-negative weight for each of {FAMILIES} (some positive), "
                          f"got {family_weights}")
    return w


def make_episodes(
    n: int, seed: int, geometry: CanvasGeometry, family_weights: dict[str, float] | None = None, *,
    latents: dict[str, Any] | None = None, shared_hole: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` training canvases ``uint8 [n, 3, S, S]`` (answer cell = ground truth) and family ids ``[n]``.

    Episodes come in twins: ``2k`` and ``2k + 1`` share family and latent (different images).
    Families are drawn with ``family_weights`` (default :data:`FAMILY_WEIGHTS`), latents uniformly
    from ``latents`` (see :func:`resolve_latents`), so that no named task's latent is the most
    frequent. ``shared_hole``: an in-painting canvas masks the same square position in its
    example and its query (the official task-vector code's shared-random variant), instead of a
    position per image.
    """
    w = resolve_family_weights(family_weights)
    options = resolve_latents(latents)
    probs = np.array([w[f] for f in FAMILIES], dtype=np.float64)
    probs /= probs.sum()
    rng = np.random.default_rng(seed)
    canv = torch.empty(n, 3, geometry.size, geometry.size, dtype=torch.uint8)
    fam = torch.empty(n, dtype=torch.long)
    f, lat = 0, None
    for i in range(n):
        if i % 2 == 0:
            f = int(rng.choice(len(FAMILIES), p=probs))
            lat = options[FAMILIES[f]][int(rng.integers(len(options[FAMILIES[f]])))]
        s = EPISODE_SEED_BASE + seed * 10_000_000 + 2 * i
        hole: Any = "random"
        if shared_hole and FAMILIES[f] == "inpainting":  # own stream: the other families' episodes stay as they are
            hole = hole_origin(geometry.cell, "random", np.random.default_rng([s, 1]))
        ex = render_pair(FAMILIES[f], lat, s, geometry.cell, hole=hole)
        q = render_pair(FAMILIES[f], lat, s + 1, geometry.cell, hole=hole)
        c = make_canvas(*ex, *q, geometry=geometry, background=1.0)
        canv[i] = (c * 255).round().to(torch.uint8)
        fam[i] = f
    return canv, fam


def change_weights(canv: torch.Tensor, geometry: CanvasGeometry, weight: float, *, tol: float = 4 / 255) -> torch.Tensor:
    """Per-code loss weights ``[N, M]`` for the ``M`` answer patches of canvases ``uint8 [N, 3, S, S]``.

    A patch whose pixels differ anywhere (by more than ``tol``) between the answer cell and the
    query input (the answer a model that copied its query would give) weighs ``1 + weight``, the
    others 1; each canvas's weights are then scaled to mean 1, so every episode keeps its share of
    the loss. Where the answer mostly copies the query (in-painting: all but the hole, ~7% of the
    pixels), the few codes that carry the task would otherwise drown among the copied ones; where
    every patch changes (segmentation, colorization) the weights stay uniform.
    """
    o, c, p = geometry.origin, geometry.cell, geometry.patch
    half = geometry.size // 2
    answer = canv[..., o : o + c, o : o + c].float()
    query = canv[..., o : o + c, 0:c].float()
    diff = torch.zeros(canv.shape[0], half, half)
    a = geometry.answer_offset  # the answer cell sits this many pixels into its patch block
    diff[:, a : a + c, a : a + c] = ((answer - query).abs().amax(1) > tol * 255).float()
    changed = diff.reshape(-1, half // p, p, half // p, p).amax((2, 4)).flatten(1)  # [N, M]
    w = 1.0 + weight * changed
    return w / w.mean(1, keepdim=True)


def _batch(canv: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return canv[idx].float() / 255


def train_vqgan(model: MaeVqgan, canv: torch.Tensor, *, steps: int, batch: int, lr: float, gen: torch.Generator, log: list,
                block_weight: float = 1.0) -> dict:
    """Pixel MSE + VQ loss on whole canvases, plus (``block_weight``) the MSE of the answer
    quadrant's code block decoded *on its own*: the readout renders only that block, and a
    conv decoder that never saw a 4 x 4 code grid in isolation paints junk along its borders."""
    vae = model.vae
    opt = torch.optim.Adam(vae.parameters(), lr=lr, betas=(0.5, 0.9))
    n = canv.shape[0]
    grid, patch = model.config.grid, model.config.patch_size
    b0 = grid - grid // 2  # first code row/column of the answer block
    t0, c0 = time.perf_counter(), time.process_time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = warmup_cosine(step, steps, lr, 50)
        x = _batch(canv, torch.randint(n, (batch,), generator=gen)) * 2 - 1
        z = vae.encode_features(x)
        zq, vq_loss, ids = vae.quantize(z)
        rec = vae.decode(zq)
        loss = F.mse_loss(rec, x) + vq_loss
        if block_weight:
            blk = vae.decode(zq[:, :, b0:, b0:])
            loss = loss + block_weight * F.mse_loss(blk, x[:, :, b0 * patch :, b0 * patch :])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 and step < steps * 0.8:  # re-seed dead codes from current encoder outputs
            with torch.no_grad():
                used = torch.bincount(ids.flatten(), minlength=vae.quantize.n_embed)
                dead = (used == 0).nonzero().flatten()
                if len(dead):
                    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
                    pick = torch.randint(flat.shape[0], (len(dead),), generator=gen)
                    vae.quantize.embedding.weight[dead] = flat[pick]
        if step % 100 == 0 or step == steps - 1:
            rec_mse = float(F.mse_loss(rec.detach(), x)) / 4  # in [0, 1] pixel units
            log.append({"phase": "vqgan", "step": step, "loss": round(loss.item(), 5), "rec_mse01": round(rec_mse, 5)})
            print(json.dumps(log[-1]), flush=True)
    return {"seconds": round(time.perf_counter() - t0, 1), "cpu_seconds": round(time.process_time() - c0, 1)}


@torch.no_grad()
def encode_codes(model: MaeVqgan, canv: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    return torch.cat([model.target_codes(_batch(canv, torch.arange(i, min(i + chunk, len(canv))))) for i in range(0, len(canv), chunk)])


def _block(blk: torch.nn.Module, x: torch.Tensor, inject: torch.Tensor | None, capture: list | None) -> torch.Tensor:
    """``Block.forward`` written out so the CLS head outputs (``attn.proj`` input at position 0,
    ``[B, heads*head_dim]``) can be captured or replaced. Training only."""
    h = blk.norm1(x)
    a = blk.attn
    b, t, c = h.shape
    qkv = a.qkv(h).reshape(b, t, 3, a.heads, c // a.heads).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(b, t, c)
    if capture is not None:
        capture.append(o[:, 0])
    if inject is not None:
        o = torch.cat([inject[:, None], o[:, 1:]], dim=1)
    x = x + a.proj(o)
    return x + blk.mlp(blk.norm2(x))


def _encode(model: MaeVqgan, imgs: torch.Tensor, visible: torch.Tensor, layer: int, inject: torch.Tensor | None = None,
            capture: list | None = None) -> torch.Tensor:
    x = model.patch_embed(imgs) + model.pos_embed[:, 1:]
    x = torch.gather(x, 1, visible[..., None].expand(-1, -1, x.shape[-1]))
    x = torch.cat([(model.cls_token + model.pos_embed[:, :1]).expand(x.shape[0], -1, -1), x], dim=1)
    for i, blk in enumerate(model.blocks):
        x = _block(blk, x, inject if i == layer else None, capture if i == layer else None)
    return model.norm(x)


def train_mae(
    model: MaeVqgan, canv: torch.Tensor, codes: torch.Tensor, geometry: CanvasGeometry, *,
    steps: int, batch: int, zs_batch: int, lr: float, gen: torch.Generator, log: list,
    tvp_batch: int = 0, tvp_from: float = 0.5, tvp_layer: int = 1,
    code_weights: torch.Tensor | None = None,
) -> dict:
    """Cross-entropy on the answer codes of ICL canvases (``batch``) and zero-shot prompts
    (``zs_batch``). From ``tvp_from * steps`` on, a task-vector-prompting loss: the encoder
    block ``tvp_layer`` CLS head outputs of an ICL episode replace those of the zero-shot
    forward of its twin (same family and latent), which must then predict the twin's answer.

    ``code_weights [N, M]`` (see :func:`change_weights`) weigh each answer code's cross-entropy;
    ``None``: uniform."""
    params = [p for n, p in model.named_parameters() if not n.startswith("vae.") and p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05, betas=(0.9, 0.95))
    lays = {zs: layout(geometry, zs) for zs in (False, True)}
    target = lays[False]["target"]  # the answer patches, the same in both layouts

    def ce(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        y = codes[idx][:, target].flatten()
        if code_weights is None:
            return F.cross_entropy(logits.flatten(0, 1), y)
        w = code_weights[idx].flatten()
        return (F.cross_entropy(logits.flatten(0, 1), y, reduction="none") * w).sum() / w.sum()

    n = canv.shape[0]
    t0, c0 = time.perf_counter(), time.process_time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = warmup_cosine(step, steps, lr, 100)
        losses = []
        tvp_on = tvp_batch > 0 and step >= tvp_from * steps
        captured: list[torch.Tensor] = []
        idx_icl = None
        for zs, b in ((False, batch), (True, zs_batch)):
            if b == 0:
                continue
            idx = torch.randint(n, (b,), generator=gen)
            lay = lays[zs]
            vis = torch.tensor(lay["visible"]).expand(b, -1)
            tgt = torch.tensor(lay["target"]).expand(b, -1)
            imgs = normalize(_batch(canv, idx))
            if not zs and tvp_on:
                idx_icl = idx
                logits = model.decode_tokens(_encode(model, imgs, vis, tvp_layer, capture=captured), vis, tgt)
            else:
                logits = model(imgs, vis, tgt)
            losses.append((ce(logits, idx), b))
        loss = sum(v * b for v, b in losses) / sum(b for _, b in losses)
        tvp_loss = None
        if tvp_on and idx_icl is not None:
            k = min(tvp_batch, len(idx_icl))
            twin = idx_icl[:k] ^ 1
            lay = lays[True]
            vis = torch.tensor(lay["visible"]).expand(k, -1)
            tgt = torch.tensor(lay["target"]).expand(k, -1)
            latent = _encode(model, normalize(_batch(canv, twin)), vis, tvp_layer, inject=captured[0][:k])
            logits = model.decode_tokens(latent, vis, tgt)
            tvp_loss = ce(logits, twin)
            loss = loss + tvp_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log.append({"phase": "mae", "step": step, "loss": round(loss.item(), 4),
                        "icl_ce": round(losses[0][0].item(), 4), "zs_ce": round(losses[-1][0].item(), 4),
                        "tvp_ce": None if tvp_loss is None else round(tvp_loss.item(), 4)})
            print(json.dumps(log[-1]), flush=True)
    return {"seconds": round(time.perf_counter() - t0, 1), "cpu_seconds": round(time.process_time() - c0, 1)}


def evaluate_toy(model: MaeVqgan, *, seed: int = 0, n_mean_prompts: int = 64) -> dict[str, Any]:
    """Held-out zero-shot / one-shot scores of the four named tasks, and the gap closed by
    replacing every head output (all sites) with its ICL mean."""
    import nnvtv
    from nnvtv.tasks import get as get_task

    from .adapter import MAE_VQGAN

    m = nnvtv.wrap(model, adapter=MAE_VQGAN, name="toy-visual")
    out: dict[str, Any] = {}
    for name in ("segmentation", "low-light", "inpainting", "colorization"):
        task = get_task(name)
        s = nnvtv.evaluate(m, task, seed=seed)
        split = task.split(seed)
        queries = [split.train[i % len(split.train)] for i in range(n_mean_prompts)]
        icl = task.icl(m, queries, split.train, shots=1, seed=seed)
        means = nnvtv.mean_activations(m, [icl.inputs], m.sites("head"))
        zs = task.zero_shot(m, split.test)
        all_heads = float(task.score(m.run(zs.inputs, means.patch(), readout=True), zs.targets).mean())
        gap = s.icl - s.zero_shot
        out[name] = {
            "metric": task.metric, "zero_shot": round(s.zero_shot, 4), "icl_1shot": round(s.icl, 4),
            "all_heads_mean_patch": round(all_heads, 4),
            "all_heads_gap_closed": round((all_heads - s.zero_shot) / gap, 3) if gap else None,
        }
    return out


#: the issue's bars, checked by ``tests/test_toy_visual.py`` on the shipped weights: one-shot
#: "clearly beats" zero-shot (IoU up by this much; MSE down to this fraction), and a searched
#: task vector closes at least this share of the zero-shot -> one-shot gap
MIN_IOU_GAIN = 0.15
MAX_MSE_RATIO = 0.9
MIN_GAP_CLOSED = 0.5
TASKS = ("segmentation", "low-light", "inpainting", "colorization")


def one_shot_gain(metric: str, zero_shot: float, icl: float) -> float:
    """How much better one-shot scores than zero-shot (positive = better; IoU is higher-better, MSE lower-better)."""
    return icl - zero_shot if metric == "iou" else zero_shot - icl


def one_shot_clearly_better(metric: str, zero_shot: float, icl: float) -> bool:
    """The one-shot bar: ``icl - zero_shot >= MIN_IOU_GAIN`` (IoU) or ``icl <= MAX_MSE_RATIO * zero_shot`` (MSE)."""
    return one_shot_gain(metric, zero_shot, icl) >= MIN_IOU_GAIN if metric == "iou" else icl <= MAX_MSE_RATIO * zero_shot


def search_report(model: MaeVqgan, *, budget: int = 1024, seed: int = 0) -> dict[str, Any]:
    """REINFORCE search (``budget`` forward passes) per named task on the trained model: held-out
    zero-shot / one-shot / task-vector scores, gap closed, sites, and seconds."""
    import nnvtv

    from .adapter import MAE_VQGAN

    m = nnvtv.wrap(model, adapter=MAE_VQGAN, name="toy-visual")
    out: dict[str, Any] = {"strategy": "reinforce", "budget": budget, "seed": seed, "tasks": {}}
    for name in TASKS:
        t, c = time.perf_counter(), time.process_time()
        r = nnvtv.find(m, name, strategy="reinforce", budget=budget, seed=seed)
        sc = r.scores
        out["tasks"][name] = {
            "metric": sc.metric, "zero_shot": round(sc.zero_shot, 4), "icl": round(sc.icl, 4),
            "task_vector": round(float(sc.task_vector), 4), "gap_closed": None if sc.gap_closed is None else round(sc.gap_closed, 3),
            "n_sites": r.n_sites, "total_sites": len(r.space), "sites": [str(x) for x in r.task_vector.sites],
            "seconds": round(time.perf_counter() - t, 1), "cpu_seconds": round(time.process_time() - c, 1),
        }
        print(json.dumps({"search": name, **{k: v for k, v in out["tasks"][name].items() if k != "sites"}}), flush=True)
    return out


def train_visual(
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_episodes: int = 8000,
    vq_steps: int = 1100,
    vq_batch: int = 32,
    mae_steps: int = 2700,
    batch: int = 48,
    zs_batch: int = 16,
    tvp_batch: int = 32,
    tvp_from: float = 0.5,
    tvp_layer: int = 1,
    family_weights: dict[str, float] | None = None,
    latents: dict[str, Any] | None = None,
    shared_hole: bool = False,
    change_weight: float = 0.0,
    lr: float = 1.5e-3,
    threads: int = 1,
    search_budget: int = 1024,
) -> dict[str, Any]:
    """Train both phases, evaluate, run a REINFORCE search per task (``search_budget`` forward
    passes; 0 skips it), and write ``model.safetensors``, ``config.json``, ``metrics.json``,
    ``search.json`` and ``MODEL_CARD.md`` to ``out_dir``. Returns the metrics record.

    The defaults are the shipped weights' recipe. ``family_weights``, ``latents`` (per family,
    e.g. ``{"inpainting": ("restore", "keep")}``) and ``shared_hole`` change the episodes (see
    :func:`make_episodes`); ``change_weight`` weighs the answer codes that differ from the query
    (:func:`change_weights`)."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg = toy()
    geometry = CanvasGeometry(size=cfg.img_size, patch=cfg.patch_size, gap=2)
    log: list[dict] = []
    t_all, c_all = time.perf_counter(), time.process_time()
    t, c = time.perf_counter(), time.process_time()
    weights, options = resolve_family_weights(family_weights), resolve_latents(latents)
    canv, fam = make_episodes(n_episodes, seed, geometry, weights, latents=options, shared_hole=shared_hole)
    timing = {"data": {"seconds": round(time.perf_counter() - t, 1), "cpu_seconds": round(time.process_time() - c, 1)}}
    print(json.dumps({"episodes": n_episodes, **timing["data"]}), flush=True)
    model = MaeVqgan(cfg)
    model.train()
    timing["vqgan"] = train_vqgan(model, canv, steps=vq_steps, batch=vq_batch, lr=2e-3, gen=gen, log=log)
    model.eval()
    codes = encode_codes(model, canv)
    used = int(torch.unique(codes).numel())
    for p in model.vae.parameters():
        p.requires_grad_(False)
    model.train()
    timing["mae"] = train_mae(model, canv, codes, geometry, steps=mae_steps, batch=batch, zs_batch=zs_batch, lr=lr, gen=gen, log=log,
                               tvp_batch=tvp_batch, tvp_from=tvp_from, tvp_layer=tvp_layer,
                               code_weights=change_weights(canv, geometry, change_weight) if change_weight else None)
    model.eval()
    timing["total_training"] = {"seconds": round(time.perf_counter() - t_all, 1), "cpu_seconds": round(time.process_time() - c_all, 1)}
    t, c = time.perf_counter(), time.process_time()
    metrics = evaluate_toy(model, seed=0)
    timing["evaluate"] = {"seconds": round(time.perf_counter() - t, 1), "cpu_seconds": round(time.process_time() - c, 1)}
    search = search_report(model, budget=search_budget, seed=0) if search_budget else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    record = {
        "model": "toy-visual",
        "metrics": metrics,
        "codes_used": used,
        "hparams": {"seed": seed, "n_episodes": n_episodes, "vq_steps": vq_steps, "vq_batch": vq_batch, "mae_steps": mae_steps,
                    "batch": batch, "zs_batch": zs_batch, "tvp_batch": tvp_batch, "tvp_from": tvp_from,
                    "tvp_layer": tvp_layer, "family_weights": weights, "latents": {f: list(v) for f, v in options.items()},
                    "shared_hole": shared_hole, "change_weight": change_weight, "lr": lr, "threads": threads,
                    "search_budget": search_budget},
        "timing": timing,
        "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else "train_visual()",
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "log": log,
    }
    (out / "metrics.json").write_text(json.dumps(record, indent=1))
    if search is not None:
        (out / "search.json").write_text(json.dumps(search, indent=1))
    (out / "MODEL_CARD.md").write_text(model_card(record, search))
    print(json.dumps({"metrics": metrics, "timing": timing}), flush=True)
    return record


def _search_section(search: dict[str, Any] | None) -> str:
    if not search:
        return "## Bars\n\nNo search was run (`search_budget=0`).\n"
    rows, verdicts = [], []
    for name, r in search["tasks"].items():
        one = one_shot_clearly_better(r["metric"], r["zero_shot"], r["icl"])
        tv = one and r["gap_closed"] is not None and r["gap_closed"] >= MIN_GAP_CLOSED
        has_gap = one_shot_gain(r["metric"], r["zero_shot"], r["icl"]) > 0
        rows.append(f"| {name} | {r['zero_shot']:.4f} | {r['icl']:.4f} | {r['task_vector']:.4f} | "
                    f"{r['gap_closed'] if has_gap else '-'} | "
                    f"{r['n_sites']} / {r['total_sites']} | {r['seconds']:.0f} s |")
        verdicts.append(f"| {name} | {'met' if one else '**not met**'} | {'met' if tv else '**not met**'} |")
    b, seed = search["budget"], search["seed"]
    return f"""## Search (REINFORCE, budget {b} forward passes, seed {seed}; `search.json`)

`nnvtv.find(toy, task, strategy="reinforce", budget={b}, seed={seed})` on 16 train queries, scored
on the 32 held-out queries (same metrics as above):

| task | zero-shot | one-shot | task vector | gap closed | sites | wall |
|---|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

## Bars (checked by `tests/test_toy_visual.py`)

One-shot clearly beats zero-shot: IoU up by >= {MIN_IOU_GAIN}, or MSE down to <= {MAX_MSE_RATIO} x zero-shot.
The searched task vector closes most of that gap: gap closed >= {MIN_GAP_CLOSED}.

| task | one-shot clearly beats zero-shot | task vector closes most of the gap |
|---|---|---|
{chr(10).join(verdicts)}

A task whose bars are not met is a strict expected failure in the tests (it fails loudly once
met); the README's MAE-VQGAN section says what limits it.

Reproduce one row: `nnvtv find --model toy-visual --task low-light --strategy reinforce --budget {b} --seed {seed}`.
"""


_INPAINT_WORDS = {"restore": "restore the square", "keep": "keep it black", "fill-red": "fill it red",
                  "fill-green": "fill it green", "fill-blue": "fill it blue"}


def model_card(rec: dict[str, Any], search: dict[str, Any] | None = None) -> str:
    """The shipped ``MODEL_CARD.md`` (numbers from ``rec``, the metrics record, and ``search``,
    the :func:`search_report`)."""
    h, t, m = rec["hparams"], rec["timing"], rec["metrics"]
    rows = []
    for name, r in m.items():
        better = "higher" if r["metric"] == "iou" else "lower"
        gap = r["all_heads_gap_closed"] if one_shot_gain(r["metric"], r["zero_shot"], r["icl_1shot"]) > 0 else "-"
        rows.append(f"| {name} | {r['metric']} ({better} is better) | {r['zero_shot']:.4f} | {r['icl_1shot']:.4f} | "
                    f"{r['all_heads_mean_patch']:.4f} | {gap} |")
    tvp = (f"Yes: from step {int(h['tvp_from'] * h['mae_steps'])} of {h['mae_steps']}, a task-vector-prompting loss on "
           f"{h['tvp_batch']} zero-shot prompts per step whose encoder block {h['tvp_layer']} CLS head outputs "
           "(all heads) are replaced by those of an ICL episode with the same family and latent; the zero-shot "
           "forward must then predict the answer codes. So this model has a *prescribed* place for the task "
           f"(encoder block {h['tvp_layer']}, group `cls`): a ground-truth testbed for the search, like `toy-text`."
           if h["tvp_batch"] else "No: natural training only.")
    cw = h.get("change_weight", 0.0)
    lat = {**TRAINING_LATENTS, **h.get("latents", {})}
    fw = h.get("family_weights", FAMILY_WEIGHTS)
    where = ("; the square sits at the same place in the example and the query (the official task-vector code's "
             "shared-position variant)" if h.get("shared_hole") else "; the square's place is drawn per image")
    change = (f". An answer code whose 4 x 4 pixels differ from the query's at the same place weighs {1 + cw:g} times "
              "the others, each canvas's weights scaled to mean 1 (`change_weights`): where the answer mostly copies the "
              "query, as in in-painting (all but the hole), the few codes that carry the task would otherwise drown among "
              "the copied ones; elsewhere (segmentation, colorization) nearly every code changes and the weights stay "
              "uniform" if cw else "")
    return f"""# toy-visual

A small MAE-VQGAN (the same `MaeVqgan` class as the official model) trained by the project
on procedurally generated 2 x 2 canvases. Shipped with nnvtv so that visual task vectors can
be found, tested and shown on a laptop CPU. It is **not** a pretrained vision model.

## Architecture

32 px canvas, 15 px cells with 2 px gaps, 4 px patches (8 x 8 grid; the answer quadrant is
4 x 4 = 16 patches). Encoder 4 blocks x d 128 x 8 heads, decoder 2 blocks x d 128 x 8 heads
(MLP ratio 2), fixed sin-cos positions, CLS token. `decoder_pred` gives logits over the 256
codes of a VQGAN (f4, channels 16/32/32, codebook 256 x 32) that renders codes to pixels.
Token groups as the official adapter: encoder `cls`, `query` (16); decoder `cls`,
`query_in` (16), `query_out` (16): 8 x 4 x 2 + 8 x 2 x 3 = 112 head sites.

## Training data: four task families, each with a latent

Every episode draws a latent that the example pair reveals and the query alone does not, so
a one-shot prompt carries information a zero-shot prompt lacks:

| family | input -> output | latent drawn per episode | named task uses |
|---|---|---|---|
| segmentation | a shape and a distractor of another class (each class has its own colour) on a background -> white mask | which class ({' / '.join(lat['segmentation'])}) is foreground | disk |
| low-light | image x 0.5 -> ... | {' / '.join({'restore': 'restore (x2)'}.get(x, x) for x in lat['low-light'])} | restore |
| inpainting | image with a black square (4 px, the official 27/111 of the cell side) -> ... | {' / '.join(_INPAINT_WORDS.get(x, x) for x in lat['inpainting'])}{where} | restore |
| colorization | luma -> colour | one of {len(lat['colorization'])} three-colour palettes with the same lumas (the grey query cannot tell them apart) | palette 0 |

Latents are drawn uniformly (a latent listed twice, twice as often), so no named task's latent is the most frequent.

{h['n_episodes']} episodes (twins sharing family and latent; families drawn
{' / '.join(f"{k} {v / sum(fw.values()):.0%}" for k, v in fw.items())}), seed {h['seed']}.
Phase 1: the VQGAN, {h['vq_steps']} Adam steps of batch {h['vq_batch']} (pixel MSE + VQ loss on whole canvases,
plus the MSE of the answer quadrant's 4 x 4 code block decoded on its own, as the readout decodes
it; dead codes re-seeded); {rec['codes_used']} of 256 codes in use. Phase 2: the MAE, {h['mae_steps']} AdamW steps,
cross-entropy on the answer quadrant's codes of {h['batch']} ICL canvases and {h['zs_batch']} zero-shot
prompts (example quadrants dropped: the model learns its best guess without the example){change}.

Task-vector-prompting auxiliary loss: {tvp}

## Measured (held-out queries, `nnvtv.evaluate`, seed 0)

| task | metric | zero-shot | one-shot (ICL) | all 112 head sites <- ICL means | gap closed |
|---|---|---:|---:|---:|---:|
{chr(10).join(rows)}

"gap closed" = (patched - zero-shot) / (ICL - zero-shot); "-" where one-shot does not beat
zero-shot (no gap to close). A searched subset of sites does better: see the next sections.

## Cost

Training {t['total_training']['cpu_seconds']} CPU seconds ({t['total_training']['seconds']} s wall) with
{h['threads']} torch thread(s) on a 2-core machine (CPU time is the process's own, `time.process_time`):
data {t['data']['cpu_seconds']} s, VQGAN {t['vqgan']['cpu_seconds']} s, MAE {t['mae']['cpu_seconds']} s (CPU).
torch {rec['versions']['torch']}, Python {rec['versions']['python']}.

Reproduce: `nnvtv train-toy visual --out DIR` (or
`python -m nnvtv.adapters.mae_vqgan.train_toy --out DIR`); weights are deterministic for a
seed on one machine and thread count.

{_search_section(search)}"""


def _weights_arg(text: str) -> dict[str, float]:
    """``"segmentation=0.4,low-light=0.1,..."`` -> ``{"segmentation": 0.4, ...}`` (checked by :func:`resolve_family_weights`)."""
    try:
        w = {k.strip(): float(v) for k, v in (item.split("=") for item in text.split(",") if item.strip())}
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected FAMILY=WEIGHT,... got {text!r}") from exc
    try:
        return resolve_family_weights(w)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    d = train_visual.__kwdefaults__  # one set of defaults: the function's
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--episodes", type=int, default=d["n_episodes"])
    p.add_argument("--vq-steps", type=int, default=d["vq_steps"])
    p.add_argument("--mae-steps", type=int, default=d["mae_steps"])
    p.add_argument("--tvp-batch", type=int, default=d["tvp_batch"], help="0 disables the task-vector-prompting loss")
    p.add_argument("--family-weights", type=_weights_arg, default=None, metavar="F=W,...",
                   help="share of episodes per family, e.g. segmentation=0.4,low-light=0.1,inpainting=0.35,colorization=0.15")
    p.add_argument("--inpainting-latents", default=None, metavar="L,...",
                   help=f"in-painting latents to train on (default {','.join(TRAINING_LATENTS['inpainting'])}; also: keep)")
    p.add_argument("--shared-hole", action="store_true", help="in-painting: the same square place in example and query")
    p.add_argument("--change-weight", type=float, default=d["change_weight"],
                   help="extra weight of the answer codes that differ from the query's (see change_weights)")
    p.add_argument("--lr", type=float, default=d["lr"], help="MAE peak learning rate")
    p.add_argument("--threads", type=int, default=d["threads"])
    p.add_argument("--search-budget", type=int, default=d["search_budget"], help="REINFORCE budget per task for the card; 0 skips")
    a = p.parse_args(argv)
    latents = {"inpainting": tuple(x.strip() for x in a.inpainting_latents.split(",") if x.strip())} if a.inpainting_latents else None
    train_visual(a.out, seed=a.seed, n_episodes=a.episodes, vq_steps=a.vq_steps, mae_steps=a.mae_steps,
                 tvp_batch=a.tvp_batch, family_weights=a.family_weights, latents=latents, shared_hole=a.shared_hole,
                 change_weight=a.change_weight, lr=a.lr, threads=a.threads, search_budget=a.search_budget)
    return 0



def _train_summary(out_dir: Path, *, seed: int = 0) -> dict[str, Any]:
    rec = train_visual(out_dir, seed=seed)
    return {"metrics": rec["metrics"], "timing": rec["timing"]}


#: ``nnvtv train-toy visual``
TRAINER = ToyTrainer(
    name="visual",
    description="toy-visual (MAE-VQGAN) on four procedural canvas tasks",
    train=_train_summary,
    models=("toy-visual",),
    command="nnvtv train-toy visual --out DIR",
)


if __name__ == "__main__":
    raise SystemExit(main())
