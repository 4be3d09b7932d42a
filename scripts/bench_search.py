"""Search quality on analytic functions: median and p90 regret over seeds of bo, Optuna TPE (in
its batch settings), evo CMA-ES and random search at equal evaluations, side by side in one run.

Each strategy is driven through its ``init``/``update`` by :func:`jaxhpo.simulate.simulate` on a
"learning curve" that is the function of the hyperparameters (no training), in three regimes:
``seq`` (one member per generation), ``batch`` (``--generations`` x ``--size``, 5 x 10) and
``wide`` (``--wide-generations`` x ``--wide-size``, 4 x 16); ``--regimes 3x64`` names any other
(3 generations of 64). Regret is the
best value found minus the function's minimum. ``bo_before`` is bo as it was before issue 17 (the
GP fit warm-started from the previous generation only, the best of a fixed candidate set);
``tpe_noliar`` is Optuna's TPE without ``constant_liar``; ``tpe_mv`` adds ``multivariate`` and
``group``; ``bo_local`` refines every draw by local search whatever the dimension (bo's default
does so in 1-3 dimensions only); ``bo_tr`` adds the TuRBO-style trust region
(``strategy.trust_region``); ``bo_noinit`` has no initial design after the first generation
(``strategy.initial=1``); these three on bo's settings before issue 29 (``PRE29``), and
``bo_pre29`` is bo's default before issue 29 (no warp, no greedy member). Issue 29's remedies in
5-10 dimensions, one at a time: ``bo_log`` / ``bo_rank`` warp the fitness before the GP
standardises it (``strategy.warp``); ``bo_log_greedy`` (bo's default since) adds a member at the
posterior mean's best candidate (``strategy.greedy``), ``bo_log_g1s`` refines it by projected
Adam on the mean (``strategy.greedy_steps``), ``bo_log_g2`` two such members; ``bo_log_box``
proposes in a fixed box of side 0.8 around the incumbent in 5+ dimensions
(``strategy.local_box``); ``bo_log_fb`` proposes by a population step while the fit explains
fewer than 2 nats over noise (``strategy.fallback_nats``); ``bo_log_g1c`` has 1024 candidates.
The exploratory rows (3-5 seeds, regime ``5x10``) are in bench_search_issue29.json. Issue 29's
second round (the same file, 5 seeds, regimes ``seq`` and ``5x8``): ``bo_seq_log`` the log warp
with one member per generation (10 seeds; bo's default there keeps the raw values),
``bo_seq_*e2`` / ``e3`` the posterior mean's best candidate every 2nd / 3rd
generation (``strategy.greedy_every``); ``bo_i1*`` no Sobol generation after the first
(``strategy.initial=1``; bo's default design of D + 1 takes two generations of 8 in 10
dimensions), with the trust region (``_tr``), the
SAAS-like length-scale prior (``_saas``, ``strategy.ls_prior``), the additive kernel (``_add``,
``strategy.kernel``; ``_add_sharedls``: an earlier form sharing the ARD length scales) and local
search of every draw (``_ls``); ``bo_g4`` 4 greedy members (3x64: 5 seeds; wide: 10 seeds,
in bench_search_wide.json); third round (bench_search_input_warp.json, 10 seeds): ``bo_iw``
learned input warping (``strategy.input_warp``), ``bo_i1_iw`` with ``initial: 1``; fourth
round (bench_search_ei.json, 10 seeds): ``bo_ei`` log expected improvement's maximiser as the
first member (``strategy.acquisition=ei``; bo's default with one member per generation since,
where it takes the log warp from 4 dimensions), ``bo_ei_g0`` in place of the greedy member,
``bo_ei_raw`` without the output warp, ``bo_ei_log`` / ``_iw`` / ``_add`` / ``_saas`` with the
log warp and then input warping, the
additive kernel, the SAAS-like prior; ``bo_seq_ts`` bo's one-member default before (one
Thompson draw, raw values); ``bo_no_iw`` bo without the input warp it learns by default since
from 16 members per generation in 4+ dimensions. Fifth round (bench_search_trust_region.json,
bench_search_prior_mean.json): ``bo_tr_now`` the trust region on bo's defaults (the default
since for one member per generation in 7+ dimensions), ``bo_mfit`` / ``bo_mmax`` the GP's
constant prior mean fitted / at the worst observation (``strategy.prior_mean``), ``bo_raw`` bo
without the log warp, ``bo_gs`` bo with the greedy member refined, ``bo_c1k`` 1024 candidates;
``bo_iso`` one shared length scale and ``bo_lsauto`` shared or ARD by BIC
(``strategy.length_scales``; bench_search_length_scales.json, bo's default since in 4+ dims:
the standard files' rows before it are ``bo_ard``). Further
baselines: ``optuna_gp`` (Optuna's ``GPSampler`` through ``OptunaSearch``) and ``hebo`` (HEBO,
its own ask/tell loop; not a dependency of the project: ``pip install --no-deps hebo
disjoint-set`` then ``pip install torch gpytorch``; its metadata pins ``numpy<1.25`` but it runs
with numpy 2, and ``--no-deps`` keeps pip from downgrading numpy). ``--update`` replaces rows of
an existing ``--out`` file and keeps the others. Usage::

    python scripts/bench_search.py --out scripts/results/bench_search_cpu.json \
        --functions quad2,branin --methods random,bo,bo_before --seeds 10
    python scripts/bench_search.py --out scripts/results/bench_search_10d.json --regimes 5x8 \
        --functions styblinski10,levy10,ackley10 --methods random,bo,bo_local,bo_tr
    python scripts/bench_search.py --out scripts/results/bench_search_batch.json --update \
        --functions levy5,rosenbrock5,styblinski8,ackley5 --regimes batch \
        --methods bo,bo_log_g1s,optuna_gp,hebo --seeds 5
    python scripts/bench_search.py --table scripts/results/bench_search_*.json \
        --methods random,tpe,cma_es,bo
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from jaxhpo.simulate import simulate
from jaxhpo.space import Float, Space
from jaxhpo.strategies import BayesOpt, EvoSearch, OptunaSearch, RandomSearch

warnings.filterwarnings("ignore", message=".*experimental feature.*")  # Optuna's `group`

_H3_A = np.array([[3.0, 10, 30], [0.1, 10, 35], [3.0, 10, 30], [0.1, 10, 35]])
_H3_P = 1e-4 * np.array(
    [[3689, 1170, 2673], [4699, 4387, 7470], [1091, 8732, 5547], [381, 5743, 8828]]
)
_H6_A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
_H6_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)
_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def _hartmann(A, Pm):
    def f(x):  # x [D, M]
        inner = np.sum(A[:, :, None] * (x[None] - Pm[:, :, None]) ** 2, axis=1)
        return -np.sum(_ALPHA[:, None] * np.exp(-inner), axis=0)

    return f


def _branin(x):
    x1, x2 = x
    b, c = 5.1 / (4 * math.pi**2), 5 / math.pi
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) * np.cos(x1) + 10


def _levy(x):
    w = 1 + (x - 1) / 4
    head = np.sin(math.pi * w[0]) ** 2
    mid = np.sum((w[:-1] - 1) ** 2 * (1 + 10 * np.sin(math.pi * w[:-1] + 1) ** 2), axis=0)
    tail = (w[-1] - 1) ** 2 * (1 + np.sin(2 * math.pi * w[-1]) ** 2)
    return head + mid + tail


def _ackley(x):
    d = x.shape[0]
    a = -20 * np.exp(-0.2 * np.sqrt(np.sum(x**2, axis=0) / d))
    return a - np.exp(np.sum(np.cos(2 * math.pi * x), axis=0) / d) + 20 + math.e


def _rosenbrock(x):
    return np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2, axis=0)


def _styblinski(x):
    return 0.5 * np.sum(x**4 - 16 * x**2 + 5 * x, axis=0)


#: name -> (function of x [D, M], bounds per dimension, dimensions, minimum)
SUITE = {
    "quad2": (lambda x: np.sum(x**2, axis=0), (-5.0, 5.0), 2, 0.0),
    "branin": (_branin, [(-5.0, 10.0), (0.0, 15.0)], 2, 0.397887357729738),
    "hartmann3": (_hartmann(_H3_A, _H3_P), (0.0, 1.0), 3, -3.86278214782076),
    "hartmann6": (_hartmann(_H6_A, _H6_P), (0.0, 1.0), 6, -3.32236801141551),
    "levy5": (_levy, (-10.0, 10.0), 5, 0.0),
    "ackley5": (_ackley, (-32.768, 32.768), 5, 0.0),
    "rosenbrock5": (_rosenbrock, (-5.0, 10.0), 5, 0.0),
    "styblinski8": (_styblinski, (-5.0, 5.0), 8, -39.16616570377142 * 8),
    # beyond the standard suite: 10 dimensions, where the trust region is meant to help
    "styblinski10": (_styblinski, (-5.0, 5.0), 10, -39.16616570377142 * 10),
    "levy10": (_levy, (-10.0, 10.0), 10, 0.0),
    "ackley10": (_ackley, (-32.768, 32.768), 10, 0.0),
    # the Hyperoptax table's domains (its tests/benchmarks.py): Ackley on [-5, 5]^5, Rosenbrock on
    # [-2, 2]^5, where its BO scores 2.39 / 169.5 (scripts/results/bench_search_hyperoptax.json)
    "ackley5_hx": (_ackley, (-5.0, 5.0), 5, 0.0),
    "rosenbrock5_hx": (_rosenbrock, (-2.0, 2.0), 5, 0.0),
}
STANDARD = (
    "quad2",
    "branin",
    "hartmann3",
    "hartmann6",
    "levy5",
    "ackley5",
    "rosenbrock5",
    "styblinski8",
)

#: bo's settings before issue 29: the variants measured on them name them (reproducible rows)
PRE29 = {"warp": "none", "greedy": 0}

METHODS = {
    "random": lambda: RandomSearch(),
    "bo": lambda: BayesOpt(),
    "bo_pre29": lambda: BayesOpt(**PRE29),  # bo's default before issue 29
    "bo_before": lambda: BayesOpt(restart=False, local_steps=0, initial=1, **PRE29),
    "bo_local": lambda: BayesOpt(local_steps=50, **PRE29),  # the local search in every dimension
    "bo_tr": lambda: BayesOpt(trust_region=True, **PRE29),
    "bo_noinit": lambda: BayesOpt(initial=1, **PRE29),  # the GP proposes from the 2nd evaluation
    # issue 29's remedies, one at a time and combined
    "bo_log": lambda: BayesOpt(warp="log", greedy=0),
    "bo_rank": lambda: BayesOpt(warp="rank", greedy=0),
    "bo_tr_rank": lambda: BayesOpt(trust_region=True, warp="rank", greedy=0),
    "bo_log_tr": lambda: BayesOpt(trust_region=True, warp="log", greedy=0),
    "bo_log_box": lambda: BayesOpt(warp="log", greedy=0, local_box=0.8),
    "bo_log_fb": lambda: BayesOpt(warp="log", greedy=0, fallback_nats=2.0),
    "bo_log_greedy": lambda: BayesOpt(warp="log", greedy=1),  # bo's default since issue 29
    "bo_log_g2": lambda: BayesOpt(warp="log", greedy=2),
    "bo_log_g1c": lambda: BayesOpt(warp="log", greedy=1, candidates=1024),
    "bo_rank_g1": lambda: BayesOpt(warp="rank", greedy=1),
    "bo_log_g1s": lambda: BayesOpt(warp="log", greedy=1, greedy_steps=100),
    "bo_g1s": lambda: BayesOpt(warp="none", greedy=1, greedy_steps=100),
    "bo_rank_g1s": lambda: BayesOpt(warp="rank", greedy=1, greedy_steps=100),
    "bo_log_g1s_box": lambda: BayesOpt(warp="log", greedy=1, greedy_steps=100, local_box=0.8),
    "bo_log_g1s_fb": lambda: BayesOpt(warp="log", greedy=1, greedy_steps=100, fallback_nats=2.0),
    # issue 29, second round: one member per generation (seq) and 10 dimensions at 5 x 8
    "bo_seq_log": lambda: BayesOpt(warp="log"),
    "bo_seq_log_e2": lambda: BayesOpt(warp="log", greedy_every=2),
    "bo_seq_log_e3": lambda: BayesOpt(warp="log", greedy_every=3),
    "bo_seq_e2": lambda: BayesOpt(greedy_every=2),
    "bo_seq_log_e2s": lambda: BayesOpt(warp="log", greedy_every=2, greedy_steps=100),
    "bo_i1": lambda: BayesOpt(initial=1),
    "bo_i1_tr": lambda: BayesOpt(initial=1, trust_region=True),
    "bo_i1_box": lambda: BayesOpt(initial=1, local_box=0.8),
    "bo_i1_g1s": lambda: BayesOpt(initial=1, greedy_steps=100),
    "bo_saas": lambda: BayesOpt(ls_prior="saas"),
    "bo_i1_saas": lambda: BayesOpt(initial=1, ls_prior="saas"),
    "bo_add": lambda: BayesOpt(kernel="additive"),
    "bo_i1_add": lambda: BayesOpt(initial=1, kernel="additive"),
    "bo_seq_log_add": lambda: BayesOpt(warp="log", kernel="additive"),
    "bo_seq_log_saas": lambda: BayesOpt(warp="log", ls_prior="saas"),
    "bo_i1_add_saas": lambda: BayesOpt(initial=1, kernel="additive", ls_prior="saas"),
    "bo_seq_log_add_ls": lambda: BayesOpt(warp="log", kernel="additive", local_steps=50),
    "bo_i1_add_ls": lambda: BayesOpt(initial=1, kernel="additive", local_steps=50),
    "bo_add_ls": lambda: BayesOpt(kernel="additive", local_steps=50),
    "bo_g4": lambda: BayesOpt(greedy=4),  # wide / 3x64: 4 greedy members of 16 / 64
    # issue 29, third round: Kumaraswamy input warping learned with the GP (strategy.input_warp)
    "bo_iw": lambda: BayesOpt(input_warp=True),
    "bo_no_iw": lambda: BayesOpt(input_warp=False),  # bo before auto_input_warp (16+ members)
    "bo_i1_iw": lambda: BayesOpt(initial=1, input_warp=True),
    # issue 29, fourth round: log expected improvement's maximiser as the first member
    "bo_seq_ts": lambda: BayesOpt(acquisition="thompson"),  # one member: bo before log EI
    "bo_ei": lambda: BayesOpt(acquisition="ei"),
    "bo_ei_g0": lambda: BayesOpt(acquisition="ei", greedy=0),
    "bo_ei_raw": lambda: BayesOpt(acquisition="ei", warp="none"),
    "bo_ei_log": lambda: BayesOpt(acquisition="ei", warp="log"),
    "bo_ei_iw": lambda: BayesOpt(acquisition="ei", input_warp=True),
    "bo_ei_log_iw": lambda: BayesOpt(acquisition="ei", warp="log", input_warp=True),
    "bo_ei_log_add": lambda: BayesOpt(acquisition="ei", warp="log", kernel="additive"),
    "bo_ei_log_saas": lambda: BayesOpt(acquisition="ei", warp="log", ls_prior="saas"),
    # issue 29, fifth round: the trust region on bo's current defaults
    "bo_tr_now": lambda: BayesOpt(trust_region=True),
    "bo_mfit": lambda: BayesOpt(prior_mean="fit"),
    "bo_mmax": lambda: BayesOpt(prior_mean="max"),
    "bo_raw": lambda: BayesOpt(warp="none"),  # the greedy member without the log warp
    "bo_gs": lambda: BayesOpt(greedy_steps=100),  # bo's defaults, the greedy member refined
    "bo_c1k": lambda: BayesOpt(candidates=1024),
    "bo_iso": lambda: BayesOpt(length_scales="shared"),
    "bo_lsauto": lambda: BayesOpt(length_scales="auto"),
    "bo_ard": lambda: BayesOpt(length_scales="ard"),  # bo before length_scales' default
    "tpe": lambda: OptunaSearch(sampler="tpe"),
    "tpe_noliar": lambda: OptunaSearch(sampler="tpe", sampler_options={"constant_liar": False}),
    "tpe_mv": lambda: OptunaSearch(
        sampler="tpe", sampler_options={"multivariate": True, "group": True}
    ),
    "cma_es": lambda: EvoSearch(algorithm="cma_es"),
    "optuna_gp": lambda: OptunaSearch(sampler="gp"),
}

#: Baselines driven by their own ask/tell loop (not jaxhpo strategies): ``G`` suggestions of ``S``.
EXTERNAL = ("hebo",)


def hebo_best(name: str, generations: int, size: int, seed: int) -> float:
    """HEBO (Cowen-Rivers et al. 2022, the ``hebo`` package, its defaults: GP with input and
    output warping, the MACE acquisition's Pareto front) asked for ``size`` points per
    generation; returns the best value found. HEBO draws from numpy's and torch's global
    generators: both are seeded here."""
    import torch
    from hebo.design_space.design_space import DesignSpace
    from hebo.optimizers.hebo import HEBO

    f, bounds, D, _ = SUITE[name]
    bounds = bounds if isinstance(bounds, list) else [bounds] * D
    np.random.seed(seed)
    torch.manual_seed(seed)
    space = DesignSpace().parse(
        [{"name": f"x{i}", "type": "num", "lb": lo, "ub": hi} for i, (lo, hi) in enumerate(bounds)]
    )
    opt = HEBO(space, scramble_seed=seed)
    best = np.inf
    for _ in range(generations):
        rec = opt.suggest(n_suggestions=size)
        y = f(np.stack([rec[f"x{i}"].to_numpy(np.float64) for i in range(D)]))
        opt.observe(rec, np.asarray(y, np.float64)[:, None])
        best = min(best, float(np.min(y)))
    return best


def problem(name: str):
    """``(space, fn, minimum)`` of a suite function; ``fn`` takes a dict of columns."""
    f, bounds, D, fmin = SUITE[name]
    bounds = bounds if isinstance(bounds, list) else [bounds] * D
    space = Space({f"x{i}": Float(lo, hi) for i, (lo, hi) in enumerate(bounds)})
    return (
        space,
        (lambda hp: f(np.stack([np.asarray(hp[f"x{i}"], np.float64) for i in range(D)]))),
        fmin,
    )


def regret(method: str, name: str, generations: int, size: int, seed: int) -> float:
    space, fn, fmin = problem(name)
    if method == "hebo":
        return hebo_best(name, generations, size, seed) - fmin
    if method == "random":  # every evaluation in one generation
        generations, size = 1, generations * size
    r = simulate(
        METHODS[method](),
        space,
        lambda hp, ids, t, rng: fn(hp),
        steps=generations,
        segment_steps=1,
        size=size,
        seed=seed,
    )
    return float(r.best_loss - fmin)


def run(args) -> dict:
    regimes = {
        "seq": (args.evaluations, 1),
        "batch": (args.generations, args.size),
        "wide": (args.wide_generations, args.wide_size),
    }
    out = {
        "meta": {
            "seeds": list(range(args.seeds)),
            "regimes": {k: {"generations": g, "size": s} for k, (g, s) in regimes.items()},
            "host": platform.node(),
            "python": sys.version.split()[0],
        },
        "results": {},
    }
    if args.update and Path(args.out).exists():  # the file's rows and notes kept
        old = json.loads(Path(args.out).read_text())
        kept = old.get("meta", {})
        named = {**kept.get("regimes", {}), **out["meta"]["regimes"]}
        out["meta"] = {**kept, **out["meta"], "regimes": named}
        out["results"] = old["results"]
    for name in args.functions.split(","):
        for regime in args.regimes.split(","):
            # a named regime, or GxS: G generations of S members
            G, S = regimes[regime] if regime in regimes else map(int, regime.split("x"))
            for method in args.methods.split(","):
                if method == "cma_es" and S < 2:
                    continue  # CMA-ES needs a population
                t0 = time.time()
                rs = [regret(method, name, G, S, s) for s in range(args.seeds)]
                row = {
                    "median": float(np.median(rs)),
                    "p90": float(np.percentile(rs, 90)),
                    "regrets": rs,
                    "seconds": round(time.time() - t0, 1),
                }
                out["results"].setdefault(name, {}).setdefault(regime, {})[method] = row
                print(
                    f"{name:12s} {regime:5s} {method:10s} median {row['median']:.4g} "
                    f"p90 {row['p90']:.4g} ({row['seconds']} s)",
                    flush=True,
                )
                Path(args.out).write_text(json.dumps(out, indent=1))
    return out


def table(paths, only=None) -> str:
    """The median / p90 table of result files (later files' rows win), ``only`` these methods."""
    rows: dict = {}
    methods: list[str] = []
    for p in paths:
        for name, regimes in json.loads(Path(p).read_text())["results"].items():
            for regime, ms in regimes.items():
                for m, r in ms.items():
                    if only is not None and m not in only:
                        continue
                    rows.setdefault((name, regime), {})[m] = r
                    methods += [m] if m not in methods else []
    if only is not None:
        methods = [m for m in only if m in methods]
    lines = [
        "| function | regime | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for (name, regime), ms in rows.items():
        cells = [f"{ms[m]['median']:.3g} / {ms[m]['p90']:.3g}" if m in ms else "" for m in methods]
        lines.append(f"| {name} | {regime} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="scripts/results/bench_search_cpu.json")
    ap.add_argument("--functions", default=",".join(STANDARD), help=f"of {', '.join(SUITE)}")
    ap.add_argument("--methods", default=",".join([*METHODS, *EXTERNAL]))
    ap.add_argument("--regimes", default="seq,batch")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--evaluations", type=int, default=50)
    ap.add_argument("--generations", type=int, default=5)
    ap.add_argument("--size", type=int, default=10)
    ap.add_argument("--wide-generations", type=int, default=4)
    ap.add_argument("--wide-size", type=int, default=16)
    ap.add_argument("--update", action="store_true", help="keep the --out file's other rows")
    ap.add_argument("--table", nargs="*", help="print the median / p90 table of these JSON files")
    args = ap.parse_args()
    if args.table:
        print(table(args.table, args.methods.split(",")))
    else:
        run(args)


if __name__ == "__main__":
    main()
