"""A fixed (not searched) hyperparameter is a constant of the compiled step: writing it is a
one-line error on every path, the compiled loop (``train.compiled``) included, where only the
names can be checked before the program runs (jaxhpo/population/specialise.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhpo.population import Population
from jaxhpo.population.specialise import check_fixed_names, check_fixed_values
from jaxhpo.run.compiled import compiled_program
from jaxhpo.tasks import ToyQuadraticTask


def test_check_fixed_names_refuses_a_fixed_name_whatever_its_value():
    fixed = {"h1": 1.0, "batch_size": 1.0}
    with pytest.raises(ValueError, match=r"^train\.compiled: h1 is fixed at 1 \(") as e:
        check_fixed_names(fixed, ("lr", "h0", "h1"))
    assert "\n" not in str(e.value) and "space.h1" in str(e.value)
    with pytest.raises(ValueError, match=r"^strategy update: batch_size is fixed at 1"):
        check_fixed_names(fixed, {"batch_size": jnp.ones(3)}, "strategy update")
    check_fixed_names(fixed, ("lr", "h0"))  # searched names only: nothing to refuse
    check_fixed_names({}, ("h1",))  # the generic step holds nothing


def test_host_and_compiled_checks_say_the_same():
    """One message for both paths (only the leading path differs)."""
    with pytest.raises(ValueError) as host:
        check_fixed_values({"dropout": 0.0}, {"dropout": np.full(2, 0.1)})
    with pytest.raises(ValueError) as compiled:
        check_fixed_names({"dropout": 0.0}, ("dropout",))
    assert str(host.value).startswith("hparams: dropout is fixed at 0")
    assert str(compiled.value).partition(": ")[2] == str(host.value).partition(": ")[2]


@pytest.fixture(scope="module")
def toy():
    """A specialised population that searches h0 only: h1 is a constant of its step."""
    task = ToyQuadraticTask()
    popn = Population(task, "sgd", "constant", mode="vmap", devices=1, searched=("h0",))
    assert popn.fixed.get("h1") == 1.0
    pop = popn.init(jax.random.key(0), np.arange(3), popn.full_hparams({"lr": 0.1}, 3))
    return task, popn, pop


def _program(popn, update_fn, searched):
    return compiled_program(
        popn,
        update_fn,
        num_segments=2,
        segment_steps=1,
        total_steps=2,
        objective="q",
        maximize=True,
        searched=searched,
    )


def _keeps(state, step, fitness_P, hparams):
    P = fitness_P.shape[0]
    no = jnp.zeros(P, bool)
    return state, jnp.arange(P, dtype=jnp.int32), no, no, hparams


def _writes_h1(state, step, fitness_P, hparams):
    state, parents, copied, _, _ = _keeps(state, step, fitness_P, hparams)
    return state, parents, copied, jnp.ones_like(copied), {"h1": jnp.full(parents.shape, 0.5)}


def test_compiled_loop_refuses_to_search_a_fixed_hparam_before_it_runs(toy):
    """Regression: a compiled strategy handed a fixed name (``searched``) wrote it inside the
    program, the rows recorded the new value and the step went on reading the constant."""
    _, popn, _ = toy
    with pytest.raises(ValueError, match=r"^train\.compiled: h1 is fixed at 1 "):
        _program(popn, _keeps, ("h0", "h1"))  # refused when the program is built


def test_compiled_loop_refuses_a_decision_that_writes_a_fixed_hparam(toy):
    """Regression: a compiled strategy's decision that names a fixed hyperparameter it was not
    handed was applied (pop.hparams changed, the step ignored it); refused while tracing."""
    task, popn, pop = toy
    program = _program(popn, _writes_h1, ("h0",))
    with pytest.raises(ValueError, match=r"h1 is fixed at 1 "):
        jax.eval_shape(program, pop, task.train_data, task.splits.val, {})


def test_compiled_loop_writes_searched_hparams(toy):
    """The check refuses only fixed names: a decision on the searched ones is applied."""
    task, popn, pop = toy

    def writes_h0(state, step, fitness_P, hparams):
        state, parents, copied, _, _ = _keeps(state, step, fitness_P, hparams)
        return state, parents, copied, jnp.ones_like(copied), {"h0": jnp.full(3, 0.25)}

    _, _, outs = _program(popn, writes_h0, ("h0",))(pop, task.train_data, task.splits.val, {})
    assert np.asarray(outs["hparams"]["h0"])[-1].tolist() == [0.25] * 3
    assert np.asarray(outs["hparams"]["h1"]).tolist() == [[1.0] * 3] * 2  # held
