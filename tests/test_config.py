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

from hydra import compose, initialize_config_module

from conftest import CONFIG_MODULE, TINY, compose_train

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_groups_have_the_required_options():
    assert {"sine", "smnist", "semnist", "pmnist", "psmnist", "char_lm", "word_lm"} <= set(options("task"))
    assert set(options("encoder")) == {"bernoulli", "identity"}
    assert set(options("model")) == {"slstm", "lstm"}
    assert set(options("model/surrogate")) == {"gaussian", "piecewise_linear", "fast_sigmoid", "atan", "straight_through"}
    assert {"adam"} <= set(options("optimizer"))
    assert {"default", "smoke"} <= set(options("trainer"))
    assert set(options("tracking")) == {"mlflow", "none"}
    assert (CONF / "experiment").is_dir() and (CONF / "paths" / "default.yaml").exists()


GROUPS = ("task", "encoder", "model", "optimizer", "trainer", "tracking")


def all_pairs(groups: list[list[str]]) -> list[tuple[str, ...]]:
    """A small set of combinations in which every pair of options of any two
    groups occurs together at least once (greedy covering array). Bugs between
    config groups are interactions of two of them; the full product (400 and
    growing) would take minutes of Hydra composition."""
    uncovered = {(a, x, b, y) for a, b in itertools.combinations(range(len(groups)), 2)
                 for x in groups[a] for y in groups[b]}
    chosen = []
    while uncovered:
        best, best_gain = None, -1
        for candidate in itertools.product(*groups):
            gain = sum((a, candidate[a], b, candidate[b]) in uncovered for a, b in itertools.combinations(range(len(groups)), 2))
            if gain > best_gain:
                best, best_gain = candidate, gain
        chosen.append(best)
        uncovered -= {(a, best[a], b, best[b]) for a, b in itertools.combinations(range(len(groups)), 2)}
    return chosen


def test_every_pair_of_group_options_composes():
    combinations = all_pairs([options(group) for group in GROUPS])
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        for choice in combinations:
            overrides = [f"{group}={option}" for group, option in zip(GROUPS, choice)]
            config = OmegaConf.to_container(compose(config_name="train", overrides=overrides), resolve=True)
            assert [config[group]["name"] for group in ("task", "encoder", "model")] == list(choice[:3])
            assert config["tracking"]["backend"] == ("none" if choice[5] == "none" else "mlflow")


BUILDS = [(task, encoder, model, "gaussian") for task in options("task") for encoder in options("encoder")
          for model in options("model")] + [("sine", "bernoulli", "slstm", s) for s in options("model/surrogate")]


@pytest.mark.parametrize("task, encoder, model, surrogate", BUILDS)
def test_each_task_encoder_model_and_surrogate_builds_and_steps(task, encoder, model, surrogate, tiny_data_dir):
    overrides = [f"task={task}", f"encoder={encoder}", f"model={model}", "trainer=smoke", f"paths.data_dir={tiny_data_dir}"]
    if model == "slstm":  # the surrogate family is the spiking model's
        overrides.append(f"model/surrogate={surrogate}")
    kind = compose_train([f"task={task}"]).task.kind
    cfg = compose_train(overrides + TINY[kind] + [f"paths.cache_dir={tiny_data_dir / 'cache'}"])
    config = OmegaConf.to_container(cfg, resolve=True)
    built_task = build_task(config["task"], encoder=encoder, data_dir=config["paths"]["data_dir"], seed=0, eval_limit=8,
                            cache_dir=config["paths"]["cache_dir"])
    assert model == "lstm" or config["model"]["surrogate"] == surrogate
    net = build_model(**model_args(config["model"], built_task.input_size, built_task.output_size, built_task.readout))
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
        ("model.alpha1=wide", "alpha1"),
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


def test_the_model_group_holds_every_argument_of_the_backbone():
    """conf/model/slstm.yaml maps one to one onto SpikingLSTM(input_size, ...): no size in
    the task, no surrogate in a group of its own."""
    from snn_lstm.spiking import SpikingLSTM

    config = OmegaConf.to_container(compose_train(["model/surrogate=atan", "model.hidden_size=7"]), resolve=True)
    arguments = {key: value for key, value in config["model"].items() if key != "name"}
    layer = SpikingLSTM(3, **arguments)
    assert layer.hidden_size == 7 and layer.spike.gate.name == "atan" and layer.spike.candidate.width == 1.4
    assert "hidden_size" not in config["task"] and "surrogate" not in config
    assert compose_train(["experiment=paper/fig4/slstm"]).model.hidden_size == 100  # the paper's sine network


def test_targets_outside_the_allow_list_are_refused():
    check_targets({"_target_": "torch.optim.SGD", "nested": {"_target_": "snn_lstm.models.build_model"}})
    with pytest.raises(UserError, match="os.system"):
        check_targets({"optimizer": {"inner": [{"_target_": "os.system"}]}})
