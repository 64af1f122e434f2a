"""Tasks: a dataset, its encoder, a loss and metrics, looked up by `task.name`."""

from __future__ import annotations

from typing import Any

from snn_lstm.encoders import build_encoder
from snn_lstm.errors import UserError
from snn_lstm.tasks.base import Task
from snn_lstm.tasks.images import SequentialImageTask
from snn_lstm.tasks.language import LanguageModelTask
from snn_lstm.tasks.sine import SineTask
from snn_lstm.tasks.speech import SpokenDigitTask

# task.kind -> implementation; several task configs share one (smnist, pmnist, ...)
TASKS: dict[str, type[Task]] = {"sine": SineTask, "image": SequentialImageTask, "language": LanguageModelTask,
                                 "speech": SpokenDigitTask}


def task_class(kind: str) -> type[Task]:
    if kind not in TASKS:
        raise UserError(f"unknown task kind '{kind}': choose one of {', '.join(TASKS)}")
    return TASKS[kind]


def build_task(
    cfg: dict[str, Any], *, encoder: str, data_dir: str, seed: int, eval_limit: int | None, cache_dir: str = "cache"
) -> Task:
    implementation = task_class(cfg["kind"])
    if eval_limit is not None and eval_limit <= 0:
        raise UserError(f"trainer.eval_limit must be a positive integer or null, got {eval_limit}")
    task = implementation(
        cfg, build_encoder(encoder), seed=seed, eval_limit=eval_limit, data_dir=data_dir, cache_dir=cache_dir
    )
    task.name = cfg["name"]
    return task
