"""Several objectives and constraints: parsed from ``strategy.objectives`` and
``strategy.constraints``, and turned into the minimised matrix the Pareto machinery reads.

::

    strategy:
      objectives: {loss: min, params: min}      # validation metrics (and params), each min | max
      constraints: {params: "<= 2e6"}           # <=, >=, <, > a number

Without ``objectives`` the study has one: ``strategy.metric`` in the task's direction. A member
whose objective is not finite (diverged) is infeasible with an infinite violation; a constraint
is violated by how far the value lies beyond its bound (0: satisfied).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxhpo import pareto

DIRECTIONS = {"min": False, "minimize": False, "max": True, "maximize": True}
OPERATORS = ("<=", ">=", "<", ">")
_CONSTRAINT = re.compile(r"^\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*$")


@dataclasses.dataclass(frozen=True)
class Objective:
    """One objective: a validation metric (without ``val_``) and whether it is maximised."""

    metric: str
    maximize: bool = False


@dataclasses.dataclass(frozen=True)
class Constraint:
    """``metric OP bound``, e.g. ``params <= 2e6``."""

    metric: str
    op: str
    bound: float

    def violation(self, value: np.ndarray) -> np.ndarray:
        """How far ``value`` lies beyond the bound (0 where satisfied, inf where not finite)."""
        v = np.asarray(value, np.float64)
        over = v - self.bound if self.op in ("<=", "<") else self.bound - v
        strict = self.op in ("<", ">")
        out = np.where(over > 0, over, np.where(strict & (over == 0), np.finfo(float).tiny, 0.0))
        return np.where(np.isfinite(v), out, np.inf)


def parse_objectives(spec: Any, where: str = "strategy.objectives") -> tuple[Objective, ...]:
    """``{metric: min | max}`` (in order) as objectives; a one-line ``ValueError`` naming the
    field for anything else."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: expected a mapping of metric -> min | max, got {spec!r}")
    out = []
    for metric, direction in spec.items():
        d = str(direction).strip().lower() if isinstance(direction, str) else None
        if d not in DIRECTIONS:
            raise ValueError(f"{where}.{metric}: direction must be min or max, got {direction!r}")
        out.append(Objective(str(metric), DIRECTIONS[d]))
    return tuple(out)


def parse_constraints(spec: Any, where: str = "strategy.constraints") -> tuple[Constraint, ...]:
    """``{metric: "<= 2e6"}`` as constraints; one-line ``ValueError`` naming the field."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: expected a mapping of metric -> '<= number', got {spec!r}")
    out = []
    for metric, text in spec.items():
        m = _CONSTRAINT.match(str(text)) if isinstance(text, str) else None
        bound = _number(m.group(2)) if m else None
        if bound is None:
            raise ValueError(
                f"{where}.{metric}: expected an operator ({', '.join(OPERATORS)}) and a number, "
                f"e.g. '<= 2e6', got {text!r}"
            )
        out.append(Constraint(str(metric), m.group(1), bound))
    return tuple(out)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def metrics_of(objectives: Sequence[Objective], constraints: Sequence[Constraint]) -> list[str]:
    """Every metric the objectives and constraints read, once each, in order."""
    names = [o.metric for o in objectives] + [c.metric for c in constraints]
    return list(dict.fromkeys(names))


def fitness_matrix(
    metrics: Mapping[str, np.ndarray],
    objectives: Sequence[Objective],
    diverged: np.ndarray | None = None,
) -> np.ndarray:
    """The objectives as quantities to MINIMISE, float64 [P, M] (maximised ones negated);
    diverged members and non-finite values are +inf."""
    cols = []
    for o in objectives:
        f = np.asarray(metrics[o.metric], np.float64).copy()
        cols.append(-f if o.maximize else f)
    F = np.stack(cols, axis=1)
    bad = ~np.all(np.isfinite(F), axis=1)
    if diverged is not None:
        bad |= np.asarray(diverged, bool)
    F[bad] = np.inf
    return F


def violation(metrics: Mapping[str, np.ndarray], constraints: Sequence[Constraint], size: int):
    """The summed violation of every member, float64 [P] (0: feasible)."""
    total = np.zeros(size, np.float64)
    for c in constraints:
        total = total + c.violation(metrics[c.metric])
    return total


def pareto_fitness(
    metrics: Mapping[str, Any],
    objectives: Sequence[Objective],
    constraints: Sequence[Constraint] = (),
    diverged: Any = None,
) -> jax.Array:
    """Each member's place in the Pareto order of the population, as a fitness to minimise,
    float32 [P] (0: the best): non-dominated rank first (feasible members before infeasible
    ones), then crowding distance (the less crowded first), as NSGA-II's survival and MO-PBT's
    ranking; members with a non-finite objective or diverged get +inf. Written in
    ``jax.numpy``, so the compiled loop computes the same inside its program."""
    cols = [jnp.asarray(metrics[o.metric], jnp.float32) for o in objectives]
    F = jnp.stack([-c if o.maximize else c for c, o in zip(cols, objectives, strict=True)], 1)
    bad = ~jnp.all(jnp.isfinite(F), axis=1)
    if diverged is not None:
        bad = bad | jnp.asarray(diverged, bool)
    F = jnp.where(bad[:, None], jnp.inf, F)
    v = jnp.zeros(F.shape[0], jnp.float32)
    for c in constraints:
        value = jnp.asarray(metrics[c.metric], jnp.float32)
        over = value - c.bound if c.op in ("<=", "<") else c.bound - value
        strict = c.op in ("<", ">")
        over = jnp.where((over > 0) | (strict & (over == 0)), jnp.maximum(over, 1e-30), 0.0)
        v = v + jnp.where(jnp.isfinite(value), over, jnp.inf)
    place = jnp.argsort(pareto.order(F, v)).astype(jnp.float32)
    return jnp.where(bad, jnp.inf, place)


@dataclasses.dataclass(frozen=True)
class Front:
    """The objectives and constraints of a run, read from its ``config.yaml``."""

    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...]

    @classmethod
    def of(cls, strategy_section: Mapping[str, Any]) -> Front | None:
        """``None`` for a run with one objective."""
        objectives = parse_objectives(strategy_section.get("objectives") or {})
        constraints = parse_constraints(strategy_section.get("constraints") or {})
        if len(objectives) < 2 and not constraints:
            return None
        return cls(objectives, constraints)

    def columns(self) -> list[str]:
        return [f"val_{o.metric}" for o in self.objectives]

    def matrix(self, rows: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(F [N, M] minimised, violation [N])`` of table rows (a DataFrame; non-finite:
        +inf)."""
        cols = [rows[c].to_numpy(np.float64) for c in self.columns()]
        F = np.stack([-c if o.maximize else c for c, o in zip(cols, self.objectives)], axis=1)
        bad = ~np.all(np.isfinite(F), axis=1)
        if "diverged" in rows:
            bad |= rows["diverged"].to_numpy(bool)
        F[bad] = np.inf
        v = np.zeros(len(rows))
        for c in self.constraints:
            v += c.violation(rows[f"val_{c.metric}"].to_numpy(np.float64))
        v[bad] = np.inf
        return F, v

    def reference(self, F: np.ndarray, v: np.ndarray) -> np.ndarray:
        ok = F[(v <= 0) & np.all(np.isfinite(F), axis=1)]
        if len(ok) == 0:
            return np.ones(F.shape[1])
        lo, hi = ok.min(axis=0), ok.max(axis=0)
        return hi + 0.1 * np.where(hi > lo, hi - lo, 1.0)


