"""Views: pure numpy readings of records, ready to draw.

Owns the transformer views (:mod:`.transformer`, the public face of :mod:`.self_attention`,
:mod:`.head_maps`, :mod:`.attention_rollout` and :mod:`.head_stats`: head grids, query maps,
rollout, head statistics for ViT, Swin, BoTNet, HaloNet, DAT), the deformable views
(:mod:`.deformable`: one query's samples, offset fields), one map per record with its quantity
(:mod:`.maps`), statistics of distributions such as gate entropy (:mod:`.statistics`) and the
localisation scores of a map against a box (:mod:`.localisation`). It may import
:mod:`attnviz.core` and the layers below it; it runs no model.
"""
