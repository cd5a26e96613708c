"""Image metrics of the visual tasks: ``uint8`` quantisation, white/black rounding, IoU, MSE.

They follow the official MAE-VQGAN evaluation (reference notes): predictions and targets are
quantised to ``uint8``; segmentation rounds every pixel to the nearer of white / black (mean
over channels > 0.5) and scores IoU of the white pixels; the image tasks score MSE of
ImageNet-normalised pixels. :class:`~nnvtv.tasks.visual.VisualTask` scores with these; its
search losses are ``1 - IoU`` and the MSE.

Images are ``[..., 3, H, W]`` floats in ``[0, 1]``; per-image scores are ``[...]``.
"""

from __future__ import annotations

import torch

from nnvtv.canvas import normalize

__all__ = ["quantize", "binarize", "iou", "mse"]


def quantize(x: torch.Tensor) -> torch.Tensor:
    """``[0, 1]`` floats -> the ``uint8`` grid, back as floats (``round(x * 255) / 255``, clipped)."""
    return (x.clamp(0, 1) * 255).round() / 255


def binarize(x: torch.Tensor) -> torch.Tensor:
    """``[..., 3, H, W]`` -> ``BoolTensor [..., H, W]``: pixel nearer white than black.

    Nearest of {white, black} by squared RGB distance is "mean over channels > 0.5".
    """
    return quantize(x).mean(-3) > 0.5


def iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image IoU of the white pixels of ``pred [..., 3, H, W]`` and ``target [..., 3, H, W]``.

    Both are rounded with :func:`binarize`. Returns ``[...]``; an empty union counts as 1.
    """
    p, t = binarize(pred), binarize(target)
    inter = (p & t).flatten(-2).sum(-1).float()
    union = (p | t).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image MSE of ImageNet-normalised, ``uint8``-quantised images ``[..., 3, H, W]`` -> ``[...]``."""
    d = normalize(quantize(pred)) - normalize(quantize(target))
    return d.pow(2).flatten(-3).mean(-1)
