"""How far LoopExpose's pseudo-labels are from each bracket's frame nearest mid-grey, plain and exposure-anchored.

Run from the repository root (about 30 s on the 2-core CPU)::

    .venv/bin/python bench/label_exposure.py             # the 13 validation scenes
    .venv/bin/python bench/label_exposure.py --split train

For every scene of the split (``data.split_scenes`` with ``val_fraction`` 0.1, as ``configs/default.toml``), the
``bracket-5`` window (:func:`loopexpose.evaluate.load_window`, long side ``--max-side``) is fused
(``fusion.fuse``, preset ``opencv``, clamped) and scored against the window's reference frame (PSNR, SSIM):
``plain`` is the fusion as it is, ``anchored`` the label the trainer uses
(:func:`loopexpose.methods.loopexpose.labels.anchor_exposure`: the fusion re-exposed to the reference frame's
mean luma). Means over scenes.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from loopexpose import fusion, paths
from loopexpose.data import scan_brackets, split_scenes
from loopexpose.evaluate import load_window
from loopexpose.methods.loopexpose.labels import anchor_exposure
from loopexpose.metrics import psnr, ssim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("val", "train"), default="val")
    parser.add_argument("--max-side", type=int, default=384)
    args = parser.parse_args()
    root = paths.data_root() / "brackets"
    if not root.is_dir():
        raise SystemExit(f"no brackets under {root.parent} (set LOOPEXPOSE_DATA)")
    train, val = split_scenes(scan_brackets(root, min_frames=2), 0.1)
    scores: dict[str, list[tuple[float, float]]] = {"plain": [], "anchored": []}
    for bracket in val if args.split == "val" else train:
        frames, start, ref = load_window(bracket, args.max_side)
        reference = frames[ref - start][None]
        plain = fusion.fuse(frames).clamp(0, 1)[None]
        for name, label in (("plain", plain), ("anchored", anchor_exposure(plain, reference))):
            scores[name].append((float(psnr(label, reference)), float(ssim(label, reference))))
    print(f"{args.split}: {len(scores['plain'])} scenes, label against the frame nearest mid-grey (PSNR / SSIM)")
    for name, values in scores.items():
        print(f"  {name:9s} {np.mean([v[0] for v in values]):.2f} dB / {np.mean([v[1] for v in values]):.4f}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
