"""Model-based Hyperband (``bohb``) against Hyperband, random search and the ``dehb`` package.

One simulated task for all four: learning curves of a benchmark function of
``scripts/bench_search.py``, fidelity = steps,

    ``loss(x, t) = f(x) + s (1 + x_0') exp(-3 t / R) + noise(sd 0.05 s exp(-t / R))``

(``s``: the spread of ``f`` over random points, ``x_0'`` the first coordinate in unit
coordinates: some configurations learn slower, so low budgets rank imperfectly). Every method
gets the same member-steps (``--iterations`` Hyperband iterations of ``R`` steps, eta 3,
smallest budget 1 step):

* ``hyperband``: ``bohb`` with ``model: random`` — the brackets of the ``hyperband`` strategy,
  iterated, new members sampled at random;
* ``bohb``: the same brackets, new members from BOHB's density model;
* ``bohb_gp``: the same brackets, new members from ``bo``'s GP at the largest budget with enough
  observations (``model: gp``);
* ``bohb_gp_d1``: ``bohb_gp`` with ``min_points`` D + 1 (BOHB's own default) instead of
  3 (D + 1);
* ``random``: one population of ``budget / R`` random members trained to ``R``;
* ``dehb``: the ``dehb`` package (Awad, Mallik & Hutter 2021, arXiv:2105.09821) on the same
  ``loss(x, t)``, each evaluation costing ``t`` member-steps (DEHB trains each fidelity from
  scratch; the population strategies continue their members).

Reported per function: two targets (the 1% and 0.1% quantiles of the final loss of random
configurations),
and over seeds the median member-steps to first reach it (``inf``: not within the budget) and the
median best loss at the end of the budget.

Usage: ``python scripts/bench_bohb.py [--seeds 10] [--functions hartmann6 branin]`` (writes
``scripts/results/bench_bohb.json``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from jaxhpo.simulate import simulate
from jaxhpo.strategies import BOHB, RandomSearch

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("bench_search", HERE / "bench_search.py")
bench_search = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_search)

R, ETA = 27, 3
QUANTILES = (0.01, 0.001)  # targets: these quantiles of random configurations' final loss


def task(name: str):
    """``(space, fn, loss(hp, t, rng), target)``."""
    space, fn, _ = bench_search.problem(name)
    pts = space.sample(123, 20000)
    f = fn(pts)
    s = float(np.std(f))

    def loss(hp, t, rng):
        x0 = np.asarray(space.to_unit(hp))[..., 0]
        decay = np.exp(-3.0 * np.asarray(t, np.float64) / R)
        noise = 0.05 * s * np.exp(-np.asarray(t, np.float64) / R) * rng.standard_normal(len(x0))
        return fn(hp) + s * (1.0 + x0) * decay + noise

    final = loss(pts, np.full(len(f), R), np.random.default_rng(7))
    return space, fn, loss, {q: float(np.quantile(final, q)) for q in QUANTILES}


def trace_of(anytime, target: float) -> tuple[float, float]:
    """``(member-steps to reach target, best loss at the end)`` from (cost, best) pairs."""
    cost, best = np.asarray(anytime[0], float), np.asarray(anytime[1], float)
    hit = np.flatnonzero(best <= target)
    return (float(cost[hit[0]]) if hit.size else float("inf")), float(best[-1])


def run_population(method: str, space, loss, budget: int, seed: int):
    curve = lambda hp, ids, t, rng: loss(hp, t, rng)  # noqa: E731
    if method == "random":
        res = simulate(
            RandomSearch(), space, curve, steps=R, segment_steps=1, size=budget // R, seed=seed
        )
    else:
        model = {"bohb": "tpe", "bohb_gp": "gp", "bohb_gp_d1": "gp"}.get(method, "random")
        # bohb_gp_d1: the GP from D + 1 observations at a budget (BOHB's own min_points)
        mp = len(space.searched) + 1 if method == "bohb_gp_d1" else None
        strategy = BOHB(eta=ETA, min_steps=1, model=model, max_steps=R, min_points=mp)
        steps = R * (budget // 357 + 1)  # 357 member-steps per iteration at R=27, eta=3
        res = simulate(
            strategy, space, curve, steps=steps, segment_steps=1, seed=seed, budget=budget
        )
    a = res.anytime
    return a["member_steps"].to_numpy(), a["best_loss"].to_numpy()


def run_dehb(space, loss, budget: int, seed: int):
    from ConfigSpace import ConfigurationSpace, UniformFloatHyperparameter
    from dehb import DEHB

    D = len(space.searched)
    cs = ConfigurationSpace(seed=seed)
    cs.add([UniformFloatHyperparameter(f"u{i}", 0.0, 1.0) for i in range(D)])
    rng = np.random.default_rng([seed, 0x51])
    spent, costs, bests = [0.0], [], []

    def f(config, fidelity, **kwargs):
        u = np.array([[config[f"u{i}"] for i in range(D)]])
        hp = space.from_unit(u)
        t = round(float(fidelity))
        val = float(loss(hp, np.array([t]), rng)[0])
        spent[0] += t
        costs.append(spent[0])
        bests.append(min(val, bests[-1]) if bests else val)
        return {"fitness": val, "cost": t}

    with tempfile.TemporaryDirectory() as out:
        opt = DEHB(
            f=f,
            cs=cs,
            dimensions=D,
            min_fidelity=1,
            max_fidelity=R,
            eta=ETA,
            n_workers=1,
            output_path=out,
            seed=seed,
        )
        opt.run(fevals=budget)  # every evaluation costs >= 1 member-step: past the budget
    keep = np.asarray(costs) <= budget
    return np.asarray(costs)[keep], np.asarray(bests)[keep]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--iterations", type=int, default=8)
    p.add_argument("--functions", nargs="+", default=["hartmann6", "branin"])
    p.add_argument("--methods", nargs="+", default=["random", "hyperband", "bohb", "dehb"])
    p.add_argument("--out", type=Path, default=HERE / "results" / "bench_bohb.json")
    args = p.parse_args(argv)
    logging.getLogger("dehb").setLevel(logging.ERROR)
    try:
        from loguru import logger

        logger.remove()
    except ImportError:
        pass
    budget = 357 * args.iterations
    out = {
        "setup": {"R": R, "eta": ETA, "member_steps": budget, "seeds": args.seeds},
        "results": {},
    }
    for name in args.functions:
        space, _, loss, targets = task(name)
        row = {"targets": {str(q): v for q, v in targets.items()}}
        for method in args.methods:
            t0 = time.perf_counter()
            reach, final = {q: [] for q in QUANTILES}, []
            for seed in range(args.seeds):
                if method == "dehb":
                    tr = run_dehb(space, loss, budget, seed)
                else:
                    tr = run_population(method, space, loss, budget, seed)
                for q in QUANTILES:
                    reach[q].append(trace_of(tr, targets[q])[0])
                final.append(trace_of(tr, targets[QUANTILES[0]])[1])
            row[method] = {"final_best_median": float(np.median(final))}
            for q in QUANTILES:
                row[method][f"steps_to_q{q}_median"] = float(np.median(reach[q]))
                row[method][f"reached_q{q}"] = int(np.isfinite(reach[q]).sum())
            brief = dict(row[method])
            row[method]["steps_to_target"] = {str(q): reach[q] for q in QUANTILES}
            row[method]["seconds"] = round(time.perf_counter() - t0, 1)
            print(name, method, brief, flush=True)
        out["results"][name] = row
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
