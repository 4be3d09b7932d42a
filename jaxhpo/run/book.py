"""What the run loop records: the rows it logs, each member's last evaluation, the budget spent,
and the final one-row-per-member table.

:class:`Loop` is what the host loop carries from one segment to the next; :class:`Book` what it
remembers of every member (checkpointed with the run).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
import pandas as pd

from jaxhpo import parallel
from jaxhpo.config import Config
from jaxhpo.objectives import Constraint, Objective, parse_constraints, parse_objectives
from jaxhpo.results import RunWriter
from jaxhpo.strategies.base import Observation
from jaxhpo.tasks.user_task import applicable

if TYPE_CHECKING:
    from jaxhpo.run.prepare import Prepared


class Book:
    """What the run loop remembers across segments: each member's last evaluation (stopped
    members are not evaluated again; their last metrics stand), the best fitness and the
    member-steps trained (the budget)."""

    def __init__(self, metric_names):
        self.metric_names = metric_names
        self.last: dict[int, dict[str, Any]] = {}  # member id -> last row
        self.best = np.inf
        self.member_steps = 0

    def fill(self, ids, metrics, active, diverged) -> dict[str, np.ndarray]:
        out = {k: np.asarray(v, np.float64).copy() for k, v in metrics.items()}
        for i, m in enumerate(ids):
            if not active[i] and not diverged[i] and int(m) in self.last:
                for k in self.metric_names:
                    out[k][i] = self.last[int(m)]["metrics"][k]
        return out

    def remember(self, obs: Observation, steps) -> None:
        for i, m in enumerate(obs.member_id):
            self.last[int(m)] = {
                # float32 values by their shortest repr (0.1, not 0.10000000149011612)
                "hparams": {k: float(str(np.float32(v[i]))) for k, v in obs.hparams.items()},
                "metrics": {k: float(obs.metrics[k][i]) for k in self.metric_names},
                "diverged": bool(obs.diverged[i]),
                "steps": int(steps[i]),
            }
        self.best = min(self.best, float(obs.fitness().min()))

    def dump(self) -> dict[str, Any]:
        """JSON-able (NaN/inf as strings) for a checkpoint."""
        enc = lambda v: v if isinstance(v, bool | int | dict) or np.isfinite(v) else repr(v)
        last = {
            str(m): {
                k: ({n: enc(x) for n, x in v.items()} if isinstance(v, dict) else enc(v))
                for k, v in row.items()
            }
            for m, row in self.last.items()
        }
        return {"last": last, "best": enc(self.best), "member_steps": self.member_steps}

    def load(self, data: dict[str, Any]) -> None:
        dec = lambda v: float(v) if isinstance(v, str) else v
        self.last = {
            int(m): {
                k: ({n: dec(x) for n, x in v.items()} if isinstance(v, dict) else dec(v))
                for k, v in row.items()
            }
            for m, row in data["last"].items()
        }
        self.best, self.member_steps = float(dec(data["best"])), int(data["member_steps"])

    def last_metrics(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """The remembered metrics of members ``ids`` (NaN for a member not evaluated yet, e.g.
        re-initialised just before the checkpoint)."""
        nan = {k: np.nan for k in self.metric_names}
        rows = [self.last.get(int(m), {"metrics": nan})["metrics"] for m in ids]
        return {k: np.array([r[k] for r in rows]) for k in self.metric_names}


@dataclasses.dataclass
class Loop:
    """What the host loop carries from one segment to the next: the population (structure and
    state), the strategy's state, where the run stands, the last observation, and the record."""

    cfg: Config
    prep: Prepared
    writer: RunWriter
    root_key: jax.Array
    population: Any  # Population or BucketedPopulation (a new one after a re-pack)
    data: tuple[Any, Any, Any]  # training data, validation and test splits, on the devices
    book: Book
    pop: Any = None  # the population's state
    state: Any = None  # the strategy's state
    step: int = 0  # training steps the run has taken
    segment: int = 0  # the last segment trained
    next_id: int = 0  # the next free member id
    obs: Observation | None = None  # the last observation
    t0: float = dataclasses.field(default_factory=time.perf_counter)
    timings: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"first_segment_s": None, "train_s": 0.0}
    )

    @property
    def metric(self) -> str:
        return self.cfg.strategy.metric

    @property
    def maximize(self) -> bool:
        return self.metric in self.prep.task.maximized

    @property
    def objectives(self) -> tuple[Objective, ...]:
        """``strategy.objectives`` (empty: ``metric`` alone)."""
        return parse_objectives(self.cfg.strategy.objectives)

    @property
    def constraints(self) -> tuple[Constraint, ...]:
        return parse_constraints(self.cfg.strategy.constraints)

    def observation(self, step, ids, hparams, metrics, diverged, active) -> Observation:
        """What the strategy is shown: the members' values and the study's objectives."""
        study = {"objective": self.metric, "maximize": self.maximize}
        study |= {"objectives": self.objectives, "constraints": self.constraints}
        return Observation(step, ids, hparams, metrics, diverged, active, **study)

    def log(self, step, segment, train_loss, val, hparams, ids, diverged, active, steps):
        """Writes one row per member and remembers it; returns the :class:`Observation`."""
        val = self.book.fill(ids, val, active, diverged)
        obs = self.observation(step, ids, hparams, val, diverged, active)
        self.writer.log(
            step=step,
            segment=segment,
            wall_time=time.perf_counter() - self.t0,
            member_id=ids,
            hparams=hparams,
            train_loss=train_loss,
            metrics=val,
            diverged=diverged,
            active=active,
        )
        self.book.remember(obs, steps)
        return obs

    def observe(self, segment: int, train_loss) -> Observation:
        """Evaluates the population at the current step on the validation split and logs it."""
        population, pop = self.population, self.pop
        val, h, ids, diverged, active, steps = parallel.to_host(
            (
                population.evaluate(pop, self.data[1], only_active=True, by_fold=True),
                population.get_hparams(pop),
                pop.member_id,
                pop.diverged,
                pop.active,
                pop.step,
            )
        )
        obs = self.log(self.step, segment, train_loss, val, h, ids, diverged, active, steps)
        # shape buckets: members copy only within their bucket, structure stays (buckets.py)
        return dataclasses.replace(obs, groups=population.groups(pop), frozen=population.frozen)

    def status(self, k: int, dt: float, n_trained: int, diverged: int) -> str:
        """The progress line after a segment of ``k`` steps that took ``dt`` seconds."""
        shown = -self.book.best if self.maximize else self.book.best
        budget = f"/{self.cfg.train.budget:,}" if self.cfg.train.budget else ""
        info = (
            f"{n_trained * k / max(dt, 1e-9):,.0f} member-steps/s | "
            f"{self.book.member_steps:,}{budget} member-steps | "
            f"best val {self.metric} {shown:.4f}"
        )
        return info + (f" | {diverged} diverged" if diverged else "")


