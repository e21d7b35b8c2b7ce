"""Benchmark: alignment of shaken real brackets, ours against OpenCV's AlignMTB and Hugin's align_image_stack.

Run from the repository root::

    PYTHONPATH=src .venv/bin/python bench/align.py                  # accuracy on 12 scenes + speed at 12 MP
    PYTHONPATH=src .venv/bin/python bench/align.py --no-speed       # accuracy only
    PYTHONPATH=src .venv/bin/python bench/align.py --speed-only     # the 12 MP timing only
    PYTHONPATH=src .venv/bin/python bench/align.py --check-sources  # which stored brackets are registered

Scenes (:data:`SCENES`): 12 brackets from ``../shared/data/brackets`` at their stored size (536 x 356 to
1200 x 801; brackets longer than 5 frames as the 5 frames around the one nearest mid-grey, about -2..+2 EV for
HDRPS). Only brackets whose stored frames are themselves registered can serve as ground truth: many are not
(DeepFuse's and Merianos' scenes are off by 0.3 to 4 px, some HDRPS frames differ in magnification by 0.5 %).
``--check-sources`` measures every candidate with our estimate and with Hugin's; the 12 are from the 30 of 122
where both find less than :data:`REGISTERED_PX` of motion.

Shake, simulated exactly: the camera sees a window of the stored frame inset by :data:`INSET` of each side. The
reference frame (nearest mid-grey) sees the centred window; every other frame sees it through a camera turned
about its centre (seeded random): yaw and pitch that move the image centre up to :data:`MAX_SHIFT` of the side
on each axis, roll up to :data:`MAX_ROTATION` degrees, for a pinhole camera whose horizontal field of view is
drawn per scene from :data:`HFOV` (the homography ``K R K^-1``: the perspective real handheld shake adds);
``--no-perspective`` makes it a plain in-plane shift and rotation. Shaken frames are resampled from the stored
frame (Lanczos) and quantised to 8 bits, as a camera's files would be; every method gets the same frames.

Accuracy: the residual of a frame is the mean distance, over a 9 x 9 grid spanning the whole reference frame,
between where the true and the recovered transform put each grid point in the shaken frame (pixels at the stored
size). Median and p90 over all non-reference frames of all scenes; a frame a method leaves out counts as
infinitely wrong.

Fused quality: every method's transforms warp the shaken frames onto the reference with the same bicubic warp
(:func:`loopexpose.brackets.align.warp_frames`), so only the estimates differ, inside one evaluation rectangle
per scene: the largest rectangle that every *true* shaken frame covers, inset by 2 px (each method's own crop
would differ; this one is fair to all and the unshaken bracket has it too). The same rectangle is cut from the
unshaken frames. Each bracket is fused (Mertens, ``loopexpose.fusion.fuse``, ``opencv`` preset) and scored with
MEF-SSIM (``loopexpose.metrics.mef_ssim``) against the *unshaken* frames of the rectangle; the drop is the
unshaken bracket's score minus the method's. A frame a method leaves out is left out of its fusion. Two more
rows bound the comparison: the true transforms (what resampling alone costs; bicubic, and bilinear) and no
alignment at all.

Methods:

* ``ours``: :func:`loopexpose.brackets.align.estimate_motion` (timed: estimation only; ``align_frames``, with
  the full-size warp and crop, is timed in the speed run);
* ``AlignMTB``: ``cv2.createAlignMTB().calculateShift`` of each frame's grey against the reference's (defaults:
  6 levels, exclude range 4): integer translation only;
* ``align_image_stack``: Hugin's tool with its default options, on 8-bit TIFFs in a temporary folder, with
  ``-p`` (control points and optimisation, no remapping) and ``-f`` the true field of view (what a camera's EXIF
  would tell it; without it Hugin assumes 50 degrees); its transforms are read back from the ``.pto`` with
  ``pano_trafo`` (a dense grid reference -> panorama -> frame, fitted by a homography, exact for its camera
  rotations). ``align_image_stack, no FOV``: the same without ``-f``, as for files without EXIF (Hugin then
  assumes 50 degrees). Skipped when ``align_image_stack`` or ``pano_trafo`` is absent.

Speed (skipped with ``--no-speed``): a bracket (:data:`SPEED_SCENE`) resized to 4762 x 3572 and shaken as above,
so that each frame is 4000 x 3000 (12 MP, 5 frames): ``align_frames`` (estimate, full-size bicubic warp, crop)
and ``estimate_motion`` alone, best of ``--repeats``; ``AlignMTB`` (shifts and the integer shift of every
plane); ``align_image_stack -a`` (align and write the remapped TIFFs; inputs written beforehand, not timed),
once. Then the whole job, files in and a fused file out, each tool run as a command: ``loopexpose fuse --align
--deghost --format tif`` (``ours_pipeline_s``) against ``align_image_stack -a`` followed by ``enfuse`` on its
output (``hugin_pipeline_s``), best of ``--repeats``, and their ratio (``pipeline_speedup``). Wall-clock seconds
on this machine, whose load (shared with other jobs) is recorded before and after.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

import cv2
import numpy as np
import torch

from loopexpose import brackets, fusion, metrics, paths
from loopexpose.brackets import align

#: (collection, scene): 12 scenes whose stored frames are registered to within 0.15 px by both our estimate and
#: Hugin's (``--check-sources``: 30 of 122 pass), from five collections, at their stored sizes.
SCENES = [
    ("hdrps", "Bandon Sunset (1)"),
    ("hdrps", "Cades Cove"),
    ("hdrps", "Delicate Arch"),
    ("hdrps", "Exploratorium (2)"),
    ("hdrps", "General Grant"),
    ("waterloo_mef", "Farmhouse"),
    ("waterloo_mef", "Landscape"),
    ("waterloo_mef", "Studio"),
    ("waterloo_mef", "YellowHall"),
    ("mef_misc", "LivingRoom"),
    ("mef_misc", "Tree"),
    ("deepfuse", "Seq_76"),
]
#: Collections searched by ``--check-sources``, and the registration a scene's own frames need to pass.
CANDIDATE_COLLECTIONS = ("hdrps", "waterloo_mef", "memorial_church", "mef_misc", "merianos2016", "deepfuse")
REGISTERED_PX = 0.15
INSET = 0.08
MAX_SHIFT = 0.03
MAX_ROTATION = 1.5
HFOV = (40.0, 75.0)
WINDOW = 5
GRID = 9
SPEED_SCENE = ("hdrps", "Cades Cove")


# ------------------------------------------------------------------------------------------ brackets

def load_scene(collection: str, scene: str) -> torch.Tensor:
    """``(N, 3, H, W)`` frames, darkest first; longer brackets as a 5-frame window around the frame nearest
    mid-grey (about -2..+2 EV for HDRPS)."""
    folder = paths.data_root() / "brackets" / collection / scene
    bracket, frames = brackets.read_bracket(folder)
    if len(frames) > WINDOW:
        middle = bracket.reference_index()
        start = min(max(0, middle - WINDOW // 2), len(frames) - WINDOW)
        frames = frames[start : start + WINDOW]
    return frames


def window_of(height: int, width: int) -> tuple[int, int, int, int]:
    """``(x, y, w, h)`` of the camera's window in the stored frame."""
    mx, my = round(INSET * width), round(INSET * height)
    return mx, my, width - 2 * mx, height - 2 * my


