"""The command line: ``python -m attnviz list``, ``analyze``, ``zoo`` and ``bench``.

``list`` shows the model zoo; ``analyze`` runs images (files or folders) through models and
writes the export bundle (:mod:`attnviz.io.export`) to a folder, batch by batch
(:mod:`attnviz.workflows.pipeline`); ``bench`` measures what capture costs
(:mod:`attnviz.workflows.bench`). The library logs; this module configures logging and
prints. Every expected failure ends with one line ``attnviz: error: ...`` on stderr and a non-zero
exit status (2 for bad arguments, 1 otherwise); ``-v`` adds INFO logs and tracebacks. ``analyze``
skips an unreadable image (one ``attnviz: skipped: ...`` line each), writes the other results and
then exits with 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn, TextIO

from attnviz.backends import ProgressFn, get_spec, list_models
from attnviz.core.errors import AttnvizError
from attnviz.core.records import Analysis
from attnviz.core.scales import SCALE_MODES
from attnviz.io.export import SUMMARY_FILENAME, validate_style
from attnviz.io.images import ImageLoadError
from attnviz.runtime import resolve_device
from attnviz.workflows.pipeline import (
    DEFAULT_BATCH_SIZE,
    IMAGE_EXTENSIONS,
    MAX_BATCH_SIZE,
    PipelineEvent,
    PipelineReport,
    analyze_to_folder,
    expand_image_paths,
)

__all__ = ["MAX_IMAGES", "MAX_MODELS", "main"]

PROG = "attnviz"

MAX_IMAGES = 10_000
"""Most images one ``analyze`` call accepts, after folders are expanded. Memory does not grow with
it (images are read and written batch by batch); it bounds the run time and ``summary.json``."""

MAX_MODELS = 4
"""Most models one ``analyze`` call accepts."""

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

_PROGRESS_EVERY_S = 2.0

# Third-party warnings that say nothing to a CLI user (shown with -v).
_QUIET_MODULES = r"(torch|torchvision|timm|pytorch_grad_cam|huggingface_hub|ttach|cv2)(\.|$)"
_QUIET_CATEGORIES: tuple[type[Warning], ...] = (UserWarning, FutureWarning, DeprecationWarning)


class _UsageError(Exception):
    """Bad command-line arguments: reported in one line, exit status 2."""


class _Failure(Exception):
    """An expected failure with a user-facing message: reported in one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of printing the usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see {self.prog} --help)")


