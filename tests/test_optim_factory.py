"""jaxhpo.optim.resolve: one OptimizerSpec for built-in names and any optax factory.

Per-member values under vmap equal the optax factory run alone with the same values (adamw,
lion, a user's chain); a schedule on the learning rate equals optax's schedule; the default
weight-decay mask; set_hparams without retracing; one-line errors; the explicit-value chain has
the template's inner state; a built-in name is exactly make_optimizer / make_chain."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxhpo import optim
from jaxhpo.optim import OptimizerSpec, choices, resolve
from jaxhpo.optim.factory import FactoryOptimizer, decay_mask, resolve_one

PARAMS = {
    "dense": {
        "kernel": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3),
        "bias": jnp.array([0.5, -0.2, 0.1]),
    },
    "norm": {"scale": jnp.array([1.0, 0.8, 1.2])},
}
LR = np.array([1e-3, 1e-2, 3e-2], np.float32)
WD = np.array([0.0, 1e-2, 1e-1], np.float32)
STEPS = 5


def _grads(t):
    return jax.tree.map(lambda p: jnp.sin(p * (t + 1.0)) + 0.1 * p, PARAMS)


def _train(tx, state, steps=STEPS):
    params = PARAMS
    for t in range(steps):
        updates, state = tx.update(_grads(t), state, params)
        params = optax.apply_updates(params, updates)
    return params


def _alone(tx, steps=STEPS):
    return jax.jit(lambda: _train(tx, tx.init(PARAMS), steps))()


def _population(spec: OptimizerSpec, values: dict[str, np.ndarray], steps=STEPS):
    tx = spec.template()

    def member(hp):
        return _train(tx, optim.init_opt_state(tx, PARAMS, hp, spec.defaults), steps)

    return jax.jit(jax.vmap(member))({k: jnp.asarray(v) for k, v in values.items()})


def _member(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def user_chain(learning_rate, weight_decay):
    return optax.chain(
        optax.clip_by_global_norm(1.0), optax.adamw(learning_rate, weight_decay=weight_decay)
    )


@pytest.mark.parametrize(
    "factory,label",
    [(optax.adamw, "optax.adamw"), (optax.lion, "optax.lion"), (user_chain, "user_chain")],
    ids=["adamw", "lion", "user_chain"],
)
def test_vmapped_members_equal_optax_alone(factory, label):
    spec = resolve(factory, "constant", ["lr", "weight_decay"], mask=None)
    assert (spec.names, spec.label) == (("lr", "weight_decay"), label)
    got = _population(spec, {"lr": LR, "weight_decay": WD})
    for i in range(3):
        want = _alone(factory(float(LR[i]), weight_decay=float(WD[i])))
        chex.assert_trees_all_close(_member(got, i), want, rtol=1e-6)


def test_warmup_cosine_on_the_learning_rate_equals_optax_schedule():
    spec = resolve(optax.adamw, "warmup_cosine", ["lr"], mask=None)
    assert spec.names == ("lr", "warmup_steps", "decay_steps", "min_lr_ratio")
    values = {
        "lr": LR,
        "warmup_steps": np.full(3, 2.0, np.float32),
        "decay_steps": np.full(3, 5.0, np.float32),
        "min_lr_ratio": np.full(3, 0.1, np.float32),
    }
    got = _population(spec, values, steps=6)
    for i in range(3):
        lr = float(LR[i])
        sched = optax.warmup_cosine_decay_schedule(0.0, lr, 2, 5, lr * 0.1)
        chex.assert_trees_all_close(_member(got, i), _alone(optax.adamw(sched), 6), rtol=1e-6)


def test_default_mask_decays_the_kernel_not_the_bias_or_scale():
    spec = resolve(optax.adamw, "constant", ["lr", "weight_decay"])
    assert spec.kwargs == {"mask": decay_mask}
    tx = spec.template()
    zero = jax.tree.map(jnp.zeros_like, PARAMS)
    state = optim.init_opt_state(tx, PARAMS, {"lr": 1.0, "weight_decay": 0.5})
    updates, _ = tx.update(zero, state, PARAMS)  # zero gradients: only the decay moves
    np.testing.assert_allclose(updates["dense"]["kernel"], -0.5 * PARAMS["dense"]["kernel"])
    np.testing.assert_array_equal(updates["dense"]["bias"], 0.0)
    np.testing.assert_array_equal(updates["norm"]["scale"], 0.0)
    # ... and training equals optax.adamw with the same mask written out
    mask = {"dense": {"kernel": True, "bias": False}, "norm": {"scale": False}}
    got = _population(spec, {"lr": LR, "weight_decay": WD})
    for i in range(3):
        want = _alone(optax.adamw(float(LR[i]), weight_decay=float(WD[i]), mask=mask))
        chex.assert_trees_all_close(_member(got, i), want, rtol=1e-6)


def test_set_hparams_changes_a_factory_state_without_retracing():
    spec = resolve(optax.lion, "constant", ["lr", "b1"])
    tx = spec.template()
    traces = []

    @jax.jit
    def step(state):
        traces.append(1)
        return tx.update(_grads(0), state, PARAMS)[0]

    state = optim.init_opt_state(tx, PARAMS, {"lr": 1e-2}, spec.defaults)
    first = step(state)
    state = optim.set_hparams(state, {"lr": 3e-2, "b1": 0.5})
    second = step(state)
    assert len(traces) == 1
    assert optim.get_hparams(state)["b1"] == np.float32(0.5)
    want = optax.lion(3e-2, b1=0.5, mask=decay_mask)
    chex.assert_trees_all_close(second, want.update(_grads(0), want.init(PARAMS), PARAMS)[0])
    assert not np.allclose(first["dense"]["kernel"], second["dense"]["kernel"])


def test_defaults_come_from_the_factory_signature():
    factory = functools.partial(optax.adamw, b1=0.5)
    spec = resolve(factory, "warmup_constant", ["b1", "weight_decay", "dropout"])
    assert spec.names == ("lr", "warmup_steps", "b1", "weight_decay")
    assert spec.defaults == {
        "lr": optim.DEFAULTS["lr"],
        "warmup_steps": optim.DEFAULTS["warmup_steps"],
        "b1": 0.5,
        "weight_decay": 1e-4,
    }
    # the old call (no defaults=) keeps the template's own values, not jaxhpo's DEFAULTS
    state = optim.init_opt_state(spec.template(), PARAMS, {})
    got = {k: float(v) for k, v in optim.get_hparams(state).items()}
    assert got == {k: float(np.float32(v)) for k, v in spec.defaults.items()}
    # a factory's argument without a default is per member even when unsearched
    assert resolve(user_chain, "constant").names == ("lr", "weight_decay")


def test_bad_searched_names_are_space_errors_listing_the_float_arguments():
    floats = r"\(its float arguments: lr \(its learning_rate\), momentum\)"
    with pytest.raises(
        ValueError, match=r"^space\.nesterov: not a float argument of sgd " + floats
    ):
        resolve(optax.sgd, "constant", ["lr", "nesterov"])
    with pytest.raises(ValueError, match=r"^space\.b1: not an argument of sgd .*" + floats):
        resolve(optax.sgd, "constant", ["b1"])
    for name in ("mask", "mu_dtype"):
        with pytest.raises(ValueError, match=rf"^space\.{name}: not a float argument of adamw"):
            resolve(optax.adamw, "constant", [name])
    with pytest.raises(ValueError, match=r"^space\.weight_decay_rate: given no numeric default"):
        resolve(optax.adafactor, "constant", ["weight_decay_rate"])
    # the space's other names (the task's) are left to the task
    assert resolve(optax.sgd, "constant", ["dropout"]).names == ("lr",)


def test_learning_rate_in_the_space_is_refused_naming_lr():
    """One name per hyperparameter: a factory's learning rate is ``lr`` per member (the factory
    is still called with ``learning_rate=``); the space's ``learning_rate`` names ``lr``."""
    with pytest.raises(ValueError, match=r"^space\.learning_rate: the learning rate is named lr"):
        resolve(optax.adamw, "constant", ["learning_rate"])
    with pytest.raises(ValueError, match=r"^space\.learning_rate: the learning rate is named lr"):
        resolve(("adamw", optax.lion), "constant", ["learning_rate"])

    def both(learning_rate, lr=0.1):
        return optax.sgd(learning_rate)

    with pytest.raises(ValueError, match=r"^optim\.optimizer: .*both takes an argument named lr"):
        resolve(both)