def random_shake(rng: np.random.Generator, h: int, w: int, hfov: float | None) -> np.ndarray:
    """A reference pixel -> the shaken frame's pixel (``(3, 3)``).

    With ``hfov`` (degrees): the camera turns about its centre (yaw and pitch that move the image centre up to
    :data:`MAX_SHIFT` of the side, roll up to :data:`MAX_ROTATION` degrees): the homography ``K R K^-1`` of a
    pinhole camera of that horizontal field of view, whose perspective is what handheld shake really adds.
    Without: the same shift and roll as a plain in-plane rotation and translation.
    """
    roll = math.radians(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    shift_x, shift_y = rng.uniform(-MAX_SHIFT, MAX_SHIFT) * w, rng.uniform(-MAX_SHIFT, MAX_SHIFT) * h
    cx, cy = (w - 1) / 2, (h - 1) / 2
    if hfov is None:
        c, s = math.cos(roll), math.sin(roll)
        linear = np.array([[c, -s], [s, c]])
        matrix = np.eye(3)
        matrix[:2, :2] = linear
        matrix[:2, 2] = np.array([cx + shift_x, cy + shift_y]) - linear @ np.array([cx, cy])
        return matrix
    f = (w / 2) / math.tan(math.radians(hfov) / 2)
    k = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]])
    yaw, pitch = math.atan(shift_x / f), math.atan(shift_y / f)
    ry = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
    rx = np.array([[1, 0, 0], [0, math.cos(pitch), math.sin(pitch)], [0, -math.sin(pitch), math.cos(pitch)]])
    rz = np.array([[math.cos(roll), -math.sin(roll), 0], [math.sin(roll), math.cos(roll), 0], [0, 0, 1]])
    matrix = k @ rz @ rx @ ry @ np.linalg.inv(k)
    return matrix / matrix[2, 2]


