"""Core: what every other layer speaks — result records, errors, and the scales maps are read on.

Owns the frozen result dataclasses (:mod:`.records`), the errors attnviz raises on purpose
(:mod:`.errors`) and what a map's values mean and how they are scaled (:mod:`.scales`). Pure
numpy; it imports nothing else from attnviz.
"""
