"""`snnlstm report`: the paper's tables and figures rebuilt from the MLflow runs.

    snnlstm report                      # reports/<table>.md and reports/figures/*.png
    snnlstm report format=html          # reports/report.html, one self-contained page
    snnlstm report docs=[README.md]     # also rewrites the generated blocks of these files

A run counts for a row only when it is pinned to the row's experiment file: its tag
`recipe` (snn_lstm.recipes) equals the hash of that file as it stands now, or of one
cell of the file's sweep. Runs under the row's tags with any other recipe (a smoke
run with `trainer.steps=2`, a probe with other overrides, a recipe since changed)
are counted apart and named below the table, never averaged in. Of several pinned
finished runs with the same seed (and sweep cell) the newest counts.

For each row: the experiment file, the paper's value (experiments/paper_values.yaml,
with where it comes from), ours as mean, sample standard deviation and number of
seeds, the plain LSTM on the same setup, the firing rates of layer 0, the energy
proxy (snn_lstm.energy), the wall time of a run and the machines the runs ran on.
A row with a `grid` gets a second table, one cell per value pair of the sweep; a
row with `mean_over_cells: n` as well (leave one speaker out) is scored per seed as
the mean over its n cells, then mean and spread over the seeds that ran every cell.

A document holds a generated block per table, written between two markers:

    <!-- snnlstm report: table1 -->
    (the report's table1, rewritten by each `snnlstm report docs=[...]`)
    <!-- /snnlstm report -->

so the numbers in the README and experiments/*.md come from the runs behind them and
from nowhere else. The report is also logged to MLflow as the artifacts of a run
named `report`.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import re
import shutil
import statistics
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import hydra
import yaml
from omegaconf import DictConfig

from snn_lstm.config import CONFIG_PATH
from snn_lstm.energy import ENERGY_SOURCE, PARTS
from snn_lstm.errors import UserError, reports_user_errors, run_reporting_errors
from snn_lstm.figures import plot_alpha_grid, plot_firing_rates, plot_surrogates, plot_training_curves
from snn_lstm.recipes import RECIPE_TAG, Experiment, experiments
from snn_lstm.tracking import make_tracker, resolve_tracking_uri, store_error

log = logging.getLogger("snnlstm.report")

Cell = tuple[str, ...]  # the values of a row's grid parameters; () for a row without a grid
# markers on lines of their own, so that prose may quote them
BLOCK = re.compile(r"^(<!-- snnlstm report: (?P<name>[\w-]+) -->\n)(?P<body>.*?)^(<!-- /snnlstm report -->)$", re.S | re.M)
OPENING = re.compile(r"^<!-- snnlstm report: ", re.M)


@dataclass
class Summary:
    """The runs counted for one row (or one cell of a grid row), one per seed."""

    metric: str
    run_ids: list[str] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)
    run_metrics: list[dict[str, float]] = field(default_factory=list)
    wall_seconds: list[float] = field(default_factory=list)
    machines: set[str] = field(default_factory=set)

    def add(self, run: Any) -> None:
        self.run_ids.append(run.info.run_id)
        self.seeds.append(run.data.tags.get("seed", "0"))
        self.run_metrics.append(dict(run.data.metrics))
        if run.info.end_time and run.info.start_time:
            self.wall_seconds.append((run.info.end_time - run.info.start_time) / 1000)
        if "machine" in run.data.tags:
            self.machines.add(run.data.tags["machine"])

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


@dataclass(frozen=True)
class Curve:
    """A run's validation metric at every evaluation, and its epochs per step (None
    when it was trained for a number of steps, not epochs)."""

    points: list[tuple[int, float]]
    epochs_per_step: float | None


@dataclass
class Tally:
    """What the report makes of the runs: the counted ones by (table, row, cell), and
    how many runs under each row's tags were left out for another recipe."""

    summaries: dict[tuple[str, str, Cell], Summary]
    not_counted: Counter
    curves: dict[tuple[str, str], Curve] = field(default_factory=dict)  # (table, row) -> its first seed's

    def row(self, table: str, row: str) -> Summary | None:
        return self.summaries.get((table, row, ()))

    def cells(self, table: str, row: str) -> dict[Cell, Summary]:
        return {cell: s for (t, r, cell), s in self.summaries.items() if (t, r) == (table, row) and cell}

    def pooled(self, table: str, row: str, cell_count: int) -> Summary | None:
        """A grid row as one score per seed: each metric averaged over the row's
        `cell_count` cells (a leave-one-speaker-out mean), for the seeds that ran
        every cell; the wall times and machines of all its runs."""
        cells = list(self.cells(table, row).values())
        if len(cells) < cell_count:
            return None
        pooled = Summary(cells[0].metric)
        complete = set.intersection(*(set(cell.seeds) for cell in cells))
        for seed in sorted(complete, key=int):
            per_cell = [cell.run_metrics[cell.seeds.index(seed)] for cell in cells]
            names = set.intersection(*(set(metrics) for metrics in per_cell))
            pooled.seeds.append(seed)
            pooled.run_metrics.append({name: statistics.fmean(m[name] for m in per_cell) for name in names})
        for cell in cells:
            pooled.wall_seconds += cell.wall_seconds
            pooled.machines |= cell.machines
        return pooled if pooled.seeds else None


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


