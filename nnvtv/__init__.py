"""nnvtv: find, measure and use task vectors inside in-context models, on nnsight.

>>> import nnvtv
>>> model = nnvtv.load("toy-text")
>>> result = nnvtv.find(model, "toy-perm_a", strategy="reinforce", budget=2048, seed=0)
>>> result.scores, result.task_vector.sites
>>> result.task_vector.save("runs/perm_a")
"""

from nnvtv import errors, recipes, search, tasks, toys
from nnvtv.activations import Means, mean_activations
from nnvtv.adapter import (
    AdapterDiscovery,
    AdapterSpec,
    ModelIO,
    StreamSpec,
    find_adapter,
    list_adapters,
    list_discoveries,
    register_adapter,
    register_discovery,
)
from nnvtv.catalog import list_models, load, register_model
from nnvtv.compare import Comparison, compare
from nnvtv.find import Scores, SearchResult, evaluate, find
from nnvtv.inputs import ModelInputs
from nnvtv.learned import LearnResult, learn
from nnvtv.model import Model
from nnvtv.patching import Patch, run_masks
from nnvtv.sites import Site, SiteSpace
from nnvtv.vector import TaskVector
from nnvtv.wrapping import wrap

__version__ = "0.1.0"

__all__ = [
    "AdapterDiscovery",
    "AdapterSpec",
    "Comparison",
    "LearnResult",
    "Means",
    "Model",
    "ModelIO",
    "ModelInputs",
    "Patch",
    "Scores",
    "SearchResult",
    "Site",
    "SiteSpace",
    "StreamSpec",
    "TaskVector",
    "compare",
    "errors",
    "evaluate",
    "find",
    "learn",
    "find_adapter",
    "list_adapters",
    "list_discoveries",
    "list_models",
    "load",
    "mean_activations",
    "register_adapter",
    "register_discovery",
    "recipes",
    "register_model",
    "run_masks",
    "search",
    "tasks",
    "toys",
    "wrap",
]
