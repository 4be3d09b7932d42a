"""Online hypergradient descent (jaxhpo.hypergrad.hd): against optax, by hand, under vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxhpo import optim
from jaxhpo.hypergrad import hd


def _params():
    k1, k2 = jax.random.split(jax.random.key(0))
    return {"w": jax.random.normal(k1, (3, 4)), "b": jax.random.normal(k2, (4,))}


def _grads(params, i):
    keys = jax.random.split(jax.random.key(100 + i), 2)
    noise = {"w": jax.random.normal(keys[0], (3, 4)), "b": jax.random.normal(keys[1], (4,))}
    return jax.tree.map(lambda p, n: 0.7 * p + 0.3 * n, params, noise)


def _run(tx, params, n=6, state=None):
    state = tx.init(params) if state is None else state
    ups, states = [], []
    for i in range(n):
        u, state = tx.update(_grads(params, i), state, params)
        params = optax.apply_updates(params, u)
        ups.append(u)
        states.append(state)
    return ups, params, states


def _close(a, b, rtol=1e-6, atol=1e-7):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


CASES = [
    ("sgd", lambda b: hd.sgd_hd(0.05, b), optax.sgd(0.05)),
    (
        "nesterov",
        lambda b: hd.nesterov_hd(0.05, b, momentum=0.7),
        optax.sgd(0.05, momentum=0.7, nesterov=True),
    ),
    (
        "adam",
        lambda b: hd.adam_hd(0.05, b, b1=0.8, b2=0.95, eps=1e-6),
        optax.adam(0.05, 0.8, 0.95, 1e-6),
    ),
]


@pytest.mark.parametrize(("name", "make", "ref"), CASES, ids=[c[0] for c in CASES])
def test_beta_zero_equals_optax(name, make, ref):
    ours, p_ours, _ = _run(make(0.0), _params())
    theirs, p_theirs, _ = _run(ref, _params())
    _close(ours, theirs, rtol=0, atol=0)  # exactly the same arithmetic
    _close(p_ours, p_theirs, rtol=0, atol=0)


def _flat(tree):
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)])


@pytest.mark.parametrize("name", ["sgd", "nesterov", "adam"])
def test_alpha_update_by_hand(name):
    """alpha_t = alpha_{t-1} + beta <g_t, u_{t-1}>, with u the previous direction computed here
    independently (numpy): the gradient, g + mu v, or Adam's m_hat / (sqrt(v_hat) + eps)."""
    alpha0, beta, mu, b1, b2, eps = 0.05, 0.01, 0.7, 0.8, 0.95, 1e-6
    tx = {
        "sgd": hd.sgd_hd(alpha0, beta),
        "nesterov": hd.nesterov_hd(alpha0, beta, momentum=mu),
        "adam": hd.adam_hd(alpha0, beta, b1=b1, b2=b2, eps=eps),
    }[name]
    params = _params()
    state = tx.init(params)
    theta = _flat(params)
    alpha, u_prev = alpha0, np.zeros_like(theta)
    v = np.zeros_like(theta)
    m, s = np.zeros_like(theta), np.zeros_like(theta)
    alphas = []
    for t in range(1, 6):
        g_tree = _grads(params, t)
        g = _flat(g_tree)
        alpha = alpha + beta * g @ u_prev
        if name == "sgd":
            u = g
        elif name == "nesterov":
            v = mu * v + g
            u = g + mu * v
        else:
            m = b1 * m + (1 - b1) * g
            s = b2 * s + (1 - b2) * g**2
            u = (m / (1 - b1**t)) / (np.sqrt(s / (1 - b2**t)) + eps)
        updates, state = tx.update(g_tree, state, params)
        params = optax.apply_updates(params, updates)
        np.testing.assert_allclose(_flat(updates), -alpha * u, rtol=2e-5, atol=1e-7)
        np.testing.assert_allclose(float(state.alpha), alpha, rtol=1e-5)
        theta = theta - alpha * u
        u_prev = u
        alphas.append(alpha)
    assert abs(alphas[-1] - alpha0) > 1e-4  # the rate did move


