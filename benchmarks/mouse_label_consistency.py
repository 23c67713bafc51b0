"""How well do the anipose session's cameras agree with each other? (issue 21, leave one camera out)

For each usable camera of ``../shared/data/mouse_minimal_session`` (back, mid, top), the median distance
between its proofread SLEAP labels and the reprojection of 3D points made in four ways:

* ``others``: 2-view DLT of the *other* two cameras' labels (the leave-one-out baseline);
* ``all3``: 3-view DLT of all three cameras' labels (this camera's labels included);
* ``all3_refined``: the same points refined by Gauss-Newton on the 3-view squared reprojection error
  (the maximum-likelihood point under equal pixel noise);
* ``anipose``: anipose's own triangulation in ``points3d.h5`` (made by anipose from all four cameras).

A camera whose labels are off even for points that were fitted *to* them (``all3_refined``, ``anipose``)
disagrees with the others by more than label noise: no 3D method that sees only the other two can
reproject into it more closely than ``others`` suggests.

The projection is checked against ``cv2.projectPoints`` with the raw ``calibration.toml`` values (an
independent oracle for the reader's conventions: OpenCV's pixel centres at 0, ours at +0.5).

    python benchmarks/mouse_label_consistency.py [--session DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _proj(cam, X: np.ndarray) -> np.ndarray:
    """Pixels (internal +0.5 convention) of points [..., 3], the camera's distortion included."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        uv, _ = cam.project(X.reshape(-1, 3))
    return uv.reshape(X.shape[:-1] + (2,))


def refine(cameras, points2d: np.ndarray, X: np.ndarray, iters: int = 10) -> np.ndarray:
    """Gauss-Newton on the summed squared reprojection error (numerical Jacobian), per point."""
    X = X.copy()
    ok = np.isfinite(X).all(-1)
    for _ in range(iters):
        r0, J = [], []
        for c, cam in enumerate(cameras):
            uv = _proj(cam, X)
            res = np.where(np.isfinite(points2d[c]), uv - points2d[c], 0.0)
            r0.append(res)
            cols = []
            for a in range(3):
                dX = np.zeros(3)
                dX[a] = 1e-4
                cols.append((_proj(cam, X + dX) - uv) / 1e-4)
            jc = np.stack(cols, -1)  # [..., 2, 3]
            J.append(np.where(np.isfinite(points2d[c])[..., None], jc, 0.0))
        r = np.concatenate(r0, -1)[..., None]  # [..., 2C, 1]
        Jm = np.concatenate(J, -2)  # [..., 2C, 3]
        JT = np.swapaxes(Jm, -1, -2)
        H = JT @ Jm + 1e-9 * np.eye(3)
        use = ok[..., None, None]
        step = np.linalg.solve(np.where(use, H, np.eye(3)), np.where(use, JT @ r, 0.0))[..., 0]
        X = np.where(ok[..., None], X - step, X)
    return X


def cv2_check(session: Path, obs) -> float:
    """Largest pixel difference between the package's projection and cv2.projectPoints."""
    import cv2
    import tomllib

    cal = tomllib.loads((session / "calibration.toml").read_text())
    raw = {c["name"]: c for k, c in cal.items() if k.startswith("cam_")}
    X = np.random.default_rng(0).normal([0, 0, 0], 30, (200, 3))
    if obs.points3d is not None:
        X = obs.points3d[np.isfinite(obs.points3d).all(-1)][:200]
    worst = 0.0
    for name, cam in zip(obs.cameras, obs.camera_models):
        c = raw[name]
        uv, _ = cv2.projectPoints(X.reshape(-1, 1, 3), np.array(c["rotation"], float),
                                  np.array(c["translation"], float), np.array(c["matrix"], float),
                                  np.array(c["distortions"], float))
        ours = _proj(cam, X) - 0.5
        worst = max(worst, float(np.abs(uv.reshape(-1, 2) - ours).max()))
    return worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--session", default=str(ROOT.parent / "shared/data/mouse_minimal_session"))
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    session = Path(a.session)
    if not (session / "calibration.toml").is_file():
        print(f"skipped: {session} is absent (the anipose mouse session of ../shared/data)")
        return 0
    from track_mouse import _med, _usable

    from gausslift.track.metrics import pixel_errors
    from gausslift.track.observations import load_observations
    from gausslift.track.triangulate import triangulate

    obs = load_observations(session)
    obs = obs.select(cameras=_usable(session, obs))
    print(f"cameras {obs.cameras}; frames {obs.num_frames}; nodes {len(obs.names)}")
    print(f"projection vs cv2.projectPoints: max {cv2_check(session, obs):.2e} px")
    all3, _ = triangulate(obs.camera_models, obs.points2d)
    ref = refine(obs.camera_models, obs.points2d, all3)
    rows = []
    for name in obs.cameras:
        others = [c for c in obs.cameras if c != name]
        o = obs.select(cameras=others)
        X2, _ = triangulate(o.camera_models, o.points2d)
        h = obs.select(cameras=[name])
        row = {"camera": name}
        for key, X in (("others", X2), ("all3", all3), ("all3_refined", ref), ("anipose", obs.points3d)):
            if X is None:
                continue
            e = pixel_errors(h.camera_models, X, h.points2d)[0]
            row[key] = _med(e[np.isfinite(X2).all(-1)])  # the points the leave-one-out baseline has
        rows.append(row)
        print("  ".join(f"{k} {v}" for k, v in row.items()))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
