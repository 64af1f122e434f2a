"""`snnlstm bench`: our spiking LSTM against torch.nn.LSTM, same shapes, one process.

For each shape (sequential MNIST, pixel MNIST, character LM, and two streams of batch
1 by default) it draws input spikes at the shape's `rate` and times
    inference   forward under torch.no_grad()
    training    forward + backward of sum(output)
beside the firing rates of the inputs and of the spiking LSTM's output h (its
inference work falls with the latter: only the weights of units that spiked are added)
as medians over `repeats` runs after `warmup`, and measures the memory held for
backward: the bytes of every tensor autograd saves between forward and backward
(counted once per storage). On CUDA it also reports the peak allocated memory.
Prints a table with the ratio to nn.LSTM, writes it to bench.md in the run folder
and logs it to MLflow.

    snnlstm bench                                  # default shapes, CPU
    snnlstm bench device=cuda                      # on a GPU (auto: the Triton engine)
    snnlstm bench device=cuda 'engines=[torch,triton]' 'matmul_dtypes=[float32,tf32,bfloat16]'
    snnlstm bench 'engines=[auto,torch,reference]' repeats=5
    snnlstm bench 'matmul_dtypes=[float32,bfloat16]'  # the products in bfloat16 too
    snnlstm bench '~shapes' '+shapes={mine: {steps: 50, batch: 16, input: 10, hidden: 64, rate: 0.2}}'
    snnlstm bench ckpt=runs/smnist/<run>/last.pt 'ckpt_batches=[1,128]'   # a trained model's weights and inputs
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Callable

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from snn_lstm.checkpoint import load_checkpoint, reading
from snn_lstm.config import CONFIG_PATH, BenchShape, check_options
from snn_lstm.devices import machine_description, select_device, setup_torch
from snn_lstm.errors import UserError, one_line, reports_user_errors, run_reporting_errors
from snn_lstm.models import model_from_checkpoint
from snn_lstm.spiking import SpikingLSTM
from snn_lstm.spiking.fused import resolve_engine
from snn_lstm.tasks import build_task
from snn_lstm.tracking import make_tracker

log = logging.getLogger("snnlstm.bench")


def saved_for_backward_bytes(forward: Callable[[], object]) -> int:
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = forward()
    del output
    return sum(storages.values())


def interleaved_medians_ms(
    runs: dict[str, Callable[[], object]], repeats: int, warmup: int, device: torch.device
) -> dict[str, float]:
    """Median wall time of each run, the runs taken in turn (A, B, A, B, ...) so
    that a slow spell of a shared machine hits all of them alike."""

    def timed(run: Callable[[], object]) -> float:
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for run in runs.values():
        for _ in range(warmup):
            timed(run)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(timed(run))
    return {name: 1e3 * statistics.median(values) for name, values in times.items()}


def peak_cuda_mb(run: Callable[[], object], device: torch.device) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    run()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated(device) - base) / 1e6


def typed_shapes(cfg: DictConfig) -> dict[str, DictConfig]:
    """The shapes as BenchShape nodes, checked: `~shapes '+shapes={...}'` (the way to
    give your own) replaces the typed node with a plain dict."""
    shapes = {}
    for name, raw in cfg.shapes.items():
        try:
            shapes[name] = OmegaConf.merge(OmegaConf.structured(BenchShape), raw)
        except OmegaConfBaseException as error:
            raise UserError(f"shapes.{name}: {one_line(error)} (steps, batch, input and hidden are positive integers)")
        check_options(shapes[name], f"shapes.{name}.")
    return shapes


def spiking_models(cfg: DictConfig, device: torch.device, inputs: int, hidden: int,
                   weights: dict | None = None, cells: list[dict] | None = None) -> dict[str, SpikingLSTM]:
    """One spiking LSTM per engine, product precision and cell (`cells`: SpikingLSTM's cell
    options, one dict per model; default cfg.cells), with `weights` if given."""
    models = {}
    for cell in cells or [{"cell": name} for name in cfg.cells]:
        for engine in cfg.engines:
            for matmul_dtype in cfg.matmul_dtypes:
                if engine == "reference" and matmul_dtype != "float32":
                    continue  # the reference has no reduced-precision products
                if cell["cell"] != "binary" and matmul_dtype != "float32":
                    continue  # the analog cells compute their products in the parameters' dtype
                try:
                    label = engine if engine == "reference" else f"{engine}->{resolve_engine(engine, device)}"
                except (ValueError, RuntimeError) as error:
                    raise UserError(f"engines: {error}") from None
                label += "" if matmul_dtype == "float32" else f",{matmul_dtype}"
                label += "" if cell["cell"] == "binary" else f",{cell['cell']}"
                model = SpikingLSTM(inputs, hidden, engine=engine, matmul_dtype=matmul_dtype, **cell)
                if weights is not None:
                    model.load_state_dict(weights)
                models[f"slstm[{label}]"] = model
    return models


def cases(cfg: DictConfig, device: torch.device):
    """(row name, inputs [T, B, I], spiking models) of every shape, and of the trained
    checkpoint when given (its weights on its task's first test inputs)."""
    for name, shape in typed_shapes(cfg).items():
        generator = torch.Generator().manual_seed(0)
        x = (torch.rand(shape.steps, shape.batch, shape.input, generator=generator) < shape.rate).float()
        torch.manual_seed(0)
        yield name, x, spiking_models(cfg, device, shape.input, shape.hidden)
    if cfg.ckpt is None:
        return
    checkpoint = load_checkpoint(cfg.ckpt)
    with reading(cfg.ckpt):
        trained = model_from_checkpoint(checkpoint, f"checkpoint {cfg.ckpt}").backbone
        config = checkpoint["config"]
        if not isinstance(trained, SpikingLSTM) or trained.num_layers != 1:
            raise UserError(f"ckpt: {cfg.ckpt} is not a one-layer spiking LSTM, which is what the bench times")
        task = build_task(config["task"], encoder=config["encoder"]["name"], data_dir=cfg.paths.data_dir,
                          seed=config["seed"], eval_limit=None, cache_dir=cfg.paths.cache_dir)
    for batch in cfg.ckpt_batches:
        x = task.sample_inputs(batch).transpose(0, 1).contiguous()
        weights = {name: value for name, value in trained.state_dict().items()}
        cell = {"cell": trained.spike.cell, "write_scale": trained.spike.write_scale}
        yield f"trained_b{batch}", x, spiking_models(cfg, device, trained.input_size, trained.hidden_size, weights, [cell])


def run_benchmark(cfg: DictConfig, device: torch.device) -> list[dict]:
    rows = []
    for shape_name, x, spiking in cases(cfg, device):
        steps, batch, inputs = x.shape
        hidden = next(iter(spiking.values())).hidden_size
        x = x.to(device)
        torch.manual_seed(0)
        models = {"nn.LSTM": torch.nn.LSTM(inputs, hidden), **spiking}
        for model in models.values():
            model.to(device)
        log.info("timing %s at %s (T=%d, B=%d, I=%d, H=%d)", ", ".join(models), shape_name, steps, batch, inputs, hidden)

        def inference(model):
            with torch.no_grad():
                model(x)

        def training(model):
            output, _ = model(x)
            output.sum().backward()

        inference_ms = interleaved_medians_ms(
            {name: (lambda m=model: inference(m)) for name, model in models.items()}, cfg.repeats, cfg.warmup, device
        )
        train_ms = interleaved_medians_ms(
            {name: (lambda m=model: training(m)) for name, model in models.items()}, cfg.repeats, cfg.warmup, device
        )
        shape_rows = []
        for name, model in models.items():
            with torch.no_grad():
                h_rate = model(x)[0].mean().item() if isinstance(model, SpikingLSTM) else float("nan")
            row = {
                "shape": shape_name,
                "model": name,
                "x_rate": x.mean().item(),
                "h_rate": h_rate,
                "inference_ms": inference_ms[name],
                "train_ms": train_ms[name],
                "saved_mb": saved_for_backward_bytes(lambda: model(x)) / 1e6,
            }
            if device.type == "cuda":
                row["peak_mb"] = peak_cuda_mb(lambda: training(model), device)
            shape_rows.append(row)
        baseline = shape_rows[0]
        for row in shape_rows:
            row["inference_ratio"] = row["inference_ms"] / baseline["inference_ms"]
            row["train_ratio"] = row["train_ms"] / baseline["train_ms"]
            row["saved_ratio"] = row["saved_mb"] / baseline["saved_mb"]
        rows.extend(shape_rows)
    return rows


def markdown_table(rows: list[dict], device: torch.device) -> str:
    peak = device.type == "cuda"
    header = ("| shape | model | firing x, h | inference ms | x nn.LSTM | train fwd+bwd ms | x nn.LSTM | "
              "saved for backward MB | x nn.LSTM |")
    header += " peak MB |" if peak else ""
    lines = [header, "|" + " --- |" * (10 if peak else 9)]
    for r in rows:
        firing = f"{r['x_rate']:.2f}, " + ("-" if r["h_rate"] != r["h_rate"] else f"{r['h_rate']:.2f}")
        line = (
            f"| {r['shape']} | {r['model']} | {firing} | {r['inference_ms']:.2f} | {r['inference_ratio']:.2f} | "
            f"{r['train_ms']:.2f} | {r['train_ratio']:.2f} | {r['saved_mb']:.1f} | {r['saved_ratio']:.2f} |"
        )
        lines.append(line + (f" {r['peak_mb']:.1f} |" if peak else ""))
    return "\n".join(lines)


def bench(cfg: DictConfig, out_dir: Path) -> list[dict]:
    device = select_device(cfg.device)
    setup_torch(cfg.threads)
    rows = run_benchmark(cfg, device)
    machine = machine_description(device)
    table = markdown_table(rows, device)
    print(f"\n{machine}\n\n{table}\n")
    report = out_dir / "bench.md"
    report.write_text(f"# snnlstm bench\n\n{machine}\n\n{table}\n")

    tracker = make_tracker(
        cfg.tracking.backend, cfg.tracking.uri, cfg.tracking.experiment, cfg.paths.run_dir,
        run_name=f"bench-{device.type}", tags={"verb": "bench", "device": device.type},
    )
    tracker.log_params({"device": device.type, "threads": torch.get_num_threads(), "torch": torch.__version__,
                        **{f"shapes.{k}": str(dict(v)) for k, v in cfg.shapes.items()}})
    for row in rows:
        prefix = f"bench/{row['shape']}/{row['model']}"
        prefix = prefix.replace("[", "_").replace("]", "").replace("->", "_").replace(",", "_")
        tracker.log_metrics({f"{prefix}/{k}": v for k, v in row.items() if isinstance(v, float)}, 0)
    tracker.log_artifact(report)
    tracker.finish()
    log.info("table written to %s; %s", report, tracker.describe())
    return rows


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="bench")
@reports_user_errors("bench")
def hydra_app(cfg: DictConfig) -> None:
    bench(cfg, Path(HydraConfig.get().runtime.output_dir))


def main() -> None:
    run_reporting_errors("bench", hydra_app)


if __name__ == "__main__":
    main()
