"""Calling the models served on Ray: what the app (and a notebook) uses instead of loading models.

:func:`connect` joins a Ray cluster and finds the attnviz application on it, failing fast with one
sentence when it cannot (the address is probed first: an unreachable cluster does not make the
caller wait for Ray's own retries). :class:`RayClient` sends each image as its own request, so that
the model's replicas batch them with every other user's (:mod:`.replica`), and gives back the same
compact :class:`attnviz.Analysis` records that in-process analysis gives.

A replica that dies mid-request (its process killed, its node lost) is retried on another (Serve
starts a new one); if the retry fails too, or a replica does not answer within the timeout, a
:class:`attnviz.ServingError` says so in one sentence. A request's own problem (pretrained weights
missing on the cluster, a GPU out of memory even for one image) comes back as the library's error,
raised again here, so callers handle both backends alike.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from attnviz.core.errors import AttnvizError, ServingError
from attnviz.core.records import Analysis
from attnviz.runtime import as_rgb_array
from attnviz.serving.settings import APP_NAME

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "NO_CLUSTER",
    "RETRIES",
    "SERVE_HINT",
    "RayClient",
    "connect",
    "host_port",
    "join",
    "probe",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 600.0
"""Longest wait for one answer (a first request may wait for its replica to load the model)."""

RETRIES = 1
"""Further tries of a request whose replica died."""

PROBE_TIMEOUT_S = 3.0

Progress = Callable[[int, int], None]
"""``progress(done, total)``, called as answers arrive."""


SERVE_HINT = (
    "start it with `ray start --head` and `python -m attnviz serve`, or run the models in this "
    "process (no Ray address)"
)
"""What :func:`probe` suggests by default (for the models); a folder run suggests its own."""


def host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``host:port`` or ``ray://host:port``; None for ``auto`` and the like.

    Raises:
        ServingError: a port that is not a number.
    """
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ServingError(f"{address!r} is not a Ray address (host:port or ray://host:port).") from None
    return (host, port) if host and port else None


def probe(address: str, timeout_s: float = PROBE_TIMEOUT_S, hint: str = SERVE_HINT) -> None:
    """Raise :class:`ServingError` unless something listens at ``address``'s host and port.

    ``"auto"`` and addresses without a port are left to Ray. Accepts ``host:port`` (a cluster's
    GCS, what ``ray start --head`` prints) and ``ray://host:port`` (Ray Client). The error is one
    sentence ending with ``hint``.
    """
    target = host_port(address) if address not in ("", "auto", "local") else None
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout_s):
            pass
    except OSError as err:
        why = err.strerror or type(err).__name__
        raise ServingError(f"Cannot reach the Ray cluster at {address} ({why}): {hint}.") from None


def connect(
    address: str | None = None, *, app_name: str = APP_NAME, timeout_s: float = DEFAULT_TIMEOUT_S
) -> RayClient:
    """A client of the attnviz application on the Ray cluster at ``address``.

    Args:
        address: ``host:port`` of the cluster (``ray start --head`` prints it), ``ray://host:10001``
            (Ray Client, from a machine outside the cluster), ``"auto"`` (the cluster this machine
            belongs to), or None: the Ray this process is already connected to, else ``"auto"``.
            A process connected to Ray already keeps that connection (Ray has one per process);
            a named address is still probed first.
        app_name: the Serve application's name.
        timeout_s: longest wait for one answer.

    Raises:
        ServingError: the cluster cannot be reached, or it serves no attnviz application.
    """
    join(address)
    return RayClient(address, app_name=app_name, timeout_s=timeout_s)


NO_CLUSTER = (
    "No Ray cluster runs on this machine: start one with `ray start --head` and "
    "`python -m attnviz serve`, or name one (HOST:6379 or ray://HOST:10001)."
)
"""What :func:`join` says when ``"auto"`` finds no cluster (the models' wording by default)."""


def _same_cluster(target: tuple[str, int] | None, gcs: str, node_ip: str) -> bool:
    """Whether ``target`` names the GCS at ``gcs`` (a loopback host stands for this node)."""

    def ip(host: str) -> str:
        with contextlib.suppress(OSError):
            host = socket.gethostbyname(host)
        return node_ip if host.startswith("127.") else host

    connected = host_port(gcs)
    return bool(target and connected and target[1] == connected[1] and ip(target[0]) == ip(connected[0]))