@lru_cache(maxsize=1)
def pinned_experiments() -> dict[tuple[str, str], Experiment]:
    """(paper_table, row) -> the experiment file that fills it, its recipes as the files stand."""
    return {(e.table, e.row): e for e in experiments() if e.table and e.row}


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


def grid_cell(run: Any, grid: list[str]) -> Cell:
    return tuple(run.data.params.get(name, "?") for name in grid)


def summarise(runs: list[Any], tables: dict[str, Any], pinned: dict[tuple[str, str], Experiment]) -> Tally:
    """Count each run pinned to its row's experiment file, the newest per seed (and cell)."""
    newest: dict[tuple[str, str, Cell, str], Any] = {}
    not_counted: Counter = Counter()
    for run in sorted(runs, key=lambda r: r.info.start_time):
        tags = run.data.tags
        table, row = tags["paper_table"], tags["row"]
        spec = tables.get(table, {})
        entry = spec.get("rows", {}).get(row) or {}
        if spec.get("metric") not in run.data.metrics:
            continue
        experiment = pinned.get((table, row))
        if experiment is None or tags.get(RECIPE_TAG) not in experiment.recipes:
            not_counted[(table, row)] += 1
            continue
        newest[(table, row, grid_cell(run, entry.get("grid", [])), tags.get("seed", "0"))] = run
    summaries: dict[tuple[str, str, Cell], Summary] = {}
    for (table, row, cell, _), run in sorted(newest.items()):
        summaries.setdefault((table, row, cell), Summary(tables[table]["metric"])).add(run)
    return Tally(summaries, not_counted)


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
    presentations = summary.metrics.get("ops/presentations", 1.0)
    per_decision = "" if presentations == 1 else f", per decision of {presentations:g} spike trains"
    if "energy/slstm_nj" not in summary.metrics:
        return f"{nanojoules(lstm)} (LSTM{per_decision})"
    spiking = summary.metrics["energy/slstm_nj"]
    return f"{nanojoules(spiking)}{per_decision} = {100 * spiking / lstm:.1f}% of the LSTM's {nanojoules(lstm)}"


def duration(seconds: float) -> str:
    return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def wall_text(summaries: list[Summary]) -> str:
    seconds = [s for summary in summaries for s in summary.wall_seconds]
    if not seconds:
        return "-"
    low, high = min(seconds), max(seconds)
    return duration(low) if high - low <= 0.05 * high else f"{duration(low)} - {duration(high)}"


def machines_text(summaries: list[Summary]) -> str:
    return "; ".join(sorted({m for summary in summaries for m in summary.machines})) or "-"


HEADER = ["row", "experiment", "paper", "ours: mean ± sd (n seeds)", "plain LSTM, same setup",
          "firing i / f / g / o / c / h (layer 0)", "energy proxy per sample", "wall time per run", "machine"]


def row_summary(table: str, row: str, entry: dict[str, Any], tally: Tally) -> Summary | None:
    """What a row reports: its runs, or for a row with `mean_over_cells: n` its grid
    of n cells pooled per seed (Tally.pooled)."""
    if entry.get("mean_over_cells"):
        return tally.pooled(table, row, entry["mean_over_cells"])
    return tally.row(table, row)


