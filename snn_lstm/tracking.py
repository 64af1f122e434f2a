"""Everything MLflow: where the store is, one run per training job, what is logged.

Store: $MLFLOW_TRACKING_URI when set, else `tracking.uri`, else an sqlite
database ``<paths.run_dir>/mlflow.db`` with artifacts beside it in
``<paths.run_dir>/mlartifacts``. The client API is used (not the fluent
``mlflow.start_run`` globals), so several runs can live in one process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from snn_lstm.errors import UserError

PARAM_BATCH = 100  # MLflow accepts at most 100 params per request
METRIC_BATCH = 1000


def resolve_tracking_uri(configured: str | None, run_dir: str | Path) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if configured:
        return configured
    return "sqlite:///" + str(Path(run_dir).resolve() / "mlflow.db")


def _local_artifact_root(uri: str) -> str | None:
    """For an sqlite store, artifacts go in `mlartifacts` beside the database file."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
    return None


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"model": {"hidden_size": 100}} -> {"model.hidden_size": "100"}."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


class Tracker:
    """No tracking: every call does nothing. Also the interface of MlflowTracker."""

    run_id: str | None = None
    uri: str | None = None
    created: bool = False

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def set_tags(self, tags: Mapping[str, Any]) -> None: ...

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...

    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None: ...

    def finish(self, status: str = "FINISHED") -> None: ...

    def describe(self) -> str:
        return "tracking off"


class MlflowTracker(Tracker):
    def __init__(
        self,
        uri: str,
        experiment: str,
        run_id: str | None = None,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        reopen: bool = True,
    ):
        """Attach to `run_id` if the store has it (marking it RUNNING when `reopen`),
        else create a new run; `created` says which."""
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        try:
            if run_id is not None and self._run_exists(run_id):
                self.run_id, self.created = run_id, False
                if reopen:
                    self.client.update_run(run_id, status="RUNNING")
            else:
                found = self.client.get_experiment_by_name(experiment)
                experiment_id = (
                    found.experiment_id
                    if found is not None
                    else self.client.create_experiment(experiment, artifact_location=_local_artifact_root(uri))
                )
                run = self.client.create_run(experiment_id, run_name=run_name, tags=_str_values(tags or {}))
                self.run_id, self.created = run.info.run_id, True
        except MlflowException as error:
            raise UserError(f"MLflow store {uri} failed: {str(error).splitlines()[0]}") from error
        self.experiment = experiment

    def _run_exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
            return True
        except MlflowException:
            return False

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(key, str(value)[:6000]) for key, value in params.items()]
        for start in range(0, len(items), PARAM_BATCH):
            self.client.log_batch(self.run_id, params=items[start : start + PARAM_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        for start in range(0, len(items), METRIC_BATCH):
            self.client.log_batch(self.run_id, metrics=items[start : start + METRIC_BATCH])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in _str_values(tags).items()])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)

    def describe(self) -> str:
        return f"MLflow run {self.run_id} in {self.uri} (experiment '{self.experiment}')"


def _str_values(tags: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in tags.items()}


def make_tracker(
    backend: str,
    uri: str | None,
    experiment: str,
    run_dir: str | Path,
    run_id: str | None = None,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    reopen: bool = True,
) -> Tracker:
    if backend == "none":
        return Tracker()
    if backend != "mlflow":
        raise UserError(f"tracking.backend must be mlflow or none, got '{backend}'")
    return MlflowTracker(resolve_tracking_uri(uri, run_dir), experiment, run_id, run_name, tags, reopen)
