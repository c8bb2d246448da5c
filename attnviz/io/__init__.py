"""Input and output: images in, files out.

Owns image loading and validation (:mod:`.images`), the bundled sample photos (:mod:`.samples`),
and the export bundle (:mod:`.export`: overlay PNGs, CSV tables, ``summary.json``, ZIP). It may
import :mod:`attnviz.render`, :mod:`attnviz.views` and everything below them.
"""
