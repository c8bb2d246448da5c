"""``attnviz train``: train a playground network from the command line and keep it as a user model.

The same run as the Playground page (:func:`attnviz.workflows.playground.run_playground`): a
progress bar on stderr, then the weights (safetensors) and the card (JSON: the configuration, the
training curve, the final accuracy and localisation) are written into ``--out`` through
:func:`attnviz.backends.user_models.save_user_model`. A run that is interrupted writes nothing.
"""

from __future__ import annotations

import argparse
import threading
from typing import TextIO

from attnviz.cli.console import EXIT_OK, UsageError, note

__all__ = ["add_train_parser", "run_train"]


def add_train_parser(commands: argparse._SubParsersAction, verbose: argparse.ArgumentParser) -> None:
    """Adds the ``train`` command and its options."""
    from attnviz.layers.playground_net import FUSIONS, PATTERNS, STAGES, attention_kinds
    from attnviz.workflows.playground import LIMITS, default_config

    default = default_config().placement

    train = commands.add_parser(
        "train",
        parents=[verbose],
        help="train a playground network (an attention module placed in the zoo's backbone)",
        description=(
            "Place an attention module in the zoo's backbone, train it on generated scenes with a "
            "progress bar, and write the model (safetensors) and its card (JSON) into --out."
        ),
    )
    train.add_argument(
        "--module",
        default=default.kind,
        choices=attention_kinds(),
        metavar="KIND",
        help=f"attention kind: {', '.join(attention_kinds())} (default: {default.kind})",
    )
    train.add_argument(
        "--pattern",
        default=default.pattern,
        choices=PATTERNS,
        help=f"how it goes in (default: {default.pattern})",
    )
    train.add_argument(
        "--fuse", default=default.fuse, choices=FUSIONS, help=f"parallel fusion (default: {default.fuse})"
    )
    train.add_argument(
        "--stage",
        type=int,
        default=default.stage,
        choices=tuple(STAGES),
        help=f"backbone stage (default: {default.stage})",
    )
    train.add_argument("--depth", type=int, default=2, help="core: transformer blocks (default: 2)")
    train.add_argument("--heads", type=int, default=4, help="core: attention heads (default: 4)")
    train.add_argument("--classes", type=int, default=None, help="scene classes, 2 to 10 (default: 10)")
    train.add_argument("--clutter", type=float, default=None, help="background clutter in [0, 1]")
    train.add_argument("--object-size", type=float, default=None, help="mean object scale in [0.1, 0.3]")
    train.add_argument(
        "--n-train", type=int, default=None, help=f"training scenes (at most {LIMITS['n_train']})"
    )
    train.add_argument("--steps", type=int, default=None, help=f"training steps (at most {LIMITS['steps']})")
    train.add_argument(
        "--batch-size", type=int, default=None, help=f"batch size (at most {LIMITS['batch_size']})"
    )
    train.add_argument("--lr", type=float, default=None, help="peak learning rate")
    train.add_argument("--seed", type=int, default=None, help="seed of the scenes and the training")
    train.add_argument("--snapshot-every", type=int, default=None, help="steps between snapshots")
    train.add_argument(
        "--device", default="auto", metavar="auto|cpu|cuda", help="where to train (default: auto)"
    )
    train.add_argument("--autocast", default=None, choices=("bf16", "fp16"), help="mixed precision")
    train.add_argument("--name", default=None, help="the model's name (default: from the module and pattern)")
    train.add_argument("--replace", action="store_true", help="replace a model of the same name in --out")
    train.add_argument("--out", required=True, metavar="DIR", help="folder to write the model and card into")


def _config(args: argparse.Namespace):
    """The :class:`PlaygroundConfig` the arguments describe (UsageError for bad values)."""
    from dataclasses import replace

    from attnviz.layers.playground_net import Placement
    from attnviz.workflows.playground import PlaygroundConfig, default_config

    base = default_config()
    task = {
        k: v
        for k, v in (
            ("classes", args.classes),
            ("clutter", args.clutter),
            ("object_size", args.object_size),
            ("n_train", args.n_train),
            ("seed", args.seed),
        )
        if v is not None
    }
    budget = {
        k: v
        for k, v in (
            ("steps", args.steps),
            ("batch_size", args.batch_size),
            ("lr", args.lr),
            ("seed", args.seed),
        )
        if v is not None
    }
    try:
        placement = Placement(
            kind=args.module,
            pattern=args.pattern,
            stage=args.stage,
            fuse=args.fuse,
            depth=args.depth,
            heads=args.heads,
        )
        settings = replace(base.train, **budget)
        every = args.snapshot_every
        if every is None:
            every = max(base.snapshot_every, -(-settings.steps // 20))
        return PlaygroundConfig(
            placement=placement,
            task=replace(base.task, **task),
            train=settings,
            snapshot_every=every,
            device=args.device,
            autocast=args.autocast,
            workers=0,
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def _default_name(args: argparse.Namespace) -> str:
    if args.module == "none":
        return "baseline"
    extra = {"parallel": f"-{args.fuse}", "core": f"-d{args.depth}h{args.heads}"}.get(args.pattern, "")
    return f"{args.module}-{args.pattern}{extra}-s{args.stage}"


class _Bar:
    """A one-line progress bar on stderr: ``[#####.....] step 120/600 loss 1.23 acc 64%``."""

    def __init__(self, err: TextIO, width: int = 30) -> None:
        self.err, self.width, self.last = err, width, ""

    def __call__(self, state) -> None:
        done = state.step / max(state.steps, 1)
        filled = round(done * self.width)
        loss = f" loss {state.losses[-1, 1]:.3f}" if len(state.losses) else ""
        acc = f" acc {state.accuracy[-1, 1]:.0%}" if len(state.accuracy) else ""
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] step {state.step}/{state.steps}{loss}{acc}"
        if line != self.last:
            self.err.write("\r" + line)
            self.err.flush()
            self.last = line

    def close(self) -> None:
        if self.last:
            self.err.write("\n")
            self.err.flush()


def run_train(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Runs ``train``: trains, then writes ``<name>.safetensors`` and ``<name>.json`` into ``--out``.

    Returns:
        0.

    Raises:
        UsageError: bad options (a budget beyond the limits, a bad name).
        KeyboardInterrupt: interrupted (nothing is written).
    """
    from attnviz.backends.user_models import check_user_model_name, save_user_model
    from attnviz.workflows.playground import run_card, run_playground

    config = _config(args)
    name = args.name or _default_name(args)
    try:
        check_user_model_name(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    note(
        err, f"training {config.placement.text} on {config.task.classes} classes, {config.train.steps} steps"
    )
    bar = _Bar(err)
    cancel = threading.Event()
    try:
        state, model = run_playground(config, on_state=bar, cancel=cancel)
    finally:
        bar.close()
    assert model is not None  # only a cancelled run has none, and nothing here cancels
    path = save_user_model(name, model, run_card(config, state), folder=args.out, replace=args.replace)
    last = state.snapshots[-1]
    where = "" if last.energy_ratio is None else f", energy in box {last.energy_ratio:.2f}x uniform"
    note(err, f"held-out accuracy {last.accuracy:.1%}{where}; {state.seconds:.0f} s")
    out.write(f"{path}\n{path.with_suffix('.json')}\n")
    return EXIT_OK
