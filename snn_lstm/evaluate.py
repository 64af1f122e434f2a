"""`snnlstm evaluate ckpt=PATH [split=test]`: rebuild the model from the checkpoint
alone, print its metrics and log them into the checkpoint's MLflow run (at the
checkpoint's step, under the same names as training: `test/...`).

Only machine settings come from this command's config: where the data lives
(`paths.data_dir`), the device and the tracking store; and `draws=K`, which scores
a classifier (images, spoken digits) by averaging K spike trains per example (logged as `test/acc_drawsK`).
"""

from __future__ import annotations

import logging

import hydra
import torch
from omegaconf import DictConfig

from snn_lstm.checkpoint import load_checkpoint, reading
from snn_lstm.config import CONFIG_PATH
from snn_lstm.devices import select_device, setup_torch
from snn_lstm.errors import UserError, reports_user_errors, run_reporting_errors
from snn_lstm.models import model_from_checkpoint
from snn_lstm.tasks import build_task
from snn_lstm.tasks.classification import ClassificationTask
from snn_lstm.tracking import make_tracker

log = logging.getLogger("snnlstm.evaluate")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    checkpoint = load_checkpoint(cfg.ckpt)
    device = select_device(cfg.device)
    with reading(cfg.ckpt):
        run_config = checkpoint["config"]
        task_config = dict(run_config["task"])
        if cfg.draws is not None:
            task_config["eval_draws"] = cfg.draws
        setup_torch(run_config["trainer"]["threads"])
        task = build_task(
            task_config,
            encoder=run_config["encoder"]["name"],
            data_dir=cfg.paths.data_dir,
            seed=run_config["seed"],
            eval_limit=run_config["trainer"]["eval_limit"],
            cache_dir=cfg.paths.cache_dir,
        )
        model = model_from_checkpoint(checkpoint, f"checkpoint {cfg.ckpt}")
        if (model.backbone.input_size, model.readout.out_features) != (task.input_size, task.output_size):
            raise UserError(f"checkpoint {cfg.ckpt} is a model of {model.backbone.input_size} inputs and "
                            f"{model.readout.out_features} outputs, and its task's data here gives {task.input_size} and "
                            f"{task.output_size}: evaluate it on the data it was trained on (paths.data_dir)")
    if cfg.draws is not None and not isinstance(task, ClassificationTask):
        raise UserError(f"draws applies to classification tasks, and {cfg.ckpt} is a {task.name} model: drop draws=")
    splits = ("val", *task.final_splits)
    if cfg.split not in splits:
        raise UserError(f"split must be one of {', '.join(splits)} for {task.name}, got '{cfg.split}'")
    model.to(device)
    metrics = task.score(model, cfg.split, device)
    if cfg.draws is not None:
        metrics = {f"{name}_draws{cfg.draws}": value for name, value in metrics.items()}
    for name, value in metrics.items():
        print(f"{name}={value!r}")

    saved = checkpoint.get("tracking") if isinstance(checkpoint.get("tracking"), dict) else {}
    tracker = make_tracker(
        cfg.tracking.backend,
        saved.get("uri") or cfg.tracking.uri,
        cfg.tracking.experiment,
        cfg.paths.run_dir,
        run_id=saved.get("run_id"),
        run_name=f"evaluate-{task.name}",
        tags={"task": task.name, "model": run_config["model"]["name"], "evaluated_checkpoint": cfg.ckpt},
        reopen=False,
    )
    tracker.log_metrics(metrics, checkpoint["step"])
    if tracker.created:
        tracker.finish("FINISHED")
    log.info("logged to %s", tracker.describe())
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="evaluate")
@reports_user_errors("evaluate")
def hydra_app(cfg: DictConfig) -> None:
    with torch.no_grad():
        evaluate(cfg)


def main() -> None:
    run_reporting_errors("evaluate", hydra_app)


if __name__ == "__main__":
    main()
