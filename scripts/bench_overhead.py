"""jaxhpo's population step against the best hand-written JAX for the same model, side by side.

The regression benchmark of the member step (issue 30). In ONE process, for each model and
population size N, training examples per second of

* ``run path``: ``Population.train_segment`` (K steps, one jitted call) built as ``jaxhpo run``
  builds it (``mode=auto``; ``searched=`` the space's names, ``fixed=`` what the space leaves
  out, :func:`jaxhpo.run.prepare.fixed_task_hparams`), with a space of ``lr`` only;
* ``Population()``: a population built the way research code builds it, with no arguments but
  the task, optimizer and schedule (``mode=auto``, specialised by default);
* optionally (``--generic``) ``generic``: ``Population(..., specialise=False)``, every task
  hyperparameter a per-member array (what a default ``Population`` was before issue 30), and
  (``--modes``) each member mode named explicitly;
* a hand-written sweep kept in this file, with no jaxhpo code on its training path: the same
  Transformer, ``optax.inject_hyperparams(optax.adamw)`` with a per-member learning rate, the
  same batch draw, ``jit(scan(vmap(step)))`` and ``jit(lax.map(scan(step)))``;
* one model trained with batch N x B (the same arithmetic as N members, one program): the
  ceiling.

Every variant is compiled first, then timed in turns (rep 1 of every variant, rep 2 of every
variant, ...; the best rep is kept), so a busy machine slows all of them alike. Ratios are
against the faster hand-written sweep (``vs_best_handwritten``) and the ceiling
(``vs_ceiling``). Writes JSON (``scripts/results/bench_overhead_<backend>.json`` by default)
and prints a markdown table.

    python scripts/bench_overhead.py                          # tiny and small, N = 8, 16, 64
    python scripts/bench_overhead.py --small-sizes 8,16 --steps 4 --reps 2   # a shorter run
    python scripts/bench_overhead.py --quick                  # a smoke run (tiny, N=4)
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
import optax
from flax import nnx

from jaxhpo.models import Transformer, TransformerConfig
from jaxhpo.population import Population
from jaxhpo.run.prepare import fixed_task_hparams
from jaxhpo.space import Space
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
MODES = ("map", "vmap", "chunked")


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
def jaxhpo_population(task: LanguageModelTask, variant: str, chunk: int) -> Population:
    """The population of one jaxhpo variant (see the module docstring)."""
    if variant == "run path":
        space = Space.from_config({"lr": "loguniform(1e-4, 1e-2)"})
        return Population(
            task,
            "adamw",
            "constant",
            mode="auto",
            chunk_size=chunk,
            searched=space.names,
            fixed=fixed_task_hparams(task, space),
        )
    if variant == "Population()":
        return Population(task, "adamw", "constant")
    if variant == "generic":
        return Population(task, "adamw", "constant", specialise=False)
    mode = variant.removeprefix("mode ")
    return Population(task, "adamw", "constant", mode=mode, chunk_size=chunk, searched=("lr",))


def jaxhpo_segment(task: LanguageModelTask, n: int, steps: int, variant: str, chunk: int):
    popn = jaxhpo_population(task, variant, chunk)
    pop = popn.init(jax.random.key(0), np.arange(n), {"lr": np.full(n, 1e-3), "weight_decay": 0.0})
    data = task.train_data
    return popn, lambda: jax.block_until_ready(popn.train_segment(pop, data, steps))


def _time(variants: dict, reps: int) -> tuple[dict, dict]:
    """First call (compile + run) and best of ``reps`` interleaved calls of each variant."""
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
    return first, best


def make_task(spec: dict) -> LanguageModelTask:
    return LanguageModelTask(
        corpus=None,
        max_bytes=500_000,
        seq_len=spec["seq_len"],
        batch_size=spec["batch_size"],
        eval_batches=1,
        model=spec["model"],
    )


def bench(name: str, spec: dict, sizes: list[int], args: argparse.Namespace) -> list[dict]:
    task = make_task(spec)
    names = ["run path", "Population()"]
    names += ["generic"] if args.generic else []
    names += [f"mode {m}" for m in MODES] if args.modes else []
    rows = []
    for n in sizes:
        variants = {}
        for v in names:
            popn, fn = jaxhpo_segment(task, n, args.steps, v, args.chunk)
            variants[v] = (fn, f"{popn.mode} ({popn.mode_reason})")
        variants["hand vmap"] = (handwritten(task, n, args.steps, "vmap"), "vmap")
        variants["hand lax.map"] = (handwritten(task, n, args.steps, "map"), "map")
        variants["one model N*B"] = (one_big_model(task, n, args.steps), "")
        first, best = _time(variants, args.reps)
        examples = n * args.steps * spec["batch_size"]
        hand = max(examples / best["hand vmap"], examples / best["hand lax.map"])
        ceiling = examples / best["one model N*B"]
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
                    "vs_ceiling": rate / ceiling,
                    "seconds": best[k],
                    "first_call_s": first[k],
                    "steps": args.steps,
                    "batch_size": spec["batch_size"],
                }
            )
            print(
                f"  {name:5s} N={n:3d} {k:14s} {rate:10.0f} ex/s  x{rate / hand:5.2f} of hand, "
                f"x{rate / ceiling:5.2f} of ceiling",
                flush=True,
            )
        del variants
        gc.collect()
    return rows


def table(rows: list[dict]) -> str:
    """One line per model and N: each jaxhpo variant against the best hand-written sweep."""
    variants = dict.fromkeys(r["variant"] for r in rows)
    ours = [v for v in variants if not v.startswith(("hand", "one"))]
    head = ["model", "N", "best hand-written ex/s", *(f"{v} x hand" for v in ours)]
    head += ["run path x ceiling", "hand x ceiling"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by: dict = {}
    for r in rows:
        by.setdefault((r["model"], r["members"]), {})[r["variant"]] = r
    for (model, n), rs in by.items():
        hand = max(rs["hand vmap"], rs["hand lax.map"], key=lambda r: r["examples_per_s"])
        cells = [model, str(n), f"{hand['examples_per_s']:,.0f} ({hand['variant']})"]
        cells += [f"{rs[v]['vs_best_handwritten']:.2f}" for v in ours]
        cells += [f"{rs['run path']['vs_ceiling']:.2f}", f"{hand['vs_ceiling']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="JSON path (default: by backend)")
    ap.add_argument("--models", default="tiny,small")
    ap.add_argument("--sizes", default="8,16,64", help="population sizes of the tiny model")
    ap.add_argument("--small-sizes", default="8,16,64", help="population sizes of the small model")
    ap.add_argument("--steps", type=int, default=10, help="steps per timed segment")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--generic", action="store_true", help="also the generic step")
    ap.add_argument("--modes", action="store_true", help="also each member mode named")
    ap.add_argument("--quick", action="store_true", help="tiny, N=4, 3 steps, 1 rep")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    models = args.models.split(",")
    sizes = {"tiny": [int(s) for s in args.sizes.split(",")]}
    sizes["small"] = [int(s) for s in args.small_sizes.split(",")]
    if args.quick:
        models, sizes["tiny"], args.steps, args.reps = ["tiny"], [4], 3, 1
    t0 = time.perf_counter()
    rows = []
    for name in models:
        rows += bench(name, MODELS[name], sizes.get(name, sizes["tiny"]), args)
    out = {
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "args": vars(args),
        "wall_s": time.perf_counter() - t0,
        "rows": rows,
        "table": table(rows),
    }
    path = Path(args.out or f"scripts/results/bench_overhead_{jax.default_backend()}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(out["table"])
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
