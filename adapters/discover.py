"""Families by structure: the table row of a decoder or a ViT-style classifier that has none.

Most transformers keep what nnvtv patches in the same shape: an ``nn.ModuleList`` of blocks,
as long as the config's layer count, and in each block an attention submodule whose output
projection takes the per-head outputs ``[batch, pos, n_heads * head_dim]``. For a model no
table row matches, :func:`find_structure` finds both from the module tree and the config:

* config keys: the first of :data:`LAYER_KEYS`, :data:`HEAD_KEYS`, :data:`WIDTH_KEYS` the
  config has (``head_dim`` when the config sets it, else ``d_model // n_heads``);
* blocks: the outermost ``nn.ModuleList`` whose length is the layer count;
* attention output projection: in block 0, the linear-like module (``nn.Linear``, or
  transformers' ``Conv1D`` whose weight is ``[in, out]``) under a submodule named like
  attention (``attn``, ``attention``, ``self_attn``, ``self_attention`` ...) whose input
  width is ``n_heads * head_dim`` and whose name is a usual one (:data:`OUT_PROJ_NAMES`);
  every other block must hold the same module at the same place.

Anything ambiguous or missing is refused with an :class:`~nnvtv.errors.AdapterError` naming
the candidates found and how to write a table row instead. The rules here are
:class:`~nnvtv.adapter.AdapterDiscovery` objects, registered through the plug-in lists of
``hf_causal_lm`` (:data:`CAUSAL_LM_DISCOVERY`, text in, next-token logits out) and ``hf_vit``
(:func:`vit_discovery` with its ``ViTIO``: CLS + patches in, class logits out); the core
tries them only after the table, and logs each inferred row once.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import Any

import torch

from nnvtv.adapter import AdapterDiscovery, AdapterSpec, ModelIO, StreamSpec
from nnvtv.errors import AdapterError
from nnvtv.text_io import TextIO

__all__ = [
    "CAUSAL_LM_DISCOVERY",
    "HEAD_KEYS",
    "LAYER_KEYS",
    "OUT_PROJ_NAMES",
    "WIDTH_KEYS",
    "Structure",
    "discover_causal_lm",
    "discover_vit_classifier",
    "find_structure",
    "vit_discovery",
]

#: config keys of the layer count, the number of (query) heads and the model width, in order
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
HEAD_KEYS = ("num_attention_heads", "n_head", "num_heads", "n_heads")
WIDTH_KEYS = ("hidden_size", "n_embd", "d_model", "dim")
HEAD_DIM_KEYS = ("head_dim",)
#: usual names of the attention output projection (the end of its path inside the block)
OUT_PROJ_NAMES = ("o_proj", "out_proj", "dense", "c_proj", "proj", "output.dense")

_HOW_TO_ROW = (
    "Write a table row instead: nnvtv.register_adapter(nnvtv.AdapterSpec(name=..., "
    "model_types=(<model_type>,), streams=(nnvtv.StreamSpec(block=('<blocks path>.{i}',), "
    "attn_out=('<blocks path>.{i}.<attention output projection>',), n_layers=(<key>,), "
    "n_heads=(<key>,), d_model=(<key>,)),), io=<its ModelIO>)), or pass adapter=<spec> to "
    "nnvtv.wrap."
)


@dataclass(frozen=True)
class Structure:
    """What :func:`find_structure` found: path templates, config keys and the sizes they give.

    Attributes:
        block: path template of the blocks (``{i}`` is the layer).
        attn_out: path template of each block's attention output projection.
        n_layers, n_heads, d_model: the config keys found.
        head_dim: the config key found, or ``None`` (``d_model // n_heads``).
        sizes: ``(n_layers, n_heads, head_dim, d_model)``.
    """

    block: str
    attn_out: str
    n_layers: str
    n_heads: str
    d_model: str
    head_dim: str | None
    sizes: tuple[int, int, int, int]

    def stream(self) -> StreamSpec:
        """The single stream of the table row this structure makes."""
        return StreamSpec(
            block=(self.block,),
            attn_out=(self.attn_out,),
            n_layers=(self.n_layers,),
            n_heads=(self.n_heads,),
            d_model=(self.d_model,),
            head_dim=(self.head_dim,) if self.head_dim else (),
        )


# --------------------------------------------------------------------------- structure


def _config_int(config: Any, keys: tuple[str, ...], what: str, model: torch.nn.Module) -> tuple[str, int]:
    for key in keys:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return key, value
    raise AdapterError(
        f"{type(model).__name__}: found no {what} on its config ({type(config).__name__}): none of "
        f"the keys {list(keys)} holds a positive int. {_HOW_TO_ROW}"
    )


def _in_width(module: torch.nn.Module) -> int | None:
    """Input width of a linear-like module (``nn.Linear``, or ``Conv1D`` with weight ``[in, out]``)."""
    if isinstance(module, torch.nn.Linear):
        return int(module.in_features)
    weight = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and isinstance(weight, torch.Tensor) and weight.dim() == 2:
        return int(weight.shape[0])
    return None


def _is_attention(rel: str) -> bool:
    """``rel`` (a path inside a block) lies under a submodule named like attention."""
    return any("att" in part.lower() for part in rel.split(".")[:-1])


def _usual_name(rel: str) -> bool:
    return any(rel == n or rel.endswith("." + n) for n in OUT_PROJ_NAMES)


def _linear_widths(block: torch.nn.Module) -> list[tuple[str, int]]:
    return [(rel, w) for rel, m in block.named_modules() if rel and (w := _in_width(m)) is not None]


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def find_structure(model: torch.nn.Module) -> Structure:
    """The blocks and each block's attention output projection of ``model``, from its tree and config.

    Raises:
        AdapterError: a config key is missing, no ``nn.ModuleList`` has the layer count, no
            or several attention output projections fit, or the blocks differ; the message
            names the candidates found and how to write a table row instead.
    """
    config = getattr(model, "config", None)
    name = type(model).__name__
    if config is None:
        raise AdapterError(f"{name} has no .config to read the layer count and widths from. {_HOW_TO_ROW}")
    layers_key, n_layers = _config_int(config, LAYER_KEYS, "layer count", model)
    heads_key, n_heads = _config_int(config, HEAD_KEYS, "number of attention heads", model)
    width_key, d_model = _config_int(config, WIDTH_KEYS, "model width", model)
    head_dim_key: str | None = None
    head_dim = d_model // n_heads
    for key in HEAD_DIM_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            head_dim_key, head_dim = key, value
            break
    width = n_heads * head_dim
    width_says = (
        f"{heads_key}={n_heads} x {head_dim_key}={head_dim}"
        if head_dim_key
        else f"{heads_key}={n_heads} x ({width_key}={d_model} // {n_heads})"
    )

    lists = [(p, m) for p, m in model.named_modules() if isinstance(m, torch.nn.ModuleList)]
    same_length = [p for p, m in lists if len(m) == n_layers]
    outermost = [p for p in same_length if not any(p.startswith(q + ".") for q in same_length if q != p)]
    if not outermost:
        found = ", ".join(f"{p or '<root>'} ({len(m)})" for p, m in lists) or "none"
        raise AdapterError(
            f"{name}: no nn.ModuleList of {layers_key}={n_layers} blocks in its module tree "
            f"(module lists found, with their lengths: {found}). {_HOW_TO_ROW}"
        )

    # per candidate block list: the attention-output candidates of its block 0
    fits: dict[str, list[str]] = {}
    seen: dict[str, list[tuple[str, int]]] = {}
    for path in outermost:
        block0 = model.get_submodule(_join(path, "0"))
        in_attention = [(rel, w) for rel, w in _linear_widths(block0) if _is_attention(rel)]
        seen[path] = in_attention
        fits[path] = [rel for rel, w in in_attention if w == width and _usual_name(rel)]
    chosen = {p: rels for p, rels in fits.items() if rels}
    if not chosen:
        listed = "; ".join(
            f"in {_join(p, '0')}: " + (", ".join(f"{rel} (in {w})" for rel, w in seen[p]) or "no linear module under a submodule named like attention")
            for p in outermost
        )
        raise AdapterError(
            f"{name}: found no attention output projection taking {width} features ({width_says}) "
            f"with a usual name {list(OUT_PROJ_NAMES)} under a submodule named like attention. "
            f"Linear-like modules under attention: {listed}. {_HOW_TO_ROW}"
        )
    if len(chosen) > 1 or len(next(iter(chosen.values()))) > 1:
        listed = ", ".join(_join(p, "0", rel) for p, rels in chosen.items() for rel in rels)
        raise AdapterError(
            f"{name}: ambiguous attention output projection: several modules take {width} "
            f"features ({width_says}) with a usual name: {listed}. {_HOW_TO_ROW}"
        )
    (blocks_path, (rel,)), = chosen.items()

    blocks = model.get_submodule(blocks_path)
    for i in range(1, n_layers):
        try:
            w = _in_width(blocks[i].get_submodule(rel))
        except AttributeError:
            w = None
        if w != width:
            raise AdapterError(
                f"{name}: block {_join(blocks_path, str(i))} has no linear {rel} taking {width} features, "
                f"unlike block 0 (a stack of mixed layer types?); a table row must say where "
                f"each layer keeps its heads. {_HOW_TO_ROW}"
            )
    return Structure(
        block=_join(blocks_path, "{i}"),
        attn_out=_join(blocks_path, "{i}", rel),
        n_layers=layers_key,
        n_heads=heads_key,
        d_model=width_key,
        head_dim=head_dim_key,
        sizes=(n_layers, n_heads, head_dim, d_model),
    )


# --------------------------------------------------------------------------- kinds of model


def _transformers() -> Any:
    # a model of transformers exists only once transformers is imported: never import it here
    return sys.modules.get("transformers")


def _class_names(model: torch.nn.Module) -> set[str]:
    return {cls.__name__ for cls in type(model).__mro__}


@functools.cache
def _mapped(mapping_name: str) -> frozenset[str]:
    from transformers.models.auto import modeling_auto

    names: set[str] = set()
    for value in getattr(modeling_auto, mapping_name, {}).values():
        names.update((value,) if isinstance(value, str) else value)
    return frozenset(names)


def _is_kind(model: torch.nn.Module, mapping_name: str, suffixes: tuple[str, ...]) -> bool:
    tf = _transformers()
    if tf is None or not isinstance(model, tf.PreTrainedModel):
        return False
    own = type(model).__name__
    return own.endswith(suffixes) or bool(_class_names(model) & _mapped(mapping_name))


def _spec(model: torch.nn.Module, structure: Structure, io: type[ModelIO]) -> AdapterSpec:
    model_type = getattr(model.config, "model_type", None)
    return AdapterSpec(
        name=str(model_type or type(model).__name__),
        model_types=(model_type,) if model_type else (),
        model_classes=(type(model).__name__,),
        streams=(structure.stream(),),
        io=io,
    )


def discover_causal_lm(model: torch.nn.Module) -> AdapterSpec | None:
    """The table row of a transformers causal LM (decoder-only), read from its structure.

    Returns ``None`` for anything else (not a transformers model, not a causal LM, an
    encoder-decoder). The row reads text (:class:`~nnvtv.text_io.TextIO`, group ``last``).

    Raises:
        AdapterError: see :func:`find_structure`.
    """
    if not _is_kind(model, "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", ("ForCausalLM", "LMHeadModel")):
        return None
    if getattr(model.config, "is_encoder_decoder", False):
        return None
    return _spec(model, find_structure(model), TextIO)


_CLS_NAMES = ("cls_token", "class_token", "class_embedding")
_NOT_IN_SEQUENCE = ("mask_token",)  # replaces patches when asked; never adds a position


def _check_cls_plus_patches(model: torch.nn.Module, structure: Structure) -> None:
    """Refuse unless the sequence is exactly one CLS token then the patches in raster order."""
    cfg, name = model.config, type(model).__name__
    sizes = {k: getattr(cfg, k, None) for k in ("image_size", "patch_size", "num_channels")}
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes.values()):
        raise AdapterError(
            f"{name}: a ViT-style row needs int image_size, patch_size and num_channels on the config, "
            f"got {sizes}. {_HOW_TO_ROW}"
        )
    n_patches = (sizes["image_size"] // sizes["patch_size"]) ** 2
    blocks = structure.block.removesuffix("{i}")
    tokens, positions = [], []
    for path, param in model.named_parameters():
        if path.startswith(blocks):
            continue
        leaf = path.rsplit(".", 1)[-1]
        if ("token" in leaf or leaf in _CLS_NAMES) and leaf not in _NOT_IN_SEQUENCE and "embed_tokens" not in path:
            tokens.append((path, leaf, tuple(param.shape)))
        if leaf == "position_embeddings" and param.dim() == 3:
            positions.append((path, int(param.shape[1])))
    cls = [t for t in tokens if t[1] in _CLS_NAMES]
    extra = [t for t in tokens if t[1] not in _CLS_NAMES]
    d_model = structure.sizes[3]
    problem = ""
    if len(cls) != 1 or cls[0][2] not in ((1, 1, d_model), (d_model,)):
        problem = f"expected one learned CLS token {list(_CLS_NAMES)} of width {d_model}, found {cls or 'none'}"
    elif extra:
        problem = f"learned tokens other than CLS join the sequence: {[(p, s) for p, _, s in extra]}"
    elif any(n != n_patches + 1 for _, n in positions):
        problem = f"position embeddings {positions} do not hold CLS + {n_patches} patches"
    if problem:
        raise AdapterError(
            f"{name}: not a CLS + patches sequence ({problem}); the ViT-style row reads position 0 "
            f"as CLS and positions 1..{n_patches} as the patches, so it would mislabel sites. "
            f"{_HOW_TO_ROW}"
        )


def discover_vit_classifier(model: torch.nn.Module, io: type[ModelIO]) -> AdapterSpec | None:
    """The table row of a ViT-style transformers image classifier, read from its structure.

    Applies to transformers image classifiers; accepted only when the sequence is exactly
    CLS + patches (one learned CLS token, no distillation or register tokens, position
    embeddings, when learned, for CLS + patches), read by ``io`` (groups ``cls`` and
    ``patches``). Returns ``None`` for anything else.

    Raises:
        AdapterError: another token layout (DeiT's CLS + distillation, registers, no CLS),
            or see :func:`find_structure`.
    """
    if not _is_kind(model, "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", ("ForImageClassification",)):
        return None
    structure = find_structure(model)
    _check_cls_plus_patches(model, structure)
    return _spec(model, structure, io)


def vit_discovery(io: type[ModelIO]) -> AdapterDiscovery:
    """The discovery of ViT-style classifiers, reading them with ``io`` (``hf_vit.ViTIO``)."""
    return AdapterDiscovery(
        "vit_classifier_structure",
        functools.partial(discover_vit_classifier, io=io),
        hint=(
            "For a family nnvtv should ship, add an AdapterSpec like VIT to "
            "nnvtv/adapters/hf_vit.py's PLUGIN list."
        ),
    )


#: transformers causal LMs with no table row (registered by ``hf_causal_lm``'s plug-in list)
CAUSAL_LM_DISCOVERY = AdapterDiscovery(
    "causal_lm_structure",
    discover_causal_lm,
    hint=(
        "For a family nnvtv should ship, add a Row to ROWS in nnvtv/adapters/hf_causal_lm.py "
        "and a tiny config to tests/conftest.py."
    ),
)
