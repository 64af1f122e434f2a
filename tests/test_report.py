"""`snnlstm report` on a small MLflow store, and the energy proxy it reports."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from pathlib import Path

import matplotlib.image
import numpy
import pytest
import torch
from hydra import compose, initialize_config_module

from snn_lstm.energy import AC_PJ, MAC_PJ, energy_metrics, lstm_macs, spiking_activity
from snn_lstm.errors import UserError
from snn_lstm.figures import plot_surrogates
from snn_lstm.recipes import compose_train, recipe_hash
from snn_lstm.report import write_report
from snn_lstm.spiking import SpikingLSTM, spiking_lstm_step, unpack_spikes
from snn_lstm.spiking.lstm import pack_spikes
from snn_lstm.tracking import MlflowTracker

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_lstm_multiply_accumulates():
    # layer 0: 4H T (I + H) = 16 * 5 * 7; layer 1: 16 * 5 * 8
    assert lstm_macs(input_size=3, hidden_size=4, num_layers=2, steps=5) == 560 + 640


def test_spike_counts_give_the_accumulates_and_rates():
    torch.manual_seed(0)
    model = SpikingLSTM(6, 5, engine="reference", init="normal")
    x = (torch.rand(7, 3, 6) < 0.4).float()
    h, _ = model(x)
    activity = spiking_activity(model, x)
    previous_h = torch.cat([torch.zeros(1, 3, 5), h[:-1]])
    assert activity["ops/ac_per_sample"] == pytest.approx(4 * 5 * (x.sum() + previous_h.sum()).item() / 3)
    assert activity["ops/mac_per_sample"] == 0
    assert activity["activity/l0/h"] == pytest.approx(h.mean().item())
    assert all(0 <= activity[f"activity/l0/{part}"] <= 1 for part in "ifgoch")
    assert 0 < activity["activity/l0/h"] < 1  # the test says something only if some units fire


@pytest.mark.parametrize("engine, matmul_dtype", [("reference", "float32"), ("torch", "float32"), ("cpp", "float32"),
                                                  ("cpp", "bfloat16"), ("torch", "float16")])
def test_activity_is_what_the_models_own_engine_computed(engine, matmul_dtype):
    # rates from the engine that trained the run, in its precision: they must agree with
    # that model's own outputs, and the record with the reference step's gates
    torch.manual_seed(1)
    model = SpikingLSTM(6, 16, num_layers=2, engine=engine, matmul_dtype=matmul_dtype, init="normal")
    x = (torch.rand(9, 4, 6) < 0.4).float()
    with torch.no_grad():
        output, _ = model(x)
    activity = spiking_activity(model, x)
    assert activity["activity/l1/h"] == pytest.approx(output.mean().item())
    assert 0 < activity["activity/l1/h"] < 1
    _, _, records = model.forward_with_spikes(x)
    reference = SpikingLSTM(6, 16, num_layers=2, engine="reference", init="normal")
    reference.load_state_dict(model.state_dict())
    _, _, expected = reference.forward_with_spikes(x)
    if matmul_dtype == "float32":  # rounded products may flip a spike near threshold
        assert all(torch.equal(a, b) for a, b in zip(records, expected))
    h = x  # the record, against the step function run by hand
    for layer, bits in enumerate(expected):
        state = c = torch.zeros(4, 16)
        packed, outputs = [], []
        for x_t in h:
            state, c, gates = spiking_lstm_step(x_t, state, c, *reference.layer_parameters(layer), reference.spike)
            packed.append(pack_spikes(*gates, c))
            outputs.append(state)
        h = torch.stack(outputs)
        assert torch.equal(torch.stack(packed), bits)
        assert torch.equal(unpack_spikes(bits)["h"], h)


def test_real_valued_inputs_are_multiplied_and_energy_uses_the_constants():
    torch.manual_seed(0)
    model = SpikingLSTM(4, 8, engine="reference", init="normal")
    x = torch.randn(5, 2, 4)
    metrics = energy_metrics(model, x)
    assert metrics["ops/mac_per_sample"] == 4 * 8 * 5 * 4
    expected = (metrics["ops/ac_per_sample"] * AC_PJ + metrics["ops/mac_per_sample"] * MAC_PJ) / 1000
    assert metrics["energy/slstm_nj"] == pytest.approx(expected)
    assert metrics["energy/lstm_nj"] == pytest.approx(lstm_macs(4, 8, 1, 5) * MAC_PJ / 1000)
    assert metrics["energy/ratio_to_lstm"] == pytest.approx(expected / metrics["energy/lstm_nj"])
    plain = energy_metrics(torch.nn.LSTM(4, 8), x)
    assert "energy/slstm_nj" not in plain and plain["ops/lstm_mac_per_sample"] == lstm_macs(4, 8, 1, 5)


def test_a_decision_of_several_spike_trains_costs_that_many_passes():
    torch.manual_seed(0)
    model = SpikingLSTM(4, 8, engine="reference")
    x = torch.bernoulli(torch.full((5, 3, 4), 0.3))
    once, eight = energy_metrics(model, x), energy_metrics(model, x, presentations=8)
    for count in ("ops/ac_per_sample", "ops/mac_per_sample", "energy/slstm_nj", "energy/ratio_to_lstm"):
        assert eight[count] == pytest.approx(8 * once[count])
    assert once["ops/ac_per_sample"] > 0 and eight["activity/l0/h"] == once["activity/l0/h"]
    # the plain LSTM it is set beside reads the values once
    assert eight["energy/lstm_nj"] == once["energy/lstm_nj"] and eight["ops/presentations"] == 8
    plain, plain_eight = energy_metrics(torch.nn.LSTM(4, 8), x), energy_metrics(torch.nn.LSTM(4, 8), x, presentations=8)
    assert plain_eight["energy/lstm_nj"] == pytest.approx(8 * plain["energy/lstm_nj"])  # a plain LSTM fed 8 spike trains


def add_run(uri: str, experiment: str, seed: int, metrics: dict[str, float], history=(), params=None,
            figure: Path | None = None, overrides=()) -> str:
    """A finished run as `snnlstm train experiment=... <overrides>` logs it: the file's tags and the recipe hash."""
    cfg = compose_train([f"experiment={experiment}", *overrides])
    tags = {**cfg.tags, "seed": seed, "recipe": recipe_hash(cfg), "machine": "cpu: test machine"}
    tracker = MlflowTracker(uri, "snnlstm", run_name=f"{cfg.tags.row}-{seed}", tags=tags)
    tracker.log_params(params or {})
    if figure is not None:
        tracker.log_artifact(figure, "figures")
    for step, value in history:
        tracker.log_metrics({"val/acc": value}, step)
    tracker.log_metrics(metrics, 100)
    tracker.finish("FINISHED")
    return tracker.run_id


