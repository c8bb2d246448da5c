"""Weight files: safe checkpoint loading, downloads with progress, and the Hugging Face cache.

Checkpoints load with safetensors or ``torch.load(weights_only=True)`` only; a download goes
through a temporary file and is checked against torch hub's hash prefix.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnviz.backends.base import ProgressFn, report
from attnviz.core.errors import CheckpointError

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "apply_checkpoint",
    "cached_hf_file",
    "check_reachable",
    "download",
    "hf_cache_dir",
    "hf_filenames",
    "load_checkpoint",
]


CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def download(url: str, dest: Path, progress: ProgressFn | None) -> None:
    """Download ``url`` to ``dest`` through a temporary file, checking torch hub's hash prefix."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=30) as resp:
        total = int(resp.headers.get("Content-Length") or 0)
        done = 0
        with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp:
            try:
                while chunk := resp.read(1 << 20):
                    tmp.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    frac = done / total if total else None
                    report(progress, f"Downloading {dest.name}: {done / 1e6:.0f} MB", frac)
                tmp.close()
                match = re.search(r"-([a-f0-9]{6,})\.", dest.name)
                if match and not digest.hexdigest().startswith(match.group(1)):
                    raise CheckpointError(f"Downloaded {dest.name} does not match its hash: try again.")
                shutil.move(tmp.name, dest)
            finally:
                if os.path.exists(tmp.name):
                    os.unlink(tmp.name)


def load_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict safely: safetensors, or ``torch.load(weights_only=True)``.

    Pickles that carry code are refused (weights_only), and so is anything that is not a mapping
    of parameter names to tensors. A ``state_dict``/``model`` wrapper and a ``module.`` prefix
    (DataParallel) are unwrapped.

    Raises:
        CheckpointError: with a message saying what is wrong with the file.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"Checkpoint {p} does not exist or is not a file.")
    if p.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise CheckpointError(f"Checkpoint {p.name}: expected one of {', '.join(CHECKPOINT_SUFFIXES)}.")
    try:
        if p.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(p), device="cpu")
        else:
            state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as err:  # the loaders raise many types for hostile or broken files
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            reason = "it contains Python objects, not only tensors (refused: only plain state dicts load)"
        raise CheckpointError(f"Checkpoint {p.name} could not be loaded safely: {reason}") from err
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"Checkpoint {p.name} holds no state dict (a mapping of names to tensors).")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"Checkpoint {p.name} has entries that are not tensors, e.g. {bad[0]!r}.")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def apply_checkpoint(module: nn.Module, state: dict[str, torch.Tensor], filename: str) -> None:
    """Load ``state`` into ``module`` strictly, or say which keys are missing, extra or misshapen.

    Raises:
        CheckpointError: the state dict does not fit the architecture.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if keys:
                shown = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
                parts.append(f"{len(keys)} {label} ({shown})")
        raise CheckpointError(f"Checkpoint {filename} does not fit this architecture: {'; '.join(parts)}.")
    module.load_state_dict(state, strict=True)


def check_reachable(url: str) -> None:
    """Fail fast (one connection attempt) instead of the hub clients' minute of retries when offline."""
    host = urllib.parse.urlsplit(url).hostname or ""
    with socket.create_connection((host, 443), timeout=5):
        pass


def hf_filenames(cfg) -> tuple[str, ...]:
    if getattr(cfg, "hf_hub_filename", None):
        return (cfg.hf_hub_filename,)
    return ("model.safetensors", "pytorch_model.bin")


def hf_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_hf_file(cfg) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    for filename in hf_filenames(cfg):
        hit = try_to_load_from_cache(cfg.hf_hub_id, filename)
        if isinstance(hit, str) and os.path.isfile(hit):
            return Path(hit)
    return None
