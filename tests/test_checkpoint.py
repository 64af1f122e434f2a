"""Checkpoints: atomic, plain data (weights_only), clear errors when damaged."""

import pytest
import torch

from snn_lstm.checkpoint import load_checkpoint, restore_rng_states, rng_states, save_checkpoint
from snn_lstm.errors import UserError

from conftest import payload


def test_round_trip_with_weights_only(tmp_path):
    contents = payload(5, model={"w": torch.arange(3.0)}, config={"a": [1, 2]}, rng=rng_states())
    path = save_checkpoint(contents, tmp_path / "last.pt")
    loaded = torch.load(path, weights_only=True)
    assert loaded["step"] == 5 and torch.equal(loaded["model"]["w"], torch.arange(3.0))
    assert load_checkpoint(path)["config"] == {"a": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp files left


def test_rng_states_restore_the_draws():
    states = rng_states()
    first = torch.rand(4)
    restore_rng_states(states)
    assert torch.equal(torch.rand(4), first)


def test_overwrite_keeps_a_complete_file(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(payload(1), path)
    save_checkpoint(payload(2), path)
    assert load_checkpoint(path)["step"] == 2


def test_truncated_file_is_a_clear_error(tmp_path):
    path = save_checkpoint(payload(model={"w": torch.randn(1000)}), tmp_path / "last.pt")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(UserError, match="cannot be read"):
        load_checkpoint(path)


def test_missing_folder_and_foreign_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(UserError, match="is a folder"):
        load_checkpoint(tmp_path)
    torch.save({"just": "a dict"}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a snnlstm checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