GRID = "paper/fig6/alpha_grid"
LOSO = "beyond/fsdd_loso/frames_slstm"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    uri = "sqlite:///" + str(tmp_path_factory.mktemp("mlflow") / "mlflow.db")
    activity = {"activity/l0/i": 0.4, "activity/l0/f": 0.5, "activity/l0/g": 0.3, "activity/l0/o": 0.4,
                "activity/l0/c": 0.2, "activity/l0/h": 0.1, "energy/slstm_nj": 10.0, "energy/lstm_nj": 200.0}
    add_run(uri, "paper/table1/slstm", 1, {"test/acc": 0.50})  # replaced by the newer run of seed 1
    add_run(uri, "paper/table1/slstm", 0, {"test/acc": 0.98, **activity}, history=[(10, 0.9), (20, 0.95)])
    add_run(uri, "paper/table1/slstm", 1, {"test/acc": 0.97, **activity})
    add_run(uri, "paper/table1/slstm", 2, {"test/acc": 0.11}, overrides=["trainer.steps=2"])  # a smoke run: not counted
    add_run(uri, "paper/table1/slstm", 3, {"test/acc": 0.12}, overrides=["model.hidden_size=16"])  # a probe: not counted
    add_run(uri, "paper/table1/lstm", 0, {"test/acc": 0.99, "energy/lstm_nj": 200.0}, history=[(10, 0.92), (20, 0.97)])
    sine_figure = plot_surrogates(tmp_path_factory.mktemp("figure") / "sine_predictions.png")  # any PNG will do
    add_run(uri, "paper/fig4/slstm", 0, {"test/mse": 0.013, "test/baseline_mse": 0.0548}, figure=sine_figure)
    for seed, alpha1, alpha2, acc in ((0, 1, 0.3, 0.9), (1, 1, 0.3, 0.8), (0, 4, 0.3, 0.86), (0, 1, 1, 0.91), (0, 4, 1, 0.88)):
        add_run(uri, GRID, seed, {"test/acc": acc}, params={"model.alpha1": float(alpha1), "model.alpha2": float(alpha2)},
                overrides=[f"model.alpha1={alpha1}", f"model.alpha2={alpha2}"])
    add_run(uri, GRID, 2, {"test/acc": 0.05}, params={"model.alpha1": 1.0, "model.alpha2": 0.3},
            overrides=["model.alpha1=1", "model.alpha2=0.3", "model.hidden_size=200"])  # another recipe in a grid cell
    speakers = ("jackson", "nicolas", "theo", "yweweler")
    for experiment, seed, accuracies in ((LOSO, 0, (0.6, 0.7, 0.8, 0.9)), (LOSO, 1, (0.5, 0.6, 0.7, 0.8)),
                                         (LOSO, 2, (0.9, 0.9, 0.9)),  # seed 2 lacks a speaker: no leave-one-out mean
                                         (LOSO.replace("slstm", "lstm"), 0, (0.7, 0.8, 0.9, 1.0))):
        for speaker, acc in zip(speakers, accuracies):
            add_run(uri, experiment, seed, {**activity, "test/acc": acc, "energy/slstm_nj": 10.0 * (1 + seed), "energy/lstm_nj": 200.0},
                    params={"task.held_out_speaker": speaker}, overrides=[f"task.held_out_speaker={speaker}"])
    memory = {"memory/grad_q1_over_q4": 0.25, "memory/l0/forget_q4": 0.9, "memory/l0/held_100": 0.5}
    curves = {0: [(859, 0.3), (1718, 0.5), (2577, 0.6), (3436, 0.65)], 1: [(859, 1.3), (1718, 0.6)]}
    for seed, ratio in ((0, 0.25), (1, 0.75)):
        add_run(uri, "beyond/psmnist/slstm", seed, {"test/acc": 0.5, **memory, "memory/grad_q1_over_q4": ratio},
                history=curves[seed], params={"trainer.epochs": 4.0, "trainer.steps": 3436})
    return uri


