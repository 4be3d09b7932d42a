"""``experiments/mo_halving_vs_random_lm.py``: multi-objective halving against random search of
the same member-steps, loss against the measured parameter count, on a tiny LM end to end.
The two studies' budgets match (random search at most halving's member-steps), the hypervolume
curves share one reference and end at each run's member-steps, and ``--rescore`` gives the same
figures from the run directories."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import TINY_LM_OVERRIDES

ROOT = Path(__file__).resolve().parents[1]


def _load():
    path = ROOT / "experiments" / "mo_halving_vs_random_lm.py"
    spec = importlib.util.spec_from_file_location("mo_halving_vs_random_lm", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_arguments_are_validated(capsys):
    with pytest.raises(SystemExit) as e:
        _load().main(["--eta", "1"])
    assert e.value.code == 2 and "--eta: must be >= 2" in capsys.readouterr().err


def test_tiny_study_end_to_end(tmp_path):
    mod = _load()
    sets = [*TINY_LM_OVERRIDES, "space.d_model=[16, 32]", "model.num_heads=2"]
    argv = ["--seeds", "1", "--steps", "4", "--segment-steps", "2", "--min-steps", "2"]
    argv += ["--size", "4", "--eta", "2", "--out", str(tmp_path)]
    argv += [a for o in sets for a in ("--set", o)]
    assert mod.main(argv) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    (seed,) = doc["seeds"]
    h, r = seed["halving"], seed["random"]
    assert r["members"] * 4 <= h["member_steps"] < 4 * 4  # equal budgets; halving stopped some
    assert r["member_steps"] == r["members"] * 4
    for name, run in (("halving", h), ("random", r)):
        curve = seed["curves"][name]
        assert curve["member_steps"][-1] == run["member_steps"]
        assert run["final_hypervolume"] == curve["hypervolume"][-1] > 0
    assert doc["summary"]["seeds"] == 1
    again = mod.rescore(tmp_path)
    assert again[0]["halving"]["final_hypervolume"] == h["final_hypervolume"]
    assert (
        again[0]["halving_member_steps_to_random_front"]
        == (seed["halving_member_steps_to_random_front"])
    )
