"""Everything MLflow: where the store is, one run per training job, what is logged.

Store: `tracking.uri` when set, else $MLFLOW_TRACKING_URI, else an sqlite
database ``<paths.run_dir>/mlflow.db`` with artifacts beside it in
``<paths.run_dir>/mlartifacts``. A URI MLflow could never open (an unknown scheme, a
file store) is refused; a store that fails (down, read-only, full) is an outage.
The client API is used (not the fluent ``mlflow.start_run`` globals), so several
runs can live in one process.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Mapping

from snn_lstm.errors import UserError

log = logging.getLogger("snnlstm.tracking")
BACKLOG = "tracking_backlog.jsonl"  # in the run folder, when the store fails
PARAM_BATCH = 100  # MLflow accepts at most 100 params per request
METRIC_BATCH = 1000


def resolve_tracking_uri(configured: str | None, run_dir: str | Path) -> str:
    """`tracking.uri` when given, else $MLFLOW_TRACKING_URI, else the sqlite store in
    the run folder; refused in one line when MLflow could never open it."""
    # an unreachable server fails over in seconds, not after MLflow's default minutes of retries
    for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"), ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")):
        os.environ.setdefault(name, value)
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if configured:
        check_tracking_uri(configured, "tracking.uri")
        return configured
    if env:
        check_tracking_uri(env, "$MLFLOW_TRACKING_URI")
        return env
    return "sqlite:///" + str(Path(run_dir).resolve() / "mlflow.db")


# what MLflow's tracking-store registry accepts (plugins add theirs through entry points)
STORE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "databricks-uc", "uc")


def check_tracking_uri(uri: str, source: str) -> None:
    import importlib.metadata

    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", uri)
    scheme = match.group(1) if match else ("databricks" if uri == "databricks" else "")
    if scheme in ("", "file"):
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("1", "true"):
            return
        raise UserError(f"{source} {uri} is a file store, which MLflow 3 no longer opens: use sqlite:///<folder>/mlflow.db, "
                        "a server (http://host:port) or a database URL (or set MLFLOW_ALLOW_FILE_STORE=true)")
    plugins = {entry.name for entry in importlib.metadata.entry_points(group="mlflow.tracking_store")}
    if scheme.split("+", 1)[0] not in STORE_SCHEMES and scheme not in plugins:
        raise UserError(f"{source} {uri}: MLflow has no tracking store for '{scheme}:' URIs: use sqlite:///<folder>/mlflow.db, "
                        "a server (http://host:port) or a database URL (postgresql://, mysql://, mssql://)")


def root_cause(error: BaseException) -> str:
    """The first line of the innermost error in a chain (the one worth showing)."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def store_error(uri: str, error: BaseException) -> UserError:
    """One line for a failing store: its innermost cause, and what to do."""
    return UserError(f"MLflow store {uri} failed ({root_cause(error)}): start it, or set tracking.uri / "
                     "MLFLOW_TRACKING_URI to a working store, or tracking=none")


def sqlite_database(uri: str) -> Path | None:
    """The database file of a local sqlite store: sqlite:///<path>, also with SQLite's
    own `file:<path>?mode=ro&uri=true` form; None for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0].removeprefix("file:")
    return Path(path).absolute() if path and path != ":memory:" else None


def _local_artifact_root(uri: str) -> str | None:
    """For an sqlite store, artifacts go in `mlartifacts` beside the database file."""
    database = sqlite_database(uri)
    return (database.parent / "mlartifacts").as_uri() if database is not None else None


@contextmanager
def setup_lock(uri: str):
    """Held while a process first touches a local sqlite store: MLflow creates the
    tables and the experiment on first use, and two processes doing it at once (jobs
    of a parallel sweep starting together) make one fail with "duplicate column". The
    lock is on the store's folder itself, so it leaves no file behind."""
    database = sqlite_database(uri)
    if database is None:
        yield
        return
    folder = database.parent
    folder.mkdir(parents=True, exist_ok=True)
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


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
        try:
            with setup_lock(uri):
                self.client = MlflowClient(tracking_uri=uri)
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
            raise store_error(uri, error) from None
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


