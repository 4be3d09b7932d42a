"""Configuration: bad input gets a one-line error naming the field, before anything compiles."""

from __future__ import annotations

import json

import numpy as np
import pytest

import jaxhpo.population
from jaxhpo.cli import load_config, main
from jaxhpo.config import ConfigError
from jaxhpo.experiment import prepare
from jaxhpo.presets import DEFAULT_EXPERIMENT, PRESETS, preset

#: Keeps prepare() quick where it has to build a task (reads at most this many corpus bytes).
SMALL = ["task.max_bytes=20000", "task.seq_len=16", "model.d_model=16", "model.d_ff=32"]


def _fails(experiment, overrides, stage: str) -> str:
    """The error message; ``stage`` says whether load_config or prepare must raise it."""
    if stage == "load":
        with pytest.raises(ValueError) as exc:
            load_config(experiment, overrides)
    else:
        cfg = load_config(experiment, overrides)
        with pytest.raises(ValueError) as exc:
            prepare(cfg)
    return str(exc.value)


def _check(msg: str, prefix: str) -> None:
    assert "\n" not in msg, msg
    assert msg.startswith(prefix), msg


# (overrides on lm-random, stage, expected prefix)
BAD_OVERRIDES = [
    (["train.stepz=3"], "load", "train.stepz:"),
    (["stepz=3"], "load", "stepz:"),
    (["train.steps=abc"], "load", "train.steps:"),
    (["train.steps=2.5"], "load", "train.steps:"),
    (["train.steps=true"], "load", "train.steps:"),
    (["model.num_layers=false"], "load", "model.num_layers:"),
    (["model.pre_norm=1"], "load", "model.pre_norm:"),
    (["task.train_frac=half"], "load", "task.train_frac:"),
    (["train=3"], "load", "train:"),
    (["train.steps=0"], "load", "train.steps:"),
    (["population.size=0"], "load", "population.size:"),
    (["population.size=-3"], "load", "population.size:"),
    (["population.mode=bogus"], "load", "population.mode:"),
    (["population.chunk_size=0"], "load", "population.chunk_size:"),
    (["optim.optimizer=adamq"], "load", "optim.optimizer:"),
    (["optim.schedule=linear_warmup"], "load", "optim.schedule:"),
    (["task.kind=vision"], "load", "task.kind:"),
    (["strategy.name=hyperband9"], "load", "strategy.name:"),
    (["space=3"], "load", "space:"),
    (["train.steps"], "load", "train.steps:"),  # an override without '='
    (["space.lr={type: float, low: 0.1, high: 0.1}"], "prepare", "space.lr:"),
    (["space.lr=uniform(0.2, 0.1)"], "prepare", "space.lr:"),
    (["space.lr=loguniform(0, 1)"], "prepare", "space.lr:"),
    (["space.lr=loguniform(1e-3, abc)"], "prepare", "space.lr:"),
    (["space.lr={type: float, low: 0.1}"], "prepare", "space.lr:"),
    (["space.momentum=uniform(0.8, 0.99)"], "prepare", "space.momentum:"),
    (["space.momentum=0.9"], "prepare", "space.momentum:"),
    (["space.dropout=uniform(0.0, 1.5)"], "prepare", "space.dropout:"),
    (["space.dropout=[0.0, 1.0]"], "prepare", "space.dropout:"),
    (["space.lr=[0.0, 0.01]"], "prepare", "space.lr:"),
    (["space.b2=uniform(0.9, 1.0)"], "prepare", "space.b2:"),
    (["space.lr=[0.001, fast]"], "prepare", "space.lr:"),
    (["task.corpus=/no/such/corpus.txt", *SMALL], "prepare", "task.corpus:"),
]


@pytest.mark.parametrize(("overrides", "stage", "prefix"), BAD_OVERRIDES, ids=lambda x: str(x))
def test_bad_override_names_the_field(overrides, stage, prefix):
    _check(_fails("lm-random", overrides, stage), prefix)


def test_error_type_is_config_error():
    with pytest.raises(ConfigError):
        load_config("lm-random", ["train.stepz=3"])
    with pytest.raises(ConfigError):
        prepare(load_config("lm-random", ["space.momentum=0.9"]))
    assert issubclass(ConfigError, ValueError)


def test_grid_size_mismatch_names_population_size():
    msg = _fails("lm-grid", ["population.size=5", *SMALL], "prepare")
    _check(msg, "population.size:")
    assert "9" in msg  # the 3 x 3 grid's size is in the message


def test_non_grid_strategy_needs_a_size():
    _check(_fails("lm-random", ["population.size=null"], "load"), "population.size:")


