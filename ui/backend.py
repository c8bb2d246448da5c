"""Where the app's models run: in this process (the default) or on a Ray cluster.

Every page runs models through :func:`backend`: :meth:`Backend.analyze`, :meth:`Backend.add_gradcam`,
:meth:`Backend.categories` and :meth:`Backend.faithfulness` (in this process only). In this process
(no address set) models are loaded into the shared cache (:func:`ui.cached_model`) and run under
their lock; with a Ray address, the app process holds no model: each image is a request to the
model's deployment on the cluster (:mod:`attnviz.serving`), batched there with every other
session's, so several app replicas behind a reverse proxy share one pool of GPU replicas. Both give
the same compact result records.

The address is read, first found first, from the command line (``streamlit run app.py -- --ray
ADDRESS``), the environment (:data:`RAY_ADDRESS_ENV`) or ``.streamlit/secrets.toml``
(``[attnviz] ray_address = "..."``); empty or ``in-process`` means this process. A cluster that
cannot be reached stops the app at start with one sentence (:func:`check_backend`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import streamlit as st
from PIL import Image

import attnviz
from ui import cached_model

if TYPE_CHECKING:
    from attnviz.core.faithfulness_records import Faithfulness, InputMap
    from attnviz.serving import RayClient

__all__ = ["IN_PROCESS", "RAY_ADDRESS_ENV", "Backend", "backend", "check_backend", "ray_address"]

RAY_ADDRESS_ENV = "ATTNVIZ_RAY_ADDRESS"
"""The environment variable naming the Ray cluster whose models the app uses."""

IN_PROCESS = "in-process"
"""The address value that means: run the models in this process (as no address does)."""

Progress = Callable[[str, float | None], None]


def ray_address(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """The Ray address the app is told to use, or None for in-process (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    found: str | None = None
    for i, arg in enumerate(argv):
        if arg == "--ray" and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith("--ray="):
            found = arg.split("=", 1)[1]
    if found is None:
        found = environ.get(RAY_ADDRESS_ENV)
    if found is None:
        try:
            found = st.secrets.get("attnviz", {}).get("ray_address")
        except Exception:  # no secrets file, or one that does not parse: not set there
            found = None
    found = (found or "").strip()
    return None if found in ("", IN_PROCESS) else found


@st.cache_resource(show_spinner=False)
def _client(address: str) -> RayClient:
    # Connected once per server process and shared by every session; a failure is not cached,
    # so the next rerun tries again.
    from attnviz.serving import connect

    return connect(None if address == "auto" else address)


@dataclass(frozen=True)
class Backend:
    """The models' runner for the pages: in this process (``client`` None) or a Ray client."""

    client: RayClient | None = None

    @property
    def on_ray(self) -> bool:
        return self.client is not None

    @property
    def where(self) -> str:
        """For people: ``this process`` or ``the Ray cluster at ...``."""
        return self.client.where if self.client is not None else "this process"

    def served(self) -> set[str] | None:
        """The models the cluster serves, or None in-process (every model)."""
        return set(self.client.models) if self.client is not None else None

    def analyze(
        self,
        model: str,
        weights: str,
        device: str,
        images: Sequence[Image.Image | np.ndarray],
        *,
        gradcam: bool = True,
        progress: Progress | None = None,
        on_loaded: Callable[[], None] | None = None,
    ) -> list[attnviz.Analysis]:
        """One analysis per image (:func:`attnviz.analyze`), wherever the model runs.

        Args:
            model, weights, device: which model (``device`` is the cluster's own choice on Ray).
            images: the pictures.
            gradcam: also the Grad-CAM baseline.
            progress: the loader's progress callback (in-process loading only).
            on_loaded: called once the model is ready to analyse.
        """
        if self.client is not None:
            if on_loaded is not None:
                on_loaded()
            return self.client.analyze(model, list(images), weights=weights, gradcam=gradcam)
        loaded = cached_model(model, weights, device, progress)
        if on_loaded is not None:
            on_loaded()
        return attnviz.analyze(loaded, list(images), gradcam=gradcam)

    def add_gradcam(
        self,
        model: str,
        weights: str,
        device: str,
        analyses: Sequence[attnviz.Analysis],
        images: Sequence[Image.Image | np.ndarray],
        targets: Sequence[int | None] | None = None,
    ) -> list[attnviz.Analysis]:
        """:func:`attnviz.add_gradcam`, wherever the model runs."""
        if self.client is not None:
            return self.client.add_gradcam(model, analyses, images, weights=weights, targets=targets)
        loaded = cached_model(model, weights, device)
        return attnviz.add_gradcam(loaded, list(analyses), list(images), targets=targets)

    def faithfulness(
        self,
        model: str,
        weights: str,
        device: str,
        analysis: attnviz.Analysis,
        maps: Sequence[InputMap],
        target: int | None,
        road: bool,
    ) -> Faithfulness:
        """:func:`attnviz.analysis.faithfulness.measure` of ``maps`` of ``analysis``, in this process.

        Raises:
            ServingError: on Ray (the perturbed copies are measured here, never on the cluster).
        """
        if self.client is not None:
            raise attnviz.ServingError(
                "Faithfulness runs the model many times on perturbed copies; it is measured in the "
                "app's own process, not on the Ray cluster."
            )
        from attnviz.analysis.faithfulness import measure

        loaded = cached_model(model, weights, device)
        return measure(loaded, analysis, maps, target=target, road=road)

    def categories(self, model: str, weights: str, device: str) -> tuple[str, ...]:
        """The model's class names."""
        if self.client is not None:
            return self.client.categories(model, weights)
        return cached_model(model, weights, device).categories


def backend() -> Backend:
    """The backend this server uses (connects to Ray on first use).

    Raises:
        ServingError: the Ray cluster cannot be reached or serves no attnviz application.
    """
    address = ray_address()
    return Backend(_client(address)) if address is not None else Backend()


def check_backend() -> Backend | None:
    """The backend, or None after showing why the Ray cluster cannot be used (the page stops)."""
    try:
        return backend()
    except attnviz.AttnvizError as err:
        st.error(str(err), icon=":material/cloud_off:")
        return None
