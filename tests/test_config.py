"""The config tree: every group combination composes against the schema and
builds a working model; wrong keys and types fail while composing."""

import itertools
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from snn_lstm.config import check_targets, instantiate
from snn_lstm.errors import UserError
from snn_lstm.models import build_model, model_args
from snn_lstm.tasks import build_task

from conftest import compose_train

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_groups_have_the_required_options():
    assert {"sine"} <= set(options("task"))
    assert set(options("model")) == {"slstm", "lstm"}
    assert set(options("surrogate")) == {"gaussian", "piecewise_linear", "fast_sigmoid", "atan", "straight_through"}
    assert {"adam"} <= set(options("optimizer"))
    assert {"default", "smoke"} <= set(options("trainer"))
    assert set(options("tracking")) == {"mlflow", "none"}
    assert (CONF / "experiment").is_dir() and (CONF / "paths" / "default.yaml").exists()


COMBINATIONS = list(
    itertools.product(
        options("task"), options("model"), options("surrogate"), options("optimizer"), options("trainer"), options("tracking")
    )
)


@pytest.mark.parametrize("task, model, surrogate, optimizer, trainer, tracking", COMBINATIONS)
def test_every_combination_composes_and_builds(task, model, surrogate, optimizer, trainer, tracking):
    cfg = compose_train(
        [f"task={task}", f"model={model}", f"surrogate={surrogate}", f"optimizer={optimizer}", f"trainer={trainer}", f"tracking={tracking}"]
    )
    config = OmegaConf.to_container(cfg, resolve=True)
    assert config["model"]["name"] == model and config["surrogate"]["name"] == surrogate
    built_task = build_task(config["task"], data_dir=config["paths"]["data_dir"], seed=0, eval_limit=8)
    net = build_model(**model_args(config["model"], config["surrogate"], built_task.input_size, built_task.output_size, built_task.readout))
    optim = instantiate(cfg.optimizer, "optimizer", params=net.parameters())
    x, y = built_task.train_batch(0, 2)
    output, _ = net(x)
    loss = built_task.loss(output, y)
    loss.backward()
    optim.step()
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("model.hiden_size=3", "hiden_size"),
        ("model.hidden_size=many", "hidden_size"),
        ("trainer.steps=1.5", "steps"),
        ("surrogate.alpha1=wide", "alpha1"),
        ("task=nonexistent", "nonexistent"),
        ("bogus_key=1", "bogus_key"),
    ],
)
def test_wrong_key_or_type_fails_while_composing(override, fragment):
    with pytest.raises(ConfigCompositionException) as error:
        compose_train([override])
    chain, err = [], error.value
    while err is not None:
        chain.append(str(err))
        err = err.__cause__
    assert fragment in " ".join(chain)


def test_model_hidden_size_follows_the_task_unless_set():
    assert compose_train().model.hidden_size == 100
    assert compose_train(["model.hidden_size=7"]).model.hidden_size == 7


def test_targets_outside_the_allow_list_are_refused():
    check_targets({"_target_": "torch.optim.SGD", "nested": {"_target_": "snn_lstm.models.build_model"}})
    with pytest.raises(UserError, match="os.system"):
        check_targets({"optimizer": {"inner": [{"_target_": "os.system"}]}})
