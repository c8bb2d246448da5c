"""Statistics of attention distributions shared by the views and the figures that draw them."""

from __future__ import annotations

import numpy as np

__all__ = ["entropy"]


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
