"""Kernel choices for the member step, kept only if measured faster: attention through
``jax.nn.dot_product_attention`` against the model's einsum attention, and donating the
population's buffers to the segment (``donate_argnums``).

In ONE process, for each model, N and member mode: three jaxhpo populations (specialised as
``jaxhpo run`` builds them) -- ``einsum`` (the model as it is), ``dpa`` (the attention of
:class:`~jaxhpo.models.transformer.MultiHeadSelfAttention` swapped for
``jax.nn.dot_product_attention`` while tracing; no attention dropout, which the swap does not
support), ``donate`` (the segment jitted with the population donated, each call feeding the
next) -- compiled first, then timed in turns, best rep kept. Writes JSON.

    python scripts/bench_kernels.py                      # tiny and small, N = 16, map and vmap
    python scripts/bench_kernels.py --runs tiny:4:vmap --steps 3 --reps 1   # a smoke run
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

from jaxhpo.models.transformer import MultiHeadSelfAttention
from jaxhpo.population import Population
from jaxhpo.tasks import LanguageModelTask

#: name -> (model, sequence length, batch size, steps per timed call: ~1 s at N=16)
MODELS = {
    "tiny": ({"num_layers": 1, "num_heads": 2, "d_model": 16, "d_ff": 32}, 16, 4, 100),
    "small": ({"num_layers": 2, "num_heads": 4, "d_model": 64, "d_ff": 256}, 64, 32, 5),
}
EINSUM = MultiHeadSelfAttention.__call__


def dpa_attention(self, x_BxLxD, mask_Bx1xLxL, *, key, attn_dropout_rate, heads=None):
    """The model's attention through ``jax.nn.dot_product_attention`` (no dropout)."""
    B, L, D = x_BxLxD.shape
    qkv_BxLx3xHxK = self.qkv(x_BxLxD).reshape(B, L, 3, self.num_heads, self.head_dim)
    q, k, v = (qkv_BxLx3xHxK[:, :, i] for i in range(3))
    y_BxLxHxK = jax.nn.dot_product_attention(q, k, v, mask=mask_Bx1xLxL, scale=self.scale)
    if heads is not None:
        on_H = (jnp.arange(self.num_heads) < heads).astype(y_BxLxHxK.dtype)
        y_BxLxHxK = y_BxLxHxK * on_H.reshape(1, 1, -1, 1)
    return self.out(y_BxLxHxK.reshape(B, L, D))


def variant(task, n: int, mode: str, steps: int, name: str):
    MultiHeadSelfAttention.__call__ = dpa_attention if name == "dpa" else EINSUM
    p = Population(task, "adamw", "constant", mode=mode, fixed=Population.task_defaults(task))
    segment = p._segment
    if name == "donate":
        segment = jax.jit(p._segment_impl, donate_argnums=0, static_argnames="num_steps")
    state = {"pop": p.init(jax.random.key(0), np.arange(n), {"lr": np.full(n, 1e-3)})}
    valid = jnp.int32(steps)

    def run():
        pop, losses = segment(state["pop"], task.train_data, valid, num_steps=steps)
        jax.block_until_ready(losses)
        if name == "donate":  # the donated input is gone: the next call starts from the output
            state["pop"] = pop

    t = time.perf_counter()
    run()  # compiles while the attention is swapped
    MultiHeadSelfAttention.__call__ = EINSUM
    return run, time.perf_counter() - t


def one(model: str, n: int, mode: str, steps: int, reps: int) -> dict:
    cfg, seq_len, batch, default_steps = MODELS[model]
    steps = steps or default_steps
    task = LanguageModelTask(
        corpus=None,
        max_bytes=500_000,
        seq_len=seq_len,
        batch_size=batch,
        eval_batches=1,
        model=cfg,
    )
    fns, first = {}, {}
    for name in ("einsum", "dpa", "donate"):
        fns[name], first[name] = variant(task, n, mode, steps, name)
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
    vs = {k: r / rate["einsum"] for k, r in rate.items()}
    print(
        f"{model:5s} N={n:3d} {mode:5s} "
        + "  ".join(f"{k} {rate[k]:8.0f} ex/s (x{vs[k]:.3f})" for k in rate),
        flush=True,
    )
    return {
        "model": model,
        "members": n,
        "steps": steps,
        "mode": mode,
        "examples_per_s": rate,
        "vs_einsum": vs,
        "first_call_s": first,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=f"scripts/results/bench_kernels_{jax.default_backend()}.json")
    ap.add_argument("--runs", default="tiny:16:vmap,tiny:16:map,small:16:vmap,small:16:map")
    ap.add_argument("--steps", type=int, default=0, help="steps per timed call (0: per model)")
    ap.add_argument("--reps", type=int, default=7)
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
        model, n, mode = item.split(":")
        out["rows"].append(one(model, int(n), mode, args.steps, args.reps))
        Path(args.out).write_text(json.dumps(out, indent=2))  # a run cut short keeps its rows
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
