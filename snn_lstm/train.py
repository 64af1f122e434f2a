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
from pathlib import Path
from typing import Any, Callable

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from snn_lstm.checkpoint import has_checkpoint, load_latest, reading, restore_rng_states, rng_states, save_checkpoint
from snn_lstm.config import CHECKPOINT_FILES, CONFIG_PATH, check_options, instantiate, to_plain
from snn_lstm.devices import select_device, setup_torch
from snn_lstm.distributed import Group, join, leave
from snn_lstm.energy import energy_metrics
from snn_lstm.errors import UserError, reports_user_errors, run_reporting_errors
from snn_lstm.models import build_model, model_args
from snn_lstm.sweeps import multirun_tags, worker_name
from snn_lstm.tasks import build_task
from snn_lstm.tasks.base import Task
from snn_lstm.tracking import BACKLOG, Tracker, flatten, make_tracker

log = logging.getLogger("snnlstm.train")

# Parts of the config that define what is being trained: a resumed run must
# match its checkpoint on these (it may change steps, logging, device, ...).
RECIPE_KEYS = ("task", "encoder", "model", "surrogate", "optimizer", "seed")
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


def evaluate_split(task: Task, model: torch.nn.Module, split: str, device: torch.device) -> dict[str, float]:
    was_training = model.training
    model.eval()
    metrics = task.evaluate(model, split, device)
    model.train(was_training)
    return {f"{split}/{name}": value for name, value in metrics.items()}


# Called after each validation with (step, value of the monitor metric); True prunes the run.
ValidationHook = Callable[[int, float], bool]


class Pruned(Exception):
    """A search pruned the run after a validation (its checkpoints are kept)."""


class NonFinite(UserError):
    """The loss or its gradient became non-finite (trainer.on_nonfinite=stop)."""


