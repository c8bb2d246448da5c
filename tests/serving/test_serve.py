"""Models on Ray Serve (the session's local Ray, deployed once: ``served_app`` in tests/conftest.py).

Served results equal in-process results for a zoo CNN, a ViT and a deformable model; concurrent
requests share forwards and each gets its own image's result; errors come back as the library's; a
replica that dies mid-request is retried; the plain HTTP route answers with the export bundle."""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.error
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import SERVE_PORT, SERVED_MODELS, assert_same, make_image

import attnviz
from attnviz.serving import RayClient
from attnviz.serving.client import RETRIES

pytestmark = [pytest.mark.ray, pytest.mark.slow]

WEIGHTS = {"zoo_cbam": "pretrained", "deit_tiny_patch16_224": "random", "zoo_deform": "pretrained"}


def local(model: str, images: list, **kwargs: object) -> list[attnviz.Analysis]:
    loaded = attnviz.load_model(model, weights=WEIGHTS[model], device="cpu")
    return [attnviz.compact(a) for a in attnviz.analyze(loaded, images, **kwargs)]


@pytest.mark.parametrize("model", SERVED_MODELS)
def test_served_results_equal_in_process_results(served_app: RayClient, model: str) -> None:
    images = [make_image(11), make_image(12, (200, 300))]
    served = served_app.analyze(model, images, weights=WEIGHTS[model], gradcam=True)
    refs = local(model, images, gradcam=True)
    for s, r in zip(served, refs, strict=True):
        assert_same(s, r)
    assert all(s.gradcam is not None for s in served)  # every classifier gets its Grad-CAM baseline
    kinds = {type(r).__name__ for r in served[0].records}
    expected = {
        "zoo_cbam": "SpatialMap",
        "deit_tiny_patch16_224": "TokenAttention",
        "zoo_deform": "SamplingPoints",
    }
    assert expected[model] in kinds
    assert (
        served_app.categories(model, WEIGHTS[model])
        == attnviz.load_model(model, weights=WEIGHTS[model], device="cpu").categories
    )


def test_concurrent_requests_share_forwards_and_keep_their_own_results(served_app: RayClient) -> None:
    """16 users at once: the replica batches them (batch sizes > 1), and each user gets the result of
    their own image (all different), not a neighbour's."""
    images = [make_image(100 + i, (180 + 4 * i, 240)) for i in range(16)]
    refs = local("zoo_cbam", images, gradcam=False)
    before = len(served_app.describe("zoo_cbam")["batch_sizes"])
    start = threading.Barrier(16)

    def one_user(i: int) -> attnviz.Analysis:
        start.wait()
        [result] = served_app.analyze("zoo_cbam", [images[i]], gradcam=False)
        return result

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one_user, range(16)))
    sizes = served_app.describe("zoo_cbam")["batch_sizes"][before:]
    assert sum(sizes) == 16 and max(sizes) > 1, sizes
    for result, ref in zip(results, refs, strict=True):
        assert_same(result, ref)
    crops = {r.input_image.tobytes() for r in results}
    assert len(crops) == 16  # 16 different images, 16 different results


def test_gradcam_of_another_class_on_the_cluster(served_app: RayClient) -> None:
    image = make_image(21)
    [first] = served_app.analyze("zoo_cbam", [image], gradcam=False)
    other = first.top5[2].index
    [served] = served_app.add_gradcam("zoo_cbam", [first], [image], targets=[other])
    loaded = attnviz.load_model("zoo_cbam", device="cpu")
    [ref] = attnviz.add_gradcam(loaded, [first], [image], targets=[other])
    assert served.gradcam is not None and served.gradcam.target == other
    np.testing.assert_allclose(served.gradcam.values, ref.gradcam.values, atol=1e-5)


def test_errors_come_back_as_the_librarys(served_app: RayClient) -> None:
    with pytest.raises(attnviz.ServingError) as caught:
        served_app.analyze("resnet50", [make_image(1)])
    served = "deit_tiny_patch16_224, zoo_cbam, zoo_deform"
    assert str(caught.value) == f"resnet50 is not served by the connected Ray cluster (served: {served})."
    # no ImageNet weights on this machine: the replica's own message, as in-process
    with pytest.raises(attnviz.WeightsUnavailableError) as missing:
        served_app.analyze("deit_tiny_patch16_224", [make_image(1)], weights="pretrained")
    assert missing.value.summary.startswith("The pretrained weights of deit_tiny_patch16_224 are not")
    with pytest.raises(attnviz.ServingError, match="pretrained or random weights, not '/etc/passwd'"):
        served_app.analyze("zoo_cbam", [make_image(1)], weights="/etc/passwd")
    [first] = served_app.analyze("zoo_cbam", [make_image(1)], gradcam=False)
    with pytest.raises(attnviz.ServingError) as bad_target:
        served_app.add_gradcam("zoo_cbam", [first], [make_image(1)], targets=[999])
    assert str(bad_target.value).startswith("zoo_cbam cannot answer that request: ")
    assert "999" in str(bad_target.value)
    # a replica refuses what is not an image (a client that skipped the checks)
    answer = served_app.handle("zoo_cbam").analyze.remote(np.zeros((4, 4), np.float32)).result()
    assert isinstance(answer, attnviz.ServingError) and "not an RGB image" in str(answer)


