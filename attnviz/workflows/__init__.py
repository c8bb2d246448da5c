"""Workflows: the jobs built from the library, each what one command or page runs.

Owns the batch pipeline over folders (:mod:`.pipeline`, ``python -m attnviz analyze``), the zoo's
training and evaluation (:mod:`.zoo_training`, ``python -m attnviz zoo``), the generated scenes
(:mod:`.scenes`), the teaching content (:mod:`.teaching`) and the benchmark (:mod:`.bench`). It
may import every layer below it; only :mod:`attnviz.cli` and the app import it.
"""
