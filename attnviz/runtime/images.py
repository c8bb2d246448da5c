"""Image coercion: what a model takes in (RGB PIL) and what it saw (uint8 pixels).

The one place that turns "a PIL image or an ``[H, W, 3]`` uint8 array" into RGB pixels: the
renderers take :func:`as_rgb_array` / :func:`as_rgb_image` (a precise error per fault), the model
runners :func:`as_pil` (one error naming what images must be). Both check arrays with the same
rules.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

__all__ = ["as_pil", "as_rgb_array", "as_rgb_image", "display_images"]


def _array_fault(arr: np.ndarray) -> ValueError | TypeError | None:
    """Why ``arr`` is not an ``[H, W, 3]`` uint8 array (shape first, then dtype), or None if it is."""
    if arr.ndim != 3 or arr.shape[-1] != 3:
        return ValueError(f"image must be an RGB array [H, W, 3], got shape {arr.shape}")
    if arr.dtype != np.uint8:
        return TypeError(f"image array must be uint8, got dtype {arr.dtype}")
    return None


def as_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """The image as ``[H, W, 3]`` uint8 pixels.

    Args:
        image: a PIL image of any mode (converted to RGB) or an ``[H, W, 3]`` uint8 array
            (returned as it is, not a copy).

    Returns:
        ``[H, W, 3]`` uint8.

    Raises:
        TypeError: ``image`` is neither a PIL image nor a numpy array, or the array is not uint8.
        ValueError: the array is not ``[H, W, 3]``, or it is empty.
    """
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a PIL image or a numpy array, got {type(image).__name__}")
    fault = _array_fault(image)
    if fault is not None:
        raise fault
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image must not be empty, got shape {image.shape}")
    return image


def as_rgb_image(image: Image.Image | np.ndarray) -> Image.Image:
    """The image as an RGB ``PIL.Image.Image``: an RGB PIL image itself (not a copy), another mode
    converted, an array checked as in :func:`as_rgb_array`.

    Raises:
        TypeError, ValueError: as :func:`as_rgb_array`.
    """
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    return Image.fromarray(as_rgb_array(image))


def as_pil(image: Image.Image | np.ndarray) -> Image.Image:
    """An RGB PIL image (a new one) from a PIL image of any mode or an ``[H, W, 3]`` uint8 array.

    Anything ``np.asarray`` takes is accepted as an array, checked as in :func:`as_rgb_array`
    (empty arrays excepted: they give an empty image).

    Raises:
        ValueError: an array of another shape or dtype.
    """
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    arr = np.asarray(image)
    if _array_fault(arr) is not None:
        raise ValueError(f"images must be PIL images or [H, W, 3] uint8 arrays, got {arr.shape} {arr.dtype}")
    return Image.fromarray(arr, "RGB")


def display_images(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo the normalisation: [B, 3, H, W] -> [B, H, W, 3] uint8, what the model saw."""
    m = torch.tensor(mean, device=batch.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=batch.device).view(1, 3, 1, 1)
    pixels = (batch.float() * s + m).clamp(0, 1).mul(255).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()
