"""A relaxed site mask trained by backpropagation: hard-concrete gates (Louizos et al. 2018).

Every site gets a gate ``z_i`` in ``[0, 1]`` that patches it a fraction ``z_i`` of the way
(:mod:`nnvtv.relaxed`); the gates' logits are trained with Adam on the patched forward's task
loss plus a sparsity penalty, then binarised and checked with exact patched forwards.

Why hard-concrete gates and not a sigmoid with a straight-through estimator:

* **Exact zeros and ones.** A hard-concrete sample is a stretched, clipped binary-concrete
  variable: it is exactly 0 or exactly 1 with positive probability, and in between otherwise.
  Many sampled rows are therefore near-binary patched forwards, so training sees the
  forwards the final binary mask will run (a small train/test gap), and rows that come out
  all 0/1 ARE exact evaluations (the driver and this strategy keep the best of them).
* **Unbiased-in-the-relaxation gradients.** Reparameterised samples give the true gradient
  of the relaxed objective; a straight-through estimator runs binary forwards but uses the
  sigmoid's gradient as if the forward were continuous, a biased first-order guess that is
  close to attribution patching at each sample (which the ``attribution`` strategy already
  does with one gradient row).
* **A closed-form L0 penalty.** ``P(z_i != 0) = sigmoid(log_alpha_i - beta log(-gamma/zeta))``
  is differentiable, so "expected number of patched sites" is penalised directly; subnetwork
  probing (Cao et al. 2021) and edge pruning (Bhaskar et al. 2024) use the same gates for the
  same job (learning which components to keep).
* **A natural binarisation.** The deterministic gate ``clip(sigmoid(log_alpha) (zeta - gamma)
  + gamma, 0, 1)`` is the test-time mask; ``log_alpha > 0`` is its 0.5 threshold, and
  ``log_alpha`` ranks the sites for the checks.

Penalty: the driver's ``sparsity`` reaches the gates through the gradients it adds
(``sparsity`` per unit of weight: the expected density of the sampled gates), and the
strategy's own ``l0`` weights the closed-form expected L0.
"""

from __future__ import annotations

import math

import torch

from nnvtv.checks import int_at_least, number_in, positive_int
from nnvtv.errors import ConfigError, StrategyStateError

from ._protocol import GRADIENT_ROW_COST, BaseStrategy, StrategyResult
from ._registry import register_strategy

__all__ = ["Gradient"]

#: hard-concrete temperature and stretch interval (Louizos et al. 2018)
BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1
#: training steps when the strategy runs outside a budgeted driver and ``steps`` is not given
DEFAULT_STEPS = 50


