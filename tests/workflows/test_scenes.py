"""Generated scenes: deterministic, and the box and mask agree with the pixels."""

from __future__ import annotations

import numpy as np
import pytest

from attnviz.layers import zoo_net
from attnviz.workflows.scene_shapes import SHAPE_CONTOURS, UNIT_SHAPES
from attnviz.workflows.scenes import CLASSES, SceneParams, draw_box, make_dataset, make_scene


def test_same_seed_same_scene_and_different_seed_differs():
    a, b = make_scene(7), make_scene(7)
    assert a.image.tobytes() == b.image.tobytes() and a.box == b.box and (a.mask == b.mask).all()
    assert make_scene(8).image.tobytes() != a.image.tobytes()
    rebuilt = make_scene(7, a.params)  # params carry every random choice
    assert rebuilt.image.tobytes() == a.image.tobytes()


@pytest.mark.parametrize("label", range(len(CLASSES)))
def test_box_and_mask_agree_with_the_pixels(label):
    for seed, rotation in [(1, 0.0), (2, 37.0), (3, 200.0)]:
        scene = make_scene(seed, SceneParams(size=96, label=label, rotation=rotation, colour=(250, 20, 20)))
        assert scene.label == label and scene.class_name == CLASSES[label]
        ys, xs = np.nonzero(scene.mask)
        assert scene.box == (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)  # tight, exclusive ends
        # interior pixels (mask eroded by one pixel) have the object's colour
        m = scene.mask
        inner = m.copy()
        inner[1:-1, 1:-1] &= m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
        assert inner.sum() > 10
        np.testing.assert_allclose(scene.image[inner].mean(0), (250, 20, 20), atol=3)
        # the object is a small part of the image and fully inside it
        assert 0.005 < m.mean() < 0.1
        assert not (m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())


def test_params_are_honoured():
    scene = make_scene(5, SceneParams(size=128, label=3, center=(0.25, 0.75), scale=0.2))
    ys, xs = np.nonzero(scene.mask)
    assert abs(ys.mean() / 128 - 0.25) < 0.05 and abs(xs.mean() / 128 - 0.75) < 0.05
    assert np.sqrt(scene.mask.mean()) == pytest.approx(0.2, rel=0.15)
    calm = make_scene(5, SceneParams(size=96, clutter=0.0))
    busy = make_scene(5, SceneParams(size=96, clutter=1.0))

    def edges(img: np.ndarray) -> float:
        g = img.astype(float).mean(-1)
        return float(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())

    assert edges(busy.image) > 1.5 * edges(calm.image)


def test_dataset_is_balanced_and_equals_its_scenes():
    images, labels, boxes, masks = make_dataset(30, 4, SceneParams(size=96))
    assert images.shape == (30, 96, 96, 3) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=len(CLASSES)).tolist() == [3] * len(CLASSES)
    for i in (0, 17):
        scene = make_scene(4 * 1_000_003 + i, SceneParams(size=96, label=int(labels[i])))
        assert scene.image.tobytes() == images[i].tobytes()
        assert tuple(boxes[i]) == scene.box and (masks[i] == scene.mask).all()


