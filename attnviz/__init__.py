"""attnviz: see what the attention modules of vision models do.

The public API::

    import attnviz
    model = attnviz.load_model("seresnet50", weights="random")
    [result] = attnviz.analyze(model, [attnviz.load_image("cat.jpg")])
    result.top5, result.channel_weights, result.spatial_maps, result.gradcam

The library is layered, each subpackage importing only those below it (checked by
``tests/test_layers.py``)::

    cli -> workflows -> io -> render -> views -> analysis -> backends -> runtime -> capture
        -> layers -> core

Renderers live in :mod:`attnviz.render`, transformer and deformable views in
:mod:`attnviz.views`. This package never imports streamlit.
"""

from __future__ import annotations

import sys

from attnviz import layers, render
from attnviz.analysis import add_gradcam, analyze
from attnviz.backends import LoadedModel, ModelSpec, get_spec, list_models, load_checkpoint, load_model
from attnviz.core import scales
from attnviz.core.errors import (
    AttnvizError,
    CheckpointError,
    DeviceError,
    GPUMemoryError,
    ServingError,
    UnknownModelError,
    WeightsUnavailableError,
)
from attnviz.core.records import (
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
from attnviz.core.version import __version__
from attnviz.io.images import ImageLoadError, load_image
from attnviz.runtime import resolve_device
from attnviz.views import deformable as sampling
from attnviz.views import maps
from attnviz.views import transformer as vit
from attnviz.workflows import pipeline
from attnviz.workflows.pipeline import analyze_to_folder

#: Short names kept from before the layered packages: ``attnviz.vit`` is
#: :mod:`attnviz.views.transformer`, ``attnviz.sampling`` :mod:`attnviz.views.deformable`, ... so
#: that ``from attnviz.maps import attention_maps`` keeps working.
ALIASES = {
    "vit": vit,
    "sampling": sampling,
    "maps": maps,
    "scales": scales,
    "modules": layers,
    "pipeline": pipeline,
}
for _short, _module in ALIASES.items():
    sys.modules.setdefault(f"{__name__}.{_short}", _module)

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
    "ServingError",
    "SpatialMap",
    "TokenAttention",
    "UnknownModelError",
    "WeightsUnavailableError",
    "WindowAttention",
    "__version__",
    "add_gradcam",
    "analyze",
    "analyze_to_folder",
    "compact",
    "get_spec",
    "list_models",
    "load_checkpoint",
    "load_image",
    "load_model",
    "maps",
    "pipeline",
    "render",
    "resolve_device",
    "sampling",
    "scales",
    "vit",
]
