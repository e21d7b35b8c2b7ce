"""Speed of ``fuse --deghost`` on a hand-held 12 MP bracket that was not aligned, and of reading TIFF brackets
(docs/benchmarks.md, "A hand-held bracket that was not aligned").

Builds Cades Cove upscaled to 4000 x 3000 as in ``bench/align.py --speed-only`` (seed 18), unshaken and shaken,
as 8-bit TIFFs under ``--folder``; then times, best of ``--repeats`` in this process, ``remove_ghosts`` in place
on both, and ``order_bracket`` + ``load_bracket`` against ``read_bracket`` (checking they agree).

    PYTHONPATH=src .venv/bin/python bench/misaligned.py --folder /tmp/photo
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import align as bench_align  # noqa: E402

from loopexpose import deghost  # noqa: E402
from loopexpose.brackets import align, discover, load_bracket, order_bracket, read_bracket  # noqa: E402


def make(folder: Path) -> None:
    frames = bench_align.load_scene(*bench_align.SPEED_SCENE)
    big = torch.from_numpy(np.stack([
        np.stack([cv2.resize(plane.numpy(), (4762, 3572), interpolation=cv2.INTER_CUBIC) for plane in frame])
        for frame in frames
    ]).clip(0, 1))  # fmt: skip
    rng = np.random.default_rng(18)
    unshaken, shaken, _, _ = bench_align.shaken_bracket(big, align.reference_frame(big), rng, True)
    for name, bracket in (("still_tif", unshaken), ("shaken_tif", shaken)):
        (folder / name).mkdir(parents=True, exist_ok=True)
        bench_align.write_tiffs(bracket, folder / name)


def best_of(function, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/photo"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not (args.folder / "shaken_tif").is_dir():
        make(args.folder)
    for name in ("still_tif", "shaken_tif"):
        frames = load_bracket(order_bracket(args.folder / name))

        def deghost_in_place(frames=frames) -> None:
            work = frames.clone()
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", deghost.MisalignmentWarning)
                deghost.remove_ghosts(work, out=work)
            return time.perf_counter() - start

        print(f"{name}: remove_ghosts in place {min(deghost_in_place() for _ in range(args.repeats)):.2f} s")
    scene = args.folder / "still_tif"

    def twice():
        discover._measure_cached.cache_clear()
        bracket = order_bracket(scene)
        return bracket, load_bracket(bracket)

    def once():
        discover._measure_cached.cache_clear()
        return read_bracket(scene)

    (a, fa), (b, fb) = twice(), once()
    print("read_bracket agrees with order_bracket + load_bracket:", a == b and torch.equal(fa, fb))
    del fa, fb
    twice_s, once_s = best_of(twice, args.repeats), best_of(once, args.repeats)
    print(f"order_bracket + load_bracket {twice_s:.2f} s, read_bracket {once_s:.2f} s")


if __name__ == "__main__":
    main()
