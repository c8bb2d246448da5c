"""What a Serve application serves: the models, their replicas and resources, and the batching.

:class:`ServeSettings` is read from the ``args`` of a Ray Serve config file (the file
``serve deploy`` takes, whose ``import_path`` is ``attnviz.serving.app:build``) or built by
``python -m attnviz serve`` from its options. Every value from outside is checked here, with one
sentence naming the key that is wrong. Plain Python: no Ray import.

The ``args`` mapping::

    models:                    # default: every zoo model (they ship their weights)
      - name: zoo_cbam         # a name from `python -m attnviz list`
      - name: deit_small_patch16_224
        replicas: 2            # default 1
        gpus: 0.5              # GPU share per replica; default: the cluster's GPUs shared out
        cpus: 1                # CPUs reserved per replica; default: the cluster's CPUs shared out
    device: auto               # auto | cpu | cuda
    preload: [pretrained]      # weights loaded when a replica starts
    max_batch_size: 16         # requests per forward, from every user together
    batch_wait_s: 0.02         # longest a request waits for others
    autocast: null             # null | bf16 | fp16
    threads: null              # torch CPU threads per replica (null: Ray's, one per CPU reserved)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnviz.backends import get_spec, list_models
from attnviz.core.errors import AttnvizError

__all__ = [
    "APP_NAME",
    "MAX_BATCH_SIZE",
    "ModelSettings",
    "ServeSettings",
    "SettingsError",
    "deployment_name",
    "read_config",
]

APP_NAME = "attnviz"
"""The Serve application's name (clients find it by this name)."""

MAX_BATCH_SIZE = 64
"""Largest ``max_batch_size`` accepted."""

MAX_BATCH_WAIT_S = 1.0
"""Longest ``batch_wait_s`` accepted, in seconds."""


class SettingsError(AttnvizError, ValueError):
    """A serve config or option that cannot be used; the message names the key."""


def deployment_name(model: str) -> str:
    """The deployment of ``model``: its name with anything but letters, digits, ``-`` and ``_``
    replaced (``vit_small_patch16_224.dino`` -> ``vit_small_patch16_224_dino``)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", model)


@dataclass(frozen=True)
class ModelSettings:
    """One model's deployment: replicas and the resources each reserves (None: shared out)."""

    name: str
    replicas: int = 1
    gpus: float | None = None
    cpus: float | None = None


@dataclass(frozen=True)
class ServeSettings:
    """Everything :func:`attnviz.serving.app.build` needs (see the module docstring)."""

    models: tuple[ModelSettings, ...]
    device: str = "auto"
    preload: tuple[str, ...] = ("pretrained",)
    max_batch_size: int = 16
    batch_wait_s: float = 0.02
    autocast: str | None = None
    threads: int | None = None

    @classmethod
    def from_args(cls, args: Mapping[str, Any] | None) -> ServeSettings:
        """Check ``args`` (a config file's ``args``); raises :class:`SettingsError`."""
        args = dict(args or {})
        known = {"models", "device", "preload", "max_batch_size", "batch_wait_s", "autocast", "threads"}
        unknown = sorted(set(args) - known)
        if unknown:
            raise SettingsError(
                f"unknown serve setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        models = _models(args.get("models"))
        device = args.get("device", "auto")
        if device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", str(device)):
            raise SettingsError(f"device must be auto, cpu or cuda, got {device!r}")
        preload = args.get("preload", ["pretrained"])
        if (
            not isinstance(preload, Sequence)
            or isinstance(preload, str)
            or any(w not in ("pretrained", "random") for w in preload)
        ):
            raise SettingsError(f"preload must be a list of pretrained and/or random, got {preload!r}")
        batch = _number(args, "max_batch_size", 16, int, 1, MAX_BATCH_SIZE)
        wait = _number(args, "batch_wait_s", 0.02, float, 0.0, MAX_BATCH_WAIT_S)
        autocast = args.get("autocast")
        if autocast not in (None, "bf16", "fp16"):
            raise SettingsError(f"autocast must be null, bf16 or fp16, got {autocast!r}")
        threads = None if args.get("threads") is None else int(_number(args, "threads", 1, int, 1, 256))
        return cls(models, str(device), tuple(preload), int(batch), float(wait), autocast, threads)

    def to_args(self) -> dict[str, Any]:
        """The ``args`` mapping of a config file that gives these settings."""
        models = []
        for m in self.models:
            entry: dict[str, Any] = {"name": m.name}
            if m.replicas != 1:
                entry["replicas"] = m.replicas
            for key in ("gpus", "cpus"):
                if getattr(m, key) is not None:
                    entry[key] = getattr(m, key)
            models.append(entry)
        return {
            "models": models,
            "device": self.device,
            "preload": list(self.preload),
            "max_batch_size": self.max_batch_size,
            "batch_wait_s": self.batch_wait_s,
            "autocast": self.autocast,
            "threads": self.threads,
        }


def _number(args: Mapping[str, Any], key: str, default: float, kind: type, lo: float, hi: float) -> float:
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and value != int(value)):
        raise SettingsError(f"{key} must be {'a whole number' if kind is int else 'a number'}, got {value!r}")
    if not (lo <= value <= hi) or not math.isfinite(value):
        raise SettingsError(f"{key} must be in [{lo:g}, {hi:g}], got {value!r}")
    return kind(value)


