"""jaxhpo.optim's built-in optimizers (the table's chains) equal optax; their state functions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxhpo import optim


def _params():
    key = jax.random.PRNGKey(0)
    k1, k2 = jax.random.split(key)
    return {"w": jax.random.normal(k1, (3, 4)), "b": jax.random.normal(k2, (4,))}


def _grads(params, i):
    """Deterministic, step-dependent gradients (gradient of a quadratic plus noise)."""
    key = jax.random.PRNGKey(100 + i)
    noise = jax.tree.map(
        lambda p, k: jax.random.normal(k, p.shape),
        params,
        dict(zip(params, jax.random.split(key, len(params)), strict=True)),
    )
    return jax.tree.map(lambda p, n: 0.7 * p + n, params, noise)


def _run(tx, state, params, n=5):
    """Apply ``n`` updates; return the list of updates and the final parameters."""
    all_updates = []
    for i in range(n):
        updates, state = tx.update(_grads(params, i), state, params)
        params = optax.apply_updates(params, updates)
        all_updates.append(updates)
    return all_updates, params


def _close(actual, expected, rtol=1e-5, atol=1e-6):
    """Assert arrays are equal within float32 round-off."""
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


def _assert_trees_close(a, b, atol=1e-6, rtol=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=rtol)


# (optimizer, our hyperparameters, equivalent plain optax transform)
REFERENCE_OPTIMIZERS = [
    ("sgd", {"lr": 0.05}, optax.sgd(0.05)),
    (
        "sgd",
        {"lr": 0.05, "weight_decay": 0.1},
        optax.chain(optax.add_decayed_weights(0.1), optax.sgd(0.05)),
    ),
    ("momentum", {"lr": 0.05, "momentum": 0.7}, optax.sgd(0.05, momentum=0.7)),
    (
        "momentum",
        {"lr": 0.05, "momentum": 0.7, "weight_decay": 0.1},
        optax.chain(optax.add_decayed_weights(0.1), optax.sgd(0.05, momentum=0.7)),
    ),
    ("nesterov", {"lr": 0.05, "momentum": 0.7}, optax.sgd(0.05, momentum=0.7, nesterov=True)),
    ("adam", {"lr": 0.05, "b1": 0.8, "b2": 0.95, "eps": 1e-6}, optax.adam(0.05, 0.8, 0.95, 1e-6)),
    (
        "adam",
        {"lr": 0.05, "weight_decay": 0.1},
        optax.chain(optax.add_decayed_weights(0.1), optax.adam(0.05)),
    ),
    (
        "adamw",
        {"lr": 0.05, "b1": 0.8, "b2": 0.95, "eps": 1e-6, "weight_decay": 0.1},
        optax.adamw(0.05, b1=0.8, b2=0.95, eps=1e-6, weight_decay=0.1),
    ),
    (
        "lion",
        {"lr": 0.05, "b1": 0.8, "b2": 0.95, "weight_decay": 0.1},
        optax.lion(0.05, b1=0.8, b2=0.95, weight_decay=0.1),
    ),
    ("adafactor", {"lr": 0.05}, optax.adafactor(0.05)),
    (
        "adafactor",
        {"lr": 0.05, "adafactor_decay_rate": 0.6, "clipping_threshold": 0.5, "weight_decay": 0.01},
        optax.adafactor(0.05, decay_rate=0.6, clipping_threshold=0.5, weight_decay_rate=0.01),
    ),
    # Hypergradient descent with hd_beta=0 is the plain optimizer (jaxhpo.hypergrad.hd).
    ("sgd_hd", {"lr": 0.05, "hd_beta": 0.0}, optax.sgd(0.05)),
    (
        "nesterov_hd",
        {"lr": 0.05, "momentum": 0.7, "weight_decay": 0.1},
        optax.chain(optax.add_decayed_weights(0.1), optax.sgd(0.05, momentum=0.7, nesterov=True)),
    ),
    (
        "adam_hd",
        {"lr": 0.05, "b1": 0.8, "b2": 0.95, "eps": 1e-6},
        optax.adam(0.05, 0.8, 0.95, 1e-6),
    ),
]


def test_every_optimizer_has_a_reference():
    assert {name for name, _, _ in REFERENCE_OPTIMIZERS} == set(optim.OPTIMIZERS)


@pytest.mark.parametrize(
    ("name", "hp", "ref"),
    REFERENCE_OPTIMIZERS,
    ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(REFERENCE_OPTIMIZERS)],
)
def test_optimizer_matches_optax(name, hp, ref):
    params = _params()
    tx = optim.make_optimizer(name, "constant")
    ours, ours_params = _run(tx, optim.init_opt_state(tx, params, hp), params)
    theirs, their_params = _run(ref, ref.init(params), params)
    _assert_trees_close(ours, theirs)
    _assert_trees_close(ours_params, their_params)
    # The updates are not trivially zero.
    assert float(optax.tree.norm(ours[-1])) > 1e-3


def test_adafactor_factored_matches_optax():
    key = jax.random.PRNGKey(3)
    params = {"m": jax.random.normal(key, (128, 130)), "b": jnp.ones((130,))}
    hp = {"lr": 0.05, "adafactor_decay_rate": 0.7, "weight_decay": 0.01}
    tx = optim.make_optimizer("adafactor", "constant")
    ref = optax.adafactor(0.05, decay_rate=0.7, weight_decay_rate=0.01)
    assert ref.init(params)[0].v_row["m"].shape == (128,)  # really factored
    ours, _ = _run(tx, optim.init_opt_state(tx, params, hp), params, 3)
    theirs, _ = _run(ref, ref.init(params), params, 3)
    _assert_trees_close(ours, theirs)


def test_adamw_warmup_cosine_matches_optax():
    params = _params()
    hp = {
        "lr": 0.05,
        "warmup_steps": 3.0,
        "decay_steps": 8.0,
        "min_lr_ratio": 0.1,
        "weight_decay": 0.1,
    }
    tx = optim.make_optimizer("adamw", "warmup_cosine")
    sched = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=0.05, warmup_steps=3, decay_steps=8, end_value=0.005
    )
    ref = optax.adamw(learning_rate=sched, weight_decay=0.1)
    update = jax.jit(tx.update)
    ours, _ = _run(tx._replace(update=update), optim.init_opt_state(tx, params, hp), params, 10)
    theirs, _ = _run(ref, ref.init(params), params, 10)
    _assert_trees_close(ours, theirs)


def test_hyperparams_are_float32_arrays_and_defaults():
    tx = optim.make_optimizer("adamw", "warmup_cosine")
    state = optim.init_opt_state(tx, _params(), {"lr": 0.1, "warmup_steps": 5})
    hp = optim.get_hparams(state)
    assert set(hp) == set(optim.hparam_names("adamw", "warmup_cosine"))
    for name, value in hp.items():
        assert value.dtype == jnp.float32 and value.shape == (), name
    assert float(hp["lr"]) == pytest.approx(0.1)
    assert float(hp["b2"]) == pytest.approx(optim.DEFAULTS["b2"])
    assert np.isinf(hp["clip_norm"])
    # Integers (e.g. step counts) are stored as float32 too, also via set_hparams.
    assert optim.get_hparams(optim.set_hparams(state, {"decay_steps": 7}))["decay_steps"].dtype == (
        jnp.float32
    )


def test_hparam_names():
    assert optim.hparam_names("adamw", "warmup_cosine") == (
        "lr",
        "warmup_steps",
        "decay_steps",
        "min_lr_ratio",
        "weight_decay",
        "b1",
        "b2",
        "eps",
        "clip_norm",
    )
    assert optim.hparam_names("sgd", "constant") == ("lr", "weight_decay", "clip_norm")
    assert "momentum" in optim.hparam_names("nesterov", "rsqrt")
    for o in optim.OPTIMIZERS:
        for s in optim.SCHEDULES:
            names = optim.hparam_names(o, s)
            assert len(set(names)) == len(names)
            assert set(names) <= set(optim.DEFAULTS)


def test_set_hparams_changes_behaviour_and_is_functional():
    params = _params()
    tx = optim.make_optimizer("sgd", "constant")
    state = optim.init_opt_state(tx, params, {"lr": 0.1})
    new = optim.set_hparams(state, {"lr": 0.2})
    assert float(optim.get_hparams(state)["lr"]) == pytest.approx(0.1)
    grads = _grads(params, 0)
    u1, _ = tx.update(grads, state, params)
    u2, _ = tx.update(grads, new, params)
    _assert_trees_close(jax.tree.map(lambda x: 2 * x, u1), u2)


# ----------------------------------------------------------------- compilation and vmap


def test_no_recompilation_across_hyperparameter_values():
    params = _params()
    tx = optim.make_optimizer("adamw", "warmup_cosine")
    traces = []

    @jax.jit
    def update(grads, state, params):
        traces.append(1)
        return tx.update(grads, state, params)

    grads = _grads(params, 0)
    outs = []
    for lr, warmup, clip in [(0.1, 0.0, np.inf), (0.01, 5.0, 1.0), (0.5, 2.0, 0.1)]:
        state = optim.init_opt_state(
            tx, params, {"lr": lr, "warmup_steps": warmup, "clip_norm": clip}
        )
        state = optim.set_hparams(state, {"b1": 0.5, "weight_decay": lr})
        u, state = update(grads, state, params)
        u, state = update(grads, state, params)
        outs.append(u)
    assert len(traces) == 1
    assert not np.allclose(outs[0]["w"], outs[1]["w"])


def _plain_optax(name, lr, clip, warmup, decay):
    """Plain optax optimizer equal to ``make_optimizer(name, "warmup_cosine")`` at defaults."""
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, decay, end_value=0.0)
    inner = {
        "sgd": lambda: optax.sgd(sched),
        "adamw": lambda: optax.adamw(sched, weight_decay=0.0),
        "lion": lambda: optax.lion(sched, b2=optim.DEFAULTS["b2"], weight_decay=0.0),
        "adafactor": lambda: optax.adafactor(sched),
    }[name]()
    return optax.chain(optax.clip_by_global_norm(clip), inner)


@pytest.mark.parametrize("name", ["sgd", "adamw", "lion", "adafactor"])
def test_vmap_members_equal_individual_runs(name):
    lrs = [0.001, 0.01, 0.1, 0.3]
    clips = [np.inf, 0.5, np.inf, 2.0]
    warmups = [0, 1, 2, 3]
    decays = [5, 6, 7, 8]
    tx = optim.make_optimizer(name, "warmup_cosine")
    base = _params()
    pop_params = jax.tree.map(
        lambda x: jnp.stack([x * (1.0 + 0.1 * i) for i in range(len(lrs))]), base
    )
    pop_hp = {
        "lr": jnp.asarray(lrs),
        "clip_norm": jnp.asarray(clips),
        "warmup_steps": jnp.asarray(warmups, jnp.float32),
        "decay_steps": jnp.asarray(decays, jnp.float32),
    }
    pop_state = jax.vmap(lambda p, h: optim.init_opt_state(tx, p, h))(pop_params, pop_hp)
    assert optim.get_hparams(pop_state)["lr"].shape == (len(lrs),)
    step = jax.jit(jax.vmap(tx.update))
    pop_updates = []
    params = pop_params
    for i in range(4):
        grads = jax.vmap(lambda p, i=i: _grads(p, i))(params)
        updates, pop_state = step(grads, pop_state, params)
        params = optax.apply_updates(params, updates)
        pop_updates.append(updates)
    for m in range(len(lrs)):
        p_m = jax.tree.map(lambda x, m=m: x[m], pop_params)
        h_m = {k: v[m] for k, v in pop_hp.items()}
        member = [jax.tree.map(lambda x, m=m: x[m], u) for u in pop_updates]
        single, _ = _run(tx, optim.init_opt_state(tx, p_m, h_m), p_m, 4)
        _assert_trees_close(member, single)
        ref = _plain_optax(name, lrs[m], clips[m], warmups[m], decays[m])
        plain, _ = _run(ref, ref.init(p_m), p_m, 4)
        _assert_trees_close(member, plain)


def test_set_hparams_on_population_broadcasts_and_checks_shape():
    tx = optim.make_optimizer("sgd", "constant")
    pop = jax.vmap(lambda p: optim.init_opt_state(tx, p, {}))(
        jax.tree.map(lambda x: jnp.stack([x, x, x]), _params())
    )
    pop = optim.set_hparams(pop, {"lr": 0.5, "weight_decay": [0.0, 0.1, 0.2]})
    hp = optim.get_hparams(pop)
    _close(hp["lr"], [0.5, 0.5, 0.5])
    _close(hp["weight_decay"], [0.0, 0.1, 0.2])
    with pytest.raises(ValueError, match="weight_decay"):
        optim.set_hparams(pop, {"weight_decay": [0.0, 0.1]})


# ----------------------------------------------------------------------------- clipping


def test_finite_clip_norm_equals_optax_clip_by_global_norm():
    params = _params()
    grads = jax.tree.map(lambda g: 10.0 * g, _grads(params, 0))
    tx = optim.make_optimizer("sgd", "constant")
    state = optim.init_opt_state(tx, params, {"lr": 1.0, "clip_norm": 0.5})
    ours, _ = jax.jit(tx.update)(grads, state, params)
    ref, _ = optax.chain(optax.clip_by_global_norm(0.5), optax.sgd(1.0)).update(
        grads, optax.chain(optax.clip_by_global_norm(0.5), optax.sgd(1.0)).init(params), params
    )
    _assert_trees_close(ours, ref)
    assert float(optax.tree.norm(ours)) == pytest.approx(0.5, rel=1e-5)


def test_infinite_clip_norm_leaves_gradients_untouched():
    params = _params()
    grads = jax.tree.map(lambda g: 1e4 * g, _grads(params, 0))
    tx = optim.make_optimizer("sgd", "constant")
    state = optim.init_opt_state(tx, params, {"lr": 1.0})  # clip_norm defaults to inf
    ours, _ = jax.jit(tx.update)(grads, state, params)
    _assert_trees_close(ours, jax.tree.map(lambda g: -g, grads), atol=0.0, rtol=0.0)


# ------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: optim.make_optimizer("xyz", "constant"), "optim.optimizer: unknown 'xyz'"),
        (lambda: optim.make_optimizer("adam", "nope"), "optim.schedule: unknown 'nope'"),
        (lambda: optim.hparam_names("rmsprop", "constant"), "optim.optimizer: unknown 'rmsprop'"),
        (lambda: optim.schedule_value("linear", 0, {"lr": 1.0}), "optim.schedule: unknown"),
    ],
)
def test_unknown_choices_raise(call, field):
    with pytest.raises(ValueError, match=field) as info:
        call()
    assert "choose from" in str(info.value)


def test_unknown_hparam_names_raise():
    params = _params()
    tx = optim.make_optimizer("sgd", "constant")
    with pytest.raises(ValueError, match="'b1'"):  # sgd does not read b1
        optim.init_opt_state(tx, params, {"lr": 0.1, "b1": 0.9})
    state = optim.init_opt_state(tx, params, {"lr": 0.1})
    with pytest.raises(ValueError, match="'learning_rate'"):
        optim.set_hparams(state, {"learning_rate": 0.1})
    with pytest.raises(TypeError):
        optim.get_hparams(optax.sgd(0.1).init(params))


def test_hd_optimizer_adapts_lr_per_member_under_vmap():
    """sgd_hd with a per-member hd_beta: beta=0 keeps alpha_0, beta>0 moves it, and each member
    equals the same optimizer run alone."""
    from jaxhpo.hypergrad import current_lr

    tx = optim.make_optimizer("sgd_hd", "constant")
    betas = jnp.asarray([0.0, 1e-3, 1e-2])
    base = _params()
    pop_params = jax.tree.map(lambda x: jnp.stack([x, x, x]), base)
    hp = {"lr": jnp.full((3,), 0.05), "hd_beta": betas}
    state = jax.vmap(lambda p, h: optim.init_opt_state(tx, p, h))(pop_params, hp)
    params = pop_params
    step = jax.jit(jax.vmap(tx.update))
    for i in range(4):
        grads = jax.vmap(lambda p, i=i: _grads(p, i))(params)
        updates, state = step(grads, state, params)
        params = optax.apply_updates(params, updates)
    alpha = np.asarray(current_lr(state))
    assert alpha[0] == np.float32(0.05) and alpha[2] != alpha[1] != alpha[0]
    for m in range(3):
        p_m = jax.tree.map(lambda x, m=m: x[m], pop_params)
        one = optim.init_opt_state(tx, p_m, {"lr": 0.05, "hd_beta": float(betas[m])})
        _, final = _run(tx, one, p_m, 4)
        _assert_trees_close(jax.tree.map(lambda x, m=m: x[m], params), final)
