"""Which submodule of each attention family holds its attention, and how to read it.

Each family contributes small :class:`~attnviz.capture.hooks.Tap` objects; :func:`find_taps` walks a
model once and returns them in module order. Adding a family means adding one function to
``_ADAPTERS``, not another capture loop.

Families read here (batch-first outputs of the hooked submodule):

* SE, torchvision ``ops.misc.SqueezeExcitation``: ``scale_activation`` -> ``[B, C, 1, 1]``.
* SE, timm ``SEModule``/``EffectiveSEModule``: ``gate`` -> ``[B, C, 1, 1]``.
* ECA, timm ``EcaModule``/``CecaModule``: ``gate`` -> ``[B, 1, C]``.
* SK, timm ``SelectiveKernelAttn``: the module -> ``[B, paths, C, 1, 1]`` (softmax over paths).
* Split attention, timm ``RadixSoftmax``: the module -> ``[B, radix * C]`` (softmax over radix).
* GC, timm ``GlobalContext``: ``conv_attn`` -> ``[B, 1, H, W]`` logits, softmax over H*W taken
  here (the softmax is inline in timm); ``mlp_add`` -> ``[B, C, 1, 1]`` added to every position;
  ``gate`` -> ``[B, C, 1, 1]`` when the block also scales.

attnviz's own modules (:mod:`attnviz.layers`) expose their attention as named submodules, so
their adapters only name them: CBAM ``channel.gate``/``spatial.gate``, CA ``gate_h``/``gate_w``,
GC ``context_softmax``, SK ``select``, non-local ``softmax``, MHSA ``attn_softmax``, DAttention
``points``/``reference``/``attn_softmax``, deformable conv ``offsets``/``mask_gate``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from timm.layers.attention import Attention as TimmAttention
from timm.layers.bottleneck_attn import BottleneckAttn
from timm.layers.eca import CecaModule, EcaModule
from timm.layers.global_context import GlobalContext
from timm.layers.halo_attn import HaloAttn
from timm.layers.selective_kernel import SelectiveKernel, SelectiveKernelAttn
from timm.layers.split_attn import SplitAttn
from timm.layers.squeeze_excite import EffectiveSEModule, SEModule
from timm.models.swin_transformer import SwinTransformerBlock as TimmSwinBlock
from timm.models.vision_transformer import VisionTransformer as TimmViT
from torch import nn
from torchvision.models.swin_transformer import ShiftedWindowAttention as TvShiftedWindowAttention
from torchvision.models.vision_transformer import VisionTransformer as TvViT
from torchvision.ops import DeformConv2d as TvDeformConv2d
from torchvision.ops.misc import SqueezeExcitation

from attnviz import layers as own
from attnviz.capture.hooks import Tap
from attnviz.capture.meta import ConvGeometry, DatSampling, HaloWindows, SwinWindows, TokenPrefix
from attnviz.layers.dat_tiny import LocalAttention, ShiftWindowAttention

__all__ = ["find_taps"]


@dataclass(frozen=True)
class _Context:
    """What an adapter may need beyond the module itself, read from the model once.

    Attributes:
        model: the whole model.
        parents: qualified name -> parent module.
        prefix_names: a ViT's prefix tokens in order (``"cls"``, ``"dist"``, ``"reg1"``...).
        patch_embed: a ViT's patch-embedding convolution, whose output ``[B, C, H, W]`` shows the
            token grid; None for models that are not ViTs.
    """

    model: nn.Module
    parents: dict[str, nn.Module]
    prefix_names: tuple[str, ...] = ()
    patch_embed: nn.Module | None = None


def _token_layout(model: nn.Module) -> tuple[tuple[str, ...], nn.Module | None]:
    """(prefix token names, patch-embedding conv) of a timm or torchvision ViT, read from the model."""
    if isinstance(model, TimmViT):
        names = ["cls"] if getattr(model, "cls_token", None) is not None else []
        if getattr(model, "dist_token", None) is not None:
            names.append("dist")
        names += [f"reg{i + 1}" for i in range(getattr(model, "num_reg_tokens", 0))]
        if len(names) != model.num_prefix_tokens:
            raise ValueError(
                f"{type(model).__name__} has {model.num_prefix_tokens} prefix tokens, "
                f"attnviz identified {names}"
            )
        return tuple(names), model.patch_embed.proj
    if isinstance(model, TvViT):
        return ("cls",), model.conv_proj
    return (), None


def _flat(out: torch.Tensor) -> torch.Tensor:
    return out.reshape(out.shape[0], -1)


def _se(name: str, m: nn.Module, ctx: _Context) -> Iterator[Tap]:
    if isinstance(m, SqueezeExcitation):
        yield Tap(name, m.scale_activation, "se", "channel", _flat)
    elif isinstance(m, SEModule | EffectiveSEModule):
        yield Tap(name, m.gate, "se", "channel", _flat)


def _eca(name: str, m: nn.Module, ctx: _Context) -> Iterator[Tap]:
    if isinstance(m, EcaModule | CecaModule):
        yield Tap(name, m.gate, "eca", "channel", _flat)


def _sk(name: str, m: nn.Module, ctx: _Context) -> Iterator[Tap]:
    if isinstance(m, SelectiveKernelAttn):
        parent = ctx.parents.get(name)
        labels: tuple[str, ...] = ()
        if isinstance(parent, SelectiveKernel):
            labels = tuple(_conv_label(path) for path in parent.paths)
        yield Tap(name, m, "sk", "channel", lambda out: out.flatten(3).squeeze(3), labels)


def _split(name: str, m: nn.Module, ctx: _Context) -> Iterator[Tap]:
    if isinstance(m, SplitAttn) and m.radix > 1:
        radix = m.radix
        labels = tuple(f"split {i}" for i in range(radix))
        layer = name
        yield Tap(
            layer, m.rsoftmax, "split", "channel", lambda out: out.reshape(out.shape[0], radix, -1), labels
        )


def _gc(name: str, m: nn.Module, ctx: _Context) -> Iterator[Tap]:
    if isinstance(m, GlobalContext):
        if m.conv_attn is not None:
            yield Tap(name, m.conv_attn, "gc_context", "spatial", _softmax_over_positions)
        if m.mlp_scale is not None:
            yield Tap(name, m.gate, "gc_scale", "channel", _flat)
        if m.mlp_add is not None:
            yield Tap(name, m.mlp_add, "gc_add", "channel", _flat)


def _own(name: str, m: nn.Module, ctx: _Context) -> Iterator[Tap]:
    """attnviz's own modules: every one exposes its attention through a named submodule."""
    if isinstance(m, own.SqueezeExcite):
        yield Tap(name, m.gate, "se", "channel", _flat)
    elif isinstance(m, own.EfficientChannelAttention):
        yield Tap(name, m.gate, "eca", "channel", _flat)
    elif isinstance(m, own.CBAM):
        yield Tap(name, m.channel.gate, "cbam_channel", "channel", _flat)
        yield Tap(name, m.spatial.gate, "cbam_spatial", "spatial", lambda out: out[:, 0])
    elif isinstance(m, own.CoordAttention):
        yield Tap(name, m.gate_h, "ca", "axis", lambda out: out[..., 0], part="h")
        yield Tap(name, m.gate_w, "ca", "axis", lambda out: out[:, :, 0], part="w")
    elif isinstance(m, own.GlobalContext):
        yield Tap(name, m.context_softmax, "gc_context", "spatial", lambda out: out[:, 0])
        if m.mlp_scale is not None and m.gate is not None:
            yield Tap(name, m.gate, "gc_scale", "channel", _flat)
        if m.mlp_add is not None:
            yield Tap(name, m.mlp_add, "gc_add", "channel", _flat)
    elif isinstance(m, own.SelectiveKernel):
        labels = tuple(m.path_labels)
        yield Tap(name, m.select, "sk", "channel", lambda out: out.flatten(2), labels)
    elif isinstance(m, own.NonLocal):
        yield Tap(name, m.softmax, "nonlocal", "token", lambda out: out[:, None], grid_of=m)
    elif isinstance(m, own.MultiHeadSelfAttention):
        yield Tap(name, m.attn_softmax, "mhsa", "token", lambda out: out, grid_of=m)
    elif isinstance(m, own.DAttention):
        dat = DatSampling()
        yield Tap(name, m.points, "dat", "sampling", lambda out: out, part="points", grid_of=m, meta=dat)
        yield Tap(name, m.reference, "dat", "sampling", lambda out: out, part="reference", meta=dat)
        yield Tap(name, m.attn_softmax, "dat", "token", lambda out: out, grid_of=m)
    elif isinstance(m, own.DeformConv):
        meta = _conv_meta(m)
        yield Tap(
            name, m.offsets, "deform_conv", "sampling", lambda out: out, part="offsets", grid_of=m, meta=meta
        )
        if m.mask_gate is not None:
            yield Tap(name, m.mask_gate, "deform_conv", "sampling", lambda out: out, part="mask", meta=meta)


