"""Hypergradients with several objectives: each member descends its own weighting of them
(jaxhpo.objectives.spread_weights / scalarise), so the population itself traces the front."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest
from conftest import TINY_LM_OVERRIDES
from flax import nnx

import jaxhpo
from jaxhpo.objectives import Objective, scalarise, spread_weights
from jaxhpo.population import Population
from jaxhpo.space import Space
from jaxhpo.strategies.hypergrad import UnrolledHypergrad
from jaxhpo.strategies.implicit import ImplicitHypergrad

LOSS_L2 = (Objective("loss"), Objective("l2"))


class Ridge(jaxhpo.ModelTask):
    """Linear regression on full batches: the validation loss and the weights' squared norm
    pull weight decay in opposite directions."""

    batch_size = 48

    def __init__(self):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(64, 5)).astype(np.float32)
        y = (x @ np.array([2.0, -1.0, 0.5, 0.0, 1.5], np.float32))[:, None]
        y = y + 0.1 * rng.normal(size=y.shape).astype(np.float32)
        self.train_data = {"x": x[:48], "y": y[:48]}
        self.val_data = {"x": x[48:56], "y": y[48:56]}
        self.test_data = {"x": x[56:], "y": y[56:]}

    def init(self, key, hp):
        return nnx.Linear(5, 1, rngs=nnx.Rngs(key))

    def loss(self, model, batch, hp, key):
        mse = jnp.mean((model(batch["x"]) - batch["y"]) ** 2)
        return mse, {"l2": optax.tree.norm(nnx.state(model, nnx.Param), squared=True)}


def test_spread_weights_lie_on_the_simplex_from_corner_to_corner():
    w2 = spread_weights(5, 2)
    np.testing.assert_allclose(w2[:, 0], [1, 0.75, 0.5, 0.25, 0])
    w3 = spread_weights(7, 3, seed=1)
    np.testing.assert_allclose(w3.sum(axis=1), 1.0)
    assert np.all(w3 >= 0) and np.array_equal(w3[:3], np.eye(3))
    np.testing.assert_array_equal(w3, spread_weights(7, 3, seed=1))  # resume: the same
    assert not np.array_equal(w3[3:], spread_weights(7, 3, seed=2)[3:])
    np.testing.assert_allclose(spread_weights(1, 2), [[0.5, 0.5]])


def test_scalarise_gradient_is_the_weighted_gradient_of_the_log_objectives():
    objectives = (Objective("a"), Objective("b", maximize=True))
    w = jnp.asarray([0.3, 0.7])

    def metrics(x):
        return {"a": jnp.sum(x**2) + 1.0, "b": 2.0 + jnp.sin(x[0])}

    x = jnp.asarray([0.4, -1.2])
    got = jax.grad(lambda x: scalarise(metrics(x), objectives, w))(x)
    want = jax.grad(lambda x: 0.3 * jnp.log(metrics(x)["a"]) - 0.7 * jnp.log(metrics(x)["b"]))(x)
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.fixture(scope="module")
def ridge():
    task = Ridge()
    population = Population(task, "adamw", "constant", mode="vmap", devices=1)
    space = Space.from_config({"weight_decay": "loguniform(1e-3, 1.0)"})
    return task, population, space


def _proposals(strategy, population, task, space, size, objectives=()):
    """The strategy's proposals after one 4-step window from one shared start (every member
    id 0: the same initial weights and data)."""
    strategy = strategy.for_study(objectives)
    state, _ = strategy.init(0, space, size)
    hp = {"lr": np.full(size, 0.05), "weight_decay": np.full(size, 0.1)}
    pop = population.init(jax.random.key(0), np.zeros(size, np.int64), hp)
    data = (task.train_data, task.splits.val)
    state, _, _ = strategy.train_segment(state, population, pop, data, 4, 4)
    return np.log(np.asarray(state.proposed["weight_decay"])), np.asarray(state.val)


@pytest.mark.parametrize("strategy_cls", [UnrolledHypergrad, ImplicitHypergrad])
def test_members_descend_their_own_weighting_of_the_objectives(ridge, strategy_cls):
    """Weights (1, 0), (2/3, 1/3), (1/3, 2/3), (0, 1): the first member moves as the study of
    the loss alone, in relative terms (its step over the loss); with SGD outside, each step is
    linear in the weights; the member weighting the weights' norm raises weight decay more."""
    task, population, space = ridge
    kw = {"outer": "sgd", "outer_lr": 0.5}
    many, _ = _proposals(strategy_cls(**kw), population, task, space, 4, LOSS_L2)
    alone, loss = _proposals(strategy_cls(**kw), population, task, space, 4)
    start = np.log(0.1)
    steps = many - start
    np.testing.assert_allclose(steps[0], (alone[0] - start) / loss[0], rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(steps[1], (2 * steps[0] + steps[3]) / 3, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(steps[2], (steps[0] + 2 * steps[3]) / 3, rtol=1e-3, atol=1e-6)
    assert steps[3] > 1e-4 and steps[3] > steps[0]


def test_tune_with_two_objectives_spreads_weight_decay_over_the_front(tmp_path):
    result = jaxhpo.tune(
        Ridge(),
        {"weight_decay": "loguniform(1e-3, 1.0)", "lr": 0.05},
        strategy="hypergrad",
        objectives={"loss": "min", "l2": "min"},
        population=4,
        steps=24,
        segment_steps=4,
        out_dir=tmp_path,
        quiet=True,
        points=[{"weight_decay": 0.05}] * 4,  # one start: the weights alone tell them apart
        settings={"strategy": {"outer_lr": 0.3}},
    )
    table = pd.read_csv(result.run_dir / "metrics.csv")
    last = table[table["step"] == table["step"].max()].sort_values("member")
    wd = last["weight_decay"].to_numpy()
    assert wd[-1] > wd[0]  # the member weighting the norm ends with more weight decay
    assert len(result.front) >= 1


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ('strategy.constraints={loss: "<= 3"}', "strategy.constraints: the hypergrad strategy"),
        ("strategy.objectives={loss: min, params: min}", "strategy.objectives.params: measured"),
    ],
)
def test_what_hypergradients_cannot_descend_is_one_line_before_anything_is_built(
    tmp_path, extra, match
):
    objectives = [] if "objectives" in extra else ["strategy.objectives={loss: min, accuracy: max}"]
    proc = subprocess.run(
        [sys.executable, "-m", "jaxhpo.cli", "run", "lm-hypergrad", *objectives, extra]
        + ["--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert match in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not any(Path(tmp_path).iterdir())


@pytest.mark.slow
def test_killed_multiobjective_hypergrad_run_resumes_bit_identical(tmp_path):
    """SIGKILL after the evaluation of step 8; the resumed run's tables, events and
    TensorBoard equal the uninterrupted run's (the members' weights are in the strategy's
    checkpointed state)."""
    from test_side_outputs_resume import VARYING, study, tensorboard_of

    args = [
        "lm-hypergrad",
        *TINY_LM_OVERRIDES,
        "train.steps=16",
        "train.segment_steps=4",
        "population.size=3",
        "strategy.objectives={loss: min, accuracy: max}",
    ]
    full = study(tmp_path / "full", "none", args)
    killed = study(tmp_path / "killed", "eval:8", args)
    ta, tb = (pd.read_csv(d / "metrics.csv").drop(columns=list(VARYING)) for d in (full, killed))
    pd.testing.assert_frame_equal(ta, tb, check_exact=True)
    for name in ("events.jsonl", "members.csv"):
        assert (full / name).read_text() == (killed / name).read_text()
    assert tensorboard_of(killed) == tensorboard_of(full)
