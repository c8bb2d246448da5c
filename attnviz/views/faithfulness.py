"""The maps of a result at the input's pixels, to be scored for faithfulness.

:func:`input_maps` gives every map the app shows (the modules' maps, the attention rollout,
Grad-CAM) as :class:`attnviz.core.faithfulness_records.InputMap`;
:func:`attnviz.analysis.faithfulness.measure` scores them.
"""

from __future__ import annotations

from attnviz.core.faithfulness_records import InputMap
from attnviz.core.records import Analysis, TokenAttention
from attnviz.views.attention_rollout import rollout, rollout_supported
from attnviz.views.localisation import upsample_map
from attnviz.views.maps import attention_maps

__all__ = ["input_maps"]


def input_maps(analysis: Analysis, *, with_rollout: bool = True) -> list[InputMap]:
    """Every map the app shows for ``analysis``, at the input's pixels, in forward order: the
    modules' maps (:func:`attnviz.views.maps.attention_maps`: spatial gates, token attention,
    deformable point densities), the attention rollout when the model's blocks allow it, Grad-CAM
    last (when the analysis has it)."""
    hw = analysis.input_image.shape[:2]
    out = []
    gradcam = None
    for amap in attention_maps(analysis):
        item = InputMap(amap.label, amap.layer, amap.kind, upsample_map(amap.values, hw))
        if amap.block < 0:
            gradcam = item
        else:
            out.append(item)
    tokens = [r for r in analysis.records if isinstance(r, TokenAttention)]
    if with_rollout and len(tokens) > 1 and rollout_supported(analysis):
        rolled = rollout(analysis)
        out.append(
            InputMap(
                f"rollout · {len(rolled.layers)} blocks",
                "rollout",
                "rollout",
                upsample_map(rolled.values, hw),
            )
        )
    if gradcam is not None:
        out.append(gradcam)
    return out
