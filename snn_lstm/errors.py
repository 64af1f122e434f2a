"""How a verb ends when something is wrong.

User-fixable mistakes become one line on stderr and exit code 2: our own
``UserError``, Hydra's and OmegaConf's reports of bad overrides, unknown options and
wrong types (multi-line text, folded here), malformed YAML, a setting that points at
an unwritable place, and a size the machine cannot allocate. Before a verb does any
work its config is checked against the schema's domains (``config.check_options``);
a job folder the failed command created holds nothing of value and is removed again.

Anything else is a bug: one line, ``snnlstm <verb>: internal error: ...; the
traceback is in <job folder>/<verb>.log``, exit code 1, the traceback in that log.
HYDRA_FULL_ERROR=1 shows full tracebacks for everything.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Callable


class UserError(ValueError):
    """Wrong input: the message says what was wrong and how to fix it. A ValueError, as
    the layer's users expect of a bad argument."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    import yaml
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return (UserError, HydraException, OmegaConfBaseException, yaml.YAMLError)


def _chain(error: BaseException | None):
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ if error.__cause__ is not None else None if error.__suppress_context__ else error.__context__


def _every_cause(error: BaseException):
    """The error and everything it was raised from or during, suppressed or not."""
    pending, seen = [error], set()
    while pending:
        error = pending.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        pending += [error.__cause__, error.__context__]


def one_line(error: BaseException) -> str:
    """The message of an error as one line: our own UserError's where the chain holds
    one (Hydra and OmegaConf wrap what a resolver or a target raised), else the
    message lines of the error and its causes without OmegaConf's indented detail
    lines (full_key, object_type, ...)."""
    ours = next((e for e in _every_cause(error) if isinstance(e, UserError)), None)
    parts: list[str] = []
    for link in _chain(ours or error):
        for line in str(link).splitlines():
            line = line.strip()
            if line and not line.startswith(("full_key:", "object_type=", "reference_type=")) and line not in parts:
                parts.append(line)
        if ours is not None:
            break
    return " ".join(parts) or "invalid input"


def _exit_with(verb: str, error: BaseException) -> None:
    print(f"snnlstm {verb}: error: {one_line(error)}", file=sys.stderr)
    sys.exit(2)


def out_of_memory(error: BaseException) -> bool:
    import torch

    return isinstance(error, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(error, RuntimeError) and any(text in str(error) for text in ("can't allocate memory", "size calculation overflowed")))


def _job_folder() -> Path | None:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


def _discard_job_output() -> None:
    """Remove what the refused command made in its job folder (Hydra's record of the
    launch, its log, the folder itself if it was new), unless the job wrote something of
    its own there: then it got to work, and everything stays."""
    from hydra.core.hydra_config import HydraConfig

    from snn_lstm.config import JOB_FOLDERS

    folder = _job_folder()
    if folder is None or str(folder) not in JOB_FOLDERS or not folder.is_dir():
        return
    top, before = JOB_FOLDERS[str(folder)]
    subdir = HydraConfig.get().output_subdir
    record = folder / subdir if subdir else None
    logs = {Path(h.baseFilename) for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)}
    made = [entry for entry in folder.iterdir() if entry.name not in before]
    if any(entry not in logs and entry != record for entry in made):
        return
    # .hydra changes when a later launch adds its record inside it; nothing else may have
    if any(entry.stat().st_mtime_ns != before[entry.name] for entry in folder.iterdir()
           if entry.name in before and entry.name != ".hydra"):
        return
    for entry in made:
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    if record is not None and record.exists() and ".hydra" in before:
        shutil.rmtree(record)
    if top is not None:
        for made_folder in (folder, *folder.parents):  # the folders made on the way there, if still empty
            if not made_folder.is_relative_to(top) or any(made_folder.iterdir()):
                break
            made_folder.rmdir()


