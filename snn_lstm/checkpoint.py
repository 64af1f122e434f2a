"""Checkpoints that carry their own recipe and load without running pickled code.

A checkpoint is a dict of tensors and plain Python data only, so
``torch.load(path, weights_only=True)`` reads it:

    format        CHECKPOINT_FORMAT
    config        the resolved run config (plain dict)
    model_args    arguments of snn_lstm.models.build_model
    model         state_dict
    optimizer     state_dict
    step          optimizer steps done
    rng           torch (and CUDA) generator states, Python's random state
    task_state    what the task keeps between steps (figure snapshots, ...)
    best          {"metric", "value", "step"} of the best validation so far
    metrics       the last metrics logged
    tracking      {"uri", "run_id"} of the MLflow run, or None
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import torch

from snn_lstm.errors import UserError

CHECKPOINT_FORMAT = 1


def save_checkpoint(payload: dict[str, Any], path: Path) -> Path:
    """Write atomically: a temp file in the same folder, fsync, rename, fsync the folder,
    so a crash leaves either the old checkpoint or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save({"format": CHECKPOINT_FORMAT, **payload}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist: pass ckpt=PATH to a last.pt or best.pt")
    if not path.is_file():
        raise UserError(f"checkpoint {path} is a folder, not a file: pass the last.pt or best.pt inside it")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a damaged file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"checkpoint {path} cannot be read ({reason}): it is damaged or not a snnlstm checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"checkpoint {path} is not a snnlstm checkpoint of format {CHECKPOINT_FORMAT}")
    return payload


def rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
