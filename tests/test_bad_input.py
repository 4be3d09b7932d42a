"""Bad input, through the command line: each malformed config or invocation gets ONE line on
stderr that names the problem, exit status 2, before anything is compiled, and nothing is
written into an existing run directory."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from jaxhpo import cli
from jaxhpo.population import Population

TINY = ["model.num_layers=1", "model.d_model=16", "model.d_ff=32", "task.max_bytes=100000"]

# (argv after `jaxhpo`, text the one-line error must contain)
CASES = [
    (["run", "train.stepz=3"], "train.stepz: unknown field"),
    (["run", "train.steps=abc"], "train.steps: expected an integer"),
    (["run", "train.steps=0"], "train.steps: must be >= 1"),
    (["run", "train.segment_steps=-5"], "train.segment_steps: must be >= 1"),
    (["run", "population.size=0"], "population.size: must be >= 1"),
    (["run", "space.lr=loguniform(0, 1)"], "space.lr"),
    (["run", "space.lr=uniform(1e-2, 1e-3)"], "space.lr"),
    (["run", "space.warmup_steps=int(5, 1)"], "space.warmup_steps"),
    (["run", "space.dropout=uniform(0, 1.5)"], "space.dropout: values must lie in"),
    (["run", "space.batch_size=[8, 32]"], "space.batch_size: values must lie in"),
    (["run", "task.folds=0"], "task.folds"),
    (["run", "space.momentum=0.9"], "space.momentum: not a hyperparameter"),
    (["run", "space={}"], "space: no searched dimension"),
    (["run", "strategy.name=bayes"], "strategy.name: unknown 'bayes'"),
    (["run", "task.kind=vision"], "task.kind: unknown 'vision'"),
    (["run", "optim.optimizer=adamax"], "optim.optimizer: unknown 'adamax'"),
    (["run", "optim.schedule=linear"], "optim.schedule: unknown 'linear'"),
    (["run", "population.mode=pmap"], "population.mode: unknown 'pmap'"),
    (["run", "population.devices=-1"], "population.devices"),
    (["run", "population.devices=64"], "population.devices: 64 requested"),
    (["run", "population.data_devices=0"], "population.data_devices: must be"),
    (["run", "population.data_devices=64"], "population.data_devices: 64 requested"),
    (["run", "task.corpus=/nonexistent/corpus.txt"], "task.corpus"),
    (["run", "strategy.metric=perplexity"], "strategy.metric: unknown 'perplexity'"),
    (["run", "seed=-1"], "seed: must lie in"),
    (["run", "no-such-experiment"], "experiment: 'no-such-experiment'"),
    (["run", "lm-pbt", "strategy.fraction=0.9"], "strategy.fraction"),
    (["run", "lm-pbt", "strategy.ready_steps=7"], "strategy.ready_steps"),
    (["run", "lm-pbt", "strategy.exploit=best"], "strategy.exploit: unknown 'best'"),
    (["run", "lm-pbt", "strategy.points=[{lr: 5.0}]"], "strategy.points"),
    (["run", "lm-pbt", "population.size=1"], "population.size: PBT needs at least 2"),
    (["run", "lm-halving", "strategy.eta=1"], "strategy.eta"),
    (["run", "lm-halving", "strategy.mode=packed"], "strategy.mode"),
    (["run", "lm-halving", "strategy.min_steps=30"], "train.segment_steps"),
    (["run", "lm-hyperband", "population.size=5"], "population.size: Hyperband"),
    (["run", "lm-random", "strategy.name=replay"], "strategy.schedule"),
    (["run", "lm-random", "strategy.name=replay", "strategy.schedule=/nope"], "strategy.schedule"),
    (["run", "lm-median", "train.compiled=true"], "train.compiled: strategy 'median'"),
    (["run", "lm-pbt", "train.compiled=true", "train.budget=100"], "train.budget"),
    (["run", "train.checkpoint_every=-1"], "train.checkpoint_every: must be >= 0"),
    # huge sizes: numpy's "Maximum allowed size exceeded", an OverflowError, a hang
    (["run", "task.batch_size=1e30"], "task.batch_size: must be < 2.147e+09"),
    (["run", "task.eval_batches=1e30"], "task.eval_batches: must be < 2.147e+09"),
    (["run", "model.num_heads=1e30"], "model.num_heads: must be < 2.147e+09"),
    (["run", "train.keep_checkpoints=0"], "train.keep_checkpoints: must be >= 1"),
    (["run", "train.budget=0"], "train.budget: must be >= 1"),
    (["run", "/nonexistent/study.yaml"], "study.yaml"),
    (["resume", "/nonexistent/run-dir"], "RUN_DIR"),
    (["report", "/"], "RUN_DIR: no metrics table"),
    (["run", "lm-bo", "strategy.candidates=1"], "strategy.candidates"),
    (["run", "lm-bo", "strategy.generation_steps=30"], "strategy.generation_steps"),
    (["run", "lm-bo", "strategy.warm_start=/nonexistent/run"], "strategy.warm_start"),
    (["run", "lm-bo", "strategy.warm_start_top=2"], "strategy.warm_start_top"),
    (["run", "lm-rl", "strategy.baseline_decay=1.5"], "strategy.baseline_decay"),
    (["run", "lm-rl", "strategy.points=[{lr: 5.0}]"], "strategy.points"),
    (["run", "lm-optuna", "strategy.sampler=nope"], "strategy.sampler: unknown"),
    (["run", "lm-optuna", "strategy.storage=study.db"], "strategy.storage"),
    (["run", "lm-evo", "strategy.warm_start=/nonexistent/run"], "strategy.warm_start"),
    (["run", "bert-finetune", "task.pretrained=/nonexistent/run"], "task.pretrained: path"),
    (["run", "bert-finetune", "task.corrupt_frac=0"], "task.corrupt_frac: must lie in"),
    (["run", "bert-finetune", "task.num_train=8"], "task.num_train: needs at least"),
    (["run", "bert-finetune", "space.epochs=0.5"], "space.epochs: values must lie in"),
    (["run", "bert-finetune", "space.warmup_frac=1.5"], "space.warmup_frac: values must lie"),
    (["run", "mlm-pretrain", "task.mask_prob=0"], "task.mask_prob: must lie in"),
    (["run", "bert-finetune", "train.steps=100"], "train.steps: 100 steps would cut members"),
    (["run", "lm-random", "population.structure=tiles"], "population.structure: unknown 'tiles'"),
    (
        ["run", "lm-random", "space.seq_len=[8, 16]"],
        "space.seq_len: the masked super-model masks depth",
    ),
    # issue 16: accepted, crashed or hung before
    (["run", "lm-random", "strategy.eta=5"], "strategy.eta: not a setting of strategy 'random'"),
    (["run", "lm-random", "strategy.ready_steps=7"], "strategy.ready_steps: not a setting"),
    (["run", "lm-random", "strategy.points=[{nosuch: 1}]"], "strategy.points[0].nosuch"),
    (["run", "lm-median", "strategy.points=[{lr: 5.0}]"], "strategy.points"),
    (["run", "lm-random", "strategy.points=[1, 2]"], "strategy.points"),
    (["run", "lm-random", "train.ensemble_top_k=100"], "train.ensemble_top_k: 100 is more"),
    (["run", "lm-random", "train.budget=3"], "train.budget: 3 member-steps do not pay"),
    (["run", "lm-random", "name=../../escaped"], "name: '../../escaped' must be one folder"),
    (["run", "lm-random", "name=.."], "name: expected a folder name"),
    (["run", "lm-random", "model.pooling=max"], "model.pooling: task 'lm' does not pool"),
    (["run", "lm-random", "population.size=1000000000"], "population.size: 1000000000 members"),
    (["run", "lm-random", "population.size=1000000"], "GiB of host memory"),
    (
        ["run", "lm-optuna", "strategy.storage=sqlite:////nonexistent/dir/study.db"],
        "strategy.storage: folder /nonexistent/dir does not exist",
    ),
    (["run", "lm-optuna", "strategy.storage=sqlite:////"], "strategy.storage"),
    (["run", "lm-optuna", "strategy.storage=foo://bar"], "strategy.storage"),
    (["run", "lm-random", "train.steps=1e99"], "train.steps: must be < 2**31"),
    (["run", "lm-random", "train.steps=99999999999999999999"], "train.steps: must be < 2**31"),
    (["run", "lm-random", "name=ok/../x"], "name: 'ok/../x' must be one folder"),
]


def _one_line_error(capsys, argv) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, (argv, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxhpo: error: "), (argv, err)
    return lines[0]


@pytest.mark.parametrize(("argv", "expected"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_line_naming_the_problem(argv, expected, capsys, no_compile, tmp_path):
    argv = [*argv, f"out_dir={tmp_path}"] if argv[0] == "run" else argv
    if argv[0] == "run":
        argv += TINY
    line = _one_line_error(capsys, argv)
    assert expected in line, line
    assert not any(tmp_path.iterdir()), "a run directory was created for a bad config"


def test_at_least_30_bad_inputs():
    assert len(CASES) >= 30


def test_huge_max_bytes_is_one_line(tmp_path, capsys, no_compile):
    """Regression: task.max_bytes=1e30 crashed reading the corpus (OverflowError traceback)."""
    argv = ["run", *TINY[:3], "task.max_bytes=1e30", f"out_dir={tmp_path}"]
    assert "task.max_bytes: must be < 4.612e+18" in _one_line_error(capsys, argv)


def test_deep_model_is_refused_before_tracing_hangs(tmp_path, capsys, no_compile):
    """Regression: model.num_layers=60000 (or 1e30) hung tracing every layer before the memory
    estimate; model.d_ff=1e30 failed with numpy's 'Maximum allowed size exceeded'."""
    for field, expected in [("num_layers=60000", "< 1024"), ("d_ff=1e30", "< 2.147e+09")]:
        argv = ["run", *TINY, f"model.{field}", f"out_dir={tmp_path}"]
        assert f"model.{field.split('=')[0]}: must be {expected}" in _one_line_error(capsys, argv)


