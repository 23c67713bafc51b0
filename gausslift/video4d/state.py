"""The state of a video4d folder: its options (:class:`Video4DOptions`) and ``DIR/video4d.json``
(:class:`Run`: the session, the options and each stage's ``done`` and seconds)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from gausslift.stages import StageRun, clean

STAGES = ("ingest", "track", "sequence", "avatar", "eval", "outputs", "report")
STATE = "video4d.json"


@dataclass
class Video4DOptions:
    minutes: float = 40.0  # the whole run; the avatar fit gets what ingest and track leave, less a reserve
    reserve_minutes: float = 4.0  # kept for eval, outputs and report
    avatar_iters: int = 0  # > 0: a fixed number of avatar steps instead of the clock
    frames: str | None = None  # START:STOP:STEP or a,b,c (ingest and track)
    size: int = 512  # ingest image size
    holdout_cameras: int = 3  # every n-th used camera is held out for evaluation (0: none)
    holdout_frames: float = 0.2  # the last fraction of the frames is held out (0: none)
    threads: int = 0
    fps: float = 25.0
    track_set: list[str] = field(default_factory=list)  # KEY=VALUE for TrackOptions
    avatar_set: list[str] = field(default_factory=list)  # KEY=VALUE for AvatarConfig
    keep_bad_cameras: bool = False


class Run(StageRun):
    """The state file of one video4d folder (:class:`gausslift.stages.StageRun`)."""

    def __init__(self, out: Path, session: Path, opts: Video4DOptions):
        super().__init__(out, STATE, "video4d", {"session": str(session.resolve())}, asdict(opts))


_clean = clean
