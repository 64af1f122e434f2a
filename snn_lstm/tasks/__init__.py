"""Tasks: a dataset, its encoder, a loss and metrics, looked up by `task.name`."""

from __future__ import annotations

from typing import Any

from snn_lstm.errors import UserError
from snn_lstm.tasks.base import Task
from snn_lstm.tasks.sine import SineTask

TASKS: dict[str, type[Task]] = {"sine": SineTask}


def build_task(cfg: dict[str, Any], *, data_dir: str, seed: int, eval_limit: int | None) -> Task:
    name = cfg["name"]
    if name not in TASKS:
        raise UserError(f"unknown task '{name}': choose one of {', '.join(TASKS)}")
    if eval_limit is not None and eval_limit <= 0:
        raise UserError(f"trainer.eval_limit must be a positive integer or null, got {eval_limit}")
    return TASKS[name](cfg, seed=seed, eval_limit=eval_limit)
