"""The accelerator suite: one command that spends a device's few minutes measuring (issue 30).

On whatever device JAX finds (GPU, TPU; CPU works too), in a fixed time budget (``--budget-s``,
480 s: the backend's detection included), each part a subprocess with its own timeout (a part
that hangs or fails costs only its share; what earlier parts leave goes to the later ones):

1. ``overhead``: ``scripts/bench_overhead.py``, the population as the run path and a default
   ``Population`` build it against the best hand-written sweep and the N x B one-model ceiling;
2. ``population``: ``scripts/bench_population.py``, the population against the same members
   trained one after another (small and medium models; speedup, MFU against ``--peak-tflops``);
3. ``member_mode``: ``scripts/bench_member_mode.py``, vmap / map / chunked side by side;
4. ``trace``: a ``jax.profiler`` trace of a default population's segment (medium model), its
   FLOPs (XLA's cost analysis and the analytic count), the measured time, MFU, the top kernels
   by time (``scripts/accel_parts.py``);
5. ``large``: the same FLOPs, time and MFU for the large model (~85M parameters on an
   accelerator);
6. ``precision``: bfloat16 against float32 on the medium model: the segment's time both ways
   and the validation-loss curves of the same members trained both ways;
7. ``vs_optuna``: ``scripts/bench_vs_optuna.py``, time to a target loss of a jaxhpo strategy
   against Optuna TPE + MedianPruner on the same model and data (its run directories go under
   the folder too, ``vs_optuna_runs/``).

Everything goes under one folder (``--out``, default ``$OUT`` or
``scripts/results/accelerator_<backend>``): each part's JSON and log, ``suite.json`` (the plan,
each part's status and wall time) and ``summary.md`` (markdown tables ready to paste).

    python scripts/accelerator_suite.py --peak-tflops 989     # the device's full plan, ~8 min
    python scripts/accelerator_suite.py --budget-s 300       # a shorter budget
    python scripts/accelerator_suite.py --smoke              # tiny sizes, a CPU test
    python scripts/accelerator_suite.py --plan --smoke       # print the plan, run nothing
    python scripts/accelerator_suite.py --parts large,precision   # only these parts

The parent process never imports JAX (a GPU's memory stays free for the parts).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
_spec = importlib.util.spec_from_file_location("accel_parts", SCRIPTS / "accel_parts.py")
accel_parts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(accel_parts)  # presets and plain Python only: no JAX in this process

#: Each part's share of the budget. Sized for an H100 (compiles of 15-30 s per program for the
#: small and medium models); a part that ends early leaves its time to the later ones.
SHARES = {
    "overhead": 0.16,
    "population": 0.18,
    "member_mode": 0.1,
    "trace": 0.1,
    "large": 0.14,
    "precision": 0.12,
    "vs_optuna": 0.2,
}
PRESETS = ("smoke", "cpu", "accelerator")


def part_args(preset: str, out: Path, peak_tflops: float | None) -> dict[str, list[str]]:
    """Each part's command line for a preset (``smoke``, ``cpu`` or ``accelerator``)."""
    py = [sys.executable]
    peak = ["--peak-tflops", str(peak_tflops)] if peak_tflops else []
    if preset == "smoke":
        overhead = ["--quick"]
        population = ["--models", "tiny", "--sizes", "2", "--modes", "vmap", "--steps", "2"]
        population += ["--reps", "1"]
        member_mode = ["--runs", "tiny:2", "--steps", "2", "--reps", "1"]
        # a target every method reaches in its first segments (no calibration run)
        vs_optuna = ["--quick", "--target", "5.0", "--cap", "90", "--strategies", "halving"]
    elif preset == "cpu":
        overhead = ["--sizes", "8,16", "--small-sizes", "8", "--steps", "5", "--reps", "2"]
        population = ["--models", "tiny", "--sizes", "16", "--modes", "map,vmap", "--steps", "10"]
        member_mode = ["--runs", "tiny:16,C:16", "--reps", "2"]
        vs_optuna = ["--quick"]
    else:  # one size per model: every program compiles in 15-30 s on a GPU
        overhead = ["--models", "tiny,small", "--sizes", "64", "--small-sizes", "64"]
        overhead += ["--steps", "10", "--reps", "2"]
        population = ["--models", "small,medium", "--small-sizes", "64", "--medium-sizes", "64"]
        population += ["--modes", "vmap", "--dtype", "bfloat16", "--steps", "10", "--reps", "2"]
        population += peak
        member_mode = ["--runs", "tiny:64,small:64", "--reps", "2"]
        vs_optuna = []  # its default size: a 64-trial calibration, bohb and halving
    own = [str(SCRIPTS / "accel_parts.py")]
    here = ["--preset", preset, "--out", str(out), *peak]
    return {
        "overhead": py
        + [str(SCRIPTS / "bench_overhead.py"), *overhead, "--out", str(out / "overhead.json")],
        "population": py
        + [str(SCRIPTS / "bench_population.py"), *population]
        + ["--out", str(out / "population.json")],
        "member_mode": py
        + [str(SCRIPTS / "bench_member_mode.py"), *member_mode]
        + ["--out", str(out / "member_mode.json")],
        "trace": py + own + ["trace", *here],
        "large": py + own + ["large", *here],
        "precision": py + own + ["precision", *here],
        "vs_optuna": py
        + [str(SCRIPTS / "bench_vs_optuna.py"), *vs_optuna]
        + ["--out", str(out / "vs_optuna.json")],
    }


