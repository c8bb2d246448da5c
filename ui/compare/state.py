"""The Compare page's state: its session-state keys, the records kept between reruns, and the caps of
its per-session stores.

Results are :class:`attnviz.Analysis` records (frozen dataclasses of numpy arrays, no tensors) in
``st.session_state[RESULTS_KEY]``, keyed by ``(image key, model, weights, device)``
(:meth:`RunConfig.result_key`); per-model :class:`Failure` records sit next to them, keyed by
``(model, weights, device)``. The stores keep at most :data:`MAX_STORED` results and
:data:`MAX_STORED_BYTES` bytes of arrays (:func:`trim`, :func:`trim_bytes`), never dropping the
current run's, and at most :data:`MAX_RENDERS` rendered pictures (:func:`cached_png`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from PIL import Image

import attnviz
from attnviz import render
from ui import store
from ui.runner import Failure

__all__ = [
    "DEFAULT_MODELS",
    "MAX_IMAGES",
    "MAX_RENDERS",
    "MAX_STORED",
    "MAX_STORED_BYTES",
    "PREFIX",
    "SCENES",
    "SCENE_SIZE",
    "VIT_VIEWS",
    "Column",
    "Failure",
    "ImageRef",
    "RunConfig",
    "cached_png",
    "digest",
    "same_run",
    "trim",
    "trim_bytes",
    "upload_key",
]

# Images analysed per run at most.
MAX_IMAGES = 8

# Preselected models: two zoo models with spatial maps (CBAM's spatial gate, GC's context softmax).
DEFAULT_MODELS = ("zoo_cbam", "zoo_gc")

# Generated scenes offered next to the sample photos: name -> (seed, class). Drawn at 224 px so
# that the ImageNet models get a full-size input; the zoo models resize them to their 96 px.
SCENE_SIZE = 224
SCENES = {f"scene_{name}_{seed}.png": (seed, name) for seed, name in ((1, "star"), (2, "arrow"), (3, "ring"))}

# Analyses kept per session; the oldest ones beyond this are dropped (never the current run's).
MAX_STORED = 96

# ... and at most this many bytes of arrays (stored compact: a ViT-B/16 result is ~11 MB, a
# Deformable DETR one ~70 MB at 800 px): the oldest results beyond it are dropped, never the
# current run's.
MAX_STORED_BYTES = 800 * 2**20

# Rendered transformer pictures kept per session (PNG bytes), the oldest dropped first.
MAX_RENDERS = 48

# Upload outcomes remembered per session (by digest).
MAX_CHECKED = 64

# The transformer views below the columns; only the chosen one is computed.
VIT_VIEWS = ("Heads × layers", "Query point", "Rollout", "Head statistics")

# Session-state keys (widgets and stored data); the sidebar's keys belong to ui.sidebar.
PREFIX = "compare"
UPLOADS_KEY = "compare_uploads"
CAMERA_ON_KEY = "compare_camera_on"
CAMERA_KEY = "compare_camera"
SAMPLES_KEY = "compare_samples"
SAMPLES_TOUCHED_KEY = "compare_samples_touched"
MODELS_KEY = "compare_models"  # the chosen models in pick order (ui.picker)
RANDOM_KEY = "compare_random"
RUN_KEY = "compare_run"
IMAGE_KEY = "compare_image"
SCALE_KEY = "compare_scale"
SORT_KEY = "compare_sort"
BLOCK_KEY = "compare_block"  # + "_<model>_<blocks>"
TARGET_KEY = "compare_cam_target"  # + "_<model>_<image digest>"
RESULTS_KEY = "compare_results"
FAILURES_KEY = "compare_failures"
LAST_RUN_KEY = "compare_last_run"
CHECKED_KEY = "compare_checked"
VIT_MODEL_KEY = "compare_vit_model"
VIT_LAYER_KEY = "compare_vit_layer"
VIT_HEAD_KEY = "compare_vit_head"
VIT_FUSION_KEY = "compare_vit_fusion"
DEFORM_MODEL_KEY = "compare_deform_model"
DEFORM_LAYER_KEY = "compare_deform_layer"
DEFORM_OBJECT_KEY = "compare_deform_object"
ROLLOUT_DISCARD_KEY = "compare_rollout_discard"
ROLLOUT_FUSION_KEY = "compare_rollout_fusion"
RENDERS_KEY = "compare_renders"
PENDING_CAM_KEY = "compare_pending_gradcam"
VIT_VIEW_KEY = "compare_vit_view"
HEATMAP_OPEN_KEY = "compare_open_heatmap"
STATS_OPEN_KEY = "compare_open_stats"
DOWNLOADED_KEY = "compare_downloaded"


@dataclass(frozen=True)
class ImageRef:
    """One input image.

    Attributes:
        key: ``"upload:<sha256 of the bytes, 24 hex>"``, ``"camera:<sha256 ...>"`` or
            ``"sample:<file name>"``.
        label: the file name shown to the user and used for the export folders.
    """

    key: str
    label: str

    @property
    def is_sample(self) -> bool:
        """True for a shipped sample photo or a generated scene."""
        return self.key.startswith("sample:")

    @property
    def is_scene(self) -> bool:
        """True for a generated scene (what the zoo models were trained on)."""
        return self.is_sample and self.label in SCENES

    @property
    def stem(self) -> str:
        """The file name without its extension (the start of every download's name)."""
        return self.label.rsplit(".", 1)[0]


@dataclass(frozen=True)
class RunConfig:
    """What a run analysed: the results shown are those of the last run.

    Attributes:
        images: the images, in order.
        models: the models, in the order they were picked.
        weights: per model, ``"pretrained"`` or ``"random"`` (see :func:`ui.picker.weights_plan`).
        device: the resolved device.
    """

    images: tuple[ImageRef, ...]
    models: tuple[str, ...]
    weights: tuple[str, ...]
    device: str

    def weights_of(self, model: str) -> str:
        """The weights ``model`` ran with."""
        return self.weights[self.models.index(model)]

    def result_key(self, image: ImageRef, model: str) -> tuple[str, str, str, str]:
        """Key of one result in the session's store."""
        return (image.key, model, self.weights_of(model), self.device)

    def model_key(self, model: str) -> tuple[str, str, str]:
        """Key of one model's failure in the session's store."""
        return (model, self.weights_of(model), self.device)


@dataclass
class Column:
    """What one model's column shows for the chosen image (filled in row by row as it is drawn).

    Attributes:
        model: the model's name.
        weights: the weights it ran with.
        analysis: its stored result for the image, or None.
        failure: why it could not run, or None.
        position: the block shown (index into ``analysis.blocks``), once the block row is drawn.
    """

    model: str
    weights: str
    analysis: attnviz.Analysis | None
    failure: Failure | None
    position: int | None = None

    @functools.cached_property
    def spec(self) -> attnviz.ModelSpec:
        """The model's spec."""
        return attnviz.get_spec(self.model)


def same_run(a: RunConfig, b: RunConfig) -> bool:
    """True when two run configurations ask for the same images, models, weights and device.

    Compared by value, so that a configuration stored before the module was reloaded (Streamlit
    reloads changed modules; dataclass ``==`` between two different classes is always unequal)
    still counts as the same run.
    """
    return dataclasses.astuple(a) == dataclasses.astuple(b)


def upload_key(data: bytes, kind: str = "upload") -> str:
    """The image key of uploaded bytes: identical content gives the same key whatever the name."""
    return f"{kind}:" + hashlib.sha256(data).hexdigest()[:24]


def digest(text: str) -> str:
    """A short digest of ``text`` (for widget keys that depend on an image key)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


def trim(entries: dict, limit: int, keep: Iterable[object] = ()) -> None:
    """Drop the oldest entries of ``entries`` beyond ``limit``, except those in ``keep``."""
    protected = set(keep)
    for key in list(entries):
        if len(entries) <= limit:
            break
        if key not in protected:
            del entries[key]


def trim_bytes(results: dict, limit: int, keep: Iterable[object] = ()) -> None:
    """Drop the oldest results of ``results`` until their arrays hold at most ``limit`` bytes."""
    protected = set(keep)
    sizes = {key: a.nbytes for key, a in results.items()}
    total = sum(sizes.values())
    for key in list(results):
        if total <= limit:
            break
        if key not in protected:
            total -= sizes[key]
            del results[key]


def cached_png(key: tuple, draw: Callable[[], Image.Image]) -> bytes:
    """PNG bytes of ``draw()``, kept in this session under ``key`` (lazy, rendered once per key)."""
    renders: dict = store(RENDERS_KEY)
    if key not in renders:
        renders[key] = render.to_png_bytes(draw())
        trim(renders, MAX_RENDERS, keep=[key])
    return renders[key]
