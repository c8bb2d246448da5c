"""``attnviz zoo train|eval``: train the built-in zoo, or evaluate its committed weights.

``zoo eval`` measures accuracy and localisation on the held-out scenes and the faithfulness of every
map (deletion and insertion AUCs, ROAD, next to a random map's floor and the object box's reference)
on the first :data:`attnviz.workflows.zoo_training.N_FAITHFULNESS` of them.
"""

from __future__ import annotations

import argparse
import json
from typing import TextIO

from attnviz.cli.console import EXIT_OK, UsageError, note

__all__ = ["run_zoo"]


def run_zoo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Runs ``zoo train`` (writes ``assets/zoo/``) or ``zoo eval`` (a table, or JSON with ``--json``;
    each row's ``"faithfulness"`` as :func:`attnviz.workflows.zoo_training.evaluate_faithfulness`).

    Returns:
        0.

    Raises:
        UsageError: an unknown zoo kind, or a count below 1.
    """
    from attnviz.backends.zoo import read_card
    from attnviz.layers.zoo_net import zoo_name
    from attnviz.workflows import zoo_training as zoo

    try:
        kinds = zoo.kinds_from(args.kind)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.zoo_command == "train":
        overrides = {k: v for k, v in (("epochs", args.epochs), ("n_train", args.n_train)) if v is not None}
        if any(v < 1 for v in overrides.values()):
            raise UsageError("--epochs and --n-train must be at least 1")
        config = zoo.TrainConfig(**overrides)
        cards = zoo.train_and_save(kinds, config, log_line=lambda line: note(err, line))
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
            raise UsageError("--n must be at least 1")
        if args.write_cards and args.n:
            raise UsageError("--write-cards scores the cards' own held-out set: leave out --n")
        note(
            err,
            f"evaluating {zoo_name(kind)} on {n} held-out scenes (seed {eval_set['seed']}), "
            f"faithfulness on the first {min(n, zoo.N_FAITHFULNESS)}",
        )
        images, labels, boxes, _ = zoo.held_out_set(n, eval_set["seed"], eval_set["clutter"])
        rows.append(zoo.evaluate_zoo_model(kind, images, labels, boxes))
        if args.write_cards and card is not None:  # the card's own set: the figures it describes
            zoo.write_card_faithfulness(
                kind, figures=rows[-1]["faithfulness"], log_line=lambda line: note(err, line)
            )
    if args.json:
        json.dump(rows, out, indent=2, allow_nan=False)
        out.write("\n")
    else:
        out.write(zoo.format_table(rows) + "\n")
    return EXIT_OK