def test_other_bad_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match=r"^optim\.optimizer: .* has no learning_rate argument"):
        resolve(lambda lr: optax.sgd(lr))
    with pytest.raises(ValueError, match=r"^optim\.schedule: unknown 'nope'"):
        resolve(optax.sgd, "nope")
    with pytest.raises(ValueError, match=r"^optim\.optimizer: unknown 'nope'"):
        resolve("nope")

    def warm(learning_rate, warmup_steps=10.0):
        return optax.sgd(learning_rate)

    with pytest.raises(
        ValueError, match=r"^optim\.schedule: .*reads warmup_steps, which .*warm also"
    ):
        resolve(warm, "warmup_cosine")
    assert resolve(warm, "constant", ["warmup_steps"]).names == ("lr", "warmup_steps")
    with pytest.raises(ValueError, match=r"^optim\.mask: sgd takes no mask"):
        resolve(optax.sgd, mask=decay_mask)
    with pytest.raises(ValueError, match=r"^optim\.mask: the built-in optimizer 'adamw'"):
        resolve("adamw", mask=decay_mask)


def test_differentiable_chain_has_the_template_inner_state_and_takes_its_step():
    spec = resolve(optax.adamw, "warmup_cosine", ["lr", "weight_decay", "b1"])
    hp = {"lr": 0.1, "warmup_steps": 1.0, "decay_steps": 4.0, "weight_decay": 0.3}
    tx = spec.template()
    state = optim.init_opt_state(tx, PARAMS, hp, spec.defaults)
    values = {k: jnp.float32(v) for k, v in optim.get_hparams(state).items()}
    chain = spec.chain(values, differentiable=True)
    inner = chain.init(PARAMS)
    chex.assert_trees_all_equal_structs(inner, state.inner_state)
    for t in range(2):  # the second step is past warmup
        want, state = tx.update(_grads(t), state, PARAMS)
        got, inner = chain.update(_grads(t), inner, PARAMS)
        chex.assert_trees_all_close(got, want, rtol=1e-6)
    chex.assert_trees_all_close(inner, state.inner_state, rtol=1e-6)

    def loss(lr):  # differentiable in the learning rate through one step
        updates, _ = spec.chain({**values, "lr": lr}).update(_grads(0), chain.init(PARAMS), PARAMS)
        return sum(jnp.sum(u) for u in jax.tree.leaves(updates))

    assert np.isfinite(jax.grad(loss)(jnp.float32(0.1)))


