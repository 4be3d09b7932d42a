"""The Optuna side of the ``optuna`` strategy: samplers by name, the distributions of a space,
the strategy's typed state and the live study it cannot keep in that state
(:mod:`jaxhpo.strategies.optuna_search` uses them)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from jaxhpo.space import Choice, Float, Int, Space
from jaxhpo.strategies.base import StrategyState, static

#: Short name -> ``optuna.samplers`` class name (any ``*Sampler`` class name works as well).
SAMPLERS: dict[str, str] = {
    "tpe": "TPESampler",
    "gp": "GPSampler",
    "cmaes": "CmaEsSampler",
    "cma_es": "CmaEsSampler",
    "qmc": "QMCSampler",
    "sobol": "QMCSampler",
    "nsga2": "NSGAIISampler",
    "nsgaii": "NSGAIISampler",
    "nsga3": "NSGAIIISampler",
    "random": "RandomSampler",
}

#: Packages a sampler needs beyond optuna: class -> (module, pip name).
EXTRA_PACKAGES: dict[str, tuple[str, str]] = {
    "CmaEsSampler": ("cmaes", "cmaes"),
    "GPSampler": ("torch", "torch"),
}

INSTALL = "pip install 'jaxhpo[optuna]'"


def import_optuna():
    """``optuna``, or a one-line error naming ``strategy.name`` and the pip command."""
    try:
        import optuna
    except ImportError:
        raise ValueError(
            f"strategy.name: 'optuna' needs the optional package optuna ({INSTALL})"
        ) from None
    return optuna


def resolve_sampler(name: str) -> str:
    """The ``optuna.samplers`` class name of ``name`` (short names in :data:`SAMPLERS`).

    Raises:
      ValueError: naming ``strategy.sampler``, for an unknown name or a missing package.
    """
    optuna = import_optuna()
    key = str(name).strip()
    cls = SAMPLERS.get(key.lower().replace("-", "").replace("_", "")) or SAMPLERS.get(key.lower())
    if cls is None:
        known = {n.lower(): n for n in dir(optuna.samplers) if n.endswith("Sampler")}
        cls = known.get(key.lower()) or known.get(key.lower() + "sampler")
    if cls is None or cls in ("BaseSampler", "BaseGASampler", "GridSampler", "PartialFixedSampler"):
        raise ValueError(
            f"strategy.sampler: unknown {name!r} (choose from "
            f"{', '.join(dict.fromkeys(SAMPLERS))}, or an optuna.samplers *Sampler name)"
        )
    if cls in EXTRA_PACKAGES:
        module, pip = EXTRA_PACKAGES[cls]
        try:
            __import__(module)
        except ImportError:
            raise ValueError(
                f"strategy.sampler: Optuna's {cls} needs the package {module} (pip install {pip})"
            ) from None
    return cls


@functools.lru_cache(maxsize=64)
def distributions(space: Space) -> dict[str, Any]:
    """The Optuna distribution of every searched dimension (cached per space: read only)."""
    optuna = import_optuna()
    D = optuna.distributions
    out = {}
    for name in space.searched:
        dim = space[name]
        if isinstance(dim, Float):
            out[name] = D.FloatDistribution(dim.low, dim.high, log=dim.log)
        elif isinstance(dim, Int):
            out[name] = D.IntDistribution(int(dim.low), int(dim.high), log=dim.log)
        elif isinstance(dim, Choice):
            out[name] = D.CategoricalDistribution(list(dim.values))
    return out


def constraints_of(trial: Any) -> list[float]:
    """Optuna's ``constraints_func``: a told trial's constraint values (``<= 0``: satisfied),
    from its user attribute ``constraints`` (set by the strategy before it tells the trial)."""
    return list(trial.user_attrs.get("constraints", []))


def n_objectives(obs: Any) -> int:
    """How many objectives the study of ``obs`` has (its ``objectives``, else 1)."""
    return max(len(obs.objectives), 1)


def told_values(obs: Any) -> np.ndarray:
    """What a generation tells Optuna: every objective minimised (maximised ones negated,
    non-finite or diverged +inf), float64 ``[P]`` with one objective, ``[P, M]`` with several;
    every study direction is ``minimize``."""
    if not obs.objectives and not obs.constraints:
        return obs.fitness()
    F = obs.fitness_matrix()
    return F[:, 0] if F.shape[1] == 1 else F


def constraint_values(obs: Any) -> np.ndarray:
    """Each member's violation of each constraint (0: satisfied), float64 ``[P, C]``."""
    P = len(obs.member_id)
    cols = [c.violation(obs.metrics[c.metric]) for c in obs.constraints]
    return np.stack(cols, axis=1) if cols else np.zeros((P, 0))