def make_plan(preset: str, out: Path, budget_s: float, peak_tflops: float | None) -> list[dict]:
    """The parts in order, each with its command and timeout (its share of the budget)."""
    cmds = part_args(preset, out, peak_tflops)
    plan = [
        {"part": name, "cmd": cmds[name], "timeout_s": round(SHARES[name] * budget_s, 1)}
        for name in SHARES
    ]
    for p in plan:  # the benchmark's run directories (tempfile) under the one folder
        if p["part"] == "vs_optuna":
            p["env"] = {"TMPDIR": str(out / "vs_optuna_runs")}
    return plan


def detect_backend(env: dict) -> str:
    """``jax.default_backend()`` in a subprocess (the parent keeps the device free)."""
    code = "import jax; print(jax.default_backend())"
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
        return out.stdout.strip().splitlines()[-1] if out.returncode == 0 else "unknown"
    except (subprocess.TimeoutExpired, IndexError):
        return "unknown"


def run_plan(plan: list[dict], out: Path, env: dict, budget_s: float) -> list[dict]:
    """Runs the parts in turn; a part gets its timeout or what is left of the budget, and the
    budget that earlier parts did not use goes to the later ones."""
    deadline = time.monotonic() + budget_s
    results = []
    for i, p in enumerate(plan):
        left = deadline - time.monotonic()
        later = sum(q["timeout_s"] for q in plan[i + 1 :])
        timeout = max(1.0, min(left, max(p["timeout_s"], left - later)))
        t0 = time.monotonic()
        log = out / f"{p['part']}.log"
        part_env = {**env, **p.get("env", {})}
        if "TMPDIR" in p.get("env", {}):
            Path(part_env["TMPDIR"]).mkdir(parents=True, exist_ok=True)
        with log.open("w") as f:
            try:
                rc = subprocess.run(
                    p["cmd"], cwd=ROOT, env=part_env, stdout=f, stderr=subprocess.STDOUT,
                    timeout=timeout,
                ).returncode  # fmt: skip
                status = "ok" if rc == 0 else f"failed (exit {rc})"
            except subprocess.TimeoutExpired:
                status = f"timed out after {timeout:.0f} s"
        wall = time.monotonic() - t0
        print(f"[suite] {p['part']}: {status} in {wall:.1f} s (log {log})", flush=True)
        results.append({**p, "status": status, "wall_s": wall, "given_s": timeout})
    return results


