"""Workflows: the jobs built from the library, each what one command or page runs.

Owns the batch pipeline over folders (:mod:`.pipeline`, ``python -m attnviz analyze``, with its
threads, stages, results and :mod:`.image_paths`), the zoo's training and evaluation
(:mod:`.zoo_training`, ``python -m attnviz zoo``), the generated scenes (:mod:`.scenes` with
:mod:`.scene_shapes` and :mod:`.scene_background`), the teaching content (:mod:`.teaching`: data
files and their loader) and the benchmark (:mod:`.bench`, with :mod:`.bench_measuring` and
:mod:`.bench_report`). It may import every layer below it; only :mod:`attnviz.cli` and the app
import it.
"""
