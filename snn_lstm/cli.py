"""`snnlstm VERB [ARGS...]`: each verb is a Hydra app; ARGS go to it untouched,
so overrides, `-m`, `--cfg job` and `--help` work as with any Hydra app."""

from __future__ import annotations

import importlib
import sys

# verb -> (module with a `main()`, one-line description)
VERBS = {
    "train": ("snn_lstm.train", "train a model (Hydra app: snnlstm train task=... model=...)"),
    "evaluate": ("snn_lstm.evaluate", "evaluate a checkpoint on a split (snnlstm evaluate ckpt=PATH)"),
    "generate": ("snn_lstm.generate", "sample text from a trained language model (snnlstm generate ckpt=PATH prompt=...)"),
    "export": ("snn_lstm.export", "a trained spiking LSTM as ONNX or NIR (snnlstm export ckpt=PATH format=onnx|nir)"),
    "search": ("snn_lstm.search", "Optuna hyperparameter search over train (snnlstm search space=sine n_trials=20)"),
    "bench": ("snn_lstm.bench", "time the spiking LSTM against torch.nn.LSTM (speed, memory)"),
    "report": ("snn_lstm.report", "rebuild the paper's tables and figures from the MLflow runs (format=md|html)"),
    "sync": ("snn_lstm.sync", "replay a run's tracking backlog into MLflow (snnlstm sync run=FOLDER)"),
}

USAGE = "usage: snnlstm VERB [HYDRA ARGS...]\n\nverbs:\n" + "\n".join(
    f"  {verb:<10} {description}" for verb, (_, description) in VERBS.items()
) + "\n\n`snnlstm VERB --help` shows a verb's config groups and options."


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"snnlstm: error: unknown verb '{verb}': choose one of {', '.join(VERBS)}", file=sys.stderr)
        sys.exit(2)
    try:
        module = importlib.import_module(VERBS[verb][0])
    except ModuleNotFoundError as missing:  # `pip install snnlstm` is the layer alone
        print(f"snnlstm: error: the command line needs packages this installation lacks ({missing.name}): "
              "pip install 'snnlstm[app]'", file=sys.stderr)
        sys.exit(2)
    sys.argv = [f"snnlstm {verb}", *rest]
    module.main()


if __name__ == "__main__":
    main()