def shaken_bracket(frames: torch.Tensor, reference: int, rng, perspective: bool):
    """``(unshaken, shaken, truth, hfov)``: the centred windows, the shaken windows (8-bit values), the true
    reference -> frame pixel maps and the camera's horizontal field of view (``None`` without perspective)."""
    height, width = frames.shape[-2:]
    x, y, w, h = window_of(height, width)
    offset = np.array([[1, 0, x], [0, 1, y], [0, 0, 1]], np.float64)
    unshaken = frames[:, :, y : y + h, x : x + w]
    shaken, truth = [], []
    hfov = rng.uniform(*HFOV) if perspective else None  # one camera per scene
    for index, frame in enumerate(frames):
        matrix = np.eye(3) if index == reference else random_shake(rng, h, w, hfov)
        to_stored = offset @ np.linalg.inv(matrix)  # shaken window pixel -> stored frame pixel
        corners = align._apply(to_stored, align._corners(h, w))
        assert corners.min() >= 0 and (corners[:, 0] <= width - 1).all() and (corners[:, 1] <= height - 1).all()
        planes = [cv2.warpPerspective(frame[c].numpy(), to_stored, (w, h), flags=cv2.INTER_LANCZOS4 | cv2.WARP_INVERSE_MAP)
                  for c in range(3)]  # fmt: skip
        shaken.append(np.round(np.clip(np.stack(planes), 0, 1) * 255) / 255)
        truth.append(matrix)
    return unshaken.contiguous(), torch.from_numpy(np.stack(shaken).astype(np.float32)), truth, hfov


def grid_points(h: int, w: int) -> np.ndarray:
    ys, xs = np.meshgrid(np.linspace(0, h - 1, GRID), np.linspace(0, w - 1, GRID), indexing="ij")
    return np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], axis=1)


def residual(estimate: np.ndarray, truth: np.ndarray, points: np.ndarray) -> float:
    return float(np.linalg.norm(align._apply(estimate, points) - align._apply(truth, points), axis=1).mean())


# ------------------------------------------------------------------------------------------ methods

def ours(shaken: torch.Tensor, reference: int):
    motions = align.estimate_motion(shaken, reference)
    return [m.matrix for m in motions], [m.aligned for m in motions], motions


def grey8(frame: torch.Tensor) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray((frame.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)),
                        cv2.COLOR_RGB2GRAY)  # fmt: skip


def align_mtb(shaken: torch.Tensor, reference: int):
    mtb = cv2.createAlignMTB()
    greys = [grey8(frame) for frame in shaken]
    matrices = []
    for grey in greys:
        dx, dy = mtb.calculateShift(greys[reference], grey)  # the shift that brings the frame onto the reference
        matrices.append(np.array([[1, 0, -dx], [0, 1, -dy], [0, 0, 1]], np.float64))
    return matrices, [True] * len(greys), None


def hugin_available() -> bool:
    return shutil.which("align_image_stack") is not None and shutil.which("pano_trafo") is not None


def write_tiffs(shaken: torch.Tensor, folder: Path, suffix: str = ".tif") -> list[Path]:
    files = []
    for index, frame in enumerate(shaken):
        path = folder / f"frame{index}{suffix}"
        cv2.imwrite(str(path), cv2.cvtColor((frame.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8),
                                            cv2.COLOR_RGB2BGR))  # fmt: skip
        files.append(path)
    return files


def pano_trafo(pto: Path, triplets: np.ndarray, reverse: bool) -> np.ndarray:
    """Hugin's own transform of ``(K, 3)`` rows ``image x y`` (image -> panorama, or panorama -> image)."""
    text = "\n".join(f"{int(i)} {x:.6f} {y:.6f}" for i, x, y in triplets) + "\n"
    args = ["pano_trafo", *(["-r"] if reverse else []), str(pto)]
    out = subprocess.run(args, input=text, capture_output=True, text=True, check=True).stdout
    return np.array([[float(v) for v in line.split()[:2]] for line in out.strip().splitlines()])


