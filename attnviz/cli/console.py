"""How the command line talks to the terminal: exit statuses, expected failures, one-line messages.

Every expected failure is one of the two exceptions here and ends as one line
``attnviz: error: ...`` on stderr (with the traceback under ``-v``); library logs go to stderr
through :func:`logging_and_warnings`, which also hides third-party warnings that say nothing to a
CLI user.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "Failure",
    "UsageError",
    "fail",
    "logging_and_warnings",
    "note",
    "os_message",
    "silence_stdout",
]

PROG = "attnviz"

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# Third-party warnings that say nothing to a CLI user (shown with -v).
_QUIET_MODULES = r"(torch|torchvision|timm|pytorch_grad_cam|huggingface_hub|ttach|cv2)(\.|$)"
_QUIET_CATEGORIES: tuple[type[Warning], ...] = (UserWarning, FutureWarning, DeprecationWarning)


class UsageError(Exception):
    """Bad command-line arguments: reported in one line, exit status 2."""


class Failure(Exception):
    """An expected failure with a user-facing message: reported in one line, exit status 1."""


def note(err: TextIO, message: str) -> None:
    """Writes ``attnviz: <message>`` to ``err`` at once (progress, notes, skipped files)."""
    err.write(f"{PROG}: {message}\n")
    err.flush()


def os_message(exc: BaseException) -> str:
    """A short message for an exception: an OSError's reason and file name, else its text."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__


def fail(err: TextIO, message: str, verbose: bool, status: int) -> int:
    """Reports a failure as one ``attnviz: error:`` line (the traceback first with ``-v``).

    Returns:
        ``status``, for the caller to return as the exit status.
    """
    if verbose:
        traceback.print_exc(file=err)
    # One line, whatever the message holds.
    err.write(f"{PROG}: error: {' '.join(message.split())}\n")
    err.flush()
    return status


def silence_stdout() -> None:
    """After the reader of stdout went away (``| head``): no second error when Python flushes it."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (e.g. captured in tests)
        pass


@contextmanager
def logging_and_warnings(verbose: bool, err: TextIO) -> Iterator[None]:
    """Routes library logs to ``err`` (WARNING, INFO with -v) and hides third-party warnings."""
    root = logging.getLogger()
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(name)s: %(message)s"))
    # The handler filters too: a logger given its own lower level elsewhere must not leak INFO.
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    with warnings.catch_warnings():
        if not verbose:
            for category in _QUIET_CATEGORIES:
                warnings.filterwarnings("ignore", category=category, module=_QUIET_MODULES)
        try:
            yield
        finally:
            root.removeHandler(handler)
            root.setLevel(old_level)
