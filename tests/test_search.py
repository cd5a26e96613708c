"""Tests for nnvtv.search: strategies, registry and the budgeted driver (model-free, fast)."""

from __future__ import annotations

import doctest
import pickle

import pytest
import torch

import nnvtv.search as search
from nnvtv.errors import ConfigError, NnvtvError, ShapeMismatchError, UnknownStrategyError
from nnvtv.search import (
    CMAES,
    BaseStrategy,
    Greedy,
    ObjectiveError,
    Ranking,
    Reinforce,
    SearchProgress,
    Strategy,
    StrategyResult,
    StrategyStateError,
    _registry,
    get_strategy,
    list_strategies,
    register_strategy,
    run_search,
)

N = 24
PLANTED_SITES = [2, 7, 13, 20]
BUILTINS = ["cmaes", "greedy", "ranking", "reinforce"]


def planted_mask(n: int = N) -> torch.Tensor:
    mask = torch.zeros(n, dtype=torch.bool)
    mask[PLANTED_SITES] = True
    return mask


class PlantedObjective:
    """loss = -(#planted selected) + 0.25 * (#wrong selected) [+ seeded noise]; counts rows."""

    def __init__(self, n: int = N, noise: float = 0.0, seed: int = 123) -> None:
        self.planted = planted_mask(n)
        self.noise = noise
        self.generator = torch.Generator().manual_seed(seed)
        self.rows = 0
        self.calls = 0

    def __call__(self, masks: torch.Tensor) -> torch.Tensor:
        assert masks.dtype == torch.bool and masks.ndim == 2
        self.rows += masks.shape[0]
        self.calls += 1
        hits = (masks & self.planted).sum(1).float()
        wrong = (masks & ~self.planted).sum(1).float()
        loss = -hits + 0.25 * wrong
        if self.noise:
            loss = loss + self.noise * torch.randn(masks.shape[0], generator=self.generator)
        return loss


@pytest.fixture
def clean_registry():
    """Remove strategies a test registers (the built-ins stay)."""
    with _registry.STRATEGIES.scoped():
        yield


# -- registry ----------------------------------------------------------------------------------


def test_builtins_registered_and_follow_protocol():
    assert set(BUILTINS) <= set(list_strategies())
    for name in BUILTINS:
        strat = get_strategy(name, 8, seed=0)
        assert isinstance(strat, Strategy)
        assert strat.n_sites == 8 and strat.generation == 0
        assert 1 <= strat.population_size
    assert isinstance(get_strategy("reinforce", 8), Reinforce)
    assert isinstance(get_strategy("greedy", 8), Greedy)
    assert isinstance(get_strategy("cmaes", 8), CMAES)
    assert isinstance(get_strategy("ranking", 8), Ranking)


def test_unknown_strategy_name_lists_available_and_how_to_register():
    with pytest.raises(UnknownStrategyError) as info:
        get_strategy("reinforse", 8)
    msg = str(info.value)
    assert "'reinforse'" in msg
    for name in BUILTINS:
        assert name in msg
    assert "Did you mean 'reinforce'" in msg
    assert "register_strategy" in msg
    assert isinstance(info.value, KeyError) and isinstance(info.value, NnvtvError)
    with pytest.raises(UnknownStrategyError, match="(?i)available: attribution, cmaes, gradient, greedy"):
        run_search(PlantedObjective(), N, "nope", budget=10)


def test_unknown_option_lists_valid_options():
    with pytest.raises(ConfigError) as info:
        get_strategy("reinforce", 8, lrr=0.5)
    msg = str(info.value)
    assert "'lrr'" in msg and "valid options" in msg
    assert "lr=0.1" in msg and "samples=32" in msg and "init_logit=-1.0" in msg
    assert "Did you mean" in msg and "'lr'" in msg
    assert isinstance(info.value, ValueError)
    with pytest.raises(ConfigError, match="'candidate'"):
        run_search(PlantedObjective(), N, "greedy", budget=100, candidate=4)


def test_bad_option_values_raise_config_error():
    with pytest.raises(ConfigError, match="samples"):
        Reinforce(8, samples=1)
    with pytest.raises(ConfigError, match="final"):
        Reinforce(8, final="best")
    with pytest.raises(ConfigError, match="lr"):
        Reinforce(8, lr=-1.0)
    with pytest.raises(ConfigError, match="k=9 is larger than n_sites=8"):
        Ranking(8, k=9)
    with pytest.raises(ConfigError, match="fraction"):
        Ranking(8, fraction=0.0)
    with pytest.raises(ConfigError, match="init_prob"):
        CMAES(8, init_prob=1.0)
    with pytest.raises(ConfigError, match="variant"):
        CMAES(8, variant="catcma")
    with pytest.raises(ConfigError, match="n_sites"):
        Greedy(0)
    with pytest.raises(ConfigError, match="seed"):
        Greedy(4, seed=-1)


