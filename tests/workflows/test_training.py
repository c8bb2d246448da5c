"""The one training loop: settings validated, loss falls, reports at the right steps, stops on request."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn

from attnviz.layers.zoo_net import MEAN, STD
from attnviz.workflows.scenes import SceneParams, make_dataset
from attnviz.workflows.training import TrainOutcome, TrainSettings, train


def _tiny_model(classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=4, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, classes),
    )


@pytest.fixture(scope="module")
def scenes():
    images, labels, _, _ = make_dataset(48, 3, SceneParams(size=64), classes=3)
    return images, labels


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("steps", 0, "steps must be a positive integer"),
        ("batch_size", 2.5, "batch_size must be a positive integer"),
        ("lr", 0.0, r"lr must be a number in \(0.0, 1.0\]"),
        ("weight_decay", -1e-3, "weight_decay must be"),
        ("label_smoothing", 1.0, "label_smoothing must be"),
        ("warmup", 1.0, "warmup must be"),
        ("seed", -1, "seed must be a non-negative integer"),
        ("steps", True, "steps must be a positive integer"),
        ("flip", "yes", "flip must be True or False"),
    ],
)
def test_settings_are_validated(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainSettings(**{field: value})


def test_loss_falls_and_reports_come_at_the_right_steps(scenes):
    images, labels = scenes
    model = _tiny_model()
    seen = []

    def on_progress(progress, m):
        assert m is model and m.training
        seen.append((progress.step, progress.steps, progress.loss))

    settings = TrainSettings(steps=30, batch_size=16, lr=1e-2, seed=1)
    outcome = train(model, images, labels, settings, mean=MEAN, std=STD, every=7, on_progress=on_progress)
    assert isinstance(outcome, TrainOutcome)
    assert [s for s, _, _ in seen] == [7, 14, 21, 28, 30]
    assert all(n == 30 for _, n, _ in seen)
    assert outcome.steps_done == 30 and not outcome.stopped and len(outcome.losses) == 30
    assert outcome.batch_sizes == (16,) * 30  # 48 scenes = three full batches per pass
    assert np.mean(outcome.losses[-6:]) < np.mean(outcome.losses[:6])
    assert not model.training
    assert outcome.samples_per_s > 0


def test_a_pass_ends_with_a_smaller_batch_and_every_zero_reports_once(scenes):
    images, labels = scenes
    seen = []
    outcome = train(
        _tiny_model(),
        images[:40],
        labels[:40],
        TrainSettings(steps=6, batch_size=16),
        mean=MEAN,
        std=STD,
        on_progress=lambda p, _m: seen.append(p.step),
    )
    assert outcome.batch_sizes == (16, 16, 8, 16, 16, 8)
    assert seen == [6]


def test_same_settings_give_the_same_weights(scenes):
    images, labels = scenes
    settings = TrainSettings(steps=5, batch_size=8, seed=4)
    a, b = _tiny_model(), _tiny_model()
    train(a, images, labels, settings, mean=MEAN, std=STD)
    train(b, torch.from_numpy(images), torch.from_numpy(labels), settings, mean=MEAN, std=STD)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(pa, pb, msg=name)


def test_cancel_stops_after_the_current_step_and_leaves_eval_mode(scenes):
    images, labels = scenes
    cancel = threading.Event()
    model = _tiny_model()

    def on_progress(progress, _m):
        if progress.step == 4:
            cancel.set()

    outcome = train(
        model,
        images,
        labels,
        TrainSettings(steps=50, batch_size=8),
        mean=MEAN,
        std=STD,
        every=2,
        on_progress=on_progress,
        cancel=cancel,
    )
    assert outcome.stopped and outcome.steps_done == 4
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


def test_model_ends_in_eval_mode_when_the_callback_fails(scenes):
    images, labels = scenes
    model = _tiny_model()

    def boom(_p, _m):
        raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        train(model, images, labels, TrainSettings(steps=3), mean=MEAN, std=STD, every=1, on_progress=boom)
    assert not model.training


def test_bad_data_and_arguments_are_refused(scenes):
    images, labels = scenes
    model = _tiny_model()
    settings = TrainSettings(steps=1)
    with pytest.raises(ValueError, match=r"images must be uint8 \[N, S, S, 3\]"):
        train(model, images.astype(np.float32), labels, settings, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="labels must be"):
        train(model, images, labels[:3], settings, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="every must be"):
        train(model, images, labels, settings, mean=MEAN, std=STD, every=-1)
    with pytest.raises(ValueError, match="autocast must be"):
        train(model, images, labels, settings, mean=MEAN, std=STD, autocast="fp8")


def test_bf16_autocast_trains_on_cpu(scenes):
    images, labels = scenes
    outcome = train(
        _tiny_model(),
        images,
        labels,
        TrainSettings(steps=2, batch_size=8),
        mean=MEAN,
        std=STD,
        autocast="bf16",
    )
    assert outcome.steps_done == 2 and all(np.isfinite(outcome.losses))


def test_scenes_restricted_to_classes_and_sizes():
    _images, labels, boxes, _ = make_dataset(30, 2, SceneParams(size=64), classes=3, scale_range=(0.3, 0.3))
    assert set(labels.tolist()) == {0, 1, 2} and np.bincount(labels).tolist() == [10, 10, 10]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    _small, _, small_boxes, _ = make_dataset(30, 2, SceneParams(size=64), classes=3, scale_range=(0.15, 0.15))
    small_areas = (small_boxes[:, 2] - small_boxes[:, 0]) * (small_boxes[:, 3] - small_boxes[:, 1])
    assert small_areas.mean() < areas.mean() / 2
    # the default draw is unchanged by the new arguments
    a = make_dataset(5, 9, SceneParams(size=64))
    b = make_dataset(5, 9, SceneParams(size=64), classes=None, scale_range=None)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="classes must be an integer from 2 to 10"):
        make_dataset(5, 9, classes=11)
    with pytest.raises(ValueError, match="scale_range must be"):
        make_dataset(5, 9, scale_range=(0.3, 0.2))
