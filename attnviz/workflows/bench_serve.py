"""``python -m attnviz bench --serve``: many users at once, in-process lock vs Ray Serve batching.

Each of ``c`` users (threads) sends single-image requests one after the other, as app sessions do;
for each concurrency level the report gives the throughput (images/s over the level's wall time)
and the p50/p95 latency of a request. Two paths run the same model on the same machine, one after
the other:

- **in-process**: every user calls :func:`attnviz.analyze` on one shared model, which runs one
  request at a time under the model's lock (the app's default);
- **Ray Serve**: every user calls the model's deployment through :class:`attnviz.serving.RayClient`
  (on loopback); its replica batches the requests waiting at that moment into one forward
  (:mod:`attnviz.serving.replica`; the default wait of 20 ms for a batch to fill), so throughput
  grows with the number of users while a single user pays the round trip and that wait. The
  replica gets the machine's CPUs (the ones free in the Ray it joins) and, on CUDA, one GPU, and
  uses as many torch threads as the in-process path.

Native maps only (``gradcam=False``: what a page shows first). A local Ray is started when none is
running, and stopped at the end; the benchmark's application is deleted either way.
"""

from __future__ import annotations

import gc
import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from attnviz.analysis import analyze
from attnviz.backends import default_weights, get_spec, load_model
from attnviz.io.images import load_image
from attnviz.io.samples import list_samples
from attnviz.runtime import as_rgb_array, resolve_device
from attnviz.workflows.bench_measuring import device_name

__all__ = [
    "APP_NAME",
    "ServeBenchReport",
    "ServeLevel",
    "format_serve_report",
    "run_serve_bench",
    "serve_report_to_json",
]

APP_NAME = "attnviz_bench"
"""The benchmark's Serve application (next to, never in place of, a running ``attnviz`` one)."""

DEFAULT_MODEL = "deit_small_patch16_224"
SMALL_MODEL = "deit_tiny_patch16_224"


@dataclass(frozen=True)
class ServeLevel:
    """One path at one concurrency.

    Attributes:
        path: ``"in-process"`` or ``"ray-serve"``.
        users: concurrent users (threads), each sending requests one after the other.
        requests: requests answered in the level.
        wall_s: the level's wall time.
        images_per_s: ``requests / wall_s``.
        p50_ms, p95_ms: request latency percentiles.
        mean_batch: Ray Serve: mean images per forward the replica ran in the level; else None.
    """

    path: str
    users: int
    requests: int
    wall_s: float
    images_per_s: float
    p50_ms: float
    p95_ms: float
    mean_batch: float | None = None


@dataclass(frozen=True)
class ServeBenchReport:
    """The whole ``bench --serve`` run; ``speedup`` is Ray Serve's throughput ÷ in-process, per
    concurrency."""

    model: str
    weights: str
    device: str
    device_name: str
    cpus: int
    torch_threads: int
    max_batch_size: int
    levels: tuple[ServeLevel, ...]
    speedup: dict[int, float] = field(default_factory=dict)


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def _level(path: str, users: int, rounds: int, call: Callable[[int], object]) -> tuple[float, list[float]]:
    """``users`` threads, each calling ``call(i)`` ``rounds`` times; wall time and latencies (ms)."""
    latencies: list[list[float]] = [[] for _ in range(users)]
    failures: list[BaseException] = []
    start = threading.Barrier(users + 1)

    def user(u: int) -> None:
        start.wait()
        for r in range(rounds):
            t0 = time.perf_counter()
            try:
                call(u * rounds + r)
            except BaseException as err:  # reported after the level, on the calling thread
                failures.append(err)
                return
            latencies[u].append((time.perf_counter() - t0) * 1000.0)

    threads = [
        threading.Thread(target=user, args=(u,), name=f"attnviz-bench-{path}-{u}") for u in range(users)
    ]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if failures:
        raise failures[0]
    return wall, [x for per_user in latencies for x in per_user]


def _result(path: str, users: int, wall: float, lat: list[float], batch: float | None = None) -> ServeLevel:
    return ServeLevel(
        path, users, len(lat), wall, len(lat) / wall, _percentile(lat, 50), _percentile(lat, 95), batch
    )


def _in_process(
    name: str,
    weights: str,
    dev: torch.device,
    images: list[np.ndarray],
    concurrency: Sequence[int],
    rounds: int,
    say: Callable[[str], None],
) -> list[ServeLevel]:
    """The in-process path: every user on one shared model, one request at a time under its lock."""
    loaded = load_model(name, weights=weights, device=dev)
    analyze(loaded, [images[0]], gradcam=False)  # warm-up
    levels = []
    for users in concurrency:
        wall, lat = _level("in-process", users, rounds, lambda i: analyze(loaded, [images[i]], gradcam=False))
        levels.append(_result("in-process", users, wall, lat))
        say(f"in-process, {users} user(s): {levels[-1].images_per_s:.1f} images/s")
    return levels  # the model goes with this frame


