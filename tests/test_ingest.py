"""End-to-end ingest on synthetic rigs with known calibration: the output images agree with the output
cameras to a small fraction of a pixel (the consistency property, checked on pixels, not only on the
stored matrices), the normalisation is one similarity, the subject is sized and centred, and videos
(anipose layout) get background masks, or grabCut masks when the subject does not move."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from test_preprocess_synth import (
    CENTRE,
    RADIUS,
    UP_TRUE,
    background,
    make_rig,
    pixel_rays,
    render,
    write_anipose_session,
    write_points3d,
)

from gausslift.cameras import Camera, invert_rigid, make_K
from gausslift.errors import InputError
from gausslift.preprocess.ingest import IngestOptions, ingest
from gausslift.preprocess.normalize import transform_camera, transform_points
from gausslift.preprocess.undistort import apply_homography, pinhole_project
from gausslift.scene import Scene, View


def _still_scene(tmp_path, cams):
    views = []
    for i, cam in enumerate(cams):
        o, d = pixel_rays(cam)
        img, m = render(o, d, bg=background(cam.height, cam.width, i))
        ip, mp = tmp_path / f"in/c{i}.png", tmp_path / f"in/m{i}.png"
        ip.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(ip), np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8))
        cv2.imwrite(str(mp), (m * 255).astype(np.uint8))
        views.append(View(f"cam{i}", cam, image=ip, mask=mp))
    return Scene(views=views, format="synthetic", root=tmp_path / "in")


def _similarity_inverse(T):
    Ti = np.linalg.inv(T)
    return Ti


def _read_sample(folder):
    js = json.loads((folder / "opencv_cameras.json").read_text())
    out = []
    for fr in js["frames"]:
        cam = Camera(make_K(fr["fx"], fr["fy"], fr["cx"], fr["cy"]), np.asarray(fr["w2c"]), fr["w"], fr["h"])
        rgba = cv2.imread(str(folder / fr["file_path"]), cv2.IMREAD_UNCHANGED)
        out.append((fr, cam, rgba))
    return np.asarray(js["world_from_capture"]), out


def _shift(img, ref, region):
    """Least-squares sub-pixel shift d with img ~ ref(p - d), from ref's gradient inside ``region``."""
    gy, gx = np.gradient(ref)
    A = np.stack([-gx[region], -gy[region]], 1)
    d, *_ = np.linalg.lstsq(A, (img - ref)[region], rcond=None)
    return d, float(np.sqrt(np.mean((img - ref)[region] ** 2)))


@pytest.fixture(scope="module")
def still_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("still")
    cams = make_rig(4)
    man = ingest(None, tmp / "out", IngestOptions(size=192, target_scale=0.3), scene=_still_scene(tmp, cams))
    return cams, man, tmp / "out"


