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
    digest        SHA-256 over every value above (tensors by their bytes)

Integrity: a write goes to a temp file, is fsynced and renamed over the old file,
whose previous version is kept as ``<name>.prev.pt``; a kill at any moment leaves a
complete checkpoint under one of the two names. Loading checks the digest, so a
truncated file or flipped bits are reported instead of resumed from, and
``load_latest`` then falls back to the previous checkpoint.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import random
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from snn_lstm.errors import UserError

CHECKPOINT_FORMAT = 1
# what every checkpoint holds, and of what kind
REQUIRED = {"config": dict, "model_args": dict, "model": dict, "step": int}
log = logging.getLogger("snnlstm.checkpoint")


def payload_digest(value: Any) -> str:
    """SHA-256 over a nest of dicts, lists, tuples, tensors and plain values."""
    digest = hashlib.sha256()

    def feed(item: Any) -> None:
        if isinstance(item, torch.Tensor):
            tensor = item.detach().cpu().contiguous()
            digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(item, dict):
            digest.update(b"{")
            for key, inner in item.items():
                digest.update(repr(key).encode())
                feed(inner)
            digest.update(b"}")
        elif isinstance(item, (list, tuple)):
            digest.update(b"[")
            for inner in item:
                feed(inner)
            digest.update(b"]")
        else:
            digest.update(repr(item).encode())

    feed(value)
    return digest.hexdigest()


def previous_path(path: Path) -> Path:
    return path.with_name(path.stem + ".prev" + path.suffix)


def has_checkpoint(path: Path) -> bool:
    """Whether `path` or its previous version exists (what load_latest can try)."""
    return Path(path).exists() or previous_path(Path(path)).exists()


def save_checkpoint(payload: dict[str, Any], path: Path) -> Path:
    """Write atomically: a temp file in the same folder, fsync, keep the old file as
    <name>.prev.pt, rename, fsync the folder, so a crash leaves either the old
    checkpoint or the new one, never half of one."""
    path = Path(path)
    payload = {"format": CHECKPOINT_FORMAT, **payload}
    payload["digest"] = payload_digest(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"no space left to write checkpoint {path}: free disk space or move paths.run_dir, "
                            "then resume=true (the previous checkpoint is kept)") from error
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
    except Exception as error:  # torch raises many kinds for a damaged file, with paragraphs of advice
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0].split(". ")[0][:160]
        raise UserError(f"checkpoint {path} cannot be read ({reason}): it is damaged or not a snnlstm checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"checkpoint {path} is not a snnlstm checkpoint of format {CHECKPOINT_FORMAT}")
    stored = payload.pop("digest", None)
    if stored is not None and stored != payload_digest(payload):
        raise UserError(f"checkpoint {path} is damaged (its contents do not match its SHA-256): use another checkpoint")
    lacking = [f"{key} ({kind.__name__})" for key, kind in REQUIRED.items()
               if not isinstance(payload.get(key), kind) or isinstance(payload.get(key), bool)]
    if lacking:
        raise UserError(f"checkpoint {path} is incomplete: it lacks {', '.join(lacking)}; use a last.pt or best.pt "
                        "written by snnlstm train")
    return payload


@contextmanager
def reading(path: str | Path):
    """Errors raised while a checkpoint's contents are taken apart (a key missing, a
    value of the wrong kind, weights that do not fit its model) are the checkpoint's:
    one line naming it. A digest proves the file is whole, not that snnlstm wrote it."""
    from snn_lstm.errors import out_of_memory

    try:
        yield
    except UserError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as error:
        if out_of_memory(error):
            raise
        reason = (str(error).strip().splitlines() or [""])[0]
        raise UserError(f"checkpoint {path} is incomplete or inconsistent ({type(error).__name__}: {reason}): use a last.pt "
                        "or best.pt written by snnlstm train") from error


def load_latest(path: Path) -> tuple[dict[str, Any], Path]:
    """The checkpoint at `path`, or its previous version when `path` is missing or
    damaged (said in a warning); leftover temp files of killed writes are removed."""
    path = Path(path)
    for stale in path.parent.glob(".*.tmp"):  # temp files of writes a kill interrupted
        stale.unlink(missing_ok=True)
    previous = previous_path(path)
    try:
        return load_checkpoint(path), path
    except UserError as error:
        if not previous.is_file():
            raise
        log.warning("%s; resuming from the previous checkpoint %s", error, previous)
        return load_checkpoint(previous), previous


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
