"""Serving: the models on Ray Serve, for the app's sessions and other clients on many machines.

The app's default runs every model in its own process (``ui``'s shared model cache); this package is
the other backend. :mod:`.settings` checks what a deployment serves (plain Python, from a Ray Serve
config file's ``args`` or the ``serve`` command's options); :mod:`.replica` is one model's
deployment, batching the single-image requests of every user into one :func:`attnviz.analyze`;
:mod:`.ingress` is the application's ingress (the served models, and ``POST /analyze`` for plain
HTTP clients); :mod:`.app` builds and deploys the application; :mod:`.client` is what the app (or a
notebook) calls instead of loading models.

It may import :mod:`attnviz.io` and everything below it. Ray is imported by :mod:`.replica`,
:mod:`.ingress`, :mod:`.app` and, when connecting, :mod:`.client`; importing this package does not
import Ray.
"""

from attnviz.serving.client import RayClient, connect, probe
from attnviz.serving.settings import (
    APP_NAME,
    ModelSettings,
    ServeSettings,
    SettingsError,
    deployment_name,
    read_config,
)

__all__ = [
    "APP_NAME",
    "ModelSettings",
    "RayClient",
    "ServeSettings",
    "SettingsError",
    "connect",
    "deployment_name",
    "probe",
    "read_config",
]
