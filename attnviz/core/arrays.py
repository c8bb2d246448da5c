"""The arrays that records hold: read-only, contiguous, and counted once when broadcast.

Every record stores its numpy arrays through :func:`frozen_array`, so a record is immutable down
to its values; :func:`array_nbytes` is what a record's arrays cost in memory.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["array_nbytes", "frozen_array"]


def frozen_array(values: np.ndarray, ndim: tuple[int, ...], what: str) -> np.ndarray:
    """A read-only array of ``values`` with one of the allowed numbers of dimensions.

    Args:
        values: anything ``np.asarray`` takes.
        ndim: the allowed numbers of dimensions.
        what: the field's name for the error message (e.g. ``"SpatialMap.values"``).

    Returns:
        The values, C-contiguous (a copy when needed) and not writeable; a broadcast view (zero
        strides) stays a view, as it is compact already.

    Raises:
        ValueError: when ``values`` has another number of dimensions.
    """
    arr = np.asarray(values)
    if arr.ndim not in ndim:
        raise ValueError(f"{what} must have {' or '.join(map(str, ndim))} dimensions, got {arr.shape}")
    if 0 not in arr.strides:  # a broadcast view (zero strides) stays one: it is compact and read-only
        arr = np.ascontiguousarray(arr)
    arr.setflags(write=False)
    return arr


def array_nbytes(arr: np.ndarray) -> int:
    """Bytes an array holds: a broadcast view counts its data once, not once per repeat."""
    return arr.itemsize * math.prod(n for n, step in zip(arr.shape, arr.strides, strict=True) if step != 0)
