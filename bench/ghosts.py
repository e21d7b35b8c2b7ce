"""Benchmark: ghost removal (``fuse --deghost``) against enfuse and against our fusion without it.

Run from the repository root::

    .venv/bin/python bench/ghosts.py --json ghosts.json --figure docs/ghosts.jpg   # everything (~10 min, 2 cores)
    .venv/bin/python bench/ghosts.py --quick          # 3 scenes, no model, no 12 MP timing (~15 s)

Four parts, all printed and written to ``--json``:

1. **Ghost energy on synthetic moving objects.** Real static brackets from ``../shared/data`` (:data:`SCENES`,
   the 5 frames around mid-grey, long side :data:`SIDE`) get an object: a crop of a scikit-image photo inside an
   ellipse, pasted at a different place in every frame (walking along the long side, never overlapping itself),
   rendered at that frame's exposure (linear light times ``2^EV``, the frame's EV relative to the reference
   measured on the bracket itself, then 8-bit). The *still* bracket is the same with the object standing still
   at its place in the reference frame (the frame nearest mid-grey): what a ghost-free fusion shows. Ghost
   energy of a method = mean CIELAB colour difference (CIE 1976 ΔE*ab, and CIEDE2000) between its fusion of the
   moving bracket and its fusion of the still one *through the same deghosting* (the masks found on the moving
   bracket), over each non-reference object's footprint: only the objects differ, so this is what they leave
   behind; we report the worst object of each scene, and for deghosted methods also the difference to the still
   bracket's own fusion (``to_still``, which adds the price of deghosting). **Visible** means above :data:`JND`
   (ΔE*ab 2.3, the just-noticeable difference of Sharma's Digital Color Imaging Handbook; a mean over a whole
   object's area, so a ghost below it is at most a faint local trace). Methods: ``enfuse`` (its defaults; no
   deghosting: it shows the ghost), ``mertens`` (our plain fusion, preset ``opencv``, as ``loopexpose fuse``),
   ``mertens+deghost``, ``loopexpose`` (the LoopExpose MEF, ``fuse --correct``) and ``loopexpose+deghost``.
2. **Exposure mapping for detection** (the choice in :mod:`loopexpose.deghost`): how well each mapping separates
   the object's pixels (its footprint in the frame and in the reference) from the static ones, pooled over the
   scenes: the share of moving pixels found at 1 % and 0.1 % of static pixels flagged, and the ROC AUC, of the
   per-pixel inconsistency after histogram matching of the inputs (ours), histogram matching of the frames
   corrected by the ``default`` model, and the corrected frames compared directly.
3. **Static scenes.** MEF-SSIM of the fusion with and without deghosting on every HDRPS and Waterloo scene
   (nothing moves there, or very little: the drop is the price of false detections). Target: mean drop <= 0.002.
4. **Speed** (not with ``--quick``): 5 frames of 12 MP (4000 x 3000, a moving-object bracket upscaled) in
   TIFF files; ours (``deghost.remove_ghosts`` + ``fusion.fuse``, in process, frames in memory; reading the
   files timed apart) and the whole ``loopexpose fuse --deghost`` command, against ``enfuse`` and
   ``align_image_stack`` on the same files.

Real dynamic brackets: the data has no ghost-free ground truth for them, so they are shown, not scored: the
fraction of each frame flagged as moving, and ``--figure`` (``docs/ghosts.jpg``: enfuse, ours, ours with
deghosting, one row per scene).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from loopexpose import brackets, deghost, fusion, io, metrics, paths
from loopexpose.evaluate import select_window

#: Static bases of the synthetic moving-object brackets: (collection, scene, object photo).
SCENES = [
    ("hdrps", "Bigfoot Pass", "astronaut"),
    ("hdrps", "Willy Desk", "chelsea"),
    ("hdrps", "Wall Drug", "coffee"),
    ("hdrps", "Devil's Tower", "rocket"),
    ("waterloo_mef", "Farmhouse", "astronaut"),
    ("waterloo_mef", "Office", "chelsea"),
    ("merianos2016", "OldHouse", "coffee"),
    ("deepfuse", "Seq_21", "rocket"),
]
#: Real brackets with things moving in them (water, a flame, clouds), found by scanning ../shared/data.
REAL_DYNAMIC = [
    ("merianos2016", "SeaRock"),
    ("merianos2016", "SecretBeach"),
    ("mef_misc", "Candle"),
    ("deepfuse", "Seq_77"),
]
STATIC_COLLECTIONS = ("hdrps", "waterloo_mef")
SIDE = 640  # long side of the benchmark brackets
OBJECT_FRACTION = 0.2  # object side / short side of the image
JND = 2.3  # ΔE*ab
METHODS = ("enfuse", "mertens", "mertens+deghost", "loopexpose", "loopexpose+deghost")


# ------------------------------------------------------------------------------------------------ brackets


def load_window(collection: str, scene: str, side: int = SIDE) -> tuple[torch.Tensor, int]:
    """The 5 frames around mid-grey of a scene, long side ``side``: ``((N, 3, H, W), reference index)``."""
    bracket, frames = brackets.read_bracket(paths.data_root() / "brackets" / collection / scene, max_side=side)
    start, reference = select_window(bracket.mean_luma)
    frames = frames[start : start + 5]
    return frames, deghost.reference_index(frames)


def relative_evs(frames: torch.Tensor, reference: int) -> list[float]:
    """Each frame's exposure in stops relative to the reference: median log2 ratio of linear light (``v^2.2``)
    over pixels well exposed in both."""
    linear = frames.clamp(0, 1).pow(2.2)
    ref = linear[reference]
    evs = []
    for n, frame in enumerate(linear):
        ok = (frames[n] > 0.1) & (frames[n] < 0.9) & (frames[reference] > 0.1) & (frames[reference] < 0.9)
        evs.append(0.0 if n == reference or ok.sum() < 100 else float(torch.log2(frame[ok] / ref[ok]).median()))
    return evs


def object_patch(photo: str, side: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rgb (side, side, 3) float32 in [0, 1], alpha (side, side) in [0, 1])``: a square crop of a
    scikit-image photo inside an anti-aliased ellipse."""
    from skimage import data

    image = getattr(data, photo)()[..., :3]
    height, width = image.shape[:2]
    crop = min(height, width) * 3 // 4
    top, left = (height - crop) // 2, (width - crop) // 2
    rgb = cv2.resize(image[top : top + crop, left : left + crop], (side, side), interpolation=cv2.INTER_AREA)
    big = np.zeros((side * 4, side * 4), np.uint8)
    cv2.ellipse(big, (side * 2, side * 2), (side * 2 - 4, int(side * 1.6)), 90, 0, 360, 255, -1)
    alpha = cv2.resize(big, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    return rgb.astype(np.float32) / 255, alpha


def object_positions(count: int, height: int, width: int, side: int, seed: int) -> list[tuple[int, int]]:
    """Top-left corners of the object in each frame: evenly spaced along the long side, not overlapping."""
    rng = np.random.default_rng(seed)
    long, short = max(height, width), min(height, width)
    step = min((long - side) // max(count - 1, 1), int(side * 1.3))
    if step < side:
        raise ValueError(f"an object of {side} px does not fit {count} times in {long} px")
    start = rng.integers(0, long - side - step * (count - 1) + 1)
    across = int(rng.integers(int(short * 0.2), short - side - int(short * 0.1)))
    along = [int(start + k * step) for k in range(count)]
    return [(across, a) if width >= height else (a, across) for a in along]


def paste(frames: torch.Tensor, evs: list[float], rgb: np.ndarray, alpha: np.ndarray, places) -> torch.Tensor:
    """The frames with the object pasted at ``places[n]`` (top, left) in frame ``n``, at the frame's exposure,
    quantised to 8 bits."""
    out = frames.clone()
    side = rgb.shape[0]
    linear = torch.from_numpy(rgb).permute(2, 0, 1).pow(2.2)
    mask = torch.from_numpy(alpha)
    for n, ((top, left), ev) in enumerate(zip(places, evs)):
        rendered = (linear * 2.0**ev).clamp(0, 1).pow(1 / 2.2)
        window = out[n, :, top : top + side, left : left + side]
        window.mul_(1 - mask).add_(rendered * mask)
    return (out * 255).round() / 255


def dynamic_bracket(collection: str, scene: str, photo: str, seed: int = 0, side: int = SIDE):
    """``(moving, target, reference, footprints)``: the moving-object bracket, the same with the object still
    at its reference place, the reference index, and each frame's object footprint ``(N, H, W)`` bool."""
    frames, reference = load_window(collection, scene, side)
    height, width = frames.shape[-2:]
    size = int(min(height, width) * OBJECT_FRACTION)
    rgb, alpha = object_patch(photo, size)
    places = object_positions(len(frames), height, width, size, seed)
    evs = relative_evs(frames, reference)
    moving = paste(frames, evs, rgb, alpha, places)
    target = paste(frames, evs, rgb, alpha, [places[reference]] * len(frames))
    footprints = np.zeros((len(frames), height, width), bool)
    for n, (top, left) in enumerate(places):
        footprints[n, top : top + size, left : left + size] = alpha > 0.5
    return moving, target, reference, footprints


# ------------------------------------------------------------------------------------------------- methods


def enfuse_available() -> bool:
    return shutil.which("enfuse") is not None


def run_enfuse(frames: torch.Tensor, folder: Path) -> torch.Tensor:
    """enfuse (defaults) of 8-bit TIFF copies of ``frames``; ``(3, H, W)`` in [0, 1]."""
    names = []
    for n, frame in enumerate(frames):
        names.append(io.write_image(folder / f"frame{n}.tif", io.to_numpy(frame)))
    out = folder / "enfused.tif"
    subprocess.run(["enfuse", "-o", str(out), *map(str, names)], check=True, capture_output=True)
    pixels = io.read_image(out).pixels
    return torch.from_numpy(np.ascontiguousarray(pixels[..., :3])).permute(2, 0, 1).float()


def fuse_with(method: str, frames: torch.Tensor, model=None, workdir: Path | None = None, masks=None) -> torch.Tensor:
    """One method's fusion of ``frames`` ``(N, 3, H, W)``, clipped to [0, 1]; ``+deghost`` methods use ``masks``
    (:func:`deghost.ghost_masks`) when given, else find their own."""
    if method == "enfuse":
        return run_enfuse(frames, workdir).clamp(0, 1)
    weights = None
    if method.endswith("+deghost"):
        frames, weights = deghost.remove_ghosts(frames, masks=masks)
    if method.startswith("mertens"):
        return fusion.fuse(frames, frame_weights=weights).clamp(0, 1)
    corrected = fusion.correct_frames(frames, model.correct)
    return fusion.loop_fuse(frames, corrected, frame_weights=weights).clamp(0, 1)


def delta_e(a: torch.Tensor, b: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel ``(ΔE*ab, ΔE00)`` between two ``(3, H, W)`` sRGB images."""
    from skimage import color

    lab_a = color.rgb2lab(a.permute(1, 2, 0).double().numpy())
    lab_b = color.rgb2lab(b.permute(1, 2, 0).double().numpy())
    return color.deltaE_cie76(lab_a, lab_b), color.deltaE_ciede2000(lab_a, lab_b)


def worst_object(moving_fused: torch.Tensor, target_fused: torch.Tensor, footprints: np.ndarray, reference: int):
    """Worst non-reference object's mean ``(ΔE*ab, ΔE00)`` between two fusions over its footprint (minus the
    reference's own footprint)."""
    ab, e00 = delta_e(moving_fused, target_fused)
    worst_ab = worst_00 = 0.0
    for n, footprint in enumerate(footprints):
        if n == reference:
            continue
        region = footprint & ~footprints[reference]
        worst_ab, worst_00 = max(worst_ab, float(ab[region].mean())), max(worst_00, float(e00[region].mean()))
    return worst_ab, worst_00


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    positives = labels.sum()
    negatives = labels.size - positives
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def detection_scores(moving: torch.Tensor, reference: int, footprints: np.ndarray, model) -> dict:
    """Per-pixel inconsistency of every non-reference frame with three exposure mappings, on the reduced copy,
    with labels (the object's footprint in the frame or in the reference; the mixed pixels at its edge left out):
    ``{mapping: (scores, labels)}``."""
    small = deghost._reduced(moving)
    maps = {"histogram": deghost.inconsistency(moving, reference)[:, 0].numpy()}
    if model is not None:  # the model runs on the reduced copy too: detection needs no more, and it is cheap
        corrected = fusion.correct_frames(torch.from_numpy(small).permute(0, 3, 1, 2).contiguous(), model.correct)
        maps["model+histogram"] = deghost.inconsistency(corrected, reference)[:, 0].numpy()
        corrected = corrected.permute(0, 2, 3, 1).numpy()
        maps["model"] = np.linalg.norm(corrected - corrected[reference], axis=-1)
    factor = deghost._factor(*moving.shape[-2:])
    result = {}
    for name, score in maps.items():
        values, labels = [], []
        for n in range(len(moving)):
            if n == reference:
                continue
            moved = (footprints[n] | footprints[reference]).astype(np.float32)
            moved = moved[: score.shape[1] * factor, : score.shape[2] * factor]
            label = cv2.resize(moved, score.shape[2:0:-1], interpolation=cv2.INTER_AREA)
            keep = (label > 0.9) | (label < 0.01)
            values.append(score[n][keep])
            labels.append(label[keep] > 0.5)
        result[name] = (np.concatenate(values), np.concatenate(labels))
    return result


def detection_summary(pooled: dict) -> dict:
    """ROC AUC and the fraction of moving pixels found at 1 % and 0.1 % of static pixels flagged, per mapping."""
    summary = {}
    for name, parts in pooled.items():
        scores = np.concatenate([s for s, _ in parts])
        labels = np.concatenate([l for _, l in parts])
        static = np.sort(scores[~labels])
        row = {"auc": auc(scores, labels)}
        for rate in (0.01, 0.001):
            threshold = static[int(len(static) * (1 - rate))]
            row[f"found_at_{rate:g}_static"] = float(np.mean(scores[labels] > threshold))
        summary[name] = row
    return summary


# --------------------------------------------------------------------------------------------------- parts


def synthetic(scenes, methods, model) -> tuple[list[dict], dict]:
    rows, pooled = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for index, (collection, scene, photo) in enumerate(scenes):
            moving, target, reference, footprints = dynamic_bracket(collection, scene, photo, seed=index)
            row = {"scene": f"{collection}/{scene}", "object": photo, "size": list(moving.shape[-2:][::-1])}
            masks = deghost.ghost_masks(moving)
            for method in methods:
                fused = fuse_with(method, moving, model, Path(tmp))
                # The still bracket through the same deghosting (the masks found on the moving one): only the
                # objects differ, so the difference is what they leave behind.
                still = fuse_with(method, target, model, Path(tmp), masks)
                row[method] = {"ghost": worst_object(fused, still, footprints, reference)}
                if method.endswith("+deghost"):  # to the still bracket's own fusion: also the price of deghosting
                    still = fuse_with(method, target, model, Path(tmp))
                row[method]["to_still"] = worst_object(fused, still, footprints, reference)
            for name, pair in detection_scores(moving, reference, footprints, model).items():
                pooled.setdefault(name, []).append(pair)
            rows.append(row)
            cells = ", ".join(f"{m} {row[m]['ghost'][0]:.2f} ({row[m]['to_still'][0]:.2f})" for m in methods)
            print(f"{row['scene']} ({photo}): worst object ΔE*ab ghost (to the still fusion): {cells}", flush=True)
    detection = detection_summary(pooled)
    for name, values in detection.items():
        print(f"detection with {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()), flush=True)
    return rows, detection


def static_scenes(model, quick: bool) -> list[dict]:
    root = paths.data_root() / "brackets"
    rows = []
    for collection in STATIC_COLLECTIONS:
        scenes = sorted(p.name for p in (root / collection).iterdir() if p.is_dir())
        for scene in scenes[:2] if quick else scenes:
            frames, _ = load_window(collection, scene)
            row = {"scene": f"{collection}/{scene}"}
            pairs = [("mertens", "mertens+deghost")] + ([("loopexpose", "loopexpose+deghost")] if model else [])
            for plain, ghostless in pairs:
                fused = torch.stack([fuse_with(plain, frames, model), fuse_with(ghostless, frames, model)])
                scores = metrics.mef_ssim(frames, fused)
                row[plain], row[ghostless] = float(scores[0]), float(scores[1])
            row["flagged"] = float((deghost.ghost_masks(frames) > 0.5).float().mean())
            rows.append(row)
            print(f"{row['scene']}: MEF-SSIM " + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "scene"),
                  flush=True)  # fmt: skip
    return rows


def real_dynamic(model, figure: Path | None) -> list[dict]:
    rows, tiles = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for collection, scene in REAL_DYNAMIC:
            frames, reference = load_window(collection, scene)
            masks = deghost.ghost_masks(frames)
            flagged = [round(float((m > 0.5).float().mean()), 4) for m in masks]
            rows.append({"scene": f"{collection}/{scene}", "reference": reference, "flagged": flagged})
            print(f"{collection}/{scene}: reference {reference}, fraction flagged per frame {flagged}", flush=True)
            if figure is not None:
                shown = ["mertens", "mertens+deghost"]
                shown = ["enfuse", *shown] if enfuse_available() else shown
                tiles.append([fuse_with(m, frames, model, Path(tmp)) for m in shown])
    if figure is not None and tiles:
        save_figure(tiles, figure)
    return rows


def save_figure(tiles: list[list[torch.Tensor]], path: Path, height: int = 240) -> None:
    """One row per scene, one column per method, each image scaled to ``height``."""
    rows = []
    for images in tiles:
        scaled = []
        for image in images:
            array = image.permute(1, 2, 0).numpy()
            width = round(array.shape[1] * height / array.shape[0])
            scaled.append(cv2.resize(array, (width, height), interpolation=cv2.INTER_AREA))
        rows.append(np.concatenate(scaled, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=1.0) for r in rows]
    io.write_image(path, np.concatenate(rows, axis=0))


def speed(repeats: int) -> dict:
    """5 x 12 MP: ours in process and as a command, against enfuse and align_image_stack on the same files."""
    moving, _, _, _ = dynamic_bracket(*SCENES[0], side=SIDE)
    big = torch.nn.functional.interpolate(moving, size=(3000, 4000), mode="bicubic", align_corners=False).clamp(0, 1)
    big = (big * 255).round() / 255
    result: dict = {"size": "4000x3000", "frames": len(big)}

    def best(function, fresh=None) -> float:
        """Best time of ``function(fresh())`` over the repeats; ``fresh`` (not timed) makes its input."""
        times = []
        for _ in range(repeats):
            given = fresh() if fresh else None
            start = time.perf_counter()
            function(given) if fresh else function()
            times.append(time.perf_counter() - start)
        return min(times)

    def deghost_and_fuse(frames):  # as loopexpose.fuse(..., deghost=True) does with frames it read itself
        clean, weights = deghost.remove_ghosts(frames, out=frames)
        return fusion.fuse(clean, frame_weights=weights)

    result["ours_deghost_s"] = best(lambda frames: deghost.remove_ghosts(frames, out=frames), big.clone)
    result["ours_fuse_s"] = best(lambda: fusion.fuse(big))
    result["ours_deghost_fuse_s"] = best(deghost_and_fuse, big.clone)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "scene"
        folder.mkdir()
        files = [str(io.write_image(folder / f"frame{n}.tif", io.to_numpy(f))) for n, f in enumerate(big)]
        result["ours_read_s"] = best(lambda: brackets.load_bracket(folder))
        command = [sys.executable, "-m", "loopexpose", "fuse", str(folder), "-o", str(Path(tmp) / "out"),
                   "--deghost", "--format", "tif"]  # fmt: skip
        result["ours_command_s"] = best(lambda: subprocess.run(command, check=True, capture_output=True))
        if enfuse_available():
            enfuse = ["enfuse", "-o", str(Path(tmp) / "enfused.tif"), *files]
            result["enfuse_s"] = best(lambda: subprocess.run(enfuse, check=True, capture_output=True))
        if shutil.which("align_image_stack"):
            align = ["align_image_stack", "-a", str(Path(tmp) / "aligned_"), *files]
            result["align_image_stack_s"] = best(lambda: subprocess.run(align, check=True, capture_output=True))
    print("12 MP x 5: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()),
          flush=True)  # fmt: skip
    return result


def summarise(rows: list[dict], methods, static_rows: list[dict]) -> dict:
    summary: dict = {}
    for method in methods:
        ab = [row[method]["ghost"][0] for row in rows]
        e00 = [row[method]["ghost"][1] for row in rows]
        still = [row[method]["to_still"][0] for row in rows]
        summary[method] = {
            "ghost_dE_ab_mean": float(np.mean(ab)), "ghost_dE_ab_max": float(np.max(ab)),
            "ghost_dE00_mean": float(np.mean(e00)), "ghost_dE00_max": float(np.max(e00)),
            "scenes_visible": int(sum(v > JND for v in ab)),
            "to_still_dE_ab_mean": float(np.mean(still)), "to_still_dE_ab_max": float(np.max(still)),
        }  # fmt: skip
    for plain, ghostless in (("mertens", "mertens+deghost"), ("loopexpose", "loopexpose+deghost")):
        drops = [row[plain] - row[ghostless] for row in static_rows if plain in row]
        if drops:
            summary[f"{ghostless}_mef_ssim_drop"] = {"mean": float(np.mean(drops)), "max": float(np.max(drops)),
                                                     "scenes": len(drops)}  # fmt: skip
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 scenes, 4 static ones, no model, no 12 MP timing")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="write all results here")
    parser.add_argument("--figure", type=Path, default=None, help="write the real-dynamic-scene figure here")
    args = parser.parse_args()
    torch.manual_seed(0)
    if not (paths.data_root() / "brackets").is_dir():
        sys.exit(f"real brackets not found at {paths.data_root()} (set LOOPEXPOSE_DATA)")
    methods = [m for m in METHODS if (m != "enfuse" or enfuse_available()) and not (args.quick and "loop" in m)]
    if not enfuse_available():
        print("enfuse not found: its column is left out", flush=True)
    model = None
    if not args.quick:
        from loopexpose.models import load

        model = load("default")
    results: dict = {"command": " ".join(["bench/ghosts.py", *sys.argv[1:]])}
    results["synthetic"], results["detection"] = synthetic(SCENES[:3] if args.quick else SCENES, methods, model)
    results["static"] = static_scenes(model, args.quick)
    results["real_dynamic"] = real_dynamic(model, args.figure)
    results["summary"] = summarise(results["synthetic"], methods, results["static"])
    results["summary"]["detection"] = results["detection"]
    if not args.quick:
        results["speed"] = speed(args.repeats)
    print(json.dumps(results["summary"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
