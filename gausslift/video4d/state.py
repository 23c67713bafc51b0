"""The state of a video4d folder: its options (:class:`Video4DOptions`) and ``DIR/video4d.json``
(:class:`Run`: the session, the options and each stage's ``done`` and seconds)."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gausslift.errors import InputError
from gausslift.ioutil import atomic_write_json

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


class Run:
    """The state file of one video4d folder."""

    def __init__(self, out: Path, session: Path, opts: Video4DOptions):
        self.out, self.path = out, out / STATE
        want = {"format": "gausslift-video4d", "session": str(session.resolve()), "options": asdict(opts)}
        if self.path.is_file():
            try:
                state = json.loads(self.path.read_text())
            except ValueError:
                raise InputError(self.path, "unreadable (not a video4d state file)") from None
            if state.get("session") != want["session"]:
                raise InputError(
                    self.path, f"this folder is the run of {state.get('session')}; use a new --out"
                )
            diff = sorted(k for k, v in want["options"].items() if state.get("options", {}).get(k) != v)
            if diff:
                raise InputError(
                    self.path,
                    f"options differ from the run's ({', '.join(diff)}); give the "
                    "same ones to continue it, or use a new --out",
                )
            self.state = state
        else:
            if out.exists() and any(out.iterdir()):
                raise InputError(out, "not empty and not a video4d run; use a new or empty --out")
            out.mkdir(parents=True, exist_ok=True)
            self.state = {**want, "stages": {}, "figures": {}}
            self.save()

    def save(self) -> None:
        atomic_write_json(self.path, self.state, indent=1)

    def done(self, stage: str) -> bool:
        return bool(self.state["stages"].get(stage, {}).get("done"))

    def seconds(self) -> float:
        return sum(s.get("seconds", 0.0) for s in self.state["stages"].values())

    def finish(self, stage: str, seconds: float, **extra) -> None:
        prev = self.state["stages"].get(stage, {}).get("seconds_before", 0.0)
        self.state["stages"][stage] = {"done": True, "seconds": round(prev + seconds, 2), **extra}
        self.save()

    def interrupted(self, stage: str, seconds: float) -> None:
        """Time spent in a stage that did not finish counts towards the budget of the rerun."""
        s = self.state["stages"].setdefault(stage, {})
        s["seconds_before"] = round(s.get("seconds_before", 0.0) + seconds, 2)
        s["seconds"] = s["seconds_before"]
        self.save()


def _clean(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
