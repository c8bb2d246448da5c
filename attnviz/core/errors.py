"""Exceptions that attnviz raises for bad input: each message is one user-facing sentence."""

from __future__ import annotations

__all__ = [
    "AttnvizError",
    "CheckpointError",
    "DeviceError",
    "GPUMemoryError",
    "ServingError",
    "UnknownModelError",
    "WeightsUnavailableError",
]


class AttnvizError(Exception):
    """Base class of every error attnviz raises on purpose; ``str(err)`` is meant for users."""


class UnknownModelError(AttnvizError, ValueError):
    """A model name that attnviz does not know."""


class DeviceError(AttnvizError, ValueError):
    """A device that does not exist or is not available on this machine."""


class GPUMemoryError(AttnvizError, RuntimeError):
    """The GPU ran out of memory even for a single image; a RuntimeError like torch's own.

    Attributes:
        device: the device that ran out of memory (``"cuda:0"``).
        free_mib: free memory on that device in MiB when it happened, or None when unknown.
    """

    def __init__(self, message: str, *, device: str, free_mib: int | None = None) -> None:
        super().__init__(message)
        self.device = device
        self.free_mib = free_mib

    def __reduce__(self):  # keyword-only fields: pickled whole (a Ray replica sends it to the app)
        return (_rebuild, (type(self), str(self), {"device": self.device, "free_mib": self.free_mib}))


class CheckpointError(AttnvizError, ValueError):
    """A checkpoint file that cannot be loaded safely, or does not fit the architecture."""


class WeightsUnavailableError(AttnvizError, LookupError):
    """Pretrained weights that are neither cached locally nor downloadable right now.

    ``str(err)`` is the whole story (what is missing, why, where it goes, every way out), as the
    command line prints it; ``summary`` is one plain sentence for a page, ``details`` the rest.

    Attributes:
        weights_file: the checkpoint file that is missing.
        expected_path: where attnviz (through the library's own cache) looks for it.
        summary: one sentence for people: what is missing and how to get it.
        details: further lines (the file, where it goes, why the download failed).
    """

    def __init__(
        self,
        message: str,
        *,
        weights_file: str,
        expected_path: str,
        summary: str | None = None,
        details: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.weights_file = weights_file
        self.expected_path = expected_path
        self.summary = summary or message
        self.details = tuple(details)

    def __reduce__(self):  # keyword-only fields: pickled whole (a Ray replica sends it to the app)
        fields = {
            "weights_file": self.weights_file,
            "expected_path": self.expected_path,
            "summary": self.summary,
            "details": self.details,
        }
        return (_rebuild, (type(self), str(self), fields))


class ServingError(AttnvizError, RuntimeError):
    """The model service cannot answer: a Ray cluster that cannot be reached, a model it does not
    serve, a replica that stopped mid-request, or one that did not answer in time."""


def _rebuild(cls: type, message: str, fields: dict) -> Exception:
    """An error with keyword-only fields back from its pickle."""
    return cls(message, **fields)
