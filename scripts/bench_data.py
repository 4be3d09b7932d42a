"""Host-fed training data against device-resident data: the segment time each costs.

The default model (``lm-random``: 2 layers, d_model 64, seq_len 64, batch 16), a population of
``--size`` members, segments of ``--k`` steps, on a prepared token folder (``--data``; default:
the stdlib sources prepared byte-level into a temporary folder). In ONE process, every program
compiled first, then in turns (best and median of ``--reps``):

* ``device``: the training split is one device array, the step draws its windows;
* ``host_direct``: each segment's windows read from the memory map, put on the device, trained;
* ``host_prefetch``: as the run loop does it -- this segment's windows (read in the background
  during the previous segment), put on the device, the next segment's read started, trained;
* ``read``: reading one segment's windows alone (no training).

The two host-fed paths train bit-identical members to ``device`` (tests/test_data_run.py).
Writes JSON (``--out``, default scripts/results/bench_data_<backend>.json).

    python scripts/bench_data.py
    python scripts/bench_data.py --data DATA_DIR --size 8 --k 50 --reps 5
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from jaxhpo.data.feed import needed_steps
from jaxhpo.data.prepare import prepare_data
from jaxhpo.population import Population
from jaxhpo.tasks.tokens import TokenFileTask

MODEL = {"num_layers": 2, "num_heads": 4, "d_model": 64, "d_ff": 256}


def _block(pop):
    jax.block_until_ready(pop.params)
    return pop


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="a prepared folder (default: stdlib, bytes)")
    ap.add_argument("--size", type=int, default=8)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--mode", default="auto")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    data = args.data or tempfile.mkdtemp(prefix="jaxhpo-bench-data-")
    if args.data is None:
        prepare_data(None, data, log=None)
    kw = {"seq_len": 64, "batch_size": 16, "eval_batches": 2, "model": MODEL}
    host = TokenFileTask(data=data, feed="host", **kw)
    dev = TokenFileTask(data=data, feed="device", **kw)
    P, K = args.size, args.k
    hp = {"lr": np.full(P, 3e-3)}
    ph = Population(host, "adamw", "warmup_cosine", mode=args.mode)
    pd_ = Population(dev, "adamw", "warmup_cosine", mode=args.mode)
    key = jax.random.key(0)
    state = {"device": pd_.init(key, np.arange(P), hp), "host": ph.init(key, np.arange(P), hp)}

    def device():
        state["device"] = _block(pd_.train_segment(state["device"], dev.train_data, K)[0])

    def host_direct():
        pop = state["host"]
        d = jax.device_put(host.feeder.read(needed_steps(np.asarray(pop.step), K)))
        state["host"] = _block(ph.train_segment(pop, d, K)[0])

    def host_prefetch():
        pop = state["host"]
        steps = np.asarray(pop.step)
        d = jax.device_put(host.segment_data(steps, K))
        host.feeder.prefetch(steps + K, K)
        state["host"] = _block(ph.train_segment(pop, d, K)[0])

    def read():
        host.feeder.read(needed_steps(np.asarray(state["host"].step), K))

    cases = {"device": device, "host_direct": host_direct, "host_prefetch": host_prefetch}
    cases["read"] = read
    t0 = time.perf_counter()
    for f in cases.values():  # compile (and warm the page cache)
        f()
    compile_s = time.perf_counter() - t0
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.reps):
        for name, f in cases.items():
            if name == "host_prefetch":  # its prefetch was started by the previous call
                host.feeder.prefetch(np.asarray(state["host"].step), K)
            ts = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - ts)
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    windows = K * host.batch_size  # per distinct member step
    result = {
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "machine": platform.machine(),
        "member_mode": ph.mode,
        "population": P,
        "segment_steps": K,
        "model": MODEL,
        "seq_len": host.seq_len,
        "batch_size": host.batch_size,
        "data": str(data),
        "train_tokens": host.manifest["splits"]["train"]["tokens"],
        "reps": args.reps,
        "compile_and_warmup_s": round(compile_s, 2),
        "best_s": {k: round(v, 5) for k, v in best.items()},
        "median_s": {k: round(v, 5) for k, v in med.items()},
        "overhead_vs_device": {
            k: round(best[k] / best["device"] - 1, 4) for k in ("host_direct", "host_prefetch")
        },
        "overhead_vs_device_median": {
            k: round(med[k] / med["device"] - 1, 4) for k in ("host_direct", "host_prefetch")
        },
        "read_tokens_per_s": round(windows * (host.seq_len + 1) / best["read"]),
        "read_share_of_device_segment": round(best["read"] / best["device"], 4),
    }
    out = Path(
        args.out or Path(__file__).parent / "results" / f"bench_data_{result['backend']}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
