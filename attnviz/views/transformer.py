"""Transformer views over captured self-attention: head grids, query maps, rollout, head statistics.

Pure numpy over :class:`~attnviz.core.records.TokenAttention` and
:class:`~attnviz.core.records.WindowAttention` records of ViT, Swin, BoTNet, HaloNet and DAT;
nothing here needs torch. This module is the public face (``attnviz.vit``); the views live by
purpose:

* :mod:`attnviz.views.self_attention`: which records are self-attention among the image's tokens
  (:func:`is_self_attention`, :func:`self_attention_records`).
* :mod:`attnviz.views.head_maps`: every head's :func:`summary_map`, the :func:`head_grid` of all
  layers, :func:`fuse_heads`, and where one query attends (:func:`query_map`).
* :mod:`attnviz.views.attention_rollout`: :func:`rollout` (Abnar & Zuidema, "Quantifying
  Attention Flow in Transformers", https://arxiv.org/abs/2005.00928).
* :mod:`attnviz.views.head_stats`: :func:`head_statistics`, the mean attention distance
  (Dosovitskiy et al., "An Image is Worth 16x16 Words", https://arxiv.org/abs/2010.11929) and
  entropy of each head, and :func:`prefix_attention`, the attention on class, distillation and
  register tokens (Darcet et al., "Vision Transformers Need Registers",
  https://arxiv.org/abs/2309.16588).

Coordinates: token (i, j) of a grid with stride (sy, sx) covers model-input pixels
``[i*sy, (i+1)*sy) x [j*sx, (j+1)*sx)``; its centre is ``((i+0.5)*sy - 0.5, (j+0.5)*sx - 0.5)`` with
pixel centres at integers. Deformable attention (``TokenAttention.key_grid`` set) attends to sampled
keys, not to the image's tokens: the collection functions skip it and the per-record functions
refuse it.
"""

from __future__ import annotations

from attnviz.views.attention_rollout import Rollout, rollout, rollout_supported
from attnviz.views.head_maps import HeadGrid, QueryMap, fuse_heads, head_grid, query_map, summary_map
from attnviz.views.head_stats import HeadStats, PrefixAttention, head_statistics, prefix_attention
from attnviz.views.self_attention import SelfAttention, is_self_attention, self_attention_records

__all__ = [
    "HeadGrid",
    "HeadStats",
    "PrefixAttention",
    "QueryMap",
    "Rollout",
    "SelfAttention",
    "fuse_heads",
    "head_grid",
    "head_statistics",
    "is_self_attention",
    "prefix_attention",
    "query_map",
    "rollout",
    "rollout_supported",
    "self_attention_records",
    "summary_map",
]
