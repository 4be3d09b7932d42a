"""Callbacks for experiment trackers: Weights & Biases and MLflow, one tracked run per member.

Both work offline: W&B in its offline mode (``mode="offline"``: files under ``dir``, upload
later with ``wandb sync``), MLflow with a local database (``tracking_uri="sqlite:///mlflow.db"``,
the default: ``RUN_DIR/mlflow.db``; MLflow 3 keeps its file store in maintenance mode).
Each member becomes one run, grouped by the jaxhpo run's name: its hyperparameters as config /
params, ``train_loss``, the ``val_*`` metrics and the searched hyperparameters at every
evaluation (keyed by the member's step), its final ``val_*`` / ``test_*`` metrics as summary.

    jaxhpo.tune(task, space, callbacks=[jaxhpo.reporting.trackers.MLflowCallback("sqlite:///mlflow.db")])
"""

from __future__ import annotations

import hashlib
import re
import resource
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxhpo.reporting.callbacks import Callback, finite, history


def _metrics(row: Mapping[str, Any], searched: Sequence[str]) -> dict[str, float]:
    out = {k: float(v) for k, v in row.items() if k.startswith("val_") and finite(v)}
    if finite(row.get("train_loss")):
        out["train_loss"] = float(row["train_loss"])
    out.update({f"hparams/{n}": float(row[n]) for n in searched if finite(row.get(n))})
    return out


class _PerMember(Callback):
    """One tracker run per member, opened at its first row, closed at the end.

    A resumed run (``resumed_at_step`` in ``info``) first removes what this run wrote to the
    tracker (:meth:`_forget`) and logs again every call the committed tables hold
    (:func:`jaxhpo.reporting.callbacks.history`), so the tracker ends as the uninterrupted run's
    whatever the kill interrupted."""

    def on_start(self, run_dir: Path, info: Mapping[str, Any]) -> None:
        self.run_name = Path(run_dir).name
        self.searched = list(info.get("searched", []))
        self.names = list(info.get("hparam_names", []))
        self.runs: dict[int, Any] = {}

    def _rebuild(self, run_dir: Path, info: Mapping[str, Any]) -> None:
        """On resume: forget this run's tracked runs, then log the committed calls again."""
        if info.get("resumed_at_step") is None:
            return
        self._forget()
        for rows, events in history(run_dir)[0]:
            self.on_evaluation(rows, events, run_dir)

    def _forget(self) -> None:
        """Removes the tracked runs this jaxhpo run wrote (subclasses)."""

    def on_evaluation(self, rows, events, run_dir: Path) -> None:
        for row in rows:
            member = int(row["member"])
            if member not in self.runs:
                params = {n: float(row[n]) for n in self.names if finite(row.get(n))}
                self.runs[member] = self._open(member, params)
            self._log(self.runs[member], _metrics(row, self.searched), int(row["step"]))

    def on_end(self, run_dir: Path, members: Any) -> None:
        for _, row in members.iterrows():
            member = int(row["member"])
            final = {
                k: float(v)
                for k, v in row.items()
                if str(k).startswith(("val_", "test_")) and finite(v)
            }
            if member in self.runs:
                self._close(self.runs.pop(member), final, bool(row.get("diverged", False)))
        for run in self.runs.values():
            self._close(run, {}, False)
        self.runs = {}


class WandbCallback(_PerMember):
    """Weights & Biases, one run per member in the group named after the jaxhpo run.

    Args:
      project: the W&B project.
      mode: ``offline`` (default: files under ``dir``, no network), ``online`` or ``disabled``.
      dir: where W&B writes (default: the run directory's ``wandb/``).
    """

    def __init__(self, project: str = "jaxhpo", mode: str = "offline", dir: str | None = None):
        import wandb  # noqa: F401 - fail early, before the run starts, if it is not installed

        self.project, self.mode, self.dir = project, mode, dir

    def on_start(self, run_dir: Path, info: Mapping[str, Any]) -> None:
        super().on_start(run_dir, info)
        self.base = Path(self.dir) if self.dir else Path(run_dir) / "wandb"
        self.base.mkdir(parents=True, exist_ok=True)
        self._rebuild(run_dir, info)

    def _forget(self) -> None:
        """Offline runs are folders under ``dir/wandb`` named after their run id; this run's
        members' ids are known (:func:`_wandb_id`): their folders go (written again from the
        tables). Exact in offline mode; an online run of the same id is resumed by W&B."""
        mine = re.compile(re.escape(_wandb_id(self.run_name, 0)[:-1]) + r"\d+$")
        for folder in sorted((self.base / "wandb").glob("offline-run-*")):
            if mine.match(folder.name.rpartition("-")[2]):
                shutil.rmtree(folder, ignore_errors=True)

    def _open(self, member: int, params: Mapping[str, float]) -> Any:
        import wandb

        room_for_files(len(self.runs) + 1)
        return wandb.init(
            project=self.project,
            mode=self.mode,
            dir=str(self.base),
            group=self.run_name,
            name=f"{self.run_name}/member-{member}",
            id=_wandb_id(self.run_name, member),
            config={"member": member, **params},
            reinit="create_new",
        )

    def _log(self, run: Any, metrics: Mapping[str, float], step: int) -> None:
        run.log(dict(metrics), step=step)

    def _close(self, run: Any, final: Mapping[str, float], diverged: bool) -> None:
        run.summary.update({**final, "diverged": diverged})
        run.finish(exit_code=1 if diverged else 0)


