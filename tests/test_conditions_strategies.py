"""Every strategy respects conditional dimensions (``when``), driven through the simulator.

The space codes the optimizer as a numeric choice (0 sgd, 1 momentum, 2 adam), as a run's
population does; ``momentum`` is active only for code 1, ``b1`` only for code 2. The learning
curve refuses any member whose entries disagree with the conditions (a value where a dimension
is inactive, NaN where it is active), so a strategy that samples, perturbs or proposes an
inactive dimension fails here."""

from __future__ import annotations

import numpy as np
import pytest

from jaxhpo.simulate import simulate
from jaxhpo.space import Space
from jaxhpo.strategies import (
    BOHB,
    PB2,
    PBT,
    BayesOpt,
    EvoSearch,
    GridSearch,
    RandomSearch,
    Reinforce,
    SobolSearch,
    SuccessiveHalving,
)
from jaxhpo.strategies.reinforce import policy_structure

SPACE = Space.from_config(
    {
        "optimizer": [0, 1, 2],
        "lr": "loguniform(1e-3, 1.0)",
        "momentum": {"type": "float", "low": 0.5, "high": 0.99, "when": {"optimizer": [1]}},
        "b1": {"type": "float", "low": 0.8, "high": 0.95, "when": {"optimizer": [2]}},
    }
)


def _check(hp):
    code = np.asarray(hp["optimizer"], np.float64)
    for name, active in (("momentum", code == 1), ("b1", code == 2)):
        x = np.asarray(hp[name], np.float64)
        assert np.all(np.isnan(x) == ~active), f"{name}: {x} for optimizer codes {code}"
        assert np.all((x[active] >= SPACE[name].low) & (x[active] <= SPACE[name].high))


def _curve(hp, ids, t, rng):
    """Best: momentum (code 1) with momentum near 0.9 and lr near 0.1."""
    _check(hp)
    code = np.asarray(hp["optimizer"], np.float64)
    m = np.nan_to_num(np.asarray(hp["momentum"], np.float64), nan=0.0)
    loss = (np.log10(hp["lr"]) + 1) ** 2 + np.where(code == 1, (m - 0.9) ** 2, 1.0)
    return loss + 1.0 / (1.0 + t)


STRATEGIES = {
    "random": lambda: RandomSearch(),
    "sobol": lambda: SobolSearch(),
    "bo": lambda: BayesOpt(candidates=64, fit_steps=20),
    "evo": lambda: EvoSearch(algorithm="cma_es"),
    "rl": lambda: Reinforce(),
    "pbt": lambda: PBT(ready_steps=1, explore_all=True, resample_prob=0.5),
    "halving": lambda: SuccessiveHalving(eta=3, min_steps=1, max_steps=9),
    "pb2": lambda: PB2(ready_steps=1, min_data=4),
    # two Hyperband iterations: the second one's members come from the model
    "bohb_gp": lambda: BOHB(eta=3, min_steps=1, max_steps=9, model="gp", min_points=9),
    "bohb_tpe": lambda: BOHB(eta=3, min_steps=1, max_steps=9, model="tpe", min_points=9),
}
STEPS = {"halving": 9, "bohb_gp": 18, "bohb_tpe": 18, "pb2": 8}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_never_sets_an_inactive_dimension(name):
    steps = STEPS.get(name, 4)
    size = None if name.startswith("bohb") else 9  # bohb: Hyperband's brackets decide
    res = simulate(
        STRATEGIES[name](), SPACE, _curve, steps=steps, segment_steps=1, size=size, seed=1
    )
    if name.startswith("bohb"):
        gens = [e for e in res.events if e["kind"] == "generation"]
        assert gens and gens[-1]["proposal"] == name.split("_")[1], "the model proposed"
    table = res.table
    _check({k: table[k].to_numpy() for k in SPACE.searched})
    assert len(set(table["optimizer"])) >= 2, "the choice itself was searched"
    assert np.isfinite(res.best_loss)