# -- the summary ----------------------------------------------------------------------------------
def summary(out: Path, backend: str, results: list[dict], env: dict) -> str:
    """The folder's results as markdown: each part's status, then a section per part's JSON (a
    JSON that does not read, e.g. from an older suite, gives a line saying so, not an error)."""
    lines = [f"# Accelerator suite ({backend})", "", "| part | status | wall s |", "|---|---|---|"]
    lines += [f"| {r['part']} | {r['status']} | {r['wall_s']:.1f} |" for r in results]
    for name, section in (
        ("overhead", _overhead),
        ("population", lambda o: _population(o, env)),
        ("member_mode", _member_modes),
        ("trace/large", _mfu),
        ("trace", _trace),
        ("precision", _precision),
        ("vs_optuna", _vs_optuna),
    ):
        try:
            lines += section(out)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            lines += ["", f"({name}: its JSON does not summarise: {type(e).__name__}: {e})"]
    return "\n".join(lines) + "\n"


def _overhead(out: Path) -> list[str]:
    overhead = _load(out / "overhead.json")
    if not overhead:
        return []
    return ["", f"## Overhead ({overhead.get('device_kind', '')})", "", overhead["table"]]


def _population(out: Path, env: dict) -> list[str]:
    if not (out / "population.json").exists():
        return []
    cmd = [sys.executable, str(SCRIPTS / "bench_population.py"), "--table"]
    got = subprocess.run(
        [*cmd, str(out / "population.json")], env=env, capture_output=True, text=True
    )
    return ["", "## Population against one after another", "", got.stdout.strip()]


def _member_modes(out: Path) -> list[str]:
    modes = _load(out / "member_mode.json")
    if not modes:
        return []
    lines = ["", "## Member modes (examples/s)", "", "| config | N | MFLOP/step | modes | auto |"]
    lines += ["|---|---|---|---|---|"]
    for r in modes["rows"]:
        rates = ", ".join(f"{k} {v:,.0f}" for k, v in r["examples_per_s"].items())
        mflop = (r["step_flops"] or float("nan")) / 1e6
        auto = f"{r['auto']} (x{r['auto_vs_fastest']:.2f} of fastest)"
        lines.append(f"| {r['config']} | {r['members']} | {mflop:.1f} | {rates} | {auto} |")
    return lines


def _mfu(out: Path) -> list[str]:
    trace, large = _load(out / "trace.json"), _load(out / "large.json")
    if not (trace or large):
        return []
    lines = ["", "## MFU: XLA's count and the analytic count (6N + 12 l d L per token)", ""]
    return lines + mfu_table([("medium", trace), ("large", large)])


def _trace(out: Path) -> list[str]:
    trace = _load(out / "trace.json")
    if not trace:
        return []
    lines = ["", f"## Trace: {trace['members']} members, {trace['steps']} steps", ""]
    lines += [
        f"{trace['mode']}; {trace['segment_s']:.3f} s per segment",
        "",
        "| event | ms | count | share |",
        "|---|---|---|---|",
    ]
    return lines + [
        f"| `{e['name'][:60]}` | {e['total_ms']:.2f} | {e['count']} | {100 * e['share']:.1f}% |"
        for e in trace["top_events"][:10]
    ]


def _precision(out: Path) -> list[str]:
    precision = _load(out / "precision.json")
    if not precision:
        return []
    return ["", "## bfloat16 against float32 (medium model)", "", *precision_tables(precision)]


def _vs_optuna(out: Path) -> list[str]:
    vs = _load(out / "vs_optuna.json")
    if not vs:
        return []
    return ["", "## Time to target against Optuna TPE + MedianPruner", "", *vs_optuna_table(out)]


def _pct(x: float | None) -> str:
    return f"{100 * x:.1f}%" if x is not None else "-"


