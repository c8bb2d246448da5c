"""Model backends: which models attnviz knows and how each is built with its weights.

One file per weight source (:mod:`.torchvision_hub`, :mod:`.timm_hub`, :mod:`.transformers_detr`,
:mod:`.dat_official`, :mod:`.zoo`, :mod:`.user_models`), each defining ``BACKEND``; :mod:`.registry`
finds them without naming them, lists their models and loads one. :mod:`.base` holds the shared
contract and the loaded model, :mod:`.weights` safe checkpoint loading and downloads. Pretrained
weights come through the libraries' own caches; nothing is downloaded unless ``weights="pretrained"`` asks for
it, and a missing file gets an error naming it and where it goes. It may import
:mod:`attnviz.runtime`, :mod:`attnviz.capture`, :mod:`attnviz.layers` and :mod:`attnviz.core`.
"""

from attnviz.backends.base import MODEL_GROUPS, LoadedModel, ModelSpec, ProgressFn
from attnviz.backends.registry import default_weights, get_spec, list_models, load_model
from attnviz.backends.user_models import (
    UserModel,
    UserModelError,
    check_user_model_name,
    delete_user_model,
    list_user_models,
    read_user_card,
    save_user_model,
    user_models_dir,
)
from attnviz.backends.weights import CHECKPOINT_SUFFIXES, load_checkpoint

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "MODEL_GROUPS",
    "LoadedModel",
    "ModelSpec",
    "ProgressFn",
    "UserModel",
    "UserModelError",
    "check_user_model_name",
    "default_weights",
    "delete_user_model",
    "get_spec",
    "list_models",
    "list_user_models",
    "load_checkpoint",
    "load_model",
    "read_user_card",
    "save_user_model",
    "user_models_dir",
]