def test_pbt_explores_the_choice_and_fills_what_it_activates():
    """PBT moves members between optimizer codes; a member that moves to momentum gets a
    momentum drawn from the space and loses its b1 (the curve checks every member)."""
    res = simulate(
        PBT(ready_steps=1, explore_all=True), SPACE, _curve, steps=6, segment_steps=1, size=8
    )
    moved = [
        e
        for e in res.events
        if e["kind"] == "explore" and e["before"]["optimizer"] != e["after"]["optimizer"]
    ]
    assert moved, "no member changed its optimizer"


def test_grid_runs_only_active_combinations():
    res = simulate(GridSearch(points_per_dim=2), SPACE, _curve, steps=1, segment_steps=1, size=None)
    # sgd: 2 lr; momentum: 2 lr x 2 momentum; adam: 2 lr x 2 b1
    assert res.table["member"].nunique() == 2 + 4 + 4


def test_optuna_asks_define_by_run():
    pytest.importorskip("optuna")
    from jaxhpo.strategies import OptunaSearch

    strategy = OptunaSearch(sampler="tpe")
    res = simulate(strategy, SPACE, _curve, steps=4, segment_steps=1, size=8, seed=0)
    _check({k: res.table[k].to_numpy() for k in SPACE.searched})
    trials = strategy.study.get_trials()
    for t in trials:  # each trial holds only its active parameters
        code = t.params["optimizer"]
        assert ("momentum" in t.params) == (code == 1) and ("b1" in t.params) == (code == 2)


@pytest.mark.slow
def test_hypergrad_moves_only_active_continuous_dimensions(lm_task):
    """The unrolled hypergradient strategy on a mixed population (SGD and momentum, one
    program): the choice is held, ``lr`` moves for everyone, ``momentum`` only where active
    (NaN stays NaN for the SGD members)."""
    import jax

    from jaxhpo.population import Population
    from jaxhpo.strategies.hypergrad import UnrolledHypergrad

    space = Space.from_config(
        {
            "optimizer": [0, 1],
            "lr": "loguniform(1e-3, 1.0)",
            "momentum": {"type": "float", "low": 0.5, "high": 0.95, "when": {"optimizer": [1]}},
        }
    )
    strat = UnrolledHypergrad(outer_lr=0.5, outer="sgd")
    state, cols = strat.init(0, space, 2)
    population = Population(lm_task, ("sgd", "momentum"), "constant", mode="vmap")
    hp = {"optimizer": [0.0, 1.0], "lr": [0.1, 0.1], "momentum": [np.nan, 0.9]}
    pop = population.init(jax.random.key(0), np.arange(2), hp)
    data = (lm_task.train_data, lm_task.splits.val)
    state, _, losses = strat.train_segment(state, population, pop, data, 2, 2)
    new = state.proposed
    assert set(new) == {"lr", "momentum"} and np.all(np.isfinite(np.asarray(losses)))
    assert np.all(new["lr"] != np.float32(0.1))
    assert np.isnan(new["momentum"][0]) and np.isfinite(new["momentum"][1])
    assert new["momentum"][1] != np.float32(0.9)


def test_reinforce_policy_ignores_coordinates_that_never_reached_a_member():
    """``b1`` is active only under optimizer code 1; when every member drew code 0 its draws
    reached no member, so REINFORCE's update leaves its policy (mean and std) where it was,
    while ``lr``'s moves."""
    from jaxhpo.strategies.base import Observation

    space = Space.from_config(
        {
            "optimizer": [0, 1],
            "lr": "loguniform(1e-3, 1.0)",
            "b1": {"type": "float", "low": 0.8, "high": 0.95, "when": {"optimizer": [1]}},
        }
    )
    strat = Reinforce(learning_rate=0.5)
    strat.check(4, 1)
    state, _ = strat.init(0, space, 8)
    state = state.replace(idx=np.zeros_like(state.idx))  # every member drew optimizer code 0
    cols = strat._decode(space, state.z, state.idx)
    assert np.all(np.isnan(cols["b1"]))
    loss = (np.log10(cols["lr"]) + 1) ** 2
    ids = np.arange(8)
    obs = Observation(1, ids, cols, {"loss": loss}, np.zeros(8, bool), np.ones(8, bool))
    new, _ = strat.update(state, obs)
    gauss = policy_structure(space).gauss
    j_lr, j_b1 = gauss.index("lr"), gauss.index("b1")
    for field in ("mu", "log_std"):
        before, after = state.params[field], new.params[field]
        assert after[j_b1] == before[j_b1], field
        assert after[j_lr] != before[j_lr], field


