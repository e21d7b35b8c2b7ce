"""Time the per-pixel numpy steps of the whole-photo commands that docs/benchmarks.md, "Full-resolution numpy hot
spots", reports: run it on a commit before and after a change (each step's result is printed as a hash, which must
not change).

Steps, on scikit-image's astronaut resized (bicubic) to ``--width`` x ``--height`` (4000 x 3000: 12 MP):

* ``quantise8`` / ``quantise16``: ``io._quantise`` of the float32 ``(H, W, 3)`` frame ``write_image`` gets from
  ``loopexpose fuse`` (values a little outside [0, 1]);
* ``srgb_matrix``: ``raw.camera_to_srgb_matrix`` on a half-size (3 MP) pair of renderings, as ``decode_raw`` fits it;
* ``brightest``: each pixel's brightest channel of the float32 frame (``decode_raw``'s clipped fraction);
* ``inconsistency``: ``deghost._inconsistency`` on a 5-frame bracket (-2..+2 EV in linear light) of the frame.

Best of ``--repeats`` in one process (the 2 cores may be shared: compare runs of one session).

    PYTHONPATH=src .venv/bin/python bench/hot_spots.py
"""

from __future__ import annotations

import argparse
import hashlib
import time

import cv2
import numpy as np
import skimage.data
import torch

from loopexpose import deghost, io, raw


def best(step, repeats: int) -> tuple[float, object]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = step()
        times.append(time.perf_counter() - start)
    return min(times), result


def digest(result) -> str:
    if result is None:
        return "None"
    return hashlib.sha256(np.ascontiguousarray(result).tobytes()).hexdigest()[:12]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    photo = cv2.resize(skimage.data.astronaut(), (args.width, args.height), interpolation=cv2.INTER_CUBIC)
    frame = photo.astype(np.float32) / 255
    fused = frame * np.float32(1.1) - np.float32(0.05)
    half = np.ascontiguousarray(frame[::2, ::2] ** 2.2)
    matrix = np.array([[1.6, -0.4, -0.2], [-0.2, 1.4, -0.2], [0.0, -0.5, 1.5]], np.float32)
    srgb = np.round(np.clip(half @ matrix.T, 0, 1) * 65535) / np.float32(65535)
    linear = torch.from_numpy(frame ** 2.2).permute(2, 0, 1)
    bracket = torch.stack([(linear * 2**ev).clamp(0, 1) ** (1 / 2.2) for ev in (-2, -1, 0, 1, 2)])
    small = deghost._reduced(bracket)
    reference = deghost._reference(small)
    curves, bounds = deghost._curves(small, reference)

    steps = {
        "quantise8": lambda: io._quantise(fused, 8),
        "quantise16": lambda: io._quantise(fused, 16),
        "srgb_matrix": lambda: raw.camera_to_srgb_matrix(half, srgb),
        "brightest": lambda: frame.max(axis=2) if not hasattr(io, "brightest_channel") else io.brightest_channel(frame),
        "inconsistency": lambda: deghost._inconsistency(small, curves, bounds, reference),
    }
    print(f"{args.width} x {args.height}, best of {args.repeats}")
    for name, step in steps.items():
        seconds, result = best(step, args.repeats)
        print(f"{name:14s} {seconds:7.3f} s  {digest(result)}")


if __name__ == "__main__":
    main()
