"""Capture: every hook attnviz puts on a model, and the records built from what the hooks read.

Owns the one context manager (:class:`~attnviz.capture.hooks.Capture`) and the taps per attention
family (:mod:`.taps` for CNN and transformer families, :mod:`.detr_taps` for Deformable DETR),
their typed facts (:mod:`.meta`), and the step from captured tensors to frozen records
(:mod:`.readout`). It may import :mod:`attnviz.layers` (to recognise attnviz's own modules) and
:mod:`attnviz.core`; nothing above.
"""

from attnviz.capture.hooks import Capture, Tap
from attnviz.capture.readout import records_from_taps
from attnviz.capture.taps import find_taps

__all__ = ["Capture", "Tap", "find_taps", "records_from_taps"]
