"""The evosax adapter (``strategy.name: evo``): a thin adapter, better than random search on
analytic functions, checkpointable, with errors that name the config field.

Everything runs on analytic curves through :func:`jaxhpo.simulate.simulate` (no Transformer);
all studies share P=16 members and D=3 searched dimensions, so each algorithm compiles once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from evosax.algorithms import CMA_ES, PSO
from flax import serialization
from searchbench import BOWL_SPACE, ROSEN_SPACE, bowl, curve, rosenbrock

from jaxhpo.checkpoint import pack_tree, unpack_tree
from jaxhpo.config import StrategyConfig, TrainConfig
from jaxhpo.run.prepare import build_strategy
from jaxhpo.simulate import simulate
from jaxhpo.space import Choice, Float, Int, Space
from jaxhpo.strategies.base import Observation, Strategy
from jaxhpo.strategies.evo import EvoSearch, resolve_algorithm, shape_fitness
from jaxhpo.strategies.search import RandomSearch

P = 16  # members (even: OpenAI-ES and PGPE sample antithetic pairs)
G = 12  # generations in the comparison with random search
SEEDS = range(10)

_curve = curve


def _keys(seed, g):
    root = jax.random.key(seed)
    return jax.random.split(jax.random.fold_in(root, g), 3)  # k_init, k_ask, k_tell


def _generations(result, space, n):
    """The hyperparameters each generation trained with (segment_steps = generation_steps = 1)."""
    t = result.table
    return [
        np.stack([t[t["step"] == g + 1][k].to_numpy() for k in space.searched], -1)
        for g in range(n)
    ]


# -- 1. a thin adapter ---------------------------------------------------------------------------


def _by_hand(algo, space, fn, seed, n, sigma=1.0):
    """Drives the evosax algorithm directly with the keys the module docstring documents."""
    D = len(space.searched)
    es = {"cma_es": CMA_ES, "pso": PSO}[algo](population_size=P, solution=jnp.zeros(D))
    params = es.default_params
    if hasattr(params, "std_init"):
        params = params.replace(std_init=sigma)
    out = []
    with jax.numpy_rank_promotion("allow"):
        k_init, k_ask, _ = _keys(seed, 0)
        if algo == "pso":
            x, state = sigma * jax.random.normal(k_ask, (P, D)), None
        else:
            state = es.init(k_init, jnp.zeros(D), params)
            x, state = es.ask(k_ask, state, params)
        for g in range(n):
            hp = space.from_unconstrained(np.asarray(x, np.float64))
            out.append(np.stack([hp[k] for k in space.searched], -1))
            f = jnp.asarray(fn(hp), jnp.float32)
            k_tell = _keys(seed, g)[2]
            if state is None:
                state = es.init(k_tell, x, f, params)
            else:
                state, _ = es.tell(k_tell, x, f, state, params)
            x, state = es.ask(_keys(seed, g + 1)[1], state, params)
    return out


@pytest.mark.parametrize("algo", ["cma_es", "pso"])
def test_proposals_equal_evosax_driven_by_hand(algo):
    n, seed = 3, 7
    res = simulate(
        EvoSearch(algorithm=algo),
        BOWL_SPACE,
        _curve(bowl),
        steps=n,
        segment_steps=1,
        size=P,
        seed=seed,
    )
    ours = _generations(res, BOWL_SPACE, n)
    hand = _by_hand(algo, BOWL_SPACE, bowl, seed, n)
    for g in range(n):
        np.testing.assert_allclose(ours[g], hand[g], rtol=1e-6, err_msg=f"generation {g}")
    assert not np.allclose(ours[0], ours[1])  # it did move


# -- 2. better than random search ----------------------------------------------------------------

ALGORITHMS = ["cma_es", "sep_cma_es", "open_es", "snes", "pgpe", "simple_ga", "pso"]


def test_beats_random_search_at_equal_evaluations():
    """Median best regret over 10 seeds, G generations of P members vs G*P random samples."""
    margins, failures = {}, []
    for fname, space, fn in (("bowl", BOWL_SPACE, bowl), ("rosenbrock", ROSEN_SPACE, rosenbrock)):
        random = np.median(
            [
                simulate(
                    RandomSearch(), space, _curve(fn), steps=1, segment_steps=1, size=G * P, seed=s
                ).best_loss
                for s in SEEDS
            ]
        )
        for algo in ALGORITHMS:
            runs = [
                simulate(
                    EvoSearch(algorithm=algo),
                    space,
                    _curve(fn),
                    steps=G,
                    segment_steps=1,
                    size=P,
                    seed=s,
                )
                for s in SEEDS
            ]
            assert all(r.member_steps == G * P for r in runs)
            regret = np.median([r.best_loss for r in runs])  # the minimum is 0
            margins[(fname, algo)] = (regret, random, regret / random)
            if not regret < random:
                failures.append(f"{algo} on {fname}: {regret:.4g} vs random {random:.4g}")
    print(f"\nmedian regret over {len(SEEDS)} seeds, {G} generations x {P} vs {G * P} random:")
    for (fname, algo), (r, rnd, ratio) in margins.items():
        print(f"  {fname:10s} {algo:11s} {r:10.4g}  random {rnd:10.4g}  ratio {ratio:.3f}")
    assert not failures, failures


# -- 3. checkpoint round trip --------------------------------------------------------------------


class _Resumed(Strategy):
    """Packs the state after every update and restores it into a fresh, re-initialised strategy,
    as a resumed run does."""

    name = "resumed"

    def __init__(self, make):
        self.make, self.inner = make, make()

    def check(self, train_steps, segment_steps):
        self.inner.check(train_steps, segment_steps)

    def init(self, seed, space, size):
        self.args = (seed, space, size)
        return self.inner.init(seed, space, size)

    def update(self, state, obs):
        state, upd = self.inner.update(state, obs)
        text = pack_tree(state)
        self.inner = self.make()
        fresh, _ = self.inner.init(*self.args)  # as the run loop does on resume
        return self.inner.restore_state(unpack_tree(text), fresh), upd


def _leaves_are_plain(tree):
    tree = serialization.to_state_dict(tree)  # what pack_tree stores
    if isinstance(tree, dict):
        return all(isinstance(k, str) and _leaves_are_plain(v) for k, v in tree.items())
    return isinstance(tree, np.ndarray | np.generic)


@pytest.mark.parametrize("algo", ["cma_es", "open_es", "pso"])
def test_state_round_trips_through_checkpoint(algo):
    def run(strategy):
        return simulate(
            strategy, BOWL_SPACE, _curve(bowl), steps=4, segment_steps=1, size=P, seed=3
        )

    plain, resumed = (
        run(EvoSearch(algorithm=algo)),
        run(_Resumed(lambda: EvoSearch(algorithm=algo))),
    )
    for a, b in zip(
        _generations(plain, BOWL_SPACE, 4), _generations(resumed, BOWL_SPACE, 4), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    state, _ = EvoSearch(algorithm=algo).init(0, BOWL_SPACE, P)
    assert _leaves_are_plain(state)


# -- 4. errors name the field --------------------------------------------------------------------


def test_errors_name_the_field():
    with pytest.raises(ValueError, match=r"strategy\.algorithm: unknown 'nope'.*cma_es") as e:
        EvoSearch(algorithm="nope")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"strategy\.generation_steps.*train\.segment_steps=2"):
        EvoSearch(generation_steps=3).check(12, 2)
    with pytest.raises(ValueError, match=r"strategy\.generation_steps.*train\.steps=10"):
        EvoSearch(generation_steps=4).check(10, 2)
    with pytest.raises(ValueError, match=r"strategy\.ready_steps.*train\.segment_steps=2"):
        EvoSearch(schedule="online", ready_steps=3).check(12, 2)
    with pytest.raises(ValueError, match=r"population\.size"):
        EvoSearch().init(0, BOWL_SPACE, 1)
    with pytest.raises(ValueError, match=r"population\.size.*Open_ES"):
        EvoSearch(algorithm="open_es").init(0, BOWL_SPACE, 7)  # antithetic pairs need an even size
    with pytest.raises(ValueError, match=r"strategy\.schedule"):
        EvoSearch(schedule="sometimes")
    with pytest.raises(ValueError, match=r"strategy\.sigma_init"):
        EvoSearch(sigma_init=0.0)
    with pytest.raises(ValueError, match=r"strategy\.params\.nope"):
        EvoSearch(params={"nope": 1.0}).init(0, BOWL_SPACE, P)
    with pytest.raises(ValueError, match=r"strategy\.points\[0\]\.zz"):
        EvoSearch(points=[{"zz": 1.0}]).init(0, BOWL_SPACE, P)


def test_names_and_config():
    assert resolve_algorithm("CMA-ES") == resolve_algorithm("cma_es") == "CMA_ES"
    assert resolve_algorithm("ga") == resolve_algorithm("SimpleGA") == "SimpleGA"
    assert resolve_algorithm("de") == "DifferentialEvolution"
    s = build_strategy(StrategyConfig(name="evo"), TrainConfig())  # defaults
    cfg = s.config
    assert (s.algorithm, cfg.schedule, cfg.generation_steps) == ("CMA_ES", "generational", None)
    evo_fields = {"algorithm": "pso", "schedule": "online", "sigma_init": 0.5}
    s = build_strategy(StrategyConfig(name="evo", options=evo_fields), TrainConfig())
    assert (s.algorithm, s.config.schedule, s.config.sigma_init) == ("PSO", "online", 0.5)


# -- 5. generational vs online -------------------------------------------------------------------


def test_generational_reinitialises_every_member_and_logs_generations():
    space = Space({"a": Float(-5, 5), "n": Int(1, 8), "k": Choice((2.0, 4.0, 8.0))})
    res = simulate(
        EvoSearch(algorithm="cma_es", generation_steps=2),
        space,
        lambda hp, ids, t, rng: (hp["a"] - 1) ** 2 + hp["n"] / t,
        steps=6,
        segment_steps=1,
        size=P,
        seed=0,
    )
    t = res.table
    space.validate_values({k: t[k].to_numpy() for k in space.searched})  # ints, choices decode
    assert t["member"].nunique() == 3 * P  # three generations of fresh members
    assert t["t"].max() == 2
    gens = [e for e in res.events if e["kind"] == "generation"]
    assert [e["generation"] for e in gens] == [0, 1] and [e["step"] for e in gens] == [2, 4]
    assert set(gens[0]["mean"]) == set(gens[0]["best"]) == {"a", "n", "k"}
    assert gens[0]["best_fitness"] == pytest.approx(t[t["step"] == 2]["val_loss"].min())


def test_online_changes_live_members_without_reinit():
    res = simulate(
        EvoSearch(algorithm="cma_es", schedule="online", ready_steps=2),
        BOWL_SPACE,
        lambda hp, ids, t, rng: bowl(hp) + 1.0 / t,
        steps=6,
        segment_steps=1,
        size=P,
        seed=0,
    )
    t = res.table
    assert t["member"].nunique() == P  # the same members throughout
    np.testing.assert_array_equal(res.members["steps"], 6)  # their weights kept training
    hp = _generations(res, BOWL_SPACE, 6)
    np.testing.assert_array_equal(hp[0], hp[1])  # no change between ready steps
    assert not np.allclose(hp[1], hp[2]) and not np.allclose(hp[3], hp[4])  # new values at 2, 4
    assert [e["step"] for e in res.events if e["kind"] == "generation"] == [2, 4]


def test_online_reinitialises_only_diverged_members():
    def curve(hp, ids, t, rng):
        return np.where(ids == 3, np.nan, bowl(hp))  # member 3 diverges

    res = simulate(
        EvoSearch(algorithm="cma_es", schedule="online"),
        BOWL_SPACE,
        curve,
        steps=3,
        segment_steps=1,
        size=P,
        seed=0,
    )
    assert sorted(res.members["member"]) == sorted([*range(P)][:3] + [*range(4, P)] + [P])


def test_diverged_fitness_is_worst_plus_range():
    np.testing.assert_array_equal(shape_fitness(np.array([1.0, np.inf, 3.0])), [1, 5, 3])
    np.testing.assert_array_equal(shape_fitness(np.array([2.0, np.inf])), [2, 3])
    np.testing.assert_array_equal(shape_fitness(np.array([np.inf, np.inf])), [0, 0])
    obs = Observation(
        step=1,
        member_id=np.arange(2),
        hparams={},
        metrics={"loss": np.array([np.nan, 1.0])},
        diverged=np.array([True, False]),
        active=np.ones(2, bool),
    )
    np.testing.assert_array_equal(shape_fitness(obs.fitness()), [2, 1])
