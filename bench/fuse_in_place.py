"""Time and peak memory of ``loopexpose.fuse(frames, deghost=True)`` copying the bracket before deghosting (a
tensor that is the caller's) against writing the ghost-free frames over it (``overwrite_frames=True``, what
``loopexpose fuse --deghost`` does with the frames it read), docs/benchmarks.md, "Ghost removal", "Speed".

The bracket: scikit-image's astronaut resized to ``--width`` x ``--height`` (4000 x 3000: 12 MP), rendered at
-2, -1, 0, +1, +2 EV (linear light ``v^2.2`` times ``2^EV``, then 8 bits), with a coloured square (a tenth of the
short side) at a different place in every frame, so that deghosting replaces it in the four non-reference frames.
Both ways run in this process, alternated, on a fresh copy of the frames each time (made before the clock starts);
best of ``--repeats``; ``remove_ghosts`` alone too, both ways. Peak memory is the process's resident set sampled every millisecond during the call,
above what it was just before the call. The two results are checked to be the same to the bit.

    PYTHONPATH=src .venv/bin/python bench/fuse_in_place.py
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import cv2
import numpy as np
import torch

import loopexpose
from loopexpose import deghost

EVS = (-2.0, -1.0, 0.0, 1.0, 2.0)


def moving_bracket(width: int, height: int) -> torch.Tensor:
    """``(5, 3, H, W)`` float32 8-bit levels in ``[0, 1]``: the astronaut at :data:`EVS` with a square that moves."""
    from skimage import data

    photo = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_CUBIC)
    linear = (photo.astype(np.float32) / 255) ** 2.2
    side = min(width, height) // 10
    top = (height - side) // 2
    frames = []
    for n, ev in enumerate(EVS):
        scene = linear.copy()
        left = (width - side) * n // (len(EVS) - 1)  # left edge to right edge
        scene[top : top + side, left : left + side] = (0.6, 0.15, 0.05)  # an orange square
        frames.append(np.floor(np.clip(scene * 2.0**ev, 0, 1) ** (1 / 2.2) * 255 + 0.5) / 255)
    return torch.from_numpy(np.stack(frames).astype(np.float32).transpose(0, 3, 1, 2).copy())


def resident() -> int:
    """This process's resident set in bytes."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measured(function) -> tuple[float, int, object]:
    """``(seconds, peak resident bytes above the start, result)`` of ``function()``."""
    start, peak, done = resident(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], resident())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    began = time.perf_counter()
    result = function()
    seconds = time.perf_counter() - began
    done.set()
    sampler.join()
    return seconds, max(peak[0], resident()) - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    frames = moving_bracket(args.width, args.height)
    ways = {  # name: (function of a fresh copy of the frames, whether its result is compared)
        "fuse, copy (the caller's tensor)": (lambda given: loopexpose.fuse(given, deghost=True), True),
        "fuse, in place (overwrite_frames=True)": (
            lambda given: loopexpose.fuse(given, deghost=True, overwrite_frames=True), True
        ),
        "remove_ghosts alone, copy": (lambda given: deghost.remove_ghosts(given)[0], False),
        "remove_ghosts alone, in place (out=frames)": (lambda given: deghost.remove_ghosts(given, out=given)[0], False),
    }
    best = {name: (float("inf"), float("inf")) for name in ways}
    results = {}
    for _ in range(args.repeats):
        for name, (function, compared) in ways.items():
            given = frames.clone()
            seconds, peak, result = measured(lambda: function(given))  # noqa: B023
            best[name] = (min(best[name][0], seconds), min(best[name][1], peak))
            if compared:
                results[name] = result
            del given, result
    print(f"{args.width} x {args.height}, {len(frames)} frames ({frames.nbytes / 2**30:.2f} GiB), "
          f"best of {args.repeats}:")  # fmt: skip
    for name, (seconds, peak) in best.items():
        print(f"  {name}: {seconds:.2f} s, peak {peak / 2**30:.2f} GiB above the start")
    same = torch.equal(*results.values())
    print("the same result to the bit:", same)
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