def test_register_rejects_kwargs_swallowers_and_name_clashes(clean_registry):
    class Swallower(BaseStrategy):
        def __init__(self, n_sites: int, *, seed: int = 0, **options):
            super().__init__(n_sites, seed=seed)

        population_size = 1
        ask = tell = result = None  # never called

    with pytest.raises(ConfigError, match=r"\*\*kwargs"):
        register_strategy("swallower", Swallower)
    with pytest.raises(ConfigError, match="lacks ask"):
        register_strategy("empty", type("Empty", (), {}))
    with pytest.raises(ConfigError, match="already registered"):
        register_strategy("greedy", Ranking)
    register_strategy("greedy2", Greedy)
    assert "greedy2" in list_strategies()
    register_strategy("greedy2", Greedy)  # same class again: fine
    register_strategy("greedy2", Ranking, replace=True)
    assert isinstance(get_strategy("greedy2", 4), Ranking)
    with pytest.warns(DeprecationWarning, match="replace="):  # the old keyword, with a warning
        register_strategy("greedy2", Greedy, overwrite=True)
    assert isinstance(get_strategy("greedy2", 4), Greedy)


# -- each strategy finds the planted set -----------------------------------------------------


def test_reinforce_finds_planted_set():
    obj = PlantedObjective(noise=0.05)
    run = run_search(obj, N, "reinforce", budget=1500, seed=0, final="threshold")
    planted = planted_mask()
    assert torch.equal(run.best_mask, planted)
    assert torch.equal(run.mask, planted)  # threshold of the best-checkpoint probabilities
    assert run.probabilities is not None and run.probabilities.shape == (N,)
    assert bool((run.probabilities[planted] > 0.9).all())
    assert bool((run.probabilities[~planted] < 0.1).all())
    assert run.forward_passes == obj.rows == 1472  # 46 steps of 32; a 47th would not fit
    assert run.stop_reason == "budget"
    p_means = [h.p_mean for h in run.history]
    assert p_means[0] == pytest.approx(torch.sigmoid(torch.tensor(-1.0)).item(), abs=0.05)


def test_reinforce_default_final_is_one_sample_of_best_checkpoint():
    run = run_search(PlantedObjective(), N, "reinforce", budget=1500, seed=0)
    assert torch.equal(run.best_mask, planted_mask())
    assert run.extra["final"] == "sample" and run.extra["best_step"] is not None
    # result() is repeatable: the final sample does not come from the search generator
    strat = Reinforce(N, seed=3)
    masks = strat.ask()
    strat.tell(masks, PlantedObjective()(masks))
    assert torch.equal(strat.result().mask, strat.result().mask)


def test_cmaes_finds_planted_set():
    obj = PlantedObjective(noise=0.05)
    run = run_search(obj, N, "cmaes", budget=600, seed=0)
    assert torch.equal(run.mask, planted_mask())
    assert torch.equal(run.best_mask, planted_mask())
    assert run.forward_passes == obj.rows <= 600
    assert run.probabilities is not None and run.probabilities.shape == (N,)
    run_mean = run_search(PlantedObjective(), N, "cmaes", budget=600, seed=0, final="mean")
    assert torch.equal(run_mean.mask, planted_mask())


def test_greedy_finds_planted_set_and_stops():
    obj = PlantedObjective(noise=0.01)
    run = run_search(obj, N, "greedy", budget=1000, seed=0)
    assert torch.equal(run.mask, planted_mask())
    assert sorted(run.extra["order"]) == PLANTED_SITES
    # baseline (1) + rounds over 24, 23, 22, 21 sites + one round of 20 without improvement
    assert run.forward_passes == obj.rows == 1 + 24 + 23 + 22 + 21 + 20
    assert run.stop_reason == "strategy"