def _models(raw: Any) -> tuple[ModelSettings, ...]:
    if raw is None:
        return tuple(ModelSettings(s.name) for s in list_models() if s.name.startswith("zoo_"))
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise SettingsError("models must be a non-empty list of model names or {name: ...} entries")
    out: dict[str, ModelSettings] = {}
    for entry in raw:
        spec = {"name": entry} if isinstance(entry, str) else entry
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise SettingsError(f"each model needs a name, got {entry!r}")
        extra = sorted(set(spec) - {"name", "replicas", "gpus", "cpus"})
        if extra:
            raise SettingsError(
                f"model {spec['name']}: unknown key(s) {', '.join(extra)} (replicas, gpus, cpus)"
            )
        name = str(spec["name"])
        get_spec(name)  # UnknownModelError lists the known names
        if name in out:
            raise SettingsError(f"model {name} is listed twice")
        replicas = int(_number(spec, "replicas", 1, int, 1, 1024))
        gpus = _number(spec, "gpus", 0, float, 0, 64) if "gpus" in spec else None
        cpus = _number(spec, "cpus", 1, float, 0.01, 1024) if "cpus" in spec else None
        out[name] = ModelSettings(name, replicas, gpus, cpus)
    names = {deployment_name(n): n for n in out}
    if len(names) != len(out):
        raise SettingsError("two models share a deployment name (they differ only in punctuation)")
    return tuple(out.values())


def read_config(path: str | Path) -> tuple[ServeSettings, dict[str, Any]]:
    """A Ray Serve config file's attnviz application: its settings, and the file's other parts
    the ``serve`` command uses (``http_options``, the application's ``name`` and ``route_prefix``).

    Raises:
        SettingsError: no such file, not YAML, or no application importing
            ``attnviz.serving.app:build``, or bad ``args``.
    """
    import yaml  # installed with Ray

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as err:
        raise SettingsError(f"cannot read the serve config {p}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise SettingsError(f"{p} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{p} is not a Ray Serve config (a mapping with applications:)")
    apps = [
        a
        for a in data.get("applications") or []
        if isinstance(a, dict) and str(a.get("import_path", "")).startswith("attnviz.serving.app")
    ]
    if len(apps) != 1:
        raise SettingsError(f"{p} needs exactly one application with import_path: attnviz.serving.app:build")
    app = apps[0]
    settings = ServeSettings.from_args(app.get("args"))
    http = data.get("http_options") or {}
    if not isinstance(http, dict):
        raise SettingsError(f"{p}: http_options must be a mapping")
    return settings, {
        "http_options": http,
        "name": str(app.get("name", APP_NAME)),
        "route_prefix": str(app.get("route_prefix", "/")),
    }