def join(address: str | None, *, hint: str = SERVE_HINT, no_cluster: str = NO_CLUSTER) -> bool:
    """Connect this process to the Ray cluster at ``address`` (as :func:`connect` takes it).

    A named ``host:port`` or ``ray://host:port`` is probed first, connected or not, so an unreachable
    cluster fails in seconds with one sentence ending in ``hint``. A process already connected keeps
    its connection (Ray has one per process); a named address that is not that cluster's GCS is
    refused, not ignored. ``no_cluster`` is the sentence when ``"auto"`` finds none.

    Returns:
        True when this call connected (the caller shuts Ray down when done), False when it was.

    Raises:
        ServingError: as above, or Ray's own refusal in one line.
    """
    import ray

    named = address not in (None, "", "auto")
    if named:
        probe(str(address), hint=hint)
    if ray.is_initialized():
        gcs = ray.get_runtime_context().gcs_address
        if named and not _same_cluster(host_port(str(address)), gcs, ray.util.get_node_ip_address()):
            raise ServingError(
                f"This process is already connected to the Ray cluster at {gcs}, not {address}: "
                "leave the address out to use it, or call ray.shutdown() first."
            )
        return False
    try:
        ray.init(address=address or "auto", log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as err:
        if not named:
            raise ServingError(no_cluster) from None
        raise ServingError(f"Cannot join the Ray cluster at {address}: {_first_line(err)}") from None
    return True


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


class RayClient:
    """The models of one attnviz Serve application.

    Construct it with :func:`connect`. Thread-safe: the app's sessions share one client.

    Attributes:
        address: the cluster it talks to, as given (None: the one this process is connected to).
        models: served model name -> its deployment's name.
    """

    def __init__(
        self, address: str | None, *, app_name: str = APP_NAME, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        from ray import serve

        self.address, self._app, self._timeout = address, app_name, timeout_s
        try:
            status = serve.status().applications.get(app_name)
        except Exception as err:  # Serve not started on the cluster: any error means "no app"
            raise ServingError(self._no_app(f"Serve is not running ({_first_line(err)})")) from None
        if status is None:
            raise ServingError(self._no_app("no application of that name"))
        state = str(status.status).rsplit(".", 1)[-1]
        if state in ("DEPLOYING", "UNHEALTHY"):  # Serve is replacing replicas: requests will wait
            log.warning("the attnviz application on %s is %s: %s", self.where, state, status.message)
        elif state != "RUNNING":
            raise ServingError(
                self._no_app(f"the application is {status.status}: {status.message}".strip(": "))
            )
        self.models: dict[str, str] = serve.get_app_handle(app_name).models.remote().result(timeout_s=60)
        self._handles: dict[str, Any] = {}
        self._categories: dict[tuple[str, str], tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def _no_app(self, why: str) -> str:
        return (
            f"{self.where[0].upper()}{self.where[1:]} serves no attnviz application named "
            f"{self._app!r} ({why}): run `python -m attnviz serve` there first."
        )

    @property
    def where(self) -> str:
        """Where models run, for people: ``the Ray cluster at ...``."""
        return f"the Ray cluster at {self.address}" if self.address else "the connected Ray cluster"

    def handle(self, model: str) -> Any:
        """The deployment handle of ``model``; :class:`ServingError` when it is not served."""
        from ray import serve

        if model not in self.models:
            served = ", ".join(sorted(self.models)) or "none"
            raise ServingError(f"{model} is not served by {self.where} (served: {served}).")
        with self._lock:
            if model not in self._handles:
                self._handles[model] = serve.get_deployment_handle(self.models[model], app_name=self._app)
            return self._handles[model]

    # ----------------------------------------------------------------------------------------------

    def categories(self, model: str, weights: str = "pretrained") -> tuple[str, ...]:
        """The model's class names (asked once, then remembered)."""
        key = (model, weights)
        if key not in self._categories:
            self._categories[key] = self._call(model, "categories", [(weights,)])[0]
        return self._categories[key]

    def analyze(
        self,
        model: str,
        images: Sequence[Image.Image | np.ndarray],
        *,
        weights: str = "pretrained",
        gradcam: bool = True,
        topk: int | None = None,
        progress: Progress | None = None,
    ) -> list[Analysis]:
        """One compact analysis per image, in order (as :func:`attnviz.analyze` then
        :func:`attnviz.compact`), each image its own request so the replicas batch them with
        every other user's."""
        pixels = [as_rgb_array(img) for img in images]
        calls = [(p, weights, gradcam, topk) for p in pixels]
        return self._call(model, "analyze", calls, progress)

    def add_gradcam(
        self,
        model: str,
        analyses: Sequence[Analysis],
        images: Sequence[Image.Image | np.ndarray],
        *,
        weights: str = "pretrained",
        targets: Sequence[int | None] | None = None,
    ) -> list[Analysis]:
        """As :func:`attnviz.add_gradcam`, on the cluster."""
        if len(images) != len(analyses):
            raise ValueError(
                f"add_gradcam needs one image per analysis, got {len(images)} for {len(analyses)}"
            )
        targets = list(targets) if targets is not None else [None] * len(analyses)
        calls = [
            (as_rgb_array(img), a, weights, t) for img, a, t in zip(images, analyses, targets, strict=True)
        ]
        return self._call(model, "add_gradcam", calls, None)

    def describe(self, model: str) -> dict:
        """What one of ``model``'s replicas says about itself (device, recent batch sizes)."""
        return self.handle(model).describe.remote().result(timeout_s=self._timeout)

    # ----------------------------------------------------------------------------------------------

    def _call(self, model: str, method: str, calls: list[tuple], progress: Progress | None = None) -> list:
        """Send every call at once, collect the answers in order; retry those whose replica died."""
        from ray import exceptions as rex

        handle = getattr(self.handle(model), method)
        pending = [handle.remote(*args) for args in calls]
        answers: list[Any] = []
        for i, response in enumerate(pending):
            tries = 0
            while True:
                try:
                    answer = response.result(timeout_s=self._timeout)
                    break
                except (rex.RayActorError, rex.ActorUnavailableError) as err:
                    if tries >= RETRIES:
                        raise ServingError(
                            f"The replica serving {model} stopped while answering and so did its retry "
                            f"({_first_line(err)}); try again in a minute, when Serve has replaced it."
                        ) from None
                    tries += 1
                    log.warning("%s: a replica stopped mid-request (%s); retrying", model, _first_line(err))
                    response = handle.remote(*calls[i])
                except (TimeoutError, rex.GetTimeoutError):
                    raise ServingError(
                        f"{model} on {self.where} did not answer within {self._timeout:.0f} s; the cluster "
                        "may be overloaded."
                    ) from None
                except rex.RayTaskError as err:  # a bug on the replica's side, not the request's
                    log.error("%s.%s failed on the cluster: %s", model, method, err)
                    raise ServingError(
                        f"{model} failed on {self.where}; the details are in the cluster's logs."
                    ) from None
            if isinstance(answer, AttnvizError):
                raise answer
            answers.append(answer)
            if progress is not None:
                progress(i + 1, len(pending))
        return answers