def test_output_pixels_agree_with_output_cameras(still_run):
    cams, man, out = still_run
    T, views = _read_sample(out / man["samples"][0]["path"])
    Ti = _similarity_inverse(T)
    for fr, cam_n, rgba in views:
        cam_c = transform_camera(cam_n, Ti)  # the output camera back in capture units
        o, d = pixel_rays(cam_c)
        ref, hit = render(o, d)
        img = rgba[..., 0].astype(np.float64) / 255.0
        inner = cv2.erode(hit.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
        assert inner.sum() > 500
        dxy, rms = _shift(img, ref, inner)
        assert np.abs(dxy).max() < 0.05, f"{fr['source']['camera']}: image offset {dxy} px from its camera"
        assert rms < 0.01
        # alpha is the true silhouette seen by the output camera (up to the resampled edge)
        alpha = rgba[..., 3] >= 128
        iou = (alpha & hit).sum() / (alpha | hit).sum()
        assert iou > 0.97
        # the test can see a half-pixel error: a reference rendered half a pixel off is detected
        o2, d2 = pixel_rays(cam_c.with_(K=cam_c.K + np.array([[0, 0, 0.5], [0, 0, 0], [0, 0, 0]])))
        ref2, _ = render(o2, d2)
        assert abs(_shift(img, ref2, inner)[0][0] + 0.5) < 0.1


def test_stored_homography_matches_output_camera(still_run):
    cams, man, out = still_run
    T, views = _read_sample(out / man["samples"][0]["path"])
    rng = np.random.default_rng(1)
    P = CENTRE + rng.normal(scale=RADIUS, size=(50, 3))
    by_name = {f"cam{i}": c for i, c in enumerate(cams)}
    for fr, cam_n, _ in views:
        src = by_name[fr["source"]["camera"]]
        a = apply_homography(np.asarray(fr["source"]["homography"]), pinhole_project(src, P))
        b = cam_n.project(transform_points(T, P))[0]
        assert np.abs(a - b).max() < 1e-6


def test_normalisation_is_one_similarity(still_run):
    cams, man, out = still_run
    T, views = _read_sample(out / man["samples"][0]["path"])
    A = T[:3, :3]
    s = np.cbrt(np.linalg.det(A))
    assert np.allclose(A @ A.T, s * s * np.eye(3), atol=1e-9)  # a similarity, no shear
    # subject at the origin (centre from mask rays: within 2% of the sphere radius)
    assert np.linalg.norm(transform_points(T, CENTRE[None])[0]) < 0.02 * s * RADIUS
    # the rig's up is +z
    assert np.degrees(np.arccos((A @ UP_TRUE / s)[2])) < 0.5
    # distances: median 2.7, and every camera scaled by the same factor (ratios kept)
    d_out = np.array([np.linalg.norm(c.center) for _, c, _ in views])
    d_in = np.array([np.linalg.norm(c.center - CENTRE) for c in cams])
    assert abs(np.median(d_out) - 2.7) < 0.02
    assert np.allclose(d_out / d_in, (d_out / d_in)[0], rtol=2e-3)
    # output camera centres are the source centres mapped by T
    assert np.allclose(
        [c.center for _, c, _ in views], transform_points(T, np.array([c.center for c in cams]))
    )


def test_subject_sized_and_centred(still_run):
    _, man, out = still_run
    _, views = _read_sample(out / man["samples"][0]["path"])
    for _, cam, rgba in views:
        a = rgba[..., 3].astype(np.float64) / 255
        assert abs(np.sqrt(a.mean()) - 0.3) < 0.005
        ys, xs = np.mgrid[0 : a.shape[0], 0 : a.shape[1]] + 0.5
        com = np.array([(a * xs).sum(), (a * ys).sum()]) / a.sum()
        assert np.abs(com - 96).max() < 0.5
        assert np.allclose([cam.K[0, 2], cam.K[1, 2]], 96) and cam.K[0, 0] == cam.K[1, 1]
    rep = json.loads((out / "report.json").read_text())
    assert rep["summary"]["size_ratio_after"]["cv"] < 0.02
    assert (out / "report.md").read_text().count("| cam") >= 4


def test_facelift_framing_focal(tmp_path):
    cams = make_rig(3)
    man = ingest(
        None, tmp_path / "o", IngestOptions(size=128, framing="facelift"), scene=_still_scene(tmp_path, cams)
    )
    _, views = _read_sample(tmp_path / "o" / man["samples"][0]["path"])
    for _, cam, _ in views:
        d = np.linalg.norm(cam.center)
        assert cam.K[0, 0] == pytest.approx(548.9937744140625 * d / 2.7 * 128 / 512, rel=1e-9)
        uv, _ = cam.project(np.zeros((1, 3)))  # looks at the subject centre
        assert np.allclose(uv, 64, atol=1e-6)


def _session_centres(n, moving):
    if not moving:
        return [CENTRE.copy() for _ in range(n)]
    return [CENTRE + (i - (n - 1) / 2) * 30.0 * UP_TRUE for i in range(n)]  # up and down: seen by all


@pytest.mark.parametrize("moving", [True, False])
def test_video_session_masks(tmp_path, moving):
    cams = make_rig(3, 192, 160)
    names = ["a", "b", "c"]
    centres = _session_centres(9, moving)
    truth = write_anipose_session(tmp_path / "s", cams, names, centres)
    if not moving:  # keypoints seed the fallback segmentation
        pts = np.array(
            [
                c + RADIUS * 0.6 * np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 0]])
                for c in centres
            ]
        )
        write_points3d(tmp_path / "s", pts)
    opts = IngestOptions(frames="1:9:3", size=96, chunk=2 if moving else 16)  # 2: frames streamed in chunks
    man = ingest(tmp_path / "s", tmp_path / "o", opts)
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    methods = {r["mask_method"] for r in rep["views"]}
    assert methods == ({"background"} if moving else {"grabcut"})
    assert [s["frame"] for s in man["samples"]] == [1, 4, 7]
    for s in man["samples"]:
        T, views = _read_sample(tmp_path / "o" / s["path"])
        for fr, cam_n, rgba in views:
            src = cams[names.index(fr["source"]["camera"])]
            cam_c = transform_camera(cam_n, np.linalg.inv(T))
            _, hit = render(*pixel_rays(cam_c), centre=centres[s["frame"]])
            alpha = rgba[..., 3] >= 128
            iou = (alpha & hit).sum() / (alpha | hit).sum()
            assert iou > 0.85, (s["frame"], fr["source"]["camera"], iou)
            assert fr["source"]["frame"] == s["frame"]
            assert src is not None
    assert truth["a"].shape[0] == 9


