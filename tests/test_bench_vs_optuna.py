"""``scripts/bench_vs_optuna.py``: time to target against Optuna over seeds, several strategies
per seed sharing one calibration and one Optuna run; the summary's medians, ratios and wins
(unreached = +inf), and ``--reuse`` adding a method to a finished benchmark."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_LM_OVERRIDES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location(
        "bench_vs_optuna", ROOT / "scripts" / "bench_vs_optuna.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _arm(t, best, curve=(), wall=10.0):
    return {"time_to_target_s": t, "best_val_loss": best, "wall_s": wall,
            "anytime": list(curve), "best_at_budget": best}  # fmt: skip


def test_summary_counts_unreached_as_infinite(bench):
    seeds = [
        {"seed": 0, "optuna": _arm(4.0, 2.0), "methods": {"a": _arm(2.0, 1.9)}},
        {"seed": 1, "optuna": _arm(None, 2.1), "methods": {"a": _arm(5.0, 2.2)}},
        {"seed": 2, "optuna": _arm(3.0, 2.0), "methods": {"a": _arm(None, 2.0)}},
    ]
    s = bench.summary(seeds)
    assert s["optuna"]["time_to_target_s"] == [4.0, None, 3.0]
    assert s["optuna"]["median_time_to_target_s"] == 4.0  # 3, 4, inf
    assert s["a"]["median_time_to_target_s"] == 5.0  # 2, 5, inf
    assert s["a"]["ratio_vs_optuna"] == [0.5, 0.5, None]  # seed 1: a bound, 5 s / Optuna's 10 s
    assert s["a"]["median_ratio_vs_optuna"] == 0.5
    assert s["a"]["wins"] == 2 and s["a"]["reached"] == 2
    assert s["a"]["wins_at_budget"] == 1  # 1.9 < 2.0; 2.2 > 2.1; 2.0 == 2.0 is no win
    assert bench.ratio(_arm(None, 1), _arm(None, 1)) is None
    assert math.isinf(bench.ratio(_arm(None, 1), _arm(3.0, 1)))


def test_best_by_reads_the_anytime_curve(bench):
    arms = sys.modules["bench_vs_optuna_arms"]
    curve = arms.anytime([3.0, 1.0, 2.0, 4.0], [2.5, 3.0, float("nan"), 2.0])
    assert curve == [(1.0, 3.0), (3.0, 2.5), (4.0, 2.0)]
    assert arms.best_by(curve, 0.5) is None
    assert arms.best_by(curve, 3.5) == 2.5


def test_member_steps_by_row_counts_the_members_that_trained(bench):
    arms = sys.modules["bench_vs_optuna_arms"]
    evals = pd.DataFrame(
        {
            "step": [6, 6, 12, 12, 18],
            "wall_time": [1.0, 1.0, 2.0, 2.0, 3.0],
            "train_loss": [1.0, 1.0, 1.0, np.nan, 1.0],  # member 1 stopped at step 6
        }
    )
    assert arms.member_steps_by_row(evals).tolist() == [12, 12, 18, 18, 24]


@pytest.mark.slow  # 40 s: two seeds of every arm end to end (the other tests cover the parts)
def test_quick_two_seeds_then_reuse(bench, tmp_path):
    sets = [a for o in TINY_LM_OVERRIDES for a in ("--set", o)]
    out = tmp_path / "r.json"
    argv = ["--quick", "--seeds", "2", "--strategies", "bohb,halving", "--out", str(out), *sets]
    assert bench.main(argv) == 0
    doc = json.loads(out.read_text())
    cap = doc["settings"]["cap_member_steps"]
    assert [s["seed"] for s in doc["seeds"]] == [0, 1]
    for s in doc["seeds"]:
        assert math.isfinite(s["target"]) and s["budget_s"] == s["optuna"]["wall_s"]
        assert set(s["methods"]) == {"bohb", "halving"}
        for arm in [s["optuna"], *s["methods"].values()]:
            assert 0 < arm["member_steps"] <= cap
            assert {"time_to_target_s", "best_at_budget", "best_val_loss"} <= set(arm)
        assert s["methods"]["bohb"]["events"]["generation:random"] >= 1  # two iterations or more
    summ = doc["summary"]
    assert list(summ) == ["optuna", "bohb", "halving"]
    for m in summ.values():
        assert m["seeds"] == [0, 1] and len(m["time_to_target_s"]) == 2
        for key in ("median_time_to_target_s", "median_ratio_vs_optuna", "wins",
                    "median_best_at_budget", "wins_at_budget", "median_final_best"):  # fmt: skip
            assert key in m
        assert len(m["random_best"]["time_to_random_best_s"]) == len(m["best_at_budget"]) == 2
        ms = m["member_steps"]["member_steps_to_target"]
        assert all(v is None or 0 < v <= cap for v in ms)
    assert "| method | time to target (s) |" in out.with_suffix(".md").read_text()

    again = tmp_path / "again.json"
    argv = ["--quick", "--seeds", "1", "--strategies", "h2=halving", "--reuse", str(out)]
    assert bench.main([*argv, "--out", str(again), *sets]) == 0
    doc2 = json.loads(again.read_text())
    assert list(doc2["summary"]) == ["optuna", "bohb", "halving", "h2"]
    assert doc2["seeds"][0]["optuna"] == doc["seeds"][0]["optuna"]
    assert [h["methods"] for h in doc2["history"]] == [
        {"bohb": "bohb", "halving": "halving"},
        {"h2": "halving"},
    ]
    with pytest.raises(SystemExit, match="steps"):
        bench.main(["--seeds", "1", "--reuse", str(out), "--out", str(again)])

    # another target rank: the same arms, their times and member-steps read from their curves
    ranked = tmp_path / "rank1.json"
    argv = ["--quick", "--seeds", "2", "--strategies", "", "--target-rank", "1", "--reuse"]
    assert bench.main([*argv, str(out), "--out", str(ranked), *sets]) == 0
    doc3 = json.loads(ranked.read_text())
    assert doc["settings"]["target_rank"] == 2 and doc3["settings"]["target_rank"] == 1
    for s, s3 in zip(doc["seeds"], doc3["seeds"], strict=True):
        losses = s["calibration"]["final_val_losses"]
        assert len(losses) == 8 and losses == sorted(losses)
        assert s["target"] == losses[1] and s3["target"] == losses[0] == s["random_best"]
        for a, a3 in zip([s["optuna"], *s["methods"].values()],
                         [s3["optuna"], *s3["methods"].values()], strict=True):  # fmt: skip
            assert a3["anytime"] == a["anytime"]
            assert a3["time_to_target_s"] == a["time_to_random_best_s"]
            assert a3["member_steps_to_target"] == a["member_steps_to_random_best"]
            assert a3["reached"] == (a3["time_to_target_s"] is not None)
            assert "member_steps_at_target" not in a3 and "step" not in a3  # the old target's
    for label, m in doc["summary"].items():
        m3 = doc3["summary"][label]
        assert m3["time_to_target_s"] == m["random_best"]["time_to_random_best_s"]
        assert m3["wins"] == m["random_best"]["wins"]
    assert "target: the best of 8" in ranked.with_suffix(".md").read_text()
    assert [h["target_rank"] for h in doc3["history"]] == [2, 1]


def test_calibration_loss_of_a_rank(bench):
    calib = {"final_val_losses": [2.0, 2.5, 3.0], "quantiles": {"0.0": 2.0}}
    assert bench.calibration_loss(calib, 2) == 2.5
    assert bench.calibration_loss(calib, 9) == 3.0  # fewer trials than the rank: the worst
    old = {"quantiles": {"0.0": 2.0, "0.05": 2.2}}  # a file written before the losses were kept
    assert bench.calibration_loss(old, 1) == 2.0
    with pytest.raises(SystemExit, match="rank 2"):
        bench.calibration_loss(old, 2)
    with pytest.raises(SystemExit, match="rank 1"):
        bench.calibration_loss({}, 1)  # --target skipped the calibration
