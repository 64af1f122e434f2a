"""Where a verb computes: the torch device and the CPU's threads."""

from __future__ import annotations

import torch

from snn_lstm.errors import UserError


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("trainer.device=cuda but no CUDA GPU is visible: use trainer.device=cpu or auto")
    if name not in ("cpu", "cuda"):
        raise UserError(f"trainer.device must be cpu, cuda or auto, got '{name}'")
    return torch.device(name)


def setup_torch(threads: int | None) -> None:
    # The Gaussian surrogate underflows to subnormal floats far from threshold;
    # x86 CPUs compute on subnormals up to 100x slower, and they are 0 for our purposes.
    torch.set_flush_denormal(True)
    if threads:
        torch.set_num_threads(threads)
