"""Deformable DETR (transformers, small random config, no download): sampling points and detections.

The captured sampling locations and weights, fed to an independent multi-scale deformable attention
written here (``F.grid_sample`` per level), reproduce each module's output; the pixel convention is
checked with offsets set by hand.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_image, randomize_norms
from torch import nn

import attnviz
from attnviz.analysis.detector import _capture, analyze_detr
from attnviz.backends.transformers_detr import (
    COCO_LABELS,
    DetrBundle,
    build_deformable_detr,
    cached_pretrained_dir,
)
from attnviz.capture.hooks import Capture, Tap
from attnviz.core.errors import WeightsUnavailableError
from attnviz.core.records import Detections, SamplingPoints

transformers = pytest.importorskip("transformers")
from transformers import DeformableDetrConfig  # noqa: E402
from transformers.models.deformable_detr.modeling_deformable_detr import (  # noqa: E402
    DeformableDetrMultiscaleDeformableAttention,
)

SIZES = [(128, 192), (160, 128)]  # (H, W); 128x192 is a multiple of every stride (8 ... 64)
HEADS, POINTS, LEVELS, QUERIES = 4, 3, 4, 20


def small_config(**overrides) -> DeformableDetrConfig:
    kwargs = dict(
        backbone="resnet18",
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=HEADS,
        decoder_attention_heads=HEADS,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        num_queries=QUERIES,
        num_feature_levels=LEVELS,
        encoder_n_points=POINTS,
        decoder_n_points=POINTS,
        id2label=dict(enumerate(COCO_LABELS)),
    )
    return DeformableDetrConfig(**(kwargs | overrides))


def small_bundle(seed: int = 0) -> DetrBundle:
    torch.manual_seed(seed)
    bundle = build_deformable_detr(None, config=small_config(), shortest_edge=128, longest_edge=400)
    # fresh offsets ignore the query and fresh attention weights are uniform: re-draw every layer
    randomize_norms(bundle.module, seed)
    return bundle


@pytest.fixture(scope="module")
def detr() -> DetrBundle:
    return small_bundle()


@pytest.fixture(scope="module")
def pictures() -> list:
    return [make_image(i + 3, size) for i, size in enumerate(SIZES)]


def msda_modules(bundle: DetrBundle) -> dict[str, nn.Module]:
    return {
        name: m
        for name, m in bundle.module.named_modules()
        if isinstance(m, DeformableDetrMultiscaleDeformableAttention)
    }


class ModuleIO:
    """Test-side hooks (not the library's): each deformable module's value input, mask and output."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.seen: dict[str, dict[str, torch.Tensor]] = {}
        self.handles = [m.register_forward_hook(self._hook(n), with_kwargs=True) for n, m in modules.items()]

    def _hook(self, name: str):
        def hook(module, args, kwargs, output):
            self.seen[name] = {
                "value_input": kwargs["encoder_hidden_states"].clone(),
                "mask": kwargs["attention_mask"].clone(),
                "output": output[0].clone(),
            }

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def reference_msda(module: nn.Module, value_input, mask, locations, weights, shapes) -> torch.Tensor:
    """Multi-scale deformable attention from sampling locations and weights, then the output projection.

    ``locations`` ``[B, Q, heads, L, P, 2]`` normalised (x, y) of each level's map; ``weights``
    ``[B, Q, heads, L, P]``; ``shapes`` ``[(H_l, W_l)]``. Returns ``[B, Q, D]``.
    """
    b, s, d = value_input.shape
    _, q, heads, _, p, _ = locations.shape
    value = module.value_proj(value_input).masked_fill(~mask.bool()[..., None], 0.0)
    value = value.view(b, s, heads, d // heads)
    out = torch.zeros(b * heads, d // heads, q)
    start = 0
    for level, (h, w) in enumerate(shapes):
        v = value[:, start : start + h * w].permute(0, 2, 3, 1).reshape(b * heads, d // heads, h, w)
        start += h * w
        grid = (2 * locations[:, :, :, level] - 1).transpose(1, 2).reshape(b * heads, q, p, 2)
        sampled = F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        wl = weights[:, :, :, level].transpose(1, 2).reshape(b * heads, 1, q, p)
        out += (sampled * wl).sum(-1)
    return module.output_proj(out.view(b, d, q).transpose(1, 2))


def level_scales(pixel_mask: torch.Tensor, shapes, index: int) -> np.ndarray:
    """``[L, 2]`` (y, x) input pixels per normalised unit on each level for image ``index``.

    The valid cells of each level (the model's nearest-neighbour mask) tile the valid image.
    """
    mask = pixel_mask[index].bool()
    valid_h, valid_w = int(mask[:, 0].sum()), int(mask[0, :].sum())
    out = []
    for h, w in shapes:
        m = F.interpolate(pixel_mask[None].float(), size=(h, w))[0, index].bool()
        cells_h, cells_w = int(m[:, 0].sum()), int(m[0, :].sum())
        out.append((h * valid_h / cells_h, w * valid_w / cells_w))
    return np.array(out)


def to_normalised(points_yx: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Record points ``[Q, G, L*P, 2]`` (y, x) pixels -> ``[Q, G, L, P, 2]`` normalised (x, y)."""
    q, g, lp, _ = points_yx.shape
    pts = points_yx.astype(np.float64).reshape(q, g, LEVELS, lp // LEVELS, 2)
    return ((pts + 0.5) / scales[None, None, :, None])[..., ::-1]


# --- the model and its preprocessing ---------------------------------------------------------------


def test_coco_labels_follow_detr_ids():
    assert len(COCO_LABELS) == 91
    assert COCO_LABELS[0] == "N/A" and COCO_LABELS[12] == "N/A" and COCO_LABELS[83] == "N/A"
    assert (COCO_LABELS[1], COCO_LABELS[18], COCO_LABELS[90]) == ("person", "dog", "toothbrush")


def test_build_random_is_eager_untrained_and_labelled(detr):
    assert detr.untrained and detr.weights == "random"
    assert detr.module.config._attn_implementation == "eager"
    assert not detr.module.training
    assert not any(p.requires_grad for p in detr.module.parameters())
    assert detr.labels == COCO_LABELS
    assert detr.mean == pytest.approx((0.485, 0.456, 0.406)) and detr.std == pytest.approx(
        (0.229, 0.224, 0.225)
    )


def test_preprocess_pads_a_batch_like_the_processor(detr, pictures):
    values, mask = detr.preprocess(pictures)
    assert values.shape == (2, 3, 160, 192) and mask.shape == (2, 160, 192)
    assert mask[0, :128, :192].all() and not mask[0, 128:].any()
    assert mask[1, :160, :128].all() and not mask[1, :, 128:].any()
    assert (values[1, :, :, 128:] == 0).all()


OLD_PREPROCESSOR = {  # the format of SenseTime/deformable-detr's preprocessor_config.json
    "feature_extractor_type": "DeformableDetrFeatureExtractor",
    "format": "coco_detection",
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "max_size": 1333,
    "size": 800,
}


def test_pretrained_loads_from_a_local_snapshot(tmp_path, detr, pictures):
    detr.module.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(OLD_PREPROCESSOR))
    loaded = build_deformable_detr(tmp_path, shortest_edge=128, longest_edge=400)
    assert (loaded.processor.size.shortest_edge, loaded.processor.size.longest_edge) == (128, 400)
    assert loaded.weights == "pretrained" and not loaded.untrained
    assert loaded.module.config._attn_implementation == "eager"
    assert loaded.labels == COCO_LABELS
    values, mask = detr.preprocess(pictures[:1])
    with torch.inference_mode():
        want = detr.module(pixel_values=values, pixel_mask=mask).logits
        got = loaded.module(pixel_values=values, pixel_mask=mask).logits
    torch.testing.assert_close(got, want)


def test_cached_snapshot_is_found_without_network(tmp_path):
    repo = tmp_path / "models--SenseTime--deformable-detr"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    (snapshot / "config.json").write_text("{}")
    assert cached_pretrained_dir(tmp_path) is None  # no weights yet
    (snapshot / "model.safetensors").write_bytes(b"")
    assert cached_pretrained_dir(tmp_path) == snapshot
    assert cached_pretrained_dir(tmp_path / "empty") is None


def test_missing_snapshot_names_the_file(tmp_path):
    with pytest.raises(WeightsUnavailableError, match=r"config\.json") as err:
        build_deformable_detr(tmp_path / "nowhere")
    assert err.value.weights_file == "config.json"
    (tmp_path / "config.json").write_text(small_config().to_json_string())
    with pytest.raises(WeightsUnavailableError, match=r"model\.safetensors"):
        build_deformable_detr(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shortest_edge": 0}, "shortest_edge must be a positive int"),
        ({"shortest_edge": 900, "longest_edge": 800}, "must not exceed longest_edge"),
        ({"config": "resnet"}, "config must be a DeformableDetrConfig"),
    ],
)
def test_build_rejects_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build_deformable_detr(None, **kwargs)


def test_build_refuses_a_config_that_downloads(tmp_path):
    config = small_config()
    config.backbone_config.use_pretrained_backbone = True
    with pytest.raises(ValueError, match="use_pretrained_backbone"):
        build_deformable_detr(None, config=config)
    with pytest.raises(ValueError, match="not both"):
        build_deformable_detr(tmp_path, config=small_config())


# --- the capture --------------------------------------------------------------------------------


def test_captured_locations_reproduce_every_module(detr, pictures):
    """The library's captured locations and weights, through grid_sample, give each module's output."""
    modules = msda_modules(detr)
    io = ModuleIO(modules)
    try:
        values, mask = detr.preprocess(pictures)  # padded batch: the mask matters
        _, captured = _capture(detr, values, mask)
    finally:
        io.remove()
    assert set(captured) == {"model.encoder", *modules}
    for name, module in modules.items():
        parts, seen = captured[name], io.seen[name]
        shapes = [tuple(int(v) for v in hw) for hw in parts["levels"]]
        assert parts["points"].shape[2:] == (HEADS, LEVELS, POINTS, 2)
        with torch.inference_mode():
            got = reference_msda(
                module, seen["value_input"], seen["mask"], parts["points"], parts["attn"], shapes
            )
        torch.testing.assert_close(got, seen["output"], atol=1e-5, rtol=1e-4, msg=name)


def test_records_round_trip_to_the_normalised_locations(detr, pictures):
    """Record pixels converted back give the normalised locations; decoder records reproduce the output."""
    modules = msda_modules(detr)
    io = ModuleIO(modules)
    try:
        results = analyze_detr(detr, pictures, threshold=0.0)
        values, mask = detr.preprocess(pictures)
        _, captured = _capture(detr, values, mask)
    finally:
        io.remove()
    for i, analysis in enumerate(results):
        records = analysis.sampling_points
        assert [r.layer for r in records] == list(modules)
        for rec in records:
            raw = captured[rec.layer]["points"][i].numpy()
            scales = level_scales(mask, rec.levels, i)
            back = to_normalised(rec.points, scales)
            encoder = rec.kind == "detr_encoder"
            # float16 encoder pixels: 11 significant bits (1/8 px below 256 px)
            tol = 1e-3 if encoder else 1e-5
            np.testing.assert_allclose(back, raw, atol=tol, rtol=tol)
            if encoder:
                continue
            seen = io.seen[rec.layer]
            q, g = rec.points.shape[:2]
            locations = torch.from_numpy(back.astype(np.float32))[None]
            weights = torch.tensor(rec.weights.reshape(q, g, LEVELS, POINTS))[None]
            with torch.inference_mode():
                got = reference_msda(
                    modules[rec.layer], seen["value_input"][i : i + 1], seen["mask"][i : i + 1],
                    locations, weights, rec.levels,
                )  # fmt: skip
            torch.testing.assert_close(got[0], seen["output"][i], atol=1e-4, rtol=1e-4)


def test_records_layout_weights_and_levels(detr, pictures):
    results = analyze_detr(detr, pictures[:1], threshold=0.0)
    analysis = results[0]
    values, mask = detr.preprocess(pictures[:1])
    with torch.inference_mode():
        feats = detr.module.model.backbone(values, mask)
        extra = detr.module.model.input_proj[len(feats)](feats[-1][0])
    backbone_shapes = (*(tuple(f.shape[-2:]) for f, _ in feats), tuple(extra.shape[-2:]))
    assert backbone_shapes == ((16, 24), (8, 12), (4, 6), (2, 3))
    n_cells = sum(h * w for h, w in backbone_shapes)
    records = analysis.sampling_points
    assert [r.kind for r in records] == ["detr_encoder"] * 2 + ["detr_decoder"] * 2
    assert [r.block for r in records] == [0, 1, 2, 3]
    for rec in records:
        assert isinstance(rec, SamplingPoints)
        assert rec.levels == backbone_shapes and rec.group_name == "head" and rec.untrained
        q = n_cells if rec.kind == "detr_encoder" else QUERIES
        assert rec.points.shape == (q, HEADS, LEVELS * POINTS, 2)
        assert rec.points.dtype == (np.float16 if rec.kind == "detr_encoder" else np.float32)
        assert rec.query_points.shape == (q, 2)
        np.testing.assert_allclose(rec.weights.astype(np.float32).sum(-1), 1.0, atol=2e-3)
        assert rec.weights.std() > 0.01  # not the uniform weights of a fresh module
    assert analysis.input_image.shape == (128, 192, 3) and analysis.top5 == ()


def set_offsets(module: nn.Module, offsets: torch.Tensor) -> None:
    """Offsets ``[heads, levels, points, 2]`` (dx, dy) in cells of each level, for every query."""
    with torch.no_grad():
        module.sampling_offsets.weight.zero_()
        module.sampling_offsets.bias.copy_(offsets.flatten())


def known_offsets() -> torch.Tensor:
    h, _, p = torch.meshgrid(torch.arange(HEADS), torch.arange(LEVELS), torch.arange(POINTS), indexing="ij")
    return torch.stack([p + 1.0, h - 1.0], -1)  # dx = p + 1, dy = h - 1 cells, on every level


def test_known_offsets_land_on_known_pixels(pictures):
    """Offsets of whole cells move each point by whole strides from its reference, on every level."""
    bundle = small_bundle(seed=1)
    modules = msda_modules(bundle)
    for module in modules.values():
        set_offsets(module, known_offsets())
    enc, _, dec, _ = analyze_detr(bundle, pictures[:1], threshold=0.0)[0].sampling_points
    strides = np.array([8.0, 16.0, 32.0, 64.0])  # 128x192 divides into every level exactly
    dy = (np.arange(HEADS) - 1.0)[:, None, None] * strides[None, :, None]
    dx = (np.arange(POINTS) + 1.0)[None, None, :] * strides[None, :, None]
    expected = np.stack(np.broadcast_arrays(dy, dx), -1).reshape(HEADS, LEVELS * POINTS, 2)
    for rec in (enc, dec):
        want = np.broadcast_to(expected, rec.points.shape)
        np.testing.assert_allclose(rec.offsets.astype(np.float32), want, atol=1e-3)
    # encoder query at level 0, cell (2, 3): its cell centre, on every level
    q = 2 * 24 + 3
    np.testing.assert_array_equal(enc.query_points[q], [19.5, 27.5])
    np.testing.assert_array_equal(
        enc.reference[q, :, :].astype(np.float32), np.full((HEADS, 12, 2), [19.5, 27.5])
    )
    # head 2, level 1 (stride 16), point 0: one cell right (+16), one cell down (+16)
    np.testing.assert_array_equal(enc.points[q, 2, 1 * POINTS + 0], [35.5, 43.5])
    # a level-1 query, cell (1, 2), sits at the centre of its 16-pixel cell
    q1 = 16 * 24 + 1 * 12 + 2
    np.testing.assert_array_equal(enc.query_points[q1], [23.5, 39.5])
    # a decoder query's reference is one pixel on every level, its query point
    ref = dec.reference.reshape(QUERIES, HEADS, LEVELS, POINTS, 2)
    np.testing.assert_allclose(
        ref, np.broadcast_to(dec.query_points[:, None, None, None], ref.shape), atol=1e-4
    )


def test_padded_image_keeps_its_own_pixel_grid(detr, pictures):
    """In a padded batch, the narrower image's encoder queries still sit at its cells' centres."""
    _, narrow = analyze_detr(detr, pictures, threshold=0.0)
    _, mask = detr.preprocess(pictures)
    enc, dec = narrow.sampling_points[0], narrow.sampling_points[-1]
    scales = level_scales(mask, enc.levels, 1)
    assert narrow.input_image.shape == (160, 128, 3)
    start = 0
    for level, (h, w) in enumerate(enc.levels):
        yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        centres = np.stack([(yy + 0.5) * scales[level, 0] / h, (xx + 0.5) * scales[level, 1] / w], -1) - 0.5
        np.testing.assert_allclose(enc.query_points[start : start + h * w], centres.reshape(-1, 2), atol=0.07)
        start += h * w
    ref = dec.reference.reshape(QUERIES, HEADS, LEVELS, POINTS, 2)
    np.testing.assert_allclose(
        ref, np.broadcast_to(dec.query_points[:, None, None, None], ref.shape), atol=1e-3
    )


def test_detections_follow_transformers_post_processing(detr, pictures):
    threshold, top = 0.3, 12
    results = analyze_detr(detr, pictures, threshold=threshold, top=top)
    values, mask = detr.preprocess(pictures)
    with torch.inference_mode():
        outputs = detr.module(pixel_values=values, pixel_mask=mask)
    sizes = [(128, 192), (160, 128)]
    want = detr.processor.post_process_object_detection(outputs, threshold, target_sizes=sizes, top_k=top)
    for i, (analysis, ref, (h, w)) in enumerate(zip(results, want, sizes, strict=True)):
        det = analysis.detections
        assert isinstance(det, Detections) and 0 < len(det.scores) <= top
        np.testing.assert_allclose(det.scores, ref["scores"].numpy(), rtol=1e-6)
        np.testing.assert_array_equal(det.classes, ref["labels"].numpy())
        clipped = ref["boxes"].numpy().clip(0, [w, h, w, h])
        np.testing.assert_allclose(det.boxes, clipped, atol=1e-4)
        assert (np.diff(det.scores) <= 0).all() and (det.scores > threshold).all()
        assert (det.boxes >= 0).all() and (det.boxes <= [w, h, w, h]).all()
        assert ((det.query_index >= 0) & (det.query_index < QUERIES)).all()
        assert det.labels == tuple(COCO_LABELS[c] for c in det.classes)
        probs = outputs.logits[i].sigmoid()
        np.testing.assert_allclose(
            det.scores, probs[torch.tensor(det.query_index), torch.tensor(det.classes)].numpy(), rtol=1e-6
        )


def test_input_image_is_the_unpadded_model_input(detr, pictures):
    results = analyze_detr(detr, pictures, threshold=0.0)
    values, _ = detr.preprocess(pictures)
    mean, std = torch.tensor(detr.mean).view(3, 1, 1), torch.tensor(detr.std).view(3, 1, 1)
    for i, (h, w) in enumerate(SIZES):
        want = (values[i, :, :h, :w] * std + mean).clamp(0, 1).mul(255).round().byte().permute(1, 2, 0)
        np.testing.assert_array_equal(results[i].input_image, want.numpy())
        # the processor keeps a 128-pixel shorter side: the model saw the picture itself
        assert np.abs(results[i].input_image.astype(int) - np.asarray(pictures[i]).astype(int)).max() <= 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"threshold": 1.0}, "threshold must be"), ({"threshold": -0.1}, "threshold must be"),
     ({"top": 0}, "top must be a positive int"), ({"top": 2.5}, "top must be a positive int")],
)  # fmt: skip
def test_analyze_rejects_bad_arguments(detr, pictures, kwargs, match):
    with pytest.raises(ValueError, match=match):
        analyze_detr(detr, pictures[:1], **kwargs)


def test_analyze_rejects_no_images_and_foreign_bundles(detr):
    with pytest.raises(ValueError, match="at least one image"):
        analyze_detr(detr, [])
    with pytest.raises(TypeError, match="DetrBundle"):
        analyze_detr(detr.module, [np.zeros((8, 8, 3), np.uint8)])


def hook_state(model: nn.Module) -> list:
    return [
        (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._forward_hooks_with_kwargs),
         "forward" in m.__dict__, m.training)
        for m in model.modules()
    ]  # fmt: skip


def test_capture_restores_the_model_also_when_the_forward_raises(pictures):
    bundle = small_bundle(seed=2)
    model = bundle.module
    model.model.decoder.train()  # a flag the capture must give back
    before = hook_state(model)

    def boom(module, args, kwargs):
        raise RuntimeError("boom")

    handle = model.model.decoder.layers[1].register_forward_pre_hook(boom, with_kwargs=True)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            analyze_detr(bundle, pictures[:1])
    finally:
        handle.remove()
    assert hook_state(model) == before
    analyze_detr(bundle, pictures[:1])
    assert hook_state(model) == before
    assert model.model.decoder.training and not model.model.encoder.training


def test_input_taps_read_positional_keyword_and_bound_arguments():
    class Toy(nn.Module):
        def forward(self, x, scale=None, *, shift=None):
            return x * scale if shift is None else x * scale + shift

    toy = Toy()
    taps = [
        Tap("toy", toy, "t", "sampling", lambda t: t, part="x", read_input=0),
        Tap("toy", toy, "t", "sampling", lambda t: t, part="scale", read_input="scale"),
        Tap("toy", toy, "t", "sampling", lambda t: t, part="shift", read_input="shift"),
        Tap("toy", toy, "t", "sampling", lambda t: t, part="out"),
    ]
    x, scale, shift = torch.ones(2), torch.full((2,), 3.0), torch.full((2,), 0.5)
    with Capture(toy, taps) as cap:
        toy(x, scale, shift=shift)  # scale positional: bound by name through the signature
    got = {tap.part: value for tap, value in cap.results()}
    torch.testing.assert_close(got["x"], x)
    torch.testing.assert_close(got["scale"], scale)
    torch.testing.assert_close(got["shift"], shift)
    torch.testing.assert_close(got["out"], x * scale + shift)
    assert not toy._forward_hooks and not toy._forward_pre_hooks

    with Capture(toy, taps) as cap:  # an optional argument not given reads nothing
        toy(x, scale)
    assert sorted(tap.part for tap, _ in cap.results()) == ["out", "scale", "x"]
    with pytest.raises(RuntimeError, match="argument 0 of Toy is str, not a tensor"), Capture(toy, taps[:1]):
        toy("not a tensor", scale)
    assert not toy._forward_hooks and not toy._forward_pre_hooks


# --------------------------------------------------------------------------------------------------
# Through the registry: load_model / analyze / export, and the app
# --------------------------------------------------------------------------------------------------


def test_registry_weights_errors_name_the_repo(monkeypatch, tmp_path):
    import socket

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "create_connection", refuse)
    spec = attnviz.get_spec("deformable_detr")
    assert spec.source == "transformers" and not spec.pretrained_available and not spec.classifier
    with pytest.raises(WeightsUnavailableError, match=r"SenseTime/deformable-detr.*hf download"):
        attnviz.load_model("deformable_detr", weights="pretrained", device="cpu")
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"x")
    with pytest.raises(attnviz.CheckpointError, match="loads a snapshot folder"):
        attnviz.load_model("deformable_detr", weights=str(file), device="cpu")


@pytest.mark.slow
def test_registry_model_analyses_and_exports_a_sample(tmp_path):
    import json

    from attnviz.io.export import export_files
    from attnviz.io.samples import load_sample

    torch.manual_seed(0)
    model = attnviz.load_model("deformable_detr", weights="random", device="cpu")
    assert model.detector is not None and model.untrained
    [result] = attnviz.analyze(model, [load_sample("cat.jpg")])
    assert result.untrained and result.top5 == () and result.gradcam is None
    kinds = [r.kind for r in result.sampling_points]
    assert kinds == ["detr_encoder"] * 6 + ["detr_decoder"] * 6
    h, w = result.input_image.shape[:2]
    assert min(h, w) == 800
    enc = result.sampling_points[0]
    assert enc.points.shape[1:] == (8, 16, 2) and len(enc.levels) == 4 and enc.group_name == "head"
    files = export_files([("cat.jpg", result)])
    assert "cat/deformable_detr/detections.png" in files
    summary = json.loads(files["summary.json"])["results"][0]
    [det] = [r for r in summary["records"] if r["type"] == "Detections"]
    assert len(det["objects"]) == len(result.detections.labels)
    assert summary["files"]["detections"] == "cat/deformable_detr/detections.png"


# --- GPU memory fallback (simulated on the CPU) ---------------------------------------------------


def _fail_above(monkeypatch: pytest.MonkeyPatch, bundle: DetrBundle, limit: int) -> list[int]:
    """The module runs out of memory (simulated) for batches above ``limit``; returns the sizes tried."""
    sizes: list[int] = []
    original = bundle.module.forward

    def forward(*args, **kwargs):
        n = int(kwargs["pixel_values"].shape[0])
        sizes.append(n)
        if n > limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (simulated for {n} images)")
        return original(*args, **kwargs)

    monkeypatch.setattr(bundle.module, "forward", forward)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    return sizes


def test_out_of_memory_runs_the_images_in_smaller_batches(detr, pictures, monkeypatch):
    alone = [analyze_detr(detr, [p])[0] for p in pictures]
    sizes = _fail_above(monkeypatch, detr, 1)

    got = analyze_detr(detr, pictures)

    assert sizes == [2, 1, 1]
    note = "GPU memory ran out for a batch of 2 images; they were analysed one at a time."
    for mine, want in zip(got, alone, strict=True):
        assert mine.notes == (note,)
        np.testing.assert_array_equal(mine.input_image, want.input_image)
        for a, b in zip(mine.records, want.records, strict=True):
            if isinstance(a, SamplingPoints):
                np.testing.assert_array_equal(a.points, b.points)
                np.testing.assert_array_equal(a.weights, b.weights)
            else:
                np.testing.assert_array_equal(a.boxes, b.boxes)
    monkeypatch.undo()
    assert "forward" not in detr.module.__dict__


def test_out_of_memory_for_one_image_raises_a_clear_error(detr, pictures, monkeypatch):
    sizes = _fail_above(monkeypatch, detr, 0)
    with pytest.raises(
        attnviz.GPUMemoryError, match="deformable_detr ran out of GPU memory even for one image"
    ):
        analyze_detr(detr, pictures)
    assert sizes == [2, 1]
    monkeypatch.undo()
    assert not [m for m in detr.module.modules() if m._forward_hooks or m._forward_pre_hooks]
