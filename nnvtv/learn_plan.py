""":func:`nnvtv.learn`'s arguments, checked and resolved before any forward pass.

Defaults come from the start vector when there is one (its task, seed, shots and means
options), else from the model's catalogue entry and the task, as :func:`nnvtv.find` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nnvtv import catalog
from nnvtv.checks import choice, int_at_least, number_in, positive_int
from nnvtv.errors import ConfigError
from nnvtv.mean_prompts import check_mean_prompts
from nnvtv.patching import MODES
from nnvtv.tasks import get as get_task

if TYPE_CHECKING:
    from nnvtv.model import Model
    from nnvtv.sites import Site
    from nnvtv.tasks import Task
    from nnvtv.tasks.base import Split
    from nnvtv.vector import TaskVector

__all__ = ["LearnPlan", "plan_learning", "planned_cost", "DEFAULT_STEPS"]

#: Adam steps when neither ``steps`` nor ``budget`` is given
DEFAULT_STEPS = 100
#: cost of one training step over the fit queries (a forward and a backward), in forward passes
STEP_COST = 3


@dataclass
class LearnPlan:
    """Resolved options of one :func:`nnvtv.learn` call."""

    task: Task
    split: Split
    shots: int
    seed: int
    init: str
    mode: str
    steps: int
    lr: float
    validation: float
    eval_every: int
    patience: int | None
    n_mean_prompts: int
    mean_prompts: str
    mean_candidates: int | None
    reuse_vector_values: bool

    def n_validation(self, n: int) -> int:
        """Validation queries out of ``n`` training queries (at least 1 when ``validation > 0``,
        at most ``n - 1``)."""
        if self.validation == 0:
            return 0
        return min(n - 1, max(1, round(self.validation * n)))


def planned_cost(steps: int, plan: Any, validated: bool) -> int:
    """Forward-pass equivalents of ``steps`` training steps: 3 each, the final fit pass 1 and,
    when ``validated``, one validation pass at step 0, every ``eval_every`` steps and at the end."""
    evals = 0
    if validated:
        evals = steps // plan.eval_every + 1 + (1 if steps % plan.eval_every else 0)
    return STEP_COST * steps + 1 + evals


def plan_learning(model: Model, task: Any, vector: TaskVector | None, sites: list[Site], given: dict[str, Any]) -> LearnPlan:
    """Check every argument of :func:`nnvtv.learn` (``given``) and fill in the defaults.

    Raises:
        ConfigError: an argument out of range, both or neither of ``steps`` and ``budget``
            where one is needed, a budget that pays for no step, too few training queries to
            hold some out for validation.
    """
    g = given
    init = choice("init", g["init"], ("mean", "zeros"))
    mode = g["mode"]
    if mode is not None:
        choice("mode", mode, MODES)
    else:
        mode = vector.mode if vector is not None else ("add" if init == "zeros" else "replace")
    positive_int("steps", g["steps"], allow_none=True)
    positive_int("budget", g["budget"], allow_none=True)
    if g["steps"] is not None and g["budget"] is not None:
        raise ConfigError(f"give steps= or budget= (forward-pass equivalents), not both (steps={g['steps']}, budget={g['budget']})")
    lr = number_in("lr", g["lr"], low=0.0, low_open=True)
    validation = number_in("validation", g["validation"], low=0.0, high=1.0, high_open=True)
    eval_every = positive_int("eval_every", g["eval_every"])
    patience = positive_int("patience", g["patience"], allow_none=True)
    int_at_least("seed", g["seed"], 0, allow_none=True)
    positive_int("shots", g["shots"], allow_none=True)
    meta = vector.meta if vector is not None else {}
    seed = g["seed"] if g["seed"] is not None else int(meta.get("seed", 0))
    entry = catalog.entry(model.name)
    defaults = dict(entry.defaults) if entry is not None else {}
    if task is None:
        if vector is not None:
            task = vector.task_object()
        elif entry is not None and entry.default_task is not None:
            task = entry.default_task
        else:
            raise ConfigError(f"model {model.name!r} has no catalogue entry, so no default task; pass task=")
    task = get_task(task)
    shots = g["shots"] if g["shots"] is not None else meta.get("shots") or int(defaults.get("shots", getattr(task, "default_shots", 5)))
    own_means = all(g[k] is None for k in ("n_mean_prompts", "mean_prompts", "mean_candidates"))
    n_mean_prompts = g["n_mean_prompts"] if g["n_mean_prompts"] is not None else int(meta.get("n_mean_prompts", 64))
    mean_prompts = g["mean_prompts"] if g["mean_prompts"] is not None else str(meta.get("mean_prompts", "random"))
    mean_candidates = g["mean_candidates"] if g["mean_candidates"] is not None else meta.get("mean_candidates")
    if mean_prompts == "random":
        mean_candidates = None if g["mean_candidates"] is None else mean_candidates
    check_mean_prompts(mean_prompts, n_mean_prompts, mean_candidates)
    reuse = (
        vector is not None and not vector.learned and own_means and seed == meta.get("seed") and shots == meta.get("shots")
        and task.name == vector.task
    )  # fmt: skip
    split = task.split(seed)
    n = len(split.train)
    if validation > 0 and n < 2:
        raise ConfigError(f"validation={validation} holds out training queries, but task {task.name!r} has {n}; use validation=0")
    plan = LearnPlan(task=task, split=split, shots=int(shots), seed=seed, init=init, mode=mode, steps=DEFAULT_STEPS, lr=lr,
                     validation=validation, eval_every=eval_every, patience=patience, n_mean_prompts=n_mean_prompts,
                     mean_prompts=mean_prompts, mean_candidates=mean_candidates, reuse_vector_values=reuse)  # fmt: skip
    validated = plan.n_validation(n) > 0
    if g["steps"] is not None:
        plan.steps = g["steps"]
    elif g["budget"] is not None:
        budget = g["budget"]
        if planned_cost(1, plan, validated) > budget:
            raise ConfigError(
                f"budget={budget} pays for no training step: one costs {STEP_COST} forward-pass equivalents, plus "
                f"{planned_cost(1, plan, validated) - STEP_COST} for validation and the final pass; use budget >= "
                f"{planned_cost(1, plan, validated)} or steps="
            )
        steps = budget // STEP_COST
        while planned_cost(steps, plan, validated) > budget:
            steps -= 1
        plan.steps = steps
    return plan
