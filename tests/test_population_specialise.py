"""A ``Population`` built directly specialises by default (issue 30): every task hyperparameter
the caller does not name in ``searched`` is a constant of the compiled step, so a default
population's program draws no dropout bits; writing another value of a fixed one is a one-line
error; ``specialise=False`` keeps the generic step."""

from __future__ import annotations

import math
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhpo.hypergrad import member, unrolled
from jaxhpo.population import Population, gather
from jaxhpo.run.update import apply_update
from jaxhpo.strategies import PopulationUpdate


def _ui32_shapes(text: str) -> list[tuple[int, ...]]:
    """Shapes of the unsigned 32-bit tensors of a lowered program: random bits
    (``rng_bit_generator`` / threefry) and key plumbing."""
    return [tuple(map(int, s.split("x"))) for s in re.findall(r"tensor<([0-9x]+)xui32>", text)]


def _activation_size(task) -> int:
    """One member's activations [B, L, d]: a dropout mask has at least this many entries."""
    return task.batch_size * task.seq_len * task.model_config.d_model


def _segment_text(popn, task, n=2) -> str:
    pop = popn.init(jax.random.key(0), np.arange(n), {"lr": 1e-3})
    return popn._segment.lower(pop, task.train_data, jnp.int32(3), num_steps=3).as_text()


@pytest.mark.parametrize("mode", ["vmap", "map"])
def test_default_population_draws_no_activation_sized_random_bits(lm_task, mode):
    big = _activation_size(lm_task)
    default = Population(lm_task, "adamw", "warmup_cosine", mode=mode)
    assert default.fixed["dropout"] == 0.0 and default.fixed["attn_dropout"] == 0.0
    assert all(math.prod(s) < big for s in _ui32_shapes(_segment_text(default, lm_task)))
    # ...and the check can fail: dropout searched draws a mask of the activations' size
    searched = Population(lm_task, "adamw", "warmup_cosine", mode=mode, searched=("dropout",))
    assert any(math.prod(s) >= big for s in _ui32_shapes(_segment_text(searched, lm_task)))


def test_hypergradient_window_of_a_default_population_draws_no_dropout_bits(lm_task):
    """The unrolled estimators run the population's step with its fixed task hyperparameters
    as constants (the fast path), the searched ones as differentiable arguments."""
    big = _activation_size(lm_task)

    def text(popn):
        pop = popn.init(jax.random.key(0), np.arange(2), {"lr": 1e-3})
        step_fn = member.make_step(popn, lm_task.train_data, jnp.asarray(2))

        def run(m):
            return unrolled.unroll(step_fn, m, member.member_hparams(popn, m), 2)[1]

        return jax.jit(jax.vmap(run)).lower(pop).as_text()

    default = Population(lm_task, "adamw", "constant", mode="vmap")
    assert all(math.prod(s) < big for s in _ui32_shapes(text(default)))
    generic = Population(lm_task, "adamw", "constant", mode="vmap", specialise=False)
    assert any(math.prod(s) >= big for s in _ui32_shapes(text(generic)))


def test_member_of_a_default_population_equals_the_member_trained_alone(lm_task):
    popn = Population(lm_task, "adamw", "warmup_cosine", mode="map")
    hp = {"lr": np.array([1e-3, 3e-3, 1e-2]), "weight_decay": np.array([0.0, 0.1, 0.01])}
    key = jax.random.key(5)
    full, losses = popn.train_segment(popn.init(key, np.arange(3), hp), lm_task.train_data, 4)
    one = {k: v[2:] for k, v in hp.items()}
    alone, alone_losses = popn.train_segment(popn.init(key, [2], one), lm_task.train_data, 4)
    chex.assert_trees_all_close(gather(full, [2]).params, alone.params, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(np.asarray(losses)[2:], np.asarray(alone_losses), rtol=1e-5)


def test_writing_a_fixed_hyperparameter_is_a_one_line_error(lm_task):
    popn = Population(lm_task, "sgd", "constant", mode="map", searched=("lr",))
    with pytest.raises(ValueError, match=r"dropout is fixed at 0 .*searched=") as e:
        popn.init(jax.random.key(0), np.arange(2), {"dropout": [0.0, 0.1]})
    assert "\n" not in str(e.value)
    pop = popn.init(jax.random.key(0), np.arange(2), {"lr": 0.1, "dropout": 0.0})  # its value
    popn.set_hparams(pop, {"dropout": [0.0, np.nan]})  # NaN: inactive, the default
    with pytest.raises(ValueError, match=r"label_smoothing is fixed at 0"):
        popn.set_hparams(pop, {"label_smoothing": 0.1})
    with pytest.raises(ValueError, match=r"hparams: depth is fixed at 1"):
        apply_update(popn, pop, PopulationUpdate(hparams={"depth": np.array([1.0, 2.0])}), None, 2)


def test_specialise_false_is_the_generic_step(lm_task):
    popn = Population(lm_task, "sgd", "constant", mode="map", specialise=False)
    assert popn.fixed == {}
    pop = popn.init(jax.random.key(0), np.arange(2), {"lr": 0.1, "dropout": [0.0, 0.2]})
    pop = popn.set_hparams(pop, {"label_smoothing": 0.1})
    np.testing.assert_allclose(np.asarray(popn.get_hparams(pop)["dropout"]), [0.0, 0.2])


def test_explicit_fixed_is_exactly_what_is_held_and_survives_for_size(lm_task):
    popn = Population(lm_task, "adamw", "constant", mode="map", fixed={"dropout": 0.0})
    assert popn.fixed == {"dropout": 0.0}  # what the run path passes, kept as given
    assert popn.for_size(3).fixed == {"dropout": 0.0}
    default = Population(lm_task, "adamw", "constant", mode="map", searched=("dropout",))
    assert "dropout" not in default.fixed and default.fixed["label_smoothing"] == 0.0


def test_a_misspelt_searched_name_is_refused(lm_task):
    with pytest.raises(ValueError, match=r"searched names \['dropuot'\]"):
        Population(lm_task, "adamw", "constant", searched=("lr", "dropuot"))
