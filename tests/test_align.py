"""Alignment of handheld brackets (loopexpose.brackets.align): known camera motions recovered despite the
exposure difference, the common crop, frames that cannot be aligned, and the API, CLI and web-app wiring."""

from __future__ import annotations

import re
import warnings

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import loopexpose
from loopexpose import fusion
from loopexpose.brackets import align
from loopexpose.brackets.align import AlignmentWarning, align_frames, common_crop, estimate_motion
from loopexpose.cli import app
from loopexpose.errors import LoopExposeError
from loopexpose.io import read_image, to_numpy, write_image
from conftest import camera_motion, shaken_bracket

EVS = (-2.0, 0.0, 2.0)


def grid_error(estimate: np.ndarray, truth: np.ndarray, height: int, width: int) -> float:
    """Mean distance between where two reference -> frame maps put a 9 x 9 grid over the frame (pixels)."""
    ys, xs = np.meshgrid(np.linspace(0, height - 1, 9), np.linspace(0, width - 1, 9), indexing="ij")
    points = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], axis=1)
    moved = [points @ m.T for m in (estimate, truth)]
    a, b = (m[:, :2] / m[:, 2:] for m in moved)
    return float(np.linalg.norm(a - b, axis=1).mean())


@pytest.fixture(scope="module")
def handheld():
    """A -2/0/+2 EV bracket whose dark frame moved (+5.3, -3.1) px and turned 0.8 degrees, and whose bright frame
    moved (-4.2, +6.0) px and turned -1.2 degrees, against the middle (reference) frame."""
    height, width = 256, 384  # the window of coffee at 320 x 480, inset by 10%
    truth = [camera_motion(5.3, -3.1, 0.8, height, width), np.eye(3), camera_motion(-4.2, 6.0, -1.2, height, width)]
    unshaken, shaken = shaken_bracket(truth, EVS, side=480)
    assert shaken.shape[-2:] == (height, width)
    return unshaken, shaken, truth


def test_recovers_known_motion_despite_exposure(handheld):
    unshaken, shaken, truth = handheld
    height, width = shaken.shape[-2:]
    motions = estimate_motion(shaken)
    assert [m.model for m in motions][1] == "reference"  # the 0 EV frame is nearest mid-grey
    for motion, matrix, (dx, dy, degrees) in zip(motions, truth, [(5.3, -3.1, 0.8), (0, 0, 0), (-4.2, 6.0, -1.2)]):
        assert motion.aligned and motion.problem == ""
        assert motion.dx == pytest.approx(dx, abs=0.15) and motion.dy == pytest.approx(dy, abs=0.15)
        assert motion.rotation == pytest.approx(degrees, abs=0.03)
        assert grid_error(motion.matrix, matrix, height, width) < 0.25
        assert motion.correlation > 0.9


def test_aligned_frames_match_the_unshaken_bracket(handheld):
    unshaken, shaken, truth = handheld
    height, width = shaken.shape[-2:]
    result = align_frames(shaken)
    x, y, w, h = result.crop
    assert result.kept == [0, 1, 2] and result.reference == 1 and result.left_out == []
    assert result.frames.shape == (3, 3, h, w) and result.frames.dtype == shaken.dtype
    # the crop is about what the true motions leave in common (a pixel either way) and far from the full frame
    tx, ty, tw, th = common_crop(truth, height, width)
    assert abs(x - tx) <= 1 and abs(y - ty) <= 1 and abs(w - tw) <= 2 and abs(h - th) <= 2
    assert w < width - 8 and h < height - 8
    expected = unshaken[:, :, y : y + h, x : x + w]
    assert torch.equal(result.frames[1], expected[1])  # the reference is only cropped
    error = (result.frames - expected).abs().mean(dim=(1, 2, 3))
    unaligned = (shaken[:, :, y : y + h, x : x + w] - expected).abs().mean(dim=(1, 2, 3))
    assert error[0] < 0.01 and error[2] < 0.01 and (unaligned[[0, 2]] > 5 * error[[0, 2]]).all()


def test_reference_can_be_chosen_and_motion_inverts(handheld):
    _, shaken, truth = handheld
    height, width = shaken.shape[-2:]
    motions = estimate_motion(shaken, reference=0)
    assert motions[0].model == "reference" and np.array_equal(motions[0].matrix, np.eye(3))
    # frame 1 seen from frame 0: the inverse of frame 0's motion
    assert grid_error(motions[1].matrix, np.linalg.inv(truth[0]), height, width) < 0.25


def turned_camera(yaw: float, pitch: float, roll: float, hfov: float, height: int, width: int) -> np.ndarray:
    """``(3, 3)`` reference pixel -> frame pixel of a pinhole camera of horizontal field of view ``hfov`` turned by
    ``yaw``, ``pitch``, ``roll`` degrees about its centre: ``K R K^-1``, the perspective of handheld shake."""
    focal = width / 2 / np.tan(np.radians(hfov) / 2)
    k = np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]])
    rotation = cv2.Rodrigues(np.radians([pitch, yaw, roll]).reshape(3, 1))[0]
    matrix = k @ rotation @ np.linalg.inv(k)
    return matrix / matrix[2, 2]


