"""`snnlstm train`: config -> task -> model -> loop -> MLflow and checkpoints.

    snnlstm train                                   # the sine task, spiking LSTM
    snnlstm train model=lstm trainer.steps=2000     # plain LSTM baseline
    snnlstm train -m seed=0,1,2                     # a sweep, one MLflow run per job
    snnlstm train resume=true                       # continue the newest run of the task

Everything random is seeded: on the CPU the same command gives the same
weights, also when a run is stopped and resumed (`last.pt` holds the optimizer,
the step and the generator states; batches depend only on the step).
"""

from __future__ import annotations

import logging
import math
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from snn_lstm.checkpoint import has_checkpoint, load_latest, reading, restore_rng_states, rng_states, save_checkpoint
from snn_lstm.config import CHECKPOINT_FILES, CONFIG_PATH, check_options, instantiate, to_plain
from snn_lstm.recipes import RECIPE_TAG, recipe_hash
from snn_lstm.devices import machine_description, select_device, setup_torch
from snn_lstm.distributed import Group, join, leave
from snn_lstm.energy import energy_metrics
from snn_lstm.errors import UserError, reports_user_errors, run_reporting_errors
from snn_lstm.memory import memory_metrics
from snn_lstm.models import build_model, model_args
from snn_lstm.sweeps import multirun_tags, worker_name
from snn_lstm.tasks import build_task
from snn_lstm.tasks.base import Task
from snn_lstm.tasks.classification import ClassificationTask
from snn_lstm.tracking import BACKLOG, Tracker, flatten, make_tracker

log = logging.getLogger("snnlstm.train")

# Parts of the config that define what is being trained: a resumed run must
# match its checkpoint on these (it may change steps, logging, device, ...).
RECIPE_KEYS = ("task", "encoder", "model", "optimizer", "seed")
RECIPE_TRAINER_KEYS = ("batch_size", "grad_clip", "lr_schedule", "warmup_steps")


def learning_rate_factor(trainer: dict[str, Any]):
    """The multiplier of the base learning rate at each step: a linear warm-up over
    `warmup_steps`, then constant or a cosine from 1 to 0 at the last step."""
    schedule, warmup, steps = trainer["lr_schedule"], trainer["warmup_steps"], trainer["steps"]
    if not 0 <= warmup < steps:
        raise UserError(f"trainer.warmup_steps must lie in [0, trainer.steps), got {warmup}")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def recipe_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two resolved configs' recipes."""
    old = flatten({k: saved.get(k) for k in RECIPE_KEYS})
    new = flatten({k: current.get(k) for k in RECIPE_KEYS})
    # a decaying schedule is laid out over the run's length, so that is part of it too
    trainer_keys = RECIPE_TRAINER_KEYS + (("steps",) if current["trainer"]["lr_schedule"] != "constant" else ())
    for key in trainer_keys:
        old[f"trainer.{key}"] = str(saved["trainer"].get(key))
        new[f"trainer.{key}"] = str(current["trainer"].get(key))
    return [f"{k}: {old.get(k)} -> {new.get(k)}" for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]


# Called after each validation with (step, value of the monitor metric); True prunes the run.
ValidationHook = Callable[[int, float], bool]


class Pruned(Exception):
    """A search pruned the run after a validation (its checkpoints are kept)."""


class NonFinite(UserError):
    """The loss or its gradient became non-finite (trainer.on_nonfinite=stop)."""


@dataclass
class Run:
    """What the loop reads and changes: the pieces it drives, where it stands, and
    where it writes. `checkpoint()` saves all of it that a resume needs."""

    config: dict[str, Any]
    task: Task
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    tracker: Tracker
    out_dir: Path
    group: Group
    step: int = 0
    best: dict[str, Any] = field(default_factory=dict)  # {"metric", "value", "step"} of best.pt
    carry: tuple[torch.Tensor, torch.Tensor] | None = None  # recurrent state between batches (truncated BPTT)
    running: dict[str, float] = field(default_factory=lambda: {"loss_sum": 0.0, "count": 0, "skipped": 0})

    @property
    def trainer(self) -> dict[str, Any]:
        return self.config["trainer"]

    def checkpoint(self, name: str, metrics: dict[str, float]) -> None:
        if not self.group.main:
            return
        save_checkpoint({
            "config": self.config,
            "model_args": model_args(self.config["model"], self.task.input_size, self.task.output_size, self.task.readout),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "rng": rng_states(),
            "task_state": self.task.state_dict(),
            "carry": None if self.carry is None else tuple(s.cpu() for s in self.carry),
            "running": dict(self.running),
            "best": self.best,
            "metrics": metrics,
            "tracking": {"uri": self.tracker.uri, "run_id": self.tracker.run_id} if self.tracker.run_id else None,
        }, self.out_dir / name)


