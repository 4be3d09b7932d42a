"""Cheap analytic "fitness" functions shared by the searchers' tests: a quadratic bowl with a
known optimum and Rosenbrock, both with minimum 0, driven through :func:`jaxhpo.simulate.simulate`
(no Transformer), and the median-regret comparison with random search at equal evaluations."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from flax import serialization

from jaxhpo.checkpoint import pack_tree, unpack_tree
from jaxhpo.simulate import simulate
from jaxhpo.space import Float, Space
from jaxhpo.strategies.base import Strategy
from jaxhpo.strategies.search import RandomSearch

BOWL_SPACE = Space({"a": Float(-5, 5), "lr": Float(1e-5, 1e-1, log=True), "c": Float(0, 1)})
ROSEN_SPACE = Space({"x0": Float(-2, 2), "x1": Float(-2, 2), "x2": Float(-2, 2)})


def bowl(hp):
    """A quadratic bowl, minimum 0 at a=2, lr=10**-3.8 (unit coordinate 0.3), c=0.8."""
    u_lr = (np.log10(hp["lr"]) + 5) / 4
    return ((hp["a"] - 2.0) / 10) ** 2 + (u_lr - 0.3) ** 2 + (hp["c"] - 0.8) ** 2


def rosenbrock(hp):
    """The 3-d Rosenbrock function, minimum 0 at (1, 1, 1)."""
    x = np.stack([hp["x0"], hp["x1"], hp["x2"]])
    return np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2, axis=0)


FUNCTIONS = {"bowl": (BOWL_SPACE, bowl), "rosenbrock": (ROSEN_SPACE, rosenbrock)}


def curve(fn):
    """A member's validation loss is ``fn`` of its hyperparameters, whatever its step."""
    return lambda hp, ids, t, rng: fn(hp)


def random_regret(space, fn, evaluations: int, seeds: Iterable[int]) -> float:
    """Median over seeds of random search's best value with ``evaluations`` samples."""
    return float(
        np.median(
            [
                simulate(
                    RandomSearch(),
                    space,
                    curve(fn),
                    steps=1,
                    segment_steps=1,
                    size=evaluations,
                    seed=s,
                ).best_loss
                for s in seeds
            ]
        )
    )


def searcher_regret(
    make: Callable[[], object], space, fn, generations: int, size: int, seeds: Iterable[int]
) -> float:
    """Median over seeds of a generational searcher's best value after ``generations`` of
    ``size`` members (one step per generation); checks the evaluations were equal."""
    best = []
    for s in seeds:
        r = simulate(
            make(), space, curve(fn), steps=generations, segment_steps=1, size=size, seed=s
        )
        assert r.member_steps == generations * size
        best.append(r.best_loss)
    return float(np.median(best))


class Resumed(Strategy):
    """Packs the state after every update and restores it into a fresh, re-initialised strategy,
    as a resumed run does (:func:`jaxhpo.checkpoint.pack_tree` / ``unpack_tree``)."""

    name = "resumed"

    def __init__(self, make):
        self.make, self.inner = make, make()

    def check(self, train_steps, segment_steps):
        self.check_args = (train_steps, segment_steps)
        self.inner.check(train_steps, segment_steps)

    def init(self, seed, space, size):
        self.args = (seed, space, size)
        return self.inner.init(seed, space, size)

    def update(self, state, obs):
        state, upd = self.inner.update(state, obs)
        if upd.done:  # the study ended: nothing resumes after it
            return state, upd
        text = pack_tree(state)
        self.inner = self.make()
        self.inner.check(*self.check_args)
        fresh, _ = self.inner.init(*self.args)  # as the run loop does on resume
        return self.inner.restore_state(unpack_tree(text), fresh), upd


def leaves_are_plain(tree) -> bool:
    """A nested dict of numpy arrays with string keys (what pack_tree stores; a typed state
    as ``flax.serialization.to_state_dict`` makes it)."""
    tree = serialization.to_state_dict(tree)
    if isinstance(tree, dict):
        return all(isinstance(k, str) and leaves_are_plain(v) for k, v in tree.items())
    return isinstance(tree, np.ndarray | np.generic)


def generations_of(result, space, n):
    """The hyperparameters each generation trained with (one step per generation)."""
    t = result.table
    return [
        np.stack([t[t["step"] == g + 1][k].to_numpy() for k in space.searched], -1)
        for g in range(n)
    ]


def zdt1_problem(dims: int = 3):
    """ZDT1 (pymoo) as a simulated two-objective study: ``(space, objectives, reference, curve,
    problem)``; the curve gives ``f1`` and ``f2`` of each member's point (no learning curve)."""
    from pymoo.problems import get_problem

    from jaxhpo.objectives import parse_objectives
    from jaxhpo.space import Float, Space

    problem = get_problem("zdt1", n_var=dims)
    space = Space({f"x{i}": Float(0, 1) for i in range(dims)})

    def curve(hp, ids, t, rng):
        F = problem.evaluate(np.stack([hp[f"x{i}"] for i in range(dims)], axis=1))
        return {"f1": F[:, 0], "f2": F[:, 1]}

    objectives = parse_objectives({"f1": "min", "f2": "min"})
    return space, objectives, np.array([1.1, 1.1]), curve, problem