def test_greedy_chunks_and_candidates():
    full = run_search(PlantedObjective(), N, "greedy", budget=1000)
    chunked = run_search(PlantedObjective(), N, "greedy", budget=1000, batch_size=7)
    assert torch.equal(chunked.mask, full.mask)
    assert chunked.forward_passes == full.forward_passes
    assert get_strategy("greedy", N, batch_size=7).population_size == 7
    obj = PlantedObjective()
    sub = run_search(obj, N, "greedy", budget=1000, seed=0, candidates=8)
    assert torch.equal(sub.mask, planted_mask())
    assert get_strategy("greedy", N, candidates=8).population_size == 8
    capped = run_search(PlantedObjective(), N, "greedy", budget=1000, max_sites=2)
    assert int(capped.mask.sum()) == 2 and bool((capped.mask <= planted_mask()).all())


def test_ranking_finds_planted_set_on_additive_objective():
    obj = PlantedObjective()
    run = run_search(obj, N, "ranking", budget=N, seed=0, k=4)
    assert torch.equal(run.mask, planted_mask())
    effects = run.extra["effects"]
    assert effects.shape == (N,)
    assert torch.allclose(effects[planted_mask()], torch.tensor(-1.0, dtype=effects.dtype))
    assert torch.allclose(effects[~planted_mask()], torch.tensor(0.25, dtype=effects.dtype))
    assert run.forward_passes == N and run.probabilities is None
    # default: top 25% (6 of 24), which contains the planted 4; chunked asks give the same
    frac = run_search(PlantedObjective(), N, "ranking", budget=N, batch_size=5)
    assert int(frac.mask.sum()) == 6 and bool((frac.mask >= planted_mask()).all())
    assert len(frac.history) == 5  # ceil(24 / 5)


def test_ranking_result_before_all_scored():
    strat = Ranking(N, k=2, batch_size=10)
    masks = strat.ask()
    strat.tell(masks, PlantedObjective()(masks))
    res = strat.result()
    assert res.mask.nonzero().flatten().tolist() == [2, 7]  # only sites 0-9 scored
    assert torch.isnan(res.extra["effects"][10:]).all()
    assert not strat.should_stop()


# -- objectives with interactions: where the strategies part ways ---------------------------
#
# Every planted objective above is additive, which every strategy solves. These are not:
#
# * PAIR_SITES only help together ("AND"): each alone costs what any useless site costs
#   (+0.25), both together gain 3.5. A strategy that adds one site at a time (greedy) or scores
#   one site at a time (ranking) never sees the gain; one that samples whole masks (reinforce,
#   cmaes) does, because at the start every site is on with p ~ 0.27, so ~7% of sampled masks
#   (2-3 of reinforce's 32 per step) hold both pair sites and are far better than the rest.
# * REDUNDANT_SITES give the same gain twice ("OR"): either one helps, the second adds nothing.
#   Ranking scores them alone and keeps both; greedy sees the second add only its cost.

ADDITIVE_SITES = [2, 7]
PAIR_SITES = [11, 17]
REDUNDANT_SITES = [3, 9]


def _sites(sites: list[int], n: int = N) -> torch.Tensor:
    mask = torch.zeros(n, dtype=torch.bool)
    mask[sites] = True
    return mask


class PairObjective:
    """loss = -(#ADDITIVE selected) + 0.25 * (#other selected) - 3.5 * [both PAIR selected].

    Optimum: ADDITIVE + PAIR, loss -2 + 0.5 - 3.5 = -5. Best set without the pair: ADDITIVE,
    loss -2; adding one pair site to it gives -1.75 (worse), adding both gives -5.
    """

    optimum = -5.0

    def __init__(self) -> None:
        self.additive, self.pair = _sites(ADDITIVE_SITES), _sites(PAIR_SITES)
        self.rows = 0

    @property
    def best(self) -> torch.Tensor:
        return self.additive | self.pair

    def __call__(self, masks: torch.Tensor) -> torch.Tensor:
        self.rows += masks.shape[0]
        hits = (masks & self.additive).sum(1).float()
        other = (masks & ~self.additive).sum(1).float()
        both = (masks & self.pair).sum(1) == 2
        return -hits + 0.25 * other - 3.5 * both.float()


def test_pair_objective_has_the_planted_values():
    obj = PairObjective()
    rows = torch.stack([obj.best, obj.additive, obj.additive | _sites([11]), _sites([17]), _sites([])])
    assert obj(rows).tolist() == [-5.0, -2.0, -1.75, 0.25, 0.0]


