"""SIGKILL during each `video4d` stage on a real session, then the same command again (issue 21).

Usage::

    python benchmarks/video4d_kill.py [SESSION] [--frames 0:120:10] [--size 256] [--avatar-iters 300]
        [--stages ingest,track,sequence,avatar,eval,outputs,report] [--work DIR] [--json out.json]

``SESSION`` defaults to ``../shared/data/mouse_minimal_session`` (skipped with a message when absent).
A fixed-length run (``--avatar-iters``; the track's step counts are fixed already) makes the outputs a
function of the input alone, so an interrupted-then-rerun folder can be compared byte for byte with an
uninterrupted one. For each stage: start the command, wait until that stage has started (its first
files exist, or the state file names it as the stage running) and then ``--delay`` of its seconds,
SIGKILL the whole process, run the same command again to the end, and compare with the reference:
the track's parameters, the avatar's parameters, ``eval.json``'s per-view figures and every per-frame
``.ply`` (bytes). A stage that ended before the kill landed is reported as "not caught".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT = ROOT.parent / "shared" / "data" / "mouse_minimal_session"
STAGES = ("ingest", "track", "sequence", "avatar", "eval", "outputs", "report")


def state_of(out: Path) -> dict:
    try:
        return json.loads((out / "video4d.json").read_text())
    except (OSError, ValueError):
        return {}


def running(out: Path, stage: str) -> bool:
    """``stage`` has begun (the stages before it are done, its own first files exist) and is not done."""
    state = state_of(out)
    if "stages" not in state:  # the state file is not written yet
        return False
    st = state["stages"]
    if st.get(stage, {}).get("done"):
        return False
    i = STAGES.index(stage)
    if not all(st.get(s, {}).get("done") for s in STAGES[:i]):
        return False
    probe = {"track": out / "track" / "checkpoint.pt",
             "avatar": out / "avatar" / "checkpoint.pt", "outputs": out / "ply"}.get(stage)  # fmt: skip
    return probe is None or probe.exists()


def sha(parts) -> str:
    h = hashlib.sha256()
    for b in parts:
        h.update(b)
    return h.hexdigest()


def digest(out: Path) -> dict:
    """What must be equal between an interrupted-then-rerun folder and the reference."""
    import numpy as np
    import torch

    d = {}
    tr = np.load(out / "track" / "params.npz")
    d["track"] = sha(np.ascontiguousarray(tr[k]).tobytes() for k in sorted(tr.files))
    av = torch.load(out / "avatar" / "avatar.pt", weights_only=False)["params"]
    d["avatar"] = sha(av[k].detach().cpu().numpy().tobytes() for k in sorted(av))
    d["per_view"] = hashlib.sha256(
        json.dumps(json.loads((out / "eval.json").read_text())["per_view"], sort_keys=True).encode()
    ).hexdigest()
    h = hashlib.sha256()
    plys = sorted((out / "ply").glob("*.ply"))
    for f in plys:
        h.update(f.read_bytes())
    d["ply"], d["ply_files"] = h.hexdigest(), len(plys)
    d["report"] = (out / "report.html").is_file()
    return d


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("session", nargs="?", default=str(DEFAULT))
    ap.add_argument("--frames", default="0:120:10")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--avatar-iters", type=int, default=300)
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--delay", type=float, default=0.3, help="fraction of the stage's reference seconds")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="/tmp/video4d_kill")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    session = Path(a.session)
    if not session.is_dir():
        print(f"skipped: no session at {session} (pass its folder)")
        return 0
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    args = ["--frames", a.frames, "--size", str(a.size), "--avatar-iters", str(a.avatar_iters),
            "--threads", str(a.threads), "--quiet"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "gausslift", "video4d", str(session), "--out", str(out), *args]

    t0 = time.perf_counter()
    ref = work / "ref"
    subprocess.run(cmd(ref), check=True, env=env, stdout=subprocess.DEVNULL)
    ref_s = time.perf_counter() - t0
    secs = {s: float(state_of(ref)["stages"][s].get("seconds", 0.0)) for s in STAGES}
    want = digest(ref)
    print(f"reference run: {ref_s:.0f} s; stage seconds", {k: round(v, 1) for k, v in secs.items()})
    rows = []
    for stage in a.stages.split(","):
        out = work / f"kill_{stage}"
        log = open(work / f"kill_{stage}.err", "w")
        proc = subprocess.Popen(
            cmd(out), env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
        )
        caught, deadline = False, time.monotonic() + 3600
        while proc.poll() is None and time.monotonic() < deadline:
            if running(out, stage):
                time.sleep(a.delay * secs[stage])
                caught = proc.poll() is None and not state_of(out)["stages"].get(stage, {}).get("done")
                break
            time.sleep(0.01)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
        done_at_kill = [s for s in STAGES if state_of(out).get("stages", {}).get(s, {}).get("done")]
        t1 = time.perf_counter()
        rc = subprocess.run(cmd(out), env=env, stdout=subprocess.DEVNULL).returncode
        got = digest(out) if rc == 0 else {}
        same = {k: got.get(k) == v for k, v in want.items()}
        row = {"stage": stage, "caught": caught, "done_at_kill": done_at_kill, "rerun_rc": rc,
               "rerun_s": round(time.perf_counter() - t1, 1), "same": same}  # fmt: skip
        row["all_same"] = all(same.values())
        rows.append(row)
        print(
            f"{stage:9s} caught={caught} done_at_kill={','.join(done_at_kill) or '-'} rerun rc={rc} "
            f"{row['rerun_s']:.0f} s  same: {' '.join(k for k, v in same.items() if v)}"
            + ("" if row["all_same"] else "  DIFFERENT: " + " ".join(k for k, v in same.items() if not v))
        )
    res = {"session": str(session), "args": args, "reference_s": round(ref_s, 1), "stage_seconds": secs,
           "rows": rows}  # fmt: skip
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    ok = all(r["all_same"] and r["rerun_rc"] == 0 for r in rows)
    print(
        f"{sum(r['caught'] for r in rows)} of {len(rows)} stages caught mid-run; "
        f"{'every rerun gave the same outputs' if ok else 'SOME RERUNS DIFFER'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