def _log_traceback(error: BaseException) -> list[str]:
    """The traceback into the job's log files (not the console); their paths."""
    record = logging.LogRecord("snnlstm", logging.ERROR, __file__, 0, "internal error", None,
                               (type(error), error, error.__traceback__))
    files = []
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
            handler.flush()
            files.append(handler.baseFilename)
    return files


RERUN = "run it again with HYDRA_FULL_ERROR=1 for the traceback"


def _internal_error(verb: str, error: BaseException, where: str) -> None:
    summary = (str(error).strip().splitlines() or [""])[0]
    print(f"snnlstm {verb}: internal error: {type(error).__name__}: {summary}; {where}", file=sys.stderr)
    sys.exit(1)


def reports_user_errors(verb: str) -> Callable:
    """Decorator for a Hydra task function: checks the config against the schema's
    domains, then runs the job; what goes wrong inside is reported here, before Hydra
    adds its own multi-line framing."""

    def decorate(task_function: Callable) -> Callable:
        @functools.wraps(task_function)
        def wrapper(cfg, *args, **kwargs):
            from snn_lstm.config import check_options

            try:
                check_options(cfg)
                return task_function(cfg, *args, **kwargs)
            except Exception as error:
                if os.environ.get("SNNLSTM_FULL_ERROR") == "1":
                    raise
                if isinstance(error, _user_error_types()) or out_of_memory(error) or _file_problem(error):
                    _discard_job_output()
                    _exit_with(verb, as_user_error(error))
                logs = _log_traceback(error)
                _internal_error(verb, error, f"the traceback is in {logs[0]}" if logs else RERUN)

        return wrapper

    return decorate


# File-system refusals that the user fixes by pointing a setting elsewhere
FILE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOENT, errno.ENOTDIR,
               errno.EEXIST, errno.EISDIR, errno.ENAMETOOLONG}


def _file_problem(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in FILE_ERRNOS and error.filename is not None


def as_user_error(error: BaseException) -> BaseException:
    """What to tell the user of an error they can fix (the error itself when it says so already)."""
    if out_of_memory(error):
        return UserError(f"out of memory ({one_line(error)}): lower the sizes (model.hidden_size, trainer.batch_size, "
                         "the data's) or use a larger machine")
    if _file_problem(error):
        return UserError(f"{error.filename}: {error.strerror}: point the paths.* setting at a writable folder")
    return error


_hydra_args_parser = None


def _command_line_errors_in_one_line(verb: str) -> None:
    """Hydra's argument parser answers an unknown flag with its usage text, many lines;
    make it raise instead, so the flag is reported like any other mistake."""
    import importlib

    hydra_main = importlib.import_module("hydra.main")  # the module; `hydra.main` is also the decorator's name
    global _hydra_args_parser
    _hydra_args_parser = _hydra_args_parser or hydra_main.get_args_parser

    def parser():
        arguments = _hydra_args_parser()

        def error(message: str):
            raise UserError(f"{message}: `snnlstm {verb} --help` lists the options and flags")

        arguments.error = error
        return arguments

    hydra_main.get_args_parser = parser


def run_reporting_errors(verb: str, entry: Callable[[], object]) -> None:
    """Run a Hydra entry point; errors while composing the config become one line."""
    from snn_lstm.config import new_launch

    new_launch()
    _command_line_errors_in_one_line(verb)
    saved = {name: os.environ.get(name) for name in ("HYDRA_FULL_ERROR", "SNNLSTM_FULL_ERROR")}
    show_traceback = saved["HYDRA_FULL_ERROR"] == "1"
    os.environ["SNNLSTM_FULL_ERROR"] = "1" if show_traceback else "0"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let Hydra raise, so the error is ours to print
    try:
        entry()
    except Exception as error:
        if show_traceback:
            raise
        if isinstance(error, _user_error_types()) or out_of_memory(error) or _file_problem(error):
            _exit_with(verb, as_user_error(error))
        _internal_error(verb, error, RERUN)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
