"""The Leaderboard page's logic (``pages/leaderboard.py`` lays the page out): the rows of the zoo's
model cards, their filters and charts, all pure functions of the cards.

The cards are the JSON files next to the committed weights (``assets/zoo/zoo_<kind>.json``, written
by ``python -m attnviz zoo train``), read with :func:`attnviz.backends.zoo.read_card`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from attnviz.backends import zoo
from attnviz.layers.zoo_net import ZOO_KINDS, zoo_name

__all__ = [
    "KINDS_KEY",
    "MAPS_KEY",
    "MAP_CHOICES",
    "METRICS",
    "NO_CARDS",
    "card_notes",
    "filter_rows",
    "is_gradcam",
    "leaderboard_rows",
    "metric_figure",
    "read_cards",
]

KINDS_KEY = "leaderboard_kinds"
MAPS_KEY = "leaderboard_maps"

MAP_CHOICES = ("include Grad-CAM", "attention maps only")

METRICS = """
**Pointing game**: the share of held-out scenes where the map's maximum falls inside the object's
box. **Energy in box**: the share of the map's total mass (after upsampling it to the image) that lies
inside the box, averaged over the scenes; **box area share** is the box's share of the image, which is
what a uniform map would score. **Energy ratio** = energy in box / box area share: 1 means the map
is no better than uniform, 3 means it is three times as concentrated on the object.
"""

NO_CARDS = """
No zoo model cards were found in `assets/zoo/`. Train the zoo (seeded, on the CPU)
to create the weights and their cards:

```sh
.venv/bin/python -m attnviz zoo train            # every kind
.venv/bin/python -m attnviz zoo train --kind cbam  # one kind
```

Each kind writes `assets/zoo/zoo_<kind>.safetensors` and `assets/zoo/zoo_<kind>.json`; this page
reads the `.json` cards.
"""


# --------------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------------


def read_cards() -> dict[str, dict]:
    """Every zoo kind's card that exists, in :data:`attnviz.layers.zoo_net.ZOO_KINDS` order."""
    cards = {}
    for kind in ZOO_KINDS:
        card = zoo.read_card(kind)
        if card is not None:
            cards[kind] = card
    return cards


def card_notes(cards: dict[str, dict]) -> list[str]:
    """What the page says about the cards: the kinds without one, the trained but unscored ones, and
    the held-out set when every card was scored on the same one."""
    notes = []
    missing = [zoo_name(k) for k in ZOO_KINDS if k not in cards]
    if missing:
        notes.append(f"No card yet for: {', '.join(missing)}.")
    unscored = [zoo_name(k) for k, card in cards.items() if not card.get("localization")]
    if unscored:
        notes.append(
            f"Trained but not scored yet (no localisation in the card): {', '.join(unscored)}; "
            "`python -m attnviz zoo eval` scores them."
        )
    eval_sets = {
        (s.get("n"), s.get("seed"), s.get("clutter"))
        for s in (card.get("eval_set") or {} for card in cards.values())
    }
    if len(eval_sets) == 1:
        n, seed, clutter = next(iter(eval_sets))
        notes.append(f"Held-out set: {n} scenes (seed {seed}, clutter {clutter}).")
    return notes


def is_gradcam(map_name: str) -> bool:
    """True for the Grad-CAM row of a card (its map label starts with ``Grad-CAM``)."""
    return map_name.startswith("Grad-CAM")


def leaderboard_rows(cards: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per model and scored map.

    Args:
        cards: kind -> card, as :func:`attnviz.backends.zoo.read_card` returns them.

    Returns:
        Dicts with model, kind, accuracy, map, pointing game, energy in box, box area share,
        energy ratio and n (held-out scenes).
    """
    rows = []
    for kind, card in cards.items():
        for score in card.get("localization") or []:
            rows.append(
                {
                    "model": str(card.get("name", zoo_name(kind))),
                    "kind": kind,
                    "accuracy": card.get("accuracy"),
                    "map": str(score.get("name", "")),
                    "pointing game": score.get("pointing"),
                    "energy in box": score.get("energy"),
                    "box area share": score.get("area_share"),
                    "energy ratio": score.get("energy_ratio"),
                    "n": score.get("n"),
                }
            )
    return rows


def filter_rows(rows: Sequence[dict[str, Any]], kinds: Sequence[str], gradcam: bool) -> list[dict[str, Any]]:
    """The rows of ``kinds``, without the Grad-CAM rows unless ``gradcam``."""
    wanted = set(kinds)
    return [r for r in rows if r["kind"] in wanted and (gradcam or not is_gradcam(str(r["map"])))]


def _bar_label(row: dict[str, Any]) -> str:
    return f"{row['model']} · {row['map']}"


def metric_figure(
    rows: Sequence[dict[str, Any]], metric: str, reference: float, reference_text: str, title: str
) -> go.Figure:
    """Horizontal bars of ``metric`` per model and map, best on top, with a reference line.

    Args:
        rows: leaderboard rows (those with a missing value are left out).
        metric: the column to plot.
        reference: x of the vertical reference line.
        reference_text: its annotation.
        title: figure title.
    """
    data = sorted((r for r in rows if r.get(metric) is not None), key=lambda r: float(r[metric]))
    colours = ["#8c8c8c" if is_gradcam(str(r["map"])) else "#d1495b" for r in data]
    fig = go.Figure(
        go.Bar(
            x=[float(r[metric]) for r in data],
            y=[_bar_label(r) for r in data],
            orientation="h",
            marker_color=colours,
            hovertemplate="%{y}<br>" + metric + ": %{x:.3f}<extra></extra>",
        )
    )
    fig.add_vline(
        x=reference,
        line_dash="dash",
        line_color="#333333",
        annotation_text=reference_text,
        annotation_position="top",
    )
    fig.update_layout(
        title=title,
        height=max(260, 26 * len(data) + 110),
        margin={"l": 10, "r": 10, "t": 60, "b": 30},
        xaxis_title=metric,
        yaxis={"automargin": True},
        showlegend=False,
    )
    return fig
