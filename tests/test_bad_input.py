"""The bad-input harness: every option of every verb's schema and every kind of input
file, tried with what a careless user gives. The cases are generated, not listed:
options from the schema dataclasses of snn_lstm/config.py by their type (wrong type,
NaN and infinities, negative, huge, empty, an unknown choice, a path where a folder
name belongs), files by their kind (checkpoint, IDX, text, wav, search space,
tracking backlog, YAML): empty, truncated, of another format, crafted, inconsistent
with the file they go with.

Every case holds one contract: exit code 2, exactly one line on stderr
(`snnlstm <verb>: error: ...`) that names what was wrong, no traceback, nothing that
was there before changed, nothing created. The command a case varies is first run
as it stands and must succeed (the control), so each refusal is the case's doing.

The verbs run in this process (as `snnlstm VERB ARGS` would run them, through
snn_lstm.cli.main), a few hundred cases in a few minutes.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import typing
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import snn_lstm.config as schema
from snn_lstm.checkpoint import payload_digest
from snn_lstm.data.idx import write_idx

from conftest import TINY, TINY_IMAGES, run_verb, snapshot, write_texts, write_tiny_fsdd, write_tiny_idx

REPO = Path(__file__).resolve().parents[1]


def assert_refused(workspace: Path, args: list[str], mentions: str) -> None:
    before = snapshot(workspace)
    outcome = run_verb(args, workspace)
    verb = args[0]
    assert outcome.code == 2, f"exit {outcome.code}:\n{outcome.stderr[-3000:]}"
    assert "Traceback" not in outcome.stderr, outcome.stderr[-3000:]
    assert len(outcome.lines) == 1, outcome.stderr[-3000:]
    line = outcome.lines[0]
    assert line.startswith(f"snnlstm {verb}: error: ") and mentions in line, line
    after = snapshot(workspace)
    created = sorted(set(after) - set(before))
    changed = sorted(k for k in before if k in after and after[k] != before[k] and not os.path.isdir(workspace / k))
    removed = sorted(set(before) - set(after))
    assert not created and not changed and not removed, f"created {created}, changed {changed}, removed {removed}"


# ----------------------------------------------------------------- the workspace
@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """Data of every kind, and the runs the verbs start from, made by control commands."""
    root = tmp_path_factory.mktemp("workspace")
    data = root / "data"
    write_tiny_idx(data / "tiny")
    write_texts(data)
    write_tiny_fsdd(data)
    for command in CONTROLS.values():
        outcome = run_verb(fill(command, root), root)
        assert outcome.code == 0, f"control {command} failed:\n{outcome.stderr[-3000:]}"
    write_backlog(root / "runs" / "sine" / "offline")
    return root


def fill(args: list[str], workspace: Path) -> list[str]:
    return [a.replace("{ws}", str(workspace)).replace("{repo}", str(REPO)) for a in args]


COMMON = ["tracking=none", "paths.run_dir={ws}/runs", "paths.data_dir={ws}/data"]
SMOKE = ["trainer=smoke", "trainer.eval_limit=8"]
TRAIN = ["train", *SMOKE, *COMMON]
STORE = "tracking.uri=sqlite:///{ws}/store/mlflow.db"
# The command each kind of case varies (the workspace runs each once as it stands,
# training commands into a run folder of their own: each must succeed).
BASES = {
    "train:sine": TRAIN,
    "train:lstm": [*TRAIN, "model=lstm"],
    "train:image": [*TRAIN, "task=smnist", *TINY_IMAGES],
    "train:language": [*TRAIN, "task=char_lm", *TINY["language"]],
    "train:speech": [*TRAIN, "task=fsdd", *TINY["speech"]],
    "train:speech_mel": [*TRAIN, "task=fsdd", "task/frontend=mfcc", *TINY["speech"]],
    "evaluate": ["evaluate", "ckpt={ws}/runs/sine/control_sine/last.pt", *COMMON],
    "generate": ["generate", "ckpt={ws}/runs/char_lm/control_language/last.pt", "length=5", "paths.run_dir={ws}/runs"],
    "bench": ["bench", "repeats=1", "warmup=0", "~shapes", "+shapes={tiny: {steps: 3, batch: 2, input: 2, hidden: 4}}",
              *COMMON[:2]],
    "report": ["report", STORE, "out_dir={ws}/report", "paper_values={repo}/experiments/paper_values.yaml"],
    "search": ["search", "space=sine", "n_trials=1", 'space.train=["trainer=smoke","trainer.eval_limit=8"]', *COMMON[:2]],
    "export": ["export", "ckpt={ws}/runs/sine/control_sine/last.pt", "paths.run_dir={ws}/runs"],
}
CONTROLS = {kind: [*args, f"run_name=control_{kind.split(':')[1]}"] if kind.startswith("train:") else args
            for kind, args in BASES.items()}
# Where each schema's options are set, on which command.
SCHEMAS = [
    ("train:sine", "", schema.TrainConfig), ("train:sine", "task.", schema.SineTaskConfig),
    ("train:sine", "encoder.", schema.EncoderConfig), ("train:sine", "model.", schema.SpikingLSTMConfig),
    ("train:sine", "optimizer.", schema.OptimizerConfig),
    ("train:sine", "trainer.", schema.TrainerConfig), ("train:sine", "tracking.", schema.TrackingConfig),
    ("train:sine", "paths.", schema.PathsConfig), ("train:lstm", "model.", schema.LSTMConfig),
    ("train:image", "task.", schema.ImageTaskConfig), ("train:image", "task.distill.", schema.DistillConfig),
    ("train:language", "task.", schema.LanguageTaskConfig), ("train:speech", "task.", schema.SpeechTaskConfig),
    ("train:speech", "task.augment.", schema.AugmentConfig), ("train:speech", "task.frontend.", schema.ScatteringConfig), ("train:speech_mel", "task.frontend.", schema.MelConfig),
    ("evaluate", "", schema.EvaluateConfig), ("generate", "", schema.GenerateConfig), ("bench", "", schema.BenchConfig),
    ("bench", "shapes.tiny.", schema.BenchShape), ("report", "", schema.ReportConfig), ("search", "", schema.SearchConfig),
    ("search", "space.", schema.SearchSpaceConfig), ("export", "", schema.ExportConfig),
]


# ----------------------------------------------------------------- options
def field_kind(annotation) -> tuple[str, object]:
    """('int' | 'float' | 'bool' | 'str' | 'list' | 'dict' | 'group', element type)."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union:  # Optional[X]
        return field_kind(next(a for a in arguments if a is not type(None)))
    if origin in (list, typing.List):
        return "list", arguments[0]
    if origin in (dict, typing.Dict):
        return "dict", arguments[1]
    if annotation in (int, float, bool, str):
        return annotation.__name__, None
    return "group", None


