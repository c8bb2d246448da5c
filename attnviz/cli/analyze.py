"""``attnviz analyze``: images (files or folders) through models into an export folder.

The arguments are checked before any slow work; :func:`attnviz.workflows.pipeline.analyze_to_folder`
does the work batch by batch (or, with ``--ray``,
:func:`attnviz.workflows.pipeline_ray.analyze_to_folder_on_ray` on Ray Data), and
:class:`AnalyzePrinter` turns its events into the command's lines: notes and each model's progress
(:mod:`.progress`) on stderr, one line per written result on stdout with ``-v`` only, and a closing
``Wrote N files`` line on stdout. An unreadable image is skipped (one ``attnviz: skipped: ...`` line
each); the other results are written and the exit status is then 1. ``--faithfulness`` (with
``--road``) also scores every map; it is refused with ``--ray``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from attnviz.backends import ProgressFn, get_spec
from attnviz.cli.console import EXIT_FAILURE, EXIT_OK, Failure, UsageError, note, os_message
from attnviz.cli.progress import FolderProgress
from attnviz.core.errors import AttnvizError
from attnviz.core.records import Analysis
from attnviz.io.export import SUMMARY_FILENAME, validate_style
from attnviz.runtime import resolve_device
from attnviz.workflows.pipeline import PipelineEvent, PipelineReport, analyze_to_folder, expand_image_paths

__all__ = ["AnalyzePrinter", "run_analyze"]

_PROGRESS_EVERY_S = 2.0


def _progress_printer(write: Callable[[str], None], model: str) -> ProgressFn:
    """A ``progress(message, fraction)`` callback giving ``write`` (a note on stderr) its lines,
    downloads at most every 2 s."""
    last = [0.0]

    def progress(message: str, fraction: float | None) -> None:
        now = time.monotonic()
        ongoing = message.startswith("Downloading") and fraction not in (None, 1.0)
        if ongoing and now - last[0] < _PROGRESS_EVERY_S:
            return
        last[0] = now
        percent = f" ({fraction:.0%})" if ongoing and fraction is not None else ""
        write(f"[{model}] {message}{percent}")

    return progress


def _check_args(args: argparse.Namespace, max_images: int, max_models: int) -> tuple[list[str], list[str]]:
    """Everything that can be checked before the slow work; returns the image paths (folders
    expanded) and the models (duplicates removed)."""
    try:
        images = expand_image_paths(args.images)
    except ValueError as exc:
        raise Failure(str(exc)) from None
    if len(images) > max_images:
        raise UsageError(f"too many images: {len(images)} given, at most {max_images} per call")
    models = list(dict.fromkeys(args.model))
    if len(models) > max_models:
        raise UsageError(f"too many models: {len(models)} given, at most {max_models} per call")
    for name in models:
        get_spec(name)  # UnknownModelError lists the known names
    resolve_device(args.device)
    if args.weights not in ("random", "pretrained") and not Path(args.weights).is_file():
        raise Failure(
            f"--weights {args.weights}: no such checkpoint file (use random, pretrained or the path of "
            "a .safetensors/.pth state dict)"
        )
    try:
        validate_style(args.cmap, args.alpha, args.scale)
    except (ValueError, TypeError) as err:
        raise UsageError(str(err)) from None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise Failure(f"--out {out} exists and is not a folder")
    return images, models


def _top1(analysis: Analysis) -> str:
    det = analysis.detections
    if det is not None:
        best = f" (best: {det.labels[0]} {float(det.scores[0]):.0%})" if det.labels else ""
        return f"{len(det.labels)} detection(s){best}"
    if not analysis.top5:
        return "no prediction"
    first = analysis.top5[0]
    label = first.label.split(",")[0]
    return f"{label} ({first.probability:.1%})"


class AnalyzePrinter:
    """Turns pipeline events into the CLI's lines.

    On stderr: the loading and download notes, the analyses' notes and the progress of each model
    (a :class:`~attnviz.cli.progress.FolderProgress`: bars on a terminal, else a line every
    ``period_s`` seconds and one at the end of each model's pass). On stdout, with ``verbose`` only:
    a header per model and one line per written result.

    Args:
        target: the output folder (named in the result lines).
        verbose: also print the result lines on ``out``.
        out: stdout.
        err: stderr.
        images: the run's image paths, folders expanded (the progress totals).
        tty: bars (True) or lines (False) on ``err``; None asks ``err.isatty()``.
        period_s: seconds between progress lines off a terminal (None: the class default, 10 s).
        clock: a monotonic clock in seconds, for the progress lines.
    """

    def __init__(
        self,
        target: Path,
        verbose: bool,
        out: TextIO,
        err: TextIO,
        images: Sequence[str] = (),
        *,
        tty: bool | None = None,
        period_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target, self.verbose, self.out, self.err = target, verbose, out, err
        self.progress = FolderProgress(err, images, tty=tty, period_s=period_s, clock=clock)
        self.model: str | None = None
        self.downloads: dict[str, ProgressFn] = {}

    def __call__(self, event: PipelineEvent) -> None:
        name = event.model or ""
        if event.kind in ("loading", "analysing"):
            self.progress.note(f"[{name}] {event.message}")
        elif event.kind == "download":
            # With -v the library's INFO logs already say the same.
            if not self.verbose:
                printer = self.downloads.setdefault(name, _progress_printer(self.progress.note, name))
                printer(event.message, event.fraction)
        elif event.kind == "written" and event.analysis is not None:
            self._result(name, event.image or "", event.folder or "", event.analysis)
        # "skipped": counted by the progress, listed once at the end
        self.progress(event)

    def close(self) -> None:
        """Closes the progress bars still open (after a failure)."""
        self.progress.close()

    def _result(self, name: str, image: str, folder: str, analysis: Analysis) -> None:
        if self.verbose:
            lines = ""
            if name != self.model:
                self.model = name
                untrained = ", UNTRAINED" if analysis.untrained else ""
                lines += f"{name} ({analysis.weights} weights{untrained})\n"
            where = self.target / folder
            head = "" if analysis.detections is not None else "top-1 "
            lines += f"  {image}: {head}{_top1(analysis)}, {len(analysis.records)} records -> {where}/\n"
            self.progress.write(self.out, lines)
        for line in analysis.notes:
            self.progress.note(f"[{name}] {line}")


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


def _on_ray(
    images: list[str],
    models: list[str],
    target: Path,
    ray: str,
    options: dict[str, Any],
    printer: AnalyzePrinter,
) -> PipelineReport:
    """The folder run on Ray Data: ``ray`` is ``"auto"`` (this machine's Ray) or an address."""
    try:  # lazily: Ray is slow to import and only this option needs it
        from attnviz.workflows.pipeline_ray import analyze_to_folder_on_ray
    except ImportError as exc:
        raise Failure(f"--ray needs Ray Data (pip install 'ray[data]'): {exc}") from exc
    address = None if ray == "auto" else ray
    try:
        report: PipelineReport = analyze_to_folder_on_ray(
            images, models, target, address=address, **options, progress=printer
        )
    except ConnectionError as exc:  # an OSError, but not the output folder's
        where = "the Ray of this machine (start one with: ray start --head)" if address is None else address
        raise Failure(f"cannot reach {where}: {os_message(exc)}") from exc
    return report


def run_analyze(
    args: argparse.Namespace, out: TextIO, err: TextIO, *, max_images: int, max_models: int
) -> int:
    """Runs ``attnviz analyze`` with parsed arguments, locally or on Ray (``--ray``).

    Args:
        args: the parsed ``analyze`` arguments.
        out: where the closing line goes, and the result lines with ``-v`` (stdout).
        err: where notes, progress and skipped files go (stderr).
        max_images: most images accepted, after folders are expanded.
        max_models: most models accepted, duplicates removed.

    Returns:
        0 when every image was analysed, 1 when some were skipped (the others are written).

    Raises:
        UsageError: too many images or models, a bad overlay style, ``--road`` without
            ``--faithfulness``, or ``--faithfulness`` with ``--ray``.
        Failure: nothing to read, a missing checkpoint, an output that is not a folder, nothing
            written, a write that failed, or (``--ray``) no Ray to import or to reach.
        AttnvizError: from the library (unknown model, device, weights).
    """
    ray: str | None = getattr(args, "ray", None)
    faithfulness = bool(getattr(args, "faithfulness", False))
    road = bool(getattr(args, "road", False))
    if road and not faithfulness:
        raise UsageError("--road is one of the faithfulness metrics: give it with --faithfulness")
    if faithfulness and ray is not None:
        raise UsageError("--faithfulness runs in this process only: leave out --ray to measure it")
    images, models = _check_args(args, max_images, max_models)
    if args.weights == "random":
        note(
            err,
            "note: --weights random: the models are UNTRAINED, so predictions and attention maps "
            "show no learned behaviour (every result is marked untrained).",
        )
    target = Path(args.out)
    options: dict[str, Any] = {
        "weights": args.weights,
        "device": args.device,
        "batch_size": args.batch_size,
        "gradcam": not args.no_gradcam,
        "autocast": args.autocast,
        "cmap": args.cmap,
        "alpha": args.alpha,
        "scale": args.scale,
    }
    # only when asked: the local call is otherwise the Ray call's (the Ray run cannot score)
    scoring: dict[str, Any] = {"faithfulness": True, "road": road} if faithfulness else {}
    printer = AnalyzePrinter(target, bool(args.verbose), out, err, images)
    try:
        with printer.progress.logs_above_bars():
            if ray is None:
                report = analyze_to_folder(images, models, target, **options, **scoring, progress=printer)
            else:
                report = _on_ray(images, models, target, ray, options, printer)
    except (OSError, ValueError) as exc:
        if isinstance(exc, (AttnvizError, BrokenPipeError)):
            raise
        raise Failure(f"cannot write the results to {target}: {os_message(exc)}") from exc
    finally:
        printer.close()

    if not report.results:  # no image could be read: nothing was written
        if len(report.skipped) == 1:
            raise Failure(report.skipped[0].message)
        for skip in report.skipped:
            note(err, f"skipped: {skip.message}")
        raise Failure(f"none of the {len(images)} images could be read")
    out.write(f"Wrote {report.files} files to {target} (see {target / SUMMARY_FILENAME}).\n")
    note(err, _timing_line(report))
    if report.skipped:
        for skip in report.skipped:
            note(err, f"skipped: {skip.message}")
        note(
            err,
            f"error: {len(report.skipped)} of {len(images)} image(s) could not be read and were "
            "skipped; the other results were written",
        )
        return EXIT_FAILURE
    return EXIT_OK