def test_camera_rotation_recovered_across_wide_exposure_steps(monkeypatch):
    height, width = 256, 384
    truth = [turned_camera(1.2, -0.8, 0.6, 70, height, width), np.eye(3),
             turned_camera(-1.0, 0.9, -0.9, 70, height, width)]  # fmt: skip
    _, shaken = shaken_bracket(truth, (-3.0, 0.0, 3.0), side=480)
    # no in-plane motion explains these: the best similarity (Euclidean and scale) misses by over a pixel
    ys, xs = np.meshgrid(np.linspace(0, height - 1, 9), np.linspace(0, width - 1, 9), indexing="ij")
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)
    for matrix in truth[::2]:
        moved = cv2.perspectiveTransform(grid[None], matrix)[0]
        similarity, _ = cv2.estimateAffinePartial2D(grid, moved, method=cv2.LMEDS)
        assert np.linalg.norm(grid @ similarity[:, :2].T + similarity[:, 2] - moved, axis=1).mean() > 1.0
    motions = estimate_motion(shaken)
    assert [m.model for m in motions] == ["rotation", "reference", "rotation"]
    assert all(grid_error(m.matrix, t, height, width) < 0.2 for m, t in zip(motions, truth))
    # without the camera-rotation model (too few features) the +3 EV frame's homography is refused as unstable
    # and its Euclidean motion misses the perspective
    monkeypatch.setattr(align, "MIN_MATCHES", 10**6)
    fallback = estimate_motion(shaken)
    assert fallback[2].model == "euclidean" and grid_error(fallback[2].matrix, truth[2], height, width) > 0.5


def test_focal_length_and_rotations_fitted_to_matches():
    height, width, hfov = 300, 450, 65.0
    rng = np.random.default_rng(0)
    truth = {0: turned_camera(1.0, -0.5, 0.8, hfov, height, width),
             2: turned_camera(-0.7, 0.9, -0.4, hfov, height, width)}  # fmt: skip
    matches = {}
    for index, matrix in truth.items():
        points = rng.uniform((0, 0), (width, height), (200, 2))
        moved = cv2.perspectiveTransform(points[None], matrix)[0] + rng.normal(0, 0.05, (200, 2))
        moved[:20] += rng.uniform(-3, 3, (20, 2))  # a tenth of the matches wrong: the loss is robust
        matches[index] = points, moved, np.eye(3)  # the fit starts from no motion at all
    focal, rotations = align._camera_rotations(matches, height, width)
    assert 2 * np.degrees(np.arctan(width / 2 / focal)) == pytest.approx(hfov, abs=1.0)
    assert sorted(rotations) == [0, 2]
    assert all(grid_error(rotations[i], truth[i], height, width) < 0.05 for i in truth)


def test_far_exposure_is_registered_through_its_neighbour():
    height, width = 256, 384
    truth = [camera_motion(3.0, -2.0, 0.5, height, width), camera_motion(-2.0, 1.0, -0.3, height, width), np.eye(3)]
    _, shaken = shaken_bracket(truth, (-7.0, -3.5, 0.0), side=480)
    noise = torch.randn(shaken[0].shape, generator=torch.Generator().manual_seed(0)) * 2 / 255
    shaken[0] = torch.round((shaken[0] + noise).clamp(0, 1) * 255) / 255  # -7 EV: a few noisy levels
    motions = estimate_motion(shaken, reference=2)
    assert motions[0].via == "frame 1" and motions[1].via == ""
    assert "(via frame 1)" in motions[0].describe()
    assert grid_error(motions[0].matrix, truth[0], height, width) < 0.3


def test_common_crop_of_translations_is_exact():
    height, width = 100, 200
    shift = np.array([[1, 0, 5], [0, 1, -3], [0, 0, 1]], np.float64)  # the frame's content moved right 5, up 3
    assert common_crop([np.eye(3), shift], height, width) == (0, 3, width - 5, height - 3)
    assert common_crop([np.eye(3)], height, width) == (0, 0, width, height)
    with pytest.raises(LoopExposeError, match="share no common region"):
        common_crop([np.eye(3), np.array([[1, 0, 500], [0, 1, 0], [0, 0, 1]], np.float64)], height, width)


def test_frame_of_another_scene_is_left_out_with_a_warning():
    height, width = 256, 384
    _, coffee = shaken_bracket([np.eye(3)] * 2, (-1.0, 0.0), side=480)
    _, other = shaken_bracket([np.eye(3)], (1.0,), photo="astronaut", side=480)
    frames = torch.cat([coffee, other[:, :, :height, :width]])
    with pytest.warns(AlignmentWarning, match=r"cat\.png: cannot be aligned, left out: correlation"):
        result = align_frames(frames, names=["dark.png", "mid.png", "cat.png"])
    assert result.kept == [0, 1] and result.left_out == [2]
    assert result.frames.shape[0] == 2 and not result.motions[2].aligned
    assert "left out" in result.motions[2].describe()