def mfu_table(rows: list[tuple[str, dict | None]]) -> list[str]:
    """One row per measured model: its segment, TFLOP/s and MFU by either count."""
    lines = [
        "| model | params | dtype | N x steps | segment s | TFLOP/s (XLA) | MFU (XLA) "
        "| TFLOP/s (analytic) | MFU (analytic) | mode |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        if not r:
            continue
        lines.append(
            f"| {name} | {r['params'] / 1e6:.2f}M | {r['dtype']} | {r['members']} x {r['steps']} "
            f"| {r['segment_s']:.3f} | {r['tflops']:.3f} | {_pct(r['mfu'])} "
            f"| {r['model_tflops']:.3f} | {_pct(r['model_mfu'])} | {r['mode'].split(' ')[0]} |"
        )
    return lines


def precision_tables(r: dict) -> list[str]:
    """Each dtype's speed, then the mean validation loss of the members after each segment."""
    runs = r["runs"]
    lines = [
        f"{r['members']} members, {r['segments']} segments of {r['steps']} steps; "
        f"bfloat16 x{r.get('bf16_speedup', float('nan')):.2f} the speed of float32, final "
        f"loss gap {r.get('final_max_abs_gap', float('nan')):.4f} (largest over the members)",
        "",
        "| dtype | segment s | examples/s | TFLOP/s (XLA) | final mean val loss |",
        "|---|---|---|---|---|",
    ]
    for dtype, d in runs.items():
        lines.append(
            f"| {dtype} | {d['segment_s']:.4f} | {d['examples_per_s']:,.0f} | {d['tflops']:.3f} "
            f"| {d['mean_val_loss'][-1]:.4f} |"
        )
    lines += ["", "| step | " + " | ".join(runs) + " | max abs gap |"]
    lines.append("|---" * (len(runs) + 2) + "|")
    gaps = r.get("max_abs_gap", [])
    for i, step in enumerate(r["eval_steps"]):
        cells = [f"{d['mean_val_loss'][i]:.4f}" for d in runs.values() if i < len(d["val_loss"])]
        gap = f"{gaps[i]:.4f}" if i < len(gaps) else "-"
        lines.append(f"| {step} | " + " | ".join(cells) + f" | {gap} |")
    return lines


def vs_optuna_table(out: Path) -> list[str]:
    """The tables ``bench_vs_optuna.py`` wrote beside its JSON (per seed and the medians)."""
    try:
        return (out / "vs_optuna.md").read_text().splitlines()
    except OSError:
        return ["(no vs_optuna.md)"]


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="output folder (default $OUT or by backend)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="the whole suite's time")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (a CPU test)")
    ap.add_argument("--plan", action="store_true", help="print the plan as JSON, run nothing")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak for MFU")
    ap.add_argument(
        "--parts",
        default=",".join(SHARES),
        help="comma-separated parts to run, in the plan's order (default: all)",
    )
    args = ap.parse_args(argv)
    args.parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(args.parts) - set(SHARES))
    if unknown or not args.parts:
        ap.error(f"--parts: unknown {unknown}; choose from {', '.join(SHARES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    t0 = time.monotonic()
    args = parse_args(argv)
    env = dict(os.environ)
    if args.smoke:  # tiny programs: XLA's fastest backend optimisation (as the test suite)
        env.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
    backend = "planned" if args.plan else detect_backend(env)
    preset = "smoke" if args.smoke else ("cpu" if backend == "cpu" else "accelerator")
    out = Path(args.out or os.environ.get("OUT") or SCRIPTS / "results" / f"accelerator_{backend}")
    plan = make_plan(preset, out.resolve(), args.budget_s, args.peak_tflops)
    plan = [p for p in plan if p["part"] in args.parts]
    if args.plan:
        print(json.dumps({"preset": preset, "budget_s": args.budget_s, "parts": plan}, indent=2))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    # the budget holds the backend's detection too (a GPU's start takes seconds)
    results = run_plan(plan, out, env, args.budget_s - (time.monotonic() - t0))
    suite = {"backend": backend, "preset": preset, "budget_s": args.budget_s, "parts": results}
    suite["wall_s"] = time.monotonic() - t0
    # a rerun of some parts keeps the folder's record of the others (same backend and preset)
    earlier = _load(out / "suite.json") or {}
    if (earlier.get("backend"), earlier.get("preset")) == (backend, preset):
        ran = {r["part"]: r for r in results}
        kept = {r["part"]: r for r in earlier.get("parts", []) if r["part"] not in ran}
        suite["parts"] = [ran.get(n) or kept[n] for n in SHARES if n in ran or n in kept]
    (out / "suite.json").write_text(json.dumps(suite, indent=2))
    (out / "summary.md").write_text(summary(out, backend, suite["parts"], env))
    print((out / "summary.md").read_text())
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
