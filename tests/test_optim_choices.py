"""jaxhpo.optim.choices: the schedule and the optimizer as per-member codes in one program.

A member of a mixed population equals the same member trained alone with optax's own optimizer
and schedule; changing a member's code between segments does not retrace; an inactive (NaN)
value takes the default of the member's choice; one-line errors."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxhpo import optim
from jaxhpo.optim import choices, resolve

PARAMS = {
    "dense": {
        "kernel": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3),
        "bias": jnp.array([0.5, -0.2, 0.1]),
    },
}
STEPS = 6
SCHEDULES = ("constant", "warmup_exponential", "warmup_cosine")


def _grads(t):
    return jax.tree.map(lambda p: jnp.sin(p * (t + 1.0)) + 0.1 * p, PARAMS)


def _train(tx, state, steps=STEPS):
    params = PARAMS
    for t in range(steps):
        updates, state = tx.update(_grads(t), state, params)
        params = optax.apply_updates(params, updates)
    return params


def _alone(tx):
    return jax.jit(lambda: _train(tx, tx.init(PARAMS)))()


def _population(spec, values):
    tx = spec.template()

    def member(hp):
        return _train(tx, optim.init_opt_state(tx, PARAMS, hp, spec.defaults))

    return jax.jit(jax.vmap(member))({k: jnp.asarray(v, jnp.float32) for k, v in values.items()})


def _member(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def test_schedule_choice_members_equal_optax_schedules_alone():
    spec = resolve("sgd", SCHEDULES)
    assert spec.names == (
        "lr",
        "warmup_steps",
        "decay_steps",
        "decay_rate",
        "min_lr_ratio",
        "schedule",
        "weight_decay",
        "clip_norm",
    )
    lr = np.array([0.1, 0.2, 0.3])
    got = _population(
        spec,
        {
            "lr": lr,
            "schedule": [1.0, 0.0, 2.0],  # warmup_exponential, constant, warmup_cosine
            "warmup_steps": [0.0, 0.0, 2.0],
            "decay_steps": [3.0, 3.0, 5.0],
            "decay_rate": [0.5, 0.5, 0.5],
        },
    )
    want = [
        optax.sgd(optax.exponential_decay(0.1, transition_steps=3, decay_rate=0.5)),
        optax.sgd(0.2),
        optax.sgd(optax.warmup_cosine_decay_schedule(0.0, 0.3, 2, 5, 0.0)),
    ]
    for i, tx in enumerate(want):
        chex.assert_trees_all_close(_member(got, i), _alone(tx), rtol=1e-6, atol=1e-6)


def test_optimizer_and_schedule_choice_members_equal_optax_alone():
    """SGD + exponential decay, AdamW + warmup-cosine and optax.lion (a factory) + constant, in
    one population: each member equals optax's optimizer with optax's schedule alone."""
    spec = resolve(("sgd", "adamw", optax.lion), SCHEDULES, ["b1", "b2"], mask=None)
    assert spec.labels() == ("sgd", "adamw", "optax.lion")
    assert spec.names[0] == "lr" and spec.names[-1] == "optimizer"
    assert np.isnan(spec.defaults["b2"])  # adamw 0.999, lion 0.99: each its own
    got = _population(
        spec,
        {
            "lr": [0.1, 0.01, 0.003],
            "optimizer": [0.0, 1.0, 2.0],
            "schedule": [1.0, 2.0, 0.0],
            "warmup_steps": [0.0, 2.0, 0.0],
            "decay_steps": [3.0, 5.0, 5.0],
            "b1": [np.nan, 0.8, 0.7],  # inactive for sgd
            "b2": [np.nan, np.nan, 0.95],  # adamw: its default
        },
    )
    want = [
        optax.sgd(optax.exponential_decay(0.1, transition_steps=3, decay_rate=0.5)),
        optax.adamw(
            optax.warmup_cosine_decay_schedule(0.0, 0.01, 2, 5, 0.0), b1=0.8, weight_decay=0.0
        ),
        optax.lion(0.003, b1=0.7, b2=0.95),
    ]
    for i, tx in enumerate(want):
        chex.assert_trees_all_close(_member(got, i), _alone(tx), rtol=1e-6, atol=1e-6)


def test_inactive_value_takes_the_choice_default():
    spec = resolve(("adamw", optax.lion), "constant", ["b2"], mask=None)
    got = _population(spec, {"lr": [0.01, 0.01], "optimizer": [0.0, 1.0], "b2": [np.nan] * 2})
    chex.assert_trees_all_close(
        _member(got, 0), _alone(optax.adamw(0.01, weight_decay=0.0)), atol=1e-6
    )
    chex.assert_trees_all_close(_member(got, 1), _alone(optax.lion(0.01)), atol=1e-6)


def test_changing_the_codes_does_not_retrace():
    spec = resolve(("sgd", "adam"), ("constant", "warmup_linear"))
    tx = spec.template()
    traces = []

    @jax.jit
    def step(state):
        traces.append(1)
        return tx.update(_grads(0), state, PARAMS)

    state = optim.init_opt_state(tx, PARAMS, {"lr": 0.1}, spec.defaults)
    first, _ = step(state)
    state = optim.set_hparams(state, {"optimizer": 1.0, "schedule": 1.0, "warmup_steps": 4.0})
    second, _ = step(state)
    assert len(traces) == 1
    adam = optax.adam(optax.linear_schedule(0.0, 0.1, 4))  # warmup: 0 at step 0
    chex.assert_trees_all_close(second, adam.update(_grads(0), adam.init(PARAMS), PARAMS)[0])
    sgd = optax.sgd(0.1)
    chex.assert_trees_all_close(first, sgd.update(_grads(0), sgd.init(PARAMS))[0])


def test_a_member_updates_only_its_own_choice_state():
    spec = resolve(("momentum", "adam"), "constant")
    tx = spec.template()
    state = optim.init_opt_state(tx, PARAMS, {"optimizer": 1.0}, spec.defaults)
    _, new = tx.update(_grads(0), state, PARAMS)
    momentum_state, adam_state = new.inner_state
    chex.assert_trees_all_equal(momentum_state, state.inner_state[0])
    assert np.abs(optax.tree.get(adam_state, "mu")["dense"]["kernel"]).sum() > 0


@pytest.mark.parametrize(
    "optimizer,schedule,searched,match",
    [
        ("sgd", ("constant", "cosine"), (), "optim.schedule: unknown 'cosine'"),
        ("sgd", ("constant", "constant"), (), "optim.schedule: a choice lists"),
        (("sgd", "sgd"), "constant", (), "optim.optimizer: a choice lists"),
        (("sgd", "rmsprop"), "constant", (), "optim.optimizer: unknown 'rmsprop'"),
        (("sgd", "adam"), "constant", ("momentum",), "space.momentum: read by none"),
        ((), "constant", (), "optim.optimizer: a choice needs at least one value"),
    ],
)
def test_bad_choices_are_one_line_errors(optimizer, schedule, searched, match):
    with pytest.raises(ValueError, match=match) as err:
        resolve(optimizer, schedule, searched)
    assert "\n" not in str(err.value)


def test_code_index_rounds_clips_and_reads_nan_as_the_first_choice():
    codes = jnp.array([-1.0, 0.4, 0.6, 2.0, 7.0, jnp.nan])
    np.testing.assert_array_equal(choices.code_index(codes, 3), [0, 0, 1, 2, 2, 0])


def test_population_member_with_its_choices_equals_the_member_alone(lm_task):
    """On the tiny LM: a member choosing SGD + exponential decay next to one choosing AdamW +
    warmup-cosine equals a population of SGD + exponential decay alone (same member id: same
    init and data); switching the members' codes between segments does not retrace."""
    from jaxhpo.population import Population

    key = jax.random.key(0)
    data = lm_task.train_data
    mixed = Population(lm_task, ("sgd", "adamw"), ("warmup_exponential", "warmup_cosine"))
    hp = {
        "lr": [0.3, 3e-3],
        "optimizer": [0.0, 1.0],
        "schedule": [0.0, 1.0],
        "warmup_steps": [0.0, 1.0],
        "decay_steps": [2.0, 4.0],
        "b1": [np.nan, 0.8],
    }
    pop, _ = mixed.train_segment(mixed.init(key, [3, 5], hp), data, 3)
    alone = Population(lm_task, "sgd", "warmup_exponential")  # member 0's choices
    own = {k: v[0] for k, v in hp.items() if k in alone.opt_names}
    single, _ = alone.train_segment(alone.init(key, [3], own), data, 3)
    chex.assert_trees_all_close(
        _member(pop.params, 0), _member(single.params, 0), rtol=1e-5, atol=1e-6
    )
    traces = dict(mixed.trace_counts)
    pop = mixed.set_hparams(pop, {"optimizer": [1.0, 0.0], "schedule": [1.0, 0.0]})
    pop, losses = mixed.train_segment(pop, data, 3)
    assert mixed.trace_counts == traces
    assert np.isfinite(np.asarray(losses)).all()
