"""The strategy interface.

A strategy is a small ``init`` / ``update`` pair over a typed state, in the spirit of optax's
``GradientTransformation`` and evosax's ``init / ask / tell``:

* ``init(seed, space, size)`` returns the strategy state and the first population's
  hyperparameters (columns: name -> [P]).
* ``update(state, obs)`` reads what the population did in the last segment (:class:`Observation`)
  and returns a new state and a :class:`PopulationUpdate`: which members copy which (exploit), which
  are re-initialised as new members, their new hyperparameters, which keep training, and whether
  the study is done.

The run loop applies a :class:`PopulationUpdate` the same way for every strategy; it never branches
on the strategy's type. Strategies run on the host between segments (NumPy); a strategy that wants
to live inside a compiled loop can keep its state as a pytree of arrays.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import numpy as np

from jaxhpo.space import Space


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

    def fitness(self) -> np.ndarray:
        """The objective as a quantity to MINIMISE (negated when maximising), float64 [P];
        diverged members and NaN/inf values get +inf (worst)."""
        f = np.asarray(self.metrics[self.objective], np.float64).copy()
        if self.maximize:
            f = -f
        f[~np.isfinite(f) | self.diverged] = np.inf
        return f


@dataclasses.dataclass
class PopulationUpdate:
    """What to do to the population; ``None`` fields mean "leave as is".

    Applied in this order: copy (``parents``), re-initialise (``reinit``), set ``hparams``,
    set ``active``.
    """

    parents: np.ndarray | None = None  # int [P]: slot i receives the whole member parents[i]
    reinit: np.ndarray | None = None  # bool [P]: slot i becomes a fresh member with a new id
    hparams: dict[str, np.ndarray] | None = None  # name -> [P] new values (subset of names ok)
    active: np.ndarray | None = None  # bool [P]
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # lineage records
    done: bool = False  # stop the study after this update


class Strategy(abc.ABC):
    """Base class of every strategy (grid/random/Sobol here; PBT, halving, ES, BO elsewhere)."""

    name: str = "strategy"

    @abc.abstractmethod
    def init(self, seed: int, space: Space, size: int | None) -> tuple[Any, dict[str, np.ndarray]]:
        """Returns ``(state, hparams)`` for the first population.

        ``size`` may be ``None`` when the strategy decides the population size (a full grid).
        """

    def update(self, state: Any, obs: Observation) -> tuple[Any, PopulationUpdate]:
        """Default: change nothing (members train to the end with fixed hyperparameters)."""
        return state, PopulationUpdate()