def report_config(uri: str, out: Path, fmt: str, docs=()):
    with initialize_config_module(config_module="snn_lstm.conf", version_base="1.3"):
        return compose(config_name="report", overrides=[f"format={fmt}", f"out_dir={out}", f"tracking.uri={uri}",
                                                        f"paper_values={Path(__file__).parents[1] / 'experiments' / 'paper_values.yaml'}",
                                                        f"docs=[{','.join(str(d) for d in docs)}]"])


def test_markdown_tables_count_only_runs_pinned_to_the_experiment_file(store, tmp_path):
    files = write_report(report_config(store, tmp_path / "reports", "md"))
    table1 = (tmp_path / "reports" / "table1.md").read_text()
    slstm = next(line for line in table1.splitlines() if line.startswith("| slstm |"))
    assert "`paper/table1/slstm`" in slstm and "98.30%" in slstm  # its experiment file; the paper's value, with its source
    assert "97.50% ± 0.71pp (n=2)" in slstm  # mean and sample sd of 0.98 and 0.97: the older seed-1 run, smoke and probe out
    assert "99.00% (n=1) [lstm]" in slstm
    assert "0.40 / 0.50 / 0.30 / 0.40 / 0.20 / 0.10" in slstm and "10 nJ = 5.0% of the LSTM's 200 nJ" in slstm
    assert "cpu: test machine" in slstm and " s |" in slstm  # where the runs ran and how long they took
    assert "`slstm`: 2 run(s) with another recipe, not counted" in table1
    assert "0.013 (n=1); trivial baseline 0.0548" in (tmp_path / "reports" / "fig4.md").read_text()
    table2 = (tmp_path / "reports" / "table2.md").read_text()
    assert table2.count("no runs") == 3  # two rows, and the slstm row's baseline
    fig6 = (tmp_path / "reports" / "fig6.md").read_text()
    assert "| model.alpha1 \\ model.alpha2 | 0.3 | 1.0 |" in fig6  # a grid row gets a table of its cells
    assert "| 1.0 | 85.00% ± 7.07pp (n=2) | 91.00% (n=1) |" in fig6  # the hidden-200 run in cell (1, 0.3) left out
    assert "| 4.0 | 86.00% (n=1) | 88.00% (n=1) |" in fig6
    assert "`alpha_grid`: 1 run(s) with another recipe, not counted" in fig6
    speakers = (tmp_path / "reports" / "fsdd_speakers.md").read_text()
    pooled = next(line for line in speakers.splitlines() if line.startswith("| frames_slstm |"))
    # per seed the mean over the 4 held-out speakers (0.75 and 0.65), then over seeds; seed 2 never ran yweweler
    assert "70.00% ± 7.07pp (n=2), mean over 4 cells (below)" in pooled and "85.00% (n=1) [frames_lstm]" in pooled
    assert "15 nJ = 7.5% of the LSTM's 200 nJ" in pooled  # the energy of the pooled seeds, 10 and 20 nJ
    assert "| jackson | 66.67% ± 20.82pp (n=3) |" in speakers and "| yweweler | 85.00% ± 7.07pp (n=2) |" in speakers
    long = (tmp_path / "reports" / "long_sequences.md").read_text()
    details = long.split("Details, the mean over the counted seeds:")[1]
    assert "| psmnist_slstm | 0.5 | 0.9 | 0.5 | - |" in details  # the mean over seeds 0 and 1; one metric not logged
    assert "| pmnist_slstm | - | - | - | - |" in details and "(`memory/l0/held_100`)" in details
    curves = long.split("Learning curves:")[1]
    assert "| val/acc at step (first seed) | 859 | 1718 | 2577 | 3436 |" in curves
    assert "| psmnist_slstm | 30.00% | 50.00% | 60.00% | 65.00% |" in curves
    # v = a + b ln(epoch) through epochs 2-4 (the first evaluation left out), then the epochs where it reaches 90%
    b, a = numpy.polyfit(numpy.log([2.0, 3.0, 4.0]), [0.5, 0.6, 0.65], 1)
    assert f"| psmnist_slstm | {a:.3f} | {b:.3f} | {math.exp((0.9 - a) / b):,.0f} epochs |" in long.split("Extrapolation")[1]
    assert "Details" not in (tmp_path / "reports" / "table1.md").read_text()  # only tables that ask for them
    assert "Learning curves" not in (tmp_path / "reports" / "table1.md").read_text()
    assert "Extrapolation" not in (tmp_path / "reports" / "table1.md").read_text()
    names = {path.name for path in files}
    assert "0.40 / 0.50 / 0.30 / 0.40 / 0.20 / 0.10" in pooled  # the rates of a row scored over its cells
    assert {"fig2d_surrogates.png", "fig6_alpha_grid.png", "curves_table1.png", "rates_table1.png", "README.md",
            "rates_fsdd_speakers.png",
            "fig4_sine_predictions.png"} <= names
    for path in files:
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == PNG_MAGIC and matplotlib.image.imread(path).ndim == 3