# Greedy fails for a structural reason, at any budget and seed: from ADDITIVE (loss -2) each
# single addition is worse (-1.75), so it stops with "strategy", well inside its budget, at
# loss -2, after the baseline and rounds over 24, 23 and 22 remaining sites.
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_cannot_see_a_gain_that_needs_two_sites(seed):
    obj = PairObjective()
    run = run_search(obj, N, "greedy", budget=1600, seed=seed)
    assert torch.equal(run.mask, obj.additive)
    assert run.best_loss == -2.0 and run.extra["current_loss"] == -2.0
    assert run.stop_reason == "strategy" and run.forward_passes == obj.rows == 1 + 24 + 23 + 22
    # a random subset of candidates per round does not help either: the round is still single sites
    sub = run_search(PairObjective(), N, "greedy", budget=1600, seed=seed, candidates=8)
    assert not bool((sub.mask & obj.pair).any()) and sub.best_loss >= -2.0


# Budgets measured on seeds 0-59 (python, this objective): reinforce at 1600 forward passes
# (50 steps of 32) found the optimum as best mask and as thresholded final mask 60/60 (pair
# probabilities >= 0.89; at 960: best mask 20/20 of seeds 0-19, threshold mask 19/20).
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reinforce_finds_a_pair_that_only_helps_together(seed):
    obj = PairObjective()
    run = run_search(obj, N, "reinforce", budget=1600, seed=seed, final="threshold")
    assert torch.equal(run.best_mask, obj.best) and run.best_loss == obj.optimum
    assert torch.equal(run.mask, obj.best)
    assert run.probabilities is not None
    assert bool((run.probabilities[obj.best] > 0.8).all()), run.probabilities
    # ... where greedy, with the same budget, stopped at -2
    assert run.best_loss < run_search(PairObjective(), N, "greedy", budget=1600).best_loss - 2.5


# CMA-ES: population 24 at 480 forward passes (20 generations) found the optimum 60/60 (seeds
# 0-59). With the default population (15 for 24 sites) it is less reliable: 18/20 at 600, one
# seed stuck at greedy's set ADDITIVE, one a useless site away from the optimum.
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cmaes_finds_a_pair_that_only_helps_together(seed):
    obj = PairObjective()
    run = run_search(obj, N, "cmaes", budget=480, seed=seed, population_size=24)
    assert torch.equal(run.mask, obj.best) and run.best_loss == obj.optimum
    assert run.forward_passes == obj.rows <= 480


def test_ranking_misses_a_pair_that_only_helps_together():
    obj = PairObjective()
    run = run_search(obj, N, "ranking", budget=N, k=4)
    effects = run.extra["effects"]
    # alone, each pair site looks exactly like a useless one: ranking cannot tell them apart
    assert effects[PAIR_SITES].tolist() == [0.25, 0.25]
    assert effects[~obj.best].unique().tolist() == [0.25]
    assert effects[ADDITIVE_SITES].tolist() == [-1.0, -1.0]
    # top 4 = the two additive sites + the two lowest-index ties, never the pair
    assert run.mask.nonzero().flatten().tolist() == [0, 1, 2, 7]
    assert float(obj(run.mask[None])) == -1.5  # worse than greedy (-2), far from -5
    default = run_search(PairObjective(), N, "ranking", budget=N)  # top 25%: 6 sites
    assert int(default.mask.sum()) == 6 and not bool((default.mask & obj.pair).any())


class RedundantObjective:
    """loss = -(#ADDITIVE selected) - 1.5 * [any REDUNDANT selected] + 0.25 * (#non-ADDITIVE).

    Optimum: ADDITIVE + one redundant site, loss -2 - 1.5 + 0.25 = -3.25; both redundant: -3.0.
    """

    def __init__(self) -> None:
        self.additive, self.redundant = _sites(ADDITIVE_SITES), _sites(REDUNDANT_SITES)

    def __call__(self, masks: torch.Tensor) -> torch.Tensor:
        hits = (masks & self.additive).sum(1).float()
        other = (masks & ~self.additive).sum(1).float()
        anyr = (masks & self.redundant).any(1)
        return -hits - 1.5 * anyr.float() + 0.25 * other


def test_ranking_keeps_redundant_sites_that_greedy_drops():
    obj = RedundantObjective()
    ranked = run_search(obj, N, "ranking", budget=N, k=4)
    effects = ranked.extra["effects"]
    assert effects[REDUNDANT_SITES].tolist() == [-1.25, -1.25]  # each alone looks best
    assert ranked.mask.nonzero().flatten().tolist() == [2, 3, 7, 9]
    assert float(obj(ranked.mask[None])) == -3.0
    greedy = run_search(obj, N, "greedy", budget=1000)
    # first round: site 3 (-1.25, ties with 9 go to the lower index), then 2 and 7; adding 9
    # only adds its cost, so greedy stops there
    assert greedy.extra["order"] == [3, 2, 7]
    assert greedy.best_loss == -3.25 < float(obj(ranked.mask[None]))


