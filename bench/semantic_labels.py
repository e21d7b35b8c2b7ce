"""How close the semantic model's pseudo-labels come to the reference exposure, per region weight.

Run from the repository root (needs ``../shared/data`` or ``$LOOPEXPOSE_DATA``)::

    .venv/bin/python bench/semantic_labels.py

For each validation scene (the split both trainers hold back), the 5-frame ``bracket-5`` window at long side
160 (the semantic trainer's size) gets pseudo-labels (:func:`loopexpose.methods.semantic.labels.pseudo_label`) from
the bundled ``semantic`` checkpoint's recogniser, with the scene's region masks taken from the reference frame.
Prints the mean PSNR of the labels of the non-reference frames to the reference frame, and their mean level,
for each ``region_weight`` (0: one gamma per photo, 1: one per region). This chose ``pseudo.region_weight``
in ``configs/semantic.toml``.
"""

from __future__ import annotations

import numpy as np
import torch

from loopexpose.data import scan_brackets, split_scenes
from loopexpose.evaluate import load_window
from loopexpose.metrics import psnr
from loopexpose.models import load
from loopexpose.paths import data_root
from loopexpose.methods.semantic.labels import pseudo_label
from loopexpose.methods.loopexpose.train import DEFAULTS

WEIGHTS = (0.0, 0.15, 0.3, 0.45, 0.6)


def main() -> None:
    torch.set_num_threads(2)
    _, val = split_scenes(scan_brackets(data_root() / "brackets", min_frames=2), DEFAULTS["data"]["val_fraction"])
    model = load("semantic").eval()
    windows = []
    for bracket in val:
        frames, start, reference = load_window(bracket, 160)
        ref = reference - start
        masks = model.regions(frames[ref : ref + 1]).expand(len(frames), -1, -1, -1)
        windows.append((frames, ref, masks))
    print(f"{len(windows)} validation scenes; pseudo-label PSNR to the reference frame (non-reference frames)")
    for weight in WEIGHTS:
        scores, levels = [], []
        for frames, ref, masks in windows:
            with torch.no_grad():
                labels, _ = pseudo_label(frames, masks, model.recogniser, region_weight=weight)
            scores += [float(psnr(labels[i], frames[ref])) for i in range(len(frames)) if i != ref]
            levels.append(float(labels.mean()))
        print(f"  region_weight {weight:4.2f}: {np.mean(scores):.2f} dB, mean level {np.mean(levels):.3f}")


if __name__ == "__main__":
    main()
