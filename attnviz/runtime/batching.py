"""Running batches on a shared model: the GPU out-of-memory fallback and autocast precisions.

A batch that runs out of GPU memory is run again in halves, down to one image, without moving the
model (other sessions may share it); the results carry a note saying how they were run."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import Protocol, TypeVar

import torch

from attnviz.core.errors import GPUMemoryError

__all__ = ["AUTOCAST_DTYPES", "HasSize", "Runner", "run_in_batches"]

log = logging.getLogger(__name__)


class HasSize(Protocol):
    """A batch's result: how many images it holds."""

    @property
    def size(self) -> int: ...


_Item = TypeVar("_Item")


_Sized = TypeVar("_Sized", bound=HasSize)


#: ``analyze(autocast=...)`` choices and their dtypes.
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _attempt(forward: Callable[[list[_Item]], _Sized], pil: list[_Item]) -> tuple[_Sized | None, str]:
    """``(forward(pil), "")``, or ``(None, message)`` when the GPU ran out of memory.

    Returning from the handler drops the exception and its traceback, whose frames hold the
    failed batch's GPU tensors, before the caller frees the cache.
    """
    try:
        return forward(pil), ""
    except torch.cuda.OutOfMemoryError as exc:  # torch.OutOfMemoryError, defined without CUDA too
        return None, str(exc)


def _free_gpu_memory() -> None:
    """Give the failed run's cached GPU blocks back, so that a smaller batch can use them."""
    gc.collect()  # cycles (e.g. Grad-CAM's hook objects) may still hold tensors of the failed run
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _free_mib(device: torch.device) -> int | None:
    """Free memory of a CUDA ``device`` in MiB, or None (another device, or not readable)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    try:
        free, _total = torch.cuda.mem_get_info(device)
    except RuntimeError:
        return None
    return int(free) // 2**20


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _fallback_note(total: int, sizes: list[int]) -> str:
    """The note for results of a run whose batch of ``total`` images was split into ``sizes``."""
    distinct = [str(n) for n in sorted(set(sizes), reverse=True)]
    if distinct == ["1"]:
        how = "one at a time"
    else:
        listed = f"{', '.join(distinct[:-1])} and {distinct[-1]}" if len(distinct) > 1 else distinct[0]
        how = f"in batches of {listed}"
    return f"GPU memory ran out for a batch of {_plural(total, 'image')}; they were analysed {how}."


class Runner(Protocol):
    """What the memory fallback names in its messages: a LoadedModel or a DetrBundle."""

    @property
    def name(self) -> str: ...

    @property
    def device(self) -> torch.device: ...


def run_in_batches(
    model: Runner, pil: list[_Item], forward: Callable[[list[_Item]], _Sized]
) -> tuple[list[_Sized], str | None]:
    """Run all of ``pil`` (images, or anything one forward takes per image) through ``forward``,
    halving batches that run out of GPU memory.

    The model stays where it is (it may be shared with other sessions); only the batch shrinks.

    Returns:
        The batches in input order, and the note for the user when the batch had to be split.

    Raises:
        GPUMemoryError: a single image still ran out of memory.
    """
    done: list[_Sized] = []
    too_big: int | None = None  # smallest batch size that ran out of memory
    todo = [pil]  # batches still to run, the next one last
    while todo:
        chunk = todo.pop()
        if too_big is None or len(chunk) < too_big:
            result, message = _attempt(forward, chunk)
            if result is not None:
                done.append(result)
                continue
            too_big = len(chunk)
            _free_gpu_memory()
            log.warning("%s ran out of GPU memory for %d image(s): %s", model.name, len(chunk), message)
        if len(chunk) == 1:
            free = _free_mib(model.device)
            left = f" ({free} MiB free)" if free is not None else ""
            raise GPUMemoryError(
                f"{model.name} ran out of GPU memory even for one image on {model.device}{left}: "
                "choose the CPU device or a smaller model, or try again when the GPU is less busy.",
                device=str(model.device),
                free_mib=free,
            )
        half = (len(chunk) + 1) // 2
        todo += [chunk[half:], chunk[:half]]
    if too_big is None:
        return done, None
    return done, _fallback_note(len(pil), [b.size for b in done])
