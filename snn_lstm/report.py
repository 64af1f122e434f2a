"""`snnlstm report`: the paper's tables and figures rebuilt from the MLflow runs.

    snnlstm report                      # reports/<table>.md and reports/figures/*.png
    snnlstm report format=html          # reports/report.html, one self-contained page

Runs are matched by their tags `paper_table` and `row` (every paper experiment file
sets them); of several finished runs with the same row and seed the newest counts.
For each row: the paper's value (experiments/paper_values.yaml, with where it comes
from), ours as mean, sample standard deviation and number of seeds, the plain LSTM
on the same setup, the firing rates of layer 0 and the energy proxy
(snn_lstm.energy). The report is also logged to MLflow as the artifacts of a run
named `report`.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import yaml
from omegaconf import DictConfig

from snn_lstm.config import CONFIG_PATH
from snn_lstm.energy import ENERGY_SOURCE, PARTS
from snn_lstm.errors import UserError, reports_user_errors, run_reporting_errors
from snn_lstm.figures import plot_alpha_grid, plot_firing_rates, plot_surrogates, plot_training_curves
from snn_lstm.tracking import make_tracker, resolve_tracking_uri, store_error

log = logging.getLogger("snnlstm.report")


@dataclass
class Summary:
    """One row's runs: the final value of the table's metric per seed, and the means
    of the other final metrics."""

    metric: str
    run_ids: list[str] = field(default_factory=list)
    run_metrics: list[dict[str, float]] = field(default_factory=list)

    @property
    def values(self) -> list[float]:
        return [metrics[self.metric] for metrics in self.run_metrics]

    @property
    def count(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def metrics(self) -> dict[str, float]:
        """Each final metric averaged over the runs that logged it."""
        names = {name for metrics in self.run_metrics for name in metrics}
        return {name: statistics.fmean(m[name] for m in self.run_metrics if name in m) for name in names}

    @property
    def spread(self) -> float | None:
        return statistics.stdev(self.values) if self.count > 1 else None


def load_paper_values(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    beside_package = Path(__file__).resolve().parents[1] / path  # a relative default read from outside the clone
    if not path.is_file() and not path.is_absolute() and beside_package.is_file():
        path = beside_package
    if not path.is_file():
        raise UserError(f"{path} is missing: set paper_values to the paper-values file (experiments/paper_values.yaml)")
    try:
        tables = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise UserError(f"{path} is not valid YAML ({str(error).splitlines()[0]}): fix the file")
    if not isinstance(tables, dict) or not all(isinstance(t, dict) and "metric" in t and "rows" in t for t in tables.values()):
        raise UserError(f"{path}: every table needs a metric and rows (see experiments/paper_values.yaml)")
    return tables


def tagged_runs(uri: str, experiment: str) -> list[Any]:
    """Every finished run of `experiment` that carries a paper_table tag."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    try:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return []
        runs, token = [], None
        while True:
            page = client.search_runs([found.experiment_id], max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                break
    except MlflowException as error:
        raise store_error(uri, error) from None
    return [r for r in runs if r.info.status == "FINISHED" and "paper_table" in r.data.tags and "row" in r.data.tags]


def summarise(runs: list[Any], tables: dict[str, Any]) -> dict[tuple[str, str], Summary]:
    """(paper_table, row) -> Summary of the table's metric, the newest run per seed."""
    newest: dict[tuple[str, str, str], Any] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        tags = run.data.tags
        newest[(tags["paper_table"], tags["row"], tags.get("seed", "0"))] = run
    summaries: dict[tuple[str, str], Summary] = {}
    for (table, row, _), run in sorted(newest.items()):
        metric = tables.get(table, {}).get("metric")
        if metric not in run.data.metrics:
            continue
        summary = summaries.setdefault((table, row), Summary(metric))
        summary.run_ids.append(run.info.run_id)
        summary.run_metrics.append(dict(run.data.metrics))
    return summaries


# ----------------------------------------------------------------- tables
def fmt(value: float | None, metric: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.2f}%" if metric.endswith("acc") else f"{value:.4g}"


def fmt_summary(summary: Summary | None, metric: str) -> str:
    if summary is None or not summary.count:
        return "no runs"
    spread = summary.spread
    unit = "pp" if metric.endswith("acc") else ""
    spread_text = f" ± {100 * spread:.2f}{unit}" if spread is not None and unit else f" ± {spread:.3g}" if spread is not None else ""
    return f"{fmt(summary.mean, metric)}{spread_text} (n={summary.count})"


def rates_text(summary: Summary | None) -> str:
    if summary is None or "activity/l0/h" not in summary.metrics:
        return "-"
    return " / ".join(f"{summary.metrics[f'activity/l0/{part}']:.2f}" for part in PARTS)


def nanojoules(value: float) -> str:
    return f"{value:,.0f} nJ" if value >= 100 else f"{value:.3g} nJ"


def energy_text(summary: Summary | None) -> str:
    if summary is None or "energy/lstm_nj" not in summary.metrics:
        return "-"
    lstm = summary.metrics["energy/lstm_nj"]
    if "energy/slstm_nj" not in summary.metrics:
        return f"{nanojoules(lstm)} (LSTM)"
    spiking = summary.metrics["energy/slstm_nj"]
    return f"{nanojoules(spiking)} = {100 * spiking / lstm:.1f}% of the LSTM's {nanojoules(lstm)}"


HEADER = ["row", "paper", "ours: mean ± sd (seeds)", "plain LSTM, same setup", "firing i / f / g / o / c / h (layer 0)",
          "energy proxy per sample"]


def table_rows(name: str, spec: dict[str, Any], summaries: dict[tuple[str, str], Summary]) -> list[list[str]]:
    metric, rows = spec["metric"], []
    for row, entry in spec["rows"].items():
        entry = entry or {}
        ours = summaries.get((name, row))
        baseline = entry.get("baseline")
        baseline_text = f"{fmt_summary(summaries.get((name, baseline)), metric)} [{baseline}]" if baseline else "-"
        paper = f"{fmt(entry.get('paper'), metric)} ({entry.get('source', 'no source given')})"
        rows.append([row, paper, fmt_summary(ours, metric), baseline_text, rates_text(ours), energy_text(ours)])
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    escape = lambda cell: cell.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(escape(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ----------------------------------------------------------------- figures
def draw_figures(uri: str, tables: dict[str, Any], runs: list[Any], summaries, folder: Path) -> dict[str, Path]:
    """Every figure the runs allow, by caption."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    folder.mkdir(parents=True, exist_ok=True)
    figures = {"Fig. 2d: Gaussian surrogates (alpha 4 and 0.3) beside the derivatives of sigmoid and tanh":
               plot_surrogates(folder / "fig2d_surrogates.png")}
    sine = [r for r in runs if r.data.tags["paper_table"] == "fig4" and r.data.tags["row"] == "slstm"]
    if sine:
        local = Path(client.download_artifacts(max(sine, key=lambda r: r.info.start_time).info.run_id, "figures", str(folder)))
        for png in sorted(local.glob("*.png")):
            target = folder / f"fig4_{png.name}"
            shutil.move(str(png), target)
            figures["Fig. 4: sine prediction over training iterations (newest spiking run)"] = target
        shutil.rmtree(local, ignore_errors=True)
    grid = [(float(r.data.params.get("surrogate.alpha1", "nan")), float(r.data.params.get("surrogate.alpha2", "nan")),
             r.data.metrics["test/acc"]) for r in runs
            if r.data.tags["paper_table"] == "fig6" and "test/acc" in r.data.metrics]
    if grid:
        figures["Fig. 6: test accuracy over the alpha1 x alpha2 grid"] = plot_alpha_grid(grid, folder / "fig6_alpha_grid.png")
    for name, spec in tables.items():
        val_metric = "val/" + spec["metric"].split("/", 1)[1]  # test/acc -> val/acc
        curves = {}
        for row in spec["rows"]:
            summary = summaries.get((name, row))
            history = client.get_metric_history(summary.run_ids[0], val_metric) if summary else []
            if history:
                curves[row] = sorted((m.step, m.value) for m in history)
        if curves:
            figures[f"{spec['title']}: {val_metric} during training (first seed)"] = \
                plot_training_curves(curves, val_metric, folder / f"curves_{name}.png")
        rates = {row: [summaries[(name, row)].metrics[f"activity/l0/{part}"] for part in PARTS]
                 for row in spec["rows"] if (name, row) in summaries and "activity/l0/h" in summaries[(name, row)].metrics}
        if rates:
            figures[f"{spec['title']}: firing rate per gate, layer 0"] = \
                plot_firing_rates(rates, PARTS, folder / f"rates_{name}.png")
    return figures


# ----------------------------------------------------------------- report
def write_report(cfg: DictConfig) -> list[Path]:
    tables = load_paper_values(cfg.paper_values)
    uri = resolve_tracking_uri(cfg.tracking.uri, cfg.paths.run_dir)
    runs = tagged_runs(uri, cfg.tracking.experiment)
    log.info("%d tagged runs in %s", len(runs), uri)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summaries = summarise(runs, tables)
    figures = draw_figures(uri, tables, runs, summaries, out / "figures")
    note = (f"Energy proxy: synaptic operations per sample x {ENERGY_SOURCE}; accumulate 0.9 pJ, "
            "multiply-accumulate 4.6 pJ (snn_lstm/energy.py). Firing rates on the first test batch after training.")
    written = []
    if cfg.format == "md":
        for name, spec in tables.items():
            path = out / f"{name}.md"
            text = f"# {spec['title']}\n\nMetric: `{spec['metric']}` (last value of each run).\n\n"
            text += markdown_table(HEADER, table_rows(name, spec, summaries)) + f"\n\n{note}\n"
            path.write_text(text)
            written.append(path)
        index = out / "README.md"
        index.write_text("# snnlstm report\n\n" + "\n".join(f"- [{spec['title']}]({name}.md)" for name, spec in tables.items())
                         + "\n\n## Figures\n\n" + "\n".join(f"![{caption}](figures/{path.name})\n\n{caption}\n"
                                                             for caption, path in figures.items()))
        written.append(index)
    else:
        sections = [f"<h2>{html.escape(spec['title'])}</h2><p>Metric: <code>{html.escape(spec['metric'])}</code></p>"
                    + html_table(HEADER, table_rows(name, spec, summaries)) for name, spec in tables.items()]
        images = [f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,"
                  f"{base64.b64encode(path.read_bytes()).decode()}'><figcaption>{html.escape(caption)}</figcaption></figure>"
                  for caption, path in figures.items()]
        page = out / "report.html"
        page.write_text(
            "<!doctype html><html><head><meta charset='utf-8'><title>snnlstm report</title><style>"
            "body{font-family:sans-serif;max-width:75em;margin:auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #bbb;padding:.3em .5em;font-size:.9em}img{max-width:100%}</style></head><body>"
            f"<h1>snnlstm report</h1><p>{html.escape(note)}</p>" + "".join(sections) + "<h2>Figures</h2>" + "".join(images)
            + "</body></html>"
        )
        written.append(page)
    written += list(figures.values())
    return written


def log_report(cfg: DictConfig, files: list[Path]) -> str:
    tracker = make_tracker(cfg.tracking.backend, cfg.tracking.uri, cfg.tracking.experiment, cfg.paths.run_dir,
                           run_name="report", tags={"snnlstm_report": cfg.format})
    for path in files:
        tracker.log_artifact(path, "report/figures" if path.parent.name == "figures" else "report")
    tracker.finish("FINISHED")
    return tracker.describe()


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="report")
@reports_user_errors("report")
def hydra_app(cfg: DictConfig) -> None:
    files = write_report(cfg)
    for path in files:
        print(path)
    log.info("logged to %s", log_report(cfg, files))


def main() -> None:
    run_reporting_errors("report", hydra_app)


if __name__ == "__main__":
    main()
