"""One MLflow parent run per sweep, one child run per job.

A Hydra multirun (`snnlstm train -m ...`, any launcher: the basic one, joblib,
submitit on SLURM or locally) and a `snnlstm search` each open a parent run
tagged ``sweep_id``; every training job's run carries the same ``sweep_id``,
its job number and MLflow's ``mlflow.parentRunId`` tag, so the dashboard nests
the jobs under their sweep. Jobs may run in other processes or on other
machines: a multirun's parent is announced in ``<hydra.sweep.dir>/mlflow_sweep.json``,
which each job reads (the sweep folder is shared, as Hydra's launchers need).

At the end the parent gets the count of jobs per status and the best job by the
task's monitor metric (``val/best_<monitor>``, which every run logs); it is
FINISHED when every job finished, else FAILED.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import os
import socket
import uuid
from pathlib import Path
from typing import Any, Mapping

from hydra.experimental.callback import Callback

from snn_lstm.tracking import MlflowTracker, make_tracker

log = logging.getLogger("snnlstm.sweeps")
SWEEP_FILE = "mlflow_sweep.json"
PARENT_TAG = "mlflow.parentRunId"
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED", "RUNNING")


def new_sweep_id() -> str:
    return f"{dt.datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def worker_name() -> str:
    """Which process ran a job: tells parallel workers (and cluster nodes) apart."""
    return f"{socket.gethostname()}:{os.getpid()}"


def child_tags(parent_run_id: str, sweep_id: str, job: int | str) -> dict[str, str]:
    return {PARENT_TAG: parent_run_id, "sweep_id": sweep_id, "sweep_job": str(job)}


def open_parent(tracking: Mapping[str, Any], run_dir: str | Path, run_name: str, tags: Mapping[str, Any],
                run_id: str | None = None) -> MlflowTracker | None:
    """The parent run (a new one, or `run_id` reopened); None without tracking or
    when the store fails (the jobs still track themselves, with their own backlog)."""
    if tracking["backend"] == "none":
        return None
    try:
        return make_tracker(tracking["backend"], tracking["uri"], tracking["experiment"], run_dir, run_id=run_id,
                            run_name=run_name, tags=tags)
    except Exception as error:  # a store outage must not stop the sweep
        log.warning("no MLflow parent run for this sweep (%s): the jobs are tracked as separate runs", error)
        return None


def child_runs(parent: MlflowTracker, status: str | None = None) -> list:
    """The runs whose parent is `parent` (only those in `status` when given)."""
    experiment = parent.client.get_run(parent.run_id).info.experiment_id
    condition = f"tags.`{PARENT_TAG}` = '{parent.run_id}'" + (f" and attributes.status = '{status}'" if status else "")
    return parent.client.search_runs([experiment], filter_string=condition)


def best_value(run) -> float | None:
    """A run's best validation value of its task's monitor, negated when higher is better,
    so that the lowest is the best across tasks; None if it has none."""
    tags = run.data.tags
    value = run.data.metrics.get(f"val/best_{tags.get('monitor')}")
    if value is None or tags.get("monitor_mode") not in ("min", "max"):
        return None
    return value if tags["monitor_mode"] == "min" else -value


def summarise(parent: MlflowTracker) -> str:
    """Log the jobs' statuses and the best job on the parent; returns the parent's
    final status (FINISHED when every job finished)."""
    children = child_runs(parent)
    statuses = [child.info.status for child in children]
    # every status, also at 0: a continued search overwrites the counts of its earlier stop
    parent.log_metrics({"sweep/jobs": len(children),
                        **{f"sweep/{status.lower()}": statuses.count(status) for status in RUN_STATUSES}}, 0)
    scored = [child for child in children if best_value(child) is not None]
    if scored:
        best = min(scored, key=best_value)
        monitor = best.data.tags["monitor"]
        parent.log_metrics({f"sweep/best_{monitor}": best.data.metrics[f"val/best_{monitor}"]}, 0)
        parent.set_tags({"best_run_id": best.info.run_id, "best_job": best.data.tags.get("sweep_job", "")})
    return "FINISHED" if children and statuses.count("FINISHED") == len(children) else "FAILED"


# ----------------------------------------------------------------- Hydra multiruns
def multirun_tags() -> dict[str, str]:
    """Inside a Hydra multirun job: the tags that make its run a child of the sweep's parent."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return {}
    announcement = Path(hydra_cfg.sweep.dir) / SWEEP_FILE
    if not announcement.exists():
        return {}
    sweep = json.loads(announcement.read_text())
    return child_tags(sweep["parent_run_id"], sweep["sweep_id"], hydra_cfg.job.num)


class MlflowSweepCallback(Callback):
    """Hydra callback (conf/train.yaml, hydra.callbacks): opens the parent run when
    a multirun starts, in the launching process, and closes it when the multirun
    ends, or when that process exits because a job failed."""

    def __init__(self) -> None:
        self.parent: MlflowTracker | None = None

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        from omegaconf import OmegaConf

        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_id = new_sweep_id()
        launcher = str(config.hydra.launcher.get("_target_", "")).rsplit(".", 1)[-1]
        self.parent = open_parent(
            OmegaConf.to_container(config.tracking, resolve=True), config.paths.run_dir,
            run_name=f"sweep-{config.task.name}-{sweep_id}",
            tags={"sweep_id": sweep_id, "sweep_dir": str(sweep_dir), "launcher": launcher, "task": config.task.name,
                  "worker": worker_name()},
        )
        if self.parent is None:
            return
        overrides = list(config.hydra.overrides.task)
        self.parent.log_params({"sweep.overrides": " ".join(overrides) or "(none)",
                                **{f"sweep.params.{k}": v for k, v in (config.hydra.sweeper.get("params") or {}).items()}})
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / SWEEP_FILE).write_text(json.dumps({"sweep_id": sweep_id, "parent_run_id": self.parent.run_id}))
        log.info("sweep %s: parent MLflow run %s", sweep_id, self.parent.run_id)
        # a failed job ends the multirun without on_multirun_end: the parent is closed as FAILED at exit
        atexit.register(self._close, completed=False)

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        self._close(completed=True)

    def _close(self, completed: bool) -> None:
        if self.parent is None:
            return
        parent, self.parent = self.parent, None
        try:
            status = summarise(parent)
            parent.finish(status if completed else "FAILED")
        except Exception as error:
            log.warning("could not close the sweep's parent run %s: %s", parent.run_id, error)
