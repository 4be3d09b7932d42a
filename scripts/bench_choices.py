"""The cost of a mixed population (per-member schedule / optimizer choices) against one optimizer.

Side by side in one process, on the byte-level LM, for each member-axis mode (``map``, ``vmap``):

* ``single``: P members of AdamW + warmup-cosine (the default), one program;
* ``mixed_schedule``: P members of AdamW, each following one of four schedules (a
  ``lax.switch`` on the member's code ``schedule``), one program;
* ``mixed_optimizer``: P members spread over SGD, momentum, AdamW and Lion (a switch on the code
  ``optimizer``; every member carries the four optimizers' states), one program;
* ``mixed_both``: both switches;
* ``per_optimizer``: the other design, one program per optimizer (shape buckets' way): four
  populations of P/4 members, one per optimizer, dispatched back to back in each segment.

For each: compile time (first segment), the median time of a K-step segment after it (the arms
timed round robin, so a shared machine's load falls on all of them alike), member-steps per
second, and the optimizer state's bytes per member. Writes JSON (``--out``).

    python scripts/bench_choices.py            # CPU, small LM
    python scripts/bench_choices.py --quick    # smoke run
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
from jaxhpo.tasks import LanguageModelTask

OPTIMIZERS = ("sgd", "momentum", "adamw", "lion")
SCHEDULES = ("warmup_cosine", "constant", "warmup_exponential", "cosine_restarts")
MODEL = {"num_layers": 2, "num_heads": 4, "d_model": 64, "d_ff": 256}


def _segment(pops, states, data, steps: int):
    """One K-step segment of every population, dispatched back to back; its wall time."""
    t0 = time.perf_counter()
    states = [p.train_segment(s, data, steps)[0] for p, s in zip(pops, states, strict=True)]
    jax.block_until_ready(states)
    return states, time.perf_counter() - t0


def _opt_bytes(state) -> int:
    return int(sum(x.nbytes for x in jax.tree.leaves(state.opt_state)) // state.size)


def _arms(task, size: int, mode: str):
    """name -> (populations, their initial hyperparameters)."""
    codes = np.arange(size) % 4
    lr = {"lr": np.where(codes < 2, 0.05, 1e-3)}  # SGD-family rates for codes 0 and 1
    one = {"lr": np.full(size, 1e-3)}
    arms = {
        "single": ([Population(task, "adamw", "warmup_cosine", mode=mode)], [one]),
        "mixed_schedule": (
            [Population(task, "adamw", SCHEDULES, mode=mode)],
            [{**one, "schedule": codes}],
        ),
        "mixed_optimizer": (
            [Population(task, OPTIMIZERS, "warmup_cosine", mode=mode)],
            [{**lr, "optimizer": codes}],
        ),
        "mixed_both": (
            [Population(task, OPTIMIZERS, SCHEDULES, mode=mode)],
            [{**lr, "optimizer": codes, "schedule": codes[::-1]}],
        ),
    }
    part = size // len(OPTIMIZERS)
    arms["per_optimizer"] = (
        [Population(task, o, "warmup_cosine", mode=mode) for o in OPTIMIZERS],
        [{"lr": np.full(part, 0.05 if i < 2 else 1e-3)} for i in range(len(OPTIMIZERS))],
    )
    return arms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--modes", default="map,vmap")
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--out", default=f"scripts/results/bench_choices_{jax.default_backend()}.json"
    )
    args = parser.parse_args()
    model = dict(MODEL)
    if args.quick:
        model = {"num_layers": 1, "num_heads": 2, "d_model": 16, "d_ff": 32}
        args.steps, args.repeats = 3, 1
    task = LanguageModelTask(
        corpus=None,
        max_bytes=500_000,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        eval_batches=1,
        model=model,
    )
    rows, key = [], jax.random.key(0)
    for mode in args.modes.split(","):
        arms = {}
        for name, (pops, hps) in _arms(task, args.size, mode).items():
            states, start = [], 0
            for p, hp in zip(pops, hps, strict=True):
                n = len(next(iter(hp.values())))
                states.append(p.init(key, np.arange(start, start + n), hp))
                start += n
            states, compile_s = _segment(pops, states, task.train_data, args.steps)
            arms[name] = [pops, states, compile_s, []]
        # round robin: every arm sees the same machine load (the CPU is shared)
        for _ in range(args.repeats):
            for arm in arms.values():
                arm[1], t = _segment(arm[0], arm[1], task.train_data, args.steps)
                arm[3].append(t)
        for name, (pops, states, compile_s, times) in arms.items():
            seg_s = float(np.median(times))
            row = {
                "mode": mode,
                "arm": name,
                "programs": len(pops),
                "compile_s": round(compile_s, 3),
                "segment_s": round(seg_s, 4),
                "segment_s_all": [round(t, 4) for t in times],
                "member_steps_per_s": round(args.size * args.steps / seg_s, 1),
                "opt_state_bytes_per_member": max(_opt_bytes(s) for s in states),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    for mode in args.modes.split(","):
        base = next(r for r in rows if r["mode"] == mode and r["arm"] == "single")
        for r in rows:
            if r["mode"] == mode:
                r["segment_vs_single"] = round(r["segment_s"] / base["segment_s"], 3)
    out = {
        "what": "mixed population (schedule / optimizer switch) against one optimizer",
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "model": model,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "size": args.size,
        "steps_per_segment": args.steps,
        "repeats": args.repeats,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
