"""`snnlstm search`: hyperparameter search with Optuna over `snnlstm train`.

    snnlstm search space=sine n_trials=20          # start, or continue, the study "sine"
    snnlstm search space=smnist study=smnist_lr storage=postgresql://...   # shared by several workers

The search space (`conf/space/<name>.yaml`) gives the `snnlstm train` overrides
every trial gets and, per override key, an Optuna distribution:

    params:
      optimizer.lr: {type: float, low: 1.0e-4, high: 3.0e-2, log: true}
      model.hidden_size: {type: int, low: 50, high: 300, step: 50}
      model.surrogate: {type: categorical, choices: [gaussian, atan]}

Each trial is one training run (in `<paths.run_dir>/search/<study>/trial_<n>`)
whose objective is the best validation value of the task's monitor metric
(minimised for loss-like metrics, maximised for accuracy). Trials report every
validation to Optuna; the median pruner stops a trial whose value is worse than
the median of earlier trials at the same step. The study lives in sqlite
(`optuna.db` beside the trials) by default: running the same command again
continues it. Trials are kept alive by a heartbeat; one whose process died
(a crash, SIGKILL, a lost node) is marked FAIL once its heartbeat is older than
two intervals and retried with the same parameters, resuming from its last
checkpoint. Several `snnlstm search` processes may share one study (one per
GPU, or per node on a database server): Optuna hands each its own trials.

MLflow: one parent run per study (tag `sweep_id`), one child run per trial
(tags `optuna_trial`, `sweep_id`, `mlflow.parentRunId`).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from snn_lstm.checkpoint import has_checkpoint
from snn_lstm.config import CONFIG_PATH, to_plain
from snn_lstm.errors import UserError, reports_user_errors, run_reporting_errors
from snn_lstm.sweeps import child_runs, child_tags, new_sweep_id, open_parent, summarise, worker_name
from snn_lstm.tasks import task_class
from snn_lstm.tracking import MlflowTracker
from snn_lstm.train import NonFinite, Pruned, Stopped, train

log = logging.getLogger("snnlstm.search")

PARAM_TYPES = ("float", "int", "categorical")


# ----------------------------------------------------------------- the space
def check_space(params: dict[str, Any]) -> None:
    """One line for the first malformed entry of a search space."""
    if not params:
        raise UserError("the search space has no params: add `space.params.<override key>: {type: float, low: .., high: ..}`")
    for key, spec in params.items():
        where = f"space.params.{key}"
        if not isinstance(spec, dict) or spec.get("type") not in PARAM_TYPES:
            raise UserError(f"{where} needs type: one of {', '.join(PARAM_TYPES)}")
        if spec["type"] == "categorical":
            if not spec.get("choices"):
                raise UserError(f"{where}: a categorical parameter needs a non-empty `choices` list")
            continue
        low, high = spec.get("low"), spec.get("high")
        if not isinstance(low, (int, float)) or not isinstance(high, (int, float)) or not low < high:
            raise UserError(f"{where}: needs numbers low < high, got low={low} high={high}")
        if spec.get("log") and low <= 0:
            raise UserError(f"{where}: a log-scaled range needs low > 0, got {low}")
        if spec.get("log") and spec.get("step"):
            raise UserError(f"{where}: give either log: true or a step, not both")
        unknown = set(spec) - {"type", "low", "high", "log", "step"}
        if unknown:
            raise UserError(f"{where}: unknown keys {sorted(unknown)} (allowed: type, low, high, log, step, choices)")


def suggest(trial, params: dict[str, Any]) -> dict[str, Any]:
    """The trial's value of every parameter (its stored values when it is a retry)."""
    values = {}
    for key, spec in params.items():
        if spec["type"] == "float":
            values[key] = trial.suggest_float(key, spec["low"], spec["high"], log=bool(spec.get("log")),
                                              step=spec.get("step"))
        elif spec["type"] == "int":
            values[key] = trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")),
                                            step=int(spec.get("step") or 1))
        else:
            values[key] = trial.suggest_categorical(key, list(spec["choices"]))
    return values


def trial_config(base: list[str], values: dict[str, Any], search_cfg: DictConfig) -> DictConfig:
    """The `snnlstm train` config of one trial: the space's overrides, the trial's
    values, and the search's own paths and tracking (so trials land beside it)."""
    own = {f"{group}.{key}": value for group in ("paths", "tracking") for key, value in to_plain(search_cfg[group]).items()}
    overrides = [*base, *(f"{key}={override_value(value)}" for key, value in {**values, **own}.items())]
    return compose(config_name="train", overrides=overrides)