def bad_values(kind: str, element, domain) -> list[tuple[str, str]]:
    """(label, override value) pairs that no option of this kind and domain accepts."""
    if kind == "bool":
        return [("not a bool", "maybe")]
    if kind == "int":
        return [("not a number", "seven"), ("negative", "-1"), ("huge", str(2**62))]
    if kind == "float":
        values = [("not a number", "seven"), ("NaN", "nan"), ("infinite", "inf"), ("minus infinite", "-inf")]
        if domain.problem(-1.0):  # some options take any finite number (model.forget_bias)
            values.append(("negative", "-1.0"))
        return values
    if kind == "str":
        values = [("empty", "''")]
        if isinstance(domain, schema.Choice):
            values.append(("unknown choice", "no_such_choice"))
        if domain is schema.FolderName:
            values.append(("a path", "../escaped"))
        return values
    if kind == "list":
        inner = {int: [("negative inside", "[-1]"), ("not numbers inside", "[seven]")],
                 float: [("NaN inside", "[nan]"), ("not numbers inside", "[seven]")],
                 str: [("empty inside", "['']")]}[element]
        if isinstance(domain, schema.Elements) and isinstance(domain.domain, schema.Choice):
            inner.append(("unknown choice inside", "[no_such_choice]"))
        if isinstance(domain, schema.Elements) and (domain.min_length or domain.length):
            inner.append(("empty list", "[]"))
        return inner
    return []