class _Dead:
    """A deployment method whose first ``failures`` calls end with the replica's death."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, 0

    def remote(self, *args: object) -> _Dead:
        self.calls += 1
        return self

    def result(self, timeout_s: float | None = None) -> str:
        from ray.exceptions import ActorDiedError

        if self.calls <= self.failures:
            raise ActorDiedError()
        return "answer"


class _Handle:
    def __init__(self, method: _Dead) -> None:
        self.categories = method


def test_a_request_whose_replica_died_is_retried_then_reported(served_app: RayClient, monkeypatch) -> None:
    method = _Dead(failures=RETRIES)
    monkeypatch.setattr(served_app, "handle", lambda model: _Handle(method))
    assert served_app._call("zoo_cbam", "categories", [("x",)]) == ["answer"] and method.calls == 2
    method = _Dead(failures=RETRIES + 1)
    monkeypatch.setattr(served_app, "handle", lambda model: _Handle(method))
    with pytest.raises(attnviz.ServingError) as caught:
        served_app._call("zoo_cbam", "categories", [("x",)])
    assert str(caught.value).startswith("The replica serving zoo_cbam stopped while answering")


def test_a_killed_replica_is_replaced_and_the_request_answered(served_app: RayClient) -> None:
    """A real replica death: the request sent right after is retried and answered by the new one."""
    import ray

    [before] = served_app.analyze("zoo_deform", [make_image(5)], gradcam=False)
    names = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if "SERVE_REPLICA" in a["name"] and "zoo_deform" in a["name"]
    ]
    assert names
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
    start = time.monotonic()
    [after] = served_app.analyze("zoo_deform", [make_image(5)], gradcam=False)
    assert_same(after, before)
    assert time.monotonic() - start < 120


# --------------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------------

URL = f"http://127.0.0.1:{SERVE_PORT}"


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    make_image(seed).save(buf, "PNG")
    return buf.getvalue()


def post(query: str, body: bytes, content_type: str = "application/octet-stream") -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"{URL}/analyze?{query}", data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_http_lists_the_models(served_app: RayClient) -> None:
    with urllib.request.urlopen(f"{URL}/", timeout=30) as answer:
        data = json.loads(answer.read())
    assert data == {"attnviz": attnviz.__version__, "models": sorted(SERVED_MODELS)}


def test_http_analyze_answers_with_the_export_bundle(served_app: RayClient) -> None:
    status, body = post("model=zoo_cbam&model=zoo_deform&filename=cat.png", png(3))
    assert status == 200
    files = zipfile.ZipFile(io.BytesIO(body))
    summary = json.loads(files.read("summary.json"))
    assert [r["model"] for r in summary["results"]] == ["zoo_cbam", "zoo_deform"]
    names = files.namelist()
    assert "cat/zoo_cbam/gradcam.png" in names and any(n.startswith("cat/zoo_deform/") for n in names)
    # the same bundle as exporting the in-process results of the same upload
    loaded = attnviz.load_model("zoo_cbam", device="cpu")
    [ref] = attnviz.analyze(loaded, [attnviz.load_image(png(3))])
    entry = summary["results"][0]
    assert entry["top5"][0]["index"] == ref.top5[0].index
    assert entry["top5"][0]["probability"] == pytest.approx(ref.top5[0].probability, abs=1e-6)


def test_http_multipart_form(served_app: RayClient) -> None:
    boundary = "attnvizboundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nzoo_cbam\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="dog.png"\r\n'.encode()
        + b"Content-Type: image/png\r\n\r\n"
        + png(4)
        + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    status, body = post("gradcam=0", b"".join(parts), f"multipart/form-data; boundary={boundary}")
    assert status == 200
    names = zipfile.ZipFile(io.BytesIO(body)).namelist()
    assert any(n.startswith("dog/zoo_cbam/") for n in names) and "dog/zoo_cbam/gradcam.png" not in names


@pytest.mark.parametrize(
    ("query", "body", "status", "says"),
    [
        ("model=zoo_cbam", b"not an image at all", 400, "The upload is not a supported image"),
        ("model=zoo_cbam&filename=x.png", b"\x89PNG\r\n\x1a\n broken", 400, "x.png"),
        ("", b"", 400, "name at least one model"),
        ("model=resnet50", b"", 404, "not served here: resnet50"),
        ("model=zoo_cbam&cmap=nope", b"", 400, "nope"),
        ("model=zoo_cbam&alpha=2", b"", 400, "alpha"),
        ("model=deit_tiny_patch16_224", None, 503, "deit_tiny_patch16_224: The pretrained weights"),
    ],
)
def test_http_errors_are_one_sentence(
    served_app: RayClient, query: str, body, status: int, says: str
) -> None:
    code, answer = post(query, png(5) if body is None else body)
    assert code == status
    message = json.loads(answer)["error"]
    assert says in message and "Traceback" not in message
