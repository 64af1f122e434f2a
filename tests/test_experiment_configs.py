"""Every experiment file composes and trains for two steps (tiny, no tracking)."""

from pathlib import Path

import pytest
import torch

from snn_lstm.train import train

from conftest import compose_train

EXPERIMENTS = sorted(
    str(p.relative_to(Path(__file__).resolve().parents[1] / "conf" / "experiment").with_suffix(""))
    for p in (Path(__file__).resolve().parents[1] / "conf" / "experiment").rglob("*.yaml")
)
TINY = ["trainer.steps=2", "trainer.eval_every=1", "trainer.eval_limit=8", "trainer.batch_size=4", "trainer.progress=false", "tracking=none"]


def test_there_are_experiments():
    assert "paper/fig4/slstm" in EXPERIMENTS


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_two_steps(experiment, tmp_path):
    cfg = compose_train([f"experiment={experiment}", *TINY, f"paths.run_dir={tmp_path}"])
    assert cfg.tags.paper_table and cfg.tags.row  # paper rows carry their MLflow tags
    train(cfg, tmp_path / "run")
    checkpoint = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert checkpoint["step"] == 2
