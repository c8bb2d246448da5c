"""Run a model for a page and report a failure the same way on every page.

The Compare page, the Scene lab and the Modules page each analyse pictures with a model through the
app's backend (:func:`ui.backend.backend`: in this process, or on a Ray cluster). When that fails,
the page keeps a :class:`Failure` in its session store and shows it where the result would have been
(:func:`show_failure`): for an attnviz error its one plain sentence with the details in an expander
(:func:`ui.maps.error_parts`), for anything else only :data:`UNEXPECTED`; the traceback goes to the
server log, never to the page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PIL import Image

import attnviz
from ui.backend import backend
from ui.maps import error_parts, error_with_details

__all__ = ["UNEXPECTED", "Failure", "attempt", "failure_of", "run_model", "show_failure"]

UNEXPECTED = "{model} failed unexpectedly; the details are in the server log."
"""What a page says about an error that is not an attnviz error (``{model}``: the model's name)."""

T = TypeVar("T")


@dataclass(frozen=True)
class Failure:
    """A model that could not run: one sentence for people, the details, and whether random weights
    would help (its pretrained weights are missing)."""

    message: str
    details: tuple[str, ...] = ()
    weights_hint: bool = False


def failure_of(model: str, err: Exception, log: logging.Logger, context: str) -> Failure:
    """What a page says about ``err``, raised while running ``model``; logged to ``log``.

    Args:
        model: the model's name.
        err: the exception.
        log: the page's logger: a warning with the message for an attnviz error, the traceback for
            anything else.
        context: what was being done, for the log (``"analysing the scene with {model}"``).
    """
    if isinstance(err, attnviz.AttnvizError):
        log.warning("%s failed: %s", context.format(model=model), err)
        summary, details = error_parts(err)
        return Failure(summary, details, isinstance(err, attnviz.WeightsUnavailableError))
    log.error("%s failed", context.format(model=model), exc_info=err)
    return Failure(UNEXPECTED.format(model=model))


def attempt(model: str, work: Callable[[], T], log: logging.Logger, context: str) -> T | Failure:
    """``work()``, or the :class:`Failure` it ended with (:func:`failure_of`)."""
    try:
        return work()
    except Exception as err:  # every failure becomes a message in the model's place on the page
        return failure_of(model, err, log, context)


def run_model(
    model: str,
    weights: str,
    device: str,
    images: Sequence[Image.Image | np.ndarray],
    log: logging.Logger,
    context: str,
    *,
    progress: attnviz.backends.ProgressFn | None = None,
    on_loaded: Callable[[], None] | None = None,
    gradcam: bool = True,
) -> list[attnviz.Analysis] | Failure:
    """Analyse ``images`` with the shared ``(model, weights, device)``, or say why it could not.

    Args:
        model, weights, device: which model (:func:`ui.cached_model` in-process; on Ray the
            cluster's replicas decide the device).
        images: the pictures (anything :func:`attnviz.analyze` takes).
        log, context: where and how a failure is logged (:func:`failure_of`).
        progress: the loader's progress callback.
        on_loaded: called once the model is ready, before the analysis.
        gradcam: passed to :func:`attnviz.analyze`.

    Returns:
        One analysis per image, or the :class:`Failure`.
    """

    def work() -> list[attnviz.Analysis]:
        return backend().analyze(
            model, weights, device, images, gradcam=gradcam, progress=progress, on_loaded=on_loaded
        )

    return attempt(model, work, log, context)


def show_failure(model: str, failure: Failure | None) -> None:
    """Show why ``model`` has no result: its failure, or that it produced none."""
    failure = failure or Failure(f"{model} produced no result.")
    error_with_details(failure.message, failure.details)
