"""RL-based search (``strategy.name: rl``): the policy's log-probability and REINFORCE step equal
the textbook formulas (scipy, optax driven by hand), the moving-average baseline follows its
definition, it beats random search, learns categorical dimensions, its state survives a
checkpoint, and the lm-rl preset runs from the CLI."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest
import scipy.special
import scipy.stats
from conftest import TINY_LM_OVERRIDES
from searchbench import (
    BOWL_SPACE,
    FUNCTIONS,
    Resumed,
    curve,
    generations_of,
    leaves_are_plain,
    random_regret,
    searcher_regret,
)

from jaxhpo import cli
from jaxhpo.simulate import simulate
from jaxhpo.space import Choice, Float, Int, Space
from jaxhpo.strategies.base import Observation
from jaxhpo.strategies.reinforce import (
    MAX_CATEGORIES,
    Reinforce,
    log_prob,
    policy_structure,
    reinforce_loss,
)

P = 16
MIXED = Space({"a": Float(-5, 5), "n": Int(1, 8), "k": Choice((2.0, 4.0, 8.0)), "w": Int(0, 100)})


def test_policy_structure_follows_the_space():
    s = policy_structure(MIXED)
    assert s.gauss == ["a", "w"]  # w has 101 values > MAX_CATEGORIES: Gaussian, rounded
    assert s.discrete == ["n", "k"] and s.K == 8 and MAX_CATEGORIES < 101
    np.testing.assert_array_equal(np.asarray(s.mask).sum(1), [8, 3])


def test_log_prob_matches_scipy():
    rng = np.random.default_rng(0)
    mask = np.array([[True] * 8, [True] * 3 + [False] * 5])
    params = {
        "mu": rng.normal(size=2),
        "log_std": rng.normal(-0.5, 0.2, size=2),
        "logits": rng.normal(size=(2, 8)),
    }
    z, idx = rng.normal(size=(5, 2)), np.stack([rng.integers(0, 8, 5), rng.integers(0, 3, 5)], -1)
    ours = log_prob(jax.tree.map(jnp.asarray, params), jnp.asarray(mask), z, jnp.asarray(idx))
    gauss = scipy.stats.norm.logpdf(z, params["mu"], np.exp(params["log_std"])).sum(-1)
    lsm = [scipy.special.log_softmax(params["logits"][d][mask[d]]) for d in range(2)]
    cat = np.array([lsm[0][i0] + lsm[1][i1] for i0, i1 in idx])
    np.testing.assert_allclose(np.asarray(ours), gauss + cat, rtol=1e-5)


def test_padding_categories_do_not_make_the_gradient_nan():
    """Regression: with -inf padding logits, ``where`` passed 0 * -inf = NaN into the gradient
    of every logit, and a NaN policy then always sampled the first category."""
    mask = jnp.asarray([[True] * 4, [True] * 2 + [False] * 2])
    params = {"mu": jnp.zeros(1), "log_std": jnp.zeros(1), "logits": jnp.zeros((2, 4))}
    z, idx, adv = (
        jnp.zeros((3, 1)),
        jnp.asarray([[0, 1], [3, 0], [2, 1]]),
        jnp.asarray([1.0, -1, 0]),
    )
    grad = jax.jit(jax.grad(reinforce_loss))
    for weight in (0.0, 0.1):
        g = grad(params, mask, z, idx, adv, weight)
        assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(g))
        np.testing.assert_array_equal(np.asarray(g["logits"])[1, 2:], 0.0)


def _obs(fitness, P_, step=1):
    return Observation(
        step=step,
        member_id=np.arange(P_),
        hparams={},
        metrics={"loss": np.asarray(fitness, np.float64)},
        diverged=np.zeros(P_, bool),
        active=np.ones(P_, bool),
    )


def test_update_is_reinforce_with_a_moving_average_baseline():
    """Two updates: the objective's gradient is the score-function gradient computed by hand
    (advantages from the moving-average baseline, scaled by the reward's standard deviation),
    and the step is optax.adam on it."""
    space = Space({"a": Float(-5, 5), "k": Choice((1.0, 2.0, 3.0))})
    lr, beta = 0.05, 0.7
    s = Reinforce(learning_rate=lr, baseline_decay=beta)
    s.check(3, 1)
    state, _ = s.init(0, space, 6)
    params = {k: np.asarray(v, np.float64) for k, v in state.params.items()}
    opt = optax.adam(lr)
    with jax.enable_x64(True):
        opt_state = opt.init(jax.tree.map(jnp.asarray, params))
    b = None
    rng = np.random.default_rng(1)
    for g in range(2):
        z, idx = np.asarray(state.z), np.asarray(state.idx)
        fitness = rng.random(6)
        reward = -fitness
        b_used = reward.mean() if b is None else b
        adv = (reward - b_used) / reward.std()
        std = np.exp(params["log_std"])
        # d/dtheta mean(adv * log pi): the score function, by hand
        g_mu = np.mean(adv[:, None] * (z - params["mu"]) / std**2, 0)
        g_ls = np.mean(adv[:, None] * (((z - params["mu"]) / std) ** 2 - 1), 0)
        probs = scipy.special.softmax(params["logits"][0])
        onehot = np.eye(3)[idx[:, 0]]
        g_lg = np.mean(adv[:, None] * (onehot - probs), 0)[None]
        hand = {"mu": -g_mu, "log_std": -g_ls, "logits": -g_lg}  # the loss is -objective
        with jax.enable_x64(True):  # the policy is float64 (see reinforce._x64)
            p64 = jax.tree.map(jnp.asarray, params)
            args = (
                policy_structure(space).mask,
                jnp.asarray(z),
                jnp.asarray(idx),
                jnp.asarray(adv),
            )
            grads = jax.grad(reinforce_loss)(p64, *args, 0.0)
            for k in hand:
                np.testing.assert_allclose(np.asarray(grads[k]), hand[k], rtol=1e-9, atol=1e-12)
            updates, opt_state = opt.update(jax.tree.map(jnp.asarray, hand), opt_state)
            params = jax.tree.map(np.asarray, optax.apply_updates(p64, updates))
        b = beta * b_used + (1 - beta) * reward.mean()
        state, upd = s.update(state, _obs(fitness, 6, step=g + 1))
        for k in params:
            np.testing.assert_allclose(state.params[k], params[k], rtol=1e-6, atol=1e-9)
        assert float(state.baseline) == pytest.approx(b)
        assert upd.reinit is not None and upd.reinit.all()


def test_beats_random_search_at_equal_evaluations():
    """Median best regret over 10 seeds: 12 generations x 16 members vs 192 random samples."""
    seeds, G = range(10), 12
    lines, failures = [], []
    for fname, (space, fn) in FUNCTIONS.items():
        rnd = random_regret(space, fn, G * P, seeds)
        ours = searcher_regret(lambda: Reinforce(), space, fn, G, P, seeds)
        lines.append(f"{fname}: rl {ours:.4g} vs random {rnd:.4g} (ratio {ours / rnd:.3f})")
        if not ours < 0.5 * rnd:
            failures.append(lines[-1])
    print("\n" + "\n".join(lines))
    assert not failures, failures


def test_learns_categorical_dimensions():
    def fn(hp):
        return ((hp["a"] - 1) / 5) ** 2 + (hp["n"] != 3) + (hp["k"] != 4.0) + 0 * hp["w"]

    s = Reinforce()
    res = simulate(s, MIXED, curve(fn), steps=15, segment_steps=1, size=P, seed=0)
    MIXED.validate_values({k: res.table[k].to_numpy() for k in MIXED.searched})
    last = res.table[res.table["step"] == 15]
    assert (last["n"] == 3).mean() > 0.5 and (last["k"] == 4.0).mean() > 0.5
    first = res.table[res.table["step"] == 1]
    assert (first["n"] == 3).mean() < 0.4  # it learned: the first generation was uniform


def test_state_is_a_pytree_that_round_trips_through_checkpoint():
    def run(strategy):
        return simulate(
            strategy,
            MIXED,
            curve(lambda hp: hp["a"] ** 2),
            steps=4,
            segment_steps=1,
            size=8,
            seed=3,
        )

    plain, resumed = run(Reinforce()), run(Resumed(lambda: Reinforce()))
    for a, b in zip(
        generations_of(plain, MIXED, 4), generations_of(resumed, MIXED, 4), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    state, _ = Reinforce().init(0, MIXED, 8)
    assert leaves_are_plain(state) and len(jax.tree.leaves(state)) > 8


def test_explicit_points_start_the_policy_and_the_first_generation():
    points = [{"a": 3.0, "c": 0.9}, {"a": 1.0}]
    s = Reinforce(points=points)
    state, cols = s.init(0, BOWL_SPACE, 4)
    assert cols["a"][0] == 3.0 and cols["c"][0] == pytest.approx(0.9) and cols["a"][1] == 1.0
    z_a = [math.log(u / (1 - u)) for u in ((3.0 + 5) / 10, (1.0 + 5) / 10)]
    assert float(state.params["mu"][0]) == pytest.approx(np.mean(z_a), rel=1e-5)
    assert float(state.params["mu"][2]) == pytest.approx(math.log(0.9 / 0.1), rel=1e-5)
    assert float(state.params["mu"][1]) == 0.0  # lr: no point names it


def test_errors_name_the_field():
    for kwargs, field in (
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"baseline_decay": 1.0}, "baseline_decay"),
        ({"entropy": -1.0}, "entropy"),
        ({"sigma_init": 0.0}, "sigma_init"),
        ({"generation_steps": 0}, "generation_steps"),
        ({"warm_start_top": 2}, "warm_start_top"),
    ):
        with pytest.raises(ValueError, match=rf"strategy\.{field}"):
            Reinforce(**kwargs)
    with pytest.raises(ValueError, match=r"population\.size"):
        Reinforce().init(0, BOWL_SPACE, 1)


@pytest.mark.slow  # a real (tiny) LM study: ~20 s on 2 idle cores
def test_lm_rl_runs_end_to_end_from_the_cli(tmp_path):
    argv = [
        "run", "lm-rl", *TINY_LM_OVERRIDES, "population.size=4", "population.devices=1",
        "train.steps=20", "train.segment_steps=10", "strategy.generation_steps=10",
        "--out", str(tmp_path), "--quiet",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    (run_dir,) = tmp_path.iterdir()
    members = pd.read_csv(run_dir / "members.csv")
    assert len(members) == 8 and (members["steps"] == 10).all()  # two generations of fresh members
    assert (run_dir / "plots" / "final_vs_hparams.png").exists()
    events = [e for e in pd.read_json(run_dir / "events.jsonl", lines=True).to_dict("records")]
    assert [e["generation"] for e in events if e["kind"] == "generation"] == [0, 1]
