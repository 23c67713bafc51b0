"""``gausslift video4d``: a real multi-view session to a rigged 4D mouse (ingest -> track -> avatar fit
-> evaluation -> outputs and report), one stage at a time with resume per stage.

Modules: :mod:`~gausslift.video4d.pipeline` (the stages in order, resume), :mod:`~gausslift.video4d.state`
(the options and the state file),
:mod:`~gausslift.video4d.stages` (one function a stage), :mod:`~gausslift.video4d.sequence` (ingest
samples + track -> an avatar sequence), :mod:`~gausslift.video4d.outputs` (ply, videos) and
:mod:`~gausslift.video4d.report` (report.html).
"""

from gausslift.video4d.pipeline import STAGES, Video4DOptions, video4d

__all__ = ["STAGES", "Video4DOptions", "video4d"]