def test_frames_without_texture_are_left_out():
    flat = torch.linspace(0.2, 0.6, 3).view(3, 1, 1, 1).expand(3, 3, 64, 96).contiguous()
    with pytest.warns(AlignmentWarning, match="too little texture"):
        result = align_frames(flat)
    assert result.kept == [result.reference] and result.crop == (0, 0, 96, 64)


def test_bad_input_is_refused():
    with pytest.raises(LoopExposeError, match=r"one bracket of frames \(N, 3, H, W\)"):
        align_frames(torch.rand(3, 32, 32))
    with pytest.raises(LoopExposeError, match="float frames"):
        align_frames(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(LoopExposeError, match="reference frame 5 is out of range for 2 frames"):
        align_frames(torch.rand(2, 3, 32, 32), reference=5)
    with pytest.raises(LoopExposeError, match="too small"):
        align_frames(torch.rand(2, 3, 8, 8))


# ------------------------------------------------------------------------------------------ wiring

def test_api_fuse_align(handheld):
    unshaken, shaken, _ = handheld
    with warnings.catch_warnings():
        warnings.simplefilter("error", AlignmentWarning)
        fused = loopexpose.fuse(shaken, align=True)
    x, y, w, h = align_frames(shaken).crop
    assert fused.shape == (3, h, w)
    expected = fusion.fuse(unshaken[:, :, y : y + h, x : x + w]).clamp(0, 1)
    unaligned = fusion.fuse(shaken[:, :, y : y + h, x : x + w]).clamp(0, 1)
    error, unaligned_error = (fused - expected).abs().mean(), (unaligned - expected).abs().mean()
    assert error < 0.01 and unaligned_error > 5 * error  # what is left is the blur of two resamplings
    arrays = [to_numpy(frame) for frame in shaken]  # any input kind: arrays give an array back
    assert loopexpose.fuse(arrays, align=True).shape == (h, w, 3)
    with pytest.raises(LoopExposeError, match="not a batch"):
        loopexpose.fuse(shaken[None], align=True)


def write_scene(folder, frames, names):
    folder.mkdir(parents=True)
    for frame, name in zip(frames, names):
        write_image(folder / name, to_numpy(frame))
    return folder


def test_cli_fuse_align_prints_motion_and_crops(tmp_path, handheld):
    _, shaken, _ = handheld
    scene = write_scene(tmp_path / "hand held", shaken, ["x_N2.png", "x_0.png", "x_P2.png"])
    result = CliRunner().invoke(app, ["fuse", str(scene), "-o", str(tmp_path / "out"), "--align"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "hand held: aligned to x_0.png" in text
    # dx of the dark and bright frames
    assert re.search(r"│ x_N2\.png │ \+5\.[23]", text) and "│ x_P2.png │ -4." in text
    fused = read_image(tmp_path / "out" / "hand held.png").pixels
    assert fused.shape[0] < shaken.shape[-2] and fused.shape[1] < shaken.shape[-1]
    plain = CliRunner().invoke(app, ["fuse", str(scene), "-o", str(tmp_path / "plain")])
    assert plain.exit_code == 0 and "aligned to" not in plain.output
    assert read_image(tmp_path / "plain" / "hand held.png").pixels.shape[:2] == tuple(shaken.shape[-2:])


def test_cli_fuse_align_warns_about_frames_left_out(tmp_path):
    _, coffee = shaken_bracket([np.eye(3)] * 2, (-1.0, 0.0), side=480)
    _, other = shaken_bracket([np.eye(3)], (1.0,), photo="astronaut", side=480)
    frames = torch.cat([coffee, other[:, :, :256, :384]])
    scene = write_scene(tmp_path / "mixed", frames, ["m_N1.png", "m_0.png", "m_P1.png"])
    result = CliRunner().invoke(app, ["fuse", str(scene), "-o", str(tmp_path / "out"), "--align"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"warning: {scene}: m_P1.png: cannot be aligned, left out" in text
    assert (tmp_path / "out" / "mixed.png").is_file()


def test_web_demo_fuse_aligns(tmp_path, handheld):
    from loopexpose.app import WebDemo

    class Identity:
        def correct(self, image):
            return image

    _, shaken, _ = handheld
    demo = WebDemo(models={"identity": Identity()}, workdir=tmp_path / "web")
    try:
        paths = []
        for index, (frame, name) in enumerate(zip(shaken, ["h_N2.png", "h_0.png", "h_P2.png"])):
            folder = demo.uploads / f"u{index}"
            folder.mkdir()
            paths.append(str(write_image(folder / name, to_numpy(frame))))
        result = demo.fuse(paths, "identity", align=True)
        x, y, w, h = result.alignment.crop
        assert read_image(result.download).pixels.shape == (h, w, 3)
        assert result.ordered[0][0].shape[:2] == (h, w)
        assert "Aligned to **h_0.png**" in result.report
        assert re.search(r"\| h_N2\.png \| (euclidean|rotation|homography) \| \+5\.[23]", result.report)
        assert demo.fuse(paths, "identity").alignment is None
    finally:
        demo.close()


def test_docstring_examples():
    import doctest

    failures, tried = doctest.testmod(align, verbose=False)
    assert tried > 0 and failures == 0
