"""A task of the user's own (jaxhpo.ModelTask): any NNX module with BatchNorm and Dropout,
trained in a population as it would be alone, copied whole by PBT's exploit, and the one member
step shared with the unrolled hypergradient (its epoch limit included)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from mlp_digits import Digits  # noqa: E402

import jaxhpo  # noqa: E402
from jaxhpo.hypergrad import member, unrolled  # noqa: E402
from jaxhpo.population import Population  # noqa: E402

HP = {"lr": np.array([1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 2e-3]), "weight_decay": np.full(6, 1e-3)}


@pytest.fixture(scope="module")
def digits():
    return Digits(hidden=16)


@pytest.fixture(scope="module")
def trained(digits):
    population = Population(digits, "adamw", "constant", mode="map")
    pop = population.init(jax.random.key(0), np.arange(6), HP)
    pop, losses = population.train_segment(pop, population.run_data()[0], 8)
    return population, pop, losses


def test_member_with_batchnorm_and_dropout_equals_member_alone(digits, trained):
    population, pop, losses = trained
    alone = Population(digits, "adamw", "constant", mode="map")
    one = alone.init(jax.random.key(0), np.array([2]), {k: v[2:3] for k, v in HP.items()})
    one, one_losses = alone.train_segment(one, alone.run_data()[0], 8)
    mine = jax.tree.map(lambda x: x[2:3], pop)
    chex.assert_trees_all_close(mine.params, one.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(mine.model_state, one.model_state, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(losses[2:3], one_losses, rtol=1e-5)
    # the batch statistics moved away from their initial values: they are carried
    assert float(jnp.abs(pop.model_state["norm"]["mean"][...]).max()) > 0
    assert np.isfinite(np.asarray(losses)).all()


def test_dropout_draws_are_addressed_by_member_key_and_step(digits, trained):
    """Two members with the same id, key and hyperparameters draw the same dropout masks in
    one population: the RNG streams are made from the key and step, not consumed in turn."""
    population, _, _ = trained
    hp = {"lr": np.full(2, 1e-2), "weight_decay": np.full(2, 1e-3)}
    pop = population.init(jax.random.key(0), np.array([5, 5]), hp)
    pop = pop.replace(member_id=jnp.asarray([5, 5], jnp.int32))
    _, losses = population.train_segment(pop, population.run_data()[0], 2)
    np.testing.assert_array_equal(losses[0], losses[1])


def test_pbt_exploit_copies_batch_statistics_with_the_weights(trained):
    population, pop, _ = trained
    parents = np.array([1, 1, 2, 3, 4, 5])
    copied = population.copy_members(pop, parents)
    for tree in ("params", "model_state", "opt_state"):
        got = jax.tree.map(lambda x: x[0], getattr(copied, tree))
        want = jax.tree.map(lambda x: x[1], getattr(pop, tree))
        chex.assert_trees_all_equal(got, want)
    assert int(copied.member_id[0]) == int(pop.member_id[0])  # keeps its own id and key


def test_evaluation_is_the_exact_mean_over_the_split(digits, trained):
    """Batches of 256 and a shorter last one: the same means as one batch of the whole split."""
    population, pop, _ = trained
    metrics = population.evaluate(pop, population.run_data()[1])
    m = jax.tree.map(lambda x: x[0], pop)
    module = population.model.merge(m.params, m.model_state, jax.random.key(0), train=False)
    whole = {k: jnp.asarray(v) for k, v in digits.val_data.items()}
    want = digits.evaluate(module, whole, {})
    np.testing.assert_allclose(metrics["loss"][0], want["loss"], rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"][0], want["accuracy"], rtol=1e-5)


def test_unrolled_hypergradient_respects_the_epoch_limit():
    """Regression: the hypergradient step was a copy of the member step that ignored the epoch
    limit (a fine-tuning member with a 2-step budget trained 5 steps under it)."""
    from conftest import TINY_MODEL

    from jaxhpo.tasks import FinetuneTask

    task = FinetuneTask(
        seq_len=16, batch_size=4, eval_batches=1, num_train=8, model=dict(TINY_MODEL)
    )
    population = Population(
        task, "adamw", "warmup_linear", mode="map", searched=("epochs", "batch_size")
    )
    assert population.epoch_size == 8
    hp = {"epochs": np.array([1.0, 3.0]), "batch_size": np.array([4.0, 4.0])}
    pop = population.init(jax.random.key(0), np.arange(2), hp)
    limits = np.asarray(jax.vmap(population.member_limit)(pop.hparams))
    np.testing.assert_array_equal(limits, [2, 6])
    step_fn = member.make_step(population, task.train_data, jnp.asarray(5))

    def run(m):
        return unrolled.unroll(step_fn, m, member.member_hparams(population, m), 5)

    out, losses = jax.jit(jax.vmap(run))(pop)
    np.testing.assert_array_equal(out.step, [2, 5])
    ref, _ = population.train_segment(pop, task.train_data, 5)
    np.testing.assert_array_equal(out.step, ref.step)
    assert np.isnan(np.asarray(losses)[0, 2:]).all()


LR = {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}}


def _table(run_dir: Path, name: str) -> pd.DataFrame:
    t = pd.read_csv(run_dir / name)
    return t.drop(columns=[c for c in ("run", "wall_time") if c in t.columns])


def test_user_task_run_reruns_and_resumes_from_its_run_directory(tmp_path):
    """A run started from Python records its task as an importable reference: the run directory
    alone re-runs it (config.yaml) and resumes it, bit-identically."""
    from jaxhpo import experiment
    from jaxhpo.cli import load_config

    r = jaxhpo.tune(
        Digits(hidden=8),
        LR,
        strategy="pbt",
        population=4,
        steps=60,
        segment_steps=20,
        out_dir=tmp_path / "a",
        quiet=True,
    )
    cfg = load_config(str(r.run_dir / "config.yaml"), [f"out_dir={tmp_path / 'b'}"])
    assert cfg.task.kind.endswith("mlp_digits.py:Digits") and cfg.task.args["hidden"] == 8
    again = experiment.run(cfg, quiet=True)
    pd.testing.assert_frame_equal(
        _table(r.run_dir, "metrics.csv"), _table(again.run_dir, "metrics.csv")
    )
    # an interrupted copy: the tables of the end gone, only the first checkpoint left
    cut = tmp_path / "c" / r.run_dir.name
    shutil.copytree(r.run_dir, cut)
    for name in ("members.csv", "metrics.parquet", "summary.md"):
        (cut / name).unlink(missing_ok=True)
    ckpts = sorted(
        (p for p in (cut / "checkpoints").iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
    )
    assert len(ckpts) >= 2
    for p in ckpts[1:]:
        shutil.rmtree(p)
    experiment.resume_run(cut, quiet=True)
    pd.testing.assert_frame_equal(_table(r.run_dir, "metrics.csv"), _table(cut, "metrics.csv"))
    pd.testing.assert_frame_equal(_table(r.run_dir, "members.csv"), _table(cut, "members.csv"))


def test_tune_returns_the_best_member_and_its_weights_load_into_the_users_module(tmp_path):
    task = Digits(hidden=8)
    r = jaxhpo.tune(
        task,
        LR,
        population=3,
        steps=20,
        segment_steps=20,
        out_dir=tmp_path,
        quiet=True,
        settings={"train": {"save_best": True}},
    )
    val = r.members.set_index("member")["val_loss"]
    assert r.best_member == int(val.idxmin())
    assert r.best_metrics["val_loss"] == pytest.approx(float(val.min()))
    model = r.best_model()  # weights and batch statistics of the best member
    batch = {k: jnp.asarray(v) for k, v in task.val_data.items()}
    got = float(task.evaluate(model, batch, {})["loss"])
    assert got == pytest.approx(r.best_metrics["val_loss"], rel=1e-4)
    # train.save_best wrote the same weights; they load into a fresh module of the user's
    fresh = task.init(jax.random.key(7), {})
    jaxhpo.load_best(fresh, r.run_dir)
    fresh.eval()
    assert float(task.evaluate(fresh, batch, {})["loss"]) == pytest.approx(got, rel=1e-6)


def test_structure_search_on_a_model_without_structure_is_one_line(tmp_path):
    from jaxhpo.config import ConfigError

    with pytest.raises(ConfigError, match=r"^space.depth: task 'digits' has no structural"):
        jaxhpo.tune(Digits(hidden=8), {**LR, "depth": [1, 2]}, out_dir=tmp_path, quiet=True)
    assert not any(tmp_path.iterdir())


STRATEGY_CASES = {
    "sobol": {},
    "grid": {"space": {"lr": [1e-3, 1e-2], "weight_decay": [1e-4, 1e-2]}},
    "halving": {},
    "hyperband": {"steps": 36, "segment_steps": 12},
    "median": {},
    "evo": {},
    "bo": {},
    "optuna": {},
    "rl": {},
    "implicit": {"space": {"weight_decay": {"type": "float", "low": 1e-5, "high": 1e-1}}},
    "pes": {"space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1}}},
    "pbt": {"settings": {"train": {"compiled": True}}},
    "random": {"settings": {"task": {"folds": 2}}},
}


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(STRATEGY_CASES))
def test_every_strategy_tunes_a_user_task(tmp_path, strategy):
    import optax

    case = STRATEGY_CASES[strategy]
    space = case.get("space", {**LR, "weight_decay": LR["lr"]})
    r = jaxhpo.tune(
        Digits(hidden=8),
        space,
        strategy=strategy,
        optimizer=optax.adamw,
        population=None if strategy == "grid" else 4,
        steps=case.get("steps", 40),
        segment_steps=case.get("segment_steps", 10),
        out_dir=tmp_path,
        quiet=True,
        settings=case.get("settings"),
    )
    assert r.best_member is not None and np.isfinite(r.best_metrics["val_loss"])
