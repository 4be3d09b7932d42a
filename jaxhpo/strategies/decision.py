"""What a strategy is shown and what it decides: :class:`Observation` (the population after a
segment, with one objective or several) and :class:`PopulationUpdate` (copy, re-initialise,
set, stop, re-pack), and the lineage events of a decision. :mod:`jaxhpo.strategies.base`
re-exports them with the :class:`~jaxhpo.strategies.base.Strategy` interface."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxhpo.objectives import Constraint, Objective, fitness_matrix, pareto_fitness


@dataclasses.dataclass(frozen=True)
class Observation:
    """What the population did, as host arrays with a leading member axis ``P``."""

    step: int  # training steps taken by the run so far (per member)
    member_id: np.ndarray  # int [P]
    hparams: dict[str, np.ndarray]  # name -> float [P]
    metrics: dict[str, np.ndarray]  # validation metrics, name -> float [P] (NaN when diverged)
    diverged: np.ndarray  # bool [P]
    active: np.ndarray  # bool [P]
    objective: str = "loss"  # the validation metric the study optimises
    maximize: bool = False  # True for metrics where higher is better (accuracy)
    # Shape buckets (jaxhpo/population/buckets.py): a member may copy only members of its own group
    # (int [P]; None: any member), and must keep the ``frozen`` hyperparameters (its structure).
    groups: np.ndarray | None = None
    frozen: tuple[str, ...] = ()
    # The run's length (train.steps) when the driver states it (the simulator does); strategies
    # built by ``from_config`` know it already (their ``train_steps``).
    train_steps: int | None = None
    # Several objectives and constraints (strategy.objectives / constraints; jaxhpo.objectives):
    # () = the one ``objective``.
    objectives: tuple[Objective, ...] = ()
    constraints: tuple[Constraint, ...] = ()

    def fitness(self) -> np.ndarray:
        """The objective as a quantity to MINIMISE (negated when maximising), float64 [P];
        diverged members and NaN/inf values get +inf (worst).

        With several objectives (or constraints) it is each member's place in the population's
        Pareto order (:func:`jaxhpo.objectives.pareto_fitness`: non-dominated rank, then
        crowding, feasible first), so every strategy that ranks members by fitness (PBT's
        exploit, halving's promotion) ranks them by Pareto dominance."""
        if self.objectives and (len(self.objectives) > 1 or self.constraints):
            return np.asarray(
                pareto_fitness(self.metrics, self.objectives, self.constraints, self.diverged),
                np.float64,
            )
        if self.objectives:
            return fitness_matrix(self.metrics, self.objectives, self.diverged)[:, 0]
        f = np.asarray(self.metrics[self.objective], np.float64).copy()
        if self.maximize:
            f = -f
        f[~np.isfinite(f) | self.diverged] = np.inf
        return f

    def fitness_matrix(self) -> np.ndarray:
        """Every objective minimised, float64 [P, M] (one column without ``objectives``)."""
        if not self.objectives:
            return self.fitness()[:, None]
        return fitness_matrix(self.metrics, self.objectives, self.diverged)


@dataclasses.dataclass
class PopulationUpdate:
    """What to do to the population; ``None`` fields mean "leave as is".

    Applied in this order: grow (``grow``), copy (``parents``), re-initialise (``reinit``), set
    ``hparams``, set ``active``, then re-pack (``keep``). ``grow`` first adds that many slots
    after the current ``P``, each to be re-initialised (``reinit`` must be True there); every
    other field but ``keep`` indexes the slots ``[P + grow]``; ``keep`` makes a smaller
    population of the listed slots, in that order (successive halving's and ``bohb``'s *compact*
    mode; ``bohb`` grows back for its next iteration). A new size is a new shape: the first
    segment at each size compiles once more.

    Lineage events are dicts with a ``kind``; the run loop adds ``step``. Kinds written by the
    built-in strategies:

    * ``exploit``: ``child`` and ``parent`` (member ids), ``child_slot``, ``parent_slot``,
      ``before`` and ``after`` (the child's hyperparameters, name -> value), ``child_fitness``,
      ``parent_fitness`` (minimised objective);
    * ``explore``: ``member``, ``before``, ``after`` (a member perturbed without copying);
    * ``stop``: ``member``, ``fitness``, ``reason`` (e.g. ``rung 2 of bracket 0``);
    * ``compact``: ``keep`` (member ids of the re-packed population, in slot order);
    * ``grow``: ``size`` (the population's size after ``grow`` slots were added).
    """

    grow: int = 0  # slots added first (then P means P + grow), each re-initialised
    parents: np.ndarray | None = None  # int [P]: slot i receives the whole member parents[i]
    reinit: np.ndarray | None = None  # bool [P]: slot i becomes a fresh member with a new id
    hparams: dict[str, np.ndarray] | None = None  # name -> [P] new values (subset of names ok)
    active: np.ndarray | None = None  # bool [P]
    keep: np.ndarray | None = None  # int [P'], slots of the re-packed population
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # lineage records
    done: bool = False  # stop the study after this update


def lineage_events(
    obs: Observation,
    fitness: np.ndarray,
    parents: np.ndarray,
    copied: np.ndarray,
    explored: np.ndarray,
    new_hparams: Mapping[str, np.ndarray],
) -> list[dict[str, Any]]:
    """``exploit`` and ``explore`` events of one decision: slot ``i`` copied member
    ``parents[i]`` where ``copied``, and its hyperparameters became ``new_hparams[.][i]``."""
    names = list(new_hparams)
    events = []
    ids = obs.member_id
    for i in np.flatnonzero(np.asarray(copied) | np.asarray(explored)):
        before = {k: float(obs.hparams[k][i]) for k in names}
        after = {k: float(new_hparams[k][i]) for k in names}
        if copied[i]:
            p = int(parents[i])
            events.append(
                {
                    "kind": "exploit",
                    "child": int(ids[i]),
                    "parent": int(ids[p]),
                    "child_slot": int(i),
                    "parent_slot": p,
                    "before": before,
                    "after": after,
                    "child_fitness": float(fitness[i]),
                    "parent_fitness": float(fitness[p]),
                }
            )
        else:
            events.append(
                {"kind": "explore", "member": int(ids[i]), "before": before, "after": after}
            )
    return events


def check_proposed(name: str, proposed: int, obs: Observation) -> None:
    """A generational searcher is shown the members it proposed: as many as it made."""
    if len(obs.member_id) != proposed:
        raise ValueError(
            f"strategy update: {name} proposed {proposed} members but the population has "
            f"{len(obs.member_id)}"
        )


def generation_event(
    obs: Observation, fitness: np.ndarray, generation: int, algorithm: str
) -> tuple[int, dict[str, Any]]:
    """The slot of the generation's best member and the ``generation`` event every generational
    searcher writes (``best_fitness``, ``best_member``; the caller adds its own fields)."""
    best = int(np.argmin(fitness)) if np.isfinite(fitness).any() else 0
    event = {
        "kind": "generation",
        "generation": generation,
        "algorithm": algorithm,
        "best_fitness": float(fitness[best]),
        "best_member": int(obs.member_id[best]),
    }
    return best, event


def shape_fitness(fitness: np.ndarray) -> np.ndarray:
    """Fitness as told to the ES (float32): non-finite values become the worst finite value plus
    the finite range (1 when the range is 0); all zeros when nothing is finite."""
    f = np.asarray(fitness, np.float64).copy()
    ok = np.isfinite(f)
    if not ok.any():
        return np.zeros(f.shape, np.float32)
    lo, hi = f[ok].min(), f[ok].max()
    f[~ok] = hi + ((hi - lo) if hi > lo else 1.0)
    return np.clip(f, -1e30, 1e30).astype(np.float32)
