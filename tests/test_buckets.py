"""Shape buckets (jaxhpo/population/buckets.py): structural hyperparameters (depth, heads,
ff_width, d_model, seq_len) as one compiled program per bucket, seen by the strategy as ONE
population."""

from __future__ import annotations

import shutil

import jax
import numpy as np
import pandas as pd
import pytest
from conftest import TINY_LM_OVERRIDES, TINY_MODEL

from jaxhpo.cli import main
from jaxhpo.experiment import resume_run
from jaxhpo.population import Population
from jaxhpo.population.buckets import BucketedPopulation
from jaxhpo.strategies.pbt import select_parents
from jaxhpo.tasks import LanguageModelTask

KW = dict(corpus=None, max_bytes=200_000, batch_size=4, eval_batches=2)


def _make(structure):
    model = dict(TINY_MODEL)
    model.update({k: v for k, v in structure.items() if k == "d_model"})
    if "depth" in structure:
        model["num_layers"] = structure["depth"]
    return LanguageModelTask(seq_len=structure.get("seq_len", 16), model=model, **KW)


@pytest.fixture(scope="module")
def bucketed():
    base = _make({})
    return BucketedPopulation(_make, base, ("d_model", "seq_len"), "adamw", mode="map")


HP = {
    "lr": np.array([1e-2, 3e-3, 1e-2, 5e-3]),
    "d_model": np.array([16, 32, 32, 16]),
    "seq_len": np.array([16, 8, 8, 16]),
    "dropout": 0.1,
}


def test_bucketed_member_equals_the_member_built_and_trained_alone(bucketed):
    """Slot 1 (d_model 32, seq_len 8) trains exactly as a population of one of that shape."""
    pop = bucketed.init(jax.random.key(0), np.arange(4), HP)
    assert len(pop.keys) == 2 and pop.size == 4
    pop, losses = bucketed.train_segment(pop, "train", 6)
    alone_task = _make({"d_model": 32, "seq_len": 8})
    alone = Population(alone_task, "adamw", mode="map", specialise=False)  # as the buckets
    one = alone.init(jax.random.key(0), np.array([1]), {"lr": 3e-3, "dropout": 0.1})
    one, loss_one = alone.train_segment(one, alone_task.train_data, 6)
    b = pop.keys.index((32, 8))
    j = pop.slots[b].index(1)
    for x, y in zip(
        jax.tree.leaves(pop.buckets[b].params), jax.tree.leaves(one.params), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(x)[j], np.asarray(y)[0])
    np.testing.assert_array_equal(losses[1], np.asarray(loss_one)[0])
    val = bucketed.evaluate(pop, "val")
    np.testing.assert_allclose(
        val["loss"][1], np.asarray(alone.evaluate(one, alone_task.splits.val)["loss"])[0]
    )
    hp = bucketed.get_hparams(pop)
    np.testing.assert_array_equal(hp["d_model"], HP["d_model"])
    np.testing.assert_array_equal(hp["seq_len"], HP["seq_len"])
    np.testing.assert_allclose(hp["lr"], HP["lr"], rtol=1e-6)