def table_rows(name: str, spec: dict[str, Any], tally: Tally, pinned: dict[tuple[str, str], Experiment]) -> list[list[str]]:
    metric, rows = spec["metric"], []
    for row, entry in spec["rows"].items():
        entry = entry or {}
        experiment = pinned.get((name, row))
        ours = row_summary(name, row, entry, tally)
        counted = [ours] if ours else []
        pooled_cells = entry.get("mean_over_cells")
        if entry.get("grid") and not pooled_cells:
            cells = tally.cells(name, row)
            counted = list(cells.values())
            ours_text = f"{len(cells)} cells, below" if cells else "no runs"
        elif pooled_cells:
            ours_text = f"{fmt_summary(ours, metric)}, mean over {pooled_cells} cells (below)" if ours else "no runs with every cell"
        else:
            ours_text = fmt_summary(ours, metric)
            trivial = metric.replace("/", "/baseline_", 1)  # a task's own trivial predictor, e.g. test/baseline_mse
            if ours and trivial in ours.metrics:
                ours_text += f"; trivial baseline {fmt(ours.metrics[trivial], metric)}"
        baseline = entry.get("baseline")
        baseline_summary = row_summary(name, baseline, spec["rows"].get(baseline) or {}, tally) if baseline else None
        baseline_text = f"{fmt_summary(baseline_summary, metric)} [{baseline}]" if baseline else "-"
        paper = f"{fmt(entry.get('paper'), metric)} ({entry.get('source', 'no source given')})"
        rows.append([row, f"`{experiment.name}`" if experiment else "none", paper, ours_text, baseline_text,
                     rates_text(ours), energy_text(ours), wall_text(counted), machines_text(counted)])
    return rows


def grid_table(name: str, row: str, grid: list[str], metric: str, tally: Tally) -> tuple[list[str], list[list[str]]]:
    """A two-parameter grid as rows of the first by columns of the second; any other as a list of cells."""
    cells = tally.cells(name, row)

    def order(value: str) -> tuple[float, str]:
        try:
            return float(value), value
        except ValueError:
            return math.inf, value

    if len(grid) == 2:
        firsts = sorted({cell[0] for cell in cells}, key=order)
        seconds = sorted({cell[1] for cell in cells}, key=order)
        header = [f"{grid[0]} \\ {grid[1]}", *seconds]
        return header, [[first, *(fmt_summary(cells.get((first, second)), metric) for second in seconds)] for first in firsts]
    return [*grid, "ours: mean ± sd (n seeds)"], [[*cell, fmt_summary(cells[cell], metric)] for cell in sorted(cells)]


def details_table(name: str, spec: dict[str, Any], tally: Tally) -> tuple[list[str], list[list[str]]] | None:
    """A table's `details` ({metric: heading}): more final metrics of each counted row,
    the mean over its seeds (memory/..., for instance); None when the table has none."""
    details = spec.get("details") or {}
    if not details:
        return None
    rows = []
    for row, entry in spec["rows"].items():
        summary = row_summary(name, row, entry or {}, tally)
        metrics = summary.metrics if summary else {}
        rows.append([row, *(f"{metrics[metric]:.3g}" if metric in metrics else "-" for metric in details)])
    return ["row (mean over seeds)", *(f"{heading} (`{metric}`)" for metric, heading in details.items())], rows


def validation_metric(spec: dict[str, Any]) -> str:
    return "val/" + spec["metric"].split("/", 1)[1]  # test/acc -> val/acc


def epochs_per_step(params: dict[str, str]) -> float | None:
    epochs, steps = params.get("trainer.epochs", "None"), params.get("trainer.steps", "None")
    return None if "None" in (epochs, steps) else float(epochs) / float(steps)


