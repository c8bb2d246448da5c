"""The Ray Serve application: one deployment per model behind one ingress.

:func:`build` is the application builder a Ray Serve config file names
(``import_path: attnviz.serving.app:build``, its ``args`` read by
:class:`attnviz.serving.settings.ServeSettings`), so ``serve deploy serve.yaml`` deploys it on a
running cluster; :func:`deploy` is what ``python -m attnviz serve`` runs. Each model becomes a
deployment named after it (:func:`attnviz.serving.settings.deployment_name`) running
:class:`attnviz.serving.replica.ModelReplica`, with its replicas and, per replica, its CPU and GPU
share: given in the settings, or else the cluster's CPUs and GPUs shared out evenly over every
replica (a GPU share is never more than one GPU). :class:`attnviz.serving.ingress.Ingress` is the
application's ingress (the model list and the HTTP route).
"""

from __future__ import annotations

import logging
from typing import Any, cast

import ray
from ray import serve
from ray.serve import Application

from attnviz.serving.ingress import Ingress
from attnviz.serving.replica import ModelReplica
from attnviz.serving.settings import APP_NAME, ModelSettings, ServeSettings, deployment_name

__all__ = ["build", "deploy", "resources"]

log = logging.getLogger(__name__)


def resources(settings: ServeSettings, cluster: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per model, the CPUs and GPUs each replica reserves: as set, or ``cluster``'s shared out.

    Args:
        settings: the models and what they ask for.
        cluster: the cluster's resources (``ray.cluster_resources()``), ``{"CPU": .., "GPU": ..}``.
    """
    replicas = sum(m.replicas for m in settings.models)
    cpu_share = max(0.05, min(1.0, float(cluster.get("CPU", 1.0)) / replicas))
    gpu_share = min(1.0, float(cluster.get("GPU", 0.0)) / replicas)
    if settings.device == "cpu":
        gpu_share = 0.0
    out = {}
    for m in settings.models:
        out[m.name] = {
            "num_cpus": round(m.cpus if m.cpus is not None else cpu_share, 3),
            "num_gpus": round(m.gpus if m.gpus is not None else gpu_share, 3),
        }
    return out


def _deployment(m: ModelSettings, settings: ServeSettings, share: dict[str, float]) -> Any:
    options = {
        "name": deployment_name(m.name),
        "num_replicas": m.replicas,
        "ray_actor_options": share,
        # enough requests in flight per replica to fill a batch and gather the next one
        "max_ongoing_requests": 2 * settings.max_batch_size,
    }
    return (
        cast(Any, serve.deployment(ModelReplica))
        .options(**options)
        .bind(
            m.name,
            device=settings.device,
            preload=settings.preload,
            max_batch_size=settings.max_batch_size,
            batch_wait_s=settings.batch_wait_s,
            autocast=settings.autocast,
            threads=settings.threads,
        )
    )


def build(args: dict[str, Any] | ServeSettings | None = None) -> Application:
    """The application for ``args`` (a config file's ``args``, or settings already checked).

    Raises:
        SettingsError, UnknownModelError: ``args`` that cannot be served.
    """
    settings = args if isinstance(args, ServeSettings) else ServeSettings.from_args(args)
    cluster = ray.cluster_resources() if ray.is_initialized() else {}
    shares = resources(settings, cluster)
    bound = {m.name: _deployment(m, settings, shares[m.name]) for m in settings.models}
    names = {m.name: deployment_name(m.name) for m in settings.models}
    for m in settings.models:
        log.info("%s: %d replica(s), %s each", m.name, m.replicas, shares[m.name])
    ingress = cast(Any, serve.deployment(Ingress)).options(name="Ingress", ray_actor_options={"num_cpus": 0})
    return ingress.bind(bound, names)


def deploy(
    settings: ServeSettings,
    *,
    name: str = APP_NAME,
    route_prefix: str = "/",
    http_options: dict[str, Any] | None = None,
) -> None:
    """Deploy the application on the Ray this process is connected to and wait until it is ready
    (replicas loaded). Serve keeps it running after this process ends, until ``serve shutdown``.

    Args:
        settings: what to serve.
        name: the application's name (clients look it up by this name).
        route_prefix: where its HTTP routes live.
        http_options: Serve's HTTP options (``host``, ``port``) for a Serve not yet started.
    """
    if http_options:
        serve.start(http_options=http_options)
    serve.run(build(settings), name=name, route_prefix=route_prefix, blocking=False)
