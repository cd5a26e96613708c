"""The MAE-VQGAN adapter: table (where the heads are) + I/O (canvas -> tokens, codes -> pixels).

Sites are head outputs at the input of each block's ``attn.proj`` (encoder ``blocks.{i}``,
decoder ``decoder_blocks.{i}``). Token groups (DESIGN §2, §5):

* encoder ``enc``: ``cls`` (1 position) and ``query`` (the query image's patches, 49 officially);
* decoder ``dec``: ``cls``, ``query_in`` (query-image patches, 49) and ``query_out`` (the
  masked answer patches, 49).

ICL input = the full canvas with the answer quadrant masked (encoder ``1 + 147`` tokens,
decoder ``1 + 196``); zero-shot input = the example quadrants *dropped from the sequence*
(encoder ``1 + 49``, decoder ``1 + 98``), not blacked out.

Readout: the answer cell ``[batch, 3, cell, cell]`` in ``[0, 1]`` (111 x 111 officially), by
one of two I/O options (``nnvtv.wrap(model, readout=...)``, ``nnvtv.load(name, readout=...)``):

* ``"full"`` (default), the official evaluation (``evaluate/mae_utils.py`` of
  amirbar/visual_prompting): the argmax code at *every* decoder slot, visible patches
  included, is decoded by the VQGAN as one ``grid x grid`` code map, then the answer cell is
  cropped. The VQGAN decoder attends over the whole code map and its GroupNorms pool over it,
  so the answer's pixels depend on the other quadrants' codes. (The official code then pastes
  the canvas on the visible patches; the answer cell lies inside the masked quadrant, since
  its origin ``cell + gap`` is at least ``size / 2``, so that paste never reaches the crop.)
  Zero-shot prompts have no codes for the dropped example quadrants: as the visual task
  vectors code does (alhojel/visual_task_vectors, ``evaluate/mae_utils.py``,
  ``decode_raw_predicion``: the 98 zero-shot codes are repeated, ``hstack([y, y])``, to fill
  196), each missing patch takes the code predicted half a grid below it, so the code map's
  top half repeats its bottom half (query and answer).
* ``"answer"``: the answer quadrant's ``grid/2 x grid/2`` code block decoded on its own:
  a quarter of the VQGAN work, and the model's forward only computes the answer's logits,
  but not the official pixels: on random weights of the official config the answer cells of
  the two readouts differ by 0.136 on average on ``[0, 1]`` (ICL and zero-shot alike; the
  VQGAN's part of it is checked in ``tests/test_mae_vqgan_readout.py``). ``toy-visual`` was
  trained for this readout and its catalogue entry pins it (``catalog.TOY_READOUT``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from nnvtv.adapter import AdapterSpec, ModelIO, StreamSpec
from nnvtv.canvas import CanvasGeometry, CanvasPrompts, denormalize, normalize
from nnvtv.errors import ConfigError, ShapeMismatchError
from nnvtv.inputs import ModelInputs

__all__ = ["MAE_VQGAN", "READOUTS", "MaeVqganIO", "check_readout", "fill_missing_codes", "geometry_of", "layout"]

#: the readout options, default first: ``"full"`` (official: every code decoded as one grid)
#: and ``"answer"`` (the answer quadrant's code block decoded on its own)
READOUTS = ("full", "answer")


def check_readout(readout: Any) -> str:
    """``readout`` if it is one of :data:`READOUTS`, else a :class:`ConfigError` naming the choices."""
    if not isinstance(readout, str) or readout not in READOUTS:
        raise ConfigError(
            f"readout={readout!r} is not a MAE-VQGAN readout; choose 'full' (the official evaluation: "
            "every predicted code decoded by the VQGAN as one grid, answer cell cropped; the default) "
            "or 'answer' (the answer quadrant's codes decoded on their own; faster, not the official pixels)"
        )
    return readout


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

    Options:
        readout: ``"full"`` (default; the model returns logits at every decoder slot,
            ``[B, K + M, V]``, kwarg ``all_positions=True``) or ``"answer"`` (the model returns
            the answer patches' logits ``[B, M, V]``); see the module docstring.
            :meth:`answer_logits` gives ``[B, M, V]`` from either.
    """

    modality = "image"
    surrogate = (
        "cross-entropy of the answer patches' code logits against the VQGAN codes of the ground-truth "
        "answer cell held in the canvas (the readout's argmax has no gradient)"
    )

    def __init__(self, module: torch.nn.Module, tokenizer: Any = None, *, readout: str = "full") -> None:
        super().__init__(module, tokenizer)
        self.readout_mode = check_readout(readout)
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
        kwargs: dict[str, Any] = {
            "imgs": normalize(data.pixels.float()),
            "visible": _rows(lay["visible"], b),
            "target": _rows(lay["target"], b),
        }
        if self.readout_mode == "full":
            kwargs["all_positions"] = True
        return ModelInputs(
            kwargs=kwargs,
            positions={s: {g: _rows(p, b) for g, p in lay[s].items()} for s in ("enc", "dec")},
        )

    def readout(self, output: Any, inputs: ModelInputs) -> torch.Tensor:
        """Model output -> answer cell ``[B, 3, cell, cell]`` in ``[0, 1]`` (by the ``readout`` option)."""
        if self.readout_mode == "answer":
            return self.render(output)
        return self.render_full(output, inputs.kwargs["visible"], inputs.kwargs["target"])

    def render(self, logits: torch.Tensor) -> torch.Tensor:
        """Answer-quadrant code logits ``[B, M, V]`` -> answer cell ``[B, 3, cell, cell]`` in ``[0, 1]``.

        The ``"answer"`` readout: the ``grid/2 x grid/2`` code block decoded on its own.
        """
        h = self.geometry.grid // 2
        codes = logits.argmax(-1).reshape(logits.shape[0], h, h)
        return self.geometry.crop_quadrant_block(self.module.render(codes))

    def render_full(self, logits: torch.Tensor, visible: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Logits at every decoder slot ``[B, K + M, V]`` -> answer cell ``[B, 3, cell, cell]`` in ``[0, 1]``.

        The ``"full"`` (official) readout: argmax at every slot, slots placed at their patches
        (``visible``, ``target``: ``LongTensor [B, K]``, ``[B, M]``), patches without a slot
        filled by :func:`fill_missing_codes`, the ``grid x grid`` code map decoded by the VQGAN
        in one piece, the answer cell cropped.
        """
        g = self.geometry.grid
        patches = torch.cat([visible, target], dim=1).sort(dim=1).values  # [B, K + M]: patch of each slot
        if logits.dim() != 3 or logits.shape[:2] != patches.shape:
            raise ShapeMismatchError(
                f"the full readout needs logits at every decoder slot [batch={patches.shape[0]}, "
                f"{patches.shape[1]}, vocab] (the model called with all_positions=True), got {tuple(logits.shape)}"
            )
        codes = fill_missing_codes(logits.argmax(-1), patches, g)  # [B, g * g]
        return self.geometry.crop_answer(self.module.render(codes.reshape(-1, g, g)))

    def answer_logits(self, output: torch.Tensor, inputs: ModelInputs) -> torch.Tensor:
        """The answer patches' code logits ``[B, M, V]`` (target order) from the output of either readout."""
        if not inputs.kwargs.get("all_positions", False):
            return output
        visible, target = inputs.kwargs["visible"], inputs.kwargs["target"]
        order = torch.cat([visible, target], dim=1).argsort(dim=1).argsort(dim=1)  # slot of each patch
        where = order[:, visible.shape[1] :]
        return torch.gather(output, 1, where[..., None].expand(-1, -1, output.shape[-1]))

    def surrogate_loss(self, output: torch.Tensor, inputs: ModelInputs) -> torch.Tensor:
        """``FloatTensor [B]``: mean cross-entropy over the answer patches of their code logits
        (:meth:`answer_logits`, ``[B, M, V]``, either readout) against the codes the VQGAN
        encoder gives the canvas (``target_codes``, as the model was trained: the whole canvas
        encoded, the answer patches' codes taken), computed without gradient.

        The canvases must hold the ground-truth answer cell, as visual tasks build them
        (:meth:`nnvtv.tasks.visual.VisualTask.canvases`); the model only sees the visible
        patches, so this changes nothing the model is given.
        """
        logits = self.answer_logits(output, inputs)
        target = inputs.kwargs["target"]
        with torch.no_grad():
            codes = self.module.target_codes(denormalize(inputs.kwargs["imgs"]).clamp(0, 1))  # [B, grid * grid]
            answer = torch.gather(codes, 1, target.to(codes.device))  # [B, M]
        ce = F.cross_entropy(logits.flatten(0, 1).float(), answer.flatten().to(logits.device), reduction="none")
        return ce.view(logits.shape[0], logits.shape[1]).mean(-1)

    def example(self, batch_size: int = 2) -> ModelInputs:
        g = torch.Generator().manual_seed(0)
        s = self.geometry.size
        return self.build(CanvasPrompts(torch.rand(batch_size, 3, s, s, generator=g), False, self.geometry))


def fill_missing_codes(codes: torch.Tensor, patches: torch.Tensor, grid: int) -> torch.Tensor:
    """Codes of some patches -> a full code map ``LongTensor [B, grid * grid]`` (raster order).

    ``codes``, ``patches``: ``[B, L]`` (the code predicted at patch ``patches[b, j]``). A patch
    with no code takes the code of the patch half a grid below it (rows wrap around). For the
    zero-shot layout, whose slots are the bottom half (query and answer quadrants), the top half
    thus repeats the bottom half, exactly as the visual task vectors code fills its 98 zero-shot
    codes up to 196 (``torch.hstack([y, y])`` in ``decode_raw_predicion``).

    Raises:
        ShapeMismatchError: a patch and the one half a grid below it both lack a code.
    """
    n = grid * grid
    full = torch.full((codes.shape[0], n), -1, dtype=codes.dtype, device=codes.device)
    full.scatter_(1, patches, codes)
    if patches.shape[1] == n:
        return full
    below = (torch.arange(n, device=codes.device) + (grid // 2) * grid) % n
    full = torch.where(full < 0, full[:, below], full)
    if bool((full < 0).any()):
        raise ShapeMismatchError(
            f"the full readout cannot fill a {grid} x {grid} code map from {patches.shape[1]} decoder slots: "
            "a patch and the one half a grid below it both have no code (use readout='answer')"
        )
    return full


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