def train_step(run: Run, net: torch.nn.Module) -> None:
    """One optimizer update on the batch of step `run.step`; a non-finite loss or
    gradient skips the update or stops the run (trainer.on_nonfinite)."""
    task, trainer, step = run.task, run.trainer, run.step
    x, y = (run.group.shard(t) for t in task.train_batch(step, trainer["batch_size"]))
    carry = None if task.starts_fresh(step, trainer["batch_size"]) or run.carry is None else \
        tuple(s.to(run.device) for s in run.carry)
    output, state = net(x.to(run.device), carry)
    run.carry = tuple(s.detach() for s in state) if task.carries_state else None
    loss = task.loss(output, y.to(run.device))
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()  # also for a non-finite loss: under DDP every process takes part in each reduction
    loss_value = run.group.mean(loss.item())
    # one reduction gives the norm (before any clipping) and says whether every gradient is finite
    norm = (torch.nn.utils.clip_grad_norm_(run.model.parameters(), trainer["grad_clip"]) if trainer["grad_clip"]
            else torch.nn.utils.get_total_norm([p.grad for p in run.model.parameters() if p.grad is not None]))
    if math.isfinite(loss_value) and math.isfinite(norm):
        run.optimizer.step()
        run.running["loss_sum"] += loss_value
        run.running["count"] += 1
    elif trainer["on_nonfinite"] == "skip":
        run.running["skipped"] += 1
        log.warning("step %d: non-finite loss or gradient (%s), batch skipped (%d so far)", step, loss.item(),
                    run.running["skipped"])
    else:
        raise NonFinite(
            f"the loss or its gradient became non-finite ({loss.item()}) at step {step}: lower optimizer.lr, set "
            f"trainer.grad_clip or trainer.on_nonfinite=skip (the last good checkpoint is {run.out_dir / 'last.pt'})"
        )
    run.scheduler.step()
    run.step += 1
    task.after_update(run.step, run.model)


def log_training(run: Run, seconds_per_step: float) -> None:
    """train/ metrics since the last call."""
    metrics = {"train/lr": run.scheduler.get_last_lr()[0], "train/step_time_s": seconds_per_step,
               "train/skipped_batches": run.running["skipped"]}
    if run.running["count"]:
        metrics["train/loss"] = run.running["loss_sum"] / run.running["count"]
    run.tracker.log_metrics(metrics, run.step)
    run.running.update(loss_sum=0.0, count=0)


def validate(run: Run) -> float:
    """The val/ metrics, best.pt when the monitor improved, and last.pt; returns the monitor's value."""
    metrics = run.task.score(run.model, "val", run.device)
    value = metrics[run.best["metric"]]
    improved = run.task.is_better(value, run.best["value"])
    if improved:
        run.best = {"metric": run.best["metric"], "value": value, "step": run.step}
    run.tracker.log_metrics({**metrics, f"val/best_{run.task.monitor}": run.best["value"]}, run.step)
    log.info("step %d: %s", run.step, _format(metrics))
    if improved:
        run.checkpoint("best.pt", metrics)
    run.checkpoint("last.pt", metrics)
    return value


def finish(run: Run) -> None:
    """After the last step: the final splits' metrics, the activity and energy proxy of
    the trained backbone, how far back a classifier's gradient and cells reach
    (snn_lstm.memory), the task's artifacts and the checkpoints, all into the run."""
    metrics: dict[str, float] = {}
    for split in run.task.final_splits:
        metrics.update(run.task.score(run.model, split, run.device))
    log.info("final (step %d): %s", run.step, _format(metrics))
    samples = run.task.sample_inputs(run.trainer["batch_size"]).to(run.device)
    activity = energy_metrics(run.model.backbone, samples.transpose(0, 1), run.task.presentations)
    log.info("activity and energy proxy: %s", _format(activity))
    metrics.update(activity)
    if isinstance(run.task, ClassificationTask):
        targets = run.task.labels["test"][: len(samples)].to(run.device)
        memory = memory_metrics(run.model, samples, targets, run.task.loss)
        log.info("memory: %s", _format(memory))
        metrics.update(memory)
    run.tracker.log_metrics(metrics, run.step)
    run.checkpoint("last.pt", metrics)
    for artifact in run.task.write_artifacts(run.model, run.out_dir):
        folder = str(artifact.parent.relative_to(run.out_dir)) if artifact.parent != run.out_dir else None
        run.tracker.log_artifact(artifact, folder)
        log.info("wrote %s", artifact)
    for name in ("last.pt", "best.pt"):
        if (run.out_dir / name).exists():
            run.tracker.log_artifact(run.out_dir / name, "checkpoints")


