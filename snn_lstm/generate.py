"""`snnlstm generate ckpt=PATH prompt="..." length=200 temperature=0.8`: text sampled
from a trained character or word model (paper Table 4), from the checkpoint alone
(it carries the vocabulary and, for words, the input vectors).

The prompt runs through the model first; then each next token is drawn from
softmax(logits / temperature) and fed back. Temperature 0 takes the most likely
token every time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from snn_lstm.checkpoint import load_checkpoint, reading
from snn_lstm.config import CONFIG_PATH
from snn_lstm.data.text import Vocabulary, words
from snn_lstm.encoders import build_encoder, make_generator
from snn_lstm.errors import UserError, reports_user_errors, run_reporting_errors
from snn_lstm.models import model_from_checkpoint

log = logging.getLogger("snnlstm.generate")
INPUT_STREAM, CHOICE_STREAM = 7, 8  # generator streams: input encoding, token choice


def detokenize(tokens: list[str], level: str) -> str:
    if level == "char":
        return "".join(tokens)
    text = " ".join(tokens)
    for mark in (" .", " ,", " ;", " :", " !", " ?", " )", " '"):
        text = text.replace(mark, mark[1:])
    return text.replace("( ", "(")


@torch.no_grad()
def sample_text(
    model: torch.nn.Module,
    task_state: dict[str, Any],
    encoder,
    prompt: str,
    length: int,
    temperature: float,
    seed: int,
) -> str:
    """The prompt followed by `length` sampled tokens."""
    if length < 0 or temperature < 0:
        raise UserError(f"length and temperature must not be negative, got {length} and {temperature}")
    level, vocab, vectors = task_state["level"], Vocabulary(task_state["symbols"]), task_state["vectors"]
    prompt_tokens = list(prompt.lower()) if level == "char" else words(prompt.lower())
    if not prompt_tokens:
        raise UserError("the prompt is empty: give a few characters or words to start from, e.g. prompt='alice '")

    def inputs(ids: torch.Tensor, index: int) -> torch.Tensor:
        embedded = F.one_hot(ids, len(vocab)).float() if vectors is None else vectors[ids]
        return encoder(embedded.unsqueeze(0), make_generator(seed, INPUT_STREAM, index))

    was_training = model.training
    model.eval()
    generator = make_generator(seed, CHOICE_STREAM)
    ids = torch.tensor(vocab.encode(prompt_tokens))
    logits, state = model(inputs(ids, 0), None)
    produced = []
    for k in range(length):
        last = logits[0, -1]
        if temperature == 0:
            token = int(last.argmax())
        else:
            token = int(torch.multinomial(F.softmax(last / temperature, dim=-1), 1, generator=generator))
        produced.append(token)
        logits, state = model(inputs(torch.tensor([token]), k + 1), state)
    model.train(was_training)
    return detokenize(prompt_tokens + vocab.decode(produced), level)


def generate(cfg: DictConfig) -> str:
    checkpoint = load_checkpoint(cfg.ckpt)
    with reading(cfg.ckpt):
        task_state = checkpoint.get("task_state") or {}
        if "symbols" not in task_state:
            raise UserError(f"{cfg.ckpt} is not a language model checkpoint (task {checkpoint['config']['task']['name']})")
        model = model_from_checkpoint(checkpoint, f"checkpoint {cfg.ckpt}")
        encoder = build_encoder(checkpoint["config"]["encoder"]["name"])
        vocabulary = Vocabulary(task_state["symbols"])
        vectors = task_state["vectors"]
        inputs = len(vocabulary) if vectors is None else vectors.shape[1]
        if (model.backbone.input_size, model.readout.out_features) != (inputs, len(vocabulary)):
            raise UserError(f"checkpoint {cfg.ckpt} is inconsistent: a model of {model.backbone.input_size} inputs and "
                            f"{model.readout.out_features} outputs for a vocabulary of {len(vocabulary)} symbols")
    text = sample_text(model, task_state, encoder, cfg.prompt, cfg.length, cfg.temperature, cfg.seed)
    print(text)
    return text


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="generate")
@reports_user_errors("generate")
def hydra_app(cfg: DictConfig) -> None:
    text = generate(cfg)
    (Path(HydraConfig.get().runtime.output_dir) / "sample.txt").write_text(text + "\n")


def main() -> None:
    run_reporting_errors("generate", hydra_app)


if __name__ == "__main__":
    main()