def test_a_run_of_an_edited_experiment_file_no_longer_counts(store, tmp_path):
    import snn_lstm.report as report

    edited = {key: replace(experiment, recipes=frozenset({"0123456789ab"}))
              for key, experiment in report.pinned_experiments().items()}
    tally = report.summarise(report.tagged_runs(store, "snnlstm"), report.load_paper_values(
        Path(__file__).parents[1] / "experiments" / "paper_values.yaml"), edited)
    assert not tally.summaries and tally.not_counted[("table1", "slstm")] == 5


def test_generated_blocks_of_documents_are_rewritten_and_nothing_else(store, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Results\n\nprose quoting `<!-- snnlstm report: TABLE -->`\n\n<!-- snnlstm report: table1 -->\nold numbers\n<!-- /snnlstm report -->\n"
                      "\nprose between\n\n<!-- snnlstm report: fig4 -->\n<!-- /snnlstm report -->\nprose after\n")
    write_report(report_config(store, tmp_path / "reports", "md", docs=[readme]))
    text = readme.read_text()
    assert "old numbers" not in text and "97.50% ± 0.71pp (n=2)" in text
    assert text.startswith("# Results\n\nprose quoting `<!-- snnlstm report: TABLE -->`\n\n<!-- snnlstm report: table1 -->\n"
                           "Metric: `test/acc`")
    assert "\n<!-- /snnlstm report -->\n\nprose between\n\n<!-- snnlstm report: fig4 -->\nMetric: `test/mse`" in text
    assert text.endswith("<!-- /snnlstm report -->\nprose after\n") and "0.013" in text
    again = readme.read_text()
    write_report(report_config(store, tmp_path / "reports", "md", docs=[readme]))
    assert readme.read_text().count("Metric:") == again.count("Metric:") == 2  # rewriting a filled block replaces it


