"""How the benchmark (:mod:`attnviz.workflows.bench`) measures: wall-time medians, peak memory, the device.

Times are medians of repeated runs after warm-up, with the device synchronised around each run;
:func:`interleaved_ms` runs several functions round-robin so that their ratios hold up on a busy
machine. Memory is the process's RSS high-water mark (reset per figure where Linux allows) and
CUDA's max allocated.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = [
    "WARMUP",
    "cuda_peak_mib",
    "device_name",
    "interleaved_ms",
    "median_ms",
    "peak_rss_mib",
    "reset_cuda_peak",
    "reset_peak_rss",
]

WARMUP = 1
"""Untimed runs before the timed ones."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], object], repeats: int, device: torch.device, warmup: int = WARMUP) -> float:
    """Median wall time of ``fn()`` in ms over ``repeats`` runs after ``warmup`` runs."""
    return interleaved_ms({"fn": fn}, repeats, device, warmup)["fn"]


def interleaved_ms(
    fns: dict[str, Callable[[], object]], repeats: int, device: torch.device, warmup: int = WARMUP
) -> dict[str, float]:
    """Median wall time in ms of each of ``fns``, run round-robin so that they share the machine's
    load: a ratio of two medians then holds up on a busy machine, where absolute figures do not."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[key].append((time.perf_counter() - start) * 1e3)
    return {key: statistics.median(values) for key, values in times.items()}


def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the RSS high-water mark (Linux ``clear_refs``); False where it cannot be reset."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """The process's RSS high-water mark in MiB (``VmHWM``; ``ru_maxrss`` where /proc is missing)."""
    kib = _proc_status_kib("VmHWM")
    if kib is None:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        if platform.system() == "Darwin":
            kib //= 1024
    return kib / 1024


def reset_cuda_peak(device: torch.device) -> None:
    """Resets CUDA's max-allocated counter of ``device``; nothing off CUDA."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def cuda_peak_mib(device: torch.device) -> float | None:
    """CUDA's max allocated memory on ``device`` in MiB since the last reset; None off CUDA."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (``/proc/cpuinfo``, else what ``platform`` says)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
