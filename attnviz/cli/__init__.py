"""The command line: ``python -m attnviz list``, ``analyze``, ``zoo``, ``train`` and ``bench``.

``list`` shows the model zoo (:mod:`.listing`); ``analyze`` runs images (files or folders) through
models and writes the export bundle (:mod:`attnviz.io.export`) to a folder, batch by batch
(:mod:`.analyze`, :mod:`attnviz.workflows.pipeline`); ``zoo`` trains or evaluates the built-in zoo
(:mod:`.zoo`); ``train`` trains a playground network and keeps it as a user model (:mod:`.train`);
``bench`` measures what capture costs (:mod:`.bench`, :mod:`attnviz.workflows.bench`). The arguments
are in :mod:`.parser`, the terminal output and exit statuses in :mod:`.console`. This is the top
layer: it may import every subpackage of attnviz, and none of them imports it. The library logs;
this package configures logging and prints. Every expected failure ends with one line ``attnviz:
error: ...`` on stderr and a non-zero exit status (2 for bad arguments, 1 otherwise); ``-v`` adds
INFO logs and tracebacks. ``analyze`` skips an unreadable image (one ``attnviz: skipped: ...`` line
each), writes the other results and then exits with 1.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from attnviz.cli.analyze import run_analyze
from attnviz.cli.bench import run_bench_command
from attnviz.cli.console import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    Failure,
    UsageError,
    fail,
    logging_and_warnings,
    os_message,
    silence_stdout,
)
from attnviz.cli.listing import run_list
from attnviz.cli.parser import build_parser
from attnviz.cli.serve import run_serve
from attnviz.cli.train import run_train
from attnviz.cli.zoo import run_zoo
from attnviz.core.errors import AttnvizError
from attnviz.io.images import ImageLoadError

__all__ = ["MAX_IMAGES", "MAX_MODELS", "main"]

MAX_IMAGES = 10_000
"""Most images one ``analyze`` call accepts, after folders are expanded. Memory does not grow with
it (images are read and written batch by batch); it bounds the run time and ``summary.json``."""

MAX_MODELS = 4
"""Most models one ``analyze`` call accepts."""


def main(argv: list[str] | None = None) -> int:
    """Runs the command line.

    Args:
        argv: the arguments without the program name; None reads ``sys.argv[1:]``.

    Returns:
        The exit status: 0 on success, 1 when the work failed, 2 for bad arguments, 130 when
        interrupted. Failures print one line ``attnviz: error: ...`` on stderr (plus the traceback
        with ``-v``).
    """
    out, err = sys.stdout, sys.stderr
    # The limits are read at each call (not at import), so that tests can lower them.
    parser = build_parser(MAX_IMAGES, MAX_MODELS)
    args_list: Sequence[str] = sys.argv[1:] if argv is None else argv
    try:
        args = parser.parse_args(args_list)
    except UsageError as exc:
        err.write(f"{PROG}: error: {exc}\n")
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    if args.command is None:
        err.write(
            f"{PROG}: error: choose a command: list, analyze, zoo, train, bench or serve "
            f"(see {PROG} --help)\n"
        )
        return EXIT_USAGE
    verbose = bool(args.verbose)

    with logging_and_warnings(verbose, err):
        try:
            if args.command == "list":
                return run_list(args, out)
            if args.command == "zoo":
                return run_zoo(args, out, err)
            if args.command == "train":
                return run_train(args, out, err)
            if args.command == "bench":
                return run_bench_command(args, out, err)
            if args.command == "serve":
                return run_serve(args, out, err)
            return run_analyze(args, out, err, max_images=MAX_IMAGES, max_models=MAX_MODELS)
        except BrokenPipeError:
            silence_stdout()
            return EXIT_FAILURE
        except KeyboardInterrupt:
            err.write(f"{PROG}: interrupted\n")
            return EXIT_INTERRUPTED
        except UsageError as exc:
            return fail(err, str(exc), verbose, EXIT_USAGE)
        except (Failure, AttnvizError, ImageLoadError) as exc:
            return fail(err, str(exc), verbose, EXIT_FAILURE)
        except OSError as exc:
            return fail(err, os_message(exc), verbose, EXIT_FAILURE)
        except Exception as exc:  # a bug: still one line, the traceback with -v
            hint = "" if verbose else " (run with -v for the traceback)"
            return fail(err, f"unexpected {type(exc).__name__}: {exc}{hint}", verbose, EXIT_FAILURE)
