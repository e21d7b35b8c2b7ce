"""Benchmark: grouping a flat folder of shots into brackets (``loopexpose.brackets.group_brackets``).

Run from the repository root::

    .venv/bin/python bench/grouping.py               # generated cards + a card made of the real brackets
    .venv/bin/python bench/grouping.py --large 20    # also: time per file on 20 JPEGs of 12 MP

Three measurements:

1. The generated 60-file memory card of ``tests/test_group.py`` (AEB sequences of 3, 5 and 7 frames in every
   camera order, single shots, brackets back to back), with and without ExposureBiasValue: is every group found
   exactly, and how long does grouping take.
2. A card without exposure EXIF made of the real brackets in ``../shared/data``: for every scene a window of 5
   frames (3 where it has fewer than 5) around its reference frame, in the Canon centre-first order (0 -1 +1 -2
   +2), the scenes one after the other with no time information, and after every third bracket a single photo
   from ``singles/msec_examples``. Grouping falls back on image similarity; the score is the share of groups
   found exactly (same files), and the boundaries missed or added.
3. With ``--large N``: N frames of 4000 x 3000 JPEG (3-frame brackets with EXIF), the time per file (header
   read and thumbnail decode at 1/8 DCT scale).

The folders are built in a temporary directory (symbolic links to the data, never copies in the repository).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

from loopexpose import paths
from loopexpose.brackets import find_scenes, group_brackets, list_images, order_bracket

sys.path.insert(0, "tests")


def timed(folder: Path):
    start = time.perf_counter()
    grouping = group_brackets(folder)
    return grouping, time.perf_counter() - start


def generated(root: Path) -> None:
    from test_group import make_card

    for bias in (True, False):
        folder = root / f"card_bias_{bias}"
        expected = make_card(folder, bias=bias)
        grouping, seconds = timed(folder)
        found = [[p.name for p in g.paths] for g in grouping.groups]
        exact = sum(group in expected for group in found)
        print(f"generated card, {'with' if bias else 'without'} bias: key {grouping.key}, {exact}/{len(expected)} "
              f"groups exact, {len(found)} found, {seconds:.2f} s for 60 files")  # fmt: skip


def real_card(root: Path) -> None:
    data = paths.data_root()
    if not (data / "brackets").is_dir():
        print(f"real card: skipped ({data / 'brackets'} not found)")
        return
    single_folder = data / "singles" / "msec_examples"
    singles = list_images(single_folder) if single_folder.is_dir() else []
    folder = root / "real_card"
    folder.mkdir()
    expected: list[list[str]] = []
    index = 0

    def place(source: Path) -> str:
        nonlocal index
        index += 1
        name = f"CARD_{index:05d}{source.suffix.lower()}"
        (folder / name).symlink_to(source.resolve())
        return name

    scenes = find_scenes(data / "brackets")
    for number, scene in enumerate(scenes):
        bracket = order_bracket(scene)
        if len(bracket) < 3:
            continue
        half = 2 if len(bracket) >= 5 else 1
        centre = min(max(bracket.reference_index(), half), len(bracket) - 1 - half)
        order = [centre] + [centre + sign * k for k in range(1, half + 1) for sign in (-1, 1)]
        expected.append([place(bracket.paths[i]) for i in order])
        if number % 3 == 2 and singles:
            expected.append([place(singles.pop(0))])
    grouping, seconds = timed(folder)
    found = [[p.name for p in g.paths] for g in grouping.groups]
    exact = sum(group in expected for group in found)
    truth = {g[0] for g in expected[1:]}
    cuts = {g[0] for g in found[1:]}
    print(f"real card ({len(list_images(folder))} files, {len(expected)} groups: "
          f"{sum(len(g) > 1 for g in expected)} brackets, {sum(len(g) == 1 for g in expected)} singles): key "
          f"{grouping.key}, {exact}/{len(expected)} groups exact, {len(truth - cuts)} boundaries missed, "
          f"{len(cuts - truth)} added, {seconds:.2f} s ({1000 * seconds / index:.0f} ms per file)")  # fmt: skip
    for group in grouping.groups:
        names = [p.name for p in group.paths]
        if names not in expected:
            print(f"  not exact: {', '.join(names)} ({group.split})")


def large(root: Path, count: int) -> None:
    from test_group import _write_shot

    folder = root / "large"
    folder.mkdir()
    rng = np.random.default_rng(0)
    base = rng.random((375, 500, 3), dtype=np.float32)
    scene = cv2.resize(base, (4000, 3000), interpolation=cv2.INTER_CUBIC)
    clock = datetime(2024, 5, 1, 10)
    for i in range(count):
        bias = (0, -2, 2)[i % 3]
        _write_shot(folder / f"IMG_{i:04d}.JPG", scene * 2 ** (bias / 2.2) * 0.5, clock, bias, 1 / 125 * 2**bias)
        clock += timedelta(seconds=0.5 if i % 3 < 2 else 10)
    grouping, seconds = timed(folder)
    print(f"large: {count} JPEGs of 4000x3000, {len(grouping.brackets)} brackets, {seconds:.2f} s "
          f"({1000 * seconds / count:.0f} ms per file)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=0, help="also time N JPEGs of 12 MP")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generated(root)
        real_card(root)
        if args.large:
            large(root, args.large)


if __name__ == "__main__":
    main()