# -- determinism and budget --------------------------------------------------------------------


BUDGETS = {"reinforce": 300, "cmaes": 300, "greedy": 300, "ranking": N}


@pytest.mark.parametrize("name", BUILTINS)
def test_same_seed_same_result(name):
    def go(seed):
        return run_search(PlantedObjective(noise=0.3), N, name, budget=BUDGETS[name], seed=seed)

    a, b = go(1), go(1)
    assert torch.equal(a.mask, b.mask) and torch.equal(a.best_mask, b.best_mask)
    assert [h.loss for h in a.history] == [h.loss for h in b.history]
    assert a.forward_passes == b.forward_passes and a.seed == 1 and a.strategy == name


@pytest.mark.parametrize("name", ["reinforce", "cmaes"])
def test_different_seeds_differ(name):
    a = run_search(PlantedObjective(), N, name, budget=100, seed=0)
    b = run_search(PlantedObjective(), N, name, budget=100, seed=1)
    assert [h.loss for h in a.history] != [h.loss for h in b.history]


@pytest.mark.parametrize(
    ("name", "budget", "options"),
    [
        ("reinforce", 100, {}),  # 3 steps of 32 = 96; a 4th would exceed 100
        ("cmaes", 50, {"population_size": 16}),
        ("greedy", 60, {}),  # stops inside round 3
        ("greedy", 60, {"batch_size": 5}),
        ("ranking", 20, {"batch_size": 8}),  # 16 of 24 sites scored
        ("ranking", 1, {"batch_size": 1}),
    ],
)
def test_budget_never_exceeded(name, budget, options):
    obj = PlantedObjective()
    run = run_search(obj, N, name, budget=budget, **options)
    assert run.forward_passes == obj.rows <= budget
    assert run.history[-1].forward_passes == run.forward_passes
    assert run.stop_reason == "budget"
    assert run.budget == budget


def test_pickled_strategy_continues_identically():
    for strat in (Reinforce(N, seed=2), CMAES(N, seed=2), Greedy(N, seed=2, candidates=5)):
        obj = PlantedObjective()
        masks = strat.ask()
        strat.tell(masks, obj(masks))
        copy = pickle.loads(pickle.dumps(strat))
        for s in (strat, copy):
            masks = s.ask()
            s.tell(masks, PlantedObjective()(masks))
        assert torch.equal(strat.ask(), copy.ask())


# -- driver behaviour --------------------------------------------------------------------------


def test_bad_driver_configs():
    obj = PlantedObjective()
    with pytest.raises(ConfigError, match="budget must be an int >= 1, got 0"):
        run_search(obj, N, "reinforce", budget=0)
    with pytest.raises(ConfigError) as info:
        run_search(obj, N, "reinforce", budget=10)
    msg = str(info.value)
    assert "32" in msg and "budget is 10" in msg and "samples=" in msg
    with pytest.raises(ConfigError, match=r"raise budget to at least 25 .*candidates="):
        run_search(obj, 25, "greedy", budget=24)
    with pytest.raises(ConfigError, match="sparsity"):
        run_search(obj, N, "greedy", budget=100, sparsity=-0.1)
    with pytest.raises(ConfigError, match="only apply when the strategy is given by name"):
        run_search(obj, N, Greedy(N), budget=100, tol=0.1)
    with pytest.raises(ConfigError, match="n_sites=8 but run_search got n_sites=24"):
        run_search(obj, N, Greedy(8), budget=100)
    assert obj.rows == 0


def test_objective_errors():
    with pytest.raises(ShapeMismatchError, match=r"shape \[32\]"):
        run_search(lambda m: torch.zeros(3), N, "reinforce", budget=100)
    with pytest.raises(ObjectiveError, match="non-finite"):
        run_search(lambda m: torch.full((m.shape[0],), float("nan")), N, "greedy", budget=100)


