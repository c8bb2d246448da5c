"""``attnviz list``: the models attnviz can load, as a table or as JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import TextIO

from attnviz.backends import list_models
from attnviz.cli.console import EXIT_OK

__all__ = ["run_list"]


def run_list(args: argparse.Namespace, out: TextIO) -> int:
    """Prints every model spec: a column-aligned table, or a JSON list with ``--json``.

    Returns:
        0.
    """
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
