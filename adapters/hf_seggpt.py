"""Hugging Face SegGPT (``SegGptForImageSegmentation``), as a table entry plus its I/O.

SegGPT (Wang et al. 2023, "SegGPT: Segmenting Everything In Context") is a ViT whose input is
one tall canvas: the prompt pair on top of the query. It runs two copies of that canvas side
by side in the batch: the *image* copy (prompt image over query image) and the *mask* copy
(prompt mask over the query's mask, which is hidden by a learned mask token). Through layer
``merge_index`` the copies are separate batch rows (``[2 * batch, H, W, C]``); after it they
are averaged into one grid (``[batch, H, W, C]``). Activations are 2-D grids, not sequences.

Sites: the per-head slices of the input of each layer's ``model.encoder.layers.{i}.attention.proj``
(``[copies * batch, H, W, n_heads * head_dim]``). :class:`GridLayout` folds such a value onto the
``[batch, copies * H * W, width]`` sequence the core works in: copy ``c``, cell ``(i, j)`` is
position ``c * H * W + i * W + j``. Groups, on that folded grid (raster order; the mask copy's
cells come after the image copy's):

* ``prompt_image``: image copy, top half (the prompt image);
* ``query_image``: image copy, bottom half (the query image);
* ``prompt_mask``: mask copy, top half (the prompt mask);
* ``query_pred``: mask copy, bottom half (mask tokens: where the prediction is written).

After the merge the copies are one grid, so ``prompt_image`` and ``prompt_mask`` address the
same (merged) prompt cells, and ``query_image`` and ``query_pred`` the same query cells.

ICL input: prompt image + prompt mask + query (SegGPT's own one-shot inference). Zero-shot input:
a *blank prompt* (prompt image and prompt mask all zero after ImageNet normalisation, i.e. the
mean colour). The prompt patches cannot be dropped as in MAE-VQGAN: SegGPT's patch embedding
accepts only the configured canvas size, the image and mask copies are averaged cell by cell,
and the relative position tables are sized to the full grid; removing the prompt half would
give the model a geometry it never saw.

Real weights (cannot be downloaded here): with a local copy of ``BAAI/seggpt-vit-large`` (a
``huggingface-cli download BAAI/seggpt-vit-large --local-dir seggpt`` on a machine with
internet), ``nnvtv.load("seggpt")`` (the folder path) or
``nnvtv.wrap(SegGptForImageSegmentation.from_pretrained("seggpt"))``. NDIF does not host SegGPT.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from nnvtv.adapter import AdapterSpec, ModelIO, StreamSpec, ValueLayout
from nnvtv.canvas import denormalize, normalize
from nnvtv.errors import ConfigError, EmptyDataError, ShapeMismatchError
from nnvtv.inputs import ModelInputs

__all__ = ["SEGGPT", "SegGptIO", "GridLayout", "seggpt_geometry"]

GROUPS = ("prompt_image", "prompt_mask", "query_image", "query_pred")
#: SegGptImageProcessor normalises images and masks with the ImageNet statistics, as the
#: canvas does (nnvtv.canvas.normalize / denormalize).


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


def seggpt_geometry(config: Any) -> dict[str, int]:
    """Sizes of a SegGPT config: one image ``(height, width)`` px, patch grid ``(rows, cols)``.

    The canvas (``config.image_size``) is two images stacked vertically: prompt over query.
    """
    canvas_h, canvas_w = _pair(config.image_size)
    ph, pw = _pair(config.patch_size)
    if canvas_h % ph or canvas_w % pw or (canvas_h // ph) % 2:
        raise ConfigError(
            f"SegGPT canvas {canvas_h}x{canvas_w} must be an even number of {ph}x{pw} patch rows"
        )
    return {
        "height": canvas_h // 2,
        "width": canvas_w,
        "rows": canvas_h // ph,
        "cols": canvas_w // pw,
    }


class GridLayout(ValueLayout):
    """A grid value ``[copies * batch, *cells, width]`` (copy-major) folded onto ``[batch, pos, width]``.

    Copy ``c``, cell ``(i, j, ...)`` in raster order is position ``c * n_cells + raster(i, j, ...)``.
    Group positions are written for the widest layout (both copies); where the model has merged
    its copies (fewer copies in a later layer), a position of copy ``c`` addresses copy
    ``c mod copies`` of that layer: the merged cell.

    Attributes:
        shape: the value's own shape.
        copies: stacked copies of the batch in this value (``2`` before SegGPT's merge, ``1`` after).
        cells: cells per copy.
    """

    def __init__(self, shape: tuple[int, ...], copies: int, cells: int) -> None:
        self.shape, self.copies, self.cells = shape, copies, cells

    def fold(self, x: torch.Tensor) -> torch.Tensor:
        m, w = self.copies, x.shape[-1]
        b = x.shape[0] // m
        return x.reshape(m, b, self.cells, w).transpose(0, 1).reshape(b, m * self.cells, w)

    def unfold(self, y: torch.Tensor) -> torch.Tensor:
        b, w = y.shape[0], y.shape[-1]
        return y.reshape(b, self.copies, self.cells, w).transpose(0, 1).reshape(self.shape)

    def positions(self, positions: torch.Tensor) -> torch.Tensor:
        copy = torch.div(positions, self.cells, rounding_mode="floor") % self.copies
        return copy * self.cells + positions % self.cells


class SegGptIO(ModelIO):
    """SegGPT one-shot segmentation: (prompt image, prompt mask, query) -> query mask.

    :meth:`build` takes either

    * a mapping with the ``SegGptImageProcessor`` names: ``pixel_values`` (queries),
      ``prompt_pixel_values`` and ``prompt_masks``, each ``[batch, 3, height, width]``,
      ImageNet-normalised, one image (not the canvas); leave both prompt keys out (or
      ``None``) for the zero-shot input (blank prompt); or
    * :class:`nnvtv.canvas.CanvasPrompts` (what visual tasks build for MAE-style models): the
      example input, example output and query cells of each 2 x 2 canvas become the prompt
      image, prompt mask and query (resized to the model's image size; ``zero_shot`` gives the
      blank prompt).

    Readout: the predicted query mask ``[batch, 3, height, width]``, ImageNet-normalised like
    the inputs (``pred_masks``' bottom half). For canvas prompts it is resized to the canvas
    cell and returned in ``[0, 1]`` pixels, ``[batch, 3, cell, cell]``, the same as the
    answer cell MAE-style readouts give.
    """

    modality = "image"

    @property
    def geometry(self) -> Any:
        """The 2 x 2 canvas (:class:`nnvtv.canvas.CanvasGeometry`) whose cells are this model's
        images (``cell`` = the image side, 2-px gap), so visual tasks render at the model's own
        resolution. Its ``patch`` is only a valid divisor of the canvas: SegGPT reads the cells.
        """
        from nnvtv.canvas import CanvasGeometry

        geo = seggpt_geometry(self.module.config)
        if geo["height"] != geo["width"]:
            raise ConfigError(f"canvas tasks need square SegGPT images, got {geo['height']}x{geo['width']}")
        size = 2 * geo["height"] + 2
        patch = next(p for p in (4, 16, 8, 2, 1) if size % p == 0 and (size // p) % 2 == 0)
        return CanvasGeometry(size=size, patch=patch, gap=2)

    def groups(self) -> dict[str, tuple[str, ...]]:
        return {"": GROUPS}

    def layout(self, x: torch.Tensor, batch: int) -> ValueLayout:
        """SegGPT's grids ``[copies * batch, H, W, width]`` (see :class:`GridLayout`)."""
        if x.dim() < 3 or x.shape[0] % batch != 0:
            raise ShapeMismatchError(
                f"a SegGPT site value must be [copies * batch, H, W, width] for a batch of {batch}; "
                f"got {tuple(x.shape)}"
            )
        cells = 1
        for n in x.shape[1:-1]:
            cells *= int(n)
        return GridLayout(tuple(x.shape), x.shape[0] // batch, cells)

    def positions(self, batch: int) -> dict[str, torch.Tensor]:
        """``{group: LongTensor [batch, rows/2 * cols]}`` on the folded 2-copy grid."""
        geo = seggpt_geometry(self.module.config)
        cells = geo["rows"] * geo["cols"]
        half = (geo["rows"] // 2) * geo["cols"]
        spans = {
            "prompt_image": (0, half),
            "query_image": (half, cells),
            "prompt_mask": (cells, cells + half),
            "query_pred": (cells + half, 2 * cells),
        }
        return {g: torch.arange(a, b).expand(batch, -1).clone() for g, (a, b) in spans.items()}

    def build(self, data: Any) -> ModelInputs:
        if hasattr(data, "pixels") and hasattr(data, "geometry") and hasattr(data, "zero_shot"):
            kwargs, extra = self._from_canvas(data)
        elif isinstance(data, Mapping):
            kwargs, extra = self._from_mapping(data), {}
        else:
            raise ShapeMismatchError(
                "SegGPT inputs are a mapping {'pixel_values', 'prompt_pixel_values', 'prompt_masks'} "
                f"of [batch, 3, H, W] tensors or nnvtv.canvas.CanvasPrompts; got {type(data).__name__}"
            )
        b = kwargs["pixel_values"].shape[0]
        return ModelInputs(kwargs=kwargs, positions={"": self.positions(b)}, extra=extra)

    def _check(self, name: str, x: Any, batch: int | None) -> torch.Tensor:
        geo = seggpt_geometry(self.module.config)
        expected = (3, geo["height"], geo["width"])
        if not isinstance(x, torch.Tensor):
            raise ShapeMismatchError(f"{name} must be a tensor [batch, {', '.join(map(str, expected))}], got {type(x).__name__}")
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ShapeMismatchError(
                f"{name} must be [batch, {', '.join(map(str, expected))}] (one image, half the "
                f"{2 * geo['height']}x{geo['width']} canvas), got {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            raise EmptyDataError(f"{name} is an empty batch")
        if not x.is_floating_point():
            raise ShapeMismatchError(f"{name} must be floating point (ImageNet-normalised), got {x.dtype}")
        if batch is not None and x.shape[0] != batch:
            raise ShapeMismatchError(f"{name} has {x.shape[0]} rows but pixel_values has {batch}")
        return x

    def _from_mapping(self, data: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        allowed = {"pixel_values", "prompt_pixel_values", "prompt_masks"}
        unknown = sorted(set(data) - allowed)
        if unknown or "pixel_values" not in data:
            raise ConfigError(
                f"SegGPT inputs take the keys {sorted(allowed)} (pixel_values required), got {sorted(data)}"
            )
        q = self._check("pixel_values", data["pixel_values"], None)
        p, m = data.get("prompt_pixel_values"), data.get("prompt_masks")
        if (p is None) != (m is None):
            raise ConfigError("give both prompt_pixel_values and prompt_masks, or neither (zero-shot)")
        if p is None:
            p = m = torch.zeros_like(q)  # zero-shot: blank prompt (the normalised mean colour)
        return {
            "pixel_values": q,
            "prompt_pixel_values": self._check("prompt_pixel_values", p, q.shape[0]),
            "prompt_masks": self._check("prompt_masks", m, q.shape[0]),
        }

    def _from_canvas(self, prompts: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        geo = seggpt_geometry(self.module.config)
        g = prompts.geometry
        size = (geo["height"], geo["width"])

        def cell(name: str, mask: bool) -> torch.Tensor:
            r, c = g.cell_box(name)
            x = prompts.pixels[:, :, r : r + g.cell, c : c + g.cell].float()
            if x.shape[-2:] != size:
                mode = "nearest" if mask else "bilinear"
                x = F.interpolate(x, size=size, mode=mode, **({} if mask else {"align_corners": False}))
            return normalize(x.clamp(0, 1))

        kwargs = {"pixel_values": cell("query", False)}
        if not prompts.zero_shot:  # zero-shot: no prompt keys -> blank prompt
            kwargs["prompt_pixel_values"] = cell("example_in", False)
            kwargs["prompt_masks"] = cell("example_out", True)
        return self._from_mapping(kwargs), {"canvas_cell": int(g.cell)}

    def readout(self, output: Any, inputs: ModelInputs) -> torch.Tensor:
        pred = output.pred_masks if hasattr(output, "pred_masks") else output[0]
        h = pred.shape[-2] // 2
        query = pred[..., h:, :]  # [batch, 3, height, width], normalised
        cell = inputs.extra.get("canvas_cell")
        if cell is None:
            return query
        px = denormalize(query)
        if px.shape[-2:] != (cell, cell):
            px = F.interpolate(px, size=(cell, cell), mode="bilinear", align_corners=False)
        return px

    def example(self, batch_size: int = 2) -> ModelInputs:
        geo = seggpt_geometry(self.module.config)
        g = torch.Generator().manual_seed(0)
        shape = (batch_size, 3, geo["height"], geo["width"])
        return self.build(
            {
                "pixel_values": torch.randn(shape, generator=g),
                "prompt_pixel_values": torch.randn(shape, generator=g),
                "prompt_masks": torch.randn(shape, generator=g),
            }
        )


SEGGPT = AdapterSpec(
    name="seggpt",
    model_types=("seggpt",),
    model_classes=("SegGptForImageSegmentation",),
    io=SegGptIO,
    streams=(
        StreamSpec(
            block=("model.encoder.layers.{i}",),
            attn_out=("model.encoder.layers.{i}.attention.proj",),
            n_layers=("num_hidden_layers",),
            n_heads=("num_attention_heads",),
            d_model=("hidden_size",),
        ),
    ),
)

#: what the entry point ``hf_seggpt`` registers
PLUGIN = [SEGGPT]