def override_value(value: Any) -> str:
    """A value as Hydra's override grammar reads it back (quoted only when it must be)."""
    if isinstance(value, str) and value.replace("_", "").replace("-", "").replace(".", "").replace("/", "").isalnum():
        return value
    return json.dumps(value)


def first_values(params: dict[str, Any]) -> dict[str, Any]:
    return {k: (s["choices"][0] if s["type"] == "categorical" else s["low"]) for k, s in params.items()}


# ----------------------------------------------------------------- Optuna
def open_study(cfg: DictConfig, direction: str, space: dict[str, Any], folder: Path):
    import optuna
    from optuna.exceptions import ExperimentalWarning

    warnings.filterwarnings("ignore", category=ExperimentalWarning)
    # ask/tell with our own heartbeat thread (Heartbeat) is what the warning says is missing
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder.mkdir(parents=True, exist_ok=True)
    url = cfg.storage or f"sqlite:///{(folder / 'optuna.db').resolve()}"
    storage = optuna.storages.RDBStorage(
        url, heartbeat_interval=cfg.heartbeat_s, grace_period=2 * cfg.heartbeat_s,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
    )
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=cfg.pruner_startup_trials,
                                          n_warmup_steps=cfg.pruner_warmup_steps)
              if cfg.pruner == "median" else optuna.pruners.NopPruner())
    study = optuna.create_study(storage=storage, study_name=cfg.study, direction=direction, pruner=pruner,
                                load_if_exists=True)
    # a continued study must not replay the draws of its first process: offset the seed by the trials so far
    seed = cfg.seed + len(study.get_trials(deepcopy=False))
    study.sampler = (optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.pruner_startup_trials)
                     if cfg.sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed))
    if study.direction.name.lower() != direction:
        raise UserError(f"study '{cfg.study}' in {url} maximises/minimises the other way: pick another study=")
    saved = study.user_attrs.get("space")
    if saved is None:
        study.set_user_attr("space", space)
    elif saved != space:
        raise UserError(f"study '{cfg.study}' in {url} was started with another search space: continue it with the "
                        "same space and train overrides, or give this one its own study=<name>")
    return study, storage, url


class Heartbeat:
    """Records a running trial's heartbeat in the storage every interval, from a
    thread, so that other processes can tell a live trial from a dead one."""

    def __init__(self, storage, trial_id: int, interval: float):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while True:
            self.storage.record_heartbeat(self.trial_id)
            if self.stop.wait(self.interval):
                return

    def __enter__(self) -> "Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def trial_counts(study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def close_dead_children(parent: MlflowTracker, study) -> None:
    """Child runs of trials that died without a checkpoint stay RUNNING in MLflow: mark them KILLED."""
    dead = {str(t.number) for t in study.get_trials(deepcopy=False) if t.state.name == "FAIL"}
    if not dead:
        return
    for run in child_runs(parent, status="RUNNING"):
        if run.data.tags.get("optuna_trial") in dead:
            parent.client.set_terminated(run.info.run_id, status="KILLED")


# ----------------------------------------------------------------- the search
def search(cfg: DictConfig, folder: Path) -> dict[str, Any]:
    space = to_plain(cfg.space)
    check_space(space["params"])
    probe = trial_config(space["train"], first_values(space["params"]), cfg)  # bad keys fail here, in one line
    task = task_class(probe.task.kind)
    metric = f"val/{task.monitor}"
    direction = "minimize" if task.monitor_mode == "min" else "maximize"
    study, storage, url = open_study(cfg, direction, space, folder)

    parent_id, sweep_id = study.user_attrs.get("mlflow_parent_run_id"), study.user_attrs.get("sweep_id")
    if sweep_id is None:
        sweep_id = new_sweep_id()
        study.set_user_attr("sweep_id", sweep_id)
    parent = open_parent(to_plain(cfg.tracking), cfg.paths.run_dir, run_name=f"search-{cfg.study}",
                         tags={"sweep_id": sweep_id, "launcher": "optuna", "optuna_study": cfg.study,
                               "task": probe.task.name, "worker": worker_name()},
                         run_id=parent_id)
    if parent is not None and parent.created:
        study.set_user_attr("mlflow_parent_run_id", parent.run_id)
        parent.log_params({"search.train": " ".join(space["train"]) or "(none)", "search.metric": metric,
                           "search.direction": direction, "search.sampler": cfg.sampler, "search.pruner": cfg.pruner,
                           **{f"search.params.{k}": json.dumps(v) for k, v in space["params"].items()}})
    log.info("study '%s' (%s %s, %d trials): %s", cfg.study, direction, metric, cfg.n_trials, trial_counts(study))

    status = "FAILED"
    try:
        run_trials(cfg, study, storage, space, folder, parent, sweep_id)
        status = "FINISHED"
    except (KeyboardInterrupt, Stopped):
        status = "KILLED"
        raise
    finally:
        best = best_trial(study)
        if parent is not None:
            close_dead_children(parent, study)
            summarise(parent)
            if best is not None:
                parent.log_metrics({"search/best_value": best.value}, 0)
                parent.set_tags({"best_trial": best.number, **{f"best.{k}": v for k, v in best.params.items()}})
            parent.finish(status)
    if best is None:
        raise UserError(f"no trial of study '{cfg.study}' completed: see {folder / 'search.log'}")
    return {"study": cfg.study, "metric": metric, "best_value": best.value, "best_trial": best.number,
            "best_params": best.params, "trials": trial_counts(study), "storage": url}


