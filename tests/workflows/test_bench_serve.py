"""``bench --serve`` in its quick mode on the session's local Ray: the report's form and what must
hold whatever the machine's speed (every request answered, batches formed under load, the
benchmark's application removed and the session's own left alone). Speed is never asserted."""

from __future__ import annotations

import json

import pytest

from attnviz.workflows import bench_serve

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_small_serve_bench(served_app: object) -> None:
    from ray import serve

    lines: list[str] = []
    report = bench_serve.run_serve_bench(small=True, device="cpu", progress=lines.append)
    assert report.model == "deit_tiny_patch16_224" and report.weights == "random"
    assert [(lv.path, lv.users) for lv in report.levels] == [
        ("in-process", 1),
        ("in-process", 8),
        ("ray-serve", 1),
        ("ray-serve", 8),
    ]
    for lv in report.levels:
        assert lv.requests == 2 * lv.users and lv.images_per_s > 0 and 0 < lv.p50_ms <= lv.p95_ms
        assert lv.images_per_s == pytest.approx(lv.requests / lv.wall_s)
    single, crowd = (lv for lv in report.levels if lv.path == "ray-serve")
    assert single.mean_batch == 1.0 and crowd.mean_batch is not None and crowd.mean_batch > 1.0
    assert set(report.speedup) == {1, 8}
    assert len(lines) == 4 and lines[-1].startswith("Ray Serve, 8 user(s): ")
    text = bench_serve.format_serve_report(report)
    assert "ray-serve" in text and "Ray Serve ÷ in-process throughput: 1 user(s) " in text
    json.dumps(bench_serve.serve_report_to_json(report))
    apps = serve.status().applications
    assert bench_serve.APP_NAME not in apps and str(apps["attnviz"].status).endswith("RUNNING")
