"""``experiments/optimizer_schedule_lm.py``: which optimizer and schedule, searched per member.

Fast: argument validation, the three studies' configs (the mixed space's codes and conditions).
Slow: the script end to end on a tiny model; ``check_claim`` (equal member-steps, inactive
dimensions empty) must agree with the verdict it recorded.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import TINY_LM_OVERRIDES

ROOT = Path(__file__).resolve().parents[1]


def _load():
    path = ROOT / "experiments" / "optimizer_schedule_lm.py"
    spec = importlib.util.spec_from_file_location("optimizer_schedule_lm", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def test_arguments_are_validated(capsys):
    mod = _load()
    with pytest.raises(SystemExit) as e:
        mod.main(["--members", "5", "--generations", "2"])
    assert e.value.code == 2
    assert "--members: must be a multiple of --generations=2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        mod.main(["--steps", "0"])
    assert e.value.code == 2


def test_studies_share_the_budget_and_search_the_choices(tmp_path):
    from jaxhpo.optim.space_choice import labels

    mod = _load()
    args = mod.parse_args(["--out", str(tmp_path), "--members", "6", "--generations", "3"])
    cfgs = mod.configs(0, args)
    steps = {k: c.population.size * c.train.steps for k, c in cfgs.items()}
    assert steps == {"default": 6 * 300, "random": 6 * 300, "tpe": 6 * 300}
    assert labels(cfgs["default"]) == {}
    assert labels(cfgs["tpe"])["optimizer"] == tuple(mod.OPTIMIZERS)
    assert cfgs["tpe"].space["momentum"]["when"] == {"optimizer": ["momentum", "nesterov"]}


def test_config_errors_name_the_field(tmp_path, capsys):
    mod = _load()
    assert mod.main(["--out", str(tmp_path), "--set", "model.d_model=-3"]) == 2
    assert "model.d_model" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


@pytest.mark.slow
def test_reduced_study_runs_and_records_its_verdict(tmp_path):
    mod = _load()
    argv = ["--out", str(tmp_path), "--steps", "10", "--segment-steps", "10"]
    argv += ["--members", "4", "--generations", "2", *_sets(TINY_LM_OVERRIDES)]
    code = mod.main(argv)
    results = json.loads((tmp_path / "results.json").read_text())
    assert code == (0 if results["verdict"] == "holds" else 1)
    assert results["member_steps"] == {"default": [40], "random": [40], "tpe": [40]}
    try:
        mod.check_claim(results)
        held = True
    except AssertionError:
        held = False
    assert held == (results["verdict"] == "holds")
