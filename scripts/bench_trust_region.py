"""bo with and without its TuRBO-style trust region (``strategy.bo_trust_region``) on 10-D analytic
functions, beside random search at equal evaluations: median and p90 regret over seeds, one JSON.

Each strategy is driven through ``init``/``update`` by :func:`jaxhpo.simulate.simulate` on a
"learning curve" that is the function of the hyperparameters (no training); ``G`` generations of
``P`` members (random search: all ``G * P`` at once). Usage::

    python scripts/bench_trust_region.py --functions styblinski10 --seeds 10 \
        --out scripts/results/bench_trust_region_styblinski10.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

from jaxhpo.simulate import simulate
from jaxhpo.space import Float, Space
from jaxhpo.strategies import BayesOpt, RandomSearch


def _ackley(x):
    d = x.shape[0]
    a = -20 * np.exp(-0.2 * np.sqrt(np.sum(x**2, axis=0) / d))
    return a - np.exp(np.sum(np.cos(2 * math.pi * x), axis=0) / d) + 20 + math.e


def _levy(x):
    w = 1 + (x - 1) / 4
    head = np.sin(math.pi * w[0]) ** 2
    mid = np.sum((w[:-1] - 1) ** 2 * (1 + 10 * np.sin(math.pi * w[:-1] + 1) ** 2), axis=0)
    return head + mid + (w[-1] - 1) ** 2 * (1 + np.sin(2 * math.pi * w[-1]) ** 2)


def _styblinski(x):
    return 0.5 * np.sum(x**4 - 16 * x**2 + 5 * x, axis=0)


#: name -> (function of x [D, M], bounds, dimensions, minimum)
SUITE = {
    "ackley10": (_ackley, (-32.768, 32.768), 10, 0.0),
    "levy10": (_levy, (-10.0, 10.0), 10, 0.0),
    "styblinski10": (_styblinski, (-5.0, 5.0), 10, -39.16616570377142 * 10),
}

METHODS = {
    "random": lambda: RandomSearch(),
    "bo": lambda: BayesOpt(),
    "bo_tr": lambda: BayesOpt(trust_region=True),
}


def regret(method: str, name: str, G: int, P: int, seed: int) -> float:
    f, (lo, hi), D, fmin = SUITE[name]
    space = Space({f"x{i}": Float(lo, hi) for i in range(D)})
    if method == "random":
        G, P = 1, G * P

    def curve(hp, ids, t, rng):
        return f(np.stack([np.asarray(hp[f"x{i}"], np.float64) for i in range(D)]))

    r = simulate(METHODS[method](), space, curve, steps=G, segment_steps=1, size=P, seed=seed)
    return float(r.best_loss - fmin)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--functions", default=",".join(SUITE))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--generations", type=int, default=5)
    ap.add_argument("--size", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=10)
    args = ap.parse_args()
    out = {
        "meta": {
            "generations": args.generations,
            "size": args.size,
            "seeds": list(range(args.seeds)),
            "host": platform.node(),
            "python": sys.version.split()[0],
        },
        "results": {},
    }
    for name in args.functions.split(","):
        t0, rs = time.time(), {m: [] for m in args.methods.split(",")}
        for s in range(args.seeds):  # seeds outer: a cut-short run compares the same seeds
            for method, got in rs.items():
                got.append(regret(method, name, args.generations, args.size, s))
                out["results"][name] = {
                    m: {
                        "median": float(np.median(v)),
                        "p90": float(np.percentile(v, 90)),
                        "regrets": v,
                    }
                    for m, v in rs.items()
                    if v
                }
                out["results"][name]["seconds"] = round(time.time() - t0, 1)
                Path(args.out).write_text(json.dumps(out, indent=1))  # partial results survive
            print(name, s, {m: round(v[-1], 4) for m, v in rs.items()}, flush=True)


if __name__ == "__main__":
    main()
