"""Looking at results: orbit cameras, turntable videos and a local web viewer."""

from gausslift.viz.orbit import framing, orbit_cameras, render_frames, render_turntable
from gausslift.viz.video import to_uint8, write_video
from gausslift.viz.viewer import export_viewer, make_server, resolve_ply, serve

__all__ = [
    "export_viewer",
    "framing",
    "make_server",
    "orbit_cameras",
    "render_frames",
    "render_turntable",
    "resolve_ply",
    "serve",
    "to_uint8",
    "write_video",
]
