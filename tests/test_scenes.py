"""Generated scenes: deterministic, and the box and mask agree with the pixels."""

from __future__ import annotations

import numpy as np
import pytest

from attnviz.scenes import CLASSES, SceneParams, draw_box, make_dataset, make_scene


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
