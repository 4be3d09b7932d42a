"""Successive halving: *compact* (re-pack survivors, a new program per rung) against *masked*
(stopped members stay in the population, no recompile), for each member-axis mode.

Runs the real thing (``jaxhpo.experiment.run`` on the byte-level LM task) side by side in one
process, and writes JSON with wall time, training time, compiles and member-steps per setting:

    python scripts/bench_halving.py                  # P=27, eta=3, rungs at 20 and 60 of 180 steps
    python scripts/bench_halving.py --quick          # a smoke run

What to expect: under ``map`` a stopped member's step is a skipped ``lax.cond`` branch, so masked
costs no arithmetic for it and saves the recompiles; under ``vmap`` a stopped member's ``cond``
becomes a select and it still costs a full step, so compact wins once the saved work exceeds the
extra compiles.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import jax

from jaxhpo.cli import load_config
from jaxhpo.experiment import run


def one(mode: str, halving_mode: str, args) -> dict:
    overrides = [
        "strategy.name=halving",
        f"strategy.mode={halving_mode}",
        f"strategy.eta={args.eta}",
        f"strategy.min_steps={args.min_steps}",
        f"train.segment_steps={args.min_steps}",
        f"train.steps={args.steps}",
        f"population.size={args.size}",
        f"population.mode={mode}",
        "population.devices=1",
        f"out_dir={tempfile.mkdtemp()}",
        *args.set,
    ]
    cfg = load_config("lm-random", overrides)
    t = time.perf_counter()
    res = run(cfg, quiet=True)
    wall = time.perf_counter() - t
    info = json.loads((res.run_dir / "run.json").read_text())
    return {
        "member_mode": mode,
        "halving_mode": halving_mode,
        "wall_s": round(wall, 2),
        "train_s": round(info["timings"]["train_s"], 2),
        "member_steps": info["member_steps"],
        "compiles": info["trace_counts"],
        "best_val_loss": float(res.members["val_loss"].min()),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=27)
    p.add_argument("--eta", type=int, default=3)
    p.add_argument("--min-steps", type=int, default=20)
    p.add_argument("--steps", type=int, default=180)
    p.add_argument("--modes", default="map,vmap")
    p.add_argument("--set", action="append", default=[], help="extra config override")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=Path("scripts/results/bench_halving_cpu.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.steps, args.min_steps = 9, 60, 10
        args.set += ["model.num_layers=1", "model.d_model=16", "model.d_ff=32", "task.seq_len=16"]
    rows = []
    for mode in args.modes.split(","):
        for hm in ("masked", "compact"):
            r = one(mode, hm, args)
            rows.append(r)
            print(
                f"{mode:6s} {hm:8s} wall {r['wall_s']:7.1f}s train {r['train_s']:7.1f}s "
                f"segment compiles {r['compiles']['segment']} member-steps {r['member_steps']}",
                flush=True,
            )
    ratios = {}
    for mode in args.modes.split(","):
        m = next(r for r in rows if r["member_mode"] == mode and r["halving_mode"] == "masked")
        c = next(r for r in rows if r["member_mode"] == mode and r["halving_mode"] == "compact")
        ratios[mode] = {
            "masked_over_compact_wall": round(m["wall_s"] / c["wall_s"], 3),
            "masked_over_compact_train": round(m["train_s"] / c["train_s"], 3),
        }
    out = {
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "cpu": platform.processor() or platform.machine(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"} | {"out": str(args.out)},
        "runs": rows,
        "ratios": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(json.dumps(ratios, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
