"""PB2 against PBT with small populations on PBT's toy problem (Parker-Holder et al. 2020).

The toy (Jaderberg et al. 2017, Fig. 2; :mod:`jaxhpo.tasks.toy`): maximise
``Q = 1.2 - (theta_0^2 + theta_1^2)`` training only on ``1.2 - (h_0 theta_0^2 + h_1 theta_1^2)``
by SGD (lr 0.05) from ``theta = (0.9, 0.9)``; members start at ``h = (1, 0)`` and ``(0, 1)``
alternately; ``h`` in ``[0, 1]^2``; ready every 4 steps, 100 steps. A step of SGD multiplies
``theta_i`` by ``1 - 2 lr h_i`` exactly, so the population here is NumPy arrays (the ``theta`` of
each member), driven with the run loop's own :func:`jaxhpo.run.update.apply_update` — a copy is
the whole member (``theta``, hyperparameters), as in the trainer. ``tests/test_pb2.py`` uses the
same driver (:func:`toy_study`).

Strategies: PBT (the exploiting members explore), PBT with ``explore_all``, PB2 (default:
targets less each step's mean) and ``pb2_all`` (PB2 with the paper's targets, standardised
together). Reported per population size and strategy, over seeds: the median of the best
member's ``Q`` at steps 20, 40 and 100, the mean of the best ``Q`` over the run (area under the
curve) and the median step at which the best member first reaches ``Q >= 1.19``.

Usage: ``python scripts/bench_pb2.py [--seeds 10] [--sizes 4 8]`` (writes
``scripts/results/bench_pb2_toy.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from jaxhpo.checkpoint import pack_tree, unpack_tree
from jaxhpo.run.update import apply_update
from jaxhpo.space import Space
from jaxhpo.strategies import PB2, PBT
from jaxhpo.strategies.base import Observation

STEPS, READY, LR, TARGET = 100, 4, 0.05, 1.19
SPACE = Space.from_config({"h0": "uniform(0.0, 1.0)", "h1": "uniform(0.0, 1.0)"})


@dataclasses.dataclass
class _Toy:
    member_id: np.ndarray  # int [P]
    theta: np.ndarray  # float64 [P, 2]
    hp: dict  # name -> float64 [P]

    @property
    def size(self) -> int:
        return len(self.member_id)


class _ToyPopulation:
    """The population interface :func:`apply_update` drives (copy and set hyperparameters)."""

    hparam_names = ("h0", "h1")

    def copy_members(self, pop, parents):
        p = np.asarray(parents)
        return _Toy(pop.member_id, pop.theta[p], {k: v[p] for k, v in pop.hp.items()})

    def set_hparams(self, pop, values):
        hp = {**pop.hp, **{k: np.asarray(v, np.float64).copy() for k, v in values.items()}}
        return dataclasses.replace(pop, hp=hp)

    def place(self, pop):
        return pop


def toy_points(size: int) -> list[dict[str, float]]:
    return [{"h0": 1.0, "h1": 0.0} if i % 2 == 0 else {"h0": 0.0, "h1": 1.0} for i in range(size)]


def toy_study(strategy, size: int, seed: int, steps: int = STEPS, roundtrip: bool = False):
    """Runs the toy; returns ``(q [S, P] after every segment, hparams [S, P, 2], events)``
    (lineage events with their ``step``).
    ``roundtrip``: the strategy's state goes through a checkpoint after every update."""
    state, cols = strategy.init(seed, SPACE, size)
    fresh = state
    pop = _Toy(np.arange(size), np.full((size, 2), 0.9), {k: np.asarray(cols[k]) for k in cols})
    population, qs, hs, events = _ToyPopulation(), [], [], []
    for step in range(READY, steps + 1, READY):
        h = np.stack([pop.hp["h0"], pop.hp["h1"]], axis=1)
        pop.theta = pop.theta * (1.0 - 2.0 * LR * h) ** READY
        q = 1.2 - np.sum(pop.theta**2, axis=1)
        qs.append(q.copy())
        hs.append(h)
        obs = Observation(
            step=step,
            member_id=pop.member_id.copy(),
            hparams={k: v.copy() for k, v in pop.hp.items()},
            metrics={"q": q},
            diverged=np.zeros(size, bool),
            active=np.ones(size, bool),
            objective="q",
            maximize=True,
            train_steps=steps,
        )
        state, upd = strategy.update(state, obs)
        if roundtrip:
            state = strategy.restore_state(unpack_tree(pack_tree(state)), fresh)
        events += [{**e, "step": step} for e in upd.events]  # as the run loop adds it
        if step < steps:
            _, pop, _ = apply_update(population, pop, upd, None, size)
    return np.stack(qs), np.stack(hs), events


def strategies(size: int) -> dict:
    common = {
        "ready_steps": READY,
        "perturb": "gaussian",
        "sigma": 0.1,
        "points": toy_points(size),
    }
    return {
        "pbt": PBT(**common),
        "pbt_explore_all": PBT(**common, explore_all=True),
        "pb2": PB2(**common, fit_steps=30, candidates=128),
        "pb2_all": PB2(**common, fit_steps=30, candidates=128, normalise="all"),
    }


def summarise(q_best: np.ndarray) -> dict[str, float]:
    """``q_best``: [seeds, S], the best member's Q after every segment."""
    steps = np.arange(1, q_best.shape[1] + 1) * READY
    reach = np.array(
        [steps[np.argmax(r >= TARGET)] if (r >= TARGET).any() else np.inf for r in q_best]
    )
    at = {f"q_at_{s}": float(np.median(q_best[:, s // READY - 1])) for s in (20, 40, STEPS)}
    return {
        **at,
        "mean_q_median": float(np.median(q_best.mean(axis=1))),
        "steps_to_target_median": float(np.median(reach)),
        "reached_target": int(np.isfinite(reach).sum()),
        "steps_to_target": [float(x) for x in reach],
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--sizes", type=int, nargs="+", default=[4, 8])
    p.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "bench_pb2_toy.json"
    )
    args = p.parse_args(argv)
    out = {
        "setup": {
            "problem": "PBT toy (Jaderberg et al. 2017), h in [0, 1]^2, start h=(1,0)/(0,1)",
            "steps": STEPS,
            "ready_steps": READY,
            "lr": LR,
            "target_q": TARGET,
            "seeds": args.seeds,
            "explore": "gaussian sigma 0.1 (unit coordinates); truncation, fraction 0.25",
        },
        "results": {},
    }
    for size in args.sizes:
        for name in strategies(size):
            t = time.perf_counter()
            best = []
            for seed in range(args.seeds):
                q, _, _ = toy_study(strategies(size)[name], size, seed)
                best.append(q.max(axis=1))
            res = summarise(np.stack(best))
            res["member_steps"] = size * STEPS
            res["seconds"] = round(time.perf_counter() - t, 1)
            out["results"][f"{name}_P{size}"] = res
            print(
                f"P={size} {name:16s}",
                {k: v for k, v in res.items() if k != "steps_to_target"},
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