def _timm_vit(name: str, m: nn.Module, ctx: _Context) -> Iterator[Tap]:
    """timm ViT/DeiT/DINO attention: unfused for the capture, softmax read at ``attn_drop``."""
    if isinstance(m, TimmAttention) and ctx.patch_embed is not None:
        yield Tap(
            name, m.attn_drop, "vit", "token", _same,
            grid_of=ctx.patch_embed, grid_from="output", attrs=((m, "fused_attn", False),),
            meta=TokenPrefix(ctx.prefix_names),
        )  # fmt: skip


def _tv_vit(name: str, m: nn.Module, ctx: _Context) -> Iterator[Tap]:
    """torchvision ViT: ``nn.MultiheadAttention`` asked for unaveraged per-head weights."""
    if isinstance(m, nn.MultiheadAttention) and isinstance(ctx.model, TvViT):
        yield Tap(
            name, m, "vit", "token", _same, output_index=1,
            call_kwargs={"need_weights": True, "average_attn_weights": False},
            grid_of=ctx.patch_embed, grid_from="output", meta=TokenPrefix(ctx.prefix_names),
        )  # fmt: skip


def _timm_swin(name: str, m: nn.Module, ctx: _Context) -> Iterator[Tap]:
    """timm Swin: ``WindowAttention.softmax`` -> ``[B*nW, heads, ws^2, ws^2]`` (rolled, then padded)."""
    if isinstance(m, TimmSwinBlock):
        meta = SwinWindows("timm_swin", _pair(m.window_size), _pair(m.shift_size))
        yield Tap(
            f"{name}.attn", m.attn.softmax, "swin", "window", _same, grid_of=m, grid_from="input_nhwc",
            attrs=((m.attn, "fused_attn", False),), meta=meta,
        )  # fmt: skip