def _build_parser() -> argparse.ArgumentParser:
    verbose = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's default must not undo a -v given before the subcommand.
    verbose.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log progress, show tracebacks",
    )

    parser = _Parser(
        prog=PROG,
        description="See what the attention modules of vision models do.",
        parents=[verbose],
    )
    parser.set_defaults(verbose=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    lister = commands.add_parser(
        "list", parents=[verbose], help="list the models", description="List the models attnviz can load."
    )
    lister.add_argument("--json", action="store_true", help="print the model specs as JSON")

    run = commands.add_parser(
        "analyze",
        parents=[verbose],
        help="analyse images and export the results",
        description=(
            "Run images through models, capture every attention block and write an export bundle "
            "(summary.json, PNG overlays, CSV, HTML charts) to a folder. Models run one after the "
            "other; images go through each in batches, read ahead of the forward and written while "
            f"the next batch runs. At most {MAX_IMAGES} images and {MAX_MODELS} models per call. "
            "An unreadable image is skipped and named on stderr; the exit status is then 1, "
            "though every other result is written (0 when every image was analysed)."
        ),
    )
    run.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help=(
            "JPEG, PNG, WebP or GIF files, or folders: a folder gives its files named "
            f"*{', *'.join(IMAGE_EXTENSIONS)} (any case; not hidden ones, not subfolders), sorted by name"
        ),
    )
    run.add_argument(
        "--model",
        "-m",
        action="append",
        required=True,
        metavar="NAME",
        help="a model name; repeat for several",
    )
    run.add_argument(
        "--weights",
        default="pretrained",
        metavar="random|pretrained|PATH",
        help="pretrained (default; cached or downloaded), random (untrained), or a checkpoint file",
    )
    run.add_argument("--device", default="auto", metavar="auto|cpu|cuda", help="where to run (default: auto)")
    run.add_argument("--out", "-o", required=True, metavar="DIR", help="folder to write the results to")
    run.add_argument(
        "--batch-size",
        type=_batch_size,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"images per forward, 1 to {MAX_BATCH_SIZE} (default: {DEFAULT_BATCH_SIZE})",
    )
    run.add_argument("--no-gradcam", action="store_true", help="skip the Grad-CAM baseline")
    run.add_argument(
        "--autocast",
        choices=("bf16", "fp16"),
        default=None,
        help="run the forward in reduced precision (GPU; results within ~0.02 of float32)",
    )
    run.add_argument("--cmap", default="jet", help="matplotlib colormap of the overlays (default: jet)")
    run.add_argument("--alpha", type=_alpha, default=0.5, help="overlay opacity in [0, 1] (default: 0.5)")
    run.add_argument(
        "--scale",
        choices=SCALE_MODES,
        default="absolute",
        help="colour scale of the overlays: absolute (default: gates and Grad-CAM on 0-1, other maps "
        "from 0 to their largest value) or stretched (each map's own min-max); every overlay shows its "
        "colour bar and summary.json gives each map's range and scale",
    )

    zoo = commands.add_parser(
        "zoo",
        parents=[verbose],
        help="train or evaluate the built-in zoo",
        description="The built-in zoo: small attention CNNs trained by attnviz on generated scenes.",
    )
    zoo_commands = zoo.add_subparsers(
        dest="zoo_command", metavar="ACTION", parser_class=_Parser, required=True
    )
    train = zoo_commands.add_parser(
        "train", parents=[verbose], help="train zoo models (seeded) and write assets/zoo/"
    )
    train.add_argument("--kind", action="append", metavar="K", help="a zoo kind; repeat; default: all")
    train.add_argument("--epochs", type=int, default=None, help="training epochs (default: the card's)")
    train.add_argument("--n-train", type=int, default=None, help="training scenes (default: the card's)")
    evaluate = zoo_commands.add_parser(
        "eval", parents=[verbose], help="accuracy and localisation of the committed zoo weights"
    )
    evaluate.add_argument("--kind", action="append", metavar="K", help="a zoo kind; repeat; default: all")
    evaluate.add_argument("--n", type=int, default=None, help="held-out scenes (default: the cards' set)")
    evaluate.add_argument("--json", action="store_true", help="print the results as JSON")

    bench = commands.add_parser(
        "bench",
        parents=[verbose],
        help="measure capture overhead, maps vs Grad-CAM and batch throughput",
        description=(
            "Benchmark in this process, warm, median of repeated runs: capture overhead, native maps "
            "vs Grad-CAM, a 4-model comparison, CLI batch throughput and peak memory, as ms and ratios."
        ),
    )
    bench.add_argument(
        "--device", default="auto", metavar="auto|cpu|cuda", help="where to run (default: auto)"
    )
    bench.add_argument("--small", action="store_true", help="quick CI mode: small models, 2 repeats")
    bench.add_argument("--repeats", type=int, default=None, metavar="N", help="timed runs per figure")
    bench.add_argument("--model", "-m", action="append", metavar="NAME", help="a model; repeat for several")
    bench.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _batch_size(text: str) -> int:
    message = f"expected an integer in [1, {MAX_BATCH_SIZE}], got {text!r}"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(message) from None
    if not 1 <= value <= MAX_BATCH_SIZE:
        raise argparse.ArgumentTypeError(message)
    return value


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


# --------------------------------------------------------------------------------------------------
# list
# --------------------------------------------------------------------------------------------------