def nanmean_rows(losses: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(losses, axis=1)  # NaN for members that took no step


def table_hparams(prep: Prepared) -> tuple[str, ...]:
    """The hyperparameter columns of the run's tables (``metrics.csv``, ``members.csv``,
    ``run.json``'s ``hparam_names``): the space's names, searched or fixed there by the user,
    and a member's cross-validation ``fold``. Values the user never named (the task's batch
    size, the optimizer's other defaults, the schedule's horizon) stay out of them."""
    named = set(prep.space.names) | {"fold"}
    return tuple(n for n in prep.population.hparam_names if n in named)


def config_file(cfg: Config) -> dict[str, Any]:
    """What ``config.yaml`` holds: the resolved config with only the fields that apply
    (:func:`jaxhpo.tasks.user_task.applicable`)."""
    return applicable(cfg.to_dict())


def members_table(
    book: Book, obs: Observation, test, metric_names, hparam_names=None
) -> pd.DataFrame:
    """One row per member of the study: its last hyperparameters (``hparam_names``; None:
    all) and validation metrics, and test metrics for the members still in the population
    (NaN for members compacted away)."""
    rows = []
    slot = {int(m): i for i, m in enumerate(obs.member_id)}
    for m in sorted(book.last):
        last = book.last[m]
        hp = last["hparams"]
        if hparam_names is not None:
            hp = {k: v for k, v in hp.items() if k in hparam_names}
        row = {"member": m, **hp}
        for k in metric_names:
            row[f"val_{k}"] = last["metrics"][k]
            row[f"test_{k}"] = float(test[k][slot[m]]) if m in slot else np.nan
        row["diverged"] = last["diverged"]
        row["steps"] = last["steps"]
        rows.append(row)
    return pd.DataFrame(rows)