def test_per_member_beta_under_vmap_equals_one_member():
    betas = jnp.asarray([0.0, 1e-4, 1e-3, 3e-3])
    lrs = jnp.asarray([0.01, 0.05, 0.1, 0.02])
    tx = optax.inject_hyperparams(hd.adam_hd)(learning_rate=0.0, hyper_lr=0.0)
    base = _params()
    P = betas.shape[0]
    pop_params = jax.tree.map(lambda x: jnp.stack([x * (1 + 0.1 * i) for i in range(P)]), base)

    def init(p, lr, b):
        s = tx.init(p)
        return s._replace(hyperparams={**s.hyperparams, "learning_rate": lr, "hyper_lr": b})

    states = jax.vmap(init)(pop_params, lrs, betas)
    step = jax.jit(jax.vmap(tx.update))
    params = pop_params
    for i in range(5):
        grads = jax.vmap(lambda p, i=i: _grads(p, i))(params)
        ups, states = step(grads, states, params)
        params = optax.apply_updates(params, ups)
    assert hd.current_lr(states).shape == (P,)
    for m in range(P):
        p_m = jax.tree.map(lambda x, m=m: x[m], pop_params)
        # the same injected transform on member m alone
        _, final, st = _run(tx, p_m, n=5, state=init(p_m, lrs[m], betas[m]))
        _close(jax.tree.map(lambda x, m=m: x[m], params), final, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(hd.current_lr(states)[m], hd.current_lr(st[-1]), rtol=1e-6)
        # and the plain (not injected) transform, up to float32 hyperparameter round-off
        _, plain, st = _run(hd.adam_hd(lrs[m], betas[m]), p_m, n=5)
        np.testing.assert_allclose(hd.current_lr(states)[m], st[-1].alpha, rtol=1e-4)
    assert float(hd.current_lr(states)[3]) != float(lrs[3])  # beta > 0 moved the rate


@pytest.mark.parametrize("name", ["sgd_hd", "nesterov_hd", "adam_hd"])
def test_optim_hd_equals_hypergrad_module(name):
    """make_optimizer's HD chain (constant schedule, no decay) is the module's transform, and
    the lr set after init by init_opt_state is the alpha_0 that is used."""
    hp = {"lr": 0.03, "hd_beta": 2e-3, "momentum": 0.6, "b1": 0.8}
    tx = optim.make_optimizer(name, "constant")
    ref = {
        "sgd_hd": hd.sgd_hd(0.03, 2e-3),
        "nesterov_hd": hd.nesterov_hd(0.03, 2e-3, momentum=0.6),
        "adam_hd": hd.adam_hd(0.03, 2e-3, b1=0.8),
    }[name]
    params = _params()
    state = optim.init_opt_state(
        tx, params, {k: v for k, v in hp.items() if k in optim.hparam_names(name, "constant")}
    )
    ours, _, states = _run(tx, params, state=state)
    theirs, _, ref_states = _run(ref, params)
    # float32 round-off in the hyperparameters, amplified by Adam's normalisation
    _close(ours, theirs, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(hd.current_lr(states[-1]), ref_states[-1].alpha, rtol=1e-5)


def test_optim_hd_schedule_shape_with_beta_zero_is_the_scheduled_optimizer():
    hp = {"lr": 0.05, "warmup_steps": 2.0, "decay_steps": 6.0, "min_lr_ratio": 0.1}
    tx = optim.make_optimizer("adam_hd", "warmup_cosine")
    ref = optim.make_optimizer("adam", "warmup_cosine")
    params = _params()
    ours, _, _ = _run(tx, params, state=optim.init_opt_state(tx, params, hp))
    theirs, _, _ = _run(ref, params, state=optim.init_opt_state(ref, params, hp))
    _close(ours, theirs, rtol=1e-5, atol=1e-7)


def test_current_lr_without_hd_state_raises():
    with pytest.raises(ValueError, match="optim.optimizer"):
        hd.current_lr(optax.sgd(0.1).init(_params()))


def test_adam_hd_runs_on_the_lm_with_per_member_beta(tmp_path):
    """`optim.optimizer=adam_hd` with `hd_beta` searched: each member's learning rate adapts
    in its optimizer state (the run's final state), beta per member."""
    from conftest import TINY_LM_OVERRIDES

    from jaxhpo.cli import load_config
    from jaxhpo.experiment import run

    cfg = load_config(
        "lm-random",
        [
            *TINY_LM_OVERRIDES,
            "population.devices=1",
            "population.size=2",
            "train.steps=6",
            "train.segment_steps=3",
            "optim.optimizer=adam_hd",
            "optim.schedule=constant",
            "space={}",
            "space.lr=3e-3",
            "space.hd_beta=loguniform(1e-6, 1e-3)",
            f"out_dir={tmp_path}",
        ],
    )
    res = run(cfg, quiet=True)
    alpha = np.asarray(hd.current_lr(res.state.opt_state))
    beta = np.asarray(optim.get_hparams(res.state.opt_state)["hd_beta"])
    assert alpha.shape == (2,) and beta[0] != beta[1]
    assert np.all(alpha != np.float32(3e-3))  # adapted
    assert np.isfinite(res.members["val_loss"]).all()