def add_curves(tally: Tally, uri: str, tables: dict[str, Any], runs: list[Any]) -> None:
    """The validation history of every counted row's first seed, into tally.curves
    (for the figures of every table, and the tables that ask for curves)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    params = {run.info.run_id: run.data.params for run in runs}
    for name, spec in tables.items():
        for row in spec["rows"]:
            summary = tally.row(name, row)
            if summary:
                history = client.get_metric_history(summary.run_ids[0], validation_metric(spec))
                if history:
                    tally.curves[(name, row)] = Curve(sorted((m.step, m.value) for m in history),
                                                      epochs_per_step(params.get(summary.run_ids[0], {})))


def curves_table(name: str, spec: dict[str, Any], tally: Tally) -> tuple[list[str], list[list[str]]] | None:
    """The learning curves as a table: the validation metric of each row's first seed at every evaluation."""
    curves = {row: dict(tally.curves[(name, row)].points) for row in spec["rows"] if (name, row) in tally.curves}
    if not spec.get("curves") or not curves:
        return None
    steps = sorted({step for curve in curves.values() for step in curve})
    rows = [[row, *(fmt(curve.get(step), spec["metric"]) for step in steps)] for row, curve in curves.items()]
    return [f"{validation_metric(spec)} at step (first seed)", *map(str, steps)], rows


def log_fit(curve: Curve) -> tuple[float, float, str] | None:
    """Least squares of v = a + b ln(u) over the evaluations after the first (the
    first is the start-up transient), u in epochs (else steps): (a, b, unit), or
    None with fewer than 2 of them."""
    scale, unit = (curve.epochs_per_step, "epochs") if curve.epochs_per_step else (1.0, "steps")
    points = [(math.log(step * scale), value) for step, value in curve.points[1:]]
    if len(points) < 2:
        return None
    mean_x = statistics.fmean(x for x, _ in points)
    mean_v = statistics.fmean(v for _, v in points)
    b = sum((x - mean_x) * (v - mean_v) for x, v in points) / sum((x - mean_x) ** 2 for x, _ in points)
    return mean_v - b * mean_x, b, unit


FAR = 1e6  # epochs (or steps) past which an extrapolated reach is only "beyond"


def extrapolation_table(name: str, spec: dict[str, Any], tally: Tally) -> tuple[list[str], list[list[str]]] | None:
    """With `extrapolate: target`: the log fit of each row's curve and where it reaches the target."""
    target = spec.get("extrapolate")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, float))):
        # checked before any run is looked at, so a bad value is refused in a table without runs too
        raise UserError(f"paper values, table {name}: extrapolate must be the metric value to reach (a number), got {target!r}")
    fits = {row: log_fit(tally.curves[(name, row)]) for row in spec["rows"] if (name, row) in tally.curves}
    fits = {row: fit for row, fit in fits.items() if fit}
    if target is None or not fits:
        return None
    rows = []
    for row, (a, b, unit) in fits.items():
        if round(b, 6) <= 0:  # a flat curve's slope is rounding noise
            reach = "never (the curve does not rise)"
        elif (target - a) / b > math.log(FAR):
            reach = f"beyond {FAR:,.0f} {unit}"
        else:
            reach = f"{math.exp((target - a) / b):,.0f} {unit}"
        rows.append([row, f"{a:.3f}", f"{b:.3f}", reach])
    return ["row (first seed)", "a", "b", f"{fmt(target, spec['metric'])} reached at (estimate)"], rows


def extra_tables(name: str, spec: dict[str, Any], tally: Tally) -> list[tuple[str, tuple[list[str], list[list[str]]]]]:
    """The tables a table's spec asks for below its rows, with their captions."""
    tables = [("Details, the mean over the counted seeds", details_table(name, spec, tally)),
              ("Learning curves", curves_table(name, spec, tally)),
              ("Extrapolation, an estimate: validation metric = a + b ln(epochs) fitted to the learning curve after "
               "its first evaluation (steps where a run counts no epochs); a longer schedule bends the curve "
               "differently", extrapolation_table(name, spec, tally))]
    return [(caption, table) for caption, table in tables if table]


def not_counted_lines(name: str, spec: dict[str, Any], tally: Tally) -> list[str]:
    return [f"`{row}`: {tally.not_counted[(name, row)]} run(s) with another recipe, not counted"
            for row in spec["rows"] if tally.not_counted[(name, row)]]


