"""The sweep behind ``loopexpose.fusion.loop_fuse``'s two constants: MEF-SSIM of the LoopExpose MEF for each
detail exponent and number of base levels, against plain Mertens fusion, on the training and validation scenes.

Run from the repository root (needs ``../shared/data`` or ``$LOOPEXPOSE_DATA``)::

    .venv/bin/python bench/loop_fuse_sweep.py                 # bracket-5 windows, long side 512, model "default"

Every scene's 5-frame window is the ``bracket-5`` protocol's (:func:`loopexpose.evaluate.load_window`); the
corrected frames come from the bundled model. Prints, per split, the mean MEF-SSIM of plain Mertens (OpenCV's and
the paper's weights), of ``loop_fuse`` without corrected frames, and of ``loop_fuse`` for each setting, with the
number of scenes where it beats the paper's weights.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from loopexpose import fusion, metrics
from loopexpose.data import scan_brackets, split_scenes
from loopexpose.evaluate import load_window
from loopexpose.models import load
from loopexpose.paths import data_root
from loopexpose.methods.loopexpose.train import DEFAULTS

DETAILS = (2.0, 3.0, 4.0)
BASES = (3, 4, 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--max-side", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load(args.model)
    train, val = split_scenes(scan_brackets(data_root() / "brackets", min_frames=2), DEFAULTS["data"]["val_fraction"])
    names = ["mertens (opencv)", "mertens (paper)", "loop_fuse, inputs only"]
    names += [f"loop_fuse detail {d:g}, base {b}" for d in DETAILS for b in BASES]
    for split, brackets in (("train", train), ("val", val)):
        scores = []
        for bracket in brackets:
            frames, _, _ = load_window(bracket, args.max_side)
            with torch.no_grad():
                corrected = model.correct(frames).clamp(0, 1)
                images = [fusion.fuse(frames, "opencv"), fusion.fuse(frames, "mertens"), fusion.loop_fuse(frames)]
                images += [fusion.loop_fuse(frames, corrected, d, b) for d in DETAILS for b in BASES]
            scores.append(metrics.mef_ssim(frames, torch.stack(images).clamp(0, 1)).numpy())
        table = np.stack(scores)  # (scenes, methods)
        print(f"\n{split}: {len(brackets)} scenes, mean MEF-SSIM (scenes above the paper's weights)")
        for i, name in enumerate(names):
            wins = int((table[:, i] > table[:, 1]).sum())
            print(f"  {name:32s} {table[:, i].mean():.4f}" + (f"  ({wins}/{len(table)})" if i > 1 else ""))


if __name__ == "__main__":
    main()