def run_serve_bench(
    *,
    model: str | None = None,
    concurrency: Sequence[int] = (1, 8, 32),
    rounds: int = 4,
    device: str | torch.device = "auto",
    small: bool = False,
    max_batch_size: int = 32,
    progress: Callable[[str], None] | None = None,
) -> ServeBenchReport:
    """Measure both paths at every concurrency (see the module docstring).

    Args:
        model: the model (default: DeiT-small; DeiT-tiny with ``small``).
        concurrency: the numbers of concurrent users.
        rounds: requests per user and level.
        device: where both paths run.
        small: quick mode (CI): DeiT-tiny, 1 and 8 users, 2 rounds.
        max_batch_size: the replica's largest batch.
        progress: called with a line per level.
    """
    import ray
    from ray import serve

    from attnviz.serving import ServeSettings, connect
    from attnviz.serving.app import deploy

    if small:
        model, concurrency, rounds = model or SMALL_MODEL, (1, 8), 2
    name = model or DEFAULT_MODEL
    spec = get_spec(name)
    weights = default_weights(spec)
    dev = resolve_device(device)
    say = progress or (lambda line: None)
    paths = list_samples()
    if not paths:
        raise ValueError("bench --serve needs the sample images in assets/samples")
    pool = [as_rgb_array(load_image(p)) for p in paths]
    images = [pool[i % len(pool)] for i in range(max(concurrency) * rounds)]
    levels: list[ServeLevel] = []

    levels += _in_process(name, weights, dev, images, concurrency, rounds, say)
    gc.collect()
    threads = torch.get_num_threads()

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        free = ray.available_resources()
        cpus = max(0.1, min(float(os.cpu_count() or 1), free.get("CPU", 1.0)))  # the free ones
        share: dict[str, Any] = {"name": name, "cpus": cpus}
        if dev.type == "cuda":
            share["gpus"] = 1
        settings = ServeSettings.from_args(
            {
                "models": [share],
                "device": str(dev),
                "preload": [weights],
                "max_batch_size": max_batch_size,
                "threads": threads,
            }
        )
        deploy(settings, name=APP_NAME, route_prefix=f"/{APP_NAME}")
        client = connect(app_name=APP_NAME)
        client.analyze(name, [images[0]], weights=weights, gradcam=False)  # warm-up
        for users in concurrency:
            before = len(client.describe(name)["batch_sizes"])

            def served(i: int) -> object:
                return client.analyze(name, [images[i]], weights=weights, gradcam=False)

            wall, lat = _level("ray-serve", users, rounds, served)
            sizes = client.describe(name)["batch_sizes"][before:]
            levels.append(_result("ray-serve", users, wall, lat, statistics.fmean(sizes) if sizes else None))
            say(f"Ray Serve, {users} user(s): {levels[-1].images_per_s:.1f} images/s")
    finally:
        if serve.status().applications.get(APP_NAME) is not None:
            serve.delete(APP_NAME)
        if started:
            serve.shutdown()
            ray.shutdown()

    local = {lv.users: lv.images_per_s for lv in levels if lv.path == "in-process"}
    speedup = {lv.users: lv.images_per_s / local[lv.users] for lv in levels if lv.path == "ray-serve"}
    return ServeBenchReport(
        name,
        weights,
        str(dev),
        device_name(dev),
        os.cpu_count() or 1,
        threads,
        max_batch_size,
        tuple(levels),
        speedup,
    )


def serve_report_to_json(report: ServeBenchReport) -> dict[str, Any]:
    """The report as plain JSON data."""
    data = asdict(report)
    data["speedup"] = {str(k): v for k, v in report.speedup.items()}
    return data


def format_serve_report(report: ServeBenchReport) -> str:
    """The report as text: one row per path and concurrency."""
    lines = [
        f"bench --serve: {report.model} ({report.weights} weights), native maps, single-image requests",
        f"device: {report.device_name} ({report.device}); {report.cpus} CPU(s), {report.torch_threads} torch "
        f"thread(s) per path; Ray Serve batches up to {report.max_batch_size}",
        "",
        f"{'path':<11} {'users':>5} {'requests':>8} {'images/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'batch':>6}",
    ]
    for lv in report.levels:
        batch = f"{lv.mean_batch:.1f}" if lv.mean_batch is not None else "-"
        lines.append(
            f"{lv.path:<11} {lv.users:>5} {lv.requests:>8} {lv.images_per_s:>9.1f} {lv.p50_ms:>8.0f} "
            f"{lv.p95_ms:>8.0f} {batch:>6}"
        )
    lines.append("")
    lines.append(
        "Ray Serve ÷ in-process throughput: "
        + ", ".join(f"{users} user(s) {x:.2f}x" for users, x in report.speedup.items())
    )
    return "\n".join(lines)