def option_cases() -> list[tuple[str, list[str], str]]:
    cases = []
    for control, prefix, dataclass_type in SCHEMAS:
        hints = typing.get_type_hints(dataclass_type)
        for field in dataclasses.fields(dataclass_type):
            kind, element = field_kind(hints[field.name])
            key = f"{prefix}{field.name}"
            if kind == "dict" and element is str:  # free-form tags: their values must not be empty either
                cases.append((f"{control} {key}: empty value", [*BASES[control], f"+{key}.x=''"], key))
            for label, value in bad_values(kind, element, dataclass_type.DOMAINS.get(field.name) if hasattr(
                    dataclass_type, "DOMAINS") else None):
                cases.append((f"{control} {key}: {label}", [*BASES[control], f"{key}={value}"], field.name))
    return cases


OPTION_CASES = option_cases()


def test_every_number_and_choice_of_the_schemas_has_a_domain():
    """A new numeric or choice option cannot slip past the harness: its schema must say its domain."""
    missing = []
    for _, prefix, dataclass_type in SCHEMAS:
        hints = typing.get_type_hints(dataclass_type)
        for field in dataclasses.fields(dataclass_type):
            kind, element = field_kind(hints[field.name])
            numeric = kind in ("int", "float") or (kind == "list" and element in (int, float))
            if numeric and field.name not in getattr(dataclass_type, "DOMAINS", {}):
                missing.append(f"{prefix}{field.name}")
    assert not missing, f"options without a domain in snn_lstm/config.py: {missing}"
    assert len(OPTION_CASES) > 250


@pytest.mark.parametrize("args, mentions", [c[1:] for c in OPTION_CASES], ids=[c[0] for c in OPTION_CASES])
def test_bad_option(workspace, args, mentions):
    assert_refused(workspace, fill(args, workspace), mentions)