def test_unknown_experiment_name():
    _check(_fails("no-such-experiment", [], "load"), "experiment:")


@pytest.mark.parametrize(
    ("content", "name", "prefix"),
    [
        ("- lm-random\n- train.steps=3\n", "list.yaml", "config:"),
        ("train: [unclosed\n", "broken.yaml", "config:"),
        ("experiment: lm-grid\ntrain:\n  stepz: 3\n", "typo.yaml", "train.stepz:"),
        ("experiment: no-such-preset\n", "unknown.yaml", "experiment:"),
        ('{"population": {"size": "eight"}}', "bad.json", "population.size:"),
    ],
)
def test_bad_config_file(tmp_path, content, name, prefix):
    path = tmp_path / name
    path.write_text(content)
    _check(_fails(str(path), [], "load"), prefix)


def test_missing_config_file(tmp_path):
    _check(_fails(str(tmp_path / "nope.yaml"), [], "load"), "config:")


@pytest.mark.parametrize(
    "overrides",
    [
        ["space.lr=loguniform(0, 1)"],
        ["space.lr=uniform(0.2, 0.1)"],
        ["space.momentum=0.9"],
        ["space.dropout=uniform(0.0, 1.5)"],
        ["task.corpus=/no/such/corpus.txt"],
    ],
)
def test_config_errors_come_before_anything_compiles(monkeypatch, overrides):
    def boom(self, *args, **kwargs):
        raise AssertionError("Population was built before the config error")

    cfg = load_config("lm-random", [*overrides, *SMALL])
    monkeypatch.setattr(jaxhpo.population.Population, "__init__", boom)
    with pytest.raises(ValueError) as exc:  # ConfigError, or the task's ValueError for the corpus
        prepare(cfg)
    _check(str(exc.value), overrides[0].split("=")[0] + ":")
    # The patch is live: a valid config does reach the population (and fails there).
    good = load_config("lm-random", SMALL)
    with pytest.raises(AssertionError, match="Population was built"):
        prepare(good)


# ------------------------------------------------------------------------------------------------
# The command line


def test_cli_run_bad_override_exits_2_with_one_line(capsys):
    code = main(["run", "train.stepz=3"])
    out, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("jaxhpo: error: train.stepz:"), err
    assert out == ""


def test_cli_run_bad_space_exits_2_before_training(capsys, monkeypatch):
    def boom(self, *args, **kwargs):
        raise AssertionError("Population was built before the config error")

    monkeypatch.setattr(jaxhpo.population.Population, "__init__", boom)
    code = main(["run", "lm-random", "space.momentum=0.9"])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("jaxhpo: error: space.momentum:") and err.count("\n") == 1, err


def test_cli_run_unknown_experiment(capsys):
    assert main(["run", "no-such-experiment"]) == 2
    _, err = capsys.readouterr()
    assert err.startswith("jaxhpo: error: experiment:") and err.count("\n") == 1, err


def test_cli_list(capsys):
    assert main(["list"]) == 0
    out, _ = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == len(PRESETS)
    listed = [line.split()[0] for line in lines]
    assert listed == list(PRESETS)
    default = [line for line in lines if "(default)" in line]
    assert len(default) == 1 and default[0].startswith(DEFAULT_EXPERIMENT + " ")


def test_cli_run_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--help"])
    assert exc.value.code == 0
    out, _ = capsys.readouterr()
    assert "key.sub=value" in out
    assert "jaxhpo list" in out


# ------------------------------------------------------------------------------------------------
# Valid configs


def test_preset_with_override_round_trip():
    cfg = load_config("lm-random", ["train.steps=10"])
    p = PRESETS["lm-random"]
    assert cfg.train.steps == 10
    assert cfg.train.segment_steps == p["train"]["segment_steps"]
    assert cfg.space == p["space"]
    assert cfg.name == "lm-random"
    assert cfg.population.size == p["population"]["size"]
    assert cfg.model.d_model == p["model"]["d_model"]
    assert cfg.strategy.name == "random"
    assert cfg.optim.optimizer == "adamw"  # untouched default
    # the preset itself is not mutated by loading
    assert PRESETS["lm-random"]["train"]["steps"] == 400
    assert load_config("lm-random", []).train.steps == 400


def test_default_experiment_and_override_as_first_argument():
    cfg = load_config("train.steps=7", ["seed=3"])
    assert cfg.name == DEFAULT_EXPERIMENT
    assert cfg.train.steps == 7 and cfg.seed == 3
    assert load_config(None, []).name == DEFAULT_EXPERIMENT


