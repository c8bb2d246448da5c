"""attnviz: see what the attention modules of vision models do.

The public API::

    import attnviz
    model = attnviz.load_model("seresnet50", weights="random")
    [result] = attnviz.analyze(model, [attnviz.load_image("cat.jpg")])
    result.top5, result.channel_weights, result.spatial_maps, result.gradcam

Renderers live in :mod:`attnviz.render`. This package never imports streamlit.
"""

from __future__ import annotations

from . import pipeline, render, sampling, scales, vit, zoo
from .analysis import add_gradcam, analyze
from .errors import (
    AttnvizError,
    CheckpointError,
    DeviceError,
    GPUMemoryError,
    UnknownModelError,
    WeightsUnavailableError,
)
from .imageio import ImageLoadError, load_image
from .models import LoadedModel, ModelSpec, get_spec, list_models, load_checkpoint, load_model, resolve_device
from .pipeline import analyze_to_folder
from .records import (
    Analysis,
    AxisGates,
    ChannelWeights,
    Detections,
    GradCAM,
    Prediction,
    Record,
    SamplingPoints,
    SpatialMap,
    TokenAttention,
    WindowAttention,
    compact,
)

__all__ = [
    "Analysis",
    "AttnvizError",
    "AxisGates",
    "ChannelWeights",
    "CheckpointError",
    "Detections",
    "DeviceError",
    "GPUMemoryError",
    "GradCAM",
    "ImageLoadError",
    "LoadedModel",
    "ModelSpec",
    "Prediction",
    "Record",
    "SamplingPoints",
    "SpatialMap",
    "TokenAttention",
    "UnknownModelError",
    "WeightsUnavailableError",
    "WindowAttention",
    "add_gradcam",
    "analyze",
    "analyze_to_folder",
    "compact",
    "get_spec",
    "list_models",
    "load_checkpoint",
    "load_image",
    "load_model",
    "pipeline",
    "render",
    "resolve_device",
    "sampling",
    "scales",
    "vit",
    "zoo",
]

__version__ = "0.1.0"
