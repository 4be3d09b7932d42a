"""Seeding a study: explicit points, warm starts from an earlier run, and the generation schedule
that the generation-based searchers (``bo``, ``rl``, ``optuna``) share.

**Explicit points** (``strategy.points``): each a full or partial assignment of the searched
dimensions. They are the first generation's members, in order (a partial point takes the
strategy's own proposal for the names it leaves out); they train and are told to the surrogate /
policy / study like every other member.

**Warm start** (``strategy.warm_start: RUN_DIR``, ``strategy.warm_start_top: k``): an earlier run
directory's members table (``members.csv``; the last row of each member in the metrics table for
an interrupted run, see :func:`jaxhpo.results.final_members`) is read when the strategy is built,
so a missing folder or column is reported before anything compiles. Only members that trained as
long as the longest one and did not diverge count (a validation loss after 50 steps does not
compare with one after 400: successive halving's stopped members are left out). Its ``k`` best
members by the study's ``strategy.metric`` (the earlier run's ``val_<metric>`` column, maximised
when the earlier task maximises it) join the first generation after the explicit points; their
values are clipped into this run's space (names this space does not search are dropped; names it
searches that the earlier run did not are proposed by the strategy). Bayesian optimisation also
takes every counted member as an observation of its surrogate (when the earlier run searched all
of this space's dimensions), and the Optuna adapter adds them to its study as completed trials.
The earlier fitness is taken at face value: warm-start from a run with the same task, model and
training length (``train.steps`` per member, or the generation length).

**Generations** (:class:`GenerationalSearch`): every ``generation_steps`` (a multiple of
``train.segment_steps``; default one segment) the generation's fitness is told, the next generation
is proposed, and every member is re-initialised with its new hyperparameters (a fresh member with a
new id), as in the evosax adapter's generational schedule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from jaxhpo.results import BASE_COLUMNS, final_members
from jaxhpo.space import Space
from jaxhpo.strategies.base import Strategy, check_between_segments, fill_points
from jaxhpo.tasks import TASKS


@dataclasses.dataclass(frozen=True)
class History:
    """An earlier study's results: ``hparams`` name -> float [N] (the names that run had),
    ``fitness`` [N] (minimised: the metric, negated when maximised), best first."""

    hparams: dict[str, np.ndarray]
    fitness: np.ndarray
    source: str


def load_run(path: str | Path, metric: str = "loss", where: str = "strategy.warm_start") -> History:
    """The finished-training, non-diverged members of an earlier run directory, best first.

    Raises:
      ValueError: naming ``where`` when the folder is not a run directory, has no members, or has
        no ``val_<metric>`` column.
    """
    run_dir = Path(path).expanduser()
    if not run_dir.is_dir():
        raise ValueError(f"{where}: {run_dir} is not a folder (expected a jaxhpo run directory)")
    if not any((run_dir / f).exists() for f in ("members.csv", "metrics.csv", "metrics.parquet")):
        raise ValueError(f"{where}: {run_dir} has no members.csv or metrics table (not a run?)")
    try:
        members = final_members(run_dir)
    except Exception as e:  # a truncated or foreign file: one line naming the field
        raise ValueError(f"{where}: cannot read the members of {run_dir}: {e}") from None
    column = f"val_{metric}"
    if column not in members:
        raise ValueError(
            f"{where}: {run_dir} has no column {column} (strategy.metric={metric!r}); "
            f"its metrics: {', '.join(c[4:] for c in members.columns if c.startswith('val_'))}"
        )
    maximize = False
    cfg_path = run_dir / "config.yaml"
    if cfg_path.exists():
        try:
            kind = (yaml.safe_load(cfg_path.read_text()) or {}).get("task", {}).get("kind")
        except yaml.YAMLError:
            kind = None
        task = TASKS.get(kind) if isinstance(kind, str) else None
        maximize = task is not None and metric in task.maximized
    value = members[column].to_numpy(np.float64)
    ok = np.isfinite(value)
    if "diverged" in members:
        ok &= ~members["diverged"].astype(bool).to_numpy()
    if "steps" in members and ok.any():
        steps = members["steps"].to_numpy()
        ok &= steps == steps[ok].max()
    if not ok.any():
        raise ValueError(f"{where}: {run_dir} has no member with a finite {column}")
    skip = {*BASE_COLUMNS, "steps", "train_loss"}
    names = [
        c
        for c in members.columns
        if c not in skip
        and not c.startswith(("val_", "test_"))
        and np.issubdtype(members[c].dtype, np.number)
    ]
    fitness = -value[ok] if maximize else value[ok]
    order = np.argsort(fitness, kind="stable")
    hparams = {c: members[c].to_numpy(np.float64)[ok][order] for c in names}
    return History(hparams=hparams, fitness=fitness[order], source=str(run_dir))


@dataclasses.dataclass(frozen=True)
class Seed:
    """What seeds a study in a given space.

    Attributes:
      points: the first generation's given members (explicit points, then the warm start's best),
        each name -> value over this space's searched names (partial assignments allowed).
      cols: the earlier run's observations in this space, name -> [N] for every searched name
        (``None`` when there is no earlier run or it lacks a searched dimension).
      fitness: their minimised fitness [N] (empty when ``cols`` is ``None``).
    """

    points: list[dict[str, Any]]
    cols: dict[str, np.ndarray] | None
    fitness: np.ndarray


def check_warm_fields(warm_start: Any, warm_start_top: Any) -> None:
    """One-line errors for ``strategy.warm_start`` / ``strategy.warm_start_top``."""
    if isinstance(warm_start_top, bool) or not (
        isinstance(warm_start_top, int | np.integer) and warm_start_top >= 0
    ):
        raise ValueError(
            f"strategy.warm_start_top: must be an integer >= 0, got {warm_start_top!r}"
        )
    if warm_start_top and not warm_start:
        raise ValueError("strategy.warm_start_top: set strategy.warm_start (a run directory)")


@dataclasses.dataclass(frozen=True)
class WarmSource:
    """An earlier run (``strategy.warm_start``) and how many of its best members to re-train
    (``strategy.warm_start_top``)."""

    history: History
    top: int

    @classmethod
    def from_config(cls, config: GenerationalConfig, metric: str) -> WarmSource | None:
        """From a strategy's settings; ``None`` without ``strategy.warm_start``."""
        if not config.warm_start:
            return None
        return cls(load_run(config.warm_start, metric), int(config.warm_start_top))

    def points(self, space: Space) -> list[dict[str, Any]]:
        """The ``top`` best members as points of ``space`` (clipped into it; only the names it
        searches)."""
        shared = [n for n in space.searched if n in self.history.hparams]
        n = min(self.top, len(self.history.fitness))
        if not shared or n == 0:
            return []
        clipped = _clip(space, {k: self.history.hparams[k][:n] for k in shared}, n)
        return [{k: _scalar(clipped[k][i]) for k in shared} for i in range(n)]

    def observations(self, space: Space) -> tuple[dict[str, np.ndarray] | None, np.ndarray]:
        """Every counted member in ``space`` (``None`` when the earlier run did not search all
        of ``space``'s dimensions) and its minimised fitness."""
        if not all(n in self.history.hparams for n in space.searched):
            return None, np.zeros((0,))
        N = len(self.history.fitness)
        cols = _clip(space, {k: self.history.hparams[k] for k in space.searched}, N)
        return cols, np.asarray(self.history.fitness, np.float64)