@register_strategy("gradient")
class Gradient(BaseStrategy):
    """Hard-concrete gates per site, trained with Adam through relaxed patched forwards.

    Training steps ask ``FloatTensor[samples, n_sites]`` sampled gates and get their losses and
    gradients; one Adam step on the logits ``log_alpha`` follows the reparameterised gradient of
    ``mean(loss) + l0 * sum_i P(z_i != 0)``. Then ``checks`` exact forwards
    (``BoolTensor[B, n_sites]``) score the top-``k`` sites by ``log_alpha`` for ``k`` around
    the deterministic gates' count (``k0, k0 + 1, k0 - 1, k0 + 2, ...``); the final mask is the
    best exactly evaluated mask (checks, and training rows that came out all 0/1).

    Args:
        n_sites: size of the site space.
        seed: seeds the gate noise.
        samples: gate rows per training step (each costs 3 forward-pass equivalents).
        lr: Adam learning rate on ``log_alpha``.
        init: initial ``log_alpha`` of every site (``-1``: deterministic gate 0.22; a sampled
            gate is nonzero with probability 0.65, exactly 1 with probability 0.07, 0.29 on
            average: most sites start mostly unpatched, as patching everything usually hurts).
        l0: weight of the expected-L0 penalty, in loss units per expected site.
        steps: training steps; ``None``: as many as the budget allows after the checks
            (``(budget - checks) // (3 * samples)``; 50 outside a budgeted driver).
        checks: exact forwards spent on binarised masks at the end (>= 1).
    """

    needs_gradients = True

    def __init__(
        self,
        n_sites: int,
        *,
        seed: int = 0,
        samples: int = 4,
        lr: float = 0.1,
        init: float = -1.0,
        l0: float = 0.0,
        steps: int | None = None,
        checks: int = 4,
    ) -> None:
        super().__init__(n_sites, seed=seed)
        self._samples = positive_int("samples", samples)
        self._lr = number_in("lr", lr, low=0.0, low_open=True)
        init = number_in("init", init)
        self._l0 = number_in("l0", l0, low=0.0)
        self._steps = int_at_least("steps", steps, 0, allow_none=True)
        self._checks = positive_int("checks", checks)
        self._planned_steps: int | None = None
        self._log_alpha = torch.full((n_sites,), init, dtype=torch.float32, requires_grad=True)
        self._optimizer = torch.optim.Adam([self._log_alpha], lr=self._lr)
        self._noise: torch.Tensor | None = None  # [samples, n_sites] of the pending ask
        self._trained = 0
        self._check_sizes: list[int] | None = None
        self._asked_sizes: list[int] = []
        self._exact: dict[bytes, tuple[float, torch.Tensor]] = {}  # mask bytes -> (loss, mask)
        self._checked: dict[int, float] = {}

    # -- gates ----------------------------------------------------------------------------------

    @staticmethod
    def _sample(log_alpha: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / BETA)
        return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    def _p_nonzero(self) -> torch.Tensor:
        return torch.sigmoid(self._log_alpha - BETA * math.log(-GAMMA / ZETA))

    def gates(self) -> torch.Tensor:
        """``FloatTensor[n_sites]``: the deterministic (test-time) gates."""
        a = self._log_alpha.detach()
        return (torch.sigmoid(a) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    def current_probabilities(self) -> torch.Tensor:
        """``FloatTensor[n_sites]``: probability that each sampled gate is nonzero."""
        return self._p_nonzero().detach().clone()

    @property
    def population_size(self) -> int:
        return max(self._samples, self._checks)

    @property
    def training_steps(self) -> int:
        """Training steps this search runs before its checks."""
        if self._steps is not None:
            return self._steps
        return self._planned_steps if self._planned_steps is not None else DEFAULT_STEPS

    def plan_budget(self, budget: int) -> None:
        """Split the budget: ``checks`` exact forwards at the end, gradient steps before.

        Raises:
            ConfigError: the budget cannot pay for one training step and the checks.
        """
        step = GRADIENT_ROW_COST * self._samples
        self._planned_steps = max(0, (int(budget) - self._checks) // step)
        if self._steps is None and self._planned_steps == 0:
            raise ConfigError(
                f"strategy 'gradient' needs at least {step + self._checks} forward-pass equivalents "
                f"(one training step of samples={self._samples} rows x {GRADIENT_ROW_COST}, then "
                f"checks={self._checks} exact forwards) but the budget is {budget}; raise the "
                "budget or lower samples= / checks="
            )

    # -- ask / tell -----------------------------------------------------------------------------

    def ask(self) -> torch.Tensor:
        """Training: ``FloatTensor[samples, n_sites]`` gates; then ``BoolTensor[B, n_sites]`` checks."""
        if self.should_stop():
            raise StrategyStateError("gradient has checked its masks; check should_stop()")
        if self._trained < self.training_steps:
            eps = 1e-6
            u = torch.rand((self._samples, self._n_sites), generator=self._generator) * (1 - 2 * eps) + eps
            self._noise = u
            return self._remember(self._sample(self._log_alpha.detach(), u))
        if self._check_sizes is None:
            self._check_sizes = self._sizes()
        self._asked_sizes = self._check_sizes[: self._checks]
        self._check_sizes = self._check_sizes[len(self._asked_sizes) :]
        order = self._ranking()
        masks = torch.zeros(len(self._asked_sizes), self._n_sites, dtype=torch.bool)
        for row, k in enumerate(self._asked_sizes):
            masks[row, order[:k]] = True
        return self._remember(masks)

    def tell(self, masks: torch.Tensor, losses: torch.Tensor, grads: torch.Tensor | None = None) -> None:
        """A training step (weights, losses ``[B]``, grads ``[B, n_sites]``) or the checks' losses."""
        if self._noise is not None:
            weights, losses, grads = self._check_tell_grads(masks, losses, grads)
            u, self._noise = self._noise, None
            z = self._sample(self._log_alpha, u)  # the asked gates, now with their graph
            surrogate = (z * grads.to(torch.float32)).sum() / z.shape[0]
            if self._l0:
                surrogate = surrogate + self._l0 * self._p_nonzero().sum()
            self._optimizer.zero_grad(set_to_none=True)
            surrogate.backward()
            self._optimizer.step()
            self._trained += 1
            binary = ((weights == 0) | (weights == 1)).all(dim=1)
            for row in torch.nonzero(binary).flatten().tolist():
                self._keep(weights[row].bool(), float(losses[row]))
        else:
            masks, losses = self._check_tell(masks, losses)
            for row, k in enumerate(self._asked_sizes):
                self._checked[k] = float(losses[row])
                self._keep(masks[row], float(losses[row]))
            self._asked_sizes = []
        self._generation += 1

    def _keep(self, mask: torch.Tensor, loss: float) -> None:
        if not bool(mask.any()):  # the clean forward is no task vector
            return
        key = mask.numpy().tobytes()
        if key not in self._exact or loss < self._exact[key][0]:
            self._exact[key] = (loss, mask.clone())

    def should_stop(self) -> bool:
        return self._trained >= self.training_steps and self._check_sizes is not None and not self._check_sizes and not self._asked_sizes

    # -- binarisation ---------------------------------------------------------------------------

    def _ranking(self) -> torch.Tensor:
        """Sites by ``log_alpha``, highest first (ties: lower index)."""
        return torch.sort(-self._log_alpha.detach(), stable=True).indices

    def _sizes(self) -> list[int]:
        """``checks`` distinct sizes nearest the deterministic gates' count: k0, k0+1, k0-1, ..."""
        k0 = min(self._n_sites, max(1, int((self._log_alpha.detach() > 0).sum())))
        sizes: list[int] = []
        for d in range(self._n_sites + 1):
            for k in (k0 + d, k0 - d):
                if 1 <= k <= self._n_sites and k not in sizes:
                    sizes.append(k)
            if len(sizes) >= self._checks:
                break
        return sizes[: self._checks]

    def result(self) -> StrategyResult:
        """The best exactly evaluated mask, else the deterministic gates' mask (``log_alpha > 0``,
        at least the top site). ``probabilities``: ``P(gate != 0)``.

        ``extra``: ``log_alpha``, ``gates`` (deterministic), ``steps`` (training steps done),
        ``checked`` (``{k: penalised exact loss}`` of the top-``k`` checks), ``exact_masks``
        (masks evaluated exactly), ``k``, ``from_checks`` (whether the mask was evaluated).
        """
        if self._exact:
            loss, mask = min(self._exact.values(), key=lambda lm: (lm[0], int(lm[1].sum())))
            from_checks = True
        else:
            mask = self._log_alpha.detach() > 0
            if not bool(mask.any()):
                mask = torch.zeros(self._n_sites, dtype=torch.bool)
                mask[self._ranking()[0]] = True
            from_checks = False
        return StrategyResult(
            mask=mask.clone(),
            probabilities=self.current_probabilities(),
            extra={
                "log_alpha": self._log_alpha.detach().clone(),
                "gates": self.gates(),
                "steps": self._trained,
                "checked": dict(sorted(self._checked.items())),
                "exact_masks": len(self._exact),
                "k": int(mask.sum()),
                "from_checks": from_checks,
            },
        )