def best_trial(study):
    """The best complete trial, or None before any completed."""
    from optuna.trial import TrialState

    return study.best_trial if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) else None


def run_trials(cfg: DictConfig, study, storage, space: dict[str, Any], folder: Path, parent: MlflowTracker | None,
               sweep_id: str) -> None:
    """Ask, train, tell until the study holds `n_trials` finished (complete or pruned) trials."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials
    from optuna.trial import TrialState

    retry = RetryHeartbeatStaleTrialCallback(max_retry=3)
    failures, waiting = 0, False
    while True:
        fail_stale_trials(study)  # dead processes' trials: FAIL, and a retry is queued
        counts = trial_counts(study)
        finished = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
        if finished >= cfg.n_trials:
            return
        if finished + counts.get("RUNNING", 0) >= cfg.n_trials and not counts.get("WAITING"):
            if not waiting:
                log.info("%d trial(s) running in other processes: waiting for them to finish or to go silent",
                         counts["RUNNING"])
            waiting = True
            time.sleep(cfg.heartbeat_s)  # the last trials run elsewhere: wait for them, or for their heartbeat to stop
            continue
        waiting = False
        trial = study.ask()
        storage.record_heartbeat(trial._trial_id)  # at once: a trial without a heartbeat is never found dead
        stored = storage.get_trial(trial._trial_id)
        root = retry.retried_trial_number(stored)
        trial_dir = folder / f"trial_{trial.number if root is None else root}"
        values = suggest(trial, space["params"])
        resume = has_checkpoint(trial_dir / "last.pt")
        log.info("trial %d%s: %s", trial.number, f" (retry of {root}, resuming)" if resume else "", values)
        trial_cfg = trial_config(space["train"], values, cfg)
        trial_cfg.resume = resume
        tags = {} if parent is None else {**child_tags(parent.run_id, sweep_id, trial.number),
                                          "optuna_trial": str(trial.number), "optuna_study": cfg.study}

        def report(step: int, value: float) -> bool:
            trial.report(value, step)
            return trial.should_prune()

        try:
            with Heartbeat(storage, trial._trial_id, cfg.heartbeat_s):
                value = train(trial_cfg, trial_dir, tags=tags, on_validation=report)
        except Pruned as pruned:
            log.info("trial %d %s", trial.number, pruned)
            study.tell(trial, state=TrialState.PRUNED)
            continue
        except NonFinite as error:
            failures += 1
            log.warning("trial %d failed: %s", trial.number, error)
            study.tell(trial, state=TrialState.FAIL)
            if failures > cfg.n_trials:
                raise UserError(f"{failures} trials diverged (non-finite loss): narrow the search space") from None
            continue
        except (Stopped, KeyboardInterrupt):
            study.tell(trial, state=TrialState.FAIL)
            retry(study, storage.get_trial(trial._trial_id))  # the next `snnlstm search` resumes it first
            raise
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        if value is None or not math.isfinite(value):
            study.tell(trial, state=TrialState.FAIL)
            continue
        study.tell(trial, value)
        log.info("trial %d: %.6g (best so far %.6g, trial %d)", trial.number, value, study.best_value,
                 study.best_trial.number)
        if parent is not None:
            parent.log_metrics({"trial/value": value}, trial.number)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="search")
@reports_user_errors("search")
def hydra_app(cfg: DictConfig) -> None:
    try:
        result = search(cfg, Path(HydraConfig.get().runtime.output_dir))
    except Stopped as stopped:
        print(f"snnlstm search: the trial in flight was {stopped.reason}, its checkpoint written; the same command "
              "resumes it and continues the study", file=sys.stderr)
        sys.exit(130)
    print(json.dumps(result, indent=2, default=str))


def main() -> None:
    run_reporting_errors("search", hydra_app)


if __name__ == "__main__":
    main()
