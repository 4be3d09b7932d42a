"""Each strategy owns its section of ``strategy.*``: it names the fields it reads
(``Strategy.config_fields``), and a field set for a strategy that does not read it is refused."""

from __future__ import annotations

import contextlib
import json

import pytest

from jaxhpo.cli import load_config, main
from jaxhpo.config import ConfigError, StrategyConfig, TrainConfig
from jaxhpo.strategies import STRATEGIES
from jaxhpo.strategies.base import COMMON_CONFIG_FIELDS


class _Reads:
    """A ``StrategyConfig`` that records which fields are read."""

    def __init__(self, cfg):
        self.__dict__.update(cfg=cfg, read=set())

    def __getattr__(self, name):
        self.read.add(name)
        return getattr(self.cfg, name)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_each_strategy_declares_the_fields_it_reads(name):
    """``config_fields`` is exactly what ``from_config`` reads (besides name and metric)."""
    cls = STRATEGIES[name]
    cfg = _Reads(StrategyConfig(name=name, schedule="/nonexistent/schedule.csv"))
    with contextlib.suppress(ValueError):  # replay's missing schedule (read first)
        cls.from_config(cfg, TrainConfig())
    assert cfg.read - set(COMMON_CONFIG_FIELDS) == set(cls.config_fields), name
    assert not set(cls.config_fields) - set(StrategyConfig.__dataclass_fields__), name


def test_a_field_the_strategy_does_not_read_is_refused(tmp_path):
    """Regression: a field of another strategy's section (PBT's ``fraction`` under random
    search) was silently ignored."""
    expected = "strategy.fraction: not read by strategy 'random' (its fields: name, metric, points)"
    with pytest.raises(ConfigError) as e:
        load_config("lm-random", ["strategy.fraction=0.5"])
    assert str(e.value) == expected
    with pytest.raises(ConfigError, match=r"^strategy\.eta: not read by strategy 'pbt' \(its"):
        load_config("lm-pbt", ["strategy={name: pbt, eta: 2}"])
    path = tmp_path / "study.json"
    path.write_text(json.dumps({"experiment": "lm-halving", "strategy": {"ready_steps": 3}}))
    with pytest.raises(ConfigError, match=r"^strategy\.ready_steps: not read by strategy 'halv"):
        load_config(str(path), [])
    # A field at its default value changes nothing, and is let through.
    assert load_config("lm-random", ["strategy.fraction=0.25"]).strategy.name == "random"


def test_cli_refuses_an_unread_field_in_one_line(capsys):
    assert main(["run", "lm-random", "strategy.ready_steps=10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxhpo: error: strategy.ready_steps: not read by strategy 'random'")
    assert err.count("\n") == 1, err


def test_switching_strategy_leaves_the_earlier_section_unread():
    """``jaxhpo run lm-pbt strategy.name=replay ...`` keeps the preset's PBT section, unread;
    a field set with or after the new name must be the new strategy's."""
    cfg = load_config("lm-pbt", ["strategy.name=random"])
    assert cfg.strategy.name == "random" and cfg.strategy.fraction == 0.25  # the preset's
    with pytest.raises(ConfigError, match=r"^strategy\.fraction: not read by strategy 'halving'"):
        load_config("lm-pbt", ["strategy.name=halving", "strategy.fraction=0.5"])
    cfg = load_config("lm-pbt", ["strategy.name=halving", "strategy.eta=2"])
    assert cfg.strategy.eta == 2