NOTE = (f"Energy proxy: synaptic operations per sample x {ENERGY_SOURCE}; accumulate 0.9 pJ, "
        "multiply-accumulate 4.6 pJ (snn_lstm/energy.py). Firing rates on the first test batch after training. "
        "Only runs pinned to the experiment file's recipe are counted; the spread is the sample standard deviation "
        "over seeds.")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    escape = lambda cell: cell.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(escape(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def table_markdown(name: str, spec: dict[str, Any], tally: Tally, pinned) -> str:
    """One table as the report prints it: the rows, each grid, the runs not counted."""
    parts = [f"Metric: `{spec['metric']}` (last value of each run).", markdown_table(HEADER, table_rows(name, spec, tally, pinned))]
    for row, entry in spec["rows"].items():
        if (entry or {}).get("grid"):
            parts += [f"`{row}`, mean ± sd (n seeds) per cell:", markdown_table(*grid_table(name, row, entry["grid"], spec["metric"], tally))]
    for caption, table in extra_tables(name, spec, tally):
        parts += [f"{caption}:", markdown_table(*table)]
    parts += [line for line in ["\n".join(f"- {line}" for line in not_counted_lines(name, spec, tally))] if line]
    return "\n\n".join(parts + [NOTE])


def table_html(name: str, spec: dict[str, Any], tally: Tally, pinned) -> str:
    parts = [f"<h2>{html.escape(spec['title'])}</h2><p>Metric: <code>{html.escape(spec['metric'])}</code></p>",
             html_table(HEADER, table_rows(name, spec, tally, pinned))]
    for row, entry in spec["rows"].items():
        if (entry or {}).get("grid"):
            parts += [f"<p>{html.escape(row)}, mean ± sd (n seeds) per cell:</p>",
                      html_table(*grid_table(name, row, entry["grid"], spec["metric"], tally))]
    for caption, table in extra_tables(name, spec, tally):
        parts += [f"<p>{html.escape(caption)}:</p>", html_table(*table)]
    parts += [f"<p>{html.escape(line)}</p>" for line in not_counted_lines(name, spec, tally)]
    return "".join(parts)


# ----------------------------------------------------------------- figures
def draw_figures(uri: str, tables: dict[str, Any], tally: Tally, folder: Path) -> dict[str, Path]:
    """Every figure the counted runs allow, by caption."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    folder.mkdir(parents=True, exist_ok=True)
    figures = {"Fig. 2d: Gaussian surrogates (alpha 4 and 0.3) beside the derivatives of sigmoid and tanh":
               plot_surrogates(folder / "fig2d_surrogates.png")}
    sine = tally.row("fig4", "slstm")
    if sine:
        local = Path(client.download_artifacts(sine.run_ids[0], "figures", str(folder)))
        for png in sorted(local.glob("*.png")):
            target = folder / f"fig4_{png.name}"
            shutil.move(str(png), target)
            figures["Fig. 4: sine prediction over training iterations (spiking LSTM, first seed)"] = target
        shutil.rmtree(local, ignore_errors=True)
    for name, spec in tables.items():
        for row, entry in spec["rows"].items():
            grid = (entry or {}).get("grid", [])
            cells = tally.cells(name, row)
            if len(grid) == 2 and cells:
                points = [(float(cell[0]), float(cell[1]), summary.mean) for cell, summary in cells.items()]
                figures[f"{spec['title']}: {spec['metric']} over the {grid[0]} x {grid[1]} grid (mean over seeds)"] = \
                    plot_alpha_grid(points, folder / f"{name}_{row}.png")
        val_metric = validation_metric(spec)
        curves = {row: tally.curves[(name, row)].points for row in spec["rows"] if (name, row) in tally.curves}
        if curves:
            figures[f"{spec['title']}: {val_metric} during training (first seed)"] = \
                plot_training_curves(curves, val_metric, folder / f"curves_{name}.png")
        summaries = {row: row_summary(name, row, entry or {}, tally) for row, entry in spec["rows"].items()}
        counted = {row: summary.metrics for row, summary in summaries.items() if summary}  # pooled rows too
        rates = {row: [metrics[f"activity/l0/{part}"] for part in PARTS]
                 for row, metrics in counted.items() if "activity/l0/h" in metrics}
        if rates:
            figures[f"{spec['title']}: firing rate per gate, layer 0"] = \
                plot_firing_rates(rates, PARTS, folder / f"rates_{name}.png")
    return figures


# ----------------------------------------------------------------- documents
def filled_document(path: Path, blocks: dict[str, str]) -> str:
    """The text of `path` with each generated block replaced by the report's table."""
    if not path.is_file():
        raise UserError(f"docs: {path} is not a file: give the documents whose report blocks to rewrite")
    text = path.read_text()
    found = list(BLOCK.finditer(text))
    if not found or len(found) != len(OPENING.findall(text)):
        raise UserError(f"docs: {path} needs each '<!-- snnlstm report: TABLE -->' closed by '<!-- /snnlstm report -->': "
                        "fix its markers or leave it out of docs")
    unknown = sorted({m["name"] for m in found} - set(blocks))
    if unknown:
        raise UserError(f"docs: {path} asks for table {unknown[0]}, which is not in the paper-values file: "
                        f"use one of {', '.join(blocks)}")
    return BLOCK.sub(lambda m: f"{m.group(1)}{blocks[m['name']]}\n{m.group(4)}", text)


def write_documents(texts: dict[Path, str]) -> list[Path]:
    """Each document replaced whole (a rename), after all of them were filled, so a bad one changes none."""
    for path, text in texts.items():
        partial = path.with_name(path.name + ".report-tmp")
        partial.write_text(text)
        partial.replace(path)
    return list(texts)


# ----------------------------------------------------------------- report
def write_report(cfg: DictConfig) -> list[Path]:
    tables = load_paper_values(cfg.paper_values)
    uri = resolve_tracking_uri(cfg.tracking.uri, cfg.paths.run_dir)
    runs = tagged_runs(uri, cfg.tracking.experiment)
    pinned = pinned_experiments()
    tally = summarise(runs, tables, pinned)
    add_curves(tally, uri, tables, runs)
    log.info("%d tagged runs in %s, %d counted", len(runs), uri, sum(s.count for s in tally.summaries.values()))
    blocks = {name: table_markdown(name, spec, tally, pinned) for name, spec in tables.items()}
    documents = {Path(path): filled_document(Path(path), blocks) for path in cfg.docs}  # before anything is written
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = draw_figures(uri, tables, tally, out / "figures")
    written = []
    if cfg.format == "md":
        for name, spec in tables.items():
            path = out / f"{name}.md"
            path.write_text(f"# {spec['title']}\n\n{blocks[name]}\n")
            written.append(path)
        index = out / "README.md"
        index.write_text("# snnlstm report\n\n" + "\n".join(f"- [{spec['title']}]({name}.md)" for name, spec in tables.items())
                         + "\n\n## Figures\n\n" + "\n".join(f"![{caption}](figures/{path.name})\n\n{caption}\n"
                                                             for caption, path in figures.items()))
        written.append(index)
    else:
        images = [f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,"
                  f"{base64.b64encode(path.read_bytes()).decode()}'><figcaption>{html.escape(caption)}</figcaption></figure>"
                  for caption, path in figures.items()]
        page = out / "report.html"
        page.write_text(
            "<!doctype html><html><head><meta charset='utf-8'><title>snnlstm report</title><style>"
            "body{font-family:sans-serif;max-width:75em;margin:auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #bbb;padding:.3em .5em;font-size:.9em}img{max-width:100%}</style></head><body>"
            f"<h1>snnlstm report</h1><p>{html.escape(NOTE)}</p>"
            + "".join(table_html(name, spec, tally, pinned) for name, spec in tables.items())
            + "<h2>Figures</h2>" + "".join(images) + "</body></html>"
        )
        written.append(page)
    written += list(figures.values())
    return written + write_documents(documents)


def log_report(cfg: DictConfig, files: list[Path]) -> str:
    tracker = make_tracker(cfg.tracking.backend, cfg.tracking.uri, cfg.tracking.experiment, cfg.paths.run_dir,
                           run_name="report", tags={"snnlstm_report": cfg.format})
    for path in files:
        if path.is_relative_to(Path(cfg.out_dir)):
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
