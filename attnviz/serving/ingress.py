"""The Serve application's front door: the list of served models, and a plain HTTP route.

:class:`Ingress` is the application's ingress deployment. Python clients (the app, through
:mod:`.client`) ask it which models are served (:meth:`Ingress.models`) and then call each model's
deployment directly. Other clients (a notebook, a learning-platform plugin, ``curl``) use HTTP:

``GET /``
    JSON: the attnviz version and the served models.
``POST /analyze?model=NAME[&model=NAME...]``
    Optional parameters: ``filename=cat.jpg``, ``gradcam=0``, ``weights=random``, ``cmap``,
    ``alpha``, ``scale`` (as for ``python -m attnviz analyze``). The body is the image file (raw
    bytes, or a multipart form whose ``image`` field is the file and whose ``model`` fields name
    models); the file name (``filename``, or the form file's) names the result folders, as in the
    app's download. The answer is a ZIP of the export bundle the app's
    "Download everything" and ``python -m attnviz analyze`` write: ``summary.json`` and the PNGs,
    CSVs and HTML charts of every model. Errors are JSON ``{"error": sentence}`` with 400 (bad
    input), 404 (a model that is not served) or 503 (a model that cannot run now).

The image is checked by :func:`attnviz.load_image` (format by content, size and pixel limits), the
style by :func:`attnviz.io.export.validate_style`, before any model runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from attnviz.core.errors import AttnvizError, UnknownModelError
from attnviz.core.records import Analysis
from attnviz.core.version import __version__
from attnviz.io.bundle_writer import zip_bundle
from attnviz.io.export import export_files, validate_style
from attnviz.io.images import MAX_BYTES, load_image
from attnviz.runtime import as_rgb_array

__all__ = ["MAX_MODELS_PER_REQUEST", "Ingress"]

log = logging.getLogger(__name__)

MAX_MODELS_PER_REQUEST = 8
"""Most models one HTTP request may name."""


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Ingress:
    """The application's ingress: knows every model deployment by model name.

    Args:
        deployments: model name -> the handle of its deployment (Serve passes handles for the
            bound deployments).
        deployment_names: model name -> its deployment's name, for clients that call the models
            directly.
    """

    def __init__(self, deployments: dict[str, DeploymentHandle], deployment_names: dict[str, str]) -> None:
        self._handles = dict(deployments)
        self._names = dict(deployment_names)

    def models(self) -> dict[str, str]:
        """Served model name -> deployment name."""
        return dict(self._names)

    async def __call__(self, request: Request) -> Response:
        path = request.url.path.rstrip("/")
        if request.method == "GET" and path in ("", "/models"):
            return JSONResponse({"attnviz": __version__, "models": sorted(self._names)})
        if path != "/analyze":
            return _error(404, f"no route {request.method} {request.url.path}: use GET / or POST /analyze")
        if request.method != "POST":
            return _error(405, "POST the image to /analyze")
        try:
            return await self._analyze(request)
        except _BadRequest as err:
            return _error(err.status, str(err))

    async def _analyze(self, request: Request) -> Response:
        query = request.query_params
        models = list(dict.fromkeys(query.getlist("model")))
        name = query.get("filename") or ""
        length = int(request.headers.get("content-length") or 0)
        if length > MAX_BYTES + 2**16:
            raise _BadRequest(
                413, f"the upload is {length / 2**20:.1f} MiB; at most {MAX_BYTES / 2**20:.0f} MiB"
            )
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form()
            models += [str(m) for m in form.getlist("model") if str(m) not in models]
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                raise _BadRequest(400, "the form has no file field named 'image'")
            name = upload.filename or name
            body = await upload.read()
        else:
            body = await request.body()
        if not models:
            raise _BadRequest(400, "name at least one model: /analyze?model=NAME (GET / lists them)")
        if len(models) > MAX_MODELS_PER_REQUEST:
            raise _BadRequest(
                400, f"{len(models)} models named; at most {MAX_MODELS_PER_REQUEST} per request"
            )
        unknown = [m for m in models if m not in self._handles]
        if unknown:
            raise _BadRequest(
                404, f"not served here: {', '.join(unknown)} (served: {', '.join(sorted(self._names))})"
            )
        weights = query.get("weights", "pretrained")
        gradcam = query.get("gradcam", "1").lower() not in ("0", "false", "no")
        try:
            alpha = float(query.get("alpha", "0.5"))
            style = (query.get("cmap", "jet"), alpha, query.get("scale", "absolute"))
            validate_style(*style)
            image = await asyncio.to_thread(load_image, body, name=name or "The upload")
        except (AttnvizError, ValueError, TypeError) as err:
            raise _BadRequest(400, str(err)) from None
        pixels = as_rgb_array(image)
        answers = await asyncio.gather(
            *(self._handles[m].analyze.remote(pixels, weights, gradcam) for m in models)
        )
        results: list[tuple[str, Analysis]] = []
        for model, answer in zip(models, answers, strict=True):
            if isinstance(answer, AttnvizError):
                status = 404 if isinstance(answer, UnknownModelError) else 503
                raise _BadRequest(status, f"{model}: {getattr(answer, 'summary', None) or answer}")
            results.append((name or "image", answer))
        files = await asyncio.to_thread(export_files, results, cmap=style[0], alpha=alpha, scale=style[2])
        data = zip_bundle(files)
        stem = (name or "image").rsplit("/", 1)[-1].rsplit(".", 1)[0] or "image"
        return Response(
            data,
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="attnviz_{_safe(stem)}.zip"'},
        )


def _safe(stem: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:60] or "image"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def error_message(body: bytes) -> str:
    """The sentence of an error answer (for clients and tests)."""
    data: Any = json.loads(body)
    return str(data["error"])
