"""Core: what every other layer speaks — result records, errors, and the scales maps are read on.

Owns the frozen result dataclasses (:mod:`.records` with :class:`Analysis` and ``compact``; the
per-kind records in :mod:`.feature_records` (channel weights, spatial maps, Grad-CAM, axis
gates), :mod:`.attention_records` (token and window attention) and :mod:`.sampling_records`
(sampling points, detections); read-only arrays in :mod:`.arrays`), the errors attnviz raises on
purpose (:mod:`.errors`), what a map's values mean and how they are scaled (:mod:`.scales`), and
the version (:mod:`.version`). Pure numpy; it imports nothing else from attnviz.
"""