def test_space_override_replaces_one_dimension():
    cfg = load_config("lm-random", ["space.lr=loguniform(1e-3, 1e-2)", "space.b2=0.95"])
    assert cfg.space["lr"] == "loguniform(1e-3, 1e-2)"
    assert cfg.space["b2"] == 0.95
    assert cfg.space["dropout"] == PRESETS["lm-random"]["space"]["dropout"]


def test_prepared_random_search():
    cfg = load_config("lm-random", ["population.size=4", *SMALL])
    prep = prepare(cfg)
    assert prep.size == 4
    lr = prep.hparams["lr"]
    assert lr.shape == (4,) and np.all((lr >= 1e-4) & (lr <= 3e-2))
    assert np.all(prep.hparams["decay_steps"] == cfg.train.steps)
    assert set(prep.space.searched) == set(PRESETS["lm-random"]["space"])


def test_yaml_file_with_experiment_and_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        "experiment: lm-grid\n"
        "name: my-grid\n"
        "train:\n  steps: 20\n  segment_steps: 10\n"
        "task:\n  max_bytes: 20000\n  seq_len: 16\n"
        "model:\n  d_model: 16\n  d_ff: 32\n"
    )
    cfg = load_config(str(path), ["strategy.points_per_dim=2", "train.steps=30"])
    assert cfg.name == "my-grid"
    assert cfg.train.steps == 30  # the override wins over the file
    assert cfg.train.segment_steps == 10  # the file wins over the preset
    assert cfg.strategy.name == "grid" and cfg.strategy.options["points_per_dim"] == 2
    assert cfg.population.size is None
    assert cfg.space == preset("lm-grid")["space"]
    prep = prepare(cfg)
    assert prep.size == 2 * 3  # 2 lr points x 3 warmup choices
    assert sorted(set(prep.hparams["warmup_steps"].tolist())) == [0, 30, 100]


def test_json_file(tmp_path):
    path = tmp_path / "exp.json"
    path.write_text(json.dumps({"experiment": "modular-random", "train": {"steps": 5}}))
    cfg = load_config(str(path), [])
    assert cfg.task.kind == "modular" and cfg.train.steps == 5
    assert cfg.optim.schedule == "warmup_constant"


# ------------------------------------------------------------------------------------------------
# Regression tests: bugs found by these tests and fixed


def _load_and_prepare_error(experiment, overrides) -> str:
    with pytest.raises(ValueError) as exc:
        prepare(load_config(experiment, overrides))
    return str(exc.value)


def test_unknown_strategy_metric_is_a_config_error():
    msg = _load_and_prepare_error("lm-random", ["strategy.metric=bogus", *SMALL])
    _check(msg, "strategy.metric:")


@pytest.mark.parametrize(
    ("experiment", "overrides", "prefix"),
    [
        ("lm-random", ["seed=-1", *SMALL], "seed:"),
        ("brackets-random", ["task.data_seed=-1", "task.num_examples=100"], "task.data_seed:"),
        ("modular-random", ["task.data_seed=-1", "task.modulus=7"], "task.data_seed:"),
    ],
)
def test_negative_seed_names_the_field(experiment, overrides, prefix):
    _check(_load_and_prepare_error(experiment, overrides), prefix)


def test_quoted_operation_override_works():
    assert load_config("modular-random", ["task.operation='-'"]).task.operation == "-"
    assert load_config("modular-random", ["task.operation=/"]).task.operation == "/"


@pytest.mark.parametrize("op", ["-", "*"])
def test_operation_override_takes_the_symbol(op):
    assert load_config("modular-random", [f"task.operation={op}"]).task.operation == op


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_builtin_experiment_prepares(name):
    """Each preset is a valid study: config, space, strategy, task and population all check out
    (nothing compiles here)."""
    from jaxhpo.experiment import prepare

    prep = prepare(load_config(name, []))
    assert prep.size >= 1 and prep.strategy.name == PRESETS[name]["strategy"]["name"]


@pytest.mark.parametrize(
    "overrides, field, kind",
    [
        (["task.modulus=5"], "modulus", "lm"),
        (["task.kind=modular", "task.seq_len=32"], "seq_len", "modular"),
        (["task.kind=brackets", "task.corpus=/tmp/x.txt"], "corpus", "brackets"),
    ],
)
def test_a_task_field_the_task_does_not_read_is_refused(overrides, field, kind):
    """Regression: task fields were matched to the task's constructor by signature, so one the
    task does not read (task.modulus for the LM) was silently ignored."""
    with pytest.raises(ConfigError) as e:
        load_config("lm-random", overrides)
    assert str(e.value).startswith(f"task.{field}: not a setting of task '{kind}' (its settings:")
    assert load_config("lm-random", ["task.kind=modular", "task.modulus=11"]).task.modulus == 11
