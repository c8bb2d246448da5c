"""Views: pure numpy readings of records, ready to draw.

Owns the transformer views (:mod:`.transformer`: head grids, query maps, rollout, head
statistics for ViT, Swin, BoTNet, HaloNet, DAT), the deformable views (:mod:`.deformable`: one
query's samples, offset fields), one map per record with its quantity (:mod:`.maps`) and the
localisation scores of a map against a box (:mod:`.localisation`). It may import
:mod:`attnviz.core` and the layers below it; it runs no model.
"""
