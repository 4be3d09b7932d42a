"""scripts/accelerator_suite.py and scripts/accel_parts.py: the plan (parts, arguments, timeouts
within the budget), the trace's top events, the summary (also of parts cut off half way), a
rerun of some parts; the suite's own parts and the Optuna comparison end to end in the smoke
preset, and the whole suite end to end (slow)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTS = ["overhead", "population", "member_mode", "trace", "large", "precision", "vs_optuna"]
OWN = {"trace", "large", "precision"}  # scripts/accel_parts.py's


def _suite():
    spec = importlib.util.spec_from_file_location(
        "accelerator_suite", ROOT / "scripts" / "accelerator_suite.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules["accelerator_suite"] = mod
    spec.loader.exec_module(mod)
    return mod


def _smoke(out: Path, parts: list[str], timeout: int) -> dict:
    cmd = [sys.executable, str(ROOT / "scripts" / "accelerator_suite.py"), "--smoke"]
    cmd += ["--out", str(out), "--budget-s", "300", "--parts", ",".join(parts)]
    env = {**os.environ, "XLA_FLAGS": "--xla_backend_optimization_level=0"}
    got = subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout, capture_output=True, text=True)
    assert got.returncode == 0, got.stdout[-3000:] + got.stderr[-3000:]
    suite = json.loads((out / "suite.json").read_text())
    assert [p["part"] for p in suite["parts"]] == parts
    assert [p["status"] for p in suite["parts"]] == ["ok"] * len(parts)
    return suite


@pytest.mark.parametrize("preset", ["smoke", "cpu", "accelerator"])
def test_plan_runs_every_part_within_the_budget(tmp_path, preset):
    suite = _suite()
    plan = suite.make_plan(preset, tmp_path, 480.0, 989.0)
    assert [p["part"] for p in plan] == PARTS
    assert sum(p["timeout_s"] for p in plan) <= 480.0 + 1e-6
    for p in plan:
        script = Path(p["cmd"][1])
        assert script.exists(), script
        assert str(tmp_path) in " ".join(p["cmd"])  # every part writes under the one folder
    by = {p["part"]: p for p in plan}
    # the Optuna comparison's run directories (tempfile) go under the folder too
    assert by["vs_optuna"]["env"]["TMPDIR"].startswith(str(tmp_path))
    cmd = {name: p["cmd"] for name, p in by.items()}
    if preset == "accelerator":
        assert "bfloat16" in cmd["population"] and "989.0" in cmd["population"]
        assert "medium" in ",".join(cmd["population"])
        assert "--quick" not in cmd["vs_optuna"]
        for part in OWN:
            assert "989.0" in cmd[part]
    if preset == "smoke":
        assert "--quick" in cmd["overhead"] and "--quick" in cmd["vs_optuna"]


def test_accelerator_presets_measure_medium_and_a_100m_large_model():
    parts = _suite().accel_parts
    large, medium = parts.PRESETS["large"]["accelerator"], parts.PRESETS["trace"]["accelerator"]
    m = large["model"]
    params = m["num_layers"] * (4 * m["d_model"] ** 2 + 2 * m["d_model"] * m["d_ff"])
    assert 5e7 < params < 2e8
    assert medium["model"]["d_model"] < m["d_model"]
    assert large["dtype"] == medium["dtype"] == "bfloat16"  # the dtype of a quoted peak
    precision = parts.PRESETS["precision"]["accelerator"]
    assert precision["model"] == medium["model"] and precision["segments"] >= 3


def test_plan_flag_prints_the_plan_and_runs_nothing(tmp_path, capsys):
    suite = _suite()
    assert suite.main(["--plan", "--smoke", "--out", str(tmp_path / "o")]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["preset"] == "smoke" and [p["part"] for p in plan["parts"]] == PARTS
    assert not (tmp_path / "o").exists()
    assert suite.main(["--plan", "--smoke", "--parts", "precision,large"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [p["part"] for p in plan["parts"]] == ["large", "precision"]  # the plan's order
    with pytest.raises(SystemExit):
        suite.parse_args(["--parts", "trace,nope"])


def test_every_parts_arguments_parse(tmp_path):
    """Each benchmark accepts the arguments the suite gives it (argparse only, nothing runs)."""
    suite = _suite()
    for preset in ("smoke", "cpu", "accelerator"):
        for p in suite.make_plan(preset, tmp_path, 480.0, 989.0):
            if p["part"] in OWN:
                args = suite.accel_parts.parse_args(p["cmd"][2:])
                assert args.part == p["part"] and args.preset == preset
                continue
            src = Path(p["cmd"][1]).read_text()
            for flag in (a for a in p["cmd"][2:] if a.startswith("--")):
                assert f'"{flag}"' in src, (p["part"], flag)


def test_top_events_prefer_device_events(tmp_path):
    parts = _suite().accel_parts
    events = [
        {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/host:CPU"}},
        {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/device:GPU:0"}},
        {"ph": "X", "pid": 1, "name": "python", "dur": 1000.0},
        {"ph": "X", "pid": 2, "name": "fusion.1", "dur": 30.0},
        {"ph": "X", "pid": 2, "name": "gemm", "dur": 50.0},
        {"ph": "X", "pid": 2, "name": "fusion.1", "dur": 40.0},
    ]
    d = tmp_path / "plugins" / "profile" / "run"
    d.mkdir(parents=True)
    with gzip.open(d / "perfetto_trace.json.gz", "wt") as f:
        json.dump({"traceEvents": events}, f)
    top = parts.top_events(tmp_path)
    assert [e["name"] for e in top] == ["fusion.1", "gemm"]
    assert top[0]["count"] == 2 and top[0]["total_ms"] == pytest.approx(0.07)
    assert top[0]["of"] == "device"


def test_summary_of_parts_cut_off_half_way(tmp_path):
    """A precision part stopped after float32 and an Optuna arm that never reached the target
    still give tables (the folder's JSON is written as each part goes); a JSON that does not
    read gives a line."""
    suite = _suite()
    run = {"segment_s": 0.5, "examples_per_s": 100.0, "tflops": 0.1, "mode": "vmap (auto)"}
    precision = {
        "members": 2, "segments": 2, "steps": 3, "eval_steps": [0, 3, 6],
        "runs": {"float32": {**run, "val_loss": [[5.5, 5.4]] * 3, "mean_val_loss": [5.45] * 3}},
    }  # fmt: skip
    (tmp_path / "precision.json").write_text(json.dumps(precision))
    # bench_vs_optuna.py's JSON and the tables it writes beside it
    (tmp_path / "vs_optuna.json").write_text(json.dumps({"seeds": []}))
    (tmp_path / "vs_optuna.md").write_text(
        "| seed | target | optuna | halving |\n| 0 | 3.5 | — | 4.0 |"
    )
    # an older suite's trace.json (no parameter count): a line, not an error after the run
    (tmp_path / "trace.json").write_text(json.dumps({"members": 2, "steps": 2, "tflops": 0.1}))
    results = [{"part": "precision", "status": "timed out after 50 s", "wall_s": 50.0}]
    text = suite.summary(tmp_path, "cpu", results, dict(os.environ))
    assert "## bfloat16 against float32" in text and "| float32 | 0.5000 |" in text
    assert "| 0 | 3.5 | — | 4.0 |" in text
    assert "(trace/large: its JSON does not summarise: KeyError" in text


def test_a_rerun_of_some_parts_keeps_the_others_record(tmp_path, monkeypatch):
    suite = _suite()
    monkeypatch.setattr(suite, "detect_backend", lambda env: "cpu")

    def fake_run(plan, out, env, budget_s):
        return [{**p, "status": "ok", "wall_s": 1.0, "given_s": 9.0} for p in plan]

    monkeypatch.setattr(suite, "run_plan", fake_run)
    out = tmp_path / "o"
    assert suite.main(["--smoke", "--out", str(out), "--parts", "trace,large"]) == 0
    (out / "suite.json").write_text(
        (out / "suite.json").read_text().replace('"ok"', '"failed (exit 1)"')
    )
    assert suite.main(["--smoke", "--out", str(out), "--parts", "large,precision"]) == 0
    got = json.loads((out / "suite.json").read_text())["parts"]
    assert [(p["part"], p["status"]) for p in got] == [
        ("trace", "failed (exit 1)"),
        ("large", "ok"),
        ("precision", "ok"),
    ]


def _finite(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


@pytest.mark.slow  # 44 s on 2 cores
def test_smoke_parts_and_the_optuna_comparison_write_sane_json(tmp_path):
    """The parts of issue 30 that the benchmarks do not cover, end to end in the smoke preset
    (~45 s on 2 cores): MFU of the medium and the large model, bf16 against f32, the trace's top
    events, time to target against Optuna; every JSON under the one folder, and the summary."""
    out = tmp_path / "suite"
    _smoke(out, ["trace", "large", "precision", "vs_optuna"], timeout=240)
    trace = json.loads((out / "trace.json").read_text())
    large = json.loads((out / "large.json").read_text())
    for r in (trace, large):
        for key in ("segment_flops_xla", "segment_model_flops", "tflops", "model_tflops"):
            assert _finite(r[key]) and r[key] > 0, key
        assert "mfu" in r and "model_mfu" in r and "peak_tflops" in r
        # XLA's count (one member's step x members x steps) within 2x of the analytic count
        assert 0.5 < r["segment_flops_xla"] / r["segment_model_flops"] < 2.0
        assert r["segment_s"] > 0
    assert large["params"] > trace["params"]
    assert trace["top_events"] and trace["top_events"][0]["total_ms"] > 0

    precision = json.loads((out / "precision.json").read_text())
    f32, bf16 = precision["runs"]["float32"], precision["runs"]["bfloat16"]
    assert len(f32["val_loss"]) == len(bf16["val_loss"]) == precision["segments"] + 1
    for run in (f32, bf16):
        assert all(len(v) == precision["members"] for v in run["val_loss"])
        assert all(_finite(x) for v in run["val_loss"] for x in v)
        assert run["segment_s"] > 0 and run["val_loss"][-1] != run["val_loss"][0]
    assert f32["val_loss"][0] == pytest.approx(bf16["val_loss"][0], abs=1e-2)  # same members
    assert _finite(precision["bf16_speedup"]) and precision["final_max_abs_gap"] < 0.5

    vs = json.loads((out / "vs_optuna.json").read_text())
    (seed,) = vs["seeds"]
    assert _finite(seed["target"]) and set(vs["summary"]) == {"optuna", "halving"}
    assert seed["optuna"]["trials"] >= 1 and seed["methods"]["halving"]["member_steps"] > 0

    summary = (out / "summary.md").read_text()
    for header in ("## MFU", "## Trace", "## bfloat16 against float32", "## Time to target"):
        assert header in summary, header
    assert "| large |" in summary and "| medium |" in summary


@pytest.mark.slow
def test_smoke_suite_writes_json_and_a_markdown_summary(tmp_path):
    """The whole suite in its smoke preset (~90 s on 2 cores)."""
    out = tmp_path / "suite"
    suite = _smoke(out, PARTS, timeout=400)
    assert suite["wall_s"] < 300
    for name in PARTS:
        assert json.loads((out / f"{name}.json").read_text())
    summary = (out / "summary.md").read_text()
    assert "## Overhead" in summary and "## Trace" in summary and "run path" in summary
    assert "## Population against one after another" in summary
    assert json.loads((out / "trace.json").read_text())["segment_flops_xla"] > 0