def train(cfg: DictConfig, out_dir: Path, tags: dict[str, str] | None = None,
          on_validation: ValidationHook | None = None) -> float:
    """Train as `cfg` says, writing into `out_dir`; returns the best validation
    value of the task's monitor metric (what a sweeper optimises). `tags` go on
    the MLflow run (a sweep's parent, ...) besides the config's `tags`."""
    check_options(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = to_plain(cfg)
    trainer = config["trainer"]
    group, device = join(select_device(trainer["device"]), trainer["batch_size"], config["run_name"])
    try:
        return _train(cfg, config, out_dir, group, device, tags or {}, on_validation)
    finally:
        leave(group)


def _train(cfg: DictConfig, config: dict[str, Any], out_dir: Path, group: Group, device: torch.device,
           tags: dict[str, str], on_validation: ValidationHook | None) -> float:
    trainer = config["trainer"]
    setup_torch(trainer["threads"])
    torch.manual_seed(config["seed"])
    random.seed(config["seed"])

    task = build_task(
        config["task"],
        encoder=config["encoder"]["name"],
        data_dir=config["paths"]["data_dir"],
        seed=config["seed"],
        eval_limit=trainer["eval_limit"],
        cache_dir=config["paths"]["cache_dir"],
    )
    if trainer["epochs"] is not None:
        trainer["steps"] = task.steps_for_epochs(trainer["epochs"], trainer["batch_size"])
    task.check_batch_size(trainer["batch_size"])
    args = model_args(config["model"], config["surrogate"], task.input_size, task.output_size, task.readout)
    model = build_model(**args).to(device)
    optimizer = instantiate(cfg.optimizer, "optimizer", params=model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor(trainer))

    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    start_step, best, run_id = 0, {"metric": f"val/{task.monitor}", "value": None, "step": None}, None
    carry = None  # the recurrent state handed from one step to the next (truncated BPTT)
    running = {"loss_sum": 0.0, "count": 0, "skipped": 0}  # train/loss since the last log; skipped batches
    if config["resume"]:
        if not has_checkpoint(last_path):
            raise UserError(
                f"resume=true but there is no checkpoint to resume in {out_dir}: "
                "drop resume=true to start a new run, or pass run_name=<folder> of the run to continue"
            )
        checkpoint, used = load_latest(last_path)
        with reading(used):
            differences = recipe_differences(checkpoint["config"], config)
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
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            task.load_state_dict(checkpoint["task_state"])
            restore_rng_states(checkpoint["rng"])
            start_step, best, carry = checkpoint["step"], checkpoint["best"], checkpoint["carry"]
            running = checkpoint.get("running", running)
            run_id = (checkpoint.get("tracking") or {}).get("run_id")
        log.info("resuming %s at step %d", used, start_step)

    tracker = make_tracker(
        config["tracking"]["backend"] if group.main else "none",
        config["tracking"]["uri"],
        config["tracking"]["experiment"],
        config["paths"]["run_dir"],
        run_id=run_id,
        run_name=f"{task.name}-{config['model']['name']}-seed{config['seed']}",
        tags={"task": task.name, "model": config["model"]["name"], "seed": config["seed"], "monitor": task.monitor,
              "monitor_mode": task.monitor_mode, "worker": worker_name(), **tags, **config["tags"]},
        backlog=out_dir / BACKLOG,
    )
    if config["overwrite"] and not config["resume"]:  # asked for, and only now that the run is set to start
        for name in (*CHECKPOINT_FILES, BACKLOG):
            (out_dir / name).unlink(missing_ok=True)
    try:
        with StopRequests() as stop:
            best_value = _train_loop(config, task, model, optimizer, scheduler, device, tracker, start_step, best, carry,
                                     running, out_dir, stop, group, on_validation)
    except Pruned:
        tracker.set_tags({"pruned": "true"})
        tracker.finish("FINISHED")
        raise
    except (KeyboardInterrupt, Stopped):
        tracker.finish("KILLED")
        raise
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish("FINISHED")
    log.info("checkpoints: %s and %s", last_path, best_path)
    log.info("tracking: %s", tracker.describe())
    return best_value


def _train_loop(
    config: dict[str, Any],
    task: Task,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    tracker: Tracker,
    start_step: int,
    best: dict[str, Any],
    carry: tuple[torch.Tensor, torch.Tensor] | None,
    running: dict[str, float],
    out_dir: Path,
    stop: "StopRequests",
    group: Group = Group(),
    on_validation: ValidationHook | None = None,
) -> float:
    trainer = config["trainer"]
    steps = trainer["steps"]
    resolved_yaml = out_dir / "config_resolved.yaml"
    resolved_yaml.write_text(OmegaConf.to_yaml(config))
    if start_step == 0:
        tracker.log_params(flatten(config))
        tracker.log_artifact(resolved_yaml)
        hydra_dir = out_dir / ".hydra"
        if hydra_dir.is_dir():
            tracker.log_artifacts(hydra_dir, "hydra")
        tracker.set_tags({"run_dir": str(out_dir)})
        task.after_update(0, model)
    else:
        tracker.set_tags({"resumed_from_step": start_step})

    def checkpoint(path: Path, step: int, metrics: dict[str, float]) -> None:
        if not group.main:
            return
        save_checkpoint(
            {
                "config": config,
                "model_args": model_args(config["model"], config["surrogate"], task.input_size, task.output_size, task.readout),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "rng": rng_states(),
                "task_state": task.state_dict(),
                "carry": None if carry is None else tuple(s.cpu() for s in carry),
                "running": dict(running),
                "best": best,
                "metrics": metrics,
                "tracking": {"uri": tracker.uri, "run_id": tracker.run_id} if tracker.run_id else None,
            },
            path,
        )

    net = torch.nn.parallel.DistributedDataParallel(model) if group.world > 1 else model
    model.train()
    tic, logged_at = time.perf_counter(), start_step
    progress = tqdm(range(start_step, steps), initial=start_step, total=steps, disable=not trainer["progress"], desc="train")
    metrics: dict[str, float] = {}
    for step in progress:
        x, y = (group.shard(t) for t in task.train_batch(step, trainer["batch_size"]))
        if task.starts_fresh(step, trainer["batch_size"]):
            carry = None
        elif carry is not None:
            carry = tuple(s.to(device) for s in carry)
        output, state = net(x.to(device), carry)
        carry = tuple(s.detach() for s in state) if task.carries_state else None
        loss = task.loss(output, y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # also for a non-finite loss: under DDP every process takes part in each reduction
        loss_value = group.mean(loss.item())
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        # one reduction gives the norm (before any clipping) and says whether every gradient is finite
        norm = (torch.nn.utils.clip_grad_norm_(model.parameters(), trainer["grad_clip"]) if trainer["grad_clip"]
                else torch.nn.utils.get_total_norm(grads))
        finite = math.isfinite(loss_value) and math.isfinite(norm)
        if finite:
            optimizer.step()
            running["loss_sum"], running["count"] = running["loss_sum"] + loss_value, running["count"] + 1
        elif trainer["on_nonfinite"] == "skip":
            running["skipped"] += 1
            log.warning("step %d: non-finite loss or gradient (%s), batch skipped (%d so far)", step, loss.item(),
                        running["skipped"])
        else:
            raise NonFinite(
                f"the loss or its gradient became non-finite ({loss.item()}) at step {step}: lower optimizer.lr, set "
                f"trainer.grad_clip or trainer.on_nonfinite=skip (the last good checkpoint is {out_dir / 'last.pt'})"
            )
        scheduler.step()
        done = step + 1
        task.after_update(done, model)

        if done % trainer["log_every"] == 0 or done == steps:
            elapsed = time.perf_counter() - tic
            metrics = {
                "train/lr": scheduler.get_last_lr()[0],
                "train/step_time_s": elapsed / (done - logged_at),
                "train/skipped_batches": running["skipped"],
            }
            if running["count"]:
                metrics["train/loss"] = running["loss_sum"] / running["count"]
                progress.set_postfix(loss=f"{metrics['train/loss']:.4g}")
            tracker.log_metrics(metrics, done)
            running.update(loss_sum=0.0, count=0)
            tic, logged_at = time.perf_counter(), done

        if group.main and (done % trainer["eval_every"] == 0 or done == steps):
            metrics = evaluate_split(task, model, "val", device)
            value = metrics[best["metric"]]
            improved = task.is_better(value, best["value"])
            if improved:
                best = {"metric": best["metric"], "value": value, "step": done}
            tracker.log_metrics({**metrics, f"val/best_{task.monitor}": best["value"]}, done)
            log.info("step %d: %s", done, _format(metrics))
            if improved:
                checkpoint(out_dir / "best.pt", done, metrics)
            checkpoint(out_dir / "last.pt", done, metrics)
            if on_validation is not None and on_validation(done, value) and done < steps:
                raise Pruned(f"pruned at step {done} ({best['metric']}={value:.6g})")

        if stop.requested and done < steps:
            checkpoint(out_dir / "last.pt", done, metrics)
            raise Stopped(f"stopped by {stop.requested} at step {done}",
                          f"{out_dir / 'last.pt'} written; continue with resume=true run_name={out_dir.name}")

    if not group.main:
        return best["value"]
    final_metrics: dict[str, float] = {}
    for split in task.final_splits:
        final_metrics.update(evaluate_split(task, model, split, device))
    log.info("final (step %d): %s", steps, _format(final_metrics))
    with torch.no_grad():
        activity = energy_metrics(model.backbone, task.sample_inputs(trainer["batch_size"]).transpose(0, 1).to(device))
    log.info("activity and energy proxy: %s", _format(activity))
    final_metrics.update(activity)
    tracker.log_metrics(final_metrics, steps)
    checkpoint(out_dir / "last.pt", steps, final_metrics)

    for artifact in task.write_artifacts(model, out_dir):
        tracker.log_artifact(artifact, str(artifact.parent.relative_to(out_dir)) if artifact.parent != out_dir else None)
        log.info("wrote %s", artifact)
    for name in ("last.pt", "best.pt"):
        if (out_dir / name).exists():
            tracker.log_artifact(out_dir / name, "checkpoints")
    return best["value"]


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
