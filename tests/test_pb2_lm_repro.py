"""``experiments/pb2_vs_pbt_lm.py`` (PB2 vs PBT on the LM task) end to end on a tiny model.

The claim itself is measured by the script's default run (``scripts/results/pb2_vs_pbt_lm.json``,
several minutes per seed on 2 CPU cores); on a run this small it is not expected to hold, so
``check_claim`` is only required to agree with the verdict the script recorded.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
from conftest import TINY_LM_OVERRIDES

ROOT = Path(__file__).resolve().parents[1]


def load():
    path = ROOT / "experiments" / "pb2_vs_pbt_lm.py"
    spec = importlib.util.spec_from_file_location("pb2_vs_pbt_lm", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def test_arguments_are_validated(tmp_path, capsys):
    mod = load()
    for argv, field in (
        (["--seeds", "0"], "--seeds"),
        (["--sizes", "1"], "--sizes"),
        (["--sizes", "4", "4"], "--sizes"),
        (["--set", "model.d_model"], "--set"),
    ):
        with pytest.raises(SystemExit) as e:
            mod.main(argv)
        assert e.value.code == 2
        assert field in capsys.readouterr().err
    assert mod.main(["--out", str(tmp_path), "--set", "model.d_model=-3"]) == 2
    assert "model.d_model" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_configs_differ_only_in_the_explore(tmp_path):
    import argparse

    mod = load()
    args = argparse.Namespace(steps=40, out=tmp_path, overrides=["strategy.fraction=0.5"])
    pb2, pbt = mod.make_configs(3, 4, args)
    assert (pb2.strategy.name, pbt.strategy.name) == ("pb2", "pbt")
    assert pbt.strategy.options["ready_steps"] == 50  # the preset's, kept for PB2 too
    assert pbt.strategy.options["fraction"] == 0.5
    assert {k: pb2.strategy.options[k] for k in pbt.strategy.options} == pbt.strategy.options
    for a, b in ((pb2, pbt), (pbt, pb2)):
        assert (a.seed, a.population.size, a.train.steps) == (3, 4, 40)
        assert (a.space, a.model, a.optim, a.task) == (b.space, b.model, b.optim, b.task)


def test_pb2_vs_pbt_tiny(tmp_path):
    mod = load()
    overrides = [*TINY_LM_OVERRIDES, "train.segment_steps=5", "strategy.ready_steps=5"]
    argv = ["--seeds", "1", "--steps", "30", "--sizes", "2", "--out", str(tmp_path)]
    code = mod.main(argv + _sets(overrides))
    assert code in (0, 1)
    assert (tmp_path / "pb2_vs_pbt_lm.png").stat().st_size > 0
    res = json.loads((tmp_path / "results.json").read_text())
    for key in ("claim", "settings", "sizes", "total_wall_s", "verdict", "verdict_detail"):
        assert key in res, key
    r = res["sizes"]["2"]
    for key in (
        "pb2_best_val_loss",
        "pbt_best_val_loss",
        "pb2_median_best_val_loss",
        "pbt_median_best_val_loss",
        "gaps_pbt_minus_pb2",
        "median_gap",
        "pb2_wins",
        "member_steps",
        "equal_member_steps",
        "wall_s",
        "explore_summary",
        "per_seed",
    ):
        assert key in r, key
    assert r["member_steps"] == {"pb2": [60], "pbt": [60]}  # 2 members x 30 steps
    assert r["equal_member_steps"]
    (seed,) = r["per_seed"]
    for method in ("pb2", "pbt"):
        m = seed[method]
        assert math.isfinite(m["best_val_loss"]) and math.isfinite(m["best_test_loss"])
        assert Path(m["run_dir"], "run.json").exists()
        assert m["curve_steps"] == [0, 5, 10, 15, 20, 25, 30]
        assert m["curve_best_val_loss"][-1] <= m["best_val_loss"] + 1e-6  # best seen <= final
        assert [e["step"] for e in m["explores"]] == [5, 10, 15, 20, 25]  # one per ready step
        assert all(e["after"]["lr"] > 0 and e["copied"]["lr"] > 0 for e in m["explores"])
        assert all(0 <= u <= 1 for e in m["explores"] for u in e["after_unit"].values())
    assert r["median_gap"] == pytest.approx(r["pbt_best_val_loss"][0] - r["pb2_best_val_loss"][0])
    # PB2's exploit is PBT's: the first decision, from identical members, is the same copy.
    first = [seed[m]["explores"][0] for m in ("pb2", "pbt")]
    assert first[0]["member"] == first[1]["member"] and first[0]["copied"] == first[1]["copied"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["sizes"]["2"]["pb2_best_val_loss"] == r["pb2_best_val_loss"]
    assert len(summary["sizes"]["2"]["per_seed"][0]["pb2"]["explores"]) == 5
    assert code == (0 if res["verdict"] == "holds" else 1)
    try:
        mod.check_claim(res)
        held = True
    except AssertionError:
        held = False
    assert held == (res["verdict"] == "holds"), res["verdict_detail"]
