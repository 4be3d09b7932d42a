"""scripts/accelerator_suite.py: the plan (parts, arguments, timeouts within the budget), the
trace's top events, the summary; the whole suite end to end in its smoke preset (slow)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _suite():
    spec = importlib.util.spec_from_file_location(
        "accelerator_suite", ROOT / "scripts" / "accelerator_suite.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules["accelerator_suite"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("preset", ["smoke", "cpu", "accelerator"])
def test_plan_runs_every_part_within_the_budget(tmp_path, preset):
    suite = _suite()
    plan = suite.make_plan(preset, tmp_path, 480.0, 989.0)
    assert [p["part"] for p in plan] == ["overhead", "population", "member_mode", "trace"]
    assert sum(p["timeout_s"] for p in plan) <= 480.0
    for p in plan:
        script = Path(p["cmd"][1])
        assert script.exists(), script
        assert str(tmp_path) in " ".join(p["cmd"])  # every part writes under the one folder
    by = {p["part"]: p["cmd"] for p in plan}
    if preset == "accelerator":
        assert "--gpu" in by["population"] and "989.0" in by["population"]
        assert "8,16,64" in by["overhead"]
    if preset == "smoke":
        assert "--quick" in by["overhead"]


def test_plan_flag_prints_the_plan_and_runs_nothing(tmp_path, capsys):
    suite = _suite()
    assert suite.main(["--plan", "--smoke", "--out", str(tmp_path / "o")]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["preset"] == "smoke" and len(plan["parts"]) == 4
    assert not (tmp_path / "o").exists()


def test_every_parts_arguments_parse(tmp_path):
    """Each benchmark accepts the arguments the suite gives it (argparse only, nothing runs)."""
    suite = _suite()
    for preset in ("smoke", "cpu", "accelerator"):
        for p in suite.make_plan(preset, tmp_path, 480.0, 989.0):
            if p["part"] == "trace":
                args = suite.parse_args(p["cmd"][2:])
                assert args.part == "trace" and args.preset == preset
                continue
            src = Path(p["cmd"][1]).read_text()
            for flag in (a for a in p["cmd"][2:] if a.startswith("--")):
                assert f'"{flag}"' in src, (p["part"], flag)


def test_top_events_prefer_device_events(tmp_path):
    suite = _suite()
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
    top = suite.top_events(tmp_path)
    assert [e["name"] for e in top] == ["fusion.1", "gemm"]
    assert top[0]["count"] == 2 and top[0]["total_ms"] == pytest.approx(0.07)
    assert top[0]["of"] == "device"


@pytest.mark.slow
def test_smoke_suite_writes_json_and_a_markdown_summary(tmp_path):
    out = tmp_path / "suite"
    cmd = [sys.executable, str(ROOT / "scripts" / "accelerator_suite.py"), "--smoke"]
    env = {**os.environ, "XLA_FLAGS": "--xla_backend_optimization_level=0"}
    got = subprocess.run(
        [*cmd, "--out", str(out), "--budget-s", "300"], cwd=ROOT, env=env, timeout=400
    )
    assert got.returncode == 0, (out / "suite.json").read_text()
    suite = json.loads((out / "suite.json").read_text())
    assert [p["status"] for p in suite["parts"]] == ["ok"] * 4
    for name in ("overhead", "population", "member_mode", "trace"):
        assert json.loads((out / f"{name}.json").read_text())
    summary = (out / "summary.md").read_text()
    assert "## Overhead" in summary and "## Trace" in summary and "run path" in summary
    assert json.loads((out / "trace.json").read_text())["segment_flops_xla"] > 0
