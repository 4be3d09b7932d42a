"""The compiled step specialised to the run: task hyperparameters outside the search space are
constants of the program, so what they switch off costs nothing, and nothing else changes."""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_MODEL

from jaxhpo.config import Config, build
from jaxhpo.population import Population
from jaxhpo.run.prepare import fixed_task_hparams
from jaxhpo.space import Space
from jaxhpo.tasks import LanguageModelTask


@pytest.fixture(scope="module")
def task():
    return LanguageModelTask(
        corpus=None, max_bytes=200_000, seq_len=16, batch_size=4, eval_batches=2, model=TINY_MODEL
    )


def _random_bit_shapes(population, task, mode="vmap") -> list[tuple[int, ...]]:
    pop = population.init(jax.random.key(0), np.arange(2), {"lr": 1e-3})
    text = population._segment.lower(pop, task.train_data, jnp.int32(3), num_steps=3).as_text()
    return [tuple(map(int, s.split("x"))) for s in re.findall(r"tensor<([0-9x]+)xui32>", text)]


@pytest.mark.parametrize("mode", ["vmap", "map"])
def test_dropout_fixed_at_zero_draws_no_random_bits(task, mode):
    big = task.batch_size * task.seq_len  # a dropout mask has at least B x L entries
    generic = Population(task, "adamw", "constant", mode=mode, specialise=False)
    special = Population(task, "adamw", "constant", mode=mode, fixed=Population.task_defaults(task))
    assert any(math.prod(s) >= big for s in _random_bit_shapes(generic, task))
    # what is left is the batch draw (B window starts) and the key plumbing
    assert all(math.prod(s) < big for s in _random_bit_shapes(special, task))


def test_specialised_member_trains_as_the_generic_one(task):
    """The same arithmetic; XLA may fuse the two programs differently (last-bit rounding)."""
    hp = {"lr": np.array([1e-3, 3e-3]), "weight_decay": 0.1}
    out = []
    for fixed in ({}, Population.task_defaults(task)):
        p = Population(task, "adamw", "constant", mode="vmap", fixed=fixed)
        pop, losses = p.train_segment(
            p.init(jax.random.key(1), np.arange(2), hp), task.train_data, 4
        )
        out.append((pop.params, losses, p.evaluate(pop, task.splits.val)))
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)  # noqa: E731
    jax.tree.map(close, out[0], out[1])


def test_a_fixed_hyperparameter_refuses_another_value(task):
    p = Population(task, "adamw", "constant", fixed={"dropout": 0.0})
    pop = p.init(jax.random.key(0), np.arange(2), {})
    p.set_hparams(pop, {"dropout": 0.0, "lr": 2e-3})  # the same value: fine
    with pytest.raises(ValueError, match=r"dropout is fixed at 0 .*add space.dropout"):
        p.set_hparams(pop, {"dropout": [0.0, 0.1]})


def test_the_run_fixes_what_the_space_leaves_out(task):
    space = Space.from_config(
        {"lr": "loguniform(1e-4, 1e-2)", "dropout": "uniform(0, 0.3)", "depth": 1}
    )
    fixed = fixed_task_hparams(task, space)
    assert "dropout" not in fixed and fixed["depth"] == 1.0  # searched / a fixed value
    assert fixed["attn_dropout"] == 0.0 and fixed["batch_size"] == task.batch_size
    assert "lr" not in fixed  # optimizer hyperparameters live in the optimizer state
    assert fixed_task_hparams(task, space, specialise=False) == {}


def test_population_specialise_setting():
    assert build(Config(), {"population": {"specialise": False}}).population.specialise is False
