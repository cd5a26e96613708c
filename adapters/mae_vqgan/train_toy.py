"""Train ``toy-visual``: a small MAE-VQGAN on procedurally generated canvases of four task families.

Reproducible (seeded, CPU-deterministic) and cheap: ``nnvtv train-toy visual --out DIR`` or
``python -m nnvtv.adapters.mae_vqgan.train_toy --out DIR``. Two phases, as the real model:

1. the VQGAN (f4, 256 codes) learns to reconstruct canvases (pixel MSE + VQ loss, dead codes
   re-seeded from encoder outputs);
2. the MAE learns to predict the VQGAN codes of the masked answer quadrant (cross-entropy),
   on ICL canvases and, for a quarter of each batch, on the zero-shot layout (example
   quadrants dropped) -- so zero-shot is the model's best guess without the example; in the
   second half, a task-vector-prompting loss through the library's own site definition
   (:meth:`nnvtv.Model.capture` and :meth:`nnvtv.Model.run` with ``grad=True``).

Every episode draws a *latent* that the example pair reveals and the query does not (which
shape class is foreground; restore / keep / invert a darkened image; restore the hole or fill
it with a colour; the colorization palette) -- see :mod:`.episodes` and
:mod:`nnvtv.tasks.procedural`. The model card is written by :mod:`.card`.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import nnvtv
from nnvtv.canvas import CanvasGeometry, CanvasPrompts
from nnvtv.errors import ConfigError
from nnvtv.tasks import get as get_task
from nnvtv.toys import ToyTrainer, warmup_cosine

from .adapter import MAE_VQGAN, layout
from .card import (
    MAX_MSE_RATIO,
    MIN_GAP_CLOSED,
    MIN_IOU_GAIN,
    TASKS,
    model_card,
    one_shot_clearly_better,
    one_shot_gain,
)
from .catalog import TOY_READOUT
from .checkpoint import save_checkpoint
from .config import toy
from .episodes import (
    FAMILIES,
    FAMILY_WEIGHTS,
    TRAINING_LATENTS,
    change_weights,
    make_episodes,
    resolve_family_weights,
    resolve_latents,
)
from .model import MaeVqgan

__all__ = [
    "train_visual", "train_vqgan", "train_mae", "tvp_sites", "encode_codes", "evaluate_toy", "search_report", "main", "TRAINER",
    # the episodes (.episodes) and the bars and card (.card), importable from here as before
    "FAMILIES", "FAMILY_WEIGHTS", "TRAINING_LATENTS", "change_weights", "make_episodes", "resolve_family_weights",
    "resolve_latents", "MAX_MSE_RATIO", "MIN_GAP_CLOSED", "MIN_IOU_GAIN", "TASKS", "model_card", "one_shot_clearly_better",
    "one_shot_gain",
]


def _batch(canv: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Canvases ``uint8 [N, 3, S, S]`` at ``idx`` -> ``float [len(idx), 3, S, S]`` in ``[0, 1]``."""
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
    """The VQGAN codes ``long [N, grid * grid]`` of canvases ``uint8 [N, 3, S, S]`` (``chunk`` at a time)."""
    return torch.cat([model.target_codes(_batch(canv, torch.arange(i, min(i + chunk, len(canv))))) for i in range(0, len(canv), chunk)])


def tvp_sites(model: nnvtv.Model, layer: int) -> list[nnvtv.Site]:
    """The task-vector-prompting sites: every head output of encoder block ``layer`` at the CLS token."""
    return [nnvtv.Site(layer, h, "cls", "enc") for h in range(model.stream("enc").n_heads)]


def train_mae(
    model: MaeVqgan, canv: torch.Tensor, codes: torch.Tensor, geometry: CanvasGeometry, *,
    steps: int, batch: int, zs_batch: int, lr: float, gen: torch.Generator, log: list,
    tvp_batch: int = 0, tvp_from: float = 0.5, tvp_layer: int = 1,
    code_weights: torch.Tensor | None = None,
) -> dict:
    """Cross-entropy on the answer codes of ICL canvases (``batch``) and zero-shot prompts
    (``zs_batch``). From ``tvp_from * steps`` on, a task-vector-prompting loss: the encoder
    block ``tvp_layer`` CLS head outputs (:func:`tvp_sites`, each ``[k, 1, head_dim]``) of the
    first ``tvp_batch`` ICL episodes, captured with their autograd graph, replace those of the
    zero-shot forward of their twins (same family and latent), which must then predict the
    twins' answers. Both forwards run through the library's site definition.

    ``canv``: episodes ``uint8 [N, 3, S, S]``; ``codes``: their VQGAN codes ``[N, grid * grid]``;
    ``code_weights [N, M]`` (see :func:`~.episodes.change_weights`) weigh each answer code's
    cross-entropy; ``None``: uniform."""
    params = [p for n, p in model.named_parameters() if not n.startswith("vae.") and p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05, betas=(0.9, 0.95))
    m = nnvtv.wrap(model, adapter=MAE_VQGAN, validate=False, readout=TOY_READOUT)  # forward: answer logits [B, M, V]
    model.train()  # wrap puts the module in eval mode (the model has no dropout; train() keeps it honest)
    sites = tvp_sites(m, tvp_layer)
    target = layout(geometry, False)["target"]  # the answer patches, the same in both layouts

    def inputs(idx: torch.Tensor, zero_shot: bool) -> nnvtv.ModelInputs:
        return m.inputs(CanvasPrompts(_batch(canv, idx), zero_shot, geometry))  # imgs / visible / target

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
        captured: dict[nnvtv.Site, torch.Tensor] = {}
        idx_icl = None
        for zs, b in ((False, batch), (True, zs_batch)):
            if b == 0:
                continue
            idx = torch.randint(n, (b,), generator=gen)
            x = inputs(idx, zs)
            if not zs and tvp_on:
                idx_icl = idx
                logits, captured = m.capture(x, sites, grad=True)  # code logits [b, M, V], {site: [b, 1, head_dim]}
            else:
                logits = model(**x.kwargs)
            losses.append((ce(logits, idx), b))
        loss = sum(v * b for v, b in losses) / sum(b for _, b in losses)
        tvp_loss = None
        if tvp_on and idx_icl is not None:
            k = min(tvp_batch, len(idx_icl))
            twin = idx_icl[:k] ^ 1
            logits = m.run(inputs(twin, True), nnvtv.Patch({s: captured[s][:k] for s in sites}), grad=True)
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
    m = nnvtv.wrap(model, adapter=MAE_VQGAN, name="toy-visual", readout=TOY_READOUT)
    out: dict[str, Any] = {}
    for name in TASKS:
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


def search_report(model: MaeVqgan, *, budget: int = 1024, seed: int = 0) -> dict[str, Any]:
    """REINFORCE search (``budget`` forward passes) per named task on the trained model: held-out
    zero-shot / one-shot / task-vector scores, gap closed, sites, and seconds."""
    m = nnvtv.wrap(model, adapter=MAE_VQGAN, name="toy-visual", readout=TOY_READOUT)
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
    :func:`~.episodes.make_episodes`); ``change_weight`` weighs the answer codes that differ from the
    query (:func:`~.episodes.change_weights`)."""
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