@pytest.mark.parametrize("content, says", [
    ("<!-- snnlstm report: table1 -->\nno end\n", "closed by"),
    ("<!-- snnlstm report: table9 -->\n<!-- /snnlstm report -->\n", "table table9"),
    ("no block at all\n", "closed by"),
])
def test_a_bad_document_changes_no_document(store, tmp_path, content, says):
    good, bad = tmp_path / "good.md", tmp_path / "bad.md"
    good.write_text("<!-- snnlstm report: table1 -->\nold\n<!-- /snnlstm report -->\n")
    bad.write_text(content)
    with pytest.raises(UserError, match=says):
        write_report(report_config(store, tmp_path / "reports", "md", docs=[good, bad]))
    assert good.read_text().endswith("old\n<!-- /snnlstm report -->\n") and bad.read_text() == content
    assert not (tmp_path / "reports").exists()


def test_html_is_one_self_contained_page(store, tmp_path):
    write_report(report_config(store, tmp_path / "reports", "html"))
    page = (tmp_path / "reports" / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 4 and "97.50% ± 0.71pp (n=2)" in page and "<table>" in page
    assert "85.00% ± 7.07pp (n=2)" in page and "another recipe, not counted" in page
    assert "src='figures/" not in page and 'src="figures/' not in page


def test_cli_report_is_logged_to_mlflow(store, tmp_path, cli_env):
    from mlflow.tracking import MlflowClient

    from conftest import snnlstm

    paper_values = Path(__file__).parents[1] / "experiments" / "paper_values.yaml"
    result = snnlstm(["report", f"tracking.uri={store}", f"out_dir={tmp_path / 'out'}", f"paper_values={paper_values}"],
                     tmp_path, cli_env)
    assert "table1.md" in result.stdout
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("snnlstm")
    reports = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("snnlstm_report") == "md"]
    assert len(reports) == 1
    logged = {item.path for item in client.list_artifacts(reports[0].info.run_id, "report")}
    assert "report/table1.md" in logged and "report/figures" in logged
    bad = snnlstm(["report", "format=pdf", f"tracking.uri={store}", f"out_dir={tmp_path / 'bad'}"], tmp_path, cli_env, check=False)
    assert bad.returncode != 0 and bad.stderr.strip() == "snnlstm report: error: format must be one of md, html, got 'pdf'"


def test_log_fit_counts_steps_when_a_run_has_no_epochs_and_refuses_a_target_that_is_no_number():
    import snn_lstm.report as report

    curve = report.Curve([(100, 0.1), (200, 0.4), (400, 0.6), (800, 0.8)], None)
    a, b, unit = report.log_fit(curve)
    assert unit == "steps" and b == pytest.approx(0.2 / math.log(2)) and a == pytest.approx(0.4 - b * math.log(200))
    assert report.log_fit(report.Curve([(100, 0.1), (200, 0.4)], None)) is None  # one point after the first
    tally = report.Tally({}, Counter(), {("t", "r"): curve})
    flat = report.Tally({}, Counter(), {("t", "r"): report.Curve([(1, 0.5), (2, 0.5), (4, 0.5)], 0.5)})
    spec = {"metric": "test/acc", "rows": {"r": {}}, "extrapolate": 0.9}
    assert report.extrapolation_table("t", spec, flat)[1] == [["r", "0.500", "0.000", "never (the curve does not rise)"]]
    slow = report.Tally({}, Counter(), {("t", "r"): report.Curve([(1, 0.1), (2, 0.1), (4, 0.1001)], 1.0)})
    assert report.extrapolation_table("t", spec, slow)[1][0][3] == "beyond 1,000,000 epochs"  # not an overflow
    with pytest.raises(UserError, match="table t: extrapolate must be the metric value to reach"):
        report.extrapolation_table("t", {**spec, "extrapolate": "90%"}, tally)
    with pytest.raises(UserError, match="table t: extrapolate must be the metric value to reach"):
        report.extrapolation_table("t", {**spec, "extrapolate": True}, report.Tally({}, Counter()))  # no runs yet