def _cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    specs = list_models()
    if args.json:
        json.dump([dataclasses.asdict(s) for s in specs], out, indent=2)
        out.write("\n")
        return EXIT_OK
    header = ("NAME", "SOURCE", "ATTENTION", "INPUT", "PRETRAINED CACHED", "DESCRIPTION")
    rows = [
        (
            s.name,
            s.source,
            ", ".join(s.attention) or "-",
            f"{s.input_size[0]}x{s.input_size[1]}",
            "yes" if s.pretrained_available else "no",
            s.description,
        )
        for s in specs
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    for row in (header, *rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        out.write("  ".join([*cells, row[-1]]).rstrip() + "\n")
    return EXIT_OK


# --------------------------------------------------------------------------------------------------
# analyze
# --------------------------------------------------------------------------------------------------


def _note(err: TextIO, message: str) -> None:
    err.write(f"{PROG}: {message}\n")
    err.flush()


def _progress_printer(err: TextIO, model: str) -> ProgressFn:
    """A ``progress(message, fraction)`` callback printing to stderr, downloads at most every 2 s."""
    last = [0.0]

    def progress(message: str, fraction: float | None) -> None:
        now = time.monotonic()
        ongoing = message.startswith("Downloading") and fraction not in (None, 1.0)
        if ongoing and now - last[0] < _PROGRESS_EVERY_S:
            return
        last[0] = now
        percent = f" ({fraction:.0%})" if ongoing and fraction is not None else ""
        _note(err, f"[{model}] {message}{percent}")

    return progress


def _check_analyze_args(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Everything that can be checked before the slow work; returns the image paths (folders
    expanded) and the models (duplicates removed)."""
    try:
        images = expand_image_paths(args.images)
    except ValueError as exc:
        raise _Failure(str(exc)) from None
    if len(images) > MAX_IMAGES:
        raise _UsageError(f"too many images: {len(images)} given, at most {MAX_IMAGES} per call")
    models = list(dict.fromkeys(args.model))
    if len(models) > MAX_MODELS:
        raise _UsageError(f"too many models: {len(models)} given, at most {MAX_MODELS} per call")
    for name in models:
        get_spec(name)  # UnknownModelError lists the known names
    resolve_device(args.device)
    if args.weights not in ("random", "pretrained") and not Path(args.weights).is_file():
        raise _Failure(
            f"--weights {args.weights}: no such checkpoint file (use random, pretrained or the path of "
            "a .safetensors/.pth state dict)"
        )
    try:
        validate_style(args.cmap, args.alpha, args.scale)
    except (ValueError, TypeError) as err:
        raise _UsageError(str(err)) from None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise _Failure(f"--out {out} exists and is not a folder")
    return images, models


def _top1(analysis: Analysis) -> str:
    det = analysis.detections
    if det is not None:
        best = f" (best: {det.labels[0]} {float(det.scores[0]):.0%})" if det.labels else ""
        return f"{len(det.labels)} detection(s){best}"
    if not analysis.top5:
        return "no prediction"
    best = analysis.top5[0]
    label = best.label.split(",")[0]
    return f"{label} ({best.probability:.1%})"


class _AnalyzePrinter:
    """Turns pipeline events into the CLI's lines: notes on stderr, one line per result on stdout."""

    def __init__(self, target: Path, verbose: bool, out: TextIO, err: TextIO) -> None:
        self.target, self.verbose, self.out, self.err = target, verbose, out, err
        self.model: str | None = None
        self.downloads: dict[str, ProgressFn] = {}

    def __call__(self, event: PipelineEvent) -> None:
        name = event.model or ""
        if event.kind in ("loading", "analysing"):
            _note(self.err, f"[{name}] {event.message}")
        elif event.kind == "download":
            # With -v the library's INFO logs already say the same.
            if not self.verbose:
                printer = self.downloads.setdefault(name, _progress_printer(self.err, name))
                printer(event.message, event.fraction)
        elif event.kind == "written" and event.analysis is not None:
            self._result(name, event.image or "", event.folder or "", event.analysis)
        # "skipped": listed once at the end

    def _result(self, name: str, image: str, folder: str, analysis: Analysis) -> None:
        if name != self.model:
            self.model = name
            untrained = ", UNTRAINED" if analysis.untrained else ""
            self.out.write(f"{name} ({analysis.weights} weights{untrained})\n")
        where = self.target / folder
        head = "" if analysis.detections is not None else "top-1 "
        self.out.write(f"  {image}: {head}{_top1(analysis)}, {len(analysis.records)} records -> {where}/\n")
        self.out.flush()
        for note in analysis.notes:
            _note(self.err, f"[{name}] {note}")


def _timing_line(report: PipelineReport) -> str:
    parts = [
        f"{t.model}: load {t.load_s:.1f} s, forward {t.forward_s:.1f} s, render+write {t.write_s:.1f} s"
        for t in report.models
        if t.results
    ]
    if report.gpu_utilization is not None:
        parts.append(f"GPU utilisation {report.gpu_utilization:.0f}%")
    return (
        f"{report.results} result(s) in {report.wall_s:.1f} s ({report.images_per_s:.2f} images/s); "
        + "; ".join(parts)
    )


def _cmd_analyze(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    images, models = _check_analyze_args(args)
    if args.weights == "random":
        _note(
            err,
            "note: --weights random: the models are UNTRAINED, so predictions and attention maps "
            "show no learned behaviour (every result is marked untrained).",
        )
    target = Path(args.out)
    try:
        report = analyze_to_folder(
            images,
            models,
            target,
            weights=args.weights,
            device=args.device,
            batch_size=args.batch_size,
            gradcam=not args.no_gradcam,
            autocast=args.autocast,
            cmap=args.cmap,
            alpha=args.alpha,
            scale=args.scale,
            progress=_AnalyzePrinter(target, bool(args.verbose), out, err),
        )
    except (OSError, ValueError) as exc:
        if isinstance(exc, (AttnvizError, BrokenPipeError)):
            raise
        raise _Failure(f"cannot write the results to {target}: {_os_message(exc)}") from exc

    if not report.results:  # no image could be read: nothing was written
        if len(report.skipped) == 1:
            raise _Failure(report.skipped[0].message)
        for skip in report.skipped:
            _note(err, f"skipped: {skip.message}")
        raise _Failure(f"none of the {len(images)} images could be read")
    out.write(f"Wrote {report.files} files to {target} (see {target / SUMMARY_FILENAME}).\n")
    _note(err, _timing_line(report))
    if report.skipped:
        for skip in report.skipped:
            _note(err, f"skipped: {skip.message}")
        _note(
            err,
            f"error: {len(report.skipped)} of {len(images)} image(s) could not be read and were "
            "skipped; the other results were written",
        )
        return EXIT_FAILURE
    return EXIT_OK


def _os_message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------


@contextmanager
def _logging_and_warnings(verbose: bool, err: TextIO) -> Iterator[None]:
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


def _cmd_zoo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from attnviz.backends.zoo import read_card
    from attnviz.layers.zoo_net import zoo_name
    from attnviz.workflows import zoo_training as zoo

    try:
        kinds = zoo.kinds_from(args.kind)
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    if args.zoo_command == "train":
        overrides = {k: v for k, v in (("epochs", args.epochs), ("n_train", args.n_train)) if v is not None}
        if any(v < 1 for v in overrides.values()):
            raise _UsageError("--epochs and --n-train must be at least 1")
        config = zoo.TrainConfig(**overrides)
        cards = zoo.train_and_save(kinds, config, log_line=lambda line: _note(err, line))
        out.write(zoo.format_table(cards) + "\n")
        return EXIT_OK
    rows = []
    for kind in kinds:
        card = read_card(kind)
        eval_set = (card or {}).get(
            "eval_set", {"n": 1000, "seed": zoo.TrainConfig().eval_seed, "clutter": 0.5}
        )
        n = args.n or eval_set["n"]
        if n < 1:
            raise _UsageError("--n must be at least 1")
        _note(err, f"evaluating {zoo_name(kind)} on {n} held-out scenes (seed {eval_set['seed']})")
        images, labels, boxes, _ = zoo.held_out_set(n, eval_set["seed"], eval_set["clutter"])
        rows.append(zoo.evaluate_zoo_model(kind, images, labels, boxes))
    if args.json:
        json.dump(rows, out, indent=2)
        out.write("\n")
    else:
        out.write(zoo.format_table(rows) + "\n")
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from attnviz.workflows import bench

    if args.repeats is not None and args.repeats < 1:
        raise _UsageError("--repeats must be at least 1")
    for name in args.model or ():
        get_spec(name)  # UnknownModelError lists the known names
    device = resolve_device(args.device)
    _note(err, f"benchmarking on {device}{' (small mode)' if args.small else ''}; this takes a while")
    try:
        report = bench.run_bench(device=device, small=args.small, repeats=args.repeats, models=args.model)
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    if args.json:
        json.dump(bench.report_to_json(report), out, indent=2)
        out.write("\n")
    else:
        out.write(bench.format_report(report) + "\n")
    return EXIT_OK


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
    parser = _build_parser()
    args_list: Sequence[str] = sys.argv[1:] if argv is None else argv
    try:
        args = parser.parse_args(args_list)
    except _UsageError as exc:
        err.write(f"{PROG}: error: {exc}\n")
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    if args.command is None:
        err.write(f"{PROG}: error: choose a command: list, analyze, zoo or bench (see {PROG} --help)\n")
        return EXIT_USAGE
    verbose = bool(args.verbose)

    with _logging_and_warnings(verbose, err):
        try:
            if args.command == "list":
                return _cmd_list(args, out)
            if args.command == "zoo":
                return _cmd_zoo(args, out, err)
            if args.command == "bench":
                return _cmd_bench(args, out, err)
            return _cmd_analyze(args, out, err)
        except BrokenPipeError:
            _silence_stdout()
            return EXIT_FAILURE
        except KeyboardInterrupt:
            err.write(f"{PROG}: interrupted\n")
            return EXIT_INTERRUPTED
        except _UsageError as exc:
            return _fail(err, str(exc), verbose, EXIT_USAGE)
        except (_Failure, AttnvizError, ImageLoadError) as exc:
            return _fail(err, str(exc), verbose, EXIT_FAILURE)
        except OSError as exc:
            return _fail(err, _os_message(exc), verbose, EXIT_FAILURE)
        except Exception as exc:  # a bug: still one line, the traceback with -v
            hint = "" if verbose else " (run with -v for the traceback)"
            return _fail(err, f"unexpected {type(exc).__name__}: {exc}{hint}", verbose, EXIT_FAILURE)


def _silence_stdout() -> None:
    """After the reader of stdout went away (``| head``): no second error when Python flushes it."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (e.g. captured in tests)
        pass


def _fail(err: TextIO, message: str, verbose: bool, status: int) -> int:
    if verbose:
        traceback.print_exc(file=err)
    # One line, whatever the message holds.
    err.write(f"{PROG}: error: {' '.join(message.split())}\n")
    err.flush()
    return status


if __name__ == "__main__":  # pragma: no cover - python -m attnviz.cli
    raise SystemExit(main())
