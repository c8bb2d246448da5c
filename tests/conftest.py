"""Shared fixtures: seeded images and random-weight models with non-trivial statistics."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn


def make_image(seed: int, size: tuple[int, int] = (240, 320)) -> Image.Image:
    """A seeded RGB image with structure (smooth blobs plus noise), not a constant."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * xx + seed), np.cos(5 * yy - seed), np.sin(4 * (xx + yy))], axis=-1)
    pixels = 127 + 80 * base + rng.normal(0, 25, (h, w, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def randomize_norms(module: nn.Module, seed: int = 0) -> None:
    """Re-draw weights so that every captured value depends on the image.

    Fresh models zero-initialise the last norm of each residual branch, start with unit running
    statistics and (torchvision) use fan-out init that shrinks activations layer by layer, so
    attention inputs would be near zero and every gate near its midpoint. Here convolutions and
    linear layers get variance-preserving (fan-in) weights and small random biases, and norm
    layers random affine parameters and running statistics.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d | nn.Conv1d | nn.Linear):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if isinstance(m, nn.modules.batchnorm._BatchNorm | nn.GroupNorm | nn.LayerNorm):
                if getattr(m, "weight", None) is not None:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                if getattr(m, "bias", None) is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
                if getattr(m, "running_mean", None) is not None:
                    m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                    m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def write_pngs(folder, n: int, size: tuple[int, int]) -> list:
    """``n`` seeded images (:func:`make_image`) saved as ``folder/img00.png``...; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img{i:02d}.png"
        make_image(i, size).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def images() -> list[Image.Image]:
    return [make_image(1), make_image(2, (300, 260))]


def bilinear_zero_pad(x: torch.Tensor, y: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
    """Sample ``x`` [C, H, W] at float pixel positions (y, xx) [N], zeros outside (torchvision's
    ``deform_conv2d`` rule); an independent reference for the sampling tests. Returns ``[C, N]``."""
    c, h, w = x.shape
    y0, x0 = torch.floor(y).long(), torch.floor(xx).long()
    out = torch.zeros(c, y.shape[0], dtype=x.dtype)
    for dy in (0, 1):
        for dx in (0, 1):
            yy, xq = y0 + dy, x0 + dx
            wgt = (1 - (y - yy).abs()) * (1 - (xx - xq).abs())
            ok = (yy >= 0) & (yy < h) & (xq >= 0) & (xq < w)
            vals = torch.zeros(c, y.shape[0], dtype=x.dtype)
            vals[:, ok] = x[:, yy[ok], xq[ok]]
            out += vals * wgt
    return out


def wrap_module(
    module: nn.Module,
    size: int,
    *,
    name: str | None = None,
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
    std: tuple[float, float, float] = (0.229, 0.224, 0.225),
):
    """A directly built model as an ``attnviz.LoadedModel`` without classes (attention only, no
    Grad-CAM): resize + centre crop to ``size``, normalised with ``mean``/``std``, CPU, random."""
    from torchvision import transforms as T

    import attnviz
    from attnviz.capture.taps import find_taps

    spec = attnviz.ModelSpec(
        name=name or type(module).__name__,
        source="test",
        attention=(),
        input_size=(size, size),
        pretrained_available=False,
        weights_file="",
        weights_path="",
        description="built by the test",
        gradcam_layer="",
    )
    transform = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])
    return attnviz.LoadedModel(
        spec=spec,
        module=module.eval(),
        transform=transform,
        mean=mean,
        std=std,
        categories=(),
        weights="random",
        untrained=True,
        device=torch.device("cpu"),
        taps=find_taps(module),
    )


@pytest.fixture(autouse=True)
def private_user_models(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test sees an empty user-models folder of its own, never the real one in the home folder
    (tests that save models set their own folder on top)."""
    monkeypatch.setenv("ATTNVIZ_USER_MODELS", str(tmp_path_factory.mktemp("user_models")))


@pytest.fixture(autouse=True)
def navigation_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep AppTest from running a page file without app.py (Streamlit 1.67 AppTest quirk).

    Before every run AppTest resets ``PagesManager.uses_pages_directory``, which then turns True
    because ``pages/`` exists; from the second run on, the script runner then runs the current
    page's file alone (the old ``pages/`` auto-discovery) and app.py and its sidebar never
    run. A real server clears the flag for good on the first ``st.navigation`` call; do it here.
    """
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def init(self: PagesManager, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[pytest.TestReport]:
    """Keep each phase's report on the test (``item.rep_call``), so that a fixture can tell after the
    test whether it failed (the browser suite then saves a screenshot)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A local Ray (2 CPUs, no dashboard, a small object store), started once per test session for
    every test that needs it, and shut down (Serve first) when the session ends. Its workers get an
    empty user-models folder of their own, never the real one."""
    import os

    import ray

    if not ray.is_initialized():
        users = tmp_path_factory.mktemp("ray_user_models")
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=256 * 2**20,
            log_to_driver=False,
            runtime_env={"env_vars": {"ATTNVIZ_USER_MODELS": str(users), "RAY_SERVE_LOG_TO_STDERR": "0"}},
        )
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    yield
    from ray import serve

    serve.shutdown()
    ray.shutdown()


#: What the test session's Serve application serves: a zoo CNN, a ViT and a deformable model.
SERVED_MODELS = ("zoo_cbam", "deit_tiny_patch16_224", "zoo_deform")


@pytest.fixture(scope="session")
def served_app(ray_local: None) -> Iterator[object]:
    """The attnviz Serve application on the session's local Ray, deployed once per test session:
    :data:`SERVED_MODELS`, a fifth of a CPU each, batches of up to 8 gathered for 50 ms (so that
    concurrent requests share forwards), both weights preloaded. Yields its :class:`RayClient`."""
    from ray import serve

    from attnviz.serving import ServeSettings, connect
    from attnviz.serving.app import deploy

    settings = ServeSettings.from_args(
        {
            "models": [{"name": m, "cpus": 0.2} for m in SERVED_MODELS],
            "device": "cpu",
            "preload": ["pretrained", "random"],
            "max_batch_size": 8,
            "batch_wait_s": 0.05,
        }
    )
    deploy(settings, http_options={"host": "127.0.0.1", "port": SERVE_PORT})
    yield connect()
    serve.delete("attnviz")


#: The HTTP port of the test session's Serve.
SERVE_PORT = 18321


def assert_same(served, ref, atol: float = 1e-5) -> None:
    """The same result: model, weights, input crop, predictions and every record's arrays."""
    assert (served.model, served.weights, served.untrained) == (ref.model, ref.weights, ref.untrained)
    np.testing.assert_array_equal(served.input_image, ref.input_image)
    assert [p.index for p in served.top5] == [p.index for p in ref.top5]
    np.testing.assert_allclose(
        [p.probability for p in served.top5], [p.probability for p in ref.top5], atol=atol
    )
    assert [(type(r), r.layer) for r in served.records] == [(type(r), r.layer) for r in ref.records]
    for a, b in zip(served.records, ref.records, strict=True):
        for name in a.__dataclass_fields__:
            x, y = getattr(a, name), getattr(b, name)
            if isinstance(x, np.ndarray):
                assert x.dtype == y.dtype, (a.layer, name)
                np.testing.assert_allclose(
                    x.astype(np.float64), y.astype(np.float64), atol=atol, err_msg=name
                )
            else:
                assert x == y, (a.layer, name)
