"""The one context manager that owns every hook attnviz puts on a model.

``Capture`` registers forward hooks for a list of :class:`Tap` objects, stores what each tap
reads, and in ``finally`` removes every handle, restores every module's ``training`` flag and
every attribute it changed. Model families contribute taps (see :mod:`attnviz.capture.taps`), never a
copy of this loop.

Example::

    with Capture(model, taps) as cap, torch.inference_mode():
        logits = model(x)
    for tap, value in cap.results():
        ...
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from attnviz.capture.meta import TapMeta

__all__ = ["Capture", "Tap"]

log = logging.getLogger(__name__)

_MISSING = object()


@dataclass(frozen=True)
class Tap:
    """Where to read one attention quantity and how.

    Attributes:
        layer: qualified name of the attention module the record is attributed to.
        module: the submodule whose forward output is read (e.g. an SE block's gate).
        kind: attention family of the record (``"se"``, ``"gc_context"``, ``"ca"``, ...).
        record: the record type built from it: ``"channel"`` (ChannelWeights), ``"spatial"``
            (SpatialMap), ``"axis"`` (AxisGates), ``"token"`` (TokenAttention), ``"window"``
            (WindowAttention), ``"sampling"`` (SamplingPoints).
        read: maps the hooked module's output to a batch-first tensor: ``[B, C]`` or
            ``[B, paths, C]`` for channel records, ``[B, H, W]`` for spatial ones, ...
        path_labels: names of the paths of multi-path channel records.
        part: which part of a multi-part record this tap reads (``"h"``/``"w"`` for axis gates,
            ``"points"``/``"reference"``/``"attn"`` for sampling records); ``"value"`` otherwise.
        grid_of: a module whose input ``[B, C, H, W]`` gives the record's feature grid (H, W),
            for records whose values do not show it (token attention, sampling points).
        meta: static facts the record builder needs, typed (:mod:`attnviz.capture.meta`): a
            convolution's geometry, a window scheme, prefix-token names; None when none are needed.
        output_index: which element ``read`` gets when the module returns a tuple
            (``nn.MultiheadAttention`` returns ``(output, weights)``).
        call_kwargs: keyword arguments forced into the module's call for the capture (e.g.
            ``need_weights=True``), through a forward pre-hook.
        intercept: ``"softmax"`` reads every softmax computed inside ``module``'s forward instead
            of its output, for attention whose softmax is an inline function or tensor method
            (torchvision Swin, timm BoT/Halo). The module's ``forward`` is wrapped for the capture
            only (an instance attribute removed in ``finally``); nothing global is patched.
        attrs: ``(object, attribute, value)`` settings for the capture only, restored afterwards
            (e.g. timm's ``fused_attn = False``, without which the attention matrix never exists).
        read_input: read an argument of the module's call instead of its output: a position in
            ``args`` (``int``), or a parameter name (``str``) found among the keyword arguments or
            bound from the positional ones with the signature of ``module.forward``. An argument
            that is None (an optional mask not given) reads nothing.
        grid_from: where ``grid_of`` shows the grid: ``"input"`` (``[B, C, H, W]`` input),
            ``"input_nhwc"`` (``[B, H, W, C]`` input, Swin) or ``"output"`` (``[B, C, H, W]`` output,
            a patch-embedding convolution).
    """

    layer: str
    module: nn.Module
    kind: str
    record: Literal["channel", "spatial", "axis", "token", "window", "sampling"]
    read: Callable[[torch.Tensor], torch.Tensor]
    path_labels: tuple[str, ...] = ()
    part: str = "value"
    grid_of: nn.Module | None = None
    meta: TapMeta = None
    output_index: int = 0
    call_kwargs: Mapping[str, Any] = field(default_factory=dict)
    intercept: Literal["softmax"] | None = None
    attrs: tuple[tuple[object, str, Any], ...] = ()
    grid_from: Literal["input", "input_nhwc", "output"] = "input"
    read_input: int | str | None = None


_SOFTMAX_FUNCS = frozenset({torch.softmax, torch.nn.functional.softmax, torch.Tensor.softmax})


class _SoftmaxRecorder(TorchFunctionMode):
    """Records the output of every softmax computed while active (a torch function mode: scoped to
    the ``with`` block, nothing is patched)."""

    def __init__(self) -> None:
        super().__init__()
        self.outputs: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _SOFTMAX_FUNCS:
            self.outputs.append(out)
        return out


class Capture:
    """Hooks ``taps`` into ``model`` for the duration of a ``with`` block.

    On entry the model is put in eval mode; on exit (also when the forward raised) every hook is
    removed and every ``training`` flag and attribute set through :meth:`set_attr` is restored.

    Args:
        model: the model to capture from.
        taps: what to read; each tap's output is stored every time its module runs.
        read: False applies only the taps' settings (``attrs``, e.g. timm's unfused attention path)
            and reads nothing: the model runs as it does under capture, minus the hooks. The
            benchmark's "bare" forward of a ViT is this.
    """

    def __init__(self, model: nn.Module, taps: list[Tap], *, read: bool = True) -> None:
        self.model = model
        self.taps = list(taps)
        self.read = read
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._training: list[nn.Module] = []  # the modules that were in training mode
        self._attrs: list[tuple[object, str, Any]] = []
        self._values: list[tuple[Tap, torch.Tensor]] = []
        self._grids: dict[str, tuple[int, int]] = {}
        self._active = False

    def __enter__(self) -> Capture:
        if self._active:
            raise RuntimeError("Capture is not re-entrant")
        self._active = True
        try:
            # Only modules still in training mode change (loaded models are in eval mode already,
            # and walking ``model.eval()`` over hundreds of modules costs ~1 ms per capture).
            self._training = [m for m in self.model.modules() if m.training]
            if self._training:
                self.model.eval()
            for tap in self.taps:
                for obj, name, value in tap.attrs:
                    self.set_attr(obj, name, value)
                if not self.read:
                    continue
                if tap.intercept is not None:
                    self.set_attr(tap.module, "forward", self._intercepting(tap))
                elif tap.read_input is not None:
                    self._handles.append(
                        tap.module.register_forward_pre_hook(self._input_hook_for(tap), with_kwargs=True)
                    )
                else:
                    self._handles.append(tap.module.register_forward_hook(self._hook_for(tap)))
                if tap.call_kwargs:
                    self._handles.append(
                        tap.module.register_forward_pre_hook(self._kwargs_hook_for(tap), with_kwargs=True)
                    )
                if tap.grid_of is not None:
                    self._handles.append(self._grid_hook_for(tap))
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._restore()

    def set_attr(self, obj: object, name: str, value: Any) -> None:
        """Set ``obj.name = value`` until the capture ends (e.g. a fused-attention flag)."""
        if not self._active:
            raise RuntimeError("set_attr is only allowed inside the capture")
        own = getattr(obj, "__dict__", {})
        if name in own:
            old = own[name]
        elif hasattr(type(obj), name):
            old = _MISSING  # a class attribute (e.g. a method): the instance's copy goes again
        else:
            old = getattr(obj, name, _MISSING)  # e.g. a module's submodule or parameter
        self._attrs.append((obj, name, old))
        setattr(obj, name, value)

    def _store(self, tap: Tap, out: torch.Tensor) -> None:
        # A copy: later in-place ops of the network (residual adds, in-place activations)
        # must not change what was captured.
        self._values.append((tap, tap.read(out.detach()).to(torch.float32, copy=True)))

    def _hook_for(self, tap: Tap) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            self._store(tap, output[tap.output_index] if isinstance(output, tuple) else output)

        return hook

    def _input_hook_for(self, tap: Tap) -> Callable[..., None]:
        key = tap.read_input
        signature = inspect.signature(tap.module.forward) if isinstance(key, str) else None

        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if isinstance(key, int):
                value = args[key] if key < len(args) else None
            elif key in kwargs:
                value = kwargs[key]
            elif isinstance(key, str) and signature is not None:
                value = signature.bind_partial(*args, **kwargs).arguments.get(key)
            else:
                value = None
            if value is None:
                return
            if not isinstance(value, torch.Tensor):
                raise RuntimeError(
                    f"{tap.layer}: argument {key!r} of {type(module).__name__} is {type(value).__name__}, "
                    "not a tensor"
                )
            self._store(tap, value)

        return hook

    def _intercepting(self, tap: Tap) -> Callable[..., Any]:
        original = tap.module.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            with _SoftmaxRecorder() as recorder:
                out = original(*args, **kwargs)
            for value in recorder.outputs:
                self._store(tap, value)
            return out

        return forward

    @staticmethod
    def _kwargs_hook_for(tap: Tap) -> Callable[..., tuple]:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple:
            return args, {**kwargs, **tap.call_kwargs}

        return hook

    def _grid_hook_for(self, tap: Tap) -> torch.utils.hooks.RemovableHandle:
        layer, source = tap.layer, tap.grid_from

        def from_input(module: nn.Module, args: tuple) -> None:
            shape = args[0].shape
            hw = shape[1:3] if source == "input_nhwc" else shape[-2:]
            self._grids[layer] = (int(hw[0]), int(hw[1]))

        def from_output(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            self._grids[layer] = (int(output.shape[-2]), int(output.shape[-1]))

        module: nn.Module = tap.grid_of  # type: ignore[assignment]  # only called when set
        if source == "output":
            return module.register_forward_hook(from_output)
        return module.register_forward_pre_hook(from_input)

    def _restore(self) -> None:
        try:
            for handle in self._handles:
                handle.remove()
            for obj, name, old in reversed(self._attrs):
                if old is _MISSING:
                    delattr(obj, name)
                else:
                    setattr(obj, name, old)
            for module in self._training:
                module.training = True
        finally:
            self._handles.clear()
            self._attrs.clear()
            self._training.clear()
            self._active = False

    def results(self) -> list[tuple[Tap, torch.Tensor]]:
        """Every value read, in the order the hooks fired (forward order), on the CPU."""
        return [(tap, value.cpu()) for tap, value in self._values]

    def grids(self) -> dict[str, tuple[int, int]]:
        """Feature grid (H, W) seen at the input of each tap's ``grid_of`` module, by layer."""
        return dict(self._grids)

    def clear(self) -> None:
        """Forget the values read so far (hooks stay in place)."""
        self._values.clear()
        self._grids.clear()
