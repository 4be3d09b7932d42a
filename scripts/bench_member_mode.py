"""Which member mode is fastest on this device, by one member step's cost: the data behind
``population.mode=auto`` (:mod:`jaxhpo.population.member_mode`).

In ONE process, for each byte-level LM configuration and population size N: a jaxhpo population
(specialised as ``jaxhpo run`` builds it) in each mode (``vmap``, ``map``, ``chunked`` with
chunks of 4 and 16), every program compiled first, then timed in turns (rep 1 of every mode,
rep 2 of every mode, ...; best rep kept), so a busy machine slows all alike. Also records XLA's
FLOP count of one member's step and the mode ``auto`` picks. Writes JSON.

    python scripts/bench_member_mode.py                  # tiny .. small, N = 16 (and tiny N = 64)
    python scripts/bench_member_mode.py --runs tiny:4 --steps 3 --reps 1   # a smoke run
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxhpo.population import Population
from jaxhpo.population.member_mode import choose_mode, member_step_flops
from jaxhpo.tasks import LanguageModelTask

#: name -> (model, sequence length, batch size, steps per timed call), from 2.5 MFLOP to 1.5
#: GFLOP per member step; the steps make each timed call long enough (~1 s at N=16) that a core
#: taken away for a moment by another process does not decide it.
CONFIGS = {
    "tiny": ({"num_layers": 1, "num_heads": 2, "d_model": 16, "d_ff": 32}, 16, 4, 100),
    "A": ({"num_layers": 1, "num_heads": 2, "d_model": 32, "d_ff": 64}, 32, 8, 40),
    "B": ({"num_layers": 2, "num_heads": 2, "d_model": 32, "d_ff": 128}, 32, 16, 20),
    "C": ({"num_layers": 2, "num_heads": 4, "d_model": 64, "d_ff": 256}, 32, 16, 10),
    "small": ({"num_layers": 2, "num_heads": 4, "d_model": 64, "d_ff": 256}, 64, 32, 5),
}
MODES = (("vmap", 4), ("map", 4), ("chunked", 4), ("chunked", 16))


def one(name: str, n: int, steps: int, reps: int) -> dict:
    model, seq_len, batch, default_steps = CONFIGS[name]
    steps = steps or default_steps
    task = LanguageModelTask(
        corpus=None,
        max_bytes=500_000,
        seq_len=seq_len,
        batch_size=batch,
        eval_batches=1,
        model=model,
    )
    fixed = Population.task_defaults(task)
    fns, first = {}, {}
    for mode, c in MODES:
        if mode == "chunked" and c >= n:
            continue
        p = Population(task, "adamw", "constant", mode=mode, chunk_size=c, fixed=fixed)
        pop = p.init(jax.random.key(0), np.arange(n), {"lr": np.full(n, 1e-3)})
        valid = jnp.int32(steps)

        def f(p=p, pop=pop, valid=valid):
            return jax.block_until_ready(p._segment(pop, task.train_data, valid, num_steps=steps))

        label = f"{mode}{c}" if mode == "chunked" else mode
        t = time.perf_counter()
        f()
        first[label], fns[label] = time.perf_counter() - t, f
    flops = member_step_flops(p, task.train_data)
    best = dict.fromkeys(fns, np.inf)
    gc.collect()
    gc.disable()
    try:
        for _ in range(reps):
            for k, f in fns.items():
                t = time.perf_counter()
                f()
                best[k] = min(best[k], time.perf_counter() - t)
    finally:
        gc.enable()
    rate = {k: n * steps * batch / v for k, v in best.items()}
    auto = choose_mode(jax.default_backend(), flops)
    row = {
        "config": name,
        "members": n,
        "steps": steps,
        "model": model,
        "seq_len": seq_len,
        "batch_size": batch,
        "step_flops": flops,
        "examples_per_s": rate,
        "first_call_s": first,
        "fastest": max(rate, key=rate.get),
        "auto": auto.mode,
        "auto_reason": auto.reason,
        "auto_vs_fastest": rate[auto.mode] / max(rate.values()),
    }
    print(
        f"{name:5s} N={n:3d} {flops / 1e6:8.1f} MFLOP/step  "
        + "  ".join(f"{k} {v:8.0f}" for k, v in rate.items())
        + f"  fastest {row['fastest']}, auto {auto.mode} (x{row['auto_vs_fastest']:.2f})",
        flush=True,
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=f"scripts/results/member_mode_{jax.default_backend()}.json")
    ap.add_argument("--runs", default="tiny:16,tiny:64,A:16,B:16,C:16,small:16")
    ap.add_argument("--steps", type=int, default=0, help="steps per timed call (0: per model)")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    out = {
        "backend": jax.default_backend(),
        "machine": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "load_average_1min_at_start": os.getloadavg()[0],
        "reps": args.reps,
        "rows": [],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for item in args.runs.split(","):
        name, n = item.split(":")
        out["rows"].append(one(name, int(n), args.steps, args.reps))
        Path(args.out).write_text(json.dumps(out, indent=2))  # a run cut short keeps its rows
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