def _tree(path: Path) -> dict[str, tuple[int, int]]:
    """Size and mtime of every file of the study. ``.lock`` is left out: it is the run directory's
    lock (it holds the pid of the last process that took it), not part of the study."""
    return {
        str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in path.rglob("*")
        if p.is_file() and p.name != ".lock"
    }


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory) -> Path:
    """A real run directory with checkpoints whose members.csv is removed (as if killed)."""
    out = tmp_path_factory.mktemp("runs")
    assert cli.main(["run", "pbt-toy", "--out", str(out), "--quiet"]) == 0
    (run_dir,) = out.iterdir()
    (run_dir / "members.csv").unlink()
    return run_dir


def test_resume_with_checkpoints_from_another_config_changes_nothing(
    interrupted_run, tmp_path, capsys, no_compile
):
    run_dir = tmp_path / "run"
    shutil.copytree(interrupted_run, run_dir)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["seed"] = cfg["seed"] + 1  # the checkpoints now belong to another config
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    before = _tree(run_dir)
    line = _one_line_error(capsys, ["resume", str(run_dir)])
    assert "written by a different config" in line
    assert _tree(run_dir) == before


def test_resume_of_a_finished_run_changes_nothing(interrupted_run, tmp_path, capsys, no_compile):
    run_dir = tmp_path / "run"
    shutil.copytree(interrupted_run, run_dir)
    (run_dir / "members.csv").write_text("member\n0\n")
    before = _tree(run_dir)
    line = _one_line_error(capsys, ["resume", str(run_dir)])
    assert "finished already" in line
    assert _tree(run_dir) == before


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, capsys, no_compile):
    (tmp_path / "notes.txt").write_text("not a run")
    before = _tree(tmp_path)
    line = _one_line_error(capsys, ["resume", str(tmp_path)])
    assert "no config.yaml" in line
    assert _tree(tmp_path) == before


