"""IDX reading, MNIST/EMNIST/generic datasets and the sequential image tasks,
on small IDX files that the tests write themselves (no network)."""

import dataclasses
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from snn_lstm.data.idx import MNIST, emnist, load_split, read_idx, write_idx
from snn_lstm.errors import UserError
from snn_lstm.checkpoint import load_checkpoint
from snn_lstm.models import build_model, model_from_checkpoint
from snn_lstm.tasks import build_task

from conftest import TINY_IMAGES, snnlstm, write_tiny_idx


def image_cfg(**changes):
    cfg = {"name": "smnist", "kind": "image", "readout": "last", "hidden_size": 16, "dataset": "idx", "emnist_split": "balanced",
           "folder": "tiny", "layout": "rows", "permutation_seed": 0, "val_size": 16}
    return {**cfg, **changes}


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_idx_round_trip(tmp_path, name):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data, digest = read_idx(write_idx(tmp_path / name, array))
    assert np.array_equal(data, array) and len(digest) == 64


def test_corrupt_header_and_truncation_are_clear(tmp_path):
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(UserError, match="not an IDX file"):
        read_idx(tmp_path / "bad.idx")
    path = write_idx(tmp_path / "cut.idx", np.zeros((5, 4, 4), np.uint8))
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(UserError, match="damaged"):
        read_idx(path)
    (tmp_path / "broken.idx.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="cannot be read"):
        read_idx(tmp_path / "broken.idx.gz")


def test_mnist_checks_sizes_and_checksums(tmp_path):
    write_tiny_idx(tmp_path / "mnist")
    with pytest.raises(UserError, match="does not match its known checksum"):
        load_split(MNIST, tmp_path, "train")
    unchecked = dataclasses.replace(MNIST, sha256={})
    with pytest.raises(UserError, match="has 96 examples, mnist has 60000"):
        load_split(unchecked, tmp_path, "train")


def test_missing_dataset_offline_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=r"mnist is not in .*mnist .*set paths.data_dir"):
        load_split(MNIST, tmp_path, "train")


