"""Ablation of the CurveGrid exposure floor and exposure blend: the bundled ``default`` weights with no floor, with
a floor at mid-grey, at the level the network gives the same thumbnail exposed to mid-grey (the network level),
at the floor it ships (the geometric mean of the two) and at weights 0.25 and 0.75 between them, each without
the exposure blend; then the shipped floor with the blend weights 0.25, 0.5 (shipped), 0.75 and 1 (the input
exposed to the result's level alone, ``exposure.EXPOSURE_BLEND``); ``pre-lift`` (tried: a dark frame
re-exposed to a mid-grey key before the network corrects it); and, as a yardstick rather than a method,
``oracle exposure``: every frame exposed by one gain in linear light to its reference frame's mean luma (the
reference is not available to a corrector), which shows what exact exposure alone scores and how far a
bracket's frames can agree once each is exposed exactly (its consistency).

Run from the repository root with ``../shared/data`` (or ``$LOOPEXPOSE_DATA``)::

    .venv/bin/python bench/exposure_floor.py

Scenes: ``split_scenes(scan_brackets(<data>/brackets, min_frames=2), 0.1)``: the 13 validation scenes (and the
5 HDRPS ones among them), and the 24 HDRPS scenes of the training split (seen in training: read them as the
network's fit, but they hold the night scenes that show what a fixed mid-grey target does). Each scene's
``bracket-5`` window at long side 512 (:func:`loopexpose.evaluate.load_window`); then every scene of the training
split (109). Prints PSNR / SSIM against the reference frame by offset (means over frames), their mean over the
non-reference frames of offsets -2..+2, the cross-exposure consistency, and the worst scene's change of PSNR
against no floor. The ``gain`` baseline is printed beside them. About 15 minutes on a 2-core CPU.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import loopexpose  # noqa: E402
from loopexpose.baselines import MID_GREY, gain_to_mid_grey, mean_luma  # noqa: E402
from loopexpose.data import scan_brackets, split_scenes  # noqa: E402
from loopexpose.evaluate import load_window  # noqa: E402
from loopexpose.metrics import psnr, ssim  # noqa: E402
from loopexpose import exposure  # noqa: E402
from loopexpose.paths import data_root  # noqa: E402


def pre_lift(model, frames: torch.Tensor) -> torch.Tensor:
    """Tried instead of the floor: a frame darker than mid-grey is first re-exposed to a mid-grey key
    (:func:`~loopexpose.exposure.expose_to_mid_grey` at full size) and then corrected by the
    network alone, then lifted to the shipped floor's target if still short of it; other frames as shipped."""
    model.eval()
    out = model(frames)["output"]
    for i, frame in enumerate(frames):
        if mean_luma(frame[None]).item() >= MID_GREY:
            continue
        model.train()
        corrected = model(exposure.expose_to_mid_grey(frame[None]))["output"]
        model.eval()
        thumb = model.thumbnail(corrected)
        target = mean_luma(thumb).flatten() ** exposure.FLOOR_WEIGHT * MID_GREY ** (1 - exposure.FLOOR_WEIGHT)
        out[i] = exposure.finish(corrected, exposure.floor_gain(torch.zeros(1), thumb, target))[0]
    return out


def run(model, scenes, variant: str):
    shipped = exposure.FLOOR_WEIGHT, exposure.EXPOSURE_BLEND
    exposure.FLOOR_WEIGHT, exposure.EXPOSURE_BLEND = WEIGHTS.get(variant, (shipped[0], 0.0))
    model.train(variant == "no floor")  # train mode: the network alone, no floor
    by_offset: dict[int, list[tuple[float, float]]] = {}
    consistency, per_scene = [], []
    try:
        for frames, start, reference in scenes:
            ref = reference - start
            with torch.no_grad():
                if variant == "gain":
                    out = gain_to_mid_grey(frames)
                elif variant == "pre-lift":
                    out = pre_lift(model, frames)
                elif variant == "oracle exposure":
                    level = mean_luma(frames[ref][None]).flatten().expand(len(frames))
                    out = exposure.expose_to_level(frames, level)
                else:
                    out = model(frames)["output"]
            scene = []
            for i in range(len(frames)):
                if i != ref and -2 <= i - ref <= 2:
                    value = (psnr(out[i], frames[ref]).item(), ssim(out[i : i + 1], frames[ref][None]).item())
                    by_offset.setdefault(i - ref, []).append(value)
                    scene.append(value[0])
            per_scene.append(np.mean(scene))
            pairs = itertools.combinations(range(len(out)), 2)
            consistency.append(np.mean([psnr(out[i], out[j]).item() for i, j in pairs]))
    finally:
        exposure.FLOOR_WEIGHT, exposure.EXPOSURE_BLEND = shipped
        model.eval()
    return by_offset, float(np.mean(consistency)), np.array(per_scene)


def split_brackets():
    """``(training split, validation scenes)`` of ``<data>/brackets`` as the bundled model's training split them
    (``split_scenes(..., 0.1)``), or ``None`` (said on stdout) when the data is absent."""
    root = data_root() / "brackets"
    if not root.is_dir():
        print(f"skipped: no data at {root}")
        return None
    return split_scenes(scan_brackets(root, min_frames=2), 0.1)


def main() -> None:
    torch.set_num_threads(2)
    if (split := split_brackets()) is None:
        return
    train, val = split
    groups = {
        "validation (13 scenes)": val,
        "validation, HDRPS (5)": [b for b in val if b.collection == "hdrps"],
        "training split, HDRPS (24)": [b for b in train if b.collection == "hdrps"],
        "training split (109)": train,
    }
    model = loopexpose.load("default")
    for name, brackets in groups.items():
        scenes = [load_window(b, 512) for b in brackets]
        print(f"\n{name}: PSNR / SSIM vs the reference frame")
        print(f"{'':20} {'-2':>14} {'-1':>14} {'+1':>14} {'+2':>14} {'mean':>14} {'consist.':>8} {'worst scene':>11}")
        baseline = None
        for variant in ("gain", "no floor", *WEIGHTS, "pre-lift", "oracle exposure"):
            by_offset, consistency, per_scene = run(model, scenes, variant)
            if variant == "no floor":
                baseline = per_scene
            cells = []
            for offset in (-2, -1, 1, 2):
                values = by_offset.get(offset)
                cells.append("%.2f / %.3f" % tuple(np.mean(values, 0)) if values else "-")
            every = [v for values in by_offset.values() for v in values]
            cells.append("%.2f / %.3f" % tuple(np.mean(every, 0)))
            no_worst = baseline is None or variant in ("gain", "oracle exposure")
            worst = "-" if no_worst else "%+.2f dB" % (per_scene - baseline).min()
            print(f"{variant:20} " + " ".join(f"{c:>14}" for c in cells) + f" {consistency:8.2f} {worst:>11}")


if __name__ == "__main__":
    main()
