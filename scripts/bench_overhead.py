"""jaxhpo's population step against the best hand-written JAX for the same model, side by side.

In ONE process, for each model and population size N, training examples per second of

* jaxhpo's ``Population.train_segment`` (K steps, one jitted call) in each member mode (``map``,
  ``vmap``, ``chunked``) and in the default (``auto``), as ``jaxhpo run`` builds it: task
  hyperparameters outside the search space are constants of the step (``specialised``); the
  default mode also without that (``generic``: every hyperparameter a per-member array, as a
  population built without a search space);
* a hand-written sweep kept in this file, with no jaxhpo code on its training path: the same
  Transformer, ``optax.inject_hyperparams(optax.adamw)`` with a per-member learning rate, the
  same batch draw, ``jit(scan(vmap(step)))`` and ``jit(lax.map(scan(step)))``;
* one model trained with batch N x B (the same arithmetic as N members, one program).

Every variant is compiled first, then timed in turns (rep 1 of every variant, rep 2 of every
variant, ...; the best rep is kept), so a busy machine slows all of them alike. Writes JSON and
prints a markdown table.

    python scripts/bench_overhead.py                   # tiny and small, N = 16, 64 (CPU)
    python scripts/bench_overhead.py --small-sizes 16 --steps 10   # a shorter CPU run
    python scripts/bench_overhead.py --quick           # a smoke run
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxhpo.models import Transformer, TransformerConfig
from jaxhpo.population import Population
from jaxhpo.tasks import LanguageModelTask

MODELS = {
    "tiny": {
        "model": {"num_layers": 1, "num_heads": 2, "d_model": 16, "d_ff": 32},
        "seq_len": 16,
        "batch_size": 4,
    },
    "small": {
        "model": {"num_layers": 2, "num_heads": 4, "d_model": 64, "d_ff": 256},
        "seq_len": 64,
        "batch_size": 32,
    },
}
MODES = ("auto", "map", "vmap", "chunked")


# -- the hand-written sweep (plain JAX + optax + the model) -----------------------------------
def handwritten(task: LanguageModelTask, n: int, steps: int, form: str):
    """``run()`` trains ``n`` members ``steps`` steps from fixed initial states, per-member lr."""
    cfg: TransformerConfig = task.model_config
    graphdef = nnx.graphdef(Transformer(cfg, rngs=nnx.Rngs(0)))
    tx = optax.inject_hyperparams(optax.adamw)(learning_rate=1e-3, weight_decay=0.0)
    corpus, data_key = task.train_data["corpus"], task.train_data["key"]
    B, L = task.batch_size, task.seq_len

    def init_one(key, lr):
        params = nnx.state(Transformer(cfg, rngs=nnx.Rngs(key)), nnx.Param)
        opt = tx.init(params)
        opt.hyperparams["learning_rate"] = lr
        return params, opt

    keys = jax.random.split(jax.random.key(0), n)
    state = jax.jit(jax.vmap(init_one))(keys, jnp.full((n,), 1e-3))

    def batch_at(step):
        starts = jax.random.randint(
            jax.random.fold_in(data_key, step), (B,), 0, len(corpus) - L - 1
        )
        win = jax.vmap(lambda s: jax.lax.dynamic_slice(corpus, (s,), (L + 1,)))(starts)
        win = win.astype(jnp.int32)
        return win[:, :-1], win[:, 1:]

    def loss_fn(params, tokens, targets):
        logits = nnx.merge(graphdef, params)(tokens)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    def step(member, tokens, targets):
        params, opt = member
        grads = jax.grad(loss_fn)(params, tokens, targets)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt

    if form == "vmap":

        def segment(members):
            def body(ms, t):
                return jax.vmap(step, in_axes=(0, None, None))(ms, *batch_at(t)), None

            return jax.lax.scan(body, members, jnp.arange(steps))[0]
    else:

        def segment(members):
            def one(m):
                body = lambda m, t: (step(m, *batch_at(t)), None)  # noqa: E731
                return jax.lax.scan(body, m, jnp.arange(steps))[0]

            return jax.lax.map(one, members)

    f = jax.jit(segment)
    return lambda: jax.block_until_ready(f(state))


def one_big_model(task: LanguageModelTask, n: int, steps: int):
    """One model, batch ``n * B``: the arithmetic of n members in one program (the ceiling)."""
    cfg = task.model_config
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.adamw(1e-3, weight_decay=0.0)
    opt = tx.init(params)
    corpus, data_key = task.train_data["corpus"], task.train_data["key"]
    B, L = task.batch_size * n, task.seq_len

    def body(carry, t):
        params, opt = carry
        starts = jax.random.randint(jax.random.fold_in(data_key, t), (B,), 0, len(corpus) - L - 1)
        win = jax.vmap(lambda s: jax.lax.dynamic_slice(corpus, (s,), (L + 1,)))(starts)
        tokens, targets = win[:, :-1].astype(jnp.int32), win[:, 1:].astype(jnp.int32)

        def loss_fn(p):
            logits = nnx.merge(graphdef, p)(tokens)
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

        grads = jax.grad(loss_fn)(params)
        updates, opt = tx.update(grads, opt, params)
        return (optax.apply_updates(params, updates), opt), None

    f = jax.jit(lambda c: jax.lax.scan(body, c, jnp.arange(steps))[0])
    return lambda: jax.block_until_ready(f((params, opt)))


# -- jaxhpo -----------------------------------------------------------------------------------
def jaxhpo_segment(task, n: int, steps: int, mode: str, specialise: bool, chunk: int):
    fixed = Population.task_defaults(task) if specialise else {}
    popn = Population(task, "adamw", "constant", mode=mode, chunk_size=chunk, fixed=fixed)
    pop = popn.init(jax.random.key(0), np.arange(n), {"lr": np.full(n, 1e-3), "weight_decay": 0.0})
    data = task.train_data
    return popn, lambda: jax.block_until_ready(popn.train_segment(pop, data, steps))


def bench(name: str, spec: dict, sizes: list[int], steps: int, reps: int, chunk: int) -> list:
    task = LanguageModelTask(
        corpus=None,
        max_bytes=500_000,
        seq_len=spec["seq_len"],
        batch_size=spec["batch_size"],
        eval_batches=1,
        model=spec["model"],
    )
    rows = []
    for n in sizes:
        variants = {}
        for mode in MODES:
            popn, fn = jaxhpo_segment(task, n, steps, mode, True, chunk)
            variants[f"jaxhpo {mode}"] = (fn, popn.mode)
        variants["jaxhpo auto generic"] = (
            jaxhpo_segment(task, n, steps, "auto", False, chunk)[1],
            "",
        )
        variants["hand vmap"] = (handwritten(task, n, steps, "vmap"), "vmap")
        variants["hand lax.map"] = (handwritten(task, n, steps, "map"), "map")
        variants["one model N*B"] = (one_big_model(task, n, steps), "")
        first = {}
        for k, (fn, _) in variants.items():
            t = time.perf_counter()
            fn()
            first[k] = time.perf_counter() - t
        best = {k: np.inf for k in variants}
        gc.collect()
        gc.disable()
        try:
            for _ in range(reps):
                for k, (fn, _) in variants.items():
                    t = time.perf_counter()
                    fn()
                    best[k] = min(best[k], time.perf_counter() - t)
        finally:
            gc.enable()
        examples = n * steps * spec["batch_size"]
        hand = max(examples / best["hand vmap"], examples / best["hand lax.map"])
        for k, (_, resolved) in variants.items():
            rate = examples / best[k]
            rows.append(
                {
                    "model": name,
                    "members": n,
                    "variant": k,
                    "resolved_mode": resolved,
                    "examples_per_s": rate,
                    "vs_best_handwritten": rate / hand,
                    "seconds": best[k],
                    "first_call_s": first[k],
                    "steps": steps,
                    "batch_size": spec["batch_size"],
                }
            )
            print(
                f"  {name:5s} N={n:3d} {k:20s} {rate:10.0f} ex/s  x{rate / hand:5.2f}", flush=True
            )
        del variants
        gc.collect()
    return rows


def table(rows: list[dict]) -> str:
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    lines = ["| model | N | " + " | ".join(variants) + " |", "|---|---|" + "---|" * len(variants)]
    by: dict = {}
    for r in rows:
        by.setdefault((r["model"], r["members"]), {})[r["variant"]] = r
    for (model, n), rs in by.items():
        cells = [
            f"{rs[v]['examples_per_s']:,.0f} (x{rs[v]['vs_best_handwritten']:.2f})"
            for v in variants
        ]
        lines.append(f"| {model} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="scripts/results/bench_overhead.json")
    ap.add_argument("--models", default="tiny,small")
    ap.add_argument("--sizes", default="16,64", help="population sizes of the tiny model")
    ap.add_argument("--small-sizes", default="16,64", help="population sizes of the small model")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="tiny, N=4, 5 steps, 1 rep")
    args = ap.parse_args()
    models = args.models.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.quick:
        models, sizes, args.steps, args.reps = ["tiny"], [4], 5, 1
    rows = []
    small = [int(s) for s in args.small_sizes.split(",")]
    for name in models:
        n = small if name == "small" and not args.quick else sizes
        rows += bench(name, MODELS[name], n, args.steps, args.reps, args.chunk)
    out = {
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "machine": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "steps": args.steps,
        "reps": args.reps,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(table(rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
