"""Image coercion: what a model takes in (RGB PIL) and what it saw (uint8 pixels)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

__all__ = ["as_pil", "display_images"]


def as_pil(image: Image.Image | np.ndarray) -> Image.Image:
    """An RGB PIL image from a PIL image of any mode or an ``[H, W, 3]`` uint8 array.

    Raises:
        ValueError: an array of another shape or dtype.
    """
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"images must be PIL images or [H, W, 3] uint8 arrays, got {arr.shape} {arr.dtype}")
    return Image.fromarray(arr, "RGB")


def display_images(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo the normalisation: [B, 3, H, W] -> [B, H, W, 3] uint8, what the model saw."""
    m = torch.tensor(mean, device=batch.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=batch.device).view(1, 3, 1, 1)
    pixels = (batch.float() * s + m).clamp(0, 1).mul(255).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()