def spread_weights(size: int, n: int, seed: int = 0) -> np.ndarray:
    """Scalarisation weights that spread ``size`` members over the front of ``n`` objectives,
    float64 [size, n], each row on the simplex (non-negative, summing to 1).

    Two objectives: evenly spaced, from ``(1, 0)`` to ``(0, 1)`` (one member: ``(0.5, 0.5)``).
    More: the corners first (one member per objective alone, as far as ``size`` reaches), then
    scrambled Halton points mapped to the simplex by sorted spacings (uniform on the simplex),
    drawn with ``seed``. A pure function of its arguments, so a resumed run has the same."""
    if n < 1 or size < 1:
        raise ValueError(f"spread_weights: needs size >= 1 and n >= 1, got {size}, {n}")
    if n == 1:
        return np.ones((size, 1))
    if n == 2:
        t = np.full(1, 0.5) if size == 1 else np.linspace(0.0, 1.0, size)
        return np.stack([1.0 - t, t], axis=1)
    from scipy.stats import qmc

    corners = np.eye(n)[: min(size, n)]
    rest = size - len(corners)
    if rest <= 0:
        return corners
    u = np.sort(qmc.Halton(n - 1, seed=seed).random(rest), axis=1)
    edges = np.concatenate([np.zeros((rest, 1)), u, np.ones((rest, 1))], axis=1)
    return np.concatenate([corners, np.diff(edges, axis=1)], axis=0)


def scalarise(metrics: Mapping[str, Any], objectives: Sequence[Objective], weights: Any) -> Any:
    """One member's objectives as one differentiable number to minimise (``jax.numpy``):
    ``sum_j w_j s_j f_j / |f_j|`` with ``s_j = -1`` for a maximised objective and ``|f_j|``
    held constant (``stop_gradient``), so its gradient is ``sum_j w_j s_j grad log |f_j|``: a
    weighted sum in relative terms, free of the objectives' units. Its value is
    ``sum_j w_j s_j sign(f_j)``; what matters is the gradient (hypergradient strategies
    descend it)."""
    total = jnp.zeros((), jnp.float32)
    for j, o in enumerate(objectives):
        f = jnp.asarray(metrics[o.metric], jnp.float32)
        scale = jax.lax.stop_gradient(jnp.maximum(jnp.abs(f), 1e-12))
        total = total + weights[j] * (-f if o.maximize else f) / scale
    return total