def test_copied_calibration_is_caught(tmp_path):
    """A camera whose calibration is a copy of another's (no keypoints to tell): its images disagree
    with the rig, so it is reported and left out; --keep-bad-cameras keeps it with a warning."""
    cams = make_rig(4, 160, 128)
    yaw = 0.2  # turn camera d so the subject sits well left of centre (c's copy would put it elsewhere)
    R = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    V = cams[3].viewmat.copy()
    V[:3] = R @ V[:3]
    cams[3] = cams[3].with_(viewmat=V)
    names = ["a", "b", "c", "d"]
    write_anipose_session(tmp_path / "s", cams, names, _session_centres(6, True))
    toml = (tmp_path / "s" / "calibration.toml").read_text().split("[cam_")
    blocks = {b.split("]")[0]: b for b in toml[1:]}
    blocks["3"] = blocks["2"].replace('name = "c"', 'name = "d"').replace("2]", "3]", 1)
    (tmp_path / "s" / "calibration.toml").write_text("".join("[cam_" + blocks[k] for k in sorted(blocks)))
    man = ingest(tmp_path / "s", tmp_path / "o", IngestOptions(frames="0:6:2", size=64))
    assert "d" not in man["cameras"] and len(man["cameras"]) == 3
    assert any("'d'" in w and "inconsistent" in w for w in man["warnings"])
    man2 = ingest(
        tmp_path / "s", tmp_path / "o2", IngestOptions(frames="0:6:2", size=64, keep_bad_cameras=True)
    )
    assert "d" in man2["cameras"]