def _tv_swin(name: str, m: nn.Module, ctx: _Context) -> Iterator[Tap]:
    """torchvision Swin: the softmax inside ``shifted_window_attention`` (padded, then rolled)."""
    if isinstance(m, TvShiftedWindowAttention):
        meta = SwinWindows("tv_swin", _pair(m.window_size), _pair(m.shift_size))
        yield Tap(name, m, "swin", "window", _same, intercept="softmax", grid_of=m, grid_from="input_nhwc",
                  meta=meta)  # fmt: skip


def _bot(name: str, m: nn.Module, ctx: _Context) -> Iterator[Tap]:
    """timm BottleneckAttn (BoTNet): global attention over the feature map, softmax inline."""
    if isinstance(m, BottleneckAttn):
        heads = m.num_heads
        yield Tap(
            name, m, "bot", "token", lambda out: out.unflatten(0, (-1, heads)), intercept="softmax", grid_of=m
        )


def _halo(name: str, m: nn.Module, ctx: _Context) -> Iterator[Tap]:
    """timm HaloAttn (HaloNet): blocks attend to their block plus a halo, softmax inline.

    The softmax is ``[B*heads, blocks, bs^2, win^2]``; read as ``[B*blocks, heads, bs^2, win^2]``.
    """
    if isinstance(m, HaloAttn):
        heads = m.num_heads
        meta = HaloWindows(int(m.block_size), int(m.halo_size), int(m.block_stride), int(m.win_size))

        def read(out: torch.Tensor) -> torch.Tensor:
            return out.unflatten(0, (-1, heads)).transpose(1, 2).flatten(0, 1)

        yield Tap(name, m, "halo", "window", read, intercept="softmax", grid_of=m, meta=meta)