def test_evo_mean_ignores_coordinates_that_never_reached_a_member():
    """CMA-ES: when every member drew optimizer code 0, ``b1``'s draws reached no member; the
    ES is told them at its mean, so its mean does not move along ``b1`` (``lr``'s does)."""
    from jaxhpo.strategies.base import Observation

    space = Space.from_config(
        {
            "optimizer": [0, 1],
            "lr": "loguniform(1e-3, 1.0)",
            "b1": {"type": "float", "low": 0.8, "high": 0.95, "when": {"optimizer": [1]}},
        }
    )
    strat = EvoSearch(algorithm="cma_es")
    strat.check(4, 1)
    state, _ = strat.init(0, space, 8)
    j_opt, j_lr, j_b1 = (space.searched.index(n) for n in ("optimizer", "lr", "b1"))
    x = np.array(state.x)
    x[:, j_opt] = -3.0  # unit 0.05: code 0 for everyone
    state = state.replace(x=x)
    cols = strat._decode(space, state.x)
    assert np.all(cols["optimizer"] == 0) and np.all(np.isnan(cols["b1"]))
    loss = (np.log10(cols["lr"]) + 1) ** 2
    obs = Observation(1, np.arange(8), cols, {"loss": loss}, np.zeros(8, bool), np.ones(8, bool))
    new, _ = strat.update(state, obs)
    before, after = np.asarray(state.es["mean"]), np.asarray(new.es["mean"])
    assert after[j_b1] == before[j_b1]
    assert after[j_lr] != before[j_lr]


def test_pes_mean_ignores_coordinates_that_never_reached_a_member():
    """PES: the gradient estimate leaves out perturbations of inactive coordinates."""
    from jaxhpo.strategies import PersistentES
    from jaxhpo.strategies.base import Observation

    space = Space.from_config(
        {
            "optimizer": [0, 1],
            "lr": "loguniform(1e-3, 1.0)",
            "b1": {"type": "float", "low": 0.8, "high": 0.95, "when": {"optimizer": [1]}},
        }
    )
    strat = PersistentES(outer_lr=0.5, outer="sgd")
    state, _ = strat.init(0, space, 8)
    j_opt, j_lr, j_b1 = (space.searched.index(n) for n in ("optimizer", "lr", "b1"))
    x = np.array(state.x)
    x[:, j_opt] = -3.0  # code 0 for everyone
    state = state.replace(x=x)
    cols = strat._decode(space, state.x)
    assert np.all(np.isnan(cols["b1"]))
    loss = (np.log10(cols["lr"]) + 1) ** 2
    obs = Observation(1, np.arange(8), cols, {"loss": loss}, np.zeros(8, bool), np.ones(8, bool))
    new, upd = strat.update(state, obs)
    before, after = np.asarray(state.es["mean"]), np.asarray(new.es["mean"])
    assert after[j_b1] == before[j_b1]
    assert after[j_lr] != before[j_lr]


def test_pbt_decision_in_the_compiled_loop_respects_the_conditions():
    """PBT's decision as a pure function (what the compiled loop runs, jitted): every member
    explores; members that land on another optimizer code get the dimensions it activates
    drawn from the space and lose the others."""
    import jax

    strat = PBT(ready_steps=1, explore_all=True, resample_prob=0.5)
    state, cols = strat.init(0, SPACE, 16)
    hp = {k: np.asarray(v, np.float32) for k, v in cols.items() if k in SPACE.searched}
    fit = np.linspace(0.0, 1.0, 16).astype(np.float32)
    decide = jax.jit(strat.device_update)
    for step in (1, 2, 3):
        state, _, _, _, new = decide(state, np.int32(step), fit, hp)
        new = {k: np.asarray(v) for k, v in new.items()}
        _check(new)
        hp = new
    assert len(set(hp["optimizer"])) >= 2