def train_loop(run: Run, stop: "StopRequests", on_validation: ValidationHook | None = None) -> float:
    """Steps run.step .. trainer.steps; returns the best validation value of the monitor."""
    trainer, steps = run.trainer, run.trainer["steps"]
    net = torch.nn.parallel.DistributedDataParallel(run.model) if run.group.world > 1 else run.model
    run.model.train()
    tic, logged_at = time.perf_counter(), run.step
    progress = tqdm(total=steps, initial=run.step, disable=not trainer["progress"], desc="train")
    while run.step < steps:
        train_step(run, net)
        progress.update()
        done = run.step
        if done % trainer["log_every"] == 0 or done == steps:
            if run.running["count"]:
                progress.set_postfix(loss=f"{run.running['loss_sum'] / run.running['count']:.4g}")
            log_training(run, (time.perf_counter() - tic) / (done - logged_at))
            tic, logged_at = time.perf_counter(), done
        if run.group.main and (done % trainer["eval_every"] == 0 or done == steps):
            value = validate(run)
            if on_validation is not None and on_validation(done, value) and done < steps:
                raise Pruned(f"pruned at step {done} ({run.best['metric']}={value:.6g})")
        if stop.requested and done < steps:
            run.checkpoint("last.pt", {})
            raise Stopped(f"stopped by {stop.requested} at step {done}",
                          f"{run.out_dir / 'last.pt'} written; continue with resume=true run_name={run.out_dir.name}")
    progress.close()
    if run.group.main:
        finish(run)
    return run.best["value"]