def test_structure_moves_only_untrained_members(bucketed):
    pop = bucketed.init(jax.random.key(0), np.arange(4), HP)
    # a fresh member (step 0) moves to the bucket of its new shape: as if built there
    moved = bucketed.set_hparams(pop, {"d_model": np.array([32, 32, 32, 16])})
    assert sorted(len(s) for s in moved.slots) == [1, 1, 2]
    direct = bucketed.init(jax.random.key(0), np.arange(4), {**HP, "d_model": [32, 32, 32, 16]})
    for a, b in zip(jax.tree.leaves(moved), jax.tree.leaves(direct), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    trained, _ = bucketed.train_segment(pop, "train", 2)
    with pytest.raises(ValueError, match="slot 0 has trained 2 steps; its structure"):
        bucketed.set_hparams(trained, {"d_model": np.array([32, 32, 32, 16])})
    # non-structural values change in place, no member moves
    same = bucketed.set_hparams(trained, {"lr": np.full(4, 1e-3)})
    assert same.slots == trained.slots
    np.testing.assert_allclose(bucketed.get_hparams(same)["lr"], 1e-3, rtol=1e-6)


def test_copies_stay_within_a_bucket_and_keep_repacks_across(bucketed):
    pop = bucketed.init(jax.random.key(0), np.arange(4), HP)
    pop, _ = bucketed.train_segment(pop, "train", 2)
    with pytest.raises(ValueError, match="slot 0 cannot copy slot 1, a member of another shape"):
        bucketed.copy_members(pop, np.array([1, 1, 2, 3]))
    copied = bucketed.copy_members(pop, np.array([3, 1, 2, 3]))  # 0 and 3 share a bucket
    hp = bucketed.get_hparams(copied)
    assert hp["lr"][0] == hp["lr"][3] and copied.member_id[0] == 0  # keeps its identity
    kept = bucketed.keep_members(pop, np.array([2, 3]))
    np.testing.assert_array_equal(kept.member_id, [2, 3])
    np.testing.assert_array_equal(bucketed.get_hparams(kept)["d_model"], [32, 16])
    single = bucketed.keep_members(pop, np.array([1, 2]))
    assert len(single.keys) == 1  # the emptied bucket is gone


def test_pbt_selection_within_groups_never_crosses():
    key = jax.random.key(3)
    fit = jax.random.normal(key, (12,))
    groups = np.array([0, 1, 2] * 4)
    for method in ("truncation", "tournament"):
        for s in range(5):
            parents, copied = select_parents(jax.random.key(s), fit, method, 0.25, groups)
            parents, copied = np.asarray(parents), np.asarray(copied)
            assert (groups[parents] == groups).all()
            assert copied.any()
            f = np.asarray(fit)
            assert (f[parents[copied]] < f[copied]).all()  # only better members are copied
    # one group: truncation copies the same slots as the ungrouped selection
    one = np.zeros(12, np.int32)
    a = np.asarray(select_parents(key, fit, "truncation", 0.25, one)[1])
    b = np.asarray(select_parents(key, fit, "truncation", 0.25)[1])
    np.testing.assert_array_equal(a, b)


TINY = [*TINY_LM_OVERRIDES, "population.structure=buckets", "train.segment_steps=5"]


def _run(tmp_path, *args):
    rc = main(["run", *args, *TINY, f"out_dir={tmp_path}", "--quiet"])
    assert rc == 0
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    return run


@pytest.mark.slow
def test_cli_pbt_exploits_within_buckets(tmp_path):
    run = _run(
        tmp_path,
        "lm-pbt",
        "space.d_model=[16, 32]",
        "space.depth=int(1, 2)",
        "population.size=6",
        "train.steps=20",
        "strategy.ready_steps=5",
    )
    members = pd.read_csv(run / "metrics.csv")
    shape = members.groupby("member")[["d_model", "depth"]].nunique()
    assert (shape == 1).all().all()  # structure never changes in a member
    events = [e for e in pd.read_json(run / "events.jsonl", lines=True).to_dict("records")]
    exploits = [e for e in events if e["kind"] == "exploit"]
    assert exploits
    for e in exploits:
        assert e["before"]["d_model"] == e["after"]["d_model"]
        assert e["before"]["depth"] == e["after"]["depth"]


@pytest.mark.slow
def test_cli_generations_resample_structure_and_resume_is_exact(tmp_path):
    """A generation-based searcher re-initialises members each generation with new structures
    (members move between buckets); resuming from a middle checkpoint ends as the run did."""
    study = [
        "lm-evo",
        "space.d_model=[16, 32]",
        "space.seq_len=[8, 16]",
        "population.size=4",
        "train.steps=20",
        "strategy.generation_steps=10",
    ]
    run = _run(tmp_path / "a", *study)
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["member"].nunique() == 8 and metrics["seq_len"].nunique() == 2
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "members.csv").unlink()
    segments = sorted(int(p.name) for p in (copy / "checkpoints").iterdir() if p.name.isdigit())
    for s in segments[1:]:
        shutil.rmtree(copy / "checkpoints" / str(s))
    resume_run(copy, quiet=True)
    again = pd.read_csv(copy / "metrics.csv")
    drop = ["wall_time", "run"]
    pd.testing.assert_frame_equal(again.drop(columns=drop), metrics.drop(columns=drop))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["lm-random", "space.d_model=[16, 32]"], "population.structure: buckets"),
        (["lm-pes", "space.depth=int(1, 2)"], "strategy.name: 'pes' cannot run shape buckets"),
        (["lm-pbt", "space.depth=[1, 2]", "train.compiled=true"], "train.compiled: shape"),
        (["lm-random", "space.heads=[2, 3]"], "space.heads: heads 3 do not divide d_model 16"),
        (
            ["lm-random", "space.depth=[1.5, 2]"],
            "space.depth: a structural dimension must be an int",
        ),
    ],
)
def test_bad_bucket_settings_are_one_line_errors(tmp_path, capsys, extra, message):
    args = ["run", *extra, *TINY_LM_OVERRIDES, f"out_dir={tmp_path}", "--quiet"]
    if "population.structure: buckets" not in message:
        args.append("population.structure=buckets")
    else:  # masked cannot search d_model
        message = "space.d_model: the masked super-model"
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert any(message in line for line in err), err


