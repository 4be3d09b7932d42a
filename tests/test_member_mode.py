"""``population.mode=auto``: the member mode picked by rule from one member step's cost."""

from __future__ import annotations

import jax
import numpy as np

from jaxhpo.population import Population
from jaxhpo.population.member_mode import CPU_VMAP_MAX_FLOPS, choose_mode, member_step_flops


def test_auto_rule_by_backend_and_step_cost():
    assert choose_mode("gpu", 1e12).mode == "vmap"
    assert choose_mode("tpu", None).mode == "vmap"
    assert choose_mode("cpu", CPU_VMAP_MAX_FLOPS / 10).mode == "vmap"
    big = choose_mode("cpu", CPU_VMAP_MAX_FLOPS * 10)
    assert big.mode == "map" and "GFLOP/step" in big.reason
    assert choose_mode("cpu", None).mode == "map"  # unknown cost: the safe CPU default


def test_step_flops_from_shapes_traces_no_program(lm_task):
    popn = Population(lm_task, "adamw", "constant", mode="map")
    flops = member_step_flops(popn, lm_task.train_data)
    params = sum(x.size for x in jax.tree.leaves(popn.init(jax.random.key(0), [0], {}).params))
    tokens = lm_task.batch_size * lm_task.seq_len  # token ids [B, L]
    assert flops == 6.0 * params * tokens
    assert popn.trace_counts == {"init": 1, "segment": 0, "evaluate": 0}  # only the init above
    assert member_step_flops(popn, None) is None  # no data to shape a batch: unknown


def test_auto_resolves_once_and_records_why(lm_task):
    popn = Population(lm_task, "adamw", "constant")  # mode="auto"
    assert popn.mode == "vmap" and popn.mode_reason.startswith("auto: vmap")  # tiny step
    assert Population(lm_task, mode="map").mode_reason == "population.mode=map"
    pop = popn.init(jax.random.key(0), np.arange(2), {"lr": [1e-3, 2e-3]})
    pop, losses = popn.train_segment(pop, lm_task.train_data, 2)
    assert np.isfinite(np.asarray(losses)).all()


def test_new_hparam_values_never_recompile_an_auto_specialised_population(lm_task):
    """Regression guard: resolving ``auto`` and specialising fixed task hyperparameters happen
    once, at construction; new values of searched ones (lr, dropout) reuse the program."""
    fixed = {k: v for k, v in Population.task_defaults(lm_task).items() if k != "dropout"}
    popn = Population(lm_task, "adamw", "constant", fixed=fixed)
    pop = popn.init(jax.random.key(0), np.arange(2), {"lr": [1e-3, 2e-3], "dropout": [0.0, 0.1]})
    for lr, dropout in ((3e-3, [0.2, 0.0]), (1e-2, [0.05, 0.3])):
        pop = popn.set_hparams(pop, {"lr": [lr, lr / 2], "dropout": dropout})
        pop, _ = popn.train_segment(pop, lm_task.train_data, 2)
    assert popn.trace_counts["segment"] == 1
    np.testing.assert_allclose(np.asarray(popn.get_hparams(pop)["dropout"]), [0.05, 0.3])


def test_auto_estimates_the_step_cost_of_a_task_with_numpy_data_regression_issue_28():
    """Regression (issue 28): a user task whose data are numpy arrays (what ModelTask takes)
    had its step cost estimated with the data closed over, so the batch draw indexed numpy with a
    traced step (TracerArrayConversionError, swallowed) and auto fell back to "map on cpu (step
    cost unknown)". The data are now abstract arguments of the estimate."""
    import optax
    from flax import nnx

    import jaxhpo

    class Linear(jaxhpo.ModelTask):
        batch_size = 8
        hparams = {"scale": 1.0}

        def __init__(self):
            rng = np.random.default_rng(0)
            x, y = rng.normal(size=(64, 5)).astype(np.float32), rng.integers(0, 3, 64)
            self.train_data = {"x": x[:48], "y": y[:48]}
            self.val_data = self.test_data = {"x": x[48:], "y": y[48:]}

        def init(self, key, hp):
            return nnx.Linear(5, 3, rngs=nnx.Rngs(key))

        def loss(self, model, batch, hp, key):
            logits = model(batch["x"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    task = Linear()
    assert isinstance(task.train_data["x"], np.ndarray)
    popn = Population(task, "adamw", "constant")  # mode="auto"
    assert member_step_flops(popn, task.train_data) == 6.0 * (5 * 3 + 3) * 8
    assert "unknown" not in popn.mode_reason and popn.mode_reason.startswith("auto: vmap")
