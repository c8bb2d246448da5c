"""CSV tables of an analysis: the export bundle's (``channel_weights.csv``, ``faithfulness.csv``)
and the app's downloads.

The functions return the file's bytes (UTF-8, ``\\n`` line ends), so that the exporter
(:mod:`attnviz.io.export`) and the app's downloads give the same table. Values are written with
``repr(float(v))``, which round-trips every float32 and float64 exactly.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from attnviz.core.faithfulness_records import Faithfulness
from attnviz.core.records import Analysis, ChannelWeights

__all__ = [
    "FAITHFULNESS_COLUMNS",
    "channel_path_names",
    "channel_weights_csv",
    "faithfulness_csv",
    "top5_csv",
]

FAITHFULNESS_COLUMNS = ("map", "layer", "kind", "metric", "fraction", "percentile", "probability", "change")
"""The header of :func:`faithfulness_csv`."""


def channel_path_names(cw: ChannelWeights) -> list[str]:
    """The name of each row a channel-weights record gives in :func:`channel_weights_csv`.

    Args:
        cw: a channel-weights record; ``values`` is ``[C]`` (one gate) or ``[paths, C]``
            (``multipath``, e.g. the branches of selective kernels).

    Returns:
        ``["gate"]`` for ``[C]``; for ``[paths, C]`` the record's ``path_labels`` when there is one
        per path, else ``["path 0", "path 1", ...]``.
    """
    if not cw.multipath:
        return ["gate"]
    paths = cw.values.shape[0]
    if len(cw.path_labels) == paths:
        return [str(label) for label in cw.path_labels]
    return [f"path {i}" for i in range(paths)]


def channel_weights_csv(records: ChannelWeights | Sequence[ChannelWeights]) -> bytes:
    """The channel weights of one analysis (or one record) as the bundle's ``channel_weights.csv``.

    The header is ``block, layer, kind, path, c0 ... c{W-1}`` with ``W`` the most channels of any
    record; then one row per record and path (:func:`channel_path_names`), in the given order,
    holding that path's ``C`` values (a row of a record with fewer channels is shorter).

    Args:
        records: ``analysis.channel_weights`` (every record of one analysis), or a single record.

    Returns:
        The CSV file's UTF-8 bytes; only the header row when ``records`` is empty.

    Raises:
        TypeError: an item is not a :class:`~attnviz.core.records.ChannelWeights`.
    """
    items = [records] if isinstance(records, ChannelWeights) else list(records)
    for i, cw in enumerate(items):
        if not isinstance(cw, ChannelWeights):
            raise TypeError(f"records[{i}] must be a ChannelWeights record, got {type(cw).__name__}")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    width = max((cw.channels for cw in items), default=0)
    writer.writerow(["block", "layer", "kind", "path", *(f"c{i}" for i in range(width))])
    for cw in items:
        rows = cw.values if cw.multipath else cw.values[None, :]
        for path, row in zip(channel_path_names(cw), rows, strict=True):
            writer.writerow([cw.block, cw.layer, cw.kind, path, *(repr(float(v)) for v in row)])
    return buf.getvalue().encode("utf-8")


def top5_csv(analysis: Analysis) -> bytes:
    """The top-5 predictions as CSV: ``rank,class,label,probability``, one row per prediction.

    Args:
        analysis: a classifier's analysis (a detector's or DINO's has no predictions: header only).

    Returns:
        The file's bytes; probabilities written with ``repr``, exactly.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["rank", "class", "label", "probability"])
    for rank, p in enumerate(analysis.top5, start=1):
        writer.writerow([rank, p.index, p.label, repr(p.probability)])
    return buf.getvalue().encode("utf-8")


def faithfulness_csv(result: Faithfulness) -> bytes:
    """Every curve of a :class:`~attnviz.core.faithfulness_records.Faithfulness` as CSV.

    The header is :data:`FAITHFULNESS_COLUMNS`. For each scored map, in order (the random baseline
    last): one ``deletion`` row per step, then one ``insertion`` row per step (``fraction`` of the
    pixels changed, the target's ``probability``); then, when ROAD was measured, one ``road_morf``
    and one ``road_lerf`` row per ``percentile`` with the probability's ``change``. Cells that do not
    apply are empty; a non-finite value is written as ``nan``/``inf`` by ``repr``.

    Args:
        result: from :func:`attnviz.analysis.faithfulness.measure`.

    Returns:
        The file's UTF-8 bytes; only the header row when no map was scored.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(FAITHFULNESS_COLUMNS)
    for score in result.scores:
        head = [score.name, score.layer, score.kind]
        for metric, curve in (("deletion", score.deletion), ("insertion", score.insertion)):
            for fraction, prob in zip(curve.fractions, curve.probabilities, strict=True):
                writer.writerow([*head, metric, repr(float(fraction)), "", repr(float(prob)), ""])
        road = score.road
        if road is None:
            continue
        for metric, changes in (
            ("road_morf", road.most_relevant_first),
            ("road_lerf", road.least_relevant_first),
        ):
            for percentile, change in zip(road.percentiles, changes, strict=True):
                writer.writerow([*head, metric, "", repr(float(percentile)), "", repr(float(change))])
    return buf.getvalue().encode("utf-8")