def test_a_strategy_that_trains_its_own_segments_refuses_buckets(bucketed):
    from jaxhpo.strategies.base import Capabilities
    from jaxhpo.strategies.search import RandomSearch

    class OwnSegments(RandomSearch):
        capabilities = Capabilities(own_segments=True)  # declared, not guessed

        def train_segment(self, state, population, pop, data, num_steps, valid_steps):
            raise AssertionError("never reached")

    with pytest.raises(ValueError, match="strategy.name: 'random' cannot run shape buckets"):
        OwnSegments().check_population(bucketed)
    RandomSearch().check_population(bucketed)  # the plain one can


SPLIT = """
import json, sys
sys.path.insert(0, "tests")
import jax, numpy as np
from test_buckets import HP, _make
from jaxhpo.population.buckets import BucketedPopulation

out = {}
for placement in ("shared", "split"):
    bp = BucketedPopulation(_make, _make({}), ("d_model", "seq_len"), "adamw", mode="map",
                            devices=4, placement=placement)
    pop = bp.init(jax.random.key(0), np.arange(4), HP)
    pop, losses = bp.train_segment(pop, "train", 3)
    out[placement] = {
        "loss": np.asarray(losses).tolist(),
        "val": bp.evaluate(pop, "val")["loss"].tolist(),
        "devices": [sorted(d.id for d in jax.tree.leaves(b.params)[0].sharding.device_set)
                    for b in pop.buckets],
    }
print("RESULT" + json.dumps(out))
"""


@pytest.mark.slow
def test_split_placement_runs_buckets_on_their_own_devices():
    """``bucket_placement=split``: each bucket on a device of its own (so buckets run at the
    same time); the members train as with the buckets in turn over shared devices."""
    from test_devices import _run_on_8_devices

    out = _run_on_8_devices(SPLIT)
    assert out["split"]["devices"] == [[0], [1]]
    assert out["shared"]["devices"] == [[0, 1], [0, 1]]  # 2 members each: 2 devices each
    np.testing.assert_allclose(out["split"]["loss"], out["shared"]["loss"], rtol=1e-5)
    np.testing.assert_allclose(out["split"]["val"], out["shared"]["val"], rtol=1e-5)
