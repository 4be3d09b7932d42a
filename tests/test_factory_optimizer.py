"""Any optax factory as a per-member optimizer (jaxhpo.optim.factory): per-member values under
vmap equal optax run alone with the same values; schedules on the learning rate; the default
weight-decay mask; one-line errors."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxhpo import optim
from jaxhpo.optim.factory import FactoryOptimizer, decay_mask

PARAMS = {"kernel": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "bias": jnp.array([0.5, -0.2, 0.1])}
LR = np.array([1e-3, 1e-2, 3e-2], np.float32)
WD = np.array([0.0, 1e-2, 1e-1], np.float32)


def _grads(t):
    return jax.tree.map(lambda p: jnp.sin(p * (t + 1.0)) + 0.1 * p, PARAMS)


def _run(tx, steps=5):
    state = tx.init(PARAMS)
    params = PARAMS
    for t in range(steps):
        updates, state = tx.update(_grads(t), state, params)
        params = optax.apply_updates(params, updates)
    return params


def _population(fo: FactoryOptimizer, values: dict[str, np.ndarray], steps=5):
    tx = fo.template()

    def member(hp):
        state = optim.init_opt_state(tx, PARAMS, {**fo.defaults, **hp})
        params = PARAMS
        for t in range(steps):
            updates, state = tx.update(_grads(t), state, params)
            params = optax.apply_updates(params, updates)
        return params

    return jax.jit(jax.vmap(member))({k: jnp.asarray(v) for k, v in values.items()})


def _custom_chain(learning_rate, weight_decay=0.0, clip=1.0):
    return optax.chain(
        optax.clip_by_global_norm(clip), optax.adamw(learning_rate, weight_decay=weight_decay)
    )


@pytest.mark.parametrize(
    "factory,alone",
    [
        (optax.adamw, lambda lr, wd: optax.adamw(lr, weight_decay=wd, mask=decay_mask)),
        (optax.lion, lambda lr, wd: optax.lion(lr, weight_decay=wd, mask=decay_mask)),
        (_custom_chain, lambda lr, wd: _custom_chain(lr, wd)),
    ],
    ids=["adamw", "lion", "custom_chain"],
)
def test_per_member_values_equal_optax_alone(factory, alone):
    fo = FactoryOptimizer(factory, "constant", ["lr", "weight_decay"])
    assert fo.names == ("lr", "weight_decay")
    got = _population(fo, {"lr": LR, "weight_decay": WD})
    for i in range(3):
        want = _run(alone(float(LR[i]), float(WD[i])))
        chex.assert_trees_all_close(jax.tree.map(lambda x: x[i], got), want, rtol=1e-6)


def test_schedule_on_the_learning_rate_equals_optax_schedule():
    fo = FactoryOptimizer(optax.adamw, "warmup_cosine", ["lr"], mask=None)
    assert fo.names == ("lr", "warmup_steps", "decay_steps", "min_lr_ratio")
    values = {
        "lr": LR,
        "warmup_steps": np.full(3, 2.0, np.float32),
        "decay_steps": np.full(3, 5.0, np.float32),
        "min_lr_ratio": np.full(3, 0.1, np.float32),
    }
    got = _population(fo, values, steps=6)
    for i in range(3):
        sched = optax.warmup_cosine_decay_schedule(0.0, float(LR[i]), 2, 5, float(LR[i]) * 0.1)
        want = _run(optax.adamw(sched), steps=6)
        chex.assert_trees_all_close(jax.tree.map(lambda x: x[i], got), want, rtol=1e-5)


def test_default_mask_decays_kernels_not_biases():
    fo = FactoryOptimizer(optax.adamw, "constant", ["lr", "weight_decay"])
    tx = fo.template()
    state = optim.init_opt_state(tx, PARAMS, {"lr": 0.0, "weight_decay": 0.5})
    zero = jax.tree.map(jnp.zeros_like, PARAMS)
    updates, _ = tx.update(zero, state, PARAMS)  # lr 0: nothing moves ...
    chex.assert_trees_all_close(updates, zero)
    state = optim.set_hparams(state, {"lr": 1.0})  # ... lr 1: only the decay
    updates, _ = tx.update(zero, state, PARAMS)
    np.testing.assert_allclose(updates["kernel"], -0.5 * PARAMS["kernel"], rtol=1e-6)
    np.testing.assert_array_equal(updates["bias"], 0.0)


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match=r"^space.nesterov: not a float argument of sgd"):
        FactoryOptimizer(optax.sgd, "constant", ["lr", "nesterov"])
    with pytest.raises(ValueError, match=r"^optim.optimizer: .* has no learning_rate argument"):
        FactoryOptimizer(lambda lr: optax.sgd(lr), "constant", [])
    with pytest.raises(ValueError, match=r"^optim.schedule: unknown 'nope'"):
        FactoryOptimizer(optax.sgd, "nope", [])
    # names that are not the factory's are left to the task (e.g. its dropout)
    assert FactoryOptimizer(optax.sgd, "constant", ["dropout"]).names == ("lr",)
