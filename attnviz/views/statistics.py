"""Statistics of attention distributions shared by the views and the figures that draw them.

The Shannon entropy of attention rows (:func:`entropy`), and the summary of one block's channel
weights that the gate-statistics figure shows (:func:`gate_stats`, with its normalised entropy
:func:`normalized_entropy`).
"""

from __future__ import annotations

import math

import numpy as np

from attnviz.core.records import ChannelWeights

__all__ = ["entropy", "gate_stats", "normalized_entropy"]


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats of distributions along ``axis``, with ``0 log 0 = 0``.

    Args:
        p: probabilities (each slice along ``axis`` sums to 1, or to less where mass is elsewhere).
        axis: the axis the distributions run along.

    Returns:
        ``p`` without ``axis``: one entropy per distribution, float64.
    """
    p = np.asarray(p, dtype=np.float64)
    logp = np.log(np.where(p > 0, p, 1.0))
    return -(p * logp).sum(axis=axis)


def _unit(x: float) -> float:
    # Rounding can leave a uniform distribution a few ulps above 1.
    return min(max(x, 0.0), 1.0)


def normalized_entropy(values: np.ndarray) -> float:
    """Normalised Shannon entropy in [0, 1] of channel weights ``[C]`` or path weights ``[paths, C]``.

    - ``[C]``: with ``p = v / v.sum()`` over the C channels, ``-sum_c p_c log p_c / log C``.
      1 means every channel is weighted equally, near 0 that the weight sits on a few channels.
    - ``[paths, C]``: for every channel c, the entropy over paths of ``p[:, c] = v[:, c] / v[:, c].sum()``
      (a no-op for softmax weights) divided by ``log(paths)``, then the mean over channels.
      1 means every channel mixes its paths equally, 0 that every channel picks a single path.

    Args:
        values: ``[C]`` or ``[paths, C]`` non-negative weights.

    Returns:
        The entropy; 1 by convention for a single channel (``[C]``) or a single path
        (``[paths, C]``); NaN when a value is negative or non-finite, or a distribution sums to 0.
    """
    v = np.asarray(values, dtype=np.float64)
    if not np.isfinite(v).all() or (v < 0).any():
        return math.nan
    if v.ndim == 1:
        n = v.shape[0]
        total = v.sum()
        if n <= 1:
            return 1.0
        if total <= 0:
            return math.nan
        return _unit(float(entropy(v / total, axis=0)) / math.log(n))
    paths = v.shape[0]
    if paths <= 1:
        return 1.0
    totals = v.sum(axis=0, keepdims=True)
    if (totals <= 0).any():
        return math.nan
    return _unit(float(np.mean(entropy(v / totals, axis=0))) / math.log(paths))


def gate_stats(cw: ChannelWeights) -> dict[str, float]:
    """Summary statistics of one block's channel weights.

    ``mean``, ``std`` (population, ``ddof=0``), ``min`` and ``max`` are taken over every entry
    of ``cw.values``. ``entropy`` is a normalised Shannon entropy in [0, 1]:

    - ``[C]`` gates: with ``p = v / v.sum()`` over the C channels,
      ``entropy = -sum_c p_c log p_c / log C``. 1 means every channel is weighted equally,
      values near 0 mean the weight is concentrated on a few channels.
    - ``[paths, C]`` path weights: for every channel c, the entropy over paths of
      ``p[:, c] = v[:, c] / v[:, c].sum()`` (a no-op for softmax weights) divided by ``log(paths)``,
      then the mean over channels. 1 means every channel mixes its paths equally, 0 means
      every channel picks a single path.

    With a single channel (``[C]``) or a single path (``[paths, C]``) the entropy is 1 by
    convention. It is NaN when a value is negative or non-finite, or when a distribution sums to 0
    (see :func:`normalized_entropy`).

    Args:
        cw: the record.

    Returns:
        ``{"mean", "std", "min", "max", "entropy"}`` as Python floats.

    Raises:
        TypeError: ``cw`` is not a ``ChannelWeights``.
    """
    if not isinstance(cw, ChannelWeights):
        raise TypeError(f"gate_stats expects a ChannelWeights record, got {type(cw).__name__}")
    v = np.asarray(cw.values, dtype=np.float64)
    if v.size == 0:
        nan = math.nan
        return {"mean": nan, "std": nan, "min": nan, "max": nan, "entropy": nan}
    return {
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "max": float(v.max()),
        "entropy": normalized_entropy(v),
    }
