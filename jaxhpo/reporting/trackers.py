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

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxhpo.reporting.callbacks import Callback, finite


def _metrics(row: Mapping[str, Any], searched: Sequence[str]) -> dict[str, float]:
    out = {k: float(v) for k, v in row.items() if k.startswith("val_") and finite(v)}
    if finite(row.get("train_loss")):
        out["train_loss"] = float(row["train_loss"])
    out.update({f"hparams/{n}": float(row[n]) for n in searched if finite(row.get(n))})
    return out


class _PerMember(Callback):
    """One tracker run per member, opened at its first row, closed at the end."""

    def on_start(self, run_dir: Path, info: Mapping[str, Any]) -> None:
        self.run_name = Path(run_dir).name
        self.searched = list(info.get("searched", []))
        self.names = list(info.get("hparam_names", []))
        self.runs: dict[int, Any] = {}

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

    def _open(self, member: int, params: Mapping[str, float]) -> Any:
        import wandb

        return wandb.init(
            project=self.project,
            mode=self.mode,
            dir=str(self.base),
            group=self.run_name,
            name=f"{self.run_name}/member-{member}",
            config={"member": member, **params},
            reinit="create_new",
        )

    def _log(self, run: Any, metrics: Mapping[str, float], step: int) -> None:
        run.log(dict(metrics), step=step)

    def _close(self, run: Any, final: Mapping[str, float], diverged: bool) -> None:
        run.summary.update({**final, "diverged": diverged})
        run.finish(exit_code=1 if diverged else 0)


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
