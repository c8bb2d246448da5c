"""Input and output: images in, files out.

Owns image loading and validation (:mod:`.images`), the bundled sample photos (:mod:`.samples`),
and the export bundle (:mod:`.export`: per-result files, with :mod:`.overlay_painter` for overlays
with their colour bars, :mod:`.tables` for the CSV tables the app's downloads share,
:mod:`.summary` for ``summary.json``, :mod:`.bundle_names` and :mod:`.bundle_writer` for the
folder and ZIP layout). It may import :mod:`attnviz.render`, :mod:`attnviz.views` and everything
below them.
"""
