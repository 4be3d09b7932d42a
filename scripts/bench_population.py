"""Population throughput against N separate trials, measured side by side in one process.

For each model size and population size N it measures training examples per second of

* (a) jaxhpo's population step: ``Population.train_segment`` — N members, K steps, ONE jitted call,
  for every member-axis mode (``map``, ``vmap``, ``chunked``) on one device, and ``map``/``vmap``
  with the members sharded over all devices (``map@all``; on a CPU host one virtual device per
  core, as ``jaxhpo run`` sets up);
* (b) N separate trials trained one after another, each with a jitted single-model step called
  from Python once per step (how Optuna or Ray Tune run trials in one process). The step is the same
  per-member function the population uses, so both sides do the same arithmetic.

It also measures the machine's dense matmul GFLOP/s (in ``--dtype``) and reports the fraction of it
reached, using XLA's FLOP count of one member-step; with ``--peak-tflops`` (the device's datasheet
dense peak in that dtype) it also reports the model FLOP utilisation (MFU) against it. Writes JSON
(``--out``) and prints a markdown table.

    python scripts/bench_population.py                       # full: tiny+small (CPU)
    python scripts/bench_population.py --quick               # a smoke run
    python scripts/bench_population.py --gpu                 # accelerator: N=64,256, bf16, MFU
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time
from pathlib import Path

from jaxhpo.cli import use_cpu_cores

use_cpu_cores()  # one virtual CPU device per core, before JAX starts (as `jaxhpo run` does)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxhpo.population import Population, gather, resolve_devices  # noqa: E402
from jaxhpo.tasks import LanguageModelTask  # noqa: E402

MODELS = {
    # dispatch-bound: a step is a few hundred microseconds of arithmetic
    "tiny": {
        "model": {"num_layers": 1, "num_heads": 2, "d_model": 16, "d_ff": 32},
        "seq_len": 16,
        "batch_size": 4,
    },
    # ~1.5 GFLOP per member-step (forward + backward), XLA's count is reported
    "small": {
        "model": {"num_layers": 2, "num_heads": 4, "d_model": 64, "d_ff": 256},
        "seq_len": 64,
        "batch_size": 32,
    },
    # an accelerator-sized member: 4 layers, d_model 256, ~3.4M parameters
    "medium": {
        "model": {"num_layers": 4, "num_heads": 4, "d_model": 256, "d_ff": 1024},
        "seq_len": 128,
        "batch_size": 32,
    },
}


def model_flops_per_example(spec: dict, vocab: int = 256) -> float:
    """Training FLOPs of one example by the usual analytic count (as in PaLM's MFU): per token
    ``6 N + 12 l d L`` with ``N`` the matmul parameters (blocks and the tied readout) and the
    second term the attention scores and values. XLA's own count is reported beside it but is
    not comparable across backends and dtypes (on the GPU it moved 25x with a flag)."""
    m, L = spec["model"], spec["seq_len"]
    d, layers = m["d_model"], m["num_layers"]
    n = layers * (4 * d * d + 2 * d * m["d_ff"]) + vocab * d
    return (6 * n + 12 * layers * d * L) * L


def matmul_gflops(n: int = 2048, reps: int = 10, dtype: str = "float32") -> float:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.dtype(dtype))
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = np.inf
    for _ in range(reps):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def _time(fn, reps: int) -> float:
    """Best wall time of ``reps`` calls (after one warm-up call).

    Python's garbage collector is paused while timing: the one-after-another loop creates a
    pytree of arrays per step, and a full collection over the heap of several compiled programs
    took up to 10x its runtime in a timed window. Both sides are timed the same way.
    """
    fn()
    gc.collect()
    gc.disable()
    try:
        best = np.inf
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
    finally:
        gc.enable()
    return best


def bench_model(
    name: str,
    spec: dict,
    sizes: list[int],
    modes: list[str],
    steps: int,
    reps: int,
    chunk: int,
    dtype: str = "float32",
) -> list[dict]:
    task = LanguageModelTask(
        corpus=None,
        max_bytes=500_000,
        seq_len=spec["seq_len"],
        batch_size=spec["batch_size"],
        eval_batches=1,
        model={**spec["model"], "dtype": dtype},
    )
    key = jax.random.key(0)
    B = spec["batch_size"]
    rows = []
    # (b) the one-after-another baseline: one jitted single-member step, called per step.
    ref = Population(task, "adamw", "warmup_cosine", mode="map", devices=1)
    single = jax.jit(ref._member_step)
    one = jax.tree.map(lambda x: x[0], gather(ref.init(key, [0], {"lr": 1e-3}), [0]))
    compiled = single.lower(one, task.train_data).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    flops = float(cost.get("flops", float("nan")))

    def trials(n: int):
        for _ in range(n):
            m = one
            for _ in range(steps):
                m, _ = single(m, task.train_data)
            jax.block_until_ready(m)

    for n in sizes:
        t_seq = _time(lambda n=n: trials(n), reps)
        seq_rate = n * steps * B / t_seq
        for spec_mode in modes:
            mode, _, dev = spec_mode.partition("@")
            devices = resolve_devices(0 if dev == "all" else int(dev or 1), n)
            popn = Population(
                task, "adamw", "warmup_cosine", mode=mode, chunk_size=chunk, devices=devices
            )
            pop = popn.init(key, np.arange(n), {"lr": np.full(n, 1e-3)})
            data = popn.replicate(task.train_data)  # on every device once, as `jaxhpo run` does

            def seg(popn=popn, pop=pop, data=data):
                jax.block_until_ready(popn.train_segment(pop, data, steps))

            try:
                t0 = time.perf_counter()
                seg()
                compile_s = time.perf_counter() - t0
                t_pop = _time(seg, reps)
            except Exception as e:  # e.g. out of device memory: record it, measure the rest
                msg = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                print(f"  {name:5s} N={n:3d} {spec_mode:9s} failed: {msg}", flush=True)
                rows.append({"model": name, "members": n, "mode": spec_mode, "error": msg})
                del pop, popn
                gc.collect()
                continue
            rate = n * steps * B / t_pop
            rows.append(
                {
                    "model": name,
                    "members": n,
                    "mode": spec_mode,
                    "devices": devices,
                    "steps": steps,
                    "batch_size": B,
                    "seq_len": spec["seq_len"],
                    "dtype": dtype,
                    "flops_per_member_step": flops,
                    "model_flops_per_example": model_flops_per_example(spec),
                    "population_examples_per_s": rate,
                    "sequential_examples_per_s": seq_rate,
                    "speedup": rate / seq_rate,
                    "population_s": t_pop,
                    "sequential_s": t_seq,
                    "first_call_s": compile_s,
                    "population_gflops": flops * n * steps / t_pop / 1e9,
                    "sequential_gflops": flops * n * steps / t_seq / 1e9,
                }
            )
            print(
                f"  {name:5s} N={n:3d} {spec_mode:9s} pop {rate:9.0f} ex/s"
                f"  seq {seq_rate:9.0f} ex/s  x{rate / seq_rate:5.2f}",
                flush=True,
            )
    return rows


def _model_tflops(row: dict) -> float:
    """Model TFLOP/s of the population (analytic count), for the MFU column."""
    per_example = row.get("model_flops_per_example")
    if per_example is None:  # results written before the analytic count existed
        per_example = model_flops_per_example(MODELS[row["model"]])
    return row["population_examples_per_s"] * per_example / 1e12


def table(results: dict) -> str:
    peak = results["matmul_gflops"]
    spec = results.get("peak_tflops")
    modes = list(dict.fromkeys(r["mode"] for r in results["rows"]))
    lines = [
        "| model | N | best mode | population ex/s | sequential ex/s | speedup | "
        "% of matmul peak | MFU | " + " | ".join(modes) + " |",
        "|---" * (8 + len(modes)) + "|",
    ]
    by = {}
    for r in results["rows"]:
        if "error" in r:
            continue
        by.setdefault((r["model"], r["members"]), []).append(r)
    for (model, n), rs in by.items():
        best = max(rs, key=lambda r: r["speedup"])
        per_mode = {r["mode"]: f"x{r['speedup']:.2f}" for r in rs}
        cells = " | ".join(per_mode.get(m, "-") for m in modes)
        lines.append(
            f"| {model} | {n} | {best['mode']} ({best['devices']} dev) | "
            f"{best['population_examples_per_s']:,.0f} | "
            f"{best['sequential_examples_per_s']:,.0f} | **x{best['speedup']:.2f}** | "
            f"{100 * 1e3 * _model_tflops(best) / peak:.1f}% | "
            + (f"{100 * _model_tflops(best) / spec:.1f}% | " if spec else "- | ")
            + f"{cells} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="scripts/results/bench_population.json")
    ap.add_argument("--models", default="tiny,small")
    ap.add_argument("--sizes", default="1,4,16,64", help="population sizes of the tiny model")
    ap.add_argument("--small-sizes", default="1,4,16", help="population sizes of the small model")
    ap.add_argument(
        "--modes",
        default="map,vmap,chunked,map@all,vmap@all",
        help="member modes; MODE@all shards the members over all devices",
    )
    ap.add_argument("--steps", type=int, default=20, help="steps per segment (K)")
    ap.add_argument("--reps", type=int, default=2, help="timed repetitions (best is kept)")
    ap.add_argument("--chunk", type=int, default=4, help="members per chunk in chunked mode")
    ap.add_argument("--medium-sizes", default="64,256", help="population sizes, medium model")
    ap.add_argument("--dtype", default="float32", help="computation dtype: float32 | bfloat16")
    ap.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's datasheet dense peak in --dtype, TFLOP/s (MFU is reported against it)",
    )
    ap.add_argument("--quick", action="store_true", help="tiny model, N=1,4, 5 steps")
    ap.add_argument(
        "--gpu",
        action="store_true",
        help="accelerator preset: small+medium models at N=64,256, bf16, vmap/chunked/map",
    )
    ap.add_argument("--table", metavar="JSON", help="print the table of an earlier result file")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return
    if args.quick:
        args.models, args.sizes, args.steps, args.reps = "tiny", "1,4", 5, 1
    if args.gpu:
        args.models, args.small_sizes, args.dtype = "small,medium", "64,256", "bfloat16"
        if args.modes == ap.get_default("modes"):
            args.modes = "vmap,chunked,map"
    models = args.models.split(",")
    sizes = {
        "tiny": [int(s) for s in args.sizes.split(",")],
        "small": [int(s) for s in args.small_sizes.split(",")],
        "medium": [int(s) for s in args.medium_sizes.split(",")],
    }
    modes = args.modes.split(",")
    print(f"backend {jax.default_backend()}, devices {jax.devices()}", flush=True)
    n = 8192 if jax.default_backend() != "cpu" else 2048
    peak = matmul_gflops(n, dtype=args.dtype)
    print(f"dense matmul {args.dtype} ({n}^3): {peak:.0f} GFLOP/s", flush=True)
    rows = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for m in models:
        rows += bench_model(
            m, MODELS[m], sizes[m], modes, args.steps, args.reps, args.chunk, args.dtype
        )
        results = _results(args, peak, rows)
        out.write_text(json.dumps(results, indent=2))  # after each model: a cut-off run keeps it
    print(table(results))
    print(f"wrote {out}")


def _results(args, peak: float, rows: list[dict]) -> dict:
    return {
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "matmul_gflops": peak,
        "dtype": args.dtype,
        "peak_tflops": args.peak_tflops,
        "steps": args.steps,
        "rows": rows,
    }


if __name__ == "__main__":
    main()
