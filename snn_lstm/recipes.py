"""Recipes: what a run trains, as one short hash, and the experiment files that pin them.

A run's recipe is its composed `snnlstm train` config less what says where and how
it ran rather than what it trained: the seed (seeds are the repeats of one recipe),
`run_name`, `resume`, `overwrite`, `tags`, `paths`, `tracking`, and the trainer's
`device`, `threads` and `progress`. Values are taken as composed, before
interpolations are resolved, so `${paths.run_dir}/...` hashes the same on every
machine. Every run logs the hash as its tag `recipe`; `snnlstm report` counts a run
for a row only when that tag equals the hash of the row's experiment file as the
file stands now (or of one cell of the file's sweep), so a run with other overrides
is never mixed into a published number.

An option added after runs were recorded is left out of the recipe while it has the
value that trains what those runs trained (LATER_OPTIONS), so they keep counting.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

RECIPE_TAG = "recipe"
NOT_RECIPE = ("seed", "run_name", "resume", "overwrite", "tags", "paths", "tracking")
NOT_RECIPE_TRAINER = ("device", "threads", "progress")
# group -> {option: the value that trains as before the option existed}
LATER_OPTIONS = {"model": {"forget_bias": 0.0, "chrono_steps": None, "cell_grad_scale": 1.0,
                           "recurrent_grad_scale": 1.0,
                           "cell": "binary", "decay_steps": 784, "write_scale": 1.0},
                 "task": {"pixels_per_step": 1, "deltas": 0}}


def recipe(cfg: DictConfig) -> dict[str, Any]:
    """The part of a composed train config that decides what is trained."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    kept = {key: value for key, value in plain.items() if key not in NOT_RECIPE}
    kept["trainer"] = {key: value for key, value in plain["trainer"].items() if key not in NOT_RECIPE_TRAINER}
    for group, options in LATER_OPTIONS.items():
        if isinstance(kept.get(group), dict):
            kept[group] = {key: value for key, value in kept[group].items()
                           if not (key in options and value == options[key])}
    return kept


def recipe_hash(cfg: DictConfig) -> str:
    """12 hex digits of the SHA-256 of the recipe as sorted JSON."""
    text = json.dumps(recipe(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def compose_train(overrides: list[str], hydra_node: bool = False) -> DictConfig:
    """The train config these command-line overrides compose (with `hydra` when asked)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    import snn_lstm.config  # noqa: F401  (registers the schemas the YAML files extend)

    if GlobalHydra.instance().is_initialized():  # inside a verb's Hydra app: same search path
        return compose("train", overrides, return_hydra_config=hydra_node)
    with initialize_config_module("snn_lstm.conf", version_base="1.3"):
        return compose("train", overrides, return_hydra_config=hydra_node)


@dataclass(frozen=True)
class Experiment:
    """One file under conf/experiment: its name for `experiment=`, the report row it
    fills, and the recipe hashes of the runs it makes (one per sweep cell)."""

    name: str
    table: str | None
    row: str | None
    recipes: frozenset[str]


def experiment_names() -> list[str]:
    """Every `experiment=` value, from the files of the installed config package."""
    import snn_lstm.conf

    folder = Path(snn_lstm.conf.__file__).parent / "experiment"
    return sorted(path.relative_to(folder).with_suffix("").as_posix() for path in folder.rglob("*.yaml"))


def sweep_cells(params: dict[str, str]) -> list[list[str]]:
    """The override lists of a sweeper's grid ({"model.alpha1": "0.5,1", ...}), in
    Hydra's own parsing of each value; [[]] when there is no grid."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    axes = []
    for key, value in params.items():
        override = parser.parse_override(f"{key}={value}")
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.get_value_element_as_str()]
        axes.append([f"{key}={v}" for v in values])
    return [list(cell) for cell in itertools.product(*axes)]


def load_experiment(name: str) -> Experiment:
    cfg = compose_train([f"experiment={name}"], hydra_node=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=False) if cfg.hydra.sweeper.get("params") else {}
    cells = sweep_cells({key: str(value) for key, value in params.items()})
    recipes = frozenset(recipe_hash(compose_train([f"experiment={name}", *cell])) for cell in cells)
    tags = cfg.get("tags") or {}
    return Experiment(name, tags.get("paper_table"), tags.get("row"), recipes)


def experiments() -> list[Experiment]:
    return [load_experiment(name) for name in experiment_names()]
