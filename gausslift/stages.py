"""The state file of a pipeline folder made of stages (``video4d``, ``zoo``): which run the folder belongs
to, the options it was started with, and each stage's ``done`` flag and seconds.

    run = StageRun(out, "zoo.json", kind="zoo", identity={}, options=asdict(opts))
    run.stage("data", lambda: make_data(...))    # skipped when done; its seconds recorded

A rerun with the same identity and options continues: finished stages are skipped, and the time spent in a
stage that stopped part way is kept (``seconds_before``) and added when it finishes. A rerun with other
options, or on a folder of another run, is refused in one line before anything is written; a new run
needs a new or empty folder. The file is written atomically after every change.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from gausslift.errors import InputError
from gausslift.ioutil import atomic_write_json


class StageRun:
    """The state file ``out/name`` of one pipeline folder (``format``: ``gausslift-<kind>``)."""

    def __init__(self, out: Path, name: str, kind: str, identity: dict, options: dict,
                 ignore: tuple[str, ...] = ()):  # fmt: skip
        """``identity``: keys that name the run's input (e.g. the session); ``options``: what it was started
        with; ``ignore``: option names that may change on a rerun (e.g. threads)."""
        self.out, self.path, self.kind = Path(out), Path(out) / name, kind
        want = {"format": f"gausslift-{kind}", **identity, "options": options}
        if self.path.is_file():
            try:
                state = json.loads(self.path.read_text())
            except ValueError:
                raise InputError(self.path, f"unreadable (not a {kind} state file)") from None
            if state.get("format", want["format"]) != want["format"]:
                raise InputError(self.path, f"not a {kind} state file; use a new --out")
            for key, value in identity.items():
                if state.get(key) != value:
                    msg = f"this folder is the run of {state.get(key)}; use a new --out"
                    raise InputError(self.path, msg)
            saved = state.get("options", {})
            diff = sorted(k for k, v in options.items() if k not in ignore and saved.get(k) != v)
            if diff:
                raise InputError(
                    self.path,
                    f"options differ from the run's ({', '.join(diff)}); give the "
                    "same ones to continue it, or use a new --out",
                )
            state["options"] = {**saved, **{k: options[k] for k in ignore if k in options}}
            self.state = state
        else:
            if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
                raise InputError(self.out, f"not empty and not a {kind} run; use a new or empty --out")
            self.out.mkdir(parents=True, exist_ok=True)
            self.state = {**want, "stages": {}, "figures": {}}
            self.save()

    def save(self) -> None:
        atomic_write_json(self.path, self.state, indent=1)

    def done(self, stage: str) -> bool:
        return bool(self.state["stages"].get(stage, {}).get("done"))

    def seconds(self, stage: str | None = None) -> float:
        """Seconds spent in ``stage`` (interrupted attempts included), or in every stage."""
        if stage is not None:
            return float(self.state["stages"].get(stage, {}).get("seconds", 0.0))
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

    def stage(self, stage: str, fn: Callable[[], dict | None], say: Callable[[str], None] = lambda m: None):
        """Run ``fn`` unless ``stage`` is done; record its seconds (and the dict it returns) when it
        finishes, or the seconds spent when it raises (then re-raise). Returns True when it ran."""
        if self.done(stage):
            say(f"{stage}: done before ({self.seconds(stage):.0f} s), skipped")
            return False
        say(f"{stage} ...")
        t0 = time.perf_counter()
        try:
            extra = fn() or {}
        except BaseException:
            self.interrupted(stage, time.perf_counter() - t0)
            raise
        self.finish(stage, time.perf_counter() - t0, **extra)
        say(f"{stage}: {time.perf_counter() - t0:.1f} s")
        return True


def clean(path: Path) -> None:
    """Remove a file or folder if it exists (a stage redone from scratch)."""
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