class ResilientTracker(Tracker):
    """MLflow that cannot stop a training run: when the store is unreachable at the
    start or fails later, one warning says so and from then on every call is
    appended to a backlog file (JSON lines) in the run folder, which
    `snnlstm sync run=<folder>` replays into MLflow once the store is back."""

    def __init__(self, backlog: Path, uri: str, experiment: str, run_id: str | None, run_name: str | None,
                 tags: Mapping[str, Any] | None, reopen: bool = True):
        self.backlog, self.uri, self.inner, self.run_id = backlog, uri, None, run_id
        # the first record of a backlog: which run its records belong to
        self.start = {"op": "start", "uri": uri, "experiment": experiment, "run_id": run_id, "run_name": run_name,
                      "tags": _str_values(tags or {})}
        try:
            self.inner = MlflowTracker(uri, experiment, run_id, run_name, tags, reopen)
        except Exception as error:  # any failure of the store: keep training
            self._fail(error)
            return
        self.run_id, self.created = self.inner.run_id, self.inner.created
        self.start["run_id"] = self.run_id

    def _fail(self, error: Exception) -> None:
        log.warning("MLflow store %s failed (%s): training goes on; tracking is kept in %s, replay it with "
                    "`snnlstm sync run=%s`", self.uri, root_cause(error), self.backlog, self.backlog.parent)
        self.inner = None
        self._append(self.start)

    def _append(self, record: dict[str, Any]) -> None:
        self.backlog.parent.mkdir(parents=True, exist_ok=True)
        with open(self.backlog, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def _do(self, method: str, record: dict[str, Any], *args: Any) -> None:
        if self.inner is not None:
            try:
                getattr(self.inner, method)(*args)
                return
            except Exception as error:
                self._fail(error)
        self._append(record)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._do("log_params", {"op": "params", "params": _str_values(params)}, params)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        record = {"op": "metrics", "metrics": {k: float(v) for k, v in metrics.items()}, "step": step}
        self._do("log_metrics", record, metrics, step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._do("set_tags", {"op": "tags", "tags": _str_values(tags)}, tags)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._do("log_artifact", {"op": "artifact", "path": str(Path(path).resolve()), "artifact_path": artifact_path},
                 path, artifact_path)

    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None:
        self._do("log_artifacts", {"op": "artifacts", "path": str(Path(folder).resolve()), "artifact_path": artifact_path},
                 folder, artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        self._do("finish", {"op": "finish", "status": status}, status)

    def describe(self) -> str:
        if self.inner is not None:
            return self.inner.describe()
        return f"MLflow store {self.uri} unavailable: tracking kept in {self.backlog} (snnlstm sync run={self.backlog.parent})"


# op -> the fields of its record (what ResilientTracker writes)
BACKLOG_FIELDS = {"start": ("uri", "experiment", "run_id", "run_name", "tags"), "params": ("params",),
                  "metrics": ("metrics", "step"), "tags": ("tags",), "artifact": ("path", "artifact_path"),
                  "artifacts": ("path", "artifact_path"), "finish": ("status",)}


def read_backlog(backlog: Path) -> list[dict[str, Any]]:
    """The records of a backlog, each checked, so that a damaged file is reported as
    such before anything is sent."""
    try:
        lines = backlog.read_text().splitlines()
    except UnicodeDecodeError as error:
        raise UserError(f"{backlog} is not a text file ({error.reason}): it is not a snnlstm tracking backlog")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{backlog} line {number} is not valid JSON ({error.msg}): the backlog is damaged; "
                            "delete that line (its record is lost) and sync again")
        fields = BACKLOG_FIELDS.get(record.get("op")) if isinstance(record, dict) else None
        if fields is None or any(name not in record for name in fields) or (
                record["op"] == "metrics" and not (isinstance(record["step"], int) and all(
                    isinstance(v, (int, float)) for v in record["metrics"].values()))):
            raise UserError(f"{backlog} line {number} is not a tracking record of snnlstm: the backlog is damaged; "
                            "delete that line and sync again")
        records.append(record)
    if not records or records[0]["op"] != "start":
        raise UserError(f"{backlog} does not begin with a start record: it is not a snnlstm tracking backlog")
    return records


def replay(backlog: Path, uri: str | None = None) -> MlflowTracker:
    """Send a backlog's records to MLflow, into the run it names when the store has
    it (else a new run); the file is renamed *.synced.jsonl afterwards."""
    records = read_backlog(backlog)
    start = records[0]
    tracker = MlflowTracker(uri or start["uri"], start["experiment"], start["run_id"], start["run_name"], start["tags"])
    for record in records:
        op = record["op"]
        if op == "params":
            tracker.log_params(record["params"])
        elif op == "metrics":
            tracker.log_metrics(record["metrics"], record["step"])
        elif op == "tags":
            tracker.set_tags(record["tags"])
        elif op == "artifact" and Path(record["path"]).exists():
            tracker.log_artifact(Path(record["path"]), record["artifact_path"])
        elif op == "artifacts" and Path(record["path"]).exists():
            tracker.log_artifacts(Path(record["path"]), record["artifact_path"])
        elif op == "finish":
            tracker.finish(record["status"])
    backlog.replace(backlog.with_suffix(".synced.jsonl"))
    return tracker


def make_tracker(
    backend: str,
    uri: str | None,
    experiment: str,
    run_dir: str | Path,
    run_id: str | None = None,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    reopen: bool = True,
    backlog: Path | None = None,
) -> Tracker:
    """The tracker a config asks for; with `backlog`, a store failure never stops the
    caller (ResilientTracker), without it the failure is a UserError."""
    if backend == "none":
        return Tracker()
    uri = resolve_tracking_uri(uri, run_dir)
    if backlog is not None:
        return ResilientTracker(backlog, uri, experiment, run_id, run_name, tags, reopen)
    return MlflowTracker(uri, experiment, run_id, run_name, tags, reopen)
