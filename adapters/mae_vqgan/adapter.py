"""The MAE-VQGAN adapter: table (where the heads are) + I/O (canvas -> tokens, codes -> pixels).

Sites are head outputs at the input of each block's ``attn.proj`` (encoder ``blocks.{i}``,
decoder ``decoder_blocks.{i}``). Token groups (DESIGN §2, §5):

* encoder ``enc``: ``cls`` (1 position) and ``query`` (the query image's patches, 49 officially);
* decoder ``dec``: ``cls``, ``query_in`` (query-image patches, 49) and ``query_out`` (the
  masked answer patches, 49).

ICL input = the full canvas with the answer quadrant masked (encoder ``1 + 147`` tokens,
decoder ``1 + 196``); zero-shot input = the example quadrants *dropped from the sequence*
(encoder ``1 + 49``, decoder ``1 + 98``), not blacked out. The readout renders the argmax
codes of the answer quadrant with the VQGAN decoder and crops the answer cell:
``[batch, 3, cell, cell]`` in ``[0, 1]`` (111 x 111 officially). Rendering only the answer
quadrant's codes (not all 196 as the official demo does before pasting) keeps ICL and
zero-shot outputs comparable and costs a quarter of the VQGAN decode.
"""

from __future__ import annotations

from typing import Any

import torch

from nnvtv.adapter import AdapterSpec, ModelIO, StreamSpec
from nnvtv.canvas import CanvasGeometry, CanvasPrompts, normalize
from nnvtv.errors import ShapeMismatchError
from nnvtv.inputs import ModelInputs

__all__ = ["MAE_VQGAN", "MaeVqganIO", "geometry_of", "layout"]


def geometry_of(module: torch.nn.Module) -> CanvasGeometry:
    """The canvas geometry a MAE-VQGAN config implies (2-px gap, cells of ``(size - 2) // 2``)."""
    c = module.config
    return CanvasGeometry(size=c.img_size, patch=c.patch_size, gap=2)


def layout(geometry: CanvasGeometry, zero_shot: bool) -> dict[str, Any]:
    """Token layout of one prompt: ``visible``/``target`` patch lists and group positions.

    Returns ``{"visible": [...], "target": [...], "enc": {group: [pos]}, "dec": {group: [pos]}}``
    (positions count the CLS token as 0).
    """
    g = geometry
    answer = g.patches("answer")
    query = g.patches("query")
    if zero_shot:
        visible = list(query)
    else:
        hidden = set(answer)
        visible = [i for i in range(g.grid**2) if i not in hidden]
    dec_seq = sorted(visible + answer)
    enc_index = {p: 1 + i for i, p in enumerate(visible)}
    dec_index = {p: 1 + i for i, p in enumerate(dec_seq)}
    return {
        "visible": visible,
        "target": list(answer),
        "enc": {"cls": [0], "query": [enc_index[p] for p in query]},
        "dec": {"cls": [0], "query_in": [dec_index[p] for p in query], "query_out": [dec_index[p] for p in answer]},
    }


def _rows(values: list[int], b: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long).expand(b, -1).clone()


class MaeVqganIO(ModelIO):
    """Canvas prompts -> ``imgs``/``visible``/``target`` kwargs; code logits -> answer-cell pixels.

    ``build`` takes :class:`~nnvtv.canvas.CanvasPrompts` (or a ``[B, 3, S, S]`` tensor in
    ``[0, 1]``, treated as ICL canvases). Readout: ``[batch, 3, cell, cell]`` in ``[0, 1]``.
    """

    modality = "image"

    def __init__(self, module: torch.nn.Module, tokenizer: Any = None) -> None:
        super().__init__(module, tokenizer)
        self.geometry = geometry_of(module)

    def groups(self) -> dict[str, tuple[str, ...]]:
        return {"enc": ("cls", "query"), "dec": ("cls", "query_in", "query_out")}

    def build(self, data: Any) -> ModelInputs:
        if isinstance(data, torch.Tensor):
            data = CanvasPrompts(data, zero_shot=False, geometry=self.geometry)
        if not isinstance(data, CanvasPrompts):
            raise ShapeMismatchError(
                f"MAE-VQGAN takes nnvtv.canvas.CanvasPrompts or canvases [batch, 3, S, S], got {type(data).__name__}"
            )
        if data.geometry.size != self.geometry.size or data.geometry.patch != self.geometry.patch:
            raise ShapeMismatchError(
                f"canvases are {data.geometry.size} px with {data.geometry.patch}-px patches; this model "
                f"needs {self.geometry.size} px with {self.geometry.patch}-px patches"
            )
        b = len(data)
        lay = layout(self.geometry, data.zero_shot)
        return ModelInputs(
            kwargs={
                "imgs": normalize(data.pixels.float()),
                "visible": _rows(lay["visible"], b),
                "target": _rows(lay["target"], b),
            },
            positions={s: {g: _rows(p, b) for g, p in lay[s].items()} for s in ("enc", "dec")},
        )

    def readout(self, output: Any, inputs: ModelInputs) -> torch.Tensor:
        return self.render(output)

    def render(self, logits: torch.Tensor) -> torch.Tensor:
        """Answer-quadrant code logits ``[B, M, V]`` -> answer cell ``[B, 3, cell, cell]`` in ``[0, 1]``."""
        h = self.geometry.grid // 2
        codes = logits.argmax(-1).reshape(logits.shape[0], h, h)
        return self.geometry.crop_quadrant_block(self.module.render(codes))

    def example(self, batch_size: int = 2) -> ModelInputs:
        g = torch.Generator().manual_seed(0)
        s = self.geometry.size
        return self.build(CanvasPrompts(torch.rand(batch_size, 3, s, s, generator=g), False, self.geometry))


_CONFIG_KEYS = dict(n_layers=("depth",), n_heads=("num_heads",), d_model=("embed_dim",))

MAE_VQGAN = AdapterSpec(
    name="mae_vqgan",
    model_types=("mae_vqgan",),
    model_classes=("MaeVqgan",),
    io=MaeVqganIO,
    streams=(
        StreamSpec(name="enc", block=("blocks.{i}",), attn_out=("blocks.{i}.attn.proj",), **_CONFIG_KEYS),
        StreamSpec(
            name="dec",
            block=("decoder_blocks.{i}",),
            attn_out=("decoder_blocks.{i}.attn.proj",),
            n_layers=("decoder_depth",),
            n_heads=("decoder_num_heads",),
            d_model=("decoder_embed_dim",),
        ),
    ),
)