def hugin_matrices(pto: Path, files: list[Path], reference: int, h: int, w: int) -> list[np.ndarray | None]:
    """Reference -> frame maps from a ``.pto`` (a homography fitted to Hugin's mapping of a dense grid, exact for
    its rectilinear camera rotations); ``None`` for a frame Hugin dropped."""
    order = re.findall(r'^i .*?n"([^"]+)"', pto.read_text(), flags=re.MULTILINE)
    number = {Path(name).name: i for i, name in enumerate(order)}
    ys, xs = np.meshgrid(np.linspace(0, h - 1, 17), np.linspace(0, w - 1, 17), indexing="ij")
    points = np.stack([xs.ravel(), ys.ravel()], axis=1)
    if files[reference].name not in number:
        return [None] * len(files)
    # Hugin's image coordinates put the origin at the first pixel's corner: shift by half a pixel both ways.
    ref = np.column_stack([np.full(len(points), number[files[reference].name]), points + 0.5])
    pano = pano_trafo(pto, ref, reverse=False)
    matrices = []
    for path in files:
        if path.name not in number:
            matrices.append(None)
            continue
        moved = pano_trafo(pto, np.column_stack([np.full(len(pano), number[path.name]), pano]), reverse=True) - 0.5
        matrix, _ = cv2.findHomography(points, moved, 0)
        matrices.append(matrix)
    return matrices


def hugin(shaken: torch.Tensor, reference: int, timings: dict, hfov: float | None = None):
    """Hugin's transforms (told the field of view ``hfov`` when given, as a camera's EXIF would)."""
    h, w = shaken.shape[-2:]
    with tempfile.TemporaryDirectory(prefix="bench-align-") as tmp:
        folder = Path(tmp)
        files = write_tiffs(shaken, folder)
        pto = folder / "out.pto"
        start = time.perf_counter()
        # the field of view a camera's EXIF would give it (Hugin assumes 50 degrees without)
        fov = ["-f", f"{hfov:.3f}"] if hfov is not None else []
        run = subprocess.run(["align_image_stack", "-p", str(pto), *fov, *map(str, files)], capture_output=True,
                             text=True)  # fmt: skip
        timings["seconds"] = time.perf_counter() - start
        if run.returncode != 0 or not pto.exists():
            return [np.eye(3)] * len(files), [False] * len(files), None
        matrices = hugin_matrices(pto, files, reference, h, w)
    kept = [m is not None for m in matrices]
    return [m if m is not None else np.eye(3) for m in matrices], kept, None


# ------------------------------------------------------------------------------------------ evaluation

def fused_score(frames: torch.Tensor, stack: torch.Tensor) -> float:
    fused = fusion.fuse(frames, preset="opencv").clamp(0, 1)
    return float(metrics.mef_ssim(stack, fused))


