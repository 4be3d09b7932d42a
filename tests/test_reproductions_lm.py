"""The LM reproductions in ``experiments/``: PBT vs random search and Hyperband vs random search.

The fast tests check argument validation only. The slow ones (``pytest -m slow``) run each
script end to end on a tiny model and check what it writes; the claims themselves are measured
by the full default runs (several minutes each on 2 CPU cores, too long for a test) and are not
expected to hold on runs this small, so here ``check_claim`` is only required to agree with the
verdict the script recorded.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("pbt_vs_random_lm", "hyperband_vs_random_lm")

#: A tiny model and task: each study below takes seconds.
TINY = [
    "model.num_layers=1",
    "model.num_heads=2",
    "model.d_model=16",
    "model.d_ff=32",
    "task.seq_len=16",
    "task.batch_size=4",
    "task.eval_batches=2",
    "task.max_bytes=200000",
]


def _sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", SCRIPTS)
def test_arguments_are_validated(name, capsys):
    mod = load(name)
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])
    assert e.value.code == 0
    assert "--seeds" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        mod.main(["--seeds", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--seeds" in err and "must be >= 1" in err
    with pytest.raises(SystemExit) as e:
        mod.main(["--set", "model.d_model"])
    assert e.value.code == 2
    assert "--set" in capsys.readouterr().err


def test_config_errors_name_the_field(tmp_path, capsys):
    mod = load("pbt_vs_random_lm")
    assert mod.main(["--out", str(tmp_path), "--set", "model.d_model=-3"]) == 2
    assert "model.d_model" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def _verdict_matches(mod, results: dict) -> None:
    assert results["verdict"] in ("holds", "fails")
    try:
        mod.check_claim(results)
        held = True
    except AssertionError:
        held = False
    assert held == (results["verdict"] == "holds"), results["verdict_detail"]


@pytest.mark.slow
def test_pbt_vs_random_reduced(tmp_path):
    mod = load("pbt_vs_random_lm")
    overrides = [*TINY, "train.segment_steps=10", "strategy.ready_steps=10"]
    argv = ["--seeds", "1", "--steps", "40", "--size", "4", "--out", str(tmp_path)]
    code = mod.main(argv + _sets(overrides))
    assert code in (0, 1)
    assert (tmp_path / "pbt_vs_random_lm.png").stat().st_size > 0
    res = json.loads((tmp_path / "results.json").read_text())
    for key in (
        "claim",
        "settings",
        "pbt_best_val_loss",
        "random_best_val_loss",
        "median_gap",
        "pbt_wins",
        "member_steps",
        "equal_member_steps",
        "wall_s",
        "per_seed",
        "verdict",
    ):
        assert key in res, key
    assert res["member_steps"] == {"pbt": [160], "random": [160]}  # 4 members x 40 steps
    assert res["equal_member_steps"]
    (seed,) = res["per_seed"]
    for method in ("pbt", "random"):
        r = seed[method]
        assert Path(r["run_dir"], "run.json").exists()
        assert r["curve_steps"] == [0, 10, 20, 30, 40]
        assert r["curve_best_val_loss"][-1] <= r["best_val_loss"] + 1e-6  # best seen <= final
        assert r["wall_s"] > 0
    sched = seed["pbt"]["schedule"]
    assert sched[0]["start_step"] == 0 and sched[-1]["end_step"] == 40
    assert all(r["lr"] > 0 for r in sched)
    assert res["median_gap"] == pytest.approx(
        res["random_best_val_loss"][0] - res["pbt_best_val_loss"][0]
    )
    assert code == (0 if res["verdict"] == "holds" else 1)
    _verdict_matches(mod, res)


@pytest.mark.slow
def test_hyperband_vs_random_reduced(tmp_path):
    mod = load("hyperband_vs_random_lm")
    # R = 18 steps, min 2, eta 3: brackets of 9, 5 and 3 configurations (17 in all).
    argv = ["--seeds", "1", "--steps", "18", "--min-steps", "2", "--out", str(tmp_path)]
    code = mod.main(argv + _sets(TINY))
    assert code in (0, 1)
    assert (tmp_path / "hyperband_vs_random_lm.png").stat().st_size > 0
    res = json.loads((tmp_path / "results.json").read_text())
    for key in (
        "claim",
        "settings",
        "hyperband_best_val_loss",
        "random_best_val_loss",
        "better_in_median",
        "member_steps",
        "configurations",
        "wall_s",
        "per_seed",
        "hyperband_brackets",
        "verdict",
    ):
        assert key in res, key
    assert [b["configurations"] for b in res["hyperband_brackets"]] == [9, 5, 3]
    (seed,) = res["per_seed"]
    hb, rs = seed["hyperband"], seed["random"]
    # Bracket budgets: 9x2 + 3x4 + 1x12, 5x6 + 1x12, 3x18 = 42 + 42 + 54 member-steps.
    assert hb["member_steps"] == 138 and hb["configurations"] == 17
    assert hb["anytime_member_steps"][-1] == hb["member_steps"]
    assert seed["random_size"] == 138 // 18 == rs["configurations"]
    assert rs["member_steps"] == 7 * 18 <= hb["member_steps"]
    assert rs["anytime_member_steps"][-1] == rs["member_steps"]
    assert len(rs["prefix_best_val_loss"]) == 7
    assert rs["prefix_best_val_loss"][-1] == pytest.approx(rs["best_val_loss"])
    assert [e["step"] for e in seed["early_ranking"]] == [2, 6]  # the rungs
    assert all(-1 <= e["spearman_vs_final"] <= 1 for e in seed["early_ranking"])
    winner = seed["random_winner_in_hyperband"]
    assert winner["member"] == rs["best_member"] and winner["same_configuration"]
    for r in (hb, rs):
        ys = r["anytime_best_val_loss"]
        assert all(b <= a for a, b in zip(ys, ys[1:], strict=False))  # best so far
        assert ys[-1] <= r["best_val_loss"] + 1e-6  # the best seen is at most the best final
    assert code == (0 if res["verdict"] == "holds" else 1)
    _verdict_matches(mod, res)
