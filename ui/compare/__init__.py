"""The Compare page's logic (``pages/compare.py`` lays the page out and calls these modules).

- :mod:`ui.compare.state`: session-state keys, the records kept between reruns (:class:`ImageRef`,
  :class:`RunConfig`, :class:`ui.runner.Failure`) and the caps of the per-session stores.
- :mod:`ui.compare.inputs`: uploads, the camera, sample photos and scenes, the model controls.
- :mod:`ui.compare.runs`: running the models when **Run** is pressed; fetching pretrained weights.
- :mod:`ui.compare.columns`: one column per model, one row per panel kind;
  :mod:`ui.compare.gradcam` its Grad-CAM row.
- :mod:`ui.compare.transformer`, :mod:`ui.compare.deformable`: the sections below the columns;
  :mod:`ui.compare.clicks` the clickable query picker they share.
- :mod:`ui.compare.downloads`: the download buttons, their CSV, PNG and ZIP contents.
"""
