"""timm's models with attention (SE, ECA, SK, split attention, GC, ViT/DeiT/DINO, Swin, BoTNet,
HaloNet); weights from the Hugging Face hub's cache, where timm keeps them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attnviz.backends.base import (
    Backend,
    Built,
    Entry,
    ProgressFn,
    WeightsLocation,
    explained_download,
    hub_missing_weights,
    report,
)
from attnviz.backends.weights import cached_hf_file, check_reachable, hf_cache_dir, hf_filenames

__all__ = ["BACKEND"]

_ENTRIES = (
    Entry("seresnet50", ("se",), (224, 224), "SE-ResNet-50: SE after every bottleneck", "layer4"),
    Entry("ecaresnet26t", ("eca",), (256, 256),
          "ECA-ResNet-26-T: 1-D convolution over channels instead of an MLP", "layer4"),
    Entry("skresnet18", ("sk",), (224, 224),
          "SK-ResNet-18: softmax over a 3x3 and a dilated 3x3 path per channel", "layer4"),
    Entry("resnest14d", ("split",), (224, 224),
          "ResNeSt-14d: split attention, softmax over 2 radix splits per channel", "layer4"),
    Entry("gcresnext26ts", ("gc_context", "gc_add"), (256, 256),
          "GC-ResNeXt-26-TS: global-context map over positions plus a channel add term", "stages.3"),
    Entry("deit_tiny_patch16_224", ("vit",), (224, 224),
          "DeiT-Tiny: ViT, 12 layers x 3 heads, class token", "blocks.11.norm1", "tokens"),
    Entry("deit_small_patch16_224", ("vit",), (224, 224),
          "DeiT-Small: ViT, 12 layers x 6 heads, class token", "blocks.11.norm1", "tokens"),
    Entry("deit_tiny_distilled_patch16_224", ("vit",), (224, 224),
          "DeiT-Tiny distilled: class and distillation tokens, averaged at inference",
          "blocks.11.norm1", "tokens"),
    Entry("vit_small_patch16_224.dino", ("vit",), (224, 224),
          "DINO ViT-S/16: self-supervised features, no classifier (attention only)", "", "tokens"),
    Entry("vit_small_patch14_reg4_dinov2", ("vit",), (224, 224),
          "DINOv2 ViT-S/14 with 4 register tokens, run at 224 px; no classifier", "", "tokens",
          (("img_size", 224),)),
    Entry("swin_tiny_patch4_window7_224", ("swin",), (224, 224),
          "Swin-T (timm): shifted 7x7 windows, 4 stages", "layers.3.blocks.1.norm1", "nhwc"),
    Entry("botnet26t_256", ("bot",), (256, 256),
          "BoTNet-26T: global multi-head self-attention in the last ResNet stages", "stages.3"),
    Entry("halonet26t", ("halo",), (256, 256),
          "HaloNet-26T: blocked local self-attention with a halo", "stages.3"),
)  # fmt: skip


def _cfg(name: str):
    import timm

    return timm.models.get_pretrained_cfg(name)


class TimmBackend(Backend):
    """timm models: built with ``timm.create_model``, preprocessing from their data config."""

    source = "timm"
    order = 20
    from_hub = True

    def entries(self) -> tuple[Entry, ...]:
        return _ENTRIES

    def weights_location(self, entry: Entry) -> WeightsLocation:
        cfg = _cfg(entry.name)
        hit = cached_hf_file(cfg)
        if hit is not None:
            return WeightsLocation(hit.name, hit, True)
        repo_dir = "models--" + cfg.hf_hub_id.replace("/", "--")
        filename = hf_filenames(cfg)[0]
        return WeightsLocation(
            filename, hf_cache_dir() / repo_dir / "snapshots" / "<revision>" / filename, False
        )

    def missing_weights(self, entry: Entry, where: WeightsLocation, cause: BaseException):
        cfg = _cfg(entry.name)
        how = (
            f"download the Hugging Face repo {cfg.hf_hub_id} into the HF cache ({hf_cache_dir()}, "
            f"e.g. `hf download {cfg.hf_hub_id}` on a connected machine, then copy the cache)"
        )
        return hub_missing_weights(entry.name, where, cause, how)

    def fetch(self, entry: Entry, progress: ProgressFn | None) -> Path:
        where = self.weights_location(entry)
        if where.present:
            return where.path
        with explained_download(self, entry, where):
            from huggingface_hub import constants, hf_hub_download

            if constants.HF_HUB_OFFLINE:
                raise OSError("HF_HUB_OFFLINE is set")
            check_reachable(constants.ENDPOINT)
            cfg = _cfg(entry.name)
            report(progress, f"Downloading {cfg.hf_hub_id}/{where.filename} from the Hugging Face hub", None)
            fetched = Path(hf_hub_download(cfg.hf_hub_id, where.filename))
        return fetched

    def build(self, entry: Entry, pretrained_file: Path | None) -> Built:
        import timm
        from timm.data import ImageNetInfo, create_transform, resolve_data_config

        kwargs: dict[str, Any] = dict(entry.build_kwargs)
        if pretrained_file is not None:
            kwargs |= {"pretrained": True, "pretrained_cfg_overlay": {"file": str(pretrained_file)}}
        module = timm.create_model(entry.name, **kwargs)
        overrides = {"input_size": (3, *entry.input_size)} if "img_size" in kwargs else {}
        cfg = resolve_data_config(overrides, model=module)
        info = ImageNetInfo()
        # Self-supervised backbones (DINO) have no classifier: no classes, no predictions.
        n_classes = int(getattr(module, "num_classes", 0)) if entry.gradcam_layer else 0
        categories = tuple(info.index_to_description(i) for i in range(n_classes))
        return Built(module, create_transform(**cfg), tuple(cfg["mean"]), tuple(cfg["std"]), categories)


BACKEND = TimmBackend()