def seed_study(
    space: Space,
    points: Sequence[Mapping[str, Any]],
    warm: WarmSource | None,
    size: int,
) -> Seed:
    """The points and observations that seed a study of ``size`` members per generation.

    Raises:
      ValueError: naming ``strategy.points`` when the points (explicit and warm) outnumber the
        members of a generation, or an explicit point is outside the space.
    """
    given = [dict(p) for p in points]
    cols, fitness = None, np.zeros((0,))
    if warm is not None:
        given += warm.points(space)
        cols, fitness = warm.observations(space)
    if len(given) > size:
        extra = len(given) - len(points)
        raise ValueError(
            f"strategy.points: {len(points)} explicit points and {extra} from "
            f"strategy.warm_start_top exceed population.size={size} (one generation)"
        )
    if given:  # checks names and values (one line naming strategy.points)
        centre = space.from_unit(np.full((len(given), len(space.searched)), 0.5))
        fill_points(space, {k: centre[k] for k in space.searched}, given)
    return Seed(points=given, cols=cols, fitness=fitness)


def apply_points(space: Space, cols: Mapping[str, np.ndarray], seed: Seed) -> dict[str, Any]:
    """``cols`` (the strategy's own proposal for the first generation, every searched name) with
    its first rows replaced by the seed's points."""
    searched = {k: np.asarray(v) for k, v in cols.items() if k in space.searched}
    out = fill_points(space, searched, seed.points)
    return {k: out[k] for k in space.searched}