# ----------------------------------------------------------------- files
def write_backlog(folder: Path, lines: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if lines is None:
        records = [{"op": "start", "uri": None, "experiment": "snnlstm", "run_id": None, "run_name": "offline", "tags": {}},
                   {"op": "metrics", "metrics": {"train/loss": 0.5}, "step": 1}, {"op": "finish", "status": "FINISHED"}]
        lines = [json.dumps(r) for r in records]
    path = folder / "tracking_backlog.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def crafted_checkpoint(source: Path, target: Path, change) -> Path:
    """The checkpoint `source` changed by `change(payload)`, with a digest that matches."""
    payload = torch.load(source, weights_only=True)
    payload.pop("digest")
    change(payload)
    payload["digest"] = payload_digest(payload)
    torch.save(payload, target)
    return target


CRAFTED = {  # what a hand-edited checkpoint may lack or get wrong
    "no model_args": lambda p: p.pop("model_args"),
    "a step that is not a number": lambda p: p.update(step="four"),
    "weights of another size": lambda p: p["model_args"]["model"].update(hidden_size=7),
    "a config without its task": lambda p: p["config"].pop("task"),
    "model_args of the wrong kind": lambda p: p["model_args"].update(input_size="twenty"),
}
LANGUAGE_CRAFTED = {"a vocabulary that is not a list": lambda p: p["task_state"].update(symbols=5)}


def checkpoint_files(workspace: Path, kind: str) -> dict[str, Path]:
    """Broken copies of the control checkpoint of `kind` (sine, char_lm)."""
    source = workspace / "runs" / kind / ("control_sine" if kind == "sine" else "control_language") / "last.pt"
    good = source.read_bytes()
    files = workspace / "files" / kind
    files.mkdir(parents=True, exist_ok=True)
    (files / "empty.pt").write_bytes(b"")
    (files / "truncated.pt").write_bytes(good[: len(good) // 2])
    (files / "text.pt").write_text("not a checkpoint\n")
    torch.save([1, 2, 3], files / "list.pt")

    class Payload:  # a pickle that would run code when loaded without weights_only
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    torch.save({"format": 1, "model": Payload()}, files / "pickle.pt")
    broken = {"empty": files / "empty.pt", "truncated": files / "truncated.pt", "text": files / "text.pt",
              "list": files / "list.pt", "pickle": files / "pickle.pt"}
    for number, (label, change) in enumerate({**CRAFTED, **(LANGUAGE_CRAFTED if kind == "char_lm" else {})}.items()):
        broken[label] = crafted_checkpoint(source, files / f"crafted{number}.pt", change)
    return broken


def idx_folder(workspace: Path, name: str, change) -> str:
    """A copy of the tiny IDX dataset with one file broken by `change(folder)`."""
    folder = workspace / "data" / name
    if not folder.exists():
        write_tiny_idx(folder)
        change(folder)
    return name


def _replace(folder: Path, stem: str, content: bytes) -> None:
    (folder / f"{stem}.gz").unlink()
    (folder / stem).write_bytes(content)


IDX_CHANGES = {
    "empty images": lambda f: _replace(f, "train-images-idx3-ubyte", b""),
    "truncated images": lambda f: (f / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(gzip.decompress((f / "train-images-idx3-ubyte.gz").read_bytes())[:5000])),
    "text for images": lambda f: _replace(f, "train-images-idx3-ubyte", b"these are not images\n"),
    "labels for images": lambda f: (f / "train-images-idx3-ubyte.gz").write_bytes(
        (f / "train-labels-idx1-ubyte.gz").read_bytes()),
    "test images of another size": lambda f: write_idx(f / "t10k-images-idx3-ubyte.gz", np.zeros((40, 20, 20), np.uint8)),
    "fewer labels than images": lambda f: write_idx(f / "train-labels-idx1-ubyte.gz", np.zeros(10, np.uint8)),
    "no test images": lambda f: (write_idx(f / "t10k-images-idx3-ubyte.gz", np.zeros((0, 28, 28), np.uint8)),
                                 write_idx(f / "t10k-labels-idx1-ubyte.gz", np.zeros(0, np.uint8))),
    "a header announcing 2^32 images": lambda f: _replace(
        f, "train-images-idx3-ubyte", bytes([0, 0, 8, 3]) + (2**32 - 1).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2),
}


def text_folder(workspace: Path, name: str, alice: bytes | None = None, wiki_test: bytes | None = None) -> Path:
    root = workspace / "data" / name
    if not root.exists():
        write_texts(root)
        if alice is not None:
            (root / "text" / "alice.txt").write_bytes(alice)
        if wiki_test is not None:
            (root / "text" / "wikitext-2" / "wiki.test.tokens").write_bytes(wiki_test)
    return root


def gutenberg(body: str) -> bytes:
    return f"*** START OF THIS PROJECT GUTENBERG EBOOK ***\n{body}\n*** END OF THIS PROJECT GUTENBERG EBOOK ***\n".encode()


TEXTS = {  # (alice.txt, wiki.test.tokens, the text option, the task.split)
    "empty": (b"", None, "alice", "full"),
    "binary": (b"\x00\x01\x02binary" * 100, None, "alice", "full"),
    "latin-1, not UTF-8": (gutenberg("caf\xe9 " * 500).replace(b"\xc3\xa9", b"\xe9"), None, "alice", "full"),
    "no Gutenberg markers": (b"alice was beginning " * 200, None, "alice", "full"),
    "a body of one character": (gutenberg("a"), None, "alice", "full"),
    "too short for the paper's split": (gutenberg("alice " * 100), None, "alice", "paper"),
    "an empty test split": (None, b"   \n", "wikitext2", "paper"),
}


def fsdd_folder(workspace: Path, name: str, change) -> Path:
    root = workspace / "data" / name
    if not root.exists():
        write_tiny_fsdd(root)
        change(root / "fsdd" / "recordings")
    return root


WAVS = {
    "empty": lambda f: soundfile.write(f / "3_jackson_6.wav", np.zeros(0), 8000),
    "truncated": lambda f: (f / "3_jackson_6.wav").write_bytes((f / "3_jackson_6.wav").read_bytes()[:30]),
    "text": lambda f: (f / "3_jackson_6.wav").write_text("not a wav file"),
    "stereo": lambda f: soundfile.write(f / "3_jackson_6.wav", np.zeros((800, 2)), 8000),
    "NaN samples": lambda f: soundfile.write(f / "3_jackson_6.wav", np.full(800, np.nan, np.float32), 8000,
                                             subtype="FLOAT"),
    "infinite samples": lambda f: soundfile.write(f / "3_jackson_6.wav", np.full(800, np.inf, np.float32), 8000,
                                                  subtype="FLOAT"),
    "a name outside FSDD's pattern": lambda f: (f / "3_jackson_6.wav").rename(f / "jackson-three.wav"),
}


def file_cases(workspace: Path) -> list[tuple[str, list[str], str]]:
    cases = []
    for label, path in checkpoint_files(workspace, "char_lm").items():
        if label != "a config without its task":  # generate reads the model, its vocabulary and encoder, not the task
            cases.append((f"generate checkpoint: {label}", ["generate", f"ckpt={path}", *BASES["generate"][2:]], str(path)))
    for label, path in checkpoint_files(workspace, "sine").items():
        cases.append((f"evaluate checkpoint: {label}", ["evaluate", f"ckpt={path}", *BASES["evaluate"][2:]], str(path)))
        if label != "a config without its task":  # export reads the model alone
            cases.append((f"export checkpoint: {label}", ["export", f"ckpt={path}", *BASES["export"][2:]], str(path)))
        run = workspace / "runs" / "sine" / f"resume_{path.stem}"
        if not run.exists():
            run.mkdir(parents=True)
            (run / "last.pt").write_bytes(path.read_bytes())
        cases.append((f"resume from a checkpoint: {label}", [*TRAIN, f"run_name={run.name}", "resume=true"], "last.pt"))
        cases.append((f"distillation teacher: {label}", [*BASES["train:image"], f"task.distill.teacher={path}"], str(path)))
    write_tiny_idx(workspace / "data" / "small_images" / "tiny", size=20)
    cases.append(("evaluate an image checkpoint on images of another size",
                  ["evaluate", "ckpt={ws}/runs/smnist/control_image/last.pt", "paths.data_dir={ws}/data/small_images",
                   *COMMON[:2]], "inputs"))
    for label, change in IDX_CHANGES.items():
        name = idx_folder(workspace, label.replace(" ", "_").replace("^", ""), change)
        cases.append((f"IDX: {label}", [*TRAIN, "task=smnist", *TINY_IMAGES[:1], f"task.folder={name}", "task.val_size=4"],
                      name))
    for label, (alice, wiki_test, text, split) in TEXTS.items():
        root = text_folder(workspace, "text_" + label.replace(" ", "_").replace(",", "").replace("'", ""), alice, wiki_test)
        cases.append((f"text: {label}", [*TRAIN[:-1], f"paths.data_dir={root}", "task=char_lm", f"text={text}",
                                        f"task.split={split}", "task.bptt=10"], "text" if text == "alice" else "split"))
    for label, change in WAVS.items():
        root = fsdd_folder(workspace, "fsdd_" + label.replace(" ", "_").replace("'", ""), change)
        cases.append((f"wav: {label}", [*TRAIN[:-1], f"paths.data_dir={root}", "task=fsdd", *TINY["speech"]], "wav"))
    cases.append(("wav: a test speaker with no recordings",
                  [*BASES["train:speech"], "task.test_speakers=[nobody]"], "nobody"))
    user_configs = workspace / "user_conf"
    (user_configs / "space").mkdir(parents=True, exist_ok=True)
    for number, (label, params) in enumerate({
            "no params": "{}", "no type": "{optimizer.lr: {low: 1, high: 2}}",
            "low above high": "{optimizer.lr: {type: float, low: 2, high: 1}}",
            "log from zero": "{optimizer.lr: {type: float, low: 0, high: 1, log: true}}",
            "an unknown key": "{optimizer.lr: {type: float, low: 1, high: 2, steps: 3}}",
            "no choices": "{surrogate.name: {type: categorical, choices: []}}", "not a mapping": "[1, 2]"}.items()):
        (user_configs / "space" / f"bad{number}.yaml").write_text(
            f"defaults:\n  - /schema/space/space@_here_\n\nname: bad{number}\ntrain: [trainer=smoke]\nparams: {params}\n")
        cases.append((f"search space: {label}", ["search", "--config-dir", str(user_configs), f"space=bad{number}",
                                                 "n_trials=1", *COMMON[:2]], "space"))
    for label, lines in {"empty": [], "truncated JSON": ['{"op": "start", "uri"'], "binary": None,
                         "no start record": [json.dumps({"op": "finish", "status": "FINISHED"})],
                         "an unknown record": [json.dumps({"op": "start", "uri": None, "experiment": "e", "run_id": None,
                                                           "run_name": "r", "tags": {}}), json.dumps({"op": "explode"})],
                         "metrics that are not numbers": [
                             json.dumps({"op": "start", "uri": None, "experiment": "e", "run_id": None, "run_name": "r",
                                         "tags": {}}), json.dumps({"op": "metrics", "metrics": {"a": "b"}, "step": 1})],
                         }.items():
        folder = workspace / "runs" / "sine" / ("backlog_" + label.replace(" ", "_"))
        if not folder.exists():
            path = write_backlog(folder, lines or [])
            if lines is None:
                path.write_bytes(b"\xff\xfe\x00binary")
        cases.append((f"backlog: {label}", ["sync", f"run={folder}", STORE], "tracking_backlog.jsonl"))
    cases.append(("sync: a run folder that does not exist", ["sync", "run={ws}/runs/sine/typo", STORE], "typo"))
    (user_configs / "experiment").mkdir(parents=True, exist_ok=True)
    (user_configs / "experiment" / "broken.yaml").write_text("# @package _global_\ntrainer: {steps: [1, 2\n")
    (user_configs / "experiment" / "wrong.yaml").write_text("# @package _global_\ntrainer:\n  stepz: 3\n")
    cases.append(("user YAML: malformed", ["train", "--config-dir", str(user_configs), *TRAIN[1:], "experiment=broken"],
                  "broken"))
    cases.append(("user YAML: a misspelt key", ["train", "--config-dir", str(user_configs), *TRAIN[1:], "experiment=wrong"],
                  "stepz"))
    cases.append(("an unknown flag", [*TRAIN, "--bogus"], "--bogus"))
    (workspace / "files" / "values.yaml").write_text("table1: [unclosed\n")
    cases.append(("report: malformed paper values", [*BASES["report"][:-1], "paper_values={ws}/files/values.yaml"],
                  "values.yaml"))
    for label, text in {"a block never closed": "<!-- snnlstm report: table1 -->\nnumbers\n",
                        "a block of an unknown table": "<!-- snnlstm report: table9 -->\n<!-- /snnlstm report -->\n",
                        "no block": "# prose only\n"}.items():
        document = workspace / "files" / f"doc_{label.replace(' ', '_')}.md"
        document.write_text(text)
        cases.append((f"report document: {label}", [*BASES["report"], f"docs=[{document}]"], document.name))
    cases.append(("report document: missing", [*BASES["report"], "docs=[{ws}/files/no_such.md]"], "no_such.md"))
    (workspace / "files" / "not_a_folder").write_text("a file\n")
    cases.append(("a run folder that is a file", [*TRAIN[:-2], "paths.run_dir={ws}/files/not_a_folder", COMMON[2]],
                  "not_a_folder"))
    cases.append(("a run name that is a file", [*TRAIN, "run_name=not_a_run"], "not_a_run"))
    (workspace / "runs" / "sine" / "not_a_run").write_text("a file\n")
    cases.append(("reusing a run name without resume", [*TRAIN, "run_name=control_sine"], "resume=true"))
    cases.append(("resuming below the checkpoint's step", [*TRAIN, "run_name=control_sine", "resume=true", "trainer.steps=2"],
                  "step 4"))
    cases.append(("resuming a run that does not exist", [*TRAIN, "run_name=never", "resume=true"], "resume=true"))
    cases.append(("a target outside the allowed packages", [*TRAIN, "optimizer._target_=snn_lstm.errors.os.system"],
                  "_target_"))
    cases.append(("a tracking URI of no store", [*TRAIN[:-2], "tracking=mlflow", "tracking.uri=garbage://x", *COMMON[1:]],
                  "garbage"))
    cases.append(("a file-store tracking URI", [*TRAIN[:-2], "tracking=mlflow", "tracking.uri={ws}/mlruns", *COMMON[1:]],
                  "file store"))
    cases.append(("a batch larger than the training set", [*BASES["train:image"], "trainer.batch_size=100"],
                  "batch_size"))
    cases.append(("a text too short for the batch and window",
                  [*BASES["train:language"], "trainer.batch_size=64", "task.bptt=500"], "too short"))
    cases.append(("a model too large to allocate", [*TRAIN, "model.hidden_size=100000"], "out of memory"))
    return cases


def test_bad_files(workspace):
    """Every file case in turn (one test, so that the files are made once)."""
    failures = []
    cases = file_cases(workspace)
    for label, args, mentions in cases:
        try:
            assert_refused(workspace, fill(args, workspace), mentions)
        except AssertionError as error:
            failures.append(f"{label}: {str(error)[:1500]}")
    assert not (workspace / "pwned").exists()
    assert not failures, f"{len(failures)} of {len(cases)} file cases failed:\n" + "\n\n".join(failures)
    assert len(cases) >= 60
