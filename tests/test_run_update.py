"""One check-and-apply of a strategy's decision (jaxhpo/run/update.py), shared by the host loop,
the compiled loop (its device-side twin) and the simulator."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhpo.population import Population
from jaxhpo.run.compiled import compiled_program
from jaxhpo.run.update import DeviceUpdate, apply_device_update, apply_update, check_update
from jaxhpo.simulate import simulate
from jaxhpo.space import Space
from jaxhpo.strategies import PopulationUpdate, Strategy
from jaxhpo.tasks import ToyQuadraticTask

SPACE = Space.from_config({"x0": "uniform(0.0, 1.0)", "x1": "uniform(0.0, 1.0)"})
BAD_UPDATES = [
    (PopulationUpdate(parents=np.array([0.0, 1.0, 2.0, 3.0])), "parents must be integers"),
    (PopulationUpdate(active=np.array([1, 1, 0, 1])), "active must be booleans"),
    (PopulationUpdate(hparams={"x0": np.full(4, np.inf)}), "hparams.x0 has non-finite"),
    (PopulationUpdate(hparams={"x0": np.zeros(3)}), r"hparams.x0 must be a scalar or \(4,\)"),
    (PopulationUpdate(keep=np.array([1, 1])), "keep lists a slot twice"),
    (PopulationUpdate(grow=-1), "grow must be an integer >= 0"),
    (PopulationUpdate(grow=2), r"grow needs reinit of shape \(6,\)"),
    (PopulationUpdate(grow=1, reinit=np.eye(5, dtype=bool)[0]), "every slot that grow adds"),
    (PopulationUpdate(grow=1, reinit=np.ones(5, bool), active=np.ones(4, bool)), "active must"),
]


class _Sends(Strategy):
    """Sends one fixed update after the first segment."""

    def __init__(self, upd):
        self.upd = upd

    def init(self, seed, space, size):
        return {}, space.sample(seed, size)

    def update(self, state, obs):
        return state, self.upd


@pytest.mark.parametrize(("upd", "message"), BAD_UPDATES)
def test_simulate_checks_updates_like_the_run_loop(upd, message):
    """Regression: the simulator had its own, laxer copy of the check (float parents, integer
    masks and non-finite hyperparameters went through); it now calls the run loop's."""
    with pytest.raises(ValueError, match=message):
        check_update(upd, 4, ("x0", "x1"))
    curve = lambda hp, ids, t, rng: 1.0 / t
    with pytest.raises(ValueError, match=f"^strategy update: {message}"):
        simulate(_Sends(upd), SPACE, curve, steps=2, segment_steps=1, size=4)


@pytest.fixture(scope="module")
def toy():
    """Three trained members of PBT's toy problem (their parameters differ by ``h``)."""
    task = ToyQuadraticTask()
    popn = Population(task, "sgd", "constant", mode="vmap", devices=1, searched=("h0", "h1"))
    hp = popn.full_hparams({"lr": [0.05, 0.1, 0.2], "h0": [1.0, 0.0, 0.5]}, 3)
    pop = popn.init(jax.random.key(0), np.arange(3), hp)
    pop, _ = popn.train_segment(pop, task.train_data, 2)
    return task, popn, pop


def test_device_update_applies_like_the_host_update(toy):
    """The compiled loop's ``apply_device_update`` and the host's ``apply_update`` give the same
    population for the same decision (copy, then new hyperparameters)."""
    _, popn, pop = toy
    parents = np.array([2, 0, 2], np.int32)
    new = {
        "h0": np.array([0.25, 1.5, 2.0], np.float32),
        "lr": np.array([0.3, 0.1, 0.4], np.float32),
    }
    upd = PopulationUpdate(parents=parents, hparams=new)
    _, host, _ = apply_update(popn, pop, upd, jax.random.key(0), 3)
    no = jnp.zeros(3, bool)
    decision = DeviceUpdate(
        jnp.asarray(parents), no, no, {k: jnp.asarray(v) for k, v in new.items()}
    )
    device = jax.jit(lambda p, d: apply_device_update(popn, p, d))(pop, decision)
    chex.assert_trees_all_close(jax.device_get(host), jax.device_get(device), rtol=0, atol=0)
    assert np.asarray(device.member_id).tolist() == [0, 1, 2]  # a copy keeps the slot's id


@pytest.mark.parametrize(
    ("decide", "message"),
    [
        (lambda hp: (jnp.arange(3), {"nope": hp["h0"]}), "unknown hyperparameter 'nope'"),
        (lambda hp: (jnp.arange(3.0), {}), "parents must be integers"),
        (lambda hp: (jnp.arange(2), {}), r"parents must have shape \(3,\)"),
        (lambda hp: (jnp.arange(3), {"h0": hp["h0"][:2]}), r"hparams.h0 must be a scalar"),
    ],
)
def test_compiled_run_refuses_a_decision_that_does_not_fit(toy, decide, message):
    """A compiled strategy's decision is checked while the program is traced (before it runs),
    with the host check's messages."""
    task, popn, pop = toy

    def update_fn(state, step, fitness_P, hparams):
        parents, new = decide(hparams)
        return state, parents, jnp.zeros(3, bool), jnp.zeros(3, bool), new

    program = compiled_program(
        popn,
        update_fn,
        num_segments=2,
        segment_steps=1,
        total_steps=2,
        objective="q",
        maximize=True,
        searched=("h0",),
    )
    with pytest.raises(ValueError, match=f"^strategy update: {message}"):
        jax.eval_shape(program, pop, task.train_data, task.splits.val, {})


def test_grow_adds_fresh_members_after_the_current_ones(toy):
    """``grow`` adds slots first; the other fields index the grown population."""
    _, popn, pop = toy
    upd = PopulationUpdate(
        grow=2,
        reinit=np.array([False, False, True, True, True]),
        hparams={"h0": np.array([1.0, 0.0, 0.25, 0.5, 0.75])},
    )
    popn2, grown, next_id = apply_update(popn, pop, upd, jax.random.key(1), 3)
    assert grown.size == 5 and next_id == 6
    np.testing.assert_array_equal(np.asarray(grown.member_id), [0, 1, 3, 4, 5])
    np.testing.assert_array_equal(np.asarray(grown.step), [2, 2, 0, 0, 0])
    np.testing.assert_allclose(np.asarray(popn2.get_hparams(grown)["h0"])[2:], [0.25, 0.5, 0.75])
    chex.assert_trees_all_equal(  # the kept members are untouched
        jax.tree.map(lambda x: x[:2], grown.params), jax.tree.map(lambda x: x[:2], pop.params)
    )