def test_emnist_images_are_transposed_back(tmp_path):
    images = np.zeros((3, 28, 28), np.uint8)
    images[:, 5, :] = 255  # stored: row 5 lit; EMNIST stores column-major, so it is column 5
    for part in ("train", "test"):
        write_idx(tmp_path / "emnist" / f"emnist-balanced-{part}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / "emnist" / f"emnist-balanced-{part}-labels-idx1-ubyte.gz", np.array([0, 1, 46], np.uint8))
    source = dataclasses.replace(emnist("balanced"), sizes={"train": 3, "test": 3})
    loaded, labels = load_split(source, tmp_path, "train")
    assert loaded[:, :, 5].min() == 255 and loaded[:, 5, :].sum() == 255 * 3
    assert labels.tolist() == [0, 1, 46] and emnist("balanced").sizes == {"train": 112800, "test": 18800}


def test_layouts(tiny_data_dir):
    rows = build_task(image_cfg(), encoder="identity", data_dir=tiny_data_dir, seed=0, eval_limit=None)
    pixels = build_task(image_cfg(layout="pixels"), encoder="identity", data_dir=tiny_data_dir, seed=0, eval_limit=None)
    permuted = build_task(image_cfg(layout="permuted_pixels"), encoder="identity", data_dir=tiny_data_dir, seed=0, eval_limit=None)
    again = build_task(image_cfg(layout="permuted_pixels"), encoder="identity", data_dir=tiny_data_dir, seed=5, eval_limit=None)
    other = build_task(image_cfg(layout="permuted_pixels", permutation_seed=1), encoder="identity", data_dir=tiny_data_dir,
                       seed=0, eval_limit=None)
    image = rows.images["test"][:1]
    assert rows.input_size == 28 and pixels.input_size == 1 and rows.output_size == 10
    assert torch.equal(rows.sequences(image)[0], image[0].float() / 255)
    assert torch.equal(pixels.sequences(image)[0, :, 0], image[0].flatten().float() / 255)
    assert sorted(permuted.permutation.tolist()) == list(range(784))
    assert torch.equal(permuted.permutation, again.permutation)  # fixed by permutation_seed, not by the run seed
    assert not torch.equal(permuted.permutation, other.permutation)
    assert torch.equal(permuted.sequences(image)[0, :, 0], image[0].flatten()[permuted.permutation].float() / 255)


def test_pixels_per_step_groups_consecutive_pixels_of_the_order(tiny_data_dir):
    for layout in ("pixels", "permuted_pixels"):
        one = build_task(image_cfg(layout=layout), encoder="identity", data_dir=tiny_data_dir, seed=0, eval_limit=None)
        four = build_task(image_cfg(layout=layout, pixels_per_step=4), encoder="identity", data_dir=tiny_data_dir, seed=0,
                          eval_limit=None)
        image = one.images["test"][:2]
        assert four.input_size == 4 and four.sequences(image).shape == (2, 196, 4)
        assert torch.equal(four.sequences(image).flatten(1), one.sequences(image).flatten(1))  # same order, 4 per step
    with pytest.raises(UserError, match="pixel layouts"):
        build_task(image_cfg(pixels_per_step=4), encoder="identity", data_dir=tiny_data_dir, seed=0, eval_limit=None)
    with pytest.raises(UserError, match="must divide the 784 pixels"):
        build_task(image_cfg(layout="pixels", pixels_per_step=5), encoder="identity", data_dir=tiny_data_dir, seed=0,
                   eval_limit=None)


def test_sequence_readout_trains_every_step_on_the_label_and_classifies_on_the_last(tiny_data_dir):
    import torch.nn.functional as F

    task = build_task(image_cfg(readout="sequence"), encoder="identity", data_dir=tiny_data_dir, seed=0, eval_limit=None)
    torch.manual_seed(0)
    output, labels = torch.randn(5, 28, 10), torch.randint(0, 10, (5,))
    per_step = torch.stack([F.cross_entropy(output[:, t], labels) for t in range(28)])
    assert torch.allclose(task.loss(output, labels), per_step.mean())
    soft = F.softmax(torch.randn(5, 10), -1)  # distillation targets are distributions
    assert torch.allclose(task.loss(output, soft), torch.stack([F.cross_entropy(output[:, t], soft) for t in range(28)]).mean())
    sequence = build_model({"name": "lstm", "hidden_size": 8, "num_layers": 1}, 28, 10, "sequence")
    last = build_model({"name": "lstm", "hidden_size": 8, "num_layers": 1}, 28, 10, "last")
    last.load_state_dict(sequence.state_dict())
    scored = build_task(image_cfg(), encoder="identity", data_dir=tiny_data_dir, seed=0, eval_limit=None)
    cpu = torch.device("cpu")
    assert task.evaluate(sequence, "test", cpu) == scored.evaluate(last, "test", cpu)  # the last step's logits decide


def test_bernoulli_batches_are_fresh_per_step_and_fixed_for_evaluation(tiny_data_dir):
    task = build_task(image_cfg(), encoder="bernoulli", data_dir=tiny_data_dir, seed=0, eval_limit=None)
    x0, y0 = task.train_batch(0, 8)
    assert set(x0.unique().tolist()) <= {0.0, 1.0} and x0.shape == (8, 28, 28)
    assert torch.equal(task.train_batch(0, 8)[0], x0)  # a step's batch is replayable
    per_epoch = task.train_size // 8
    assert not torch.equal(task.train_batch(per_epoch, 8)[1], y0)  # the next epoch is reshuffled
    model = build_model({"name": "lstm", "hidden_size": 8, "num_layers": 1}, 28, 10, "last")
    assert task.evaluate(model, "test", torch.device("cpu")) == task.evaluate(model, "test", torch.device("cpu"))


def test_evaluation_averages_the_probabilities_of_k_draws(tiny_data_dir):
    from snn_lstm.encoders import SPLIT_STREAMS, bernoulli_spikes, make_generator

    torch.manual_seed(0)
    model = build_model({"name": "lstm", "hidden_size": 8, "num_layers": 1}, 28, 10, "last").eval()
    single = build_task(image_cfg(), encoder="bernoulli", data_dir=tiny_data_dir, seed=0, eval_limit=None)
    triple = build_task(image_cfg(eval_draws=3), encoder="bernoulli", data_dir=tiny_data_dir, seed=0, eval_limit=None)
    x, y = single.sequences(single.images["test"]), single.labels["test"]  # 40 images: one evaluation batch
    with torch.no_grad():
        probs = [model(bernoulli_spikes(x, make_generator(k, SPLIT_STREAMS["test"], 0)))[0].softmax(-1) for k in range(3)]
    one, mean = probs[0], sum(probs) / 3
    assert single.evaluate(model, "test", torch.device("cpu")) == pytest.approx(
        {"acc": (one.argmax(-1) == y).float().mean().item(), "loss": -one[range(40), y].log().mean().item()}, rel=1e-5)
    assert triple.evaluate(model, "test", torch.device("cpu")) == pytest.approx(
        {"acc": (mean.argmax(-1) == y).float().mean().item(), "loss": -mean[range(40), y].log().mean().item()}, rel=1e-5)
    assert triple.presentations == 3
    # the values themselves are the same on every draw: one pass, the single-draw score
    values_once = build_task(image_cfg(), encoder="identity", data_dir=tiny_data_dir, seed=0, eval_limit=None)
    values_thrice = build_task(image_cfg(eval_draws=3), encoder="identity", data_dir=tiny_data_dir, seed=0, eval_limit=None)
    assert values_thrice.presentations == 1
    assert values_thrice.evaluate(model, "test", torch.device("cpu")) == values_once.evaluate(model, "test", torch.device("cpu"))
    with pytest.raises(UserError, match="eval_draws must be at least 1"):
        build_task(image_cfg(eval_draws=0), encoder="bernoulli", data_dir=tiny_data_dir, seed=0, eval_limit=None)


def save_teacher(path, task_cfg, hidden=8):
    from snn_lstm.checkpoint import save_checkpoint
    from snn_lstm.models import model_args

    args = model_args({"name": "lstm", "hidden_size": hidden, "num_layers": 1}, 28, 10, "mean")
    teacher = build_model(**args)
    save_checkpoint({"config": {"task": task_cfg, "encoder": {"name": "identity"}}, "model_args": args,
                     "model": teacher.state_dict(), "step": 0}, path)
    return teacher.eval()


def test_distillation_targets_mix_the_labels_with_the_teachers_soft_targets(tmp_path, tiny_data_dir):
    import torch.nn.functional as F

    from snn_lstm.encoders import TRAIN_ORDER, make_generator

    teacher = save_teacher(tmp_path / "teacher.pt", image_cfg(hidden_size=8))
    distill = {"teacher": str(tmp_path / "teacher.pt"), "weight": 0.3, "temperature": 2.0}
    task = build_task(image_cfg(distill=distill), encoder="bernoulli", data_dir=tiny_data_dir, seed=0, eval_limit=None)
    plain = build_task(image_cfg(), encoder="bernoulli", data_dir=tiny_data_dir, seed=0, eval_limit=None)
    torch.manual_seed(5)
    x, target = task.train_batch(3, 8)  # the first batch loads the teacher
    after_teacher = torch.rand(1)
    torch.manual_seed(5)
    x_plain, y = plain.train_batch(3, 8)
    assert torch.equal(torch.rand(1), after_teacher)  # loading the teacher leaves the run's random stream alone
    assert torch.equal(x, x_plain)  # the same spikes; only the target changes
    index = torch.randperm(task.train_size, generator=make_generator(0, TRAIN_ORDER, 0))[24:32]  # step 3 of epoch 0
    assert torch.equal(task.labels["train"][index], y)
    with torch.no_grad():  # the teacher reads the intensities (its encoder is identity)
        soft = F.softmax(teacher(task.values("train", index))[0] / 2.0, -1)
    assert torch.allclose(target, 0.7 * F.one_hot(y, 10).float() + 0.3 * soft, atol=1e-6)
    output = torch.randn(8, 10)
    assert task.loss(output, target).item() == pytest.approx(-(target * output.log_softmax(-1)).sum(-1).mean().item(), rel=1e-6)


def test_distillation_refuses_a_missing_teacher_or_one_trained_on_other_data(tmp_path, tiny_data_dir):
    def first_batch(**distill):
        cfg = image_cfg(distill={"weight": 0.5, "temperature": 2.0, **distill})
        build_task(cfg, encoder="bernoulli", data_dir=tiny_data_dir, seed=0, eval_limit=None).train_batch(0, 8)

    with pytest.raises(UserError, match="no checkpoint at .*train the teacher first"):
        first_batch(teacher=str(tmp_path / "nowhere.pt"))
    save_teacher(tmp_path / "other_split.pt", image_cfg(val_size=8))
    with pytest.raises(UserError, match=r"trained on other data \(val_size=8 \(here 16\)\)"):
        first_batch(teacher=str(tmp_path / "other_split.pt"))
    save_teacher(tmp_path / "bigger.pt", image_cfg(hidden_size=32, readout="last"), hidden=32)  # model settings may differ
    first_batch(teacher=str(tmp_path / "bigger.pt"))
    with pytest.raises(UserError, match="distill.weight must lie in"):
        first_batch(teacher=str(tmp_path / "bigger.pt"), weight=1.5)


def test_val_split_is_held_out_from_training(tiny_data_dir):
    task = build_task(image_cfg(val_size=16), encoder="identity", data_dir=tiny_data_dir, seed=0, eval_limit=None)
    assert task.train_size == 96 - 16 and len(task.labels["val"]) == 16 and len(task.labels["test"]) == 40
    with pytest.raises(UserError, match="val_size"):
        build_task(image_cfg(val_size=96), encoder="identity", data_dir=tiny_data_dir, seed=0, eval_limit=None)


def test_real_mnist_loads_when_present():
    """Runs where the real data is (CI sets SNNLSTM_DATA_DIR); skipped elsewhere."""
    import os

    data_dir = Path(os.environ.get("SNNLSTM_DATA_DIR", "data"))
    if not (data_dir / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("no MNIST copy in $SNNLSTM_DATA_DIR")
    images, labels = load_split(MNIST, data_dir, "test")
    assert images.shape == (10000, 28, 28) and np.bincount(labels).tolist()[:2] == [980, 1135]


def test_gzip_and_raw_copies_are_both_found(tmp_path):
    write_tiny_idx(tmp_path / "tiny")
    gz = tmp_path / "tiny" / "t10k-labels-idx1-ubyte.gz"
    (tmp_path / "tiny" / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    task = build_task(image_cfg(), encoder="identity", data_dir=tmp_path, seed=0, eval_limit=None)
    assert len(task.labels["test"]) == 40


def test_evaluate_scores_a_checkpoint_with_k_draws(tmp_path, tiny_data_dir, cli_env):
    run_dir = tmp_path / "runs"
    snnlstm(["train", "task=smnist", *TINY_IMAGES, "trainer=smoke", "model.hidden_size=8", f"paths.data_dir={tiny_data_dir}",
             f"paths.run_dir={run_dir}", "tracking=none", "run_name=img"], tmp_path, cli_env)
    ckpt = run_dir / "smnist/img/last.pt"
    out = snnlstm(["evaluate", f"ckpt={ckpt}", "draws=4", f"paths.data_dir={tiny_data_dir}", f"paths.run_dir={run_dir}",
                   "tracking=none"], tmp_path, cli_env).stdout
    printed = dict(line.split("=", 1) for line in out.split())
    assert set(printed) == {"test/acc_draws4", "test/loss_draws4"}
    # the numbers are those of the checkpoint's model, its probabilities averaged over 4 draws of the test spikes
    checkpoint = load_checkpoint(ckpt)
    model = model_from_checkpoint(checkpoint).eval()
    task = build_task({**checkpoint["config"]["task"], "eval_draws": 4}, encoder="bernoulli", data_dir=tiny_data_dir,
                      seed=0, eval_limit=checkpoint["config"]["trainer"]["eval_limit"])
    expected = task.evaluate(model, "test", torch.device("cpu"))
    assert float(printed["test/acc_draws4"]) == pytest.approx(expected["acc"], abs=1e-6)
    assert float(printed["test/loss_draws4"]) == pytest.approx(expected["loss"], rel=1e-5)


def test_ink_positions_counts_the_steps_from_the_first_and_last_ink_to_the_end():
    import importlib.util

    path = Path(__file__).parents[1] / "experiments" / "ink_positions.py"
    spec = importlib.util.spec_from_file_location("ink_positions", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    images = np.zeros((2, 3, 4), dtype=np.uint8)  # 12 steps each
    images[0, 0, 1] = images[0, 1, 2] = 9  # steps 1 and 6
    images[1, 2, 3] = 255  # the very last step
    after_last, after_first = module.steps_before_end(images)
    assert after_last.tolist() == [5, 0] and after_first.tolist() == [10, 0]
