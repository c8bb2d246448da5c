"""The command line's arguments: ``list``, ``analyze``, ``zoo train|eval``, ``train`` and ``bench``.

:func:`build_parser` gives the parser :func:`attnviz.cli.main` uses; it raises
:class:`~attnviz.cli.console.UsageError` for bad arguments instead of printing the usage and
exiting, so that every error ends as one line.
"""

from __future__ import annotations

import argparse
import re
from typing import NoReturn

from attnviz.cli.console import PROG, UsageError
from attnviz.cli.serve import add_serve_parser
from attnviz.cli.train import add_train_parser
from attnviz.core.scales import SCALE_MODES
from attnviz.workflows.pipeline import DEFAULT_BATCH_SIZE, IMAGE_EXTENSIONS, MAX_BATCH_SIZE

__all__ = ["RaisingParser", "build_parser"]


class RaisingParser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of printing the usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser(max_images: int, max_models: int) -> RaisingParser:
    """The parser of every command and option, ``-v`` accepted before or after the command.

    Args:
        max_images: most images one ``analyze`` call accepts (named in its help).
        max_models: most models one ``analyze`` call accepts (named in its help).

    Returns:
        The parser; ``parse_args`` raises :class:`~attnviz.cli.console.UsageError` for bad
        arguments and ``SystemExit`` only for ``--help``.
    """
    verbose = RaisingParser(add_help=False)
    # SUPPRESS: a subcommand's default must not undo a -v given before the subcommand.
    verbose.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log progress, show tracebacks",
    )

    parser = RaisingParser(
        prog=PROG,
        description="See what the attention modules of vision models do.",
        parents=[verbose],
    )
    parser.set_defaults(verbose=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=RaisingParser)

    lister = commands.add_parser(
        "list", parents=[verbose], help="list the models", description="List the models attnviz can load."
    )
    lister.add_argument("--json", action="store_true", help="print the model specs as JSON")

    _add_analyze(commands, verbose, max_images, max_models)
    _add_zoo(commands, verbose)
    add_train_parser(commands, verbose)
    _add_bench(commands, verbose)
    add_serve_parser(commands, verbose)
    return parser


def _add_analyze(
    commands: argparse._SubParsersAction[RaisingParser],
    verbose: RaisingParser,
    max_images: int,
    max_models: int,
) -> None:
    run = commands.add_parser(
        "analyze",
        parents=[verbose],
        help="analyse images and export the results",
        description=(
            "Run images through models, capture every attention block and write an export bundle "
            "(summary.json, PNG overlays, CSV, HTML charts) to a folder. Models run one after the "
            "other; images go through each in batches, read ahead of the forward and written while "
            f"the next batch runs. At most {max_images} images and {max_models} models per call. "
            "An unreadable image is skipped and named on stderr; the exit status is then 1, "
            "though every other result is written (0 when every image was analysed). Progress goes "
            "to stderr: a bar per model on a terminal, else a line every 10 s and one per finished "
            "model; stdout gets the closing line, and with -v a line per result."
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
    run.add_argument(
        "--faithfulness",
        action="store_true",
        help="also score every map (deletion and insertion AUC, with a random map as the floor) by "
        "running the model again on perturbed crops: faithfulness.csv per result and a "
        '"faithfulness" object in summary.json; the class followed is Grad-CAM\'s, else the top-1 '
        "(not with --ray)",
    )
    run.add_argument(
        "--road",
        action="store_true",
        help="with --faithfulness, also ROAD (noisy linear imputation; slow on a CPU)",
    )
    run.add_argument(
        "--ray",
        nargs="?",
        type=_ray_address,
        const="auto",
        default=None,
        metavar="ADDRESS",
        help="run on Ray Data instead of in this process (the same results in the same folder). "
        "Without a value (auto) it joins the Ray this machine belongs to (start it first with: ray "
        "start --head); ray://HOST:10001 reaches a remote head, HOST:6379 a cluster's GCS address",
    )


def _add_zoo(commands: argparse._SubParsersAction[RaisingParser], verbose: RaisingParser) -> None:
    zoo = commands.add_parser(
        "zoo",
        parents=[verbose],
        help="train or evaluate the built-in zoo",
        description="The built-in zoo: small attention CNNs trained by attnviz on generated scenes.",
    )
    zoo_commands = zoo.add_subparsers(
        dest="zoo_command", metavar="ACTION", parser_class=RaisingParser, required=True
    )
    train = zoo_commands.add_parser(
        "train", parents=[verbose], help="train zoo models (seeded) and write assets/zoo/"
    )
    train.add_argument("--kind", action="append", metavar="K", help="a zoo kind; repeat; default: all")
    train.add_argument("--epochs", type=int, default=None, help="training epochs (default: the card's)")
    train.add_argument("--n-train", type=int, default=None, help="training scenes (default: the card's)")
    evaluate = zoo_commands.add_parser(
        "eval",
        parents=[verbose],
        help="accuracy, localisation and faithfulness of the committed zoo weights",
    )
    evaluate.add_argument("--kind", action="append", metavar="K", help="a zoo kind; repeat; default: all")
    evaluate.add_argument("--n", type=int, default=None, help="held-out scenes (default: the cards' set)")
    evaluate.add_argument("--json", action="store_true", help="print the results as JSON")
    evaluate.add_argument(
        "--write-cards",
        action="store_true",
        help="store the faithfulness in the cards (assets/zoo/*.json), which the Leaderboard shows",
    )


def _add_bench(commands: argparse._SubParsersAction[RaisingParser], verbose: RaisingParser) -> None:
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
    bench.add_argument(
        "--no-playground", action="store_true", help="skip the playground's default training run"
    )
    bench.add_argument(
        "--no-faithfulness",
        action="store_true",
        help="skip the faithfulness figure (ROAD on ResNet-50 takes minutes on a CPU)",
    )
    bench.add_argument(
        "--serve",
        action="store_true",
        help="instead: 1, 8 and 32 concurrent users, in-process lock vs Ray Serve batching (DeiT-small)",
    )


def _batch_size(text: str) -> int:
    message = f"expected an integer in [1, {MAX_BATCH_SIZE}], got {text!r}"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(message) from None
    if not 1 <= value <= MAX_BATCH_SIZE:
        raise argparse.ArgumentTypeError(message)
    return value


def _ray_address(text: str) -> str:
    # An image path taken for the address (``analyze --ray a.png b.png``) must not pass.
    if text == "auto" or re.fullmatch(r"ray://\S+|[\w.-]+:\d+", text):
        return text
    raise argparse.ArgumentTypeError(
        f"expected auto, ray://HOST:PORT or HOST:PORT, got {text!r} (put --ray after the images, "
        "or write --ray=ADDRESS)"
    )


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value
