"""The Compare page's inputs: uploads, the camera, sample photos and generated scenes, and the model
controls with the Run button.

Every upload and camera photo goes through :func:`attnviz.load_image` once (its outcome is remembered
per digest in the session, :data:`ui.compare.state.CHECKED_KEY`), and each refused file gets one
error with the loader's message. A run analyses at most :data:`ui.compare.state.MAX_IMAGES` images.
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st
from PIL import Image

import attnviz
from attnviz.io.images import ALLOWED_EXTENSIONS, MAX_BYTES, MAX_PIXELS
from attnviz.io.samples import list_samples, load_sample
from attnviz.workflows.scenes import CLASSES, SceneParams, make_scene
from ui import store
from ui.compare.state import (
    CAMERA_KEY,
    CAMERA_ON_KEY,
    CHECKED_KEY,
    DEFAULT_MODELS,
    DOWNLOADED_KEY,
    MAX_CHECKED,
    MAX_IMAGES,
    PREFIX,
    RUN_KEY,
    SAMPLES_KEY,
    SAMPLES_TOUCHED_KEY,
    SCENE_SIZE,
    SCENES,
    UPLOADS_KEY,
    ImageRef,
    trim,
    upload_key,
)
from ui.maps import md
from ui.picker import MAX_MODELS, WeightsPlan, model_picker, random_override, weights_plan

__all__ = ["decode_all", "image_inputs", "load_choice", "model_controls", "scene_label"]


def load_choice(name: str) -> Image.Image:
    """A sample photo, or one of :data:`ui.compare.state.SCENES` by its name."""
    if name in SCENES:
        seed, shape = SCENES[name]
        scene = make_scene(seed, SceneParams(size=SCENE_SIZE, label=CLASSES.index(shape)))
        return Image.fromarray(scene.image, "RGB")
    return load_sample(name)


def scene_label(name: str) -> str:
    """How a choice is shown: ``"scene: star #1"`` for a generated scene, else the file name."""
    if name in SCENES:
        seed, shape = SCENES[name]
        return f"scene: {shape} #{seed}"
    return name


def _on_upload() -> None:
    """When images are uploaded, drop the default sample unless the user picked samples."""
    if st.session_state.get(UPLOADS_KEY) and not st.session_state.get(SAMPLES_TOUCHED_KEY):
        st.session_state[SAMPLES_KEY] = []


def _on_samples() -> None:
    st.session_state[SAMPLES_TOUCHED_KEY] = True


def _camera_bytes() -> bytes | None:
    photo = st.session_state.get(CAMERA_KEY) if st.session_state.get(CAMERA_ON_KEY) else None
    return photo.getvalue() if photo is not None else None


def _check(ref: ImageRef, data: bytes, decoded: dict[str, Image.Image], refs: list[ImageRef]) -> None:
    """Load an upload once per digest (the outcome is remembered in the session); show a refusal."""
    checked: dict[str, str | None] = store(CHECKED_KEY)
    if ref.key not in checked:
        try:
            decoded[ref.key] = attnviz.load_image(data, name=ref.label)
            checked[ref.key] = None
        except attnviz.ImageLoadError as err:
            checked[ref.key] = str(err)
    if checked[ref.key] is not None:
        st.error(checked[ref.key], icon=":material/broken_image:")
    elif all(ref.key != r.key for r in refs):
        refs.append(ref)


def image_inputs() -> tuple[list[ImageRef], dict[str, Image.Image]]:
    """Draw the image inputs; return the valid images (capped) and those decoded in this rerun."""
    uploads = (
        # No type= filter: Streamlit checks it by file name on the server and raises for any other
        # name (a crash for a crafted request). Every file goes through attnviz.load_image instead,
        # which decides by content and answers each refused file with one message.
        st.file_uploader(
            "Upload images (JPEG, PNG, WebP or GIF)",
            accept_multiple_files=True,
            key=UPLOADS_KEY,
            on_change=_on_upload,
            help=f"JPEG, PNG, WebP or GIF ({', '.join(ALLOWED_EXTENSIONS)}), at most "
            f"{MAX_BYTES // 2**20} MB and {MAX_PIXELS / 1e6:g} megapixels. The file's content decides, not "
            "its name.",
        )
        or []
    )
    if st.toggle("Camera", key=CAMERA_ON_KEY, help="Take a photo with this device's camera (live demos)."):
        st.camera_input("Take a photo", key=CAMERA_KEY)
    # Generated scenes first: the default models are the zoo's, which were trained on such scenes.
    sample_names = list(SCENES) + [path.name for path in list_samples()]
    if SAMPLES_KEY not in st.session_state:
        # Set here rather than as default=: _on_upload writes this key, and a widget given both
        # a default and a Session State value shows a warning.
        st.session_state[SAMPLES_KEY] = sample_names[:1]
    st.multiselect(
        "Sample images",
        sample_names,
        key=SAMPLES_KEY,
        on_change=_on_samples,
        format_func=scene_label,
        help="Photos shipped with attnviz (see assets/samples/ATTRIBUTION.md) and generated scenes "
        "(attnviz.workflows.scenes, 224 px), the kind of picture the built-in zoo was trained on.",
    )
    decoded: dict[str, Image.Image] = {}
    refs: list[ImageRef] = []
    for upload in uploads:
        data = upload.getvalue()
        _check(ImageRef(upload_key(data), upload.name), data, decoded, refs)
    photo = _camera_bytes()
    if photo is not None:
        key = upload_key(photo, "camera")
        _check(ImageRef(key, f"camera_{key[7:15]}.jpg"), photo, decoded, refs)
    trim(store(CHECKED_KEY), MAX_CHECKED, keep=[r.key for r in refs])
    refs += [ImageRef(f"sample:{name}", name) for name in st.session_state.get(SAMPLES_KEY, [])]
    if len(refs) > MAX_IMAGES:
        st.warning(
            f"{len(refs)} images are chosen, but a run analyses at most {MAX_IMAGES}: only the first "
            f"{MAX_IMAGES} ({', '.join(r.label for r in refs[:MAX_IMAGES])}) are used. Remove some to "
            "analyse the others.",
            icon=":material/filter_8:",
        )
        refs = refs[:MAX_IMAGES]
    return refs, decoded


def decode_all(
    refs: Sequence[ImageRef], decoded: dict[str, Image.Image]
) -> tuple[dict[str, Image.Image], list[ImageRef]]:
    """Decode each image of ``refs`` once: those decoded in this rerun are reused, others loaded now.

    Returns:
        ``(images by key, refs that failed)``; each failure is shown with its loader's message.
    """
    contents = [f.getvalue() for f in st.session_state.get(UPLOADS_KEY) or []]
    uploads = {upload_key(data): data for data in contents}
    photo = _camera_bytes()
    if photo is not None:
        uploads[upload_key(photo, "camera")] = photo
    images: dict[str, Image.Image] = {}
    failed: list[ImageRef] = []
    for ref in refs:
        try:
            if ref.key in decoded:
                images[ref.key] = decoded[ref.key]
            elif ref.is_sample:
                images[ref.key] = load_choice(ref.label)
            elif ref.key in uploads:
                images[ref.key] = attnviz.load_image(uploads[ref.key], name=ref.label)
            else:
                raise attnviz.ImageLoadError(f"{ref.label} is no longer uploaded.")
        except ValueError as err:  # ImageLoadError, or a sample that has disappeared
            st.error(str(err), icon=":material/broken_image:")
            failed.append(ref)
    return images, failed


def model_controls(refs: list[ImageRef]) -> tuple[list[WeightsPlan], bool]:
    """The grouped model picker, the random-weights override, what each model will run with, and
    the Run button; returns (each chosen model's weights plan, run)."""
    st.markdown(f"**Models** (up to {MAX_MODELS}, in the order picked)")
    models = model_picker(PREFIX, DEFAULT_MODELS)
    random = random_override(PREFIX, models) if models else []
    plans = [weights_plan(m, random) for m in models]
    if plans:
        st.caption(
            "  \n".join(
                f"**{md(p.model)}**: {md(attnviz.get_spec(p.model).description)} · {md(p.why)}" for p in plans
            )
        )
    downloaded = st.session_state.pop(DOWNLOADED_KEY, None)
    if downloaded:
        st.success(
            f"The pretrained weights of {downloaded} are ready: press Run to use them.",
            icon=":material/check:",
        )
    run = st.button(
        "Run",
        type="primary",
        key=RUN_KEY,
        icon=":material/play_arrow:",
        disabled=not (refs and models),
        help="Analyse the chosen images with the chosen models.",
    )
    return plans, run