#: open files kept free beside the W&B runs' (the process's own, orbax's, TensorBoard's)
FILE_HEADROOM = 256


def room_for_files(runs: int) -> None:
    """Makes room for ``runs`` open W&B runs: each holds a file until it finishes (offline runs
    cannot be finished and resumed), so a population of about 1,000 members passes the usual
    soft limit of 1,024 open files. The soft limit is raised toward the hard one when
    ``runs`` + :data:`FILE_HEADROOM` would pass it (as Ray raises it at start); past the hard
    limit this raises ``OSError`` naming it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = runs + FILE_HEADROOM
    if soft == resource.RLIM_INFINITY or need <= soft:
        return
    if hard != resource.RLIM_INFINITY and need > hard:
        raise OSError(
            f"WandbCallback: {runs} open W&B runs need {need} open files; the hard limit is "
            f"{hard} (ulimit -Hn): raise it, or track fewer members"
        )
    target = 2 * need if hard == resource.RLIM_INFINITY else min(hard, 2 * need)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class MLflowCallback(_PerMember):
    """MLflow, one run per member in the experiment named after the jaxhpo run.

    Args:
      tracking_uri: e.g. ``sqlite:///path/mlflow.db`` (a local database, no server) or a
        server's URL; default: the run directory's ``mlflow.db``.
      experiment: the MLflow experiment (default: the jaxhpo run's name).
    """

    def __init__(self, tracking_uri: str | None = None, experiment: str | None = None):
        import mlflow  # noqa: F401 - fail early, before the run starts, if it is not installed

        self.tracking_uri, self.experiment = tracking_uri, experiment

    def on_start(self, run_dir: Path, info: Mapping[str, Any]) -> None:
        from mlflow.tracking import MlflowClient

        super().on_start(run_dir, info)
        uri = self.tracking_uri or f"sqlite:///{(Path(run_dir) / 'mlflow.db').resolve()}"
        self.client = MlflowClient(tracking_uri=uri)
        name = self.experiment or self.run_name
        found = self.client.get_experiment_by_name(name)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(name)
        self._rebuild(run_dir, info)

    def _forget(self) -> None:
        """Deletes this run's tracked runs (tag ``jaxhpo.run``) for good (they are written
        again from the tables)."""
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`jaxhpo.run` = '{self.run_name}'"
        )
        for run in runs:
            self.client.delete_run(run.info.run_id)

    def _open(self, member: int, params: Mapping[str, float]) -> Any:
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"member-{member}",
            tags={"jaxhpo.run": self.run_name, "jaxhpo.member": str(member)},
        )
        for k, v in params.items():
            self.client.log_param(run.info.run_id, k, v)
        return run.info.run_id

    def _log(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        for k, v in metrics.items():
            self.client.log_metric(run_id, k.replace("/", "."), v, step=step)

    def _close(self, run_id: str, final: Mapping[str, float], diverged: bool) -> None:
        for k, v in final.items():
            self.client.log_metric(run_id, f"final_{k}", v)
        self.client.set_terminated(run_id, status="FAILED" if diverged else "FINISHED")


def _wandb_id(run_name: str, member: int) -> str:
    """A member's W&B run id: the jaxhpo run's hash and the member id (``3fa4c2d19be07a11m12``),
    the same in every process, so a resume finds the offline folders
    ``offline-run-DATE-ID`` this run wrote."""
    return hashlib.sha1(run_name.encode()).hexdigest()[:16] + f"m{member}"
