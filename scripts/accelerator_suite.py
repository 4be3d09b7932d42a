"""The accelerator suite: one command that spends a device's few minutes measuring (issue 30).

On whatever device JAX finds (GPU, TPU; CPU works too), in a fixed time budget, each part a
subprocess with its own timeout (a part that hangs or fails costs only its share):

1. ``overhead``: ``scripts/bench_overhead.py``, the population as the run path and a default
   ``Population`` build it against the best hand-written sweep and the N x B one-model ceiling;
2. ``population``: ``scripts/bench_population.py``, the population against the same members
   trained one after another (speedup, MFU against ``--peak-tflops``);
3. ``member_mode``: ``scripts/bench_member_mode.py``, vmap / map / chunked side by side;
4. ``trace``: a ``jax.profiler`` trace of a default population's segment (medium model), its
   FLOPs from XLA's cost analysis, the measured time, MFU, and the top kernels by time.

Everything goes under one folder (``--out``, default ``$OUT`` or
``scripts/results/accelerator_<backend>``): each part's JSON and log, ``suite.json`` (the plan,
each part's status and wall time) and ``summary.md`` (markdown tables ready to paste).

    python scripts/accelerator_suite.py                      # the device's full plan, ~8 min
    python scripts/accelerator_suite.py --budget-s 300       # a shorter budget
    python scripts/accelerator_suite.py --smoke              # tiny sizes, < 1 min on a CPU
    python scripts/accelerator_suite.py --plan --smoke       # print the plan, run nothing

The parent process never imports JAX (a GPU's memory stays free for the parts).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
#: Each part's share of the budget (the last part also gets what earlier ones left).
SHARES = {"overhead": 0.3, "population": 0.3, "member_mode": 0.15, "trace": 0.25}
#: The trace's model per preset: (model, seq_len, batch, members, steps).
TRACE = {
    "smoke": ({"num_layers": 1, "num_heads": 2, "d_model": 16, "d_ff": 32}, 16, 4, 2, 2),
    "cpu": ({"num_layers": 2, "num_heads": 4, "d_model": 64, "d_ff": 256}, 64, 32, 4, 3),
    "accelerator": (
        {"num_layers": 4, "num_heads": 4, "d_model": 256, "d_ff": 1024},
        128,
        32,
        64,
        10,
    ),
}


def part_args(preset: str, out: Path, peak_tflops: float | None) -> dict[str, list[str]]:
    """Each part's command line for a preset (``smoke``, ``cpu`` or ``accelerator``)."""
    py = [sys.executable]
    peak = ["--peak-tflops", str(peak_tflops)] if peak_tflops else []
    if preset == "smoke":
        overhead = ["--quick"]
        population = ["--models", "tiny", "--sizes", "2", "--modes", "vmap", "--steps", "2"]
        population += ["--reps", "1"]
        member_mode = ["--runs", "tiny:2", "--steps", "2", "--reps", "1"]
    elif preset == "cpu":
        overhead = ["--sizes", "8,16", "--small-sizes", "8", "--steps", "5", "--reps", "2"]
        population = ["--models", "tiny", "--sizes", "16", "--modes", "map,vmap", "--steps", "10"]
        member_mode = ["--runs", "tiny:16,C:16", "--reps", "2"]
    else:
        overhead = ["--sizes", "8,16,64", "--small-sizes", "8,16,64", "--steps", "20", "--generic"]
        population = ["--gpu", "--steps", "20", *peak]
        member_mode = ["--runs", "tiny:64,C:64,small:64", "--reps", "3"]
    me = str(Path(__file__).resolve())
    return {
        "overhead": py
        + [str(SCRIPTS / "bench_overhead.py"), *overhead, "--out", str(out / "overhead.json")],
        "population": py
        + [str(SCRIPTS / "bench_population.py"), *population]
        + ["--out", str(out / "population.json")],
        "member_mode": py
        + [str(SCRIPTS / "bench_member_mode.py"), *member_mode]
        + ["--out", str(out / "member_mode.json")],
        "trace": py + [me, "--part", "trace", "--preset", preset, "--out", str(out), *peak],
    }


