"""The accelerator suite's in-process parts (``scripts/accelerator_suite.py`` runs each one as
``python scripts/accel_parts.py PART --preset PRESET --out DIR``, its own process and timeout):

* ``trace``: a default population's segment of the medium model under ``jax.profiler``: FLOPs,
  measured time, TFLOP/s and MFU, and the top events of the trace by time (``trace.json``);
* ``large``: the same measurement (no trace) for the large model, ~85M parameters on an
  accelerator (``large.json``);
* ``precision``: the medium model in float32 and in bfloat16 (``model.dtype``, the task's
  computation dtype; parameters stay float32): the segment's time both ways and the validation
  loss of the same members (same initial parameters, learning rates and batches) after every
  segment (``precision.json``, written after each dtype).

FLOPs: XLA counts a loop's body once (a segment's ``scan`` over K steps, ``lax.map`` over the
members), so the compiled segment's own count is one step of one member (``map``) or of every
member (``vmap``). The count used here is XLA's cost analysis of ONE member's step, lowered and
not compiled (no extra compile; a GPU compiler flag cannot move it), times members x steps;
``model_flops`` is the analytic count beside it (per token ``6 N + 12 l d L``, ``N`` the matmul
parameters), and each gives its TFLOP/s and MFU (with ``--peak-tflops``, the device's dense
peak in the part's dtype).

Nothing here imports JAX at module level: the suite's parent process loads this file for its
presets and never starts JAX.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

TINY = {"num_layers": 1, "num_heads": 2, "d_model": 16, "d_ff": 32}
SMALL = {"num_layers": 2, "num_heads": 4, "d_model": 64, "d_ff": 256}
MEDIUM = {"num_layers": 4, "num_heads": 4, "d_model": 256, "d_ff": 1024}
#: GPT-2 small's shape with a byte vocabulary: ~85M parameters.
LARGE = {"num_layers": 12, "num_heads": 12, "d_model": 768, "d_ff": 3072}


def _spec(model, seq_len, batch, members, steps, dtype="float32", reps=3, **more) -> dict:
    return dict(model=model, seq_len=seq_len, batch_size=batch, members=members, steps=steps,
                dtype=dtype, reps=reps, **more)  # fmt: skip


#: part -> preset -> what it measures. The accelerator's runs in bfloat16, the dtype of the
#: device's quoted dense peak (``--peak-tflops``) and of the population part.
PRESETS = {
    "trace": {
        "smoke": _spec(TINY, 16, 4, 2, 2, reps=1),
        "cpu": _spec(SMALL, 64, 32, 4, 3),
        "accelerator": _spec(MEDIUM, 128, 32, 64, 10, "bfloat16"),
    },
    "large": {
        "smoke": _spec({**TINY, "num_layers": 2, "d_model": 32, "d_ff": 64}, 16, 4, 2, 2, reps=1),
        "cpu": _spec({"num_layers": 4, "num_heads": 4, "d_model": 128, "d_ff": 512}, 64, 16, 2, 2),
        "accelerator": _spec(LARGE, 512, 8, 4, 4, "bfloat16"),
    },
    "precision": {
        "smoke": _spec(TINY, 16, 4, 2, 2, reps=1, segments=3, eval_batches=1),
        "cpu": _spec(SMALL, 64, 16, 4, 5, reps=2, segments=3, eval_batches=2),
        "accelerator": _spec(MEDIUM, 128, 32, 16, 20, reps=3, segments=4, eval_batches=4),
    },
}


# -- measuring -----------------------------------------------------------------------------------
def build(spec: dict, dtype: str, lrs):
    """The task, a default population (``mode=auto``, specialised) and its members."""
    import jax
    import numpy as np

    from jaxhpo.population import Population
    from jaxhpo.tasks import LanguageModelTask

    task = LanguageModelTask(
        corpus=None, max_bytes=500_000, seq_len=spec["seq_len"], batch_size=spec["batch_size"],
        eval_batches=spec.get("eval_batches", 1), model={**spec["model"], "dtype": dtype},
    )  # fmt: skip
    popn = Population(task, "adamw", "constant")
    n = len(lrs)
    pop = popn.init(jax.random.key(0), np.arange(n), {"lr": np.asarray(lrs, np.float32)})
    return task, popn, pop


def compile_segment(popn, pop, data, steps: int):
    """The segment program compiled once (no second compile on the first call) and the seconds
    it took: ``run(pop) -> (pop, losses)``."""
    import jax.numpy as jnp

    valid = jnp.int32(steps)
    t = time.perf_counter()
    compiled = popn._segment.lower(pop, data, valid, num_steps=steps).compile()
    return (lambda p: compiled(p, data, valid)), time.perf_counter() - t


def member_step_flops(popn, pop, data) -> float:
    """XLA's count of one member's training step (lowered, not compiled)."""
    import jax

    from jaxhpo.population import gather

    one = jax.tree.map(lambda x: x[0], gather(pop, [0]))
    cost = jax.jit(popn._member_step).lower(one, data).cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float((cost or {}).get("flops", float("nan")))


def model_flops_per_token(model: dict, seq_len: int, vocab: int = 256) -> float:
    """Training FLOPs of one token by the analytic count (PaLM's MFU): ``6 N + 12 l d L``."""
    d, layers = model["d_model"], model["num_layers"]
    n = layers * (4 * d * d + 2 * d * model["d_ff"]) + vocab * d
    return 6.0 * n + 12.0 * layers * d * seq_len


def best_time(fn, reps: int) -> float:
    """Best wall time of ``reps`` calls of ``fn`` (which blocks until its result is ready)."""
    best = float("inf")
    for _ in range(max(1, reps)):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def throughput(spec: dict, peak_tflops: float | None, trace_dir: Path | None = None) -> dict:
    """One segment of ``members`` x ``steps``: compile time, best time, XLA's and the analytic
    FLOPs, TFLOP/s and MFU both ways; with ``trace_dir``, one more call under the profiler and
    its top events."""
    import jax
    import numpy as np

    n, steps, dtype = spec["members"], spec["steps"], spec["dtype"]
    task, popn, pop = build(spec, dtype, np.full(n, 1e-3))
    data = task.train_data
    run, compile_s = compile_segment(popn, pop, data, steps)
    go = lambda: jax.block_until_ready(run(pop))  # noqa: E731
    go()
    seconds = best_time(go, spec["reps"])
    step_flops = member_step_flops(popn, pop, data)
    flops = step_flops * n * steps
    tokens = n * steps * spec["batch_size"] * spec["seq_len"]
    model_flops = model_flops_per_token(spec["model"], spec["seq_len"]) * tokens
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(pop.params)) // n
    result = {
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "model": spec["model"],
        "params": params,
        "dtype": dtype,
        "seq_len": spec["seq_len"],
        "batch_size": spec["batch_size"],
        "members": n,
        "steps": steps,
        "mode": f"{popn.mode} ({popn.mode_reason})",
        "compile_s": compile_s,
        "segment_s": seconds,
        "examples_per_s": n * steps * spec["batch_size"] / seconds,
        "member_step_flops_xla": step_flops,
        "segment_flops_xla": flops,
        "segment_model_flops": model_flops,
        "tflops": flops / seconds / 1e12,
        "model_tflops": model_flops / seconds / 1e12,
        "peak_tflops": peak_tflops,
        "mfu": flops / seconds / 1e12 / peak_tflops if peak_tflops else None,
        "model_mfu": model_flops / seconds / 1e12 / peak_tflops if peak_tflops else None,
    }
    if trace_dir is not None:
        with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
            go()
        result["trace_dir"] = str(trace_dir)
        result["top_events"] = top_events(trace_dir)
    return result