def test_draw_box_marks_the_border_on_a_copy():
    scene = make_scene(2, SceneParams(size=96))
    drawn = draw_box(scene.image, scene.box, colour=(0, 255, 0), width=1)
    y0, x0, y1, x1 = scene.box
    # the outline runs just outside the box, so the object's pixels stay visible
    assert (drawn[y0 - 1, x0:x1] == (0, 255, 0)).all() and (drawn[y1, x0:x1] == (0, 255, 0)).all()
    assert (drawn[y0:y1, x0:x1] == scene.image[y0:y1, x0:x1]).all()
    assert not (scene.image[y0 - 1, x0:x1] == (0, 255, 0)).all()


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"size": 10}, "size must be"),
        ({"label": len(CLASSES)}, "label"),
        ({"center": (1.5, 0.5)}, "center"),
        ({"clutter": 2.0}, "clutter"),
        ({"scale": 0.9}, "scale"),
    ],
)
def test_bad_params(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        SceneParams(**kwargs)


def _interior(mask: np.ndarray) -> np.ndarray:
    """The mask eroded by one pixel (4-neighbourhood), the image border excluded."""
    inner = np.zeros_like(mask)
    inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    return inner


@pytest.mark.parametrize("label", range(len(CLASSES)))
@pytest.mark.parametrize("scale", [0.14, 0.24, 0.35])
def test_every_class_at_every_scale_has_the_requested_area_and_a_flat_interior(label, scale):
    colour = (30, 200, 90)
    for seed, rotation in [(1, 0.0), (2, 91.0), (3, 333.3)]:
        scene = make_scene(seed, SceneParams(label=label, scale=scale, rotation=rotation, colour=colour))
        # scale is the square root of the object's share of the image, whatever the class
        assert scene.mask.mean() == pytest.approx(scale**2, rel=0.06)
        inner = _interior(scene.mask)
        diff = np.abs(scene.image[inner].astype(int) - colour).max(axis=1)
        assert (diff == 0).mean() > 0.97  # fully covered pixels carry the colour exactly
        assert diff.max() <= 64  # the rest are at least ~3/4 covered (concave corners)
        ys, xs = np.nonzero(scene.mask)
        assert scene.box == (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
        assert ys.min() >= 2 and ys.max() < 126 and xs.min() >= 2 and xs.max() < 126


def test_rotation_turns_the_object_and_the_mask_edge_is_antialiased():
    upright = make_scene(0, SceneParams(label=CLASSES.index("arrow"), rotation=0.0, center=(0.5, 0.5)))
    turned = make_scene(0, SceneParams(label=CLASSES.index("arrow"), rotation=90.0, center=(0.5, 0.5)))
    # an arrow pointing right is wider than tall; turned a quarter it is taller than wide
    (y0, x0, y1, x1), (v0, u0, v1, u1) = upright.box, turned.box
    assert x1 - x0 > y1 - y0 and v1 - v0 > u1 - u0
    np.testing.assert_array_equal(np.rot90(upright.mask), turned.mask)
    # anti-aliasing: along the outline there are pixels between object and background colours
    edge = upright.mask & ~_interior(upright.mask)
    assert edge.sum() > 20
    colour = np.array(upright.params.colour)
    assert (np.abs(upright.image[edge].astype(int) - colour).max(axis=1) > 0).any()


def test_default_scenes_keep_the_object_inside_and_between_2_and_6_percent():
    _, _, boxes, masks = make_dataset(60, 1)
    shares = masks.mean(axis=(1, 2))
    assert shares.min() >= 0.14**2 * 0.94 and shares.max() <= 0.24**2 * 1.06
    for box, mask in zip(boxes, masks, strict=True):
        y0, x0, y1, x1 = box
        assert 0 < y0 < y1 < 128 and 0 < x0 < x1 < 128
        assert mask[y0:y1, x0:x1].sum() == mask.sum()


@pytest.mark.parametrize("center", [(0.3, 0.3), (0.5, 0.5), (0.7, 0.4), (0.35, 0.65)])
def test_center_is_the_mask_centroid(center):
    scene = make_scene(9, SceneParams(label=CLASSES.index("star"), center=center, scale=0.2))
    ys, xs = np.nonzero(scene.mask)
    assert (ys.mean() + 0.5) / 128 == pytest.approx(center[0], abs=0.01)
    assert (xs.mean() + 0.5) / 128 == pytest.approx(center[1], abs=0.01)


def test_center_at_the_border_moves_inwards_just_enough():
    scene = make_scene(9, SceneParams(center=(0.0, 1.0), scale=0.24))
    y0, _, _, x1 = scene.box
    assert y0 <= 3 and x1 >= 125  # pushed against the 2 px margin, not into the middle
    assert not (scene.mask[:2].any() or scene.mask[:, -2:].any())


def test_clutter_changes_the_background_only():
    calm = make_scene(21, SceneParams(clutter=0.0))
    busy = make_scene(21, SceneParams(clutter=1.0))
    np.testing.assert_array_equal(calm.mask, busy.mask)  # same object, same place
    assert calm.params.colour == busy.params.colour and calm.label == busy.label

    def distinct_colours(img: np.ndarray) -> int:
        return len(np.unique((img // 16).reshape(-1, 3), axis=0))

    assert distinct_colours(busy.image) > 2 * distinct_colours(calm.image)


def test_label_changes_the_shape_only():
    circle = make_scene(5, SceneParams(label=0))
    square = make_scene(5, SceneParams(label=1))
    assert circle.class_name == "circle" and square.class_name == "square"
    assert circle.params.scale == square.params.scale and circle.params.rotation == square.params.rotation
    np.testing.assert_allclose(circle.params.center, square.params.center, atol=0.05)
    assert not np.array_equal(circle.mask, square.mask)


@pytest.mark.parametrize("size", [64, 256])
def test_other_sizes(size):
    scene = make_scene(3, SceneParams(size=size))
    assert scene.image.shape == (size, size, 3) and scene.mask.shape == (size, size)
    assert scene.mask.mean() == pytest.approx(scene.params.scale**2, rel=0.1)


def test_scene_arrays_are_read_only():
    scene = make_scene(1)
    assert scene.image.dtype == np.uint8 and scene.mask.dtype == bool
    with pytest.raises(ValueError, match="read-only"):
        scene.image[0, 0] = 0
    with pytest.raises(ValueError, match="read-only"):
        scene.mask[0, 0] = True


def test_classes_are_ten_distinct_shapes():
    assert len(CLASSES) == 10 == len(set(CLASSES))
    masks = [make_scene(0, SceneParams(label=k, rotation=0.0, scale=0.24)).mask for k in range(10)]
    for i in range(10):
        for j in range(i):
            assert (masks[i] != masks[j]).sum() > 30, (CLASSES[i], CLASSES[j])


def test_shapes_are_listed_in_the_order_of_the_zoo_classes():
    # label k of a scene is logit k of the zoo: the scenes draw zoo_net.CLASSES, shape by shape
    assert CLASSES is zoo_net.CLASSES
    assert tuple(SHAPE_CONTOURS) == zoo_net.CLASSES
    assert len(UNIT_SHAPES) == len(zoo_net.CLASSES)


def test_dataset_size_override_and_workers_give_the_same_arrays():
    one = make_dataset(130, 2, size=64)
    two = make_dataset(130, 2, SceneParams(size=128), size=64, workers=2)
    assert one[0].shape == (130, 64, 64, 3) and one[1].dtype == np.int64 and one[2].shape == (130, 4)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)
    # a fixed label is kept for every scene
    _, labels, _, _ = make_dataset(12, 0, SceneParams(size=64, label=4))
    assert set(labels.tolist()) == {4}


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: SceneParams(rotation=float("nan")), "rotation"),
        (lambda: SceneParams(colour=(300, 0, 0)), "colour"),
        (lambda: SceneParams(colour=(1, 2)), "colour"),
        (lambda: SceneParams(size=64, scale=0.1), "smaller than 8 px"),
        (lambda: SceneParams(center=(0.5,)), "center"),
        (lambda: SceneParams(label=-1), "label"),
        (lambda: make_scene(-1), "seed"),
        (lambda: make_dataset(0, 1), "n must be"),
        (lambda: make_dataset(3, 1, size=12), "size must be"),
        (lambda: make_dataset(3, 1, workers=-1), "workers"),
        (lambda: draw_box(np.zeros((8, 8), np.uint8), (1, 1, 3, 3)), "image"),
        (lambda: draw_box(np.zeros((8, 8, 3), np.uint8), (3, 1, 3, 3)), "y0 < y1"),
    ],
)
def test_bad_arguments(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()
