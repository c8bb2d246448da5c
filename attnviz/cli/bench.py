"""``attnviz bench``: the benchmark of :mod:`attnviz.workflows.bench`, as a text report or JSON."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import TextIO

from attnviz.backends import get_spec
from attnviz.cli.console import EXIT_OK, UsageError, note
from attnviz.runtime import resolve_device

__all__ = ["run_bench_command"]


def run_bench_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Checks the arguments, runs the benchmark and prints its report (JSON with ``--json``).

    Returns:
        0.

    Raises:
        UsageError: ``--repeats`` below 1, or models the benchmark refuses.
        AttnvizError: an unknown model or an unavailable device.
    """
    from attnviz.workflows import bench

    if args.repeats is not None and args.repeats < 1:
        raise UsageError("--repeats must be at least 1")
    for name in args.model or ():
        get_spec(name)  # UnknownModelError lists the known names
    device = resolve_device(args.device)
    if args.serve:
        return _serve_bench(args, device, out, err)
    note(err, f"benchmarking on {device}{' (small mode)' if args.small else ''}; this takes a while")
    try:
        report = bench.run_bench(
            device=device,
            small=args.small,
            repeats=args.repeats,
            models=args.model,
            playground=not args.no_playground,
            faithfulness=not args.no_faithfulness,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _print(out, args.json, lambda: bench.report_to_json(report), lambda: bench.format_report(report))
    return EXIT_OK


def _print(out: TextIO, as_json: bool, data: Callable[[], object], text: Callable[[], str]) -> None:
    """The report: ``data()`` as JSON with ``--json``, else ``text()``."""
    if as_json:
        json.dump(data(), out, indent=2)
        out.write("\n")
    else:
        out.write(text() + "\n")


def _serve_bench(args: argparse.Namespace, device: object, out: TextIO, err: TextIO) -> int:
    """``bench --serve``: :mod:`attnviz.workflows.bench_serve`."""
    from attnviz.workflows import bench_serve

    if args.model and len(args.model) > 1:
        raise UsageError("bench --serve measures one model: give --model once")
    note(err, f"bench --serve on {device}: in-process, then Ray Serve; this takes a few minutes")
    report = bench_serve.run_serve_bench(
        model=args.model[0] if args.model else None,
        device=str(device),
        small=args.small,
        rounds=args.repeats or 4,
        progress=lambda line: note(err, line),
    )
    _print(
        out,
        args.json,
        lambda: bench_serve.serve_report_to_json(report),
        lambda: bench_serve.format_serve_report(report),
    )
    return EXIT_OK
