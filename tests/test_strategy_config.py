"""Each strategy owns its settings: one frozen ``Config`` dataclass in its own file (type,
default, doc line and check written once), nested under ``strategy:`` beside ``name``; a key the
strategy does not read, or a key of the old flat section, is refused in one line."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest
import yaml

from jaxhpo.cli import load_config, main
from jaxhpo.config import RENAMED_STRATEGY_KEYS, ConfigError, StrategyConfig, TrainConfig
from jaxhpo.run.prepare import build_strategy
from jaxhpo.run.validate import upgrade_strategy_section
from jaxhpo.strategies import STRATEGIES
from jaxhpo.strategies.base import config_names

#: Constructor arguments that are not settings: the config, the metric (warm starts), the
#: largest resource (halving, from train.steps), the run's length and a replay's table.
NOT_SETTINGS = {"self", "config", "fields", "metric", "max_steps", "table", "train_steps"}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_each_setting_is_written_once_in_the_strategys_config(name):
    """The settings are the fields of the strategy's frozen ``Config``; no constructor lists
    them again, and each field's line in the source carries its doc comment."""
    cls = STRATEGIES[name]
    assert dataclasses.is_dataclass(cls.Config) and cls.Config.__dataclass_params__.frozen
    assert set(inspect.signature(cls.__init__).parameters) <= NOT_SETTINGS, name
    source = "".join(inspect.getsource(k) for k in cls.Config.__mro__[:-1])
    for field in dataclasses.fields(cls.Config):
        line = next(ln for ln in source.splitlines() if ln.strip().startswith(f"{field.name}:"))
        above = source.splitlines()[source.splitlines().index(line) - 1].strip()
        assert "#" in line or above.startswith("#:"), f"{name}.{field.name}: no doc comment"


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_defaults_build_and_round_trip_through_config_yaml(name, tmp_path):
    """A strategy's complete settings, as ``config.yaml`` holds them, build it again."""
    cls = STRATEGIES[name]
    if name == "optuna":
        pytest.importorskip("optuna")
    options = {} if name != "replay" else {"schedule": str(_schedule(tmp_path))}
    section = StrategyConfig(name=name, options=options)
    first = build_strategy(section, TrainConfig(steps=90, segment_steps=10))
    dumped = yaml.safe_load(yaml.safe_dump(dataclasses.asdict(first.config)))
    again = build_strategy(
        StrategyConfig(name=name, options=dumped), TrainConfig(steps=90, segment_steps=10)
    )
    assert dataclasses.asdict(again.config) == dataclasses.asdict(first.config)
    assert set(dumped) == set(config_names(cls))


def _schedule(tmp_path):
    path = tmp_path / "schedule.csv"
    path.write_text("start_step,end_step,lr\n0,100,0.001\n")
    return path


def test_a_setting_the_strategy_does_not_read_is_refused():
    """Regression: a field of another strategy's section (PBT's ``fraction`` under random
    search) was silently ignored."""
    expected = (
        "strategy.fraction: not a setting of strategy 'random' (its settings: name, metric, points)"
    )
    with pytest.raises(ConfigError) as e:
        load_config("lm-random", ["strategy.fraction=0.5"])
    assert str(e.value) == expected
    with pytest.raises(ConfigError, match=r"^strategy\.eta: not a setting of strategy 'pbt'"):
        load_config("lm-pbt", ["strategy={name: pbt, eta: 2}"])


def test_a_setting_given_at_its_default_for_another_strategy_is_refused_too(tmp_path):
    """The old check let a field through when its value equalled the flat default; a key is
    now refused whatever its value."""
    with pytest.raises(ConfigError, match=r"^strategy\.fraction: not a setting"):
        load_config("lm-random", ["strategy.fraction=0.25"])
    path = tmp_path / "study.json"
    path.write_text(json.dumps({"experiment": "lm-halving", "strategy": {"ready_steps": 3}}))
    with pytest.raises(ConfigError, match=r"^strategy\.ready_steps: not a setting of strategy"):
        load_config(str(path), [])


