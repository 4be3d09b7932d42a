"""Multi-objective searchers side by side (issue 27): ZDT1, ZDT2, ZDT3 (2 objectives) and DTLZ2
(3 objectives) from pymoo, driven through :func:`jaxhpo.simulate.simulate` at equal evaluations.

Batch regime: ``--generations`` x ``--size`` members (default 10 x 16 = 160 evaluations); random
search draws all 160 at once. Score: the hypervolume of every evaluated point over the true
front's (pymoo ``pareto_front()``; DTLZ2's exactly ``1.1^3 - pi/6``), one reference point per
problem: the true front's nadir + 0.1 in every objective. Input dimensions reduced to what runs
fast on a CPU (ZDT: ``--zdt-dims``, DTLZ2: ``--dtlz-dims``).

    python scripts/bench_multiobjective.py --seeds 10    # JSON + .md under scripts/results/
    python scripts/bench_multiobjective.py --generations 60 --size 1 \
        --searchers random,bo,optuna_nsga2,optuna_tpe \
        --out scripts/results/bench_multiobjective_seq.json   # the sequential regime
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from pymoo.problems import get_problem

from jaxhpo import pareto
from jaxhpo.objectives import parse_objectives
from jaxhpo.simulate import simulate
from jaxhpo.space import Float, Space
from jaxhpo.strategies.bo import BayesOpt
from jaxhpo.strategies.evo import EvoSearch
from jaxhpo.strategies.nsga2 import NSGA2
from jaxhpo.strategies.optuna_search import OptunaSearch
from jaxhpo.strategies.search import RandomSearch

OUT = Path(__file__).parent / "results" / "bench_multiobjective.json"
SEARCHERS = {
    "random": lambda: RandomSearch(),
    "nsga2": lambda: NSGA2(),
    "evo": lambda: EvoSearch(),  # CMA-ES groups, each on its own Chebyshev weights
    "bo": lambda: BayesOpt(),  # hypervolume improvement of per-objective Thompson draws
    "bo_parego": lambda: BayesOpt(multi_objective="parego"),
    "optuna_nsga2": lambda: OptunaSearch(sampler="nsga2"),
    "optuna_tpe": lambda: OptunaSearch(sampler="tpe"),
}


def problem(name: str, zdt_dims: int, dtlz_dims: int):
    """``(pymoo problem, space, objectives, reference, true hypervolume)``."""
    if name == "dtlz2":
        prob = get_problem("dtlz2", n_var=dtlz_dims, n_obj=3)
        ref = np.full(3, 1.1)
        true = 1.1**3 - np.pi / 6  # the unit sphere's positive octant removed from the box
    else:
        prob = get_problem(name, n_var=zdt_dims)
        try:
            front = prob.pareto_front(n_pareto_points=2000)
        except TypeError:  # ZDT3 takes its own point count
            front = prob.pareto_front()
        ref = front.max(axis=0) + 0.1
        true = pareto.hypervolume(front, ref)
    D, M = prob.n_var, prob.n_obj
    space = Space({f"x{i}": Float(float(prob.xl[i]), float(prob.xu[i])) for i in range(D)})
    objectives = parse_objectives({f"f{j}": "min" for j in range(M)})
    return prob, space, objectives, ref, float(true)


def one(prob, space, objectives, ref, searcher: str, seed: int, generations: int, size: int):
    D = prob.n_var

    def curve(hp, ids, t, rng):
        F = prob.evaluate(np.stack([hp[f"x{i}"] for i in range(D)], axis=1))
        return {f"f{j}": F[:, j] for j in range(F.shape[1])}

    steps, P = (1, generations * size) if searcher == "random" else (generations, size)
    res = simulate(
        SEARCHERS[searcher](), space, curve, steps=steps, segment_steps=1, size=P, seed=seed,
        objectives=objectives, reference=ref,
    )  # fmt: skip
    assert res.member_steps == generations * size
    return res.hypervolume


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--generations", type=int, default=10)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--zdt-dims", type=int, default=3)
    ap.add_argument("--dtlz-dims", type=int, default=5)
    ap.add_argument("--problems", default="zdt1,zdt2,zdt3,dtlz2")
    ap.add_argument("--searchers", default=",".join(SEARCHERS))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument(
        "--merge", action="store_true", help="keep --out's other searchers (same settings)"
    )
    args = ap.parse_args()
    old = json.loads(args.out.read_text()) if args.merge and args.out.exists() else None
    results = {
        "regime": f"sequential: {args.generations} evaluations one after another"
        if args.size == 1
        else f"batch: {args.generations} generations x {args.size} members",
        "evaluations": args.generations * args.size,
        "seeds": args.seeds,
        "zdt_dims": args.zdt_dims,
        "dtlz_dims": args.dtlz_dims,
        "reference": "true front's nadir + 0.1 per objective",
        "problems": {},
    }
    for name in args.problems.split(","):
        prob, space, objectives, ref, true = problem(name, args.zdt_dims, args.dtlz_dims)
        entry = {"reference": ref.tolist(), "true_hypervolume": true, "searchers": {}}
        if old and name in old["problems"]:
            entry["searchers"] = dict(old["problems"][name]["searchers"])
        for searcher in args.searchers.split(","):
            t0 = time.perf_counter()
            hv = [
                one(prob, space, objectives, ref, searcher, s, args.generations, args.size)
                for s in range(args.seeds)
            ]
            ratio = [h / true for h in hv]
            entry["searchers"][searcher] = {
                "ratio": ratio,
                "median_ratio": float(np.median(ratio)),
                "median_regret": float(np.median(1 - np.asarray(ratio))),
                "seeds": args.seeds,
                "seconds": round(time.perf_counter() - t0, 1),
            }
            print(name, searcher, f"median ratio {np.median(ratio):.3f}", flush=True)
        results["problems"][name] = entry
        if old:  # problems not run this time keep their rows
            results["problems"] = {**old["problems"], **results["problems"]}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))  # after each problem
        args.out.with_suffix(".md").write_text(table(results))
    print(table(results))


def table(results: dict) -> str:
    """A markdown table: median hypervolume ratio (to the true front's) per problem; a column
    run with fewer seeds than the study says so in its header; a missing cell is "-"."""
    names: list[str] = []
    for entry in results["problems"].values():
        names += [n for n in entry["searchers"] if n not in names]
    seeds = results["seeds"]

    def header(n: str) -> str:
        counts = {
            e["searchers"][n].get("seeds", seeds)
            for e in results["problems"].values()
            if n in e["searchers"]
        }
        return n if counts == {seeds} else f"{n} ({'/'.join(map(str, sorted(counts)))} seeds)"

    lines = [
        f"Hypervolume ratio to the true front's, median over {seeds} seeds "
        f"({results['regime']}, {results['evaluations']} evaluations; ZDT in "
        f"{results['zdt_dims']} dims, DTLZ2 in {results['dtlz_dims']} dims, reference "
        f"{results['reference']}). Higher is better.",
        "",
        "| problem | " + " | ".join(header(n) for n in names) + " |",
        "| --- |" + " --- |" * len(names),
    ]
    for problem_name, entry in results["problems"].items():
        got = entry["searchers"]
        cells = [f"{got[n]['median_ratio']:.3f}" if n in got else "-" for n in names]
        lines.append(f"| {problem_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