def _same(out: torch.Tensor) -> torch.Tensor:
    return out


def _dat_window(name: str, m: nn.Module, ctx: _Context) -> Iterator[Tap]:
    """DAT-T's local and shifted-window blocks (attnviz.layers.dat_tiny): rolled by -shift, no padding."""
    if isinstance(m, LocalAttention):
        s = int(m.shift_size) if isinstance(m, ShiftWindowAttention) else 0
        meta = SwinWindows("timm_swin", _pair(m.window_size), (s, s))
        yield Tap(name, m.attn_softmax, "dat_window", "window", _same, grid_of=m, meta=meta)


def _tv_deform(name: str, m: nn.Module, ctx: _Context) -> Iterator[Tap]:
    """torchvision ``ops.DeformConv2d``: its offsets (and mask) are arguments of its call, read there."""
    if isinstance(m, TvDeformConv2d):
        meta = _conv_meta(m)
        yield Tap(name, m, "deform_conv", "sampling", _same, part="offsets", grid_of=m, meta=meta,
                  read_input="offset")  # fmt: skip
        yield Tap(name, m, "deform_conv", "sampling", _same, part="mask", meta=meta, read_input="mask")


def _conv_meta(m: nn.Module) -> ConvGeometry:
    """What the deformable-conv record builder needs: the convolution's geometry."""
    return ConvGeometry(_pair(m.kernel_size), _pair(m.stride), _pair(m.padding), _pair(m.dilation))


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _softmax_over_positions(out: torch.Tensor) -> torch.Tensor:
    b, _, h, w = out.shape
    return torch.softmax(out.reshape(b, h * w).float(), dim=-1).reshape(b, h, w)


def _conv_label(path: nn.Module) -> str:
    conv = next((c for c in path.modules() if isinstance(c, nn.Conv2d)), None)
    if conv is None:
        return type(path).__name__
    kh, kw = conv.kernel_size
    label = f"{kh}x{kw}"
    if conv.dilation != (1, 1):
        label += f" dil {conv.dilation[0]}"
    return label


_ADAPTERS: tuple[Callable[[str, nn.Module, _Context], Iterator[Tap]], ...] = (
    _se,
    _eca,
    _sk,
    _split,
    _gc,
    _own,
    _timm_vit,
    _timm_swin,
    _tv_vit,
    _tv_swin,
    _bot,
    _halo,
    _tv_deform,
    _dat_window,
)


def find_taps(model: nn.Module) -> list[Tap]:
    """Every attention tap in ``model``, in module registration order.

    Args:
        model: any torchvision or timm CNN (or a module containing the families above).

    Returns:
        The taps; empty for a model without a supported attention module.
    """
    parents: dict[str, nn.Module] = {}
    for pname, pmod in model.named_modules():
        for cname, _ in pmod.named_children():
            parents[f"{pname}.{cname}" if pname else cname] = pmod
    ctx = _Context(model, parents, *_token_layout(model))
    taps: list[Tap] = []
    for name, module in model.named_modules():
        for adapter in _ADAPTERS:
            taps.extend(adapter(name, module, ctx))
    return taps
