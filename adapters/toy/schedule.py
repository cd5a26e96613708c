"""Learning-rate schedule shared by the toy trainers (``toy-visual``, ``toy-seggpt``)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps to ``base``, then cosine decay to 0 at ``total``.

    The shipped weights were trained with exactly this expression (its rounding included), so
    keep it as written for bit-reproducible retraining.
    """
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