def evaluate(args) -> dict:
    rng = np.random.default_rng(args.seed)
    methods = [m for m in args.methods if not m.startswith("align_image_stack") or hugin_available()]
    errors = {m: [] for m in methods}
    seconds = {m: 0.0 for m in methods}
    scores = {m: [] for m in methods + ["unshaken", "unaligned", "true transforms", "true transforms, bilinear"]}
    left_out = {m: 0 for m in methods}
    rows = []
    for collection, scene in SCENES:
        frames = load_scene(collection, scene)
        reference = align.reference_frame(frames)
        unshaken, shaken, truth, hfov = shaken_bracket(frames, reference, rng, not args.no_perspective)
        h, w = shaken.shape[-2:]
        points = grid_points(h, w)
        ex, ey, ew, eh = align.common_crop(truth, h, w)
        box = (ex + 2, ey + 2, ew - 4, eh - 4)
        stack = unshaken[:, :, box[1] : box[1] + box[3], box[0] : box[0] + box[2]].contiguous()
        scores["unshaken"].append(fused_score(stack, stack))
        scores["unaligned"].append(fused_score(align.warp_frames(shaken, [np.eye(3)] * len(shaken), box), stack))
        scores["true transforms"].append(fused_score(align.warp_frames(shaken, truth, box), stack))
        bicubic, align.WARP_INTERPOLATION = align.WARP_INTERPOLATION, cv2.INTER_LINEAR  # what bilinear would cost
        scores["true transforms, bilinear"].append(fused_score(align.warp_frames(shaken, truth, box), stack))
        align.WARP_INTERPOLATION = bicubic
        row = {"scene": f"{collection}/{scene}", "size": f"{w}x{h}", "frames": len(frames)}
        for method in methods:
            timings: dict = {}
            start = time.perf_counter()
            if method == "ours":
                matrices, kept, motions = ours(shaken, reference)
            elif method == "AlignMTB":
                matrices, kept, motions = align_mtb(shaken, reference)
            elif method == "align_image_stack":
                matrices, kept, motions = hugin(shaken, reference, timings, hfov)
            else:  # files without EXIF: Hugin assumes a 50 degree field of view
                matrices, kept, motions = hugin(shaken, reference, timings)
            seconds[method] += timings.get("seconds", time.perf_counter() - start)
            frame_errors = []
            for index in range(len(shaken)):
                if index == reference:
                    continue
                if kept[index]:
                    frame_errors.append(residual(matrices[index], truth[index], points))
                else:
                    frame_errors.append(math.inf)
                    left_out[method] += 1
            errors[method] += frame_errors
            use = [i for i in range(len(shaken)) if kept[i]]
            warped = align.warp_frames(shaken[use], [matrices[i] for i in use], box)
            scores[method].append(fused_score(warped, stack))
            row[method] = {"median_px": float(np.median(frame_errors)), "max_px": float(np.max(frame_errors)),
                           "mef_ssim": scores[method][-1]}  # fmt: skip
            if motions is not None:
                row[method]["models"] = [m.model for m in motions]
                row[method]["correlation"] = [round(m.correlation, 3) for m in motions]
        row["unshaken_mef_ssim"] = scores["unshaken"][-1]
        row["true_mef_ssim"] = scores["true transforms"][-1]
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {}
    for method in methods:
        values = np.array(errors[method])
        drops = np.array(scores["unshaken"]) - np.array(scores[method])
        summary[method] = {
            "median_px": float(np.median(values)),
            "p90_px": float(np.percentile(values, 90)),
            "mean_mef_ssim": float(np.mean(scores[method])),
            "mean_drop": float(drops.mean()),
            "worst_drop": float(drops.max()),
            "seconds_total": seconds[method],
            "frames_left_out": left_out[method],
        }
    summary["unshaken"] = {"mean_mef_ssim": float(np.mean(scores["unshaken"]))}
    for name in ("true transforms", "true transforms, bilinear"):
        summary[name] = {"mean_mef_ssim": float(np.mean(scores[name])),
                         "mean_drop": float(np.mean(np.array(scores["unshaken"]) - np.array(scores[name])))}  # fmt: skip
    summary["unaligned"] = {"mean_mef_ssim": float(np.mean(scores["unaligned"])),
                            "mean_drop": float(np.mean(np.array(scores["unshaken"]) - np.array(scores["unaligned"])))}  # fmt: skip
    return {"rows": rows, "summary": summary, "frames": len(errors["ours"])}


def best_of(function, repeats: int) -> float:
    return min(timeit.repeat(function, number=1, repeat=repeats))