def train(cfg: DictConfig, out_dir: Path, tags: dict[str, str] | None = None,
          on_validation: ValidationHook | None = None) -> float:
    """Train as `cfg` says, writing into `out_dir`; returns the best validation
    value of the task's monitor metric (what a sweeper optimises). `tags` go on
    the MLflow run (a sweep's parent, ...) besides the config's `tags`."""
    check_options(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = to_plain(cfg)
    recipe = recipe_hash(cfg)
    group, device = join(select_device(config["trainer"]["device"]), config["trainer"]["batch_size"], config["run_name"])
    try:
        run, run_id = start_run(cfg, config, out_dir, group, device)
        run.tracker = make_tracker(
            config["tracking"]["backend"] if group.main else "none",
            config["tracking"]["uri"],
            config["tracking"]["experiment"],
            config["paths"]["run_dir"],
            run_id=run_id,
            run_name=f"{run.task.name}-{config['model']['name']}-seed{config['seed']}",
            tags={"task": run.task.name, "model": config["model"]["name"], "seed": config["seed"],
                  "monitor": run.task.monitor, "monitor_mode": run.task.monitor_mode, "worker": worker_name(),
                  RECIPE_TAG: recipe, "machine": machine_description(device), **(tags or {}), **config["tags"]},
            backlog=out_dir / BACKLOG,
        )
        if config["overwrite"] and not config["resume"]:  # asked for, and only now that the run is set to start
            for name in (*CHECKPOINT_FILES, BACKLOG):
                (out_dir / name).unlink(missing_ok=True)
        return _tracked(run, on_validation)
    finally:
        leave(group)


def start_run(cfg: DictConfig, config: dict[str, Any], out_dir: Path, group: Group,
              device: torch.device) -> tuple[Run, str | None]:
    """The task, model and optimizer the config describes, at step 0 or, with
    resume=true, where out_dir/last.pt stopped; and the MLflow run to continue, if any."""
    trainer = config["trainer"]
    setup_torch(trainer["threads"])
    torch.manual_seed(config["seed"])
    random.seed(config["seed"])
    task = build_task(config["task"], encoder=config["encoder"]["name"], data_dir=config["paths"]["data_dir"],
                      seed=config["seed"], eval_limit=trainer["eval_limit"], cache_dir=config["paths"]["cache_dir"])
    if trainer["epochs"] is not None:
        trainer["steps"] = task.steps_for_epochs(trainer["epochs"], trainer["batch_size"])
    task.check_batch_size(trainer["batch_size"])
    args = model_args(config["model"], task.input_size, task.output_size, task.readout)
    model = build_model(**args).to(device)
    optimizer = instantiate(cfg.optimizer, "optimizer", params=model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor(trainer))
    run = Run(config, task, model, optimizer, scheduler, device, Tracker(), out_dir, group,
              best={"metric": f"val/{task.monitor}", "value": None, "step": None})
    return run, resume(run, args) if config["resume"] else None


def resume(run: Run, args: dict[str, Any]) -> str | None:
    """Loads out_dir/last.pt (or the copy before it) into `run`, once it is sure the
    checkpoint belongs to this config; returns the checkpoint's MLflow run id."""
    last_path, trainer = run.out_dir / "last.pt", run.trainer
    if not has_checkpoint(last_path):
        raise UserError(
            f"resume=true but there is no checkpoint to resume in {run.out_dir}: "
            "drop resume=true to start a new run, or pass run_name=<folder> of the run to continue"
        )
    checkpoint, used = load_latest(last_path)
    with reading(used):
        differences = recipe_differences(checkpoint["config"], run.config)
        if differences:
            raise UserError(f"cannot resume {last_path}: the config differs from the checkpoint's ({'; '.join(differences)})")
        altered = sorted(key for key in args.keys() | checkpoint["model_args"].keys()
                         if checkpoint["model_args"].get(key) != args.get(key))
        if altered:
            raise UserError(f"cannot resume {used}: its model_args disagree with its own config in {', '.join(altered)}: "
                            "the checkpoint was altered; resume from another one")
        if checkpoint["step"] > trainer["steps"]:
            raise UserError(f"cannot resume {used}: it is at step {checkpoint['step']}, beyond the budget of "
                            f"{trainer['steps']} steps: give trainer.steps (or trainer.epochs) at least that, or a new "
                            "run_name")
        run.model.load_state_dict(checkpoint["model"])
        run.optimizer.load_state_dict(checkpoint["optimizer"])
        run.scheduler.load_state_dict(checkpoint["scheduler"])
        run.task.load_state_dict(checkpoint["task_state"])
        restore_rng_states(checkpoint["rng"])
        run.step, run.best, run.carry = checkpoint["step"], checkpoint["best"], checkpoint["carry"]
        run.running = checkpoint.get("running", run.running)
        run_id = (checkpoint.get("tracking") or {}).get("run_id")
    log.info("resuming %s at step %d", used, run.step)
    return run_id


def _tracked(run: Run, on_validation: ValidationHook | None) -> float:
    """The loop, with the run's parameters logged first and its MLflow status set at the end."""
    resolved_yaml = run.out_dir / "config_resolved.yaml"
    resolved_yaml.write_text(OmegaConf.to_yaml(run.config))
    if run.step == 0:
        run.tracker.log_params(flatten(run.config))
        run.tracker.log_artifact(resolved_yaml)
        if (run.out_dir / ".hydra").is_dir():
            run.tracker.log_artifacts(run.out_dir / ".hydra", "hydra")
        run.tracker.set_tags({"run_dir": str(run.out_dir)})
        run.task.after_update(0, run.model)
    else:
        run.tracker.set_tags({"resumed_from_step": run.step})
    try:
        with StopRequests() as stop:
            best_value = train_loop(run, stop, on_validation)
    except Pruned:
        run.tracker.set_tags({"pruned": "true"})
        run.tracker.finish("FINISHED")
        raise
    except (KeyboardInterrupt, Stopped):
        run.tracker.finish("KILLED")
        raise
    except BaseException:
        run.tracker.finish("FAILED")
        raise
    run.tracker.finish("FINISHED")
    log.info("checkpoints: %s and %s", run.out_dir / "last.pt", run.out_dir / "best.pt")
    log.info("tracking: %s", run.tracker.describe())
    return best_value


class Stopped(Exception):
    """Training stopped on request (SIGINT, SIGTERM) after writing last.pt; `reason`
    says by what and where, the message adds how to continue."""

    def __init__(self, reason: str, advice: str = ""):  # one argument: as unpickled from a worker
        super().__init__(f"{reason}: {advice}" if advice else reason)
        self.reason = reason


class StopRequests:
    """While active, SIGINT and SIGTERM ask the loop to stop after the step in flight
    (a checkpoint of a half-done step would not resume exactly); a second SIGINT
    interrupts at once."""

    SIGNALS = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}

    def __init__(self):
        self.requested: str | None = None
        self.previous: dict[int, Any] = {}

    def _handle(self, number: int, frame) -> None:
        if self.requested and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = self.SIGNALS[number]
        log.warning("%s received: stopping after the current step (SIGINT again to interrupt at once)", self.requested)

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            self.previous = {number: signal.signal(number, self._handle) for number in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)


def _format(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.6g}" for k, v in metrics.items())


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@reports_user_errors("train")
def hydra_app(cfg: DictConfig) -> float:
    try:
        return train(cfg, Path(HydraConfig.get().runtime.output_dir), tags=multirun_tags())
    except Stopped as stopped:
        print(f"snnlstm train: {stopped}", file=sys.stderr)
        sys.exit(130)


def main() -> None:
    run_reporting_errors("train", hydra_app)


if __name__ == "__main__":
    main()
