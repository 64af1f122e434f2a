"""Where a verb computes: the torch device and the CPU's threads."""

from __future__ import annotations

import platform
from pathlib import Path

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


def machine_description(device: torch.device) -> str:
    """What a run computed on, for the record beside its wall time: the GPU's name, or
    the CPU's model, vector instructions and the threads torch uses; and torch's version."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return (f"cpu: {_cpu_model()} ({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