def make_plan(preset: str, out: Path, budget_s: float, peak_tflops: float | None) -> list[dict]:
    """The parts in order, each with its command and timeout (its share of the budget)."""
    cmds = part_args(preset, out, peak_tflops)
    return [
        {"part": name, "cmd": cmds[name], "timeout_s": round(SHARES[name] * budget_s, 1)}
        for name in SHARES
    ]


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
        with log.open("w") as f:
            try:
                rc = subprocess.run(
                    p["cmd"], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout
                ).returncode
                status = "ok" if rc == 0 else f"failed (exit {rc})"
            except subprocess.TimeoutExpired:
                status = f"timed out after {timeout:.0f} s"
        wall = time.monotonic() - t0
        print(f"[suite] {p['part']}: {status} in {wall:.1f} s (log {log})", flush=True)
        results.append({**p, "status": status, "wall_s": wall, "given_s": timeout})
    return results


# -- the trace part (its own process) -----------------------------------------------------------
def trace_part(out: Path, preset: str, peak_tflops: float | None) -> dict:
    """A default population's segment: XLA's FLOPs, measured time, MFU, a profiler trace and
    its top events by time. Writes ``trace.json``."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxhpo.population import Population
    from jaxhpo.tasks import LanguageModelTask

    model, seq_len, batch, n, steps = TRACE[preset]
    task = LanguageModelTask(
        corpus=None, max_bytes=500_000, seq_len=seq_len, batch_size=batch, eval_batches=1,
        model=model,
    )  # fmt: skip
    popn = Population(task, "adamw", "constant")  # the default: auto mode, specialised
    pop = popn.init(jax.random.key(0), np.arange(n), {"lr": np.full(n, 1e-3)})
    valid = jnp.int32(steps)
    lowered = popn._segment.lower(pop, task.train_data, valid, num_steps=steps)
    cost = lowered.compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    flops = float((cost or {}).get("flops", float("nan")))
    run = lambda: jax.block_until_ready(popn.train_segment(pop, task.train_data, steps))  # noqa: E731
    run()
    best = min(_timed(run) for _ in range(3))
    trace_dir = out / "trace"
    with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
        run()
    tflops = flops / best / 1e12
    result = {
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "model": model,
        "seq_len": seq_len,
        "batch_size": batch,
        "members": n,
        "steps": steps,
        "mode": f"{popn.mode} ({popn.mode_reason})",
        "segment_flops_xla": flops,
        "segment_s": best,
        "tflops": tflops,
        "peak_tflops": peak_tflops,
        "mfu": tflops / peak_tflops if peak_tflops else None,
        "trace_dir": str(trace_dir),
        "top_events": top_events(trace_dir),
    }
    (out / "trace.json").write_text(json.dumps(result, indent=2))
    return result


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def top_events(trace_dir: Path, k: int = 15) -> list[dict]:
    """The ``k`` event names with the most total time in the perfetto trace, device events
    (a process named like ``/device:GPU:0``) when there are any, else every complete event."""
    import gzip

    files = sorted(trace_dir.rglob("*.json.gz"))
    if not files:
        return []
    with gzip.open(files[-1]) as f:
        events = json.loads(f.read())
    events = events.get("traceEvents", events) if isinstance(events, dict) else events
    procs = {
        e["pid"]: e.get("args", {}).get("name", "")
        for e in events
        if e.get("ph") == "M" and e.get("name") == "process_name"
    }
    # complete events, without the Python tracer's ("$file.py:line name")
    done = [
        e for e in events if e.get("ph") == "X" and "dur" in e and not e["name"].startswith("$")
    ]
    device = [e for e in done if "device" in procs.get(e.get("pid"), "").lower()]
    chosen = device or done
    total: dict[str, list[float]] = {}
    for e in chosen:
        total.setdefault(e["name"], []).append(float(e["dur"]))
    whole = sum(sum(v) for v in total.values()) or 1.0
    rows = sorted(total.items(), key=lambda kv: -sum(kv[1]))[:k]
    where = "device" if device else "all"
    return [
        {"name": n, "total_ms": sum(v) / 1e3, "count": len(v), "share": sum(v) / whole, "of": where}
        for n, v in rows
    ]


# -- the summary ----------------------------------------------------------------------------------
def summary(out: Path, backend: str, results: list[dict], env: dict) -> str:
    lines = [f"# Accelerator suite ({backend})", "", "| part | status | wall s |", "|---|---|---|"]
    lines += [f"| {r['part']} | {r['status']} | {r['wall_s']:.1f} |" for r in results]
    overhead = _load(out / "overhead.json")
    if overhead:
        lines += ["", f"## Overhead ({overhead.get('device_kind', '')})", "", overhead["table"]]
    if (out / "population.json").exists():
        cmd = [sys.executable, str(SCRIPTS / "bench_population.py"), "--table"]
        got = subprocess.run(
            [*cmd, str(out / "population.json")], env=env, capture_output=True, text=True
        )
        lines += ["", "## Population against one after another", "", got.stdout.strip()]
    modes = _load(out / "member_mode.json")
    if modes:
        lines += [
            "",
            "## Member modes (examples/s)",
            "",
            "| config | N | MFLOP/step | modes | auto |",
        ]
        lines += ["|---|---|---|---|---|"]
        for r in modes["rows"]:
            rates = ", ".join(f"{k} {v:,.0f}" for k, v in r["examples_per_s"].items())
            mflop = (r["step_flops"] or float("nan")) / 1e6
            auto = f"{r['auto']} (x{r['auto_vs_fastest']:.2f} of fastest)"
            lines.append(f"| {r['config']} | {r['members']} | {mflop:.1f} | {rates} | {auto} |")
    trace = _load(out / "trace.json")
    if trace:
        mfu = f"{100 * trace['mfu']:.1f}%" if trace.get("mfu") else "- (no --peak-tflops)"
        lines += ["", f"## Trace: {trace['members']} members, {trace['steps']} steps", ""]
        lines += [
            f"{trace['mode']}; {trace['segment_s']:.3f} s per segment, "
            f"{trace['tflops']:.3f} TFLOP/s by XLA's count, MFU {mfu}",
            "",
            "| event | ms | count | share |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| `{e['name'][:60]}` | {e['total_ms']:.2f} | {e['count']} | {100 * e['share']:.1f}% |"
            for e in trace["top_events"][:10]
        ]
    return "\n".join(lines) + "\n"


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="output folder (default $OUT or by backend)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="the whole suite's time")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (a CPU test, < 1 min)")
    ap.add_argument("--plan", action="store_true", help="print the plan as JSON, run nothing")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense peak for MFU")
    ap.add_argument("--part", choices=["trace"], help=argparse.SUPPRESS)
    ap.add_argument("--preset", choices=list(TRACE), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.part == "trace":
        trace_part(Path(args.out), args.preset, args.peak_tflops)
        return 0
    env = dict(os.environ)
    if args.smoke:  # tiny programs: XLA's fastest backend optimisation (as the test suite)
        env.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
    backend = "planned" if args.plan else detect_backend(env)
    preset = "smoke" if args.smoke else ("cpu" if backend == "cpu" else "accelerator")
    out = Path(args.out or os.environ.get("OUT") or SCRIPTS / "results" / f"accelerator_{backend}")
    plan = make_plan(preset, out.resolve(), args.budget_s, args.peak_tflops)
    if args.plan:
        print(json.dumps({"preset": preset, "budget_s": args.budget_s, "parts": plan}, indent=2))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    results = run_plan(plan, out, env, args.budget_s)
    suite = {"backend": backend, "preset": preset, "budget_s": args.budget_s, "parts": results}
    suite["wall_s"] = time.monotonic() - t0
    (out / "suite.json").write_text(json.dumps(suite, indent=2))
    (out / "summary.md").write_text(summary(out, backend, results, env))
    print((out / "summary.md").read_text())
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
