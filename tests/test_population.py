"""The population trainer: equivalence with members trained alone, modes, no recompiles, faults."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhpo.population import Population, gather, scatter

P = 8
HP = {
    "lr": np.geomspace(1e-3, 3e-2, P),
    "warmup_steps": np.linspace(0, 6, P),
    "decay_steps": np.full(P, 20.0),
    "dropout": np.linspace(0.0, 0.3, P),
    "label_smoothing": np.linspace(0.0, 0.1, P),
}


def _member(hp, i):
    return {k: v[i : i + 1] for k, v in hp.items()}


def _train(pop_obj, pop, task, segments=2, k=4):
    for _ in range(segments):
        pop, _ = pop_obj.train_segment(pop, task.train_data, k)
    return pop


# lax.map runs each member's own program, so it matches a member trained alone to float rounding.
# vmap batches the matmuls, which reorders sums (~1e-7 relative). Adam then divides the
# near-zero gradient of a parameter the loss does not depend on (the attention key bias: softmax
# is invariant to it) by its own tiny second moment, so that parameter drifts by up to ~1e-4
# between two float orderings while every output stays equal. Hence: outputs to 1e-5, parameters
# to 5e-4 absolute under vmap with Adam, and tight parameter checks with SGD.
TIGHT = {"rtol": 2e-5, "atol": 2e-6}
LOOSE = {"rtol": 1e-4, "atol": 5e-4}


@pytest.mark.parametrize("mode", ["map", "vmap"])
def test_member_in_population_equals_member_trained_alone(lm_task, mode):
    """Member i trained inside a population of 8 == the same member (id, hparams, key) alone.
    The population is specialised (the default): dropout and label smoothing are searched, the
    other task hyperparameters are constants of the step."""
    popn = Population(lm_task, "adamw", "warmup_cosine", mode=mode, searched=tuple(HP))
    assert set(popn.fixed) == set(popn.task_names) - set(HP)
    key = jax.random.key(7)
    full = _train(popn, popn.init(key, np.arange(P), HP), lm_task)
    full_val = np.asarray(popn.evaluate(full, lm_task.splits.val)["loss"])
    tol = TIGHT if mode == "map" else LOOSE
    for i in (0, 5):
        alone = _train(popn, popn.init(key, [i], _member(HP, i)), lm_task)
        chex.assert_trees_all_close(gather(full, [i]).params, alone.params, **tol)
        chex.assert_trees_all_close(gather(full, [i]).opt_state, alone.opt_state, **tol)
        alone_val = np.asarray(popn.evaluate(alone, lm_task.splits.val)["loss"])
        np.testing.assert_allclose(full_val[i : i + 1], alone_val, rtol=1e-5)
    # ...and the members really differ from each other (the test could fail).
    p = jax.tree.leaves(full.params)[0]
    assert not np.allclose(p[0], p[5])
    assert np.ptp(full_val) > 1e-3


# slow: test_member_in_population_equals_member_trained_alone covers map and vmap by default
@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_results_do_not_depend_on_member_mode(lm_task, optimizer):
    key = jax.random.key(3)
    finals, vals = {}, {}
    for mode in ("map", "vmap", "chunked"):
        popn = Population(
            lm_task, optimizer, "warmup_cosine", mode=mode, chunk_size=3, searched=tuple(HP)
        )
        finals[mode] = _train(popn, popn.init(key, np.arange(P), HP), lm_task)
        vals[mode] = np.asarray(popn.evaluate(finals[mode], lm_task.splits.val)["loss"])
    tol = TIGHT if optimizer == "sgd" else LOOSE
    for mode in ("vmap", "chunked"):
        chex.assert_trees_all_close(finals["map"].params, finals[mode].params, **tol)
        np.testing.assert_allclose(vals["map"], vals[mode], rtol=1e-5)


def test_changing_hparams_never_recompiles(lm_task):
    popn = Population(lm_task, "adamw", "warmup_cosine", mode="map", searched=tuple(HP))
    pop = popn.init(jax.random.key(0), np.arange(4), _member_slice(HP, 4))
    pop, _ = popn.train_segment(pop, lm_task.train_data, 3)
    popn.evaluate(pop, lm_task.splits.val)
    for scale in (0.5, 2.0, 10.0):
        pop = popn.set_hparams(pop, {"lr": HP["lr"][:4] * scale, "dropout": 0.1, "b1": 0.8})
        pop, _ = popn.train_segment(pop, lm_task.train_data, 3)
        popn.evaluate(pop, lm_task.splits.val)
    assert popn.trace_counts["segment"] == 1
    assert popn.trace_counts["evaluate"] == 1
    np.testing.assert_allclose(np.asarray(popn.get_hparams(pop)["b1"]), 0.8)
    # A different segment length is a different program (static) -- that one does trace again.
    popn.train_segment(pop, lm_task.train_data, 2)
    assert popn.trace_counts["segment"] == 2


def _member_slice(hp, n):
    return {k: v[:n] for k, v in hp.items()}


def test_changed_hparam_changes_training(lm_task):
    """set_hparams really reaches the optimizer: a different lr gives different parameters."""
    popn = Population(lm_task, "sgd", "constant", mode="map")
    pop = popn.init(jax.random.key(0), [0, 0], {"lr": [0.1, 0.1]})
    pop = popn.set_hparams(pop, {"lr": [0.1, 0.5]})
    pop, _ = popn.train_segment(pop, lm_task.train_data, 2)
    a, b = (jax.tree.leaves(gather(pop, [i]).params) for i in (0, 1))
    assert not all(np.allclose(x, y) for x, y in zip(a, b, strict=True))


def test_diverged_member_is_flagged_and_does_not_touch_others(lm_task):
    popn = Population(lm_task, "sgd", "constant", mode="map")
    key = jax.random.key(1)
    good = {"lr": np.array([0.05, 0.1, 0.2])}
    bad = {"lr": np.array([0.05, 1e3, 0.1, 0.2])}
    pop_good = _train(popn, popn.init(key, [0, 2, 3], good), lm_task)
    pop_bad = _train(popn, popn.init(key, [0, 1, 2, 3], bad), lm_task)
    diverged = np.asarray(pop_bad.diverged)
    assert diverged.tolist() == [False, True, False, False]
    chex.assert_trees_all_close(
        gather(pop_bad, [0, 2, 3]).params, pop_good.params, rtol=1e-6, atol=1e-7
    )
    metrics = popn.evaluate(pop_bad, lm_task.splits.val)
    loss = np.asarray(metrics["loss"])
    assert np.isnan(loss[1]) and np.all(np.isfinite(loss[[0, 2, 3]]))
    # The diverged member stops stepping; its parameters stay finite (last good values).
    assert int(pop_bad.step[1]) < int(pop_bad.step[0])
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(pop_bad.params))


def test_inactive_member_does_not_change(lm_task):
    popn = Population(lm_task, "adam", "constant", mode="map")
    pop = popn.init(jax.random.key(0), np.arange(3), {"lr": [1e-2, 1e-2, 1e-2]})
    pop = pop.replace(active=jnp.array([True, False, True]))
    before = gather(pop, [1])
    pop, losses = popn.train_segment(pop, lm_task.train_data, 3)
    chex.assert_trees_all_equal(gather(pop, [1]).params, before.params)
    assert np.all(np.isnan(np.asarray(losses)[1])) and np.all(np.isfinite(np.asarray(losses)[0]))
    assert np.asarray(pop.step).tolist() == [3, 0, 3]


def test_copy_members_copies_whole_member_but_keeps_identity(lm_task):
    popn = Population(lm_task, "adam", "constant", mode="map")
    pop = popn.init(jax.random.key(0), [10, 11, 12], {"lr": [1e-3, 2e-3, 3e-3]})
    pop, _ = popn.train_segment(pop, lm_task.train_data, 2)
    pop = pop.replace(step=jnp.array([5, 6, 7], jnp.int32), active=jnp.array([True, True, False]))
    moved = popn.copy_members(pop, [2, 1, 2])
    assert np.asarray(moved.step).tolist() == [7, 6, 7]
    assert np.asarray(moved.active).tolist() == [False, True, False]
    chex.assert_trees_all_equal(gather(moved, [0]).params, gather(pop, [2]).params)
    chex.assert_trees_all_equal(gather(moved, [0]).opt_state, gather(pop, [2]).opt_state)
    assert np.asarray(moved.member_id).tolist() == [10, 11, 12]
    assert float(popn.get_hparams(moved)["lr"][0]) == pytest.approx(3e-3)
    np.testing.assert_array_equal(np.asarray(moved.key), np.asarray(pop.key))


def test_gather_scatter_roundtrip(lm_task):
    popn = Population(lm_task, "sgd", "constant", mode="map")
    pop = popn.init(jax.random.key(0), np.arange(4), {"lr": [0.1, 0.2, 0.3, 0.4]})
    sub = gather(pop, [3, 1])
    back = scatter(pop, [3, 1], sub)
    chex.assert_trees_all_equal(back, pop)


def test_unknown_hparam_is_a_clear_error(lm_task):
    popn = Population(lm_task, "sgd", "constant", mode="map")
    with pytest.raises(ValueError, match="hparams: unknown name"):
        popn.init(jax.random.key(0), [0], {"learning_rate": [0.1]})


def test_population_learns(lm_task):
    popn = Population(lm_task, "adam", "constant", mode="map")
    pop = popn.init(jax.random.key(0), np.arange(2), {"lr": [3e-3, 1e-5]})
    before = np.asarray(popn.evaluate(pop, lm_task.splits.val)["loss"])
    pop, _ = popn.train_segment(pop, lm_task.train_data, 60)
    after = np.asarray(popn.evaluate(pop, lm_task.splits.val)["loss"])
    assert after[0] < before[0] - 1.0  # learns
    assert after[0] < after[1]  # and the learning rate matters


def test_member_with_smaller_batch_trains_as_alone_with_that_batch():
    """Per-member batch size: a member with batch_size=b inside a task batch of B (the first b
    rows weighted) ends with the parameters of the same member trained alone on a task whose
    batch is b, dropout masks included (threefry draws are positional). Momentum SGD: Adam
    would blow up the float noise of parameters whose gradient is exactly zero in math (the
    key bias: softmax ignores a shift shared by all keys) into lr-sized steps."""
    from conftest import TINY_MODEL

    from jaxhpo.tasks import LanguageModelTask

    kw = dict(corpus=None, max_bytes=200_000, seq_len=16, eval_batches=2, model=TINY_MODEL)
    big, small = LanguageModelTask(batch_size=16, **kw), LanguageModelTask(batch_size=4, **kw)
    hp = {"lr": 0.1, "dropout": 0.1}
    mixed = Population(big, "momentum", "warmup_cosine", mode="vmap", specialise=False)
    pop = mixed.init(jax.random.key(0), np.arange(3), {**hp, "batch_size": np.array([16, 4, 9])})
    pop, losses = mixed.train_segment(pop, big.train_data, 8)
    alone = Population(small, "momentum", "warmup_cosine", mode="map", specialise=False)
    one = alone.init(jax.random.key(0), np.array([1]), hp)
    one, losses_one = alone.train_segment(one, small.train_data, 8)
    for a, b in zip(jax.tree.leaves(pop.params), jax.tree.leaves(one.params), strict=True):
        np.testing.assert_allclose(np.asarray(a)[1], np.asarray(b)[0], rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(np.asarray(losses)[1], np.asarray(losses_one)[0], rtol=1e-5)
    # and the batch size matters: the full-batch member differs
    assert not np.allclose(np.asarray(losses)[0], np.asarray(losses)[1])


def test_epochs_bound_each_member_and_set_its_schedule_horizon():
    """A task with a fixed training set (``epoch_size``) and the hyperparameters ``epochs`` /
    ``warmup_frac``: member i stops after ceil(epochs * epoch_size / batch_size) steps, its
    ``decay_steps`` is that limit and ``warmup_steps`` is warmup_frac of it, at init and after
    a strategy writes new values; the task is asked for the member's own batch size."""
    from conftest import TINY_MODEL

    from jaxhpo.tasks import LanguageModelTask
    from jaxhpo.tasks.base import TASK_DEFAULTS, TASK_DOMAINS, TASK_HPARAMS

    seen = []

    class Epochs(LanguageModelTask):
        epoch_size = 40
        hparam_names = (*TASK_HPARAMS, "epochs", "warmup_frac")
        hparam_domains = {**TASK_DOMAINS, "epochs": (0, 100, True), "warmup_frac": (0, 1, True)}

        @property
        def hparam_defaults(self):
            return {**TASK_DEFAULTS, "epochs": 1.0, "warmup_frac": 0.0}

        def train_batch(self, train_data, step, fold=None, member_batch=None):
            seen.append(member_batch)
            return super().train_batch(train_data, step, fold)

    task = Epochs(corpus=None, max_bytes=200_000, seq_len=8, batch_size=8, model=TINY_MODEL)
    popn = Population(
        task, "adamw", "warmup_linear", mode="map", searched=("epochs", "batch_size", "warmup_frac")
    )
    hp = {"epochs": np.array([2.0, 1.0, 3.0]), "batch_size": np.array([8, 4, 8])}
    hp["warmup_frac"] = np.array([0.1, 0.5, 0.0])
    pop = popn.init(jax.random.key(0), np.arange(3), hp)
    limits = np.array([10, 10, 15])  # ceil(2*40/8), ceil(40/4), ceil(3*40/8)
    got = popn.get_hparams(pop)
    np.testing.assert_array_equal(np.asarray(got["decay_steps"]), limits)
    np.testing.assert_allclose(np.asarray(got["warmup_steps"]), [1.0, 5.0, 0.0])
    pop, losses = popn.train_segment(pop, task.train_data, 12)
    np.testing.assert_array_equal(np.asarray(pop.step), [10, 10, 12])
    assert np.isnan(np.asarray(losses)[0, 10:]).all() and np.isfinite(np.asarray(losses)[2]).all()
    assert seen and seen[0] is not None  # traced member batch size reached the task
    pop = popn.set_hparams(pop, {"epochs": np.array([3.0, 1.0, 3.0])})
    np.testing.assert_array_equal(np.asarray(popn.get_hparams(pop)["decay_steps"]), [15, 10, 15])
    pop, _ = popn.train_segment(pop, task.train_data, 12)
    np.testing.assert_array_equal(np.asarray(pop.step), [15, 10, 15])
