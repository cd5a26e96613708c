"""nnvtv: find, measure and use task vectors inside in-context models, on nnsight."""

from nnvtv import errors
from nnvtv.activations import Means, mean_activations
from nnvtv.adapter import AdapterSpec, ModelIO, StreamSpec, find_adapter, list_adapters, register_adapter
from nnvtv.inputs import ModelInputs
from nnvtv.model import Model, wrap
from nnvtv.patching import Patch, run_masks
from nnvtv.sites import Site, SiteSpace

__version__ = "0.1.0"

__all__ = [
    "AdapterSpec",
    "Means",
    "Model",
    "ModelIO",
    "ModelInputs",
    "Patch",
    "Site",
    "SiteSpace",
    "StreamSpec",
    "errors",
    "find_adapter",
    "list_adapters",
    "mean_activations",
    "register_adapter",
    "run_masks",
    "wrap",
]
