"""``evo`` with several objectives: the population as groups, each an evosax algorithm with its
own Chebyshev weights (jaxhpo.strategies.evo_groups), so the groups spread over the front."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from evosax.algorithms import CMA_ES
from test_evo import _generations, _Resumed

from jaxhpo.objectives import parse_objectives, spread_weights
from jaxhpo.simulate import simulate
from jaxhpo.space import Float, Space
from jaxhpo.strategies.evo import EvoSearch
from jaxhpo.strategies.evo_groups import default_groups
from jaxhpo.strategies.parego import chebyshev
from jaxhpo.strategies.search import RandomSearch

SPACE = Space({"a": Float(0, 1), "b": Float(0, 1)})
OBJ = parse_objectives({"f1": "min", "f2": "min"})


def zdt1(hp):
    """ZDT1 in two dimensions: the front is f2 = 1 - sqrt(f1) at b = 0."""
    a, b = np.asarray(hp["a"]), np.asarray(hp["b"])
    g = 1 + 9 * b
    return {"f1": a, "f2": g * (1 - np.sqrt(a / g))}


def curve(hp, ids, t, rng):
    return zdt1(hp)


def _study(strategy, generations, size=8, seed=0):
    return simulate(
        strategy, SPACE, curve, steps=generations, segment_steps=1, size=size, seed=seed,
        objectives=OBJ,
    )  # fmt: skip


def test_default_groups_hold_at_least_four_members():
    assert [default_groups(n, True) for n in (2, 4, 6, 8, 12, 16, 32)] == [1, 2, 2, 2, 3, 4, 8]
    assert default_groups(16, False) == 1


def test_each_group_is_cma_es_on_its_own_chebyshev_weights():
    """Two groups of 4: each group's proposals equal CMA-ES driven by hand with the group's
    key (the root key folded with the group's index) and its weighting of the generation."""
    seed, n = 3, 3
    ours = _generations(_study(EvoSearch(), n, seed=seed), SPACE, n)
    W = spread_weights(2, 2, seed)
    root = jax.random.key(seed)
    es = CMA_ES(population_size=4, solution=jnp.zeros(2))
    params = es.default_params.replace(std_init=1.0)
    xs, states, keys = [], [], []
    with jax.numpy_rank_promotion("allow"):
        for k in range(2):
            kd = jax.random.fold_in(root, k)
            k_init, k_ask, _ = jax.random.split(jax.random.fold_in(kd, 0), 3)
            state = es.init(k_init, jnp.zeros(2), params)
            x, state = es.ask(k_ask, state, params)
            xs.append(x), states.append(state), keys.append(kd)
        for g in range(n):
            x_all = np.concatenate([np.asarray(x) for x in xs])
            hp = SPACE.from_unconstrained(x_all.astype(np.float64))
            np.testing.assert_allclose(
                ours[g], np.stack([hp["a"], hp["b"]], -1), rtol=1e-5, err_msg=f"generation {g}"
            )
            f = zdt1(hp)
            Y = np.stack([f["f1"], f["f2"]], 1)
            for k in range(2):
                fit = chebyshev(Y, np.zeros(8), W[k])[4 * k : 4 * k + 4]
                k_tell = jax.random.split(jax.random.fold_in(keys[k], g), 3)[2]
                k_ask = jax.random.split(jax.random.fold_in(keys[k], g + 1), 3)[1]
                states[k], _ = es.tell(
                    k_tell, xs[k], jnp.asarray(fit, jnp.float32), states[k], params
                )
                xs[k], states[k] = es.ask(k_ask, states[k], params)


def test_groups_spread_over_the_front():
    """Four groups of 4 on ZDT1: the group weighting f1 alone ends at smaller f1 than the one
    weighting f2 alone, and the other way round."""
    res = _study(EvoSearch(), 12, size=16)
    last = res.table[res.table["step"] == res.table["step"].max()].sort_values("member")
    f1, f2 = last["val_f1"].to_numpy(), last["val_f2"].to_numpy()
    first, final = slice(0, 4), slice(12, 16)
    assert np.median(f1[first]) < np.median(f1[final])
    assert np.median(f2[final]) < np.median(f2[first])


def test_hypervolume_beats_random_search_at_equal_evaluations():
    """Median over 5 seeds of the hypervolume of 10 generations x 16 members against 160
    random samples (reference point (1.1, 10.1))."""

    def hv(make, steps, size):
        return np.median([
            simulate(
                make(), SPACE, curve, steps=steps, segment_steps=1, size=size, seed=s,
                objectives=OBJ, reference=[1.1, 10.1],
            ).hypervolume
            for s in range(5)
        ])  # fmt: skip

    assert hv(EvoSearch, 10, 16) > hv(RandomSearch, 1, 160)


def test_grouped_state_round_trips_through_checkpoint():
    make = lambda: EvoSearch().for_study(OBJ)  # noqa: E731
    plain = _study(make(), 4)
    resumed = _study(_Resumed(make), 4)
    for a, b in zip(_generations(plain, SPACE, 4), _generations(resumed, SPACE, 4), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("groups", "match"), [(3, "do not split"), (8, "at least 2"), (0, ">= 1")])
def test_bad_groups_name_the_field(groups, match):
    with pytest.raises(ValueError, match="strategy.groups") as e:
        EvoSearch(groups=groups).for_study(OBJ).init(0, SPACE, 8)
    assert match in str(e.value)