def metric_names(obs: Any) -> list[str]:
    """The study's metric names: each objective, ``-name`` where it is maximised (the told
    values are minimised)."""
    if not obs.objectives:
        return [("-" if obs.maximize else "") + obs.objective]
    return [("-" if o.maximize else "") + o.metric for o in obs.objectives]


def make_trial(optuna, space, row, value, attrs=None, reported=None, pruned=False, cons=None):
    """A finished ``FrozenTrial`` of ``space`` at ``row`` (internal representation; NaN:
    inactive) with ``value`` (a number, or one per objective; not finite: ``FAIL``), user
    attributes ``attrs``, intermediate values ``reported``, constraint values ``cons``."""
    TrialState = optuna.trial.TrialState
    value = np.asarray(value, np.float64)
    ok = bool(np.all(np.isfinite(value)))
    dists = distributions(space)
    params = {
        k: d.to_external_repr(float(x)) for (k, d), x in zip(dists.items(), row) if not np.isnan(x)
    }
    attrs = dict(attrs or {})
    system = {}
    if cons is not None and len(cons):
        attrs["constraints"] = system["constraints"] = [float(c) for c in cons]
    kwargs: dict[str, Any] = {}
    if ok:
        kwargs = {"value": float(value)} if value.ndim == 0 else {"values": value.tolist()}
    state = TrialState.COMPLETE if ok else TrialState.FAIL
    return optuna.trial.create_trial(
        params=params,
        distributions={k: d for k, d in dists.items() if k in params},
        state=TrialState.PRUNED if pruned else state,
        user_attrs=attrs,
        system_attrs=system,
        intermediate_values=reported or {},
        **kwargs,
    )


class OptunaState(StrategyState):
    """The Optuna strategy's state: what a resumed run needs to bring its study back. ``P``
    members per generation, ``N`` told trials, ``D`` searched dimensions; the fields with a
    default are missing from checkpoints of older versions."""

    space: Space = static()  # the search space (structure)
    seed: np.ndarray  # int64 []: the study's seed (each generation's sampler derives from it)
    generation: np.ndarray  # int64 []: generations told so far
    study: np.ndarray  # uint8 [name]: the study's name (optuna_resume.name_array)
    trials: np.ndarray  # int64 [P]: the current generation's trial numbers ([0]: done)
    current: np.ndarray  # float64 [P, D]: their parameters, Optuna's internal representation
    params: np.ndarray  # float64 [N, D]: every told trial's parameters (warm start's first)
    values: np.ndarray  # float64 [N] or [N, M] (several objectives): told values (inf: failed)
    base: np.ndarray | None = None  # int64 []: trials a continued study held before (None: 0)
    start: np.ndarray | None = None  # int64 []: the step the generation started at
    reports: np.ndarray | None = None  # float64 [K, P]: the generation's reported objectives
    report_steps: np.ndarray | None = None  # int64 [K]: their steps in the trials
    pruned: np.ndarray | None = None  # float64 [P]: 1.0 where the pruner stopped the slot
    told_pruned: np.ndarray | None = None  # float64 [N]: 1.0 where the told trial was pruned
    report_row: np.ndarray | None = None  # int64 [R]: every told report's row in ``params``
    report_at: np.ndarray | None = None  # int64 [R]: its step
    report_value: np.ndarray | None = None  # float64 [R]: its value
    told_constraints: np.ndarray | None = None  # float64 [N, C]: told constraint violations


@dataclasses.dataclass
class LiveStudy:
    """The one impure part of a built-in strategy: the live Optuna study of this process.

    Optuna's samplers keep their state in a ``Study`` object (its trials, in memory or in a
    database) and propose through ``study.ask()``, which changes it; a ``Trial`` asked by this
    process must be told by the same objects. Neither is an array, so they cannot live in the
    strategy's :class:`OptunaState`. They are kept here, one object per strategy, changed only by
    ``init``, ``update``, ``attach`` and :func:`~jaxhpo.strategies.optuna_resume.study_for`;
    the state holds everything needed to rebuild or cut back the study after a resume, so a
    resumed run proposes what the uninterrupted one would have.
    """

    study: Any = None  # the optuna.Study asked and told (None: not made yet)
    running: dict[int, Any] = dataclasses.field(default_factory=dict)  # number -> asked Trial
    init_trials: list[int] = dataclasses.field(default_factory=list)  # the trials init asked
    run_attrs: dict[str, str] = dataclasses.field(default_factory=dict)  # set on it (attach)
    synced: tuple[str, int] | None = None  # (study, trials) brought back on resume
