"""jaxhpo.optim.schedules: the traced schedules equal optax's at fixed values, under jit, vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxhpo import optim

N_STEPS = 60
STEPS = np.arange(N_STEPS + 1)
LR = 0.3


def _close(actual, expected, rtol=1e-5, atol=1e-6):
    """Assert arrays are equal within float32 round-off."""
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


def _optax_linear(init, end, steps):
    return lambda count: init + (end - init) * np.minimum(count / steps, 1.0)


# (kind, hyperparameters, reference schedule built from optax or numpy at those values)
def _reference_cases():
    cases = []
    hp = {"lr": LR, "warmup_steps": 10.0, "decay_steps": 50.0, "min_lr_ratio": 0.1}
    ref = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=LR, warmup_steps=10, decay_steps=50, end_value=LR * 0.1
    )
    cases.append(("warmup_cosine", hp, ref))
    hp0 = {"lr": LR, "warmup_steps": 0.0, "decay_steps": 40.0, "min_lr_ratio": 0.0}
    ref0 = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=LR, warmup_steps=0, decay_steps=40, end_value=0.0
    )
    cases.append(("warmup_cosine", hp0, ref0))
    ref_lin = optax.join_schedules(
        [
            optax.linear_schedule(0.0, LR, transition_steps=10),
            optax.linear_schedule(LR, LR * 0.1, transition_steps=40),
        ],
        [10],
    )
    cases.append(("warmup_linear", hp, ref_lin))
    ref_const = optax.join_schedules(
        [optax.linear_schedule(0.0, LR, transition_steps=10), optax.constant_schedule(LR)], [10]
    )
    cases.append(("warmup_constant", {"lr": LR, "warmup_steps": 10.0}, ref_const))
    cases.append(("warmup_constant", {"lr": LR, "warmup_steps": 0.0}, lambda s: LR + 0.0 * s))
    cases.append(("constant", {"lr": LR}, optax.constant_schedule(LR)))
    hp_exp = {
        "lr": LR,
        "warmup_steps": 10.0,
        "decay_steps": 7.0,
        "decay_rate": 0.5,
        "min_lr_ratio": 0.05,
    }
    exp = optax.exponential_decay(
        init_value=LR,
        transition_steps=7,
        decay_rate=0.5,
        transition_begin=10,
        end_value=LR * 0.05,
    )
    warm = optax.linear_schedule(0.0, LR, transition_steps=10)
    # exponential_decay counts from transition_begin itself, so it is used unshifted.
    ref_exp = lambda s: warm(s) if s < 10 else exp(s)
    cases.append(("warmup_exponential", hp_exp, ref_exp))

    def rsqrt_ref(warmup):
        def ref(s):
            s = np.asarray(s, np.float64)
            after = LR * np.sqrt(max(warmup, 1.0) / np.maximum(np.maximum(s, warmup), 1.0))
            return np.where(s < warmup, LR * s / max(warmup, 1.0), after)

        return ref

    cases.append(("rsqrt", {"lr": LR, "warmup_steps": 10.0}, rsqrt_ref(10.0)))
    cases.append(("rsqrt", {"lr": LR, "warmup_steps": 0.0}, rsqrt_ref(0.0)))
    hp_sgdr = {"lr": LR, "warmup_steps": 0.0, "cycle_steps": 20.0, "min_lr_ratio": 0.2}
    ref_sgdr = optax.sgdr_schedule(
        [
            dict(init_value=LR, peak_value=LR, warmup_steps=0, decay_steps=20, end_value=LR * 0.2)
            for _ in range(4)
        ]
    )
    cases.append(("cosine_restarts", hp_sgdr, ref_sgdr))
    return cases


CASES = _reference_cases()
CASE_IDS = [f"{kind}-{i}" for i, (kind, _, _) in enumerate(CASES)]


def test_every_schedule_has_a_reference_case():
    assert {kind for kind, _, _ in CASES} == set(optim.SCHEDULES)


@pytest.mark.parametrize(("kind", "hp", "ref"), CASES, ids=CASE_IDS)
def test_schedule_matches_reference(kind, hp, ref):
    expected = np.array([ref(int(s)) for s in STEPS], np.float64)
    _close(optim.schedule_value(kind, jnp.asarray(STEPS), hp), expected)


@pytest.mark.parametrize(("kind", "hp", "ref"), CASES, ids=CASE_IDS)
def test_schedule_under_jit_with_traced_hparams(kind, hp, ref):
    traces = []

    @jax.jit
    def f(step, hp):
        traces.append(1)
        return optim.schedule_value(kind, step, hp)

    hp_arrays = {k: jnp.float32(v) for k, v in hp.items()}
    got = np.array([f(jnp.int32(s), hp_arrays) for s in STEPS])
    _close(got, [ref(int(s)) for s in STEPS])
    assert len(traces) == 1


@pytest.mark.parametrize("kind", optim.SCHEDULES)
def test_schedule_under_vmap_per_member(kind):
    names = optim.hparam_names("sgd", kind)[:-2]  # drop weight_decay, clip_norm
    members = [
        {"lr": 0.1, "warmup_steps": 0.0, "decay_steps": 30.0, "min_lr_ratio": 0.0},
        {"lr": 0.5, "warmup_steps": 5.0, "decay_steps": 50.0, "min_lr_ratio": 0.3},
        {"lr": 1.0, "warmup_steps": 12.0, "decay_steps": 13.0, "min_lr_ratio": 0.5},
    ]
    for m, (rate, cycle) in zip(members, [(0.5, 7.0), (0.9, 15.0), (0.1, 4.0)], strict=True):
        m.update(decay_rate=rate, cycle_steps=cycle)
    stacked = {n: jnp.asarray([m[n] for m in members], jnp.float32) for n in names}
    steps = jnp.asarray(STEPS)
    batched = jax.jit(jax.vmap(lambda hp: optim.schedule_value(kind, steps, hp)))(stacked)
    assert batched.shape == (len(members), len(STEPS))
    for i, m in enumerate(members):
        single = optim.schedule_value(kind, steps, {n: m[n] for n in names})
        _close(batched[i], single)
    # Members genuinely differ (so the comparison above is not vacuous).
    assert not np.allclose(batched[0], batched[1])


def test_schedule_degenerate_values_are_finite():
    hp = {
        "lr": 1.0,
        "warmup_steps": 0.0,
        "decay_steps": 0.0,
        "min_lr_ratio": 0.25,
        "decay_rate": 0.5,
        "cycle_steps": 0.0,
    }
    for kind in optim.SCHEDULES:
        vals = np.asarray(optim.schedule_value(kind, jnp.arange(5), hp))
        assert np.all(np.isfinite(vals)), kind
    # Decay phase shorter than warmup: warm up, then sit at the floor.
    hp_short = dict(hp, warmup_steps=4.0, decay_steps=2.0)
    _close(
        optim.schedule_value("warmup_cosine", jnp.arange(7), hp_short),
        [0.0, 0.25, 0.5, 0.75, 0.25, 0.25, 0.25],
    )