def test_tell_does_not_mutate_and_checks_masks():
    for name in BUILTINS:
        strat = get_strategy(name, N, seed=0)
        masks = strat.ask()
        losses = PlantedObjective()(masks)
        masks_copy, losses_copy = masks.clone(), losses.clone()
        strat.tell(masks, losses)
        assert torch.equal(masks, masks_copy) and torch.equal(losses, losses_copy)
        with pytest.raises(StrategyStateError, match="without a pending ask"):
            strat.tell(masks, losses)
    strat = Reinforce(N)
    masks = strat.ask()
    with pytest.raises(StrategyStateError, match="differ from the last ask"):
        strat.tell(~masks, torch.zeros(masks.shape[0]))
    with pytest.raises(ShapeMismatchError, match="one loss per mask"):
        strat.tell(masks, torch.zeros(3))


def test_sparsity_penalty_is_applied():
    # each planted site gains 1 but costs 2: the empty set wins
    run = run_search(PlantedObjective(), N, "greedy", budget=200, sparsity=2.0)
    assert int(run.mask.sum()) == 0 and run.forward_passes == 1 + N
    run = run_search(PlantedObjective(), N, "ranking", budget=N, k=1, sparsity=0.5)
    assert run.history[0].best_loss == pytest.approx(-1.0 + 0.5)


def test_heldout_and_callback():
    calls = []
    progress: list[SearchProgress] = []

    def heldout(mask: torch.Tensor) -> float:
        calls.append(mask.clone())
        return float((mask & planted_mask()).sum())

    obj = PlantedObjective()
    run = run_search(
        obj, N, "reinforce", budget=320, heldout=heldout, eval_every=3, callback=progress.append
    )
    assert run.forward_passes == obj.rows == 320  # heldout calls are not in the budget
    assert run.heldout_evaluations == len(calls) >= 1
    assert [p.step for p in progress] == list(range(1, 11))
    assert progress[-1].forward_passes == 320 and progress[-1].budget == 320
    assert [h.step for h in run.history if h.heldout is not None] == [3, 6, 9, 10]
    assert run.best_heldout == float((run.best_mask & planted_mask()).sum())
    assert run.heldout == float((run.mask & planted_mask()).sum())
    assert progress[-1].best_loss == run.best_loss
    assert progress[-1].n_sites == int(run.best_mask.sum())


def test_strategy_instance_and_should_stop():
    strat = Reinforce(N, seed=0, samples=8, max_steps=5)
    run = run_search(PlantedObjective(), N, strat, budget=1000)
    assert run.stop_reason == "strategy" and len(run.history) == 5 and run.forward_passes == 40
    assert run.strategy == "reinforce"


# -- custom strategies -------------------------------------------------------------------------


def test_module_docstring_examples_run(clean_registry):
    """The README example: a random-search strategy registered by name runs through the driver."""
    result = doctest.testmod(search, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
    assert "random" in list_strategies()


def test_custom_strategy_via_driver(clean_registry):
    @register_strategy("first_k")
    class FirstK(BaseStrategy):
        """Asks the masks 'first j sites' for j = 1..n in one batch."""

        def __init__(self, n_sites: int, *, seed: int = 0) -> None:
            super().__init__(n_sites, seed=seed)
            self.best = torch.zeros(n_sites, dtype=torch.bool)

        @property
        def population_size(self) -> int:
            return self.n_sites

        def ask(self) -> torch.Tensor:
            return self._remember(torch.ones(self.n_sites, self.n_sites, dtype=torch.bool).tril())

        def tell(self, masks: torch.Tensor, losses: torch.Tensor) -> None:
            masks, losses = self._check_tell(masks, losses)
            self.best = masks[int(losses.argmin())]
            self._generation += 1

        def should_stop(self) -> bool:
            return self.generation >= 1

        def result(self) -> StrategyResult:
            return StrategyResult(mask=self.best.clone())

    run = run_search(PlantedObjective(), N, "first_k", budget=100)
    assert run.strategy == "first_k" and run.forward_passes == N
    assert run.mask.nonzero().flatten().tolist() == [0, 1, 2]  # -1 + 0.5: ties j=8, first wins
    with pytest.raises(ConfigError, match=r"valid options: \(none\)"):
        get_strategy("first_k", N, k=3)


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("n", [1, 2, 300])
def test_any_space_size(name, n):
    obj = PlantedObjective(n=max(n, 21))
    run = run_search(
        lambda m: obj(torch.nn.functional.pad(m, (0, max(0, 21 - n)))), n, name, budget=400
    )
    assert run.mask.shape == (n,) and run.best_mask.shape == (n,)
    assert run.mask.dtype == torch.bool and 1 <= run.forward_passes <= 400
