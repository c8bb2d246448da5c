"""Runtime: where and how a model runs, shared by every backend and runner.

Owns device resolution (:mod:`.device`), the batched run with the GPU out-of-memory fallback and
the autocast precisions (:mod:`.batching`), and image coercion (:mod:`.images`). It may import
:mod:`attnviz.core` only (no models, no capture).
"""

from attnviz.runtime.batching import AUTOCAST_DTYPES, run_in_batches
from attnviz.runtime.device import resolve_device
from attnviz.runtime.images import as_pil, as_rgb_array, as_rgb_image, display_images

__all__ = [
    "AUTOCAST_DTYPES",
    "as_pil",
    "as_rgb_array",
    "as_rgb_image",
    "display_images",
    "resolve_device",
    "run_in_batches",
]