def test_exclude_and_bad_options(tmp_path):
    cams = make_rig(3, 128, 96)
    write_anipose_session(tmp_path / "s", cams, ["a", "b", "c"], _session_centres(4, True))
    man = ingest(tmp_path / "s", tmp_path / "o", IngestOptions(frames="0:4:2", size=64, exclude=("b",)))
    assert man["cameras"] == ["a", "c"]
    with pytest.raises(InputError):
        ingest(tmp_path / "s", tmp_path / "o", IngestOptions(exclude=("zz",)))
    with pytest.raises(InputError):
        ingest(tmp_path / "s", tmp_path / "o", IngestOptions(frames="10:20"))
    with pytest.raises(InputError):
        ingest(tmp_path / "s", tmp_path / "o", IngestOptions(frames="0,50"))
    from gausslift.cli import main

    assert (
        main(
            ["ingest", str(tmp_path / "s"), "--out", str(tmp_path / "o3"), "--frames", "1,2", "--size", "64"]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "o3").iterdir() if p.is_dir()) == [
        "frame_000001",
        "frame_000002",
    ]
    assert main(["ingest", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o4")]) == 1


def test_calibration_only_rig_reports_reprojection(tmp_path):
    cams = make_rig(4)
    pts = CENTRE + np.random.default_rng(0).normal(scale=20, size=(3, 7, 3))
    p2 = {f"c{i}": c.project(pts.reshape(-1, 3))[0].reshape(3, 7, 2) for i, c in enumerate(cams)}
    bad = cams[3].with_(viewmat=cams[3].viewmat @ invert_rigid(np.eye(4)))
    bad.viewmat[:3, 3] += [15.0, 0, 0]  # 15 mm off: reprojects far from its labels
    from gausslift.scene import Keypoints

    scene = Scene(
        [View(f"c{i}", c) for i, c in enumerate(cams[:3] + [bad])], format="synthetic", root=tmp_path
    )
    scene.keypoints = Keypoints(pts, p2)
    man = ingest(None, tmp_path / "o", IngestOptions(), scene=scene)
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert man["samples"] == [] and (tmp_path / "o" / "cameras.json").is_file()
    for i in range(3):
        assert rep["cameras"][f"c{i}"]["reprojection"]["median_px"] < 1e-6
    assert rep["cameras"]["c3"]["reprojection"]["median_px"] > 5
    assert not rep["cameras"]["c3"]["used"]


def test_given_mask_videos_are_used_as_they_are(tmp_path):
    cams = make_rig(3, 128, 96)
    names = ["a", "b", "c"]
    centres = _session_centres(5, True)
    truth = write_anipose_session(tmp_path / "s", cams, names, centres)
    (tmp_path / "m").mkdir()
    for n in names:  # deliberately eroded masks: the output must follow them, not re-segment
        vw = cv2.VideoWriter(str(tmp_path / "m" / f"{n}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 96))
        for m in truth[n]:
            e = cv2.erode(m.astype(np.uint8) * 255, np.ones((5, 5), np.uint8))
            vw.write(cv2.cvtColor(e, cv2.COLOR_GRAY2BGR))
        vw.release()
    man = ingest(
        tmp_path / "s", tmp_path / "o", IngestOptions(frames="0:5:2", size=64, masks=str(tmp_path / "m"))
    )
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert {r["mask_method"] for r in rep["views"]} == {"given"}
    for r in rep["views"]:
        fi = int(r["sample"].split("_")[1])
        eroded = cv2.erode(truth[r["camera"]][fi].astype(np.uint8), np.ones((5, 5), np.uint8))
        assert abs(r["mask_coverage"] - eroded.mean()) < 0.1 * eroded.mean()
    with pytest.raises(InputError):
        ingest(tmp_path / "s", tmp_path / "o2", IngestOptions(masks=str(tmp_path / "nomasks")))
    assert len(man["samples"]) == 3


def test_capture_mask_videos_from_the_reader_are_used(tmp_path):
    """Readers may attach a mask video to a view (MAMMAL's simpleclick_undist): used as given."""
    cams = make_rig(3, 128, 96)
    names = ["a", "b", "c"]
    truth = write_anipose_session(tmp_path / "s", cams, names, _session_centres(4, True))
    views = []
    for n, cam in zip(names, cams):
        mv = tmp_path / f"{n}_mask.avi"
        vw = cv2.VideoWriter(str(mv), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 96))
        for m in truth[n]:
            vw.write(cv2.cvtColor(m.astype(np.uint8) * 255, cv2.COLOR_GRAY2BGR))
        vw.release()
        views.append(View(n, cam, meta={"video": tmp_path / "s" / n / f"{n}.avi", "mask_video": mv}))
    scene = Scene(views, format="synthetic", root=tmp_path)
    ingest(None, tmp_path / "o", IngestOptions(frames="1:3", size=64), scene=scene)
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert {r["mask_method"] for r in rep["views"]} == {"given"} and len(rep["views"]) == 6


def test_stills_without_masks_are_segmented_from_the_projected_centre(tmp_path):
    cams = make_rig(4)
    scene = _still_scene(tmp_path, cams)
    truth = [cv2.imread(str(v.mask), cv2.IMREAD_GRAYSCALE) > 127 for v in scene.views]
    for v in scene.views:
        v.mask = None
    ingest(None, tmp_path / "o", IngestOptions(size=96), scene=scene)
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    for r, t in zip(rep["views"], truth):
        assert r["mask_method"] == "grabcut" and "projected subject centre" in r["mask_note"]
        assert abs(r["mask_coverage"] - t.mean()) < 0.1 * t.mean()
        assert r["mask_confidence"] <= 0.3  # a weak seed is reported as such