def test_a_builtin_name_is_make_optimizer_and_make_chain():
    spec = resolve("adamw", "warmup_cosine", ["anything"])
    names = optim.hparam_names("adamw", "warmup_cosine")
    assert (spec.names, spec.label, spec.builtin) == (names, "adamw", True)
    assert spec.defaults == {n: optim.DEFAULTS[n] for n in names}
    hp = {"lr": 0.1, "warmup_steps": 1.0, "weight_decay": 0.2}
    tx, ref = spec.template(), optim.make_optimizer("adamw", "warmup_cosine")
    state = optim.init_opt_state(tx, PARAMS, hp)
    chex.assert_trees_all_close(
        tx.update(_grads(0), state, PARAMS), ref.update(_grads(0), state, PARAMS)
    )
    chain = spec.chain(hp, differentiable=True)
    ref_chain = optim.make_chain("adamw", "warmup_cosine", hp, differentiable=True)
    chex.assert_trees_all_equal_structs(chain.init(PARAMS), state.inner_state)
    chex.assert_trees_all_close(
        chain.update(_grads(0), chain.init(PARAMS), PARAMS),
        ref_chain.update(_grads(0), ref_chain.init(PARAMS), PARAMS),
    )
    assert optim.resolve is choices.resolve
    assert resolve_one("adamw", "warmup_cosine") == spec


def test_factory_optimizer_alias_resolves_a_factory():
    spec = FactoryOptimizer(optax.adamw, "constant", ["weight_decay"], mask=None)
    assert spec == resolve(optax.adamw, "constant", ["weight_decay"], mask=None)
