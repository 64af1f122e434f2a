"""Shared fixtures: composed configs, a clean environment for subprocess runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

import snn_lstm.config  # noqa: F401  (registers the schemas and resolvers)

BIN = Path(sys.executable).parent
CONFIG_MODULE = "snn_lstm.conf"


def compose_train(overrides: list[str] | None = None):
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name="train", overrides=overrides or [])


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for running the installed `snnlstm`: offline, no inherited MLflow store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


def snnlstm(args: list[str], cwd: Path, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    """Run the installed console script, as a user would."""
    result = subprocess.run(
        [str(BIN / "snnlstm"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snnlstm {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result
