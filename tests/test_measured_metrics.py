"""Metrics the framework measures (issue 27): ``params`` is exact (a masked member counts what
a model of its own structure has), ``flops`` is an estimate within 2x of XLA's count of the
training step, both reach the run's tables when an objective names them, cost nothing when none
does, and a task without a FLOP estimate is refused in one line."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from conftest import TINY_LM_OVERRIDES
from flax import nnx

from jaxhpo.config import ConfigError
from jaxhpo.population import Population
from jaxhpo.tasks import LanguageModelTask
from jaxhpo.tasks.measured import Measured, param_count, step_flops, step_memory, with_measured

MODEL = {"num_layers": 2, "num_heads": 2, "d_model": 16, "d_ff": 32}


def _task(**model):
    m = {**MODEL, **model}
    return LanguageModelTask(corpus=None, max_bytes=20_000, seq_len=16, batch_size=4, model=m)


def _model(task):
    return nnx.eval_shape(lambda: task.init(jax.random.key(0)))


def _nnx_count(model) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_params_of_the_full_model_is_nnx_count():
    task = _task()
    model = _model(task)
    assert float(param_count(task, model, {})) == _nnx_count(model)
    assert float(param_count(task, model, {"depth": 2.0, "heads": 2.0})) == _nnx_count(model)


@pytest.mark.parametrize("structure, model", [({"depth": 1.0}, {"num_layers": 1})])
def test_masked_depth_counts_what_a_shallower_model_has(structure, model):
    big = _task()
    assert float(param_count(big, _model(big), structure)) == _nnx_count(_model(_task(**model)))


def test_masked_ff_width_counts_what_a_narrower_model_has():
    big = _task()
    small = _task(d_ff=16)
    got = param_count(big, _model(big), {"ff_width": 16.0})
    assert float(got) == _nnx_count(_model(small))


def test_masked_heads_count_the_used_rows_and_columns():
    """One of two heads: the qkv columns, their biases and the out rows of the other head go
    (head dim 8: 3 x 8 x 16 + 3 x 8 + 8 x 16 per block)."""
    task = _task()
    model = _model(task)
    dropped = 2 * (3 * 8 * 16 + 3 * 8 + 8 * 16)
    assert float(param_count(task, model, {"heads": 1.0})) == _nnx_count(model) - dropped


def test_params_is_traceable_per_member():
    task = _task()
    model = _model(task)
    depth = jnp.array([1.0, 2.0])
    got = jax.vmap(lambda d: param_count(task, model, {"depth": d}))(depth)
    assert float(got[0]) < float(got[1]) == _nnx_count(model)


def test_flops_estimate_is_within_2x_of_xlas_count():
    task = _task(num_layers=2, d_model=64, num_heads=4, d_ff=256)
    model = task.init(jax.random.key(0))
    graph, params, rest = nnx.split(model, nnx.Param, ...)
    batch = task.train_batch(task.train_data, jnp.int32(0))
    hp = dict(task.hparam_defaults)

    def step(params):
        m = nnx.merge(graph, params, rest)
        return task.loss(m, batch, hp, jax.random.key(1))[0]

    cost = jax.jit(jax.grad(step)).lower(params).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    xla = float(cost["flops"])
    ours = float(step_flops(task, {}))
    assert 0.5 < ours / xla < 2.0, (ours, xla)


def _xla_step_bytes(task) -> tuple[float, float]:
    """XLA's memory analysis of one member's compiled training step (temporaries and
    arguments, the training tokens left out) and our estimate."""
    population = Population(task, "adamw", "constant", mode="vmap", devices=1)
    pop = population.init(jax.random.key(0), np.arange(1), {"lr": 1e-3})
    step = jax.jit(lambda p, d: population.train_segment(p, d, 1))
    m = step.lower(pop, task.train_data).compile().memory_analysis()
    data = sum(x.nbytes for x in jax.tree.leaves(task.train_data) if hasattr(x, "nbytes"))
    xla = m.temp_size_in_bytes + m.argument_size_in_bytes - data
    model = nnx.eval_shape(lambda: task.init(jax.random.key(0)))
    return xla, float(step_memory(task, model, {}))


def test_memory_estimate_is_within_1_5x_of_xlas_and_orders_sizes_as_xla_does():
    sizes = [
        dict(model={"num_layers": 1, "num_heads": 2, "d_model": 32, "d_ff": 64}, seq_len=32),
        dict(model={"num_layers": 2, "num_heads": 4, "d_model": 64, "d_ff": 256}, seq_len=64),
        dict(model={"num_layers": 3, "num_heads": 4, "d_model": 96, "d_ff": 384}, seq_len=64),
    ]
    tasks = [LanguageModelTask(corpus=None, max_bytes=40_000, batch_size=8, **s) for s in sizes]
    xla, ours = (np.asarray(v) for v in zip(*map(_xla_step_bytes, tasks), strict=True))
    assert xla.shape == (3,) and np.all((ours / xla > 1 / 1.5) & (ours / xla < 1.5)), (ours, xla)
    assert np.all(np.diff(xla) > 0) and np.all(np.diff(ours) > 0)


def test_masked_memory_counts_the_member_structure():
    task = _task(num_layers=3, d_ff=64)
    model = _model(task)
    full = float(step_memory(task, model, {}))
    shallow = float(step_memory(task, model, {"depth": 1.0}))
    narrow = float(step_memory(task, model, {"ff_width": 16.0}))
    assert shallow < narrow < full


def test_the_wrapper_adds_metrics_and_keeps_the_task():
    task = _task()
    wrapped = with_measured(task, ("params",))
    assert isinstance(wrapped, Measured) and wrapped.task is task
    assert wrapped.metric_names == ("loss", "accuracy", "params")
    assert wrapped.batch_size == task.batch_size and wrapped.name == task.name
    assert with_measured(task, ()) is task  # nothing named: the task itself, no cost


def test_flops_of_a_task_without_an_estimate_is_one_line():
    class Plain:
        name = "plain"
        metric_names = ("loss",)

    with pytest.raises(ValueError, match=r"strategy.objectives.flops: task 'plain'") as e:
        with_measured(Plain(), ("flops",))
    assert "\n" not in str(e.value)


def test_unknown_measured_metric_is_still_refused_by_the_task_check():
    from jaxhpo.cli import load_config
    from jaxhpo.experiment import prepare

    cfg = load_config("lm-random", [*TINY_LM_OVERRIDES, "strategy.objectives={loss: min, x: min}"])
    with pytest.raises(ConfigError, match=r"strategy.objectives.x: task"):
        prepare(cfg)


def test_prepare_wraps_the_task_only_when_an_objective_names_a_measured_metric():
    from jaxhpo.cli import load_config
    from jaxhpo.experiment import prepare

    plain = prepare(load_config("lm-random", [*TINY_LM_OVERRIDES]))
    assert not isinstance(plain.task, Measured)
    over = [*TINY_LM_OVERRIDES, "strategy.objectives={loss: min, params: min}"]
    prep = prepare(load_config("lm-random", over))
    assert isinstance(prep.task, Measured) and "params" in prep.task.metric_names


@pytest.mark.parametrize("structure", ["masked", "buckets"])
def test_a_run_against_parameter_count_reports_it_per_member(tmp_path, structure):
    """lm-random with depth searched (masked super-model or shape buckets) and loss against
    params: every member's val_params is its own structure's count, the front in summary.md."""
    from jaxhpo.cli import main

    args = [*TINY_LM_OVERRIDES, "model.num_layers=2", "space.depth=[1, 2]", "population.size=4"]
    args += [f"population.structure={structure}"]
    args += ["train.steps=4", "train.segment_steps=2"]
    args += ["strategy.objectives={loss: min, params: min}"]
    assert main(["run", "lm-random", *args, "--out", str(tmp_path), "--quiet"]) == 0
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    m = pd.read_csv(run_dir / "metrics.csv")
    last = m[m["step"] == m["step"].max()]
    want = {d: _nnx_count(_model(_task(num_layers=int(d), num_heads=2, d_model=16, d_ff=32)))
            for d in (1, 2)}  # fmt: skip
    expected = [want[int(d)] for d in last["depth"]]
    assert len(last) == 4 and last["val_params"].tolist() == expected  # every member's row
    assert "## Pareto front" in (run_dir / "summary.md").read_text()