def speed(args) -> dict:
    rng = np.random.default_rng(args.seed + 1)
    frames = load_scene(*SPEED_SCENE)
    big = torch.from_numpy(np.stack([
        np.stack([cv2.resize(plane.numpy(), (4762, 3572), interpolation=cv2.INTER_CUBIC) for plane in frame])
        for frame in frames
    ]).clip(0, 1))  # the camera's window, inset by 8%, is then 4000 x 3000
    reference = align.reference_frame(big)
    _, shaken, truth, hfov = shaken_bracket(big, reference, rng, not args.no_perspective)
    del big
    h, w = shaken.shape[-2:]
    result = {"size": f"{w}x{h}", "frames": len(shaken), "cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}
    aligned = align.align_frames(shaken, reference)
    points = grid_points(h, w)
    result["ours_median_px"] = float(np.median([residual(m.matrix, t, points) for m, t in zip(aligned.motions, truth)
                                                if m.model != "reference"]))  # fmt: skip
    del aligned
    result["ours_align_frames_s"] = best_of(lambda: align.align_frames(shaken, reference), args.repeats)
    result["ours_estimate_s"] = best_of(lambda: align.estimate_motion(shaken, reference), args.repeats)

    def mtb() -> None:
        matrices, _, _ = align_mtb(shaken, reference)
        for frame, matrix in zip(shaken, matrices):  # AlignMTB.shiftMat: an integer shift of every plane
            for plane in frame:
                cv2.warpAffine(plane.numpy(), matrix[:2], (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)

    result["AlignMTB_s"] = best_of(mtb, args.repeats)
    with tempfile.TemporaryDirectory(prefix="bench-align-") as tmp:
        folder, hugin_out, ours_out = Path(tmp) / "scene", Path(tmp) / "hugin", Path(tmp) / "ours"
        for made in (folder, hugin_out, ours_out):
            made.mkdir()
        files = write_tiffs(shaken, folder)
        fov = ["-f", f"{hfov:.3f}"] if hfov is not None else []
        # The whole job as a photographer runs it, files in and a file out, each tool started as a command:
        # ours is one command (read, align, deghost, fuse, write); Hugin's is align_image_stack then enfuse.
        ours_command = [sys.executable, "-m", "loopexpose", "fuse", str(folder), "-o", str(ours_out), "--align",
                        "--deghost", "--format", "tif"]  # fmt: skip
        result["ours_pipeline_s"] = best_of(lambda: subprocess.run(ours_command, capture_output=True, check=True),
                                            args.repeats)  # fmt: skip
        if hugin_available():
            align_command = ["align_image_stack", "-a", str(hugin_out / "aligned_"), *fov, *map(str, files)]
            start = time.perf_counter()
            subprocess.run(align_command, capture_output=True, check=True)
            result["align_image_stack_s"] = time.perf_counter() - start
            if shutil.which("enfuse"):
                aligned_files = sorted(map(str, hugin_out.glob("aligned_*.tif")))
                enfuse_command = ["enfuse", "-o", str(hugin_out / "fused.tif"), *aligned_files]

                def hugin_pipeline() -> None:
                    subprocess.run(align_command, capture_output=True, check=True)
                    subprocess.run(enfuse_command, capture_output=True, check=True)

                result["hugin_pipeline_s"] = best_of(hugin_pipeline, args.repeats)
                result["pipeline_speedup"] = result["hugin_pipeline_s"] / result["ours_pipeline_s"]
    result["load_after"] = os.getloadavg()[0]
    return result


def check_sources(args) -> list[dict]:
    """How far each candidate scene's own frames are from registered, by our estimate and by Hugin's: the
    largest grid residual against the identity over its frames (the scene as stored, no shake). A scene passes
    when both are below :data:`REGISTERED_PX`; only passing scenes can serve as ground truth."""
    root = paths.data_root() / "brackets"
    rows = []
    for collection in CANDIDATE_COLLECTIONS:
        for scene in sorted(p.name for p in (root / collection).iterdir() if p.is_dir()):
            frames = load_scene(collection, scene)
            if len(frames) < 2:
                continue
            reference = align.reference_frame(frames)
            h, w = frames.shape[-2:]
            points = grid_points(h, w)
            ours_px = max(residual(m.matrix, np.eye(3), points) for m in align.estimate_motion(frames, reference))
            row = {"scene": f"{collection}/{scene}", "size": f"{w}x{h}", "frames": len(frames), "ours_px": ours_px}
            if hugin_available():
                matrices, kept, _ = hugin(frames, reference, {})
                row["hugin_px"] = max(residual(m, np.eye(3), points) if k else math.inf for m, k in zip(matrices, kept))
            row["registered"] = bool(max(row["ours_px"], row.get("hugin_px", 0.0)) < REGISTERED_PX)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--no-perspective", action="store_true", help="Shake without perspective.")
    parser.add_argument("--no-speed", action="store_true", help="Skip the 12 MP speed run.")
    parser.add_argument("--speed-only", action="store_true", help="Only the 12 MP speed run.")
    parser.add_argument("--repeats", type=int, default=3)
    methods = ["ours", "AlignMTB", "align_image_stack", "align_image_stack, no FOV"]
    parser.add_argument("--methods", nargs="+", default=methods, choices=methods)
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    parser.add_argument("--check-sources", action="store_true",
                        help="Only measure how well the candidate scenes' own frames are registered.")
    args = parser.parse_args()
    if not (paths.data_root() / "brackets").is_dir():
        raise SystemExit(f"no brackets under {paths.data_root()} (set LOOPEXPOSE_DATA)")
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    if args.check_sources:
        rows = check_sources(args)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        return
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"}
    if not args.speed_only:
        result["accuracy"] = evaluate(args)
        print(json.dumps(result["accuracy"]["summary"], indent=1))
    if not args.no_speed:
        result["speed"] = speed(args)
        print(json.dumps(result["speed"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
