"""Any jaxhpo study into an Optuna storage, for optuna-dashboard and Optuna's own analyses.

One Optuna trial per member, in a study named after the run directory:

* parameters: the member's hyperparameters when it started (the searched ones, with the space's
  distributions); PBT and hypergradients change them later: the dashboard's trial table shows the
  start, ``user_attrs["final_<name>"]`` the end;
* intermediate values: the validation objective at every evaluation (``trial.report``), so the
  "Intermediate values" panel shows each member's learning curve;
* state: COMPLETE for a member trained to the end, PRUNED for one a strategy stopped (halving,
  Hyperband, median rule), FAIL for a diverged one; the value is the final validation objective;
* user attributes: ``member`` (its id), ``run_dir``, the final ``val_*`` / ``test_*`` metrics,
  ``steps`` trained, and for PBT ``parent_at_<step>`` at each exploit.

With several objectives (``strategy.objectives``) the study has one direction per objective and
each COMPLETE trial's values are the member's final objectives, in the config's order, so
optuna-dashboard's Pareto front plot and ``study.best_trials`` show the run's front. Optuna
cannot report intermediate values of a multi-objective trial, so the learning curves are not
exported then. With constraints, each trial carries Optuna's ``constraints`` system attribute
(one value per constraint, <= 0 where satisfied: what ``plot_pareto_front`` and the dashboard
read to mark infeasible trials).

Live, during a run (``report.optuna_storage=sqlite:///study.db``), or afterwards from a run
directory (``jaxhpo report RUN_DIR --to-optuna sqlite:///study.db``), which replays its tables
through the same callback. A trial is created whole (running, with its parameters and ``member``
and ``run_dir`` attributes, in one storage call). A resumed run deletes its trials from the study
(those whose ``run_dir`` is this run directory, in one transaction) and writes them again from
the tables cut back to the checkpoint (:func:`jaxhpo.reporting.callbacks.history`), so the study
ends as
the uninterrupted run's whatever the kill interrupted, the end included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from jaxhpo.objectives import Front
from jaxhpo.reporting.callbacks import Callback, finite, history, replay
from jaxhpo.space import Space
from jaxhpo.storage_url import check_storage_url
from jaxhpo.strategies.optuna_resume import delete_trials_with
from jaxhpo.strategies.optuna_search import distributions


def _import_optuna():
    try:
        import optuna
    except ImportError:  # pragma: no cover - optuna is an extra
        raise ValueError(
            "report.optuna_storage: needs optuna (pip install 'jaxhpo[optuna]')"
        ) from None
    return optuna


def check_storage(url: str, where: str = "report.optuna_storage") -> None:
    """A storage URL Optuna can open (:func:`jaxhpo.storage_url.check_storage_url`)."""
    check_storage_url(url, where)


class OptunaExport(Callback):
    """Writes the members of a run as trials of an Optuna study (see the module docstring).

    Args:
      storage: an Optuna storage URL (``sqlite:///study.db``, ``postgresql://...``).
      study_name: default: the run directory's name.
    """

    def __init__(self, storage: str, study_name: str | None = None):
        check_storage(storage)
        self.storage, self.study_name = storage, study_name
        self._trials: dict[int, Any] = {}

    def on_start(self, run_dir: Path, info: Mapping[str, Any]) -> None:
        optuna = _import_optuna()

        run_dir = Path(run_dir)
        self.run_dir = run_dir
        self.objective = str(info.get("objective", "val_loss"))
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        space = Space.from_config(cfg.get("space") or {}, where="space")
        self.dists = distributions(space)
        self.front = Front.of(cfg.get("strategy") or {})
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        name = self.study_name or run_dir.name
        resumed = info.get("resumed_at_step") is not None
        if resumed:  # this run's trials are written again from the committed tables
            delete_trials_with(self.storage, name, "run_dir", str(run_dir.resolve()))
        if self.front is None:
            directions = ["maximize" if info.get("maximize") else "minimize"]
        else:
            directions = ["maximize" if o.maximize else "minimize" for o in self.front.objectives]
        self.study = optuna.create_study(
            storage=self.storage, study_name=name, directions=directions, load_if_exists=True
        )
        self.study.set_user_attr("run_dir", str(run_dir.resolve()))
        self.study.set_user_attr("strategy", str(info.get("strategy", "")))
        self._trials = {}
        if resumed:
            for rows, events in history(run_dir)[0]:
                self.on_evaluation(rows, events, run_dir)

    def _trial(self, member: int, row: Mapping[str, Any]) -> Any:
        trial = self._trials.get(member)
        if trial is None:
            optuna = _import_optuna()
            params = {}
            for name, dist in self.dists.items():
                value = row.get(name)
                if value is not None and finite(value):
                    params[name] = _in(dist, value)
            frozen = optuna.trial.create_trial(
                state=optuna.trial.TrialState.RUNNING,
                params=params,
                distributions={k: self.dists[k] for k in params},
                user_attrs={"member": member, "run_dir": str(self.run_dir.resolve())},
            )
            # one storage call (Study.add_trial's, which returns no id): no half-made trial
            trial_id = self.study._storage.create_new_trial(self.study._study_id, frozen)
            trial = optuna.trial.Trial(self.study, trial_id)
            self._trials[member] = trial
        return trial

    def on_evaluation(
        self, rows: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]], run_dir: Path
    ) -> None:
        for row in rows:
            if not _truthy(row.get("active", True)) and int(row["member"]) in self._trials:
                continue  # a stopped member's value is carried forward, not measured again
            trial = self._trial(int(row["member"]), row)
            value = row.get(self.objective)
            if self.front is None and value is not None and finite(value):
                trial.report(float(value), int(row["step"]))
        for ev in events:
            if ev.get("kind") == "exploit" and int(ev.get("child", -1)) in self._trials:
                trial = self._trials[int(ev["child"])]
                trial.set_user_attr(f"parent_at_{int(ev['step'])}", int(ev["parent"]))

    def on_end(self, run_dir: Path, members: Any) -> None:
        optuna = _import_optuna()
        states = optuna.trial.TrialState
        longest = int(members["steps"].max()) if "steps" in members.columns else None
        for _, row in members.iterrows():
            member = int(row["member"])
            trial = self._trials.get(member) or self._trial(member, row.to_dict())
            for c in members.columns:
                if c.startswith(("val_", "test_")) and finite(row[c]):
                    trial.set_user_attr(c, float(row[c]))
            for name in self.dists:
                if name in members.columns and finite(row[name]):
                    trial.set_user_attr(f"final_{name}", float(row[name]))
            steps = int(row["steps"]) if "steps" in members.columns else None
            if steps is not None:
                trial.set_user_attr("steps", steps)
            cols = [self.objective] if self.front is None else self.front.columns()
            values = [row.get(c) for c in cols]
            if self.front is not None and self.front.constraints:
                self._constraints(trial, row)
            if bool(row.get("diverged", False)) or not all(finite(v) for v in values):
                self.study.tell(trial, state=states.FAIL)
            elif steps is not None and longest is not None and steps < longest:
                self.study.tell(trial, state=states.PRUNED)
            else:
                out = [float(v) for v in values]
                self.study.tell(trial, out if self.front is not None else out[0])
        self._trials.clear()

    def _constraints(self, trial: Any, row: Any) -> None:
        """Optuna's ``constraints`` system attribute: ``value - bound`` for ``<=``/``<``,
        ``bound - value`` for ``>=``/``>`` (<= 0: satisfied; NaN-free: a missing value counts
        as violated by 1e300)."""
        out = []
        for c in self.front.constraints:
            value = row.get(f"val_{c.metric}")
            if value is None or not finite(value):
                out.append(1e300)
            else:
                v = float(value)
                out.append(v - c.bound if c.op in ("<=", "<") else c.bound - v)
        self.study._storage.set_trial_system_attr(trial._trial_id, "constraints", out)


def _truthy(v: Any) -> bool:
    return str(v).strip().lower() not in ("false", "0", "0.0", "")


def _in(dist: Any, value: Any) -> Any:
    """``value`` as a parameter of ``dist`` (ints as ints, a choice as its value)."""
    name = type(dist).__name__
    if name == "IntDistribution":
        return int(round(float(value)))
    if name == "CategoricalDistribution":
        return min(dist.choices, key=lambda c: abs(float(c) - float(value)))
    return min(max(float(value), dist.low), dist.high)


def export_run(run_dir: str | Path, storage: str, study_name: str | None = None) -> str:
    """Replays a finished run directory into an Optuna study; returns the study's name."""
    cb = OptunaExport(storage, study_name)
    replay(run_dir, [cb])
    return cb.study.study_name
