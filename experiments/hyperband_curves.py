"""Hyperband vs random search on synthetic learning curves.

Reproduces the budget claim of Li et al. 2017 ("Hyperband: A Novel Bandit-Based Approach to
Hyperparameter Optimization", JMLR 18, arXiv:1603.06560): on problems where early losses rank
configurations well, Hyperband at budget ``B`` finds configurations as good as random search
needs several times ``B`` for. Claim checked here (from an independent run, which found ~10x):
the median regret of Hyperband at ``B`` is at most that of random search at ``5 B``, over >= 20
seeds.

Each member is a learning curve ``loss(t) = f(x) + c / sqrt(t) + noise`` with ``f`` a quadratic
bowl over the unit cube of a ``--dims``-dimensional space (optimum ``x*`` drawn per seed,
``f* = 0``), ``c`` a per-configuration lognormal scale drawn from (seed, member id), and small
Gaussian evaluation noise. Regret is ``f(x_best) - f*`` where ``x_best`` is the configuration with
the lowest validation loss the study saw. Hyperband runs all its brackets in one population
(:class:`jaxhpo.strategies.halving.Hyperband`, through :func:`jaxhpo.simulate.simulate`, which
applies updates as the Transformer run loop does); its budget ``B`` is the member-steps it
trained. Random search at budget ``B'`` trains ``B' // max_steps`` configurations to the end.
Both modes of Hyperband (masked, compact) are run and must give the same study.

Measured with the defaults (eta=3, R=81, 2-D bowl, c ~ 0.1 * lognormal(0, 0.5), noise sd 0.005):
Hyperband's B is 1581 member-steps (19.5 full runs, 143 configurations); random search needs
7.3x B to match its median regret over 200 seeds (7.4x over 1000 seeds). The median over 20
seeds is noisy: disjoint blocks of 20 seeds give ratios from 2.6x to more than 20x, and blocks of
100 seeds from 5.7x to 16x, hence 200 seeds by default (about 10 s).

Usage::

    python experiments/hyperband_curves.py --seeds 200 --out runs/hyperband_curves
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from jaxhpo.simulate import SimResult, simulate
from jaxhpo.space import Space
from jaxhpo.strategies.halving import Hyperband
from jaxhpo.strategies.search import RandomSearch

#: Random-search budgets, in multiples of Hyperband's budget B.
MULTIPLES = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 17, 20)
CLAIM_MULTIPLE = 5
_MAX_MEMBERS = 1 << 14


def make_problem(seed: int, dims: int, c_scale: float, c_sigma: float, noise: float):
    """Returns ``(space, curve, regret)`` for one seed.

    ``regret(hparams)`` is ``f(x) - f*`` per row; ``curve`` follows :data:`jaxhpo.simulate.Curve`.
    """
    space = Space.from_config({f"x{i}": "uniform(0, 1)" for i in range(dims)})
    prng = np.random.default_rng([seed, 1])
    optimum = prng.uniform(0.2, 0.8, dims)
    c_of_member = c_scale * np.exp(c_sigma * prng.standard_normal(_MAX_MEMBERS))

    def regret(hp):
        u = np.stack([np.asarray(hp[f"x{i}"], np.float64) for i in range(dims)], axis=-1)
        return np.sum((u - optimum) ** 2, axis=-1)

    def curve(hp, ids, t, rng):
        c = c_of_member[np.asarray(ids)]
        return regret(hp) + c / np.sqrt(t) + noise * rng.standard_normal(len(ids))

    return space, curve, regret


def study_regret(sim: SimResult, regret) -> float:
    """Regret of the configuration with the lowest validation loss seen."""
    return float(regret(sim.hparams_of(sim.best_member)))


def stop_events(sim: SimResult) -> list[tuple]:
    return [
        (e["step"], e["member"], e["fitness"], e["reason"])
        for e in sim.events
        if e["kind"] == "stop"
    ]


def run_seed(seed: int, args: argparse.Namespace) -> dict:
    """One seed: Hyperband (masked and compact) and random search at multiples of its budget."""
    space, curve, regret = make_problem(seed, args.dims, args.c_scale, args.c_sigma, args.noise)
    common = dict(steps=args.max_steps, segment_steps=args.min_steps, seed=seed)
    sims = {
        mode: simulate(
            Hyperband(eta=args.eta, min_steps=args.min_steps, max_steps=args.max_steps, mode=mode),
            space,
            curve,
            **common,
        )
        for mode in ("masked", "compact")
    }
    hb, cp = sims["masked"], sims["compact"]
    identical = (
        hb.best_loss == cp.best_loss
        and hb.best_member == cp.best_member
        and hb.member_steps == cp.member_steps
        and stop_events(hb) == stop_events(cp)
    )
    budget = hb.member_steps
    # Anytime regret of Hyperband: the best configuration so far vs member-steps spent.
    best_ids = hb.anytime["best_member"].to_numpy()
    first = hb.table.drop_duplicates("member").set_index("member")
    anytime_regret = regret({k: first.loc[best_ids, k].to_numpy() for k in space.names})
    # Random search with n configurations = the first n members of one large random search
    # (i.i.d. configurations and noise), so every budget sees nested sets of configurations.
    sizes = {m: m * budget // args.max_steps for m in MULTIPLES}
    sim = simulate(
        RandomSearch(),
        space,
        curve,
        steps=args.max_steps,
        segment_steps=args.max_steps,
        size=max(sizes.values()),
        seed=seed,
    )
    final = sim.members
    rs = {}
    for m, n in sizes.items():
        best = final.iloc[int(np.argmin(final["val_loss"].to_numpy()[:n]))]
        rs[str(m)] = float(regret({k: best[k] for k in space.names}))
    return {
        "seed": seed,
        "hb_budget": budget,
        "hb_members": int(hb.table["member"].nunique()),
        "hb_regret": study_regret(hb, regret),
        "rs_regret": rs,
        "masked_compact_identical": bool(identical),
        "anytime_member_steps": hb.anytime["member_steps"].tolist(),
        "anytime_regret": anytime_regret.tolist(),
    }


def crossing(multiples, medians, target) -> float | None:
    """Smallest budget multiple at which random search's median regret reaches ``target``
    (log-log interpolation between measured multiples); None if it never does."""
    m, r = np.log(np.asarray(multiples, float)), np.log(np.maximum(medians, 1e-300))
    if medians[0] <= target:
        return float(multiples[0])
    for i in range(1, len(m)):
        if medians[i] <= target:
            w = (r[i - 1] - np.log(target)) / (r[i - 1] - r[i])
            return float(np.exp(m[i - 1] + w * (m[i] - m[i - 1])))
    return None


def summarize(per_seed: list[dict], args: argparse.Namespace) -> dict:
    hb = float(np.median([s["hb_regret"] for s in per_seed]))
    rs = {str(m): float(np.median([s["rs_regret"][str(m)] for s in per_seed])) for m in MULTIPLES}
    ratio = crossing(MULTIPLES, [rs[str(m)] for m in MULTIPLES], hb)
    return {
        "claim": (
            f"Hyperband at budget B matches random search at >= {CLAIM_MULTIPLE}B in median "
            "regret (an independent run found ~10x)"
        ),
        "seeds": len(per_seed),
        "settings": {
            k: getattr(args, k)
            for k in ("eta", "min_steps", "max_steps", "dims", "c_scale", "c_sigma", "noise")
        },
        "hb_budget_member_steps": int(np.median([s["hb_budget"] for s in per_seed])),
        "hb_budget_full_runs": float(np.median([s["hb_budget"] for s in per_seed]))
        / args.max_steps,
        "hb_configurations": int(np.median([s["hb_members"] for s in per_seed])),
        "hb_median_regret": hb,
        "rs_median_regret": rs,
        "rs_configurations": {
            str(m): int(m * np.median([s["hb_budget"] for s in per_seed]) // args.max_steps)
            for m in MULTIPLES
        },
        "ratio": ratio,  # random search needs ratio * B to match Hyperband's median regret
        "masked_compact_identical": all(s["masked_compact_identical"] for s in per_seed),
        "per_seed": [{k: v for k, v in s.items() if not k.startswith("anytime")} for s in per_seed],
    }


def check_claim(results: dict) -> None:
    """Raises ``AssertionError`` with the measured numbers if the claim does not hold."""
    hb = results["hb_median_regret"]
    rs = results["rs_median_regret"][str(CLAIM_MULTIPLE)]
    B, ratio = results["hb_budget_member_steps"], results["ratio"]
    numbers = (
        f"median regret over {results['seeds']} seeds: Hyperband at B={B} member-steps {hb:.3g}; "
        f"random search at {CLAIM_MULTIPLE}B {rs:.3g}; random search matches Hyperband at "
        f"{f'> {MULTIPLES[-1]}x B' if ratio is None else f'{ratio:.2f}x B'}"
    )
    assert results["masked_compact_identical"], f"masked and compact Hyperband differ; {numbers}"
    assert results["seeds"] >= 20, f"the claim is about >= 20 seeds; {numbers}"
    assert hb <= rs, f"claim fails: {numbers}"


def plot(per_seed: list[dict], results: dict, path: Path, max_steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    B = results["hb_budget_member_steps"]
    fig, ax = plt.subplots(figsize=(6, 4))
    rs = np.array([[s["rs_regret"][str(m)] for m in MULTIPLES] for s in per_seed])
    x = np.array(MULTIPLES) * B / max_steps
    q = np.quantile(rs, [0.25, 0.5, 0.75], axis=0)
    ax.plot(x, q[1], "o-", color="C0", label="random search (median)")
    ax.fill_between(x, q[0], q[2], color="C0", alpha=0.2)
    grid = np.unique(np.concatenate([s["anytime_member_steps"] for s in per_seed]))
    curves = []
    for s in per_seed:  # best-so-far regret is a step function of member-steps
        idx = np.searchsorted(s["anytime_member_steps"], grid, side="right") - 1
        reg = np.asarray(s["anytime_regret"])[np.maximum(idx, 0)]
        curves.append(np.where(idx >= 0, reg, np.nan))
    hq = np.nanquantile(np.array(curves), [0.25, 0.5, 0.75], axis=0)
    ax.plot(grid / max_steps, hq[1], color="C3", label="Hyperband, anytime (median)")
    ax.fill_between(grid / max_steps, hq[0], hq[2], color="C3", alpha=0.15)
    hb = np.quantile([s["hb_regret"] for s in per_seed], [0.25, 0.5, 0.75])
    ax.errorbar(
        [B / max_steps],
        [hb[1]],
        yerr=[[hb[1] - hb[0]], [hb[2] - hb[1]]],
        fmt="s",
        color="C3",
        label=f"Hyperband at B (ratio {results['ratio'] or float('nan'):.1f}x)",
    )
    ax.axhline(hb[1], ls=":", lw=1, color="C3")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="budget (full-length training runs)",
        ylabel="regret f(x_best) - f*",
        title=f"{results['seeds']} seeds, 25-75% bands",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=200, help="number of seeds (>= 20)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/hyperband_curves"))
    p.add_argument("--eta", type=int, default=3)
    p.add_argument("--min-steps", type=int, default=1, help="smallest resource (steps)")
    p.add_argument("--max-steps", type=int, default=81, help="R, the full training length")
    p.add_argument("--dims", type=int, default=2, help="search-space dimensions")
    p.add_argument("--c-scale", type=float, default=0.1, help="median of c in c/sqrt(t)")
    p.add_argument("--c-sigma", type=float, default=0.5, help="lognormal sigma of c")
    p.add_argument("--noise", type=float, default=0.005, help="sd of the evaluation noise")
    p.add_argument("--no-plot", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    per_seed = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        s = run_seed(seed, args)
        per_seed.append(s)
        rs = ", ".join(f"{m}B {s['rs_regret'][str(m)]:.2e}" for m in (1, 5, 10))
        print(
            f"seed {seed}: Hyperband regret {s['hb_regret']:.2e} at B={s['hb_budget']} "
            f"member-steps; random search {rs}; masked==compact {s['masked_compact_identical']}",
            flush=True,
        )
    results = summarize(per_seed, args)
    results["wall_s"] = round(time.perf_counter() - t0, 2)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if not args.no_plot:
        plot(per_seed, results, args.out / "regret_vs_budget.png", args.max_steps)
    rs = results["rs_median_regret"]
    print(
        f"median regret over {results['seeds']} seeds: Hyperband {results['hb_median_regret']:.3g}"
        f" at B; random search " + ", ".join(f"{m}B {rs[m]:.3g}" for m in rs)
    )
    ratio = results["ratio"]
    ratio = f"{ratio:.2f}x" if ratio is not None else f"more than {MULTIPLES[-1]}x"
    print(f"random search needs {ratio} B to match Hyperband; wrote {args.out}")
    try:
        check_claim(results)
    except AssertionError as e:
        print(f"CLAIM FAILS: {e}")
        return 1
    print("claim holds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