def test_unwritable_out_dir(tmp_path, capsys, no_compile):
    if os.geteuid() == 0:
        target = "/proc/jaxhpo-runs"  # not creatable even for root
    else:
        target = str(tmp_path / "ro" / "runs")
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o500)
    line = _one_line_error(capsys, ["run", *TINY, f"out_dir={target}"])
    assert "out_dir" in line


def test_out_of_memory_names_the_population_and_what_to_change(tmp_path, capsys, monkeypatch):
    """XLA's RESOURCE_EXHAUSTED at the first segment becomes one line with the population size,
    the estimated memory per member and the settings to change (exit status 3)."""

    def oom(*args, **kwargs):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.2GiB.")

    monkeypatch.setattr(Population, "train_segment", oom)
    code = cli.main(["run", "lm-pbt", *TINY, f"out_dir={tmp_path}", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1, err
    line = err[0]
    assert line.startswith("jaxhpo: error: population.size: 8 members do not fit"), line
    assert "MiB of parameters and optimizer state per member" in line
    assert "XLA working memory" in line  # XLA:CPU gives a memory analysis
    assert "population.mode=chunked" in line and "RESOURCE_EXHAUSTED" in line


def test_duplicate_key_in_a_config_file(tmp_path, capsys, no_compile):
    """Regression: ``train:`` twice in a YAML file was accepted (the second silently won)."""
    out = tmp_path / "runs"
    for name, text in [
        ("dup.yaml", "train:\n  steps: 3\ntrain:\n  steps: 5\n"),
        ("nested.yaml", "train:\n  steps: 3\n  steps: 5\n"),
        ("dup.json", '{"train": {"steps": 3}, "train": {"steps": 4}}'),
    ]:
        (tmp_path / name).write_text(text)
        line = _one_line_error(capsys, ["run", str(tmp_path / name), f"out_dir={out}"])
        assert name in line and "duplicate key" in line, line
    assert not out.exists()


def test_missing_option_value_is_one_line(tmp_path, capsys, no_compile):
    """Regression: ``jaxhpo run lm-random --out`` printed argparse's usage (three lines)."""
    for argv, expected in [
        (["run", "lm-random", "--out"], "--out: expected one argument"),
        (["resume"], "RUN_DIR"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ]:
        with pytest.raises(SystemExit) as exit_:  # argparse exits (the console script's status)
            cli.main(argv)
        lines = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and len(lines) == 1, lines
        assert lines[0].startswith("jaxhpo: error: ") and expected in lines[0], lines


def test_report_of_a_corrupt_metrics_table_names_the_file(tmp_path, capsys):
    """Regression: ``'utf-8' codec can't decode ...`` with no file named."""
    (tmp_path / "metrics.csv").write_bytes(b"member,step\n\xff\xfe\x00\x81,\x9c\n")
    line = _one_line_error(capsys, ["report", str(tmp_path)])
    assert "metrics.csv cannot be read" in line, line


def test_report_of_a_run_killed_before_its_first_row(tmp_path, capsys):
    """Regression: ``cannot convert float NaN to integer`` for a metrics table with no row."""
    (tmp_path / "metrics.csv").write_text("run,member,step,wall_time,val_loss\n")
    line = _one_line_error(capsys, ["report", str(tmp_path)])
    assert "metrics.csv has no rows yet" in line, line


def test_report_of_a_corrupt_run_json_names_the_file(interrupted_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(interrupted_run, run_dir)
    (run_dir / "run.json").write_text("{not json")
    line = _one_line_error(capsys, ["report", str(run_dir)])
    assert "run.json cannot be read" in line, line


@pytest.mark.parametrize("table", ["metrics.csv", "events.jsonl"])
def test_resume_with_a_table_deleted_fails_before_building(
    interrupted_run, tmp_path, capsys, no_compile, table
):
    """Regression: the right error, but only after the population was built."""
    run_dir = tmp_path / "run"
    shutil.copytree(interrupted_run, run_dir)
    (run_dir / table).unlink()
    before = _tree(run_dir)
    line = _one_line_error(capsys, ["resume", str(run_dir)])
    assert f"RUN_DIR: {table} is missing" in line, line
    assert _tree(run_dir) == before


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda d: (d / "config.yaml").write_text(""), "config.yaml is empty"),
        (
            lambda d: (shutil.rmtree(d / "checkpoints"), (d / "checkpoints").write_text("x")),
            "is not a folder of checkpoints",
        ),
        (lambda d: (d / "config.yaml").write_text("train: [\n"), "cannot parse"),
    ],
    ids=["empty-config", "checkpoints-a-file", "config-not-yaml"],
)
def test_resume_of_a_damaged_run_directory(
    interrupted_run, tmp_path, capsys, no_compile, damage, expected
):
    run_dir = tmp_path / "run"
    shutil.copytree(interrupted_run, run_dir)
    damage(run_dir)
    before = _tree(run_dir)
    line = _one_line_error(capsys, ["resume", str(run_dir)])
    assert expected in line, line
    assert _tree(run_dir) == before


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("events.jsonl", "{bad\n", "events.jsonl cannot be read"),
        ("metrics.csv", "x,y\n1,2\n", "metrics.csv has no column 'member'"),
        ("metrics.csv", "member,step,diverged\n1,abc,0\n", "not a number"),
    ],
    ids=["events-not-json", "metrics-without-columns", "step-not-a-number"],
)
def test_report_of_a_damaged_table_names_the_file(
    interrupted_run, tmp_path, capsys, name, text, expected
):
    run_dir = tmp_path / "run"
    shutil.copytree(interrupted_run, run_dir)
    (run_dir / "metrics.parquet").unlink(missing_ok=True)
    (run_dir / name).write_text(text)
    line = _one_line_error(capsys, ["report", str(run_dir)])
    assert expected in line, line
