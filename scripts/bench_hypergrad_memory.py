"""Memory of unrolled hypergradients against the window length K, with and without remat.

For ONE member of the byte-level LM (the ``lm-hypergrad`` preset's model by default), compiles
``value_and_grad`` of the validation loss after K differentiable training steps with respect to
log lr, softplus warmup, log weight decay and logit dropout
(:func:`jaxhpo.hypergrad.unrolled.hypergradient`, through :mod:`jaxhpo.hypergrad.member`), and
reads XLA's compiled memory analysis (no run needed): ``temp`` (working memory), ``argument``
and ``output`` bytes, ``peak ~ temp + argument + output``. Three settings:

* ``none``: plain reverse mode through the scan (every step's activations kept);
* ``step``: ``jax.checkpoint`` on every step (carries kept, activations recomputed);
* ``chunk``: also checkpoint chunks of ``c`` steps (``c`` = the divisor of K nearest sqrt K),
  so about ``K / c + c`` carries are live.

    python scripts/bench_hypergrad_memory.py                 # K = 10 25 50 100
    python scripts/bench_hypergrad_memory.py --tiny --ks 10 25  # a smoke run

Writes scripts/results/bench_hypergrad_memory_<backend>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxhpo.hypergrad import member, unrolled
from jaxhpo.population import Population
from jaxhpo.tasks import LanguageModelTask


def nearest_divisor(k: int) -> int:
    r = math.sqrt(k)
    return min((d for d in range(1, k + 1) if k % d == 0), key=lambda d: abs(d - r))


def measure(population, m, z, K: int, setting: str, data) -> dict:
    remat = setting != "none"
    chunk = nearest_divisor(K) if setting == "chunk" else 0
    names = tuple(z)

    def f(m, z, train_data, val_data):
        step_fn = member.make_step(population, train_data, jnp.asarray(K))
        val_fn = member.make_val(population, val_data)
        hp = member.member_hparams(population, m)
        fixed = {k: v for k, v in hp.items() if k not in names}
        val, g, _, _ = unrolled.hypergradient(
            step_fn, val_fn, m, z, fixed, num_steps=K, remat=remat, chunk=chunk
        )
        return val, g

    t = time.perf_counter()
    compiled = jax.jit(f).lower(m, z, *data).compile()
    mem = compiled.memory_analysis()
    out = {
        "K": K,
        "setting": setting,
        "chunk": chunk,
        "compile_s": round(time.perf_counter() - t, 2),
        "temp_bytes": int(mem.temp_size_in_bytes),
        "argument_bytes": int(mem.argument_size_in_bytes),
        "output_bytes": int(mem.output_size_in_bytes),
    }
    out["peak_bytes"] = out["temp_bytes"] + out["argument_bytes"] + out["output_bytes"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ks", type=int, nargs="+", default=[10, 25, 50, 100])
    p.add_argument("--tiny", action="store_true", help="the test suite's tiny model")
    p.add_argument("--out", type=Path, default=Path("scripts/results"))
    args = p.parse_args(argv)
    if args.tiny:
        model = {"num_layers": 1, "num_heads": 2, "d_model": 16, "d_ff": 32}
        task = LanguageModelTask(
            max_bytes=200_000, seq_len=16, batch_size=4, eval_batches=2, model=model
        )
    else:
        model = {"num_layers": 2, "num_heads": 4, "d_model": 64, "d_ff": 256}
        task = LanguageModelTask(
            max_bytes=500_000, seq_len=64, batch_size=16, eval_batches=2, model=model
        )
    population = Population(
        task, "adamw", "warmup_cosine", mode="vmap", devices=1, searched=("dropout",)
    )
    hp = {"lr": 3e-3, "warmup_steps": 10.0, "weight_decay": 0.01, "dropout": 0.1}
    pop = population.init(jax.random.key(0), np.arange(1), hp)
    m = jax.tree.map(lambda x: x[0], pop)
    z = unrolled.to_unconstrained(hp)
    n_params = sum(x.size for x in jax.tree.leaves(m.params))
    rows = []
    for K in args.ks:
        for setting in ("none", "step", "chunk"):
            r = measure(population, m, z, K, setting, (task.train_data, task.splits.val))
            rows.append(r)
            print(
                f"K={K:4d} {setting:5s} (chunk {r['chunk']:2d}): temp "
                f"{r['temp_bytes'] / 2**20:8.2f} MiB, peak {r['peak_bytes'] / 2**20:8.2f} MiB "
                f"(compile {r['compile_s']} s)",
                flush=True,
            )
    backend = jax.default_backend()
    result = {
        "benchmark": "bench_hypergrad_memory",
        "backend": backend,
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "machine": platform.machine(),
        "model": model,
        "seq_len": task.seq_len,
        "batch_size": task.batch_size,
        "params_per_member": int(n_params),
        "optimizer": "adamw/warmup_cosine",
        "hparams": list(hp),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench_hypergrad_memory_{backend}{'_tiny' if args.tiny else ''}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