def top_events(trace_dir: Path, k: int = 15) -> list[dict]:
    """The ``k`` event names with the most total time in the perfetto trace, device events
    (a process named like ``/device:GPU:0``) when there are any, else every complete event."""
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


# -- the parts -----------------------------------------------------------------------------------
def trace_part(out: Path, preset: str, peak_tflops: float | None) -> dict:
    """The medium model's segment, measured and traced: ``trace.json``."""
    result = throughput(PRESETS["trace"][preset], peak_tflops, trace_dir=out / "trace")
    (out / "trace.json").write_text(json.dumps(result, indent=2))
    return result


def large_part(out: Path, preset: str, peak_tflops: float | None) -> dict:
    """The large model's segment, measured: ``large.json``."""
    result = throughput(PRESETS["large"][preset], peak_tflops)
    (out / "large.json").write_text(json.dumps(result, indent=2))
    return result


def precision_part(out: Path, preset: str, peak_tflops: float | None) -> dict:
    """float32 against bfloat16 on the same members: ``precision.json``."""
    import jax
    import numpy as np

    del peak_tflops  # the dtypes' peaks differ: TFLOP/s only
    spec = PRESETS["precision"][preset]
    n, steps, segments = spec["members"], spec["steps"], spec["segments"]
    lrs = np.geomspace(3e-4, 3e-3, n)
    result = {
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        **{k: spec[k] for k in ("model", "seq_len", "batch_size", "members", "steps", "segments")},
        "eval_batches": spec["eval_batches"],
        "lr": lrs.tolist(),
        "eval_steps": [steps * s for s in range(segments + 1)],
        "runs": {},
    }
    for dtype in ("float32", "bfloat16"):
        task, popn, pop = build(spec, dtype, lrs)
        run, compile_s = compile_segment(popn, pop, task.train_data, steps)
        go = lambda run=run, pop=pop: jax.block_until_ready(run(pop))  # noqa: E731
        go()
        seconds = best_time(go, spec["reps"])
        flops = member_step_flops(popn, pop, task.train_data) * n * steps

        def val_loss(p, popn=popn, task=task) -> list[float]:
            return np.asarray(popn.evaluate(p, task.splits.val)["loss"], np.float64).tolist()

        curve = [val_loss(pop)]
        for _ in range(segments):
            pop, _ = run(pop)
            curve.append(val_loss(pop))
        result["runs"][dtype] = {
            "mode": f"{popn.mode} ({popn.mode_reason})",
            "compile_s": compile_s,
            "segment_s": seconds,
            "step_s": seconds / steps,
            "examples_per_s": n * steps * spec["batch_size"] / seconds,
            "tflops": flops / seconds / 1e12,
            "val_loss": curve,
            "mean_val_loss": [float(np.mean(c)) for c in curve],
        }
        (out / "precision.json").write_text(json.dumps(result, indent=2))  # a cut-off run keeps it
    f32, bf16 = result["runs"]["float32"], result["runs"]["bfloat16"]
    gap = np.abs(np.asarray(bf16["val_loss"]) - np.asarray(f32["val_loss"]))
    result["bf16_speedup"] = f32["segment_s"] / bf16["segment_s"]
    result["max_abs_gap"] = gap.max(axis=1).tolist()  # per evaluation, over the members
    result["final_max_abs_gap"] = float(gap[-1].max())
    (out / "precision.json").write_text(json.dumps(result, indent=2))
    return result


PARTS = {"trace": trace_part, "large": large_part, "precision": precision_part}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("part", choices=list(PARTS))
    ap.add_argument("--preset", choices=list(PRESETS["trace"]), required=True)
    ap.add_argument("--out", required=True, help="the suite's folder")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense peak for MFU")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    PARTS[args.part](out, args.preset, args.peak_tflops)
    return 0


if __name__ == "__main__":
    sys.exit(main())
