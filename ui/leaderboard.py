"""The Leaderboard page's logic (``pages/leaderboard.py`` lays the page out): the rows of the zoo's
model cards, their filters and charts, all pure functions of the cards.

The cards are the JSON files next to the committed weights (``assets/zoo/zoo_<kind>.json``, written
by ``python -m attnviz zoo train``), read with :func:`attnviz.backends.zoo.read_card`. Their
``"localization"`` scores each map against the object's box; their ``"faithfulness"``
(:func:`attnviz.workflows.zoo_training.evaluate_faithfulness`) says whether the decision rests on what
the map shows, next to a random map's floor and the object box's reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from attnviz.backends import zoo
from attnviz.layers.zoo_net import ZOO_KINDS, zoo_name

__all__ = [
    "FAITHFULNESS",
    "FAITHFUL_COLUMNS",
    "KINDS_KEY",
    "MAPS_KEY",
    "MAP_CHOICES",
    "METRICS",
    "NO_CARDS",
    "SCATTER_X",
    "SCATTER_X_KEY",
    "card_notes",
    "faithfulness_figure",
    "faithfulness_notes",
    "filter_rows",
    "is_gradcam",
    "leaderboard_rows",
    "metric_figure",
    "read_cards",
    "reference_rows",
]

KINDS_KEY = "leaderboard_kinds"
MAPS_KEY = "leaderboard_maps"
SCATTER_X_KEY = "leaderboard_scatter_x"

# The card's faithfulness figure of each column.
FAITHFUL_COLUMNS = {
    "deletion AUC": "deletion_auc",
    "insertion AUC": "insertion_auc",
    "ROAD": "road_combined",
}

# The x axes of the localisation-vs-faithfulness chart: column -> axis title.
SCATTER_X = {
    "energy ratio": "energy in box / box area share (× uniform)",
    "pointing game": "pointing game (share of scenes, 0–1)",
}

MAP_CHOICES = ("include Grad-CAM", "attention maps only")

METRICS = """
**Pointing game**: the share of held-out scenes where the map's maximum falls inside the object's
box. **Energy in box**: the share of the map's total mass (after upsampling it to the image) that lies
inside the box, averaged over the scenes; **box area share** is the box's share of the image, which is
what a uniform map would score. **Energy ratio** = energy in box / box area share: 1 means the map
is no better than uniform, 3 means it is three times as concentrated on the object.
"""

FAITHFULNESS = """
**How to read the faithfulness columns** (does the decision rest on what the map shows? measured on
the first held-out scenes, following the scene's true class): **deletion AUC**, the area under the
class probability as the map's most relevant pixels are greyed out first (**lower is better**);
**insertion AUC**, the area as they are put back first onto a blurred copy (**higher is better**);
**ROAD**, the probability kept when the least relevant pixels are imputed minus when the most
relevant are, halved (**higher is better**). A random map scores the **floor** (below the table);
**insertion − random** is the map's insertion AUC minus the random map's on the same scenes, so
0 means no better than chance. The object's true box, used as a map, is a reference.
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
        energy ratio, n (held-out scenes), and the faithfulness columns: deletion AUC, insertion
        AUC, ROAD and insertion − random (None where the card has no faithfulness).
    """
    rows = []
    for kind, card in cards.items():
        faithful = (card.get("faithfulness") or {}).get("maps") or {}
        floor = (card.get("faithfulness") or {}).get("random")
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
                    **_faithful_cells(faithful.get(str(score.get("name", ""))), floor),
                }
            )
    return rows


def _faithful_cells(figures: dict | None, floor: dict | None) -> dict[str, float | None]:
    """The faithfulness columns of one map (None where the card has no figure)."""
    figures = figures or {}
    cells: dict[str, float | None] = {col: figures.get(key) for col, key in FAITHFUL_COLUMNS.items()}
    insertion, base = figures.get("insertion_auc"), (floor or {}).get("insertion_auc")
    cells["insertion − random"] = None if insertion is None or base is None else insertion - base
    return cells


def reference_rows(cards: dict[str, dict]) -> list[dict[str, Any]]:
    """Per model with faithfulness, the random map's figures (the floor) and the object box's (a
    reference), as rows with the faithfulness columns."""
    rows = []
    for kind, card in cards.items():
        faithful = card.get("faithfulness") or {}
        for key, label in (("random", "random map (floor)"), ("object_box", "object box (reference)")):
            if faithful.get(key):
                rows.append(
                    {
                        "model": str(card.get("name", zoo_name(kind))),
                        "kind": kind,
                        "map": label,
                        **{col: faithful[key].get(k) for col, k in FAITHFUL_COLUMNS.items()},
                        "scenes": faithful[key].get("n"),
                    }
                )
    return rows


def faithfulness_notes(cards: dict[str, dict]) -> list[str]:
    """The scenes and settings of the cards' faithfulness, or which cards have none."""
    notes = []
    missing = [zoo_name(k) for k, card in cards.items() if not card.get("faithfulness")]
    if missing:
        notes.append(
            f"No faithfulness in the card of: {', '.join(missing)}; `python -m attnviz zoo eval` measures it."
        )
    settings = {
        (f.get("n"), f.get("n_road"), f.get("steps"), tuple(f.get("road_percentiles") or ()))
        for f in (card.get("faithfulness") for card in cards.values())
        if f
    }
    if len(settings) == 1:
        n, n_road, steps, percentiles = next(iter(settings))
        notes.append(
            f"Faithfulness: deletion and insertion in {steps} steps on the first {n} held-out scenes, "
            f"ROAD (percentiles {', '.join(map(str, percentiles))}) on the first {n_road}; target: the "
            "scene's true class."
        )
    return notes


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


def faithfulness_figure(rows: Sequence[dict[str, Any]], x: str = "energy ratio") -> go.Figure:
    """Localisation against faithfulness: one point per map (x: ``x``, y: insertion − random),
    one colour per module kind, Grad-CAM as crosses, each point labelled with its kind.

    Args:
        rows: leaderboard rows (those without both values are left out).
        x: a key of :data:`SCATTER_X`.

    Raises:
        ValueError: an unknown ``x``.
    """
    if x not in SCATTER_X:
        raise ValueError(f"x must be one of {list(SCATTER_X)}, got {x!r}")
    data = [r for r in rows if r.get(x) is not None and r.get("insertion − random") is not None]
    fig = go.Figure()
    for kind in dict.fromkeys(r["kind"] for r in data):
        mine = [r for r in data if r["kind"] == kind]
        fig.add_trace(
            go.Scatter(
                x=[float(r[x]) for r in mine],
                y=[float(r["insertion − random"]) for r in mine],
                mode="markers+text",
                name=kind,
                text=[kind for _ in mine],
                textposition="top center",
                customdata=[_bar_label(r) for r in mine],
                marker={
                    "size": 11,
                    "symbol": ["x" if is_gradcam(str(r["map"])) else "circle" for r in mine],
                    "line": {"width": 1, "color": "#333333"},
                },
                hovertemplate="%{customdata}<br>" + x + ": %{x:.3f}<br>insertion − random: %{y:+.3f}"
                "<extra></extra>",
            )
        )
    fig.add_hline(y=0.0, line_dash="dash", line_color="#333333", annotation_text="random map (floor)")
    if x == "energy ratio":
        fig.add_vline(x=1.0, line_dash="dot", line_color="#777777", annotation_text="uniform")
    fig.update_layout(
        title="Localisation vs faithfulness, one point per map (circles: attention maps; crosses: Grad-CAM)",
        height=520,
        margin={"l": 10, "r": 10, "t": 60, "b": 40},
        xaxis_title=SCATTER_X[x],
        yaxis_title="insertion AUC − random map's (probability × pixel fraction)",
        legend_title_text="module",
        showlegend=True,
    )
    return fig
