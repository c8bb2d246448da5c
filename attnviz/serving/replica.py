"""One model on Ray Serve: a replica that batches the requests of every user into one analysis.

:class:`ModelReplica` is the class each model's deployment runs (:mod:`.app` makes it a deployment
with the model's name, replica count and GPU share). Single-image requests from every app session,
notebook or HTTP client arrive at :meth:`ModelReplica.analyze`; ``@serve.batch`` hands the replica
a list of up to ``max_batch_size`` of them, waiting at most ``batch_wait_s`` for the list to fill,
and one :func:`attnviz.analyze` call runs them (grouped by weights and options), with the library's
model loading, input checks and GPU out-of-memory fallback. Results are stored compact
(:func:`attnviz.core.records.compact`), as the app keeps them.

A request that fails for a reason a person can act on gets the :class:`attnviz.AttnvizError` back as
its result (not raised: raised errors reach the caller wrapped in Ray's traceback), and the client
(:mod:`.client`) raises it again, so the app shows the same sentence whichever backend ran the model.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np
import torch
from ray import serve

from attnviz.analysis import AUTOCAST_DTYPES, add_gradcam, analyze
from attnviz.backends import LoadedModel, get_spec, load_model
from attnviz.core.errors import AttnvizError, ServingError
from attnviz.core.records import Analysis, compact
from attnviz.runtime import as_rgb_array, resolve_device

__all__ = ["DEFAULT_BATCH_WAIT_S", "DEFAULT_MAX_BATCH_SIZE", "SERVED_WEIGHTS", "ModelReplica"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_SIZE = 16
"""Most single-image requests one forward takes."""

DEFAULT_BATCH_WAIT_S = 0.02
"""Longest a request waits for others to share its forward, in seconds."""

SERVED_WEIGHTS = ("pretrained", "random")
"""The weights a client may ask for (a checkpoint path from outside is never opened)."""

_KEPT_BATCH_SIZES = 1000

_Request = TypeVar("_Request", "_AnalyzeRequest", "_GradcamRequest")


@dataclass(frozen=True)
class _AnalyzeRequest:
    image: np.ndarray
    weights: str
    gradcam: bool
    topk: int | None


@dataclass(frozen=True)
class _GradcamRequest:
    image: np.ndarray
    weights: str
    analysis: Analysis
    target: int | None


class ModelReplica:
    """One model, loaded once per replica, answering batched requests.

    Args:
        model: the model's name (:func:`attnviz.list_models`).
        device: ``"auto"`` (the replica's GPU when Ray gave it one, else the CPU), ``"cpu"`` or
            ``"cuda"``.
        preload: weights loaded when the replica starts, so the first request does not wait;
            weights that cannot be loaded (pretrained weights missing offline) are reported to the
            requests that ask for them.
        max_batch_size: most requests per forward.
        batch_wait_s: longest wait for a batch to fill, in seconds.
        autocast: ``None``, ``"bf16"`` or ``"fp16"`` (:func:`attnviz.analyze`).
        threads: CPU threads torch uses in this replica (Ray sets one per CPU it reserves); None
            keeps Ray's setting.
    """

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        preload: Sequence[str] = ("pretrained",),
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        batch_wait_s: float = DEFAULT_BATCH_WAIT_S,
        autocast: str | None = None,
        threads: int | None = None,
    ) -> None:
        get_spec(model)  # an unknown name stops the deployment with the registry's message
        if autocast is not None and autocast not in AUTOCAST_DTYPES:
            raise ValueError(f"autocast must be None, 'bf16' or 'fp16', got {autocast!r}")
        if threads:
            torch.set_num_threads(threads)
        self._name, self._device, self._autocast = model, resolve_device(device), autocast
        self._models: dict[str, LoadedModel] = {}
        self._load_lock = threading.Lock()
        self._batch_sizes: deque[int] = deque(maxlen=_KEPT_BATCH_SIZES)
        for method in (self._analyze_batch, self._gradcam_batch):
            method = cast(Any, method)  # @serve.batch's wrapper, typed as the plain coroutine
            method.set_max_batch_size(max_batch_size)
            method.set_batch_wait_timeout_s(batch_wait_s)
        for weights in preload:
            try:
                self._model(weights)
            except AttnvizError as err:
                log.warning("%s: %s weights not loaded at start: %s", model, weights, err)

    def _model(self, weights: str) -> LoadedModel:
        if weights not in SERVED_WEIGHTS:
            raise ServingError(f"{self._name} is served with pretrained or random weights, not {weights!r}.")
        with self._load_lock:
            if weights not in self._models:
                self._models[weights] = load_model(self._name, weights=weights, device=self._device)
            return self._models[weights]

    # ----------------------------------------------------------------------------------------------
    # What clients call (one image each)
    # ----------------------------------------------------------------------------------------------

    async def analyze(
        self, image: np.ndarray, weights: str = "pretrained", gradcam: bool = True, topk: int | None = None
    ) -> Analysis | AttnvizError:
        """The analysis of one ``[H, W, 3]`` uint8 image (batched with other requests), or the
        error that explains why there is none."""
        try:
            array = as_rgb_array(image)
        except (TypeError, ValueError) as err:
            return ServingError(f"{self._name} was sent something that is not an RGB image: {err}")
        return await self._analyze_batch(_AnalyzeRequest(array, weights, bool(gradcam), topk))

    async def add_gradcam(
        self, image: np.ndarray, analysis: Analysis, weights: str = "pretrained", target: int | None = None
    ) -> Analysis | AttnvizError:
        """``analysis`` with the Grad-CAM of ``target`` (None: its top-1 class), batched."""
        try:
            array = as_rgb_array(image)
        except (TypeError, ValueError) as err:
            return ServingError(f"{self._name} was sent something that is not an RGB image: {err}")
        return await self._gradcam_batch(_GradcamRequest(array, weights, analysis, target))

    def categories(self, weights: str = "pretrained") -> tuple[str, ...] | AttnvizError:
        """The model's class names (none for a feature extractor)."""
        try:
            return self._model(weights).categories
        except AttnvizError as err:
            return err

    def describe(self) -> dict:
        """Where this replica runs and the sizes of its recent batches (newest last)."""
        return {
            "model": self._name,
            "device": str(self._device),
            "threads": torch.get_num_threads(),
            "loaded": sorted(self._models),
            "batch_sizes": list(self._batch_sizes),
        }

    # ----------------------------------------------------------------------------------------------
    # Batches
    # ----------------------------------------------------------------------------------------------

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH_SIZE, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_S)
    async def _analyze_batch(self, requests: list[_AnalyzeRequest]) -> list[Analysis | AttnvizError]:
        self._batch_sizes.append(len(requests))
        # the forward runs off the event loop, so that the next batch gathers meanwhile
        return await asyncio.to_thread(self._grouped, requests, self._run_analyze, _analyze_key)

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH_SIZE, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_S)
    async def _gradcam_batch(self, requests: list[_GradcamRequest]) -> list[Analysis | AttnvizError]:
        self._batch_sizes.append(len(requests))
        return await asyncio.to_thread(self._grouped, requests, self._run_gradcam, lambda r: (r.weights,))

    def _grouped(
        self,
        requests: list[_Request],
        run: Callable[[list[_Request]], list[Analysis]],
        key: Callable[[_Request], tuple],
    ) -> list[Analysis | AttnvizError]:
        """``run`` once per group of requests that share ``key``; a group's error is each of its
        requests' result."""
        out: list[Analysis | AttnvizError | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(key(request), []).append(i)
        for members in groups.values():
            try:
                results: list[Analysis | AttnvizError] = list(run([requests[i] for i in members]))
            except AttnvizError as err:
                log.warning("%s: %s", self._name, err)
                results = [err] * len(members)
            except ValueError as err:  # e.g. a target that is not one of the model's classes
                results = [ServingError(f"{self._name} cannot answer that request: {err}")] * len(members)
            for i, result in zip(members, results, strict=True):
                out[i] = result
        return [r if r is not None else ServingError(f"{self._name} gave no result.") for r in out]

    def _run_analyze(self, requests: list[_AnalyzeRequest]) -> list[Analysis]:
        first = requests[0]
        model = self._model(first.weights)
        results = analyze(
            model,
            [r.image for r in requests],
            gradcam=first.gradcam,
            topk=first.topk,
            autocast=self._autocast,
        )
        return [compact(a) for a in results]

    def _run_gradcam(self, requests: list[_GradcamRequest]) -> list[Analysis]:
        model = self._model(requests[0].weights)
        done = add_gradcam(
            model,
            [r.analysis for r in requests],
            [r.image for r in requests],
            targets=[r.target for r in requests],
        )
        return [compact(a) for a in done]


def _analyze_key(request: _AnalyzeRequest) -> tuple:
    return (request.weights, request.gradcam, request.topk)