def _clip(space: Space, cols: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Values moved into the space (only the names given; the rest are placeholders)."""
    centre = space.from_unit(np.full((n, len(space.searched)), 0.5))
    full = {k: cols.get(k, centre[k]) for k in space.searched}
    clipped = space.clip(full)
    return {k: clipped[k] for k in cols}


def _scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


@dataclasses.dataclass(frozen=True)
class GenerationalConfig:
    """``strategy:`` settings shared by the searchers that work in generations (evo, bo, rl,
    optuna)."""

    generation_steps: int | None = None  # steps per generation (None: one segment)
    #: explicit members of the first generation (name -> value)
    points: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    warm_start: str | None = None  # an earlier run directory whose members seed the study
    warm_start_top: int = 0  # its k best members join the first generation

    def __post_init__(self):
        steps = self.generation_steps
        if steps is not None and (
            isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1
        ):
            raise ValueError(
                f"strategy.generation_steps: must be an integer >= 1 or null, got {steps!r}"
            )
        check_warm_fields(self.warm_start, self.warm_start_top)


class GenerationalSearch(Strategy):
    """The generation schedule and seeding shared by ``bo``, ``rl`` and ``optuna``.

    Subclasses implement :meth:`first_generation` and :meth:`next_generation`; this class checks
    the schedule, tells only at generation ends and re-initialises every member each generation.
    """

    Config = GenerationalConfig

    def __init__(
        self,
        config: Any = None,
        /,
        *,
        metric: str = "loss",
        train_steps: int | None = None,
        **fields,
    ):
        """``metric``: the study's metric (a warm start's column); ``train_steps``: the run's
        length (``train.steps``), after which nothing more is proposed (``None``: never done
        by itself; :meth:`from_config` fills it in)."""
        super().__init__(config, **fields)
        self.warm = WarmSource.from_config(self.config, metric)
        if train_steps is not None and (isinstance(train_steps, bool) or int(train_steps) < 1):
            raise ValueError(f"train.steps: must be >= 1, got {train_steps!r}")
        self.train_steps = None if train_steps is None else int(train_steps)

    @classmethod
    def from_config(cls, config, train, metric="loss"):
        return cls(config, metric=metric, train_steps=train.steps)

    def member_steps(self, train_steps: int, segment_steps: int) -> int:
        del train_steps
        return self.config.generation_steps or segment_steps  # fresh members every generation

    def check(self, train_steps: int, segment_steps: int) -> None:
        every = self.config.generation_steps or segment_steps
        why = "a generation is told between segments"
        check_between_segments("generation_steps", every, segment_steps, why)
        if train_steps % every:
            raise ValueError(
                f"strategy.generation_steps: train.steps={train_steps} is not a whole number of "
                f"generations of {every} steps (the last generation would train fewer steps)"
            )

    def due(self, step: int) -> bool:
        """True at the end of a generation."""
        return self.config.generation_steps is None or step % self.config.generation_steps == 0

    def last(self, obs: Any) -> bool:
        """True after the last generation (nothing more to propose: the study is done): at
        the run's length, the observation's when it states one, else the strategy's own
        ``train_steps``."""
        total = obs.train_steps if obs.train_steps is not None else self.train_steps
        return total is not None and int(obs.step) >= total

    def seed(self, space: Space, size: int) -> Seed:
        return seed_study(space, self.config.points, self.warm, size)
