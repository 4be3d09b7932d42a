"""The hypergrad and pes strategies on the Transformer LM: the differentiable window equals the
population's own segment, per member under the member axis, and runs through `jaxhpo run`."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_LM_OVERRIDES

from jaxhpo.hypergrad import member, unrolled
from jaxhpo.population import Population, gather
from jaxhpo.space import Space
from jaxhpo.strategies.hypergrad import UnrolledHypergrad

K = 3
HP = {
    "lr": [3e-3, 1e-2],
    "warmup_steps": [2.0, 0.0],
    "weight_decay": [0.01, 0.1],
    "dropout": [0.1, 0.0],
    "decay_steps": [20.0, 20.0],
}


@pytest.fixture(scope="module")
def setup(lm_task):
    population = Population(
        lm_task, "adamw", "warmup_cosine", mode="vmap", devices=1, searched=tuple(HP)
    )
    pop = population.init(jax.random.key(0), np.arange(2), HP)
    return population, pop


def test_window_trains_like_the_population_segment(setup, lm_task):
    """Same hyperparameters: the differentiable window's weights and losses equal the
    population segment's (float32 round-off; eps_root and smooth clipping change nothing)."""
    population, pop = setup
    ref, ref_losses = population.train_segment(pop, lm_task.train_data, K)
    step_fn = member.make_step(population, lm_task.train_data, jnp.asarray(K))

    def run(m):
        hp = member.member_hparams(population, m)
        return unrolled.unroll(step_fn, m, hp, K)

    out, losses = jax.jit(jax.vmap(run))(pop)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(out.params), jax.tree.leaves(ref.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(out.step, ref.step)
    np.testing.assert_array_equal(out.opt_state.count, ref.opt_state.count)


@pytest.mark.slow
def test_strategy_window_member_equals_member_alone_and_lr_gradient_matches_fd(setup, lm_task):
    population, pop = setup
    space = Space.from_config({"lr": "loguniform(1e-4, 1e-1)", "dropout": "uniform(0, 0.5)"})
    strat = UnrolledHypergrad(outer_lr=0.1, outer="sgd")
    data = (lm_task.train_data, lm_task.splits.val)
    state, _ = strat.init(0, space, 2)  # a fresh state: no outer state, nothing proposed
    s2, pop2, losses = strat.train_segment(state, population, pop, data, K, K)
    assert losses.shape == (2, K) and np.all(np.isfinite(np.asarray(losses)))
    z0 = unrolled.to_unconstrained({k: jnp.asarray(HP[k]) for k in ("lr", "dropout")})
    # sgd(0.1): z_new = z - 0.1 g, so the strategy's gradient is recoverable
    g_pop = {
        k: (np.asarray(z0[k]) - np.asarray(unrolled.to_unconstrained({k: s2.proposed[k]})[k])) / 0.1
        for k in z0
    }
    for i in range(2):
        m = gather(pop, np.asarray([i]))
        _, pop_i, _ = strat.train_segment(state, population, m, data, K, K)
        for a, b in zip(
            jax.tree.leaves(gather(pop2, np.asarray([i])).params),
            jax.tree.leaves(pop_i.params),
            strict=True,
        ):
            # Adam turns round-off in ~0 gradients into steps of up to lr: absolute tolerance
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=3e-5)
    # the lr hypergradient of member 0 against a float32 central difference in log lr
    step_fn = member.make_step(population, lm_task.train_data, jnp.asarray(K))
    val_fn = member.make_val(population, lm_task.splits.val)
    m0 = jax.tree.map(lambda x: x[0], pop)
    hp0 = member.member_hparams(population, m0)

    @jax.jit
    def f(log_lr):
        c, _ = unrolled.unroll(step_fn, m0, {**hp0, "lr": jnp.exp(log_lr)}, K, remat=False)
        return val_fn(c, None)

    eps = 0.05
    fd = (f(z0["lr"][0] + eps) - f(z0["lr"][0] - eps)) / (2 * eps)
    np.testing.assert_allclose(g_pop["lr"][0], fd, rtol=0.05)


@pytest.mark.slow
def test_hypergrad_runs_through_the_cli(tmp_path):
    from jaxhpo.cli import load_config
    from jaxhpo.experiment import run

    cfg = load_config(
        "lm-hypergrad",
        [
            *TINY_LM_OVERRIDES,
            "population.devices=1",
            "population.size=2",
            "train.steps=4",
            "train.segment_steps=2",
            f"out_dir={tmp_path}",
        ],
    )
    res = run(cfg, quiet=True)
    events = [json.loads(x) for x in (res.run_dir / "events.jsonl").read_text().splitlines()]
    explore = [e for e in events if e["kind"] == "explore"]
    assert len(explore) == 2 and {e["member"] for e in explore} == {0, 1}
    for e in explore:
        assert e["before"]["lr"] != e["after"]["lr"]
    assert np.isfinite(res.members["val_loss"]).all()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["strategy.outer=rmsprop"], "strategy.outer"),
        (["strategy.outer_lr=0"], "strategy.outer_lr"),
        (["space.clip_norm=uniform(0.5, 2.0)"], "space.clip_norm"),
        (["space.lr={type: choice, values: [0.001, 0.01]}"], "space.lr"),
        (["strategy.chunk=3"], "strategy.chunk"),
    ],
)
def test_bad_hypergrad_config_is_one_line_error_naming_the_field(overrides, field):
    from jaxhpo.cli import load_config
    from jaxhpo.config import ConfigError
    from jaxhpo.experiment import prepare

    with pytest.raises(ConfigError, match=field.replace(".", r"\.")) as e:
        prepare(load_config("lm-hypergrad", [*TINY_LM_OVERRIDES, *overrides]))
    assert "\n" not in str(e.value)


def test_pes_odd_population_is_a_config_error():
    from jaxhpo.cli import load_config
    from jaxhpo.config import ConfigError
    from jaxhpo.experiment import prepare

    cfg = load_config("lm-pes", [*TINY_LM_OVERRIDES, "population.size=3"])
    with pytest.raises(ConfigError, match="population.size"):
        prepare(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pes", "truncated_es"])
def test_pes_runs_through_the_cli(tmp_path, name):
    from jaxhpo.cli import load_config
    from jaxhpo.experiment import run

    cfg = load_config(
        "lm-pes",
        [
            *TINY_LM_OVERRIDES,
            "population.devices=1",
            "population.size=4",
            "train.steps=6",
            "train.segment_steps=2",
            f"strategy.name={name}",
            f"out_dir={tmp_path}",
        ],
    )
    res = run(cfg, quiet=True)
    events = [json.loads(x) for x in (res.run_dir / "events.jsonl").read_text().splitlines()]
    assert sum(e["kind"] == "generation" for e in events) == 2
    assert sum(e["kind"] == "explore" for e in events) == 8
    assert res.members["steps"].tolist() == [6] * 4  # particles keep training
