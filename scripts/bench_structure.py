"""Structural hyperparameters: the *masked* super-model against *shape buckets*.

The same members (depth and ff_width per member, on the byte-level LM) train side by side in one
process, once as one masked program of the largest shape and once as one program per shape
bucket, their segments alternating (load on a shared machine falls on both alike). Writes JSON
with, per scenario: the first segment (compile + run) and the median steady-state seconds per
segment of each, their ratio, and the number of segments after which buckets have paid for their
extra compiles:

    python scripts/bench_structure.py                 # P=12, K=20, 3 scenarios
    python scripts/bench_structure.py --quick         # a smoke run
    python scripts/bench_structure.py --gpu --out scripts/results/bench_structure_gpu.json

What to expect: masked costs every member the largest shape but compiles one program; buckets cost
each member its own shape but compile one program per bucket (and run the buckets back to back,
each with fewer members to fill the device). Buckets win when shapes differ a lot and the run is
long; masked wins for short runs, many small buckets, or when the members' shapes are close.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import numpy as np

from jaxhpo.population import Population
from jaxhpo.population.buckets import BucketedPopulation
from jaxhpo.tasks import LanguageModelTask

SCENARIOS = {
    # depth x ff_width, members spread evenly over 6 shapes
    "spread": [(d, f) for d in (1, 2, 4) for f in (64, 512)],
    # most members small, a few at the largest shape
    "skewed": [(1, 64)] * 5 + [(4, 512)],
    # every member at the largest shape: one bucket, nothing to save
    "uniform": [(4, 512)],
}


def _task(args, depth: int, ff: int) -> LanguageModelTask:
    model = {"num_layers": depth, "d_ff": ff, "d_model": args.d_model, "num_heads": 4}
    return LanguageModelTask(
        corpus=None,
        max_bytes=400_000,
        seq_len=args.seq_len,
        batch_size=args.batch,
        eval_batches=2,
        model=model,
    )


def _first(train, pop):
    """Compile and run the first segment; returns (pop, seconds)."""
    t = time.perf_counter()
    pop, loss = train(pop)
    jax.block_until_ready(loss)
    return pop, time.perf_counter() - t


def _segment(train, pop):
    t = time.perf_counter()
    pop, loss = train(pop)
    jax.block_until_ready(loss)
    return pop, time.perf_counter() - t


def scenario(name: str, args) -> dict:
    shapes = SCENARIOS[name]
    reps = -(-args.size // len(shapes))
    members = (shapes * reps)[: args.size]
    depth = np.array([d for d, _ in members], np.float32)
    ff = np.array([f for _, f in members], np.float32)
    hp = {"lr": 3e-3, "depth": depth, "ff_width": ff}
    big = _task(args, 4, 512)
    key, ids = jax.random.key(0), np.arange(len(members))

    masked = Population(big, "adamw", mode=args.mode, searched=("depth", "ff_width"))

    def make(s):
        return _task(args, s["depth"], s["ff_width"])

    bucketed = BucketedPopulation(make, big, ("depth", "ff_width"), "adamw", mode=args.mode)

    def m_train(p):
        return masked.train_segment(p, big.train_data, args.k)

    def b_train(p):
        return bucketed.train_segment(p, "train", args.k)

    m_pop, m_first = _first(m_train, masked.init(key, ids, hp))
    b_pop, b_first = _first(b_train, bucketed.init(key, ids, hp))
    # steady state: the two alternate segment by segment, so load on a shared machine falls
    # on both alike; the median of each
    m_times, b_times = [], []
    for _ in range(args.segments):
        m_pop, t = _segment(m_train, m_pop)
        m_times.append(t)
        b_pop, t = _segment(b_train, b_pop)
        b_times.append(t)
    m_step, b_step = float(np.median(m_times)), float(np.median(b_times))
    # total(n) = first + (n - 1) * steady: buckets are ahead from n on
    saved = m_step - b_step
    extra = b_first - m_first
    breakeven = None if saved <= 0 else max(1, int(np.ceil(extra / saved)) + 1)
    # the work each does: member-layers x hidden units (a proxy of the FLOPs that differ)
    work_masked = len(members) * 4 * (512 + 4 * args.d_model)
    work_buckets = float(np.sum(depth * (ff + 4 * args.d_model)))
    return {
        "scenario": name,
        "members": len(members),
        "shapes": sorted({f"depth{d}-ff{f}" for d, f in members}),
        "buckets": len(b_pop.keys),
        "masked_first_segment_s": round(m_first, 3),
        "buckets_first_segment_s": round(b_first, 3),
        "masked_segment_s": round(m_step, 4),
        "buckets_segment_s": round(b_step, 4),
        "steady_speedup_buckets_over_masked": round(m_step / b_step, 3),
        "block_work_ratio_masked_over_buckets": round(work_masked / work_buckets, 3),
        "buckets_ahead_after_segments": breakeven,
        "compiles": dict(bucketed.trace_counts),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=12)
    p.add_argument("--k", type=int, default=20, help="steps per segment")
    p.add_argument("--segments", type=int, default=5, help="timed segments after the first")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--mode", default="auto")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--gpu", action="store_true", help="larger defaults for an accelerator")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=Path("scripts/results/bench_structure_cpu.json"))
    args = p.parse_args()
    if args.quick:
        args.size, args.k, args.segments, args.seq_len = 6, 4, 1, 16
    if args.gpu:
        args.size, args.d_model, args.seq_len, args.batch = 64, 256, 128, 32
    rows = []
    for name in args.scenarios.split(","):
        row = scenario(name, args)
        print(json.dumps(row), flush=True)
        rows.append(row)
    out = {
        "benchmark": "structure: masked super-model vs shape buckets",
        "device": str(jax.devices()[0]),
        "backend": jax.default_backend(),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "settings": {k: v for k, v in vars(args).items() if k != "out"} | {"out": str(args.out)},
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
