"""Optuna's pruners inside a generation of the Optuna strategy (``strategy.pruner``).

Every evaluation inside a generation, each member still training is judged by the study's pruner
from its trial's intermediate values of this generation (:mod:`jaxhpo.strategies.optuna_report`):
``pruner.prune(study, trial)`` on a ``FrozenTrial`` built from the strategy state, so the verdict
depends only on the study's finished trials and the state, and a resumed run (whose in-memory study
was rebuilt, or whose running trials were cut from the database) prunes what the uninterrupted run
pruned. A pruned member stops training (``active`` False, a ``stop`` lineage event); at the end of
the generation its trial is told ``PRUNED`` (Optuna then takes its last intermediate value as the
trial's value) and the sampler sees it as Optuna's own pruned trials.

Pruners that keep their own records in the storage (``SuccessiveHalvingPruner`` and
``HyperbandPruner`` write rung attributes per trial) are refused: jaxhpo's ``halving`` and
``hyperband`` strategies do the same over the population. ``PatientPruner`` wraps another pruner
object and has no configuration form here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxhpo.strategies import optuna_report
from jaxhpo.strategies.base import Observation, PopulationUpdate
from jaxhpo.strategies.optuna_study import distributions

#: Short name -> ``optuna.pruners`` class name.
PRUNERS: dict[str, str] = {
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "threshold": "ThresholdPruner",
    "wilcoxon": "WilcoxonPruner",
    "nop": "NopPruner",
}
_REFUSED = {
    "SuccessiveHalvingPruner": "use strategy.name=halving",
    "HyperbandPruner": "use strategy.name=hyperband",
    "PatientPruner": "it wraps another pruner object, which a config cannot give",
}

_REFUSED_NAMES = {
    "hyperband": "HyperbandPruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "halving": "SuccessiveHalvingPruner",
    "patient": "PatientPruner",
}


def make_pruner(optuna: Any, name: str | None, options: Mapping[str, Any] | None) -> Any:
    """The pruner of ``strategy.pruner`` (a short name of :data:`PRUNERS` or an
    ``optuna.pruners`` class name) built with ``strategy.pruner_options``; ``None`` for
    none. Raises a one-line ``ValueError`` naming the field."""
    if name is None:
        if options:
            raise ValueError("strategy.pruner_options: set without strategy.pruner")
        return None
    if not isinstance(name, str):
        raise ValueError(f"strategy.pruner: expected a name, got {name!r}")
    cls_name = {**PRUNERS, **_REFUSED_NAMES}.get(name.lower().replace("-", "_"), name)
    if cls_name in _REFUSED:
        raise ValueError(
            f"strategy.pruner: {cls_name} keeps rung records in the storage, which a "
            f"resumed population cannot replay; {_REFUSED[cls_name]}"
        )
    cls = getattr(optuna.pruners, cls_name, None)
    if not (isinstance(cls, type) and cls_name.endswith("Pruner") and cls_name != "BasePruner"):
        raise ValueError(
            f"strategy.pruner: unknown {name!r} (one of {', '.join(PRUNERS)}, or an "
            "optuna.pruners *Pruner class name)"
        )
    try:
        return cls(**dict(options or {}))
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"strategy.pruner_options: optuna.pruners.{cls_name} rejects {dict(options or {})}: {e}"
        ) from None


def check_objectives(pruner: Any, n_objectives: int) -> None:
    """Refuses a pruner in a study with several objectives, in one line: Optuna cannot prune
    them (``trial.report`` raises; its RFC optuna/optuna#3450, open since 2022)."""
    if pruner is not None and n_objectives > 1:
        raise ValueError(
            f"strategy.pruner: Optuna cannot prune a study with {n_objectives} objectives "
            "(RFC optuna#3450); drop strategy.pruner, or use strategy.name=halving or hyperband, "
            "which promote by non-dominated rank"
        )


def pruned_mask(state: Any, P: int) -> np.ndarray:
    """The generation's pruned slots, bool ``[P]`` (none in a state written without pruning)."""
    pruned = getattr(state, "pruned", None)
    return np.asarray(np.zeros(P) if pruned is None else pruned, np.float64).reshape(P) > 0


def prune(search: Any, study: Any, state: Any, obs: Observation):
    """The pruner's verdicts after an evaluation inside a generation: ``(state, update)`` with
    the newly pruned slots stopped (``active`` False) and recorded in ``state.pruned``."""
    numbers = np.asarray(state.trials)
    P = len(numbers)
    current = np.asarray(state.current, np.float64).reshape(P, -1)
    dists = distributions(state.space)
    pruned = pruned_mask(state, P)
    fitness = obs.fitness()
    running = search.optuna.trial.TrialState.RUNNING
    new = np.zeros(P, bool)
    for i in range(P):
        if pruned[i] or not obs.active[i] or not np.isfinite(fitness[i]):
            continue  # already stopped, or diverged (its trial fails at the generation's end)
        params = search._params(state.space, current[i])
        trial = search.optuna.trial.create_trial(
            params=params,
            distributions={k: d for k, d in dists.items() if k in params},
            intermediate_values=optuna_report.reported(state, i),
            state=running,
        )
        new[i] = bool(search.pruner.prune(study, trial))
    if not new.any():
        return state, PopulationUpdate()
    events = [
        {
            "kind": "stop",
            "member": int(obs.member_id[i]),
            "fitness": float(fitness[i]),
            "reason": f"optuna {type(search.pruner).__name__} (trial {int(numbers[i])})",
        }
        for i in np.flatnonzero(new)
    ]
    state = state.replace(pruned=(pruned | new).astype(np.float64))
    return state, PopulationUpdate(active=np.asarray(obs.active, bool) & ~new, events=events)


def last_reported(state: Any, i: int, default: float) -> float:
    """Slot ``i``'s last reported value of the generation (a pruned trial's value), else
    ``default``."""
    values = optuna_report.reported(state, i)
    return values[max(values)] if values else default
