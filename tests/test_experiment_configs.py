"""Every experiment file composes and trains for two steps (tiny, no tracking)."""

from pathlib import Path

import pytest
import torch

from snn_lstm.recipes import experiment_names, experiments, load_experiment
from snn_lstm.report import load_paper_values
from snn_lstm.train import train

from conftest import TINY, compose_train

EXPERIMENTS = experiment_names()
STEPS = ["trainer.steps=2", "trainer.epochs=null", "trainer.eval_every=1", "trainer.eval_limit=8", "trainer.batch_size=4",
        "trainer.progress=false", "tracking=none"]


def test_there_are_experiments():
    assert {"paper/fig4/slstm", "paper/table1/slstm", "paper/table1/slstm_distilled", "paper/table1/lstm",
            "paper/table2/slstm", "paper/table2/lstm", "paper/fig6/alpha_grid", "beyond/psmnist/slstm", "paper/fsdd/slstm",
            "paper/fsdd/lstm", "beyond/fsdd/slstm", "beyond/fsdd/lstm"} <= set(EXPERIMENTS)
    assert len([e for e in EXPERIMENTS if e.startswith("paper/table3/")]) == 8


def test_every_experiment_has_its_row_and_every_row_its_experiment():
    rows = {(table, row) for table, spec in load_paper_values("experiments/paper_values.yaml").items() for row in spec["rows"]}
    found = [(e.table, e.row) for e in experiments()]
    assert len(found) == len(set(found)), "two experiment files fill one row"
    assert set(found) == rows


def test_alpha_study_sweeps_a_grid_of_recipes():
    study = load_experiment("paper/fig6/alpha_grid")
    assert len(study.recipes) == 20  # 5 x 4 cells, each its own recipe
    assert load_experiment("paper/table1/slstm").recipes.isdisjoint(study.recipes)


def test_options_added_later_leave_the_recipe_as_before_at_their_neutral_value():
    from snn_lstm.recipes import LATER_OPTIONS, recipe, recipe_hash

    # files that leave them at their neutral values: an image task and a spoken-digit one (task.deltas is speech's)
    cases = {"experiment=paper/table1/slstm": (
                 ["model.forget_bias=0.0", "model.chrono_steps=null", "model.cell_grad_scale=1.0", "task.pixels_per_step=1",
                  "model.recurrent_grad_scale=1.0", "model.cell=binary", "model.decay_steps=784",
                  "model.write_scale=1.0"],
                 ["model.forget_bias=1.0", "model.chrono_steps=784", "model.cell_grad_scale=0.9", "task.pixels_per_step=4",
                  "model.recurrent_grad_scale=0.5", "model.cell=leaky", "model.decay_steps=100",
                  "model.write_scale=0.5"]),
             "experiment=beyond/fsdd/augmented_slstm": (["task.deltas=0"], ["task.deltas=1"])}
    covered = set()
    for name, (neutral, changes) in cases.items():
        base = compose_train([name])
        kept = recipe(base)
        for group, options in LATER_OPTIONS.items():
            present = set(options) & set(base[group])
            assert not present & set(kept[group])
            covered |= {f"{group}.{option}" for option in present}
        assert recipe_hash(compose_train([name, *neutral])) == recipe_hash(base)
        for change in changes:
            assert recipe_hash(compose_train([name, change])) != recipe_hash(base), change
    assert covered == {f"{group}.{option}" for group, options in LATER_OPTIONS.items() for option in options}


def test_leave_one_speaker_out_files_pin_one_recipe_per_held_out_speaker():
    from snn_lstm.recipes import recipe_hash

    for name in ("beyond/fsdd_loso/frames_slstm", "beyond/fsdd_loso/speaker_independent_slstm", "beyond/fsdd_loso/augmented_slstm",
                 "beyond/fsdd_loso/deltas_slstm"):
        study = load_experiment(name)
        singles = {recipe_hash(compose_train([f"experiment={name}", f"task.held_out_speaker={speaker}"]))
                   for speaker in ("jackson", "nicolas", "theo", "yweweler")}
        assert study.recipes == singles and len(singles) == 4  # a run per speaker, sweep or not, counts in its cell
    official = load_experiment("beyond/fsdd/speaker_independent_slstm").recipes
    assert official.isdisjoint(load_experiment("beyond/fsdd_loso/speaker_independent_slstm").recipes)


# Experiments that distil from another experiment's checkpoint, and that experiment.
TEACHERS = {"paper/table1/slstm_distilled": "paper/table1/teacher"}


def tiny(experiment: str, tmp_path: Path, data_dir: Path):
    kind = compose_train([f"experiment={experiment}"]).task.kind
    return compose_train([f"experiment={experiment}", *STEPS, f"paths.run_dir={tmp_path}", f"paths.data_dir={data_dir}",
                          f"paths.cache_dir={tmp_path / 'cache'}", *TINY[kind]])


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_two_steps(experiment, tmp_path, tiny_data_dir):
    cfg = tiny(experiment, tmp_path, tiny_data_dir)
    assert cfg.tags.paper_table and cfg.tags.row  # paper rows carry their MLflow tags
    if experiment in TEACHERS:
        train(tiny(TEACHERS[experiment], tmp_path, tiny_data_dir), Path(cfg.task.distill.teacher).parent)
    train(cfg, tmp_path / "run")
    checkpoint = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert checkpoint["step"] == 2
