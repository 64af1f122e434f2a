"""User-fixable mistakes become one line on stderr and exit code 2.

Hydra and OmegaConf report bad overrides, unknown options and wrong types as
multi-line text; ``run_reporting_errors`` folds them, and our own ``UserError``,
into ``snnlstm <verb>: error: ...``. Anything else is a bug and keeps its
traceback. HYDRA_FULL_ERROR=1 shows full tracebacks for everything.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from typing import Callable


class UserError(Exception):
    """Wrong input: the message says what was wrong and how to fix it."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return (UserError, HydraException, OmegaConfBaseException)


def one_line(error: BaseException) -> str:
    """The message lines of an error and its causes, without OmegaConf's indented
    detail lines (full_key, object_type, ...), joined into one line."""
    parts: list[str] = []
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        for line in str(error).splitlines():
            line = line.strip()
            if line and not line.startswith(("full_key:", "object_type=", "reference_type=")) and line not in parts:
                parts.append(line)
        error = error.__cause__ if error.__cause__ is not None else None if error.__suppress_context__ else error.__context__
    return " ".join(parts) or "invalid input"


def _exit_with(verb: str, error: BaseException) -> None:
    print(f"snnlstm {verb}: error: {one_line(error)}", file=sys.stderr)
    sys.exit(2)


def reports_user_errors(verb: str) -> Callable:
    """Decorator for a Hydra task function: errors raised inside the job are
    reported here, before Hydra adds its own multi-line framing."""

    def decorate(task_function: Callable) -> Callable:
        @functools.wraps(task_function)
        def wrapper(*args, **kwargs):
            try:
                return task_function(*args, **kwargs)
            except _user_error_types() as error:
                if os.environ.get("SNNLSTM_FULL_ERROR") == "1":
                    raise
                _exit_with(verb, error)

        return wrapper

    return decorate


# File-system refusals that the user fixes by pointing a setting elsewhere
FILE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOENT, errno.ENOTDIR}


def _file_problem(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in FILE_ERRNOS and error.filename is not None


def run_reporting_errors(verb: str, entry: Callable[[], object]) -> None:
    """Run a Hydra entry point; errors while composing the config become one line."""
    show_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["SNNLSTM_FULL_ERROR"] = "1" if show_traceback else "0"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let Hydra raise, so the error is ours to print
    try:
        entry()
    except _user_error_types() as error:
        if show_traceback:
            raise
        _exit_with(verb, error)
    except OSError as error:
        if show_traceback or not _file_problem(error):
            raise
        _exit_with(verb, UserError(f"{error.filename}: {error.strerror}: point the paths.* setting at a writable folder"))