@pytest.mark.parametrize(("old", "new"), sorted(RENAMED_STRATEGY_KEYS.items()))
def test_an_old_flat_key_is_refused_naming_its_new_key(old, new):
    owner = next(n for n, cls in STRATEGIES.items() if new in config_names(cls) and _owns(n, old))
    with pytest.raises(ConfigError) as e:
        load_config("lm-random", [f"strategy.name={owner}", f"strategy.{old}=1"])
    assert str(e.value).startswith(f"strategy.{old}: renamed strategy.{new} "), str(e.value)
    assert "\n" not in str(e.value)


def _owns(name: str, old: str) -> bool:
    prefix = old.split("_")[0]
    return {"es": "evo", "rl": "rl", "bo": "bo", "optuna": "optuna", "grid": "grid"}.get(
        prefix, name
    ) == name and (prefix != "halving" or name in ("halving", "hyperband"))


def test_cli_refuses_an_unread_setting_in_one_line(capsys):
    assert main(["run", "lm-random", "strategy.ready_steps=10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxhpo: error: strategy.ready_steps: not a setting of strategy")
    assert err.count("\n") == 1, err


def test_switching_strategy_drops_the_earlier_strategys_settings():
    """``jaxhpo run lm-pbt strategy.name=halving`` leaves the preset's PBT settings behind; a
    setting given with or after the new name must be the new strategy's."""
    cfg = load_config("lm-pbt", ["strategy.name=random"])
    assert cfg.strategy.name == "random" and cfg.strategy.options == {"points": []}
    with pytest.raises(ConfigError, match=r"^strategy\.fraction: not a setting of strategy 'h"):
        load_config("lm-pbt", ["strategy.name=halving", "strategy.fraction=0.5"])
    cfg = load_config("lm-pbt", ["strategy.name=halving", "strategy.eta=2"])
    assert cfg.strategy.options["eta"] == 2
    assert cfg.to_dict()["strategy"]["eta"] == 2  # config.yaml: the settings beside the name


def test_string_settings_keep_the_text_as_typed():
    """A string setting given on the command line is the text, not YAML (``2024`` stays a
    study name)."""
    pytest.importorskip("optuna")
    cfg = load_config("lm-optuna", ["strategy.study=2024"])
    assert cfg.strategy.options["study"] == "2024"


def test_a_run_directory_of_the_flat_section_is_upgraded_for_its_strategy():
    """A config.yaml written before the settings moved (every flat field, most at their
    defaults): the chosen strategy's settings under their new names, the rest dropped."""
    flat = {
        "name": "evo",
        "metric": "loss",
        "grid_points": 3,
        "sampler": "random",
        "schedule": None,
        "algorithm": "pso",
        "es_schedule": "online",
        "es_learning_rate": 0.3,
        "rl_learning_rate": 0.2,
        "bo_candidates": 256,
        "ready_steps": 20,
        "fraction": 0.25,
    }
    got = upgrade_strategy_section(flat)
    assert got == {
        "name": "evo",
        "metric": "loss",
        "algorithm": "pso",
        "schedule": "online",
        "learning_rate": 0.3,
        "ready_steps": 20,
    }
    assert upgrade_strategy_section({"name": "pbt", "fraction": 0.5}) == {
        "name": "pbt",
        "fraction": 0.5,
    }


def test_a_run_directory_of_the_flat_section_is_refused_naming_the_version(tmp_path):
    """Its checkpoints were fingerprinted with the flat section: resuming it is refused in one
    line before anything is built."""
    from jaxhpo.run.resume_dir import resume_run

    run_dir = tmp_path / "old-run"
    run_dir.mkdir()
    flat = {"name": "pbt", "metric": "loss", "grid_points": 3, "bo_candidates": 256}
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"strategy": flat}))
    with pytest.raises(ValueError) as e:
        resume_run(run_dir, quiet=True)
    assert "written by jaxhpo 0.1" in str(e.value) and "\n" not in str(e.value)
