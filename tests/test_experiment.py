"""End to end: config -> run loop -> run directory (table, members, events, plots, summary)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import pandas as pd
import pytest
from conftest import TINY_LM_OVERRIDES

from jaxhpo.cli import load_config, main
from jaxhpo.experiment import prepare, run
from jaxhpo.population import gather
from jaxhpo.reporting.report import write_report
from jaxhpo.results import read_events
from jaxhpo.strategies import PopulationUpdate, Strategy

TINY = [
    "task.max_bytes=200000",
    "task.seq_len=16",
    "task.batch_size=4",
    "task.eval_batches=2",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.d_model=16",
    "model.d_ff=32",
]


def _run(tmp_path, experiment, overrides, tiny=TINY):
    cfg = load_config(experiment, [*tiny, f"out_dir={tmp_path}", *overrides])
    return cfg, run(cfg, quiet=True)


def test_default_experiment_writes_a_readable_run_directory(tmp_path):
    cfg, res = _run(
        tmp_path, None, ["train.steps=30", "train.segment_steps=10", "population.size=4"]
    )
    d = res.run_dir
    for name in (
        "config.yaml",
        "run.json",
        "metrics.csv",
        "metrics.parquet",
        "members.csv",
        "events.jsonl",
        "summary.md",
    ):
        assert (d / name).exists(), name
    table = pd.read_parquet(d / "metrics.parquet")
    assert len(table) == 4 * 4  # 4 members x (initial + 3 segment) evaluations
    assert pd.read_csv(d / "metrics.csv").shape == table.shape
    assert sorted(table["step"].unique()) == [0, 10, 20, 30]
    for col in (
        "run",
        "member",
        "step",
        "wall_time",
        "diverged",
        "lr",
        "warmup_steps",
        "dropout",
        "train_loss",
        "val_loss",
        "val_accuracy",
    ):
        assert col in table, col
    # Searched hyperparameters differ across members; every member's row carries its values.
    assert table.groupby("member")["lr"].nunique().max() == 1
    assert table["lr"].nunique() == 4
    # It learns: validation loss falls for the best member.
    first = table[table.step == 0].set_index("member")["val_loss"]
    last = table[table.step == 30].set_index("member")["val_loss"]
    assert (last < first).any()
    members = pd.read_csv(d / "members.csv")
    assert {"test_loss", "val_loss", "diverged"} <= set(members.columns)
    summary = (d / "summary.md").read_text()
    assert "Best member" in summary
    plots = {p.name for p in (d / "plots").glob("*.png")}
    assert {"curves_lr.png", "final_vs_hparams.png", "train_curves.png"} <= plots
    # The resolved config re-runs: it is a valid config file.
    again = load_config(str(d / "config.yaml"), [])
    assert again.space == cfg.space and again.train.steps == 30


def test_diverged_member_is_flagged_and_not_best(tmp_path):
    _, res = _run(
        tmp_path,
        None,
        [
            "optim.optimizer=sgd",
            "optim.schedule=constant",
            "population.size=null",
            "strategy.name=grid",
            "space={lr: {type: choice, values: [0.1, 1000.0]}}",
            "train.steps=20",
            "train.segment_steps=10",
        ],
    )
    members = res.members.set_index("lr")
    assert bool(members.loc[1000.0, "diverged"]) and not bool(members.loc[0.1, "diverged"])
    assert np.isnan(members.loc[1000.0, "val_loss"])
    table = pd.read_parquet(res.run_dir / "metrics.parquet")
    assert table[table.lr == 1000.0]["diverged"].iloc[-1]
    summary = (res.run_dir / "summary.md").read_text()
    best_line = summary.split("## Best member:")[1].splitlines()[0]
    best_id = int(best_line.strip())
    assert best_id == int(res.members[res.members.lr == 0.1]["member"].iloc[0])


def test_grid_population_is_the_full_grid(tmp_path):
    cfg = load_config(
        "lm-grid", [*TINY, f"out_dir={tmp_path}", "train.steps=5", "train.segment_steps=5"]
    )
    prep = prepare(cfg)
    assert prep.size == 9
    pairs = set(zip(prep.hparams["lr"].round(8), prep.hparams["warmup_steps"], strict=True))
    assert len(pairs) == 9


def test_sobol_and_random_differ_and_are_seeded(tmp_path):
    a = prepare(load_config("lm-sobol", [*TINY, "seed=1"])).hparams["lr"]
    b = prepare(load_config("lm-sobol", [*TINY, "seed=1"])).hparams["lr"]
    c = prepare(load_config("lm-sobol", [*TINY, "seed=2"])).hparams["lr"]
    r = prepare(load_config("lm-sobol", [*TINY, "seed=1", "strategy.name=random"])).hparams["lr"]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, r)


def test_decay_steps_default_to_run_length(tmp_path):
    prep = prepare(load_config(None, [*TINY, "train.steps=123"]))
    np.testing.assert_allclose(prep.hparams["decay_steps"], 123.0)


def test_cli_run_and_report(tmp_path, capsys):
    code = main(
        [
            "run",
            *TINY,
            "train.steps=10",
            "train.segment_steps=5",
            "population.size=2",
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "Best member" in out
    (run_dir,) = list(tmp_path.iterdir())
    for p in (run_dir / "plots").glob("*.png"):
        p.unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "plots" / "curves_lr.png").exists()


def test_report_on_interrupted_run_uses_live_csv(tmp_path):
    _, res = _run(tmp_path, None, ["train.steps=10", "train.segment_steps=5", "population.size=2"])
    (res.run_dir / "metrics.parquet").unlink()
    (res.run_dir / "members.csv").unlink()
    summary = write_report(res.run_dir)
    assert "Best member" in summary.read_text()


def test_report_rejects_a_folder_without_metrics(tmp_path):
    with pytest.raises(ValueError, match="RUN_DIR"):
        write_report(tmp_path)


def test_uneven_last_segment_reuses_the_program(tmp_path):
    """Regression: a shorter last segment was a second static shape and recompiled."""
    _, res = _run(tmp_path, None, ["train.steps=25", "train.segment_steps=10", "population.size=2"])
    info = json.loads((res.run_dir / "run.json").read_text())
    assert info["trace_counts"]["segment"] == 1
    assert info["steps"] == 25
    assert res.members["steps"].tolist() == [25, 25]
    table = pd.read_parquet(res.run_dir / "metrics.parquet")
    assert sorted(table["step"].unique()) == [0, 10, 20, 25]


def test_summary_best_follows_the_study_metric(tmp_path):
    """Regression: the summary picked the lowest val_loss even when the study maximised
    accuracy."""
    _, res = _run(
        tmp_path,
        "brackets-random",
        [
            "task.num_examples=400",
            "task.batch_size=16",
            "train.steps=10",
            "train.segment_steps=10",
            "population.size=3",
            "strategy.metric=accuracy",
        ],
        tiny=[o for o in TINY if not o.startswith(("task.max_bytes", "task.eval_batches"))],
    )
    info = json.loads((res.run_dir / "run.json").read_text())
    assert info["objective"] == "val_accuracy" and info["maximize"] is True
    members = res.members
    summary = (res.run_dir / "summary.md").read_text()
    best_id = int(summary.split("## Best member:")[1].splitlines()[0])
    assert best_id == int(members.loc[members["val_accuracy"].idxmax(), "member"])
    assert "highest final `val_accuracy`" in summary


def test_strategy_updates_are_checked(lm_task):
    from jaxhpo.experiment import apply_update
    from jaxhpo.population import Population
    from jaxhpo.strategies import PopulationUpdate

    popn = Population(lm_task, "sgd", "constant", mode="map")
    pop = popn.init(jax.random.key(0), np.arange(3), {"lr": [0.1, 0.2, 0.3]})
    key = jax.random.key(0)
    bad = [
        (PopulationUpdate(parents=np.array([0, 1, 3])), "parents must lie in"),
        (PopulationUpdate(parents=np.array([0, 1])), "parents must have shape"),
        (PopulationUpdate(active=np.array([True, False])), "active must have shape"),
        (PopulationUpdate(hparams={"learning_rate": 0.1}), "unknown hyperparameter"),
        (PopulationUpdate(hparams={"lr": [0.1, np.nan, 0.1]}), "non-finite"),
        (PopulationUpdate(keep=np.array([0, 0])), "keep lists a slot twice"),
        (PopulationUpdate(keep=np.array([3])), "keep must lie in"),
        (PopulationUpdate(keep=np.array([], int)), "keep must be a non-empty"),
    ]
    for upd, msg in bad:
        with pytest.raises(ValueError, match=msg):
            apply_update(popn, pop, upd, key, 3)
    # A valid update: copy member 2 into slot 0, re-init slot 1 as a new member with a new id.
    _, new, next_id = apply_update(
        popn,
        pop,
        PopulationUpdate(
            parents=np.array([2, 1, 2]),
            reinit=np.array([False, True, False]),
            hparams={"lr": [0.5, 0.6, 0.7]},
        ),
        key,
        3,
    )
    assert next_id == 4
    assert np.asarray(new.member_id).tolist() == [0, 3, 2]
    np.testing.assert_allclose(np.asarray(popn.get_hparams(new)["lr"]), [0.5, 0.6, 0.7], rtol=1e-6)
    fresh = popn.init(key, [3], {"lr": [0.6]})
    chex.assert_trees_all_equal(gather(new, [1]).params, fresh.params)
    chex.assert_trees_all_equal(gather(new, [0]).params, gather(pop, [2]).params)
    # Re-packing keeps the listed slots, in order, as a smaller population.
    _, small, _ = apply_update(popn, new, PopulationUpdate(keep=np.array([2, 0])), key, 4)
    assert np.asarray(small.member_id).tolist() == [2, 0]
    chex.assert_trees_all_equal(gather(small, [1]).params, gather(new, [0]).params)


def test_cli_in_a_fresh_process_shards_members_over_cpu_cores(tmp_path):
    """The real entry point: a new process, XLA given 2 virtual CPU devices by the CLI, the
    population sharded over them, and the run directory written."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(
        f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f
    )
    env["JAXHPO_CPU_DEVICES"] = "2"
    cmd = [
        sys.executable,
        "-m",
        "jaxhpo.cli",
        "run",
        *TINY,
        "train.steps=6",
        "train.segment_steps=3",
        "population.size=4",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Best member" in proc.stdout
    assert "segment 2/2 step 6" in proc.stderr  # progress lines when not on a terminal
    (run_dir,) = list(tmp_path.iterdir())
    info = json.loads((run_dir / "run.json").read_text())
    assert info["member_devices"] == 2 and len(info["devices"]) == 2
    assert len(pd.read_csv(run_dir / "members.csv")) == 4


class _WorstCopiesBest(Strategy):
    """A toy exploit strategy used to test the run loop's generic update path."""

    name = "worst-copies-best"

    def init(self, seed, space, size):
        return 0, space.sample(seed, size)

    def update(self, state, obs):
        f = obs.fitness()
        parents = np.arange(len(f))
        parents[f.argmax()] = f.argmin()
        ev = {"child": int(obs.member_id[f.argmax()]), "parent": int(obs.member_id[f.argmin()])}
        return state + 1, PopulationUpdate(parents=parents, events=[ev])


def test_custom_strategy_runs_through_the_generic_loop(tmp_path):
    cfg = load_config(
        None,
        [
            *TINY,
            f"out_dir={tmp_path}",
            "train.steps=6",
            "train.segment_steps=2",
            "population.size=4",
        ],
    )
    res = run(cfg, prepared=prepare(cfg, strategy=_WorstCopiesBest()), quiet=True)
    events = read_events(res.run_dir)
    # told after each of the 3 segments; the last update is not applied, so 2 events
    assert [e["step"] for e in events] == [2, 4]
    assert all(e["child"] != e["parent"] for e in events)
    # after copying, the child holds the parent's hyperparameters
    table = pd.read_parquet(res.run_dir / "metrics.parquet")
    child, parent = events[-1]["child"], events[-1]["parent"]
    last = table[table.step == 6].set_index("member")
    assert last.loc[child, "lr"] == last.loc[parent, "lr"]


def test_cli_overrides_after_options(tmp_path, capsys):
    """`jaxhpo run EXP --out DIR key=value`: overrides may follow options; other stray
    arguments are refused."""
    from jaxhpo.cli import main

    with pytest.raises(SystemExit):
        main(["run", "pbt-toy", "--out", str(tmp_path), "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    assert main(["run", "pbt-toy", "--out", str(tmp_path), "--quiet", "train.steps=8"]) == 0
    (run_dir,) = tmp_path.iterdir()
    assert pd.read_csv(run_dir / "metrics.csv")["step"].max() == 8


@pytest.mark.parametrize(
    "preset, extra, horizon",
    [
        ("lm-random", [], 40),  # one member trains the whole run
        ("lm-evo", ["strategy.generation_steps=20"], 20),  # fresh members every generation
        ("lm-bo", ["strategy.generation_steps=20"], 20),
        ("lm-evo", ["strategy.schedule=online"], 40),  # live members: the whole run
        # bohb re-initialises every member each Hyperband iteration: one iteration, not the run
        pytest.param(
            "lm-random",
            [
                "strategy.name=bohb",
                "strategy.iteration_steps=20",
                "strategy.min_steps=10",
                "population.size=null",
            ],
            20,
            id="bohb_decays_over_one_iteration_not_the_run",
        ),
    ],
)
def test_schedules_decay_over_a_members_life(preset, extra, horizon):
    cfg = load_config(
        preset,
        [*TINY_LM_OVERRIDES, "train.steps=40", "train.segment_steps=10", *extra],
    )
    prep = prepare(cfg)
    np.testing.assert_array_equal(prep.hparams["decay_steps"], horizon)
