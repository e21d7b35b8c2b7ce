"""Benchmark: RAW input (``loopexpose.raw``): are a RAW bracket's frames consistent, and what does decoding cost.

Run from the repository root (needs the ``raw`` extra)::

    PYTHONPATH=src .venv/bin/python bench/raw_input.py            # both parts, a JSON summary at the end
    PYTHONPATH=src .venv/bin/python bench/raw_input.py --repeats 9

Consistency: a three-frame bracket of linear DNGs (``tests/dng.py``; 1/200, 1/100 and 1/50 s of one random scene,
so each frame should be exactly twice as bright as the one before; the middle frame's brightest pixel at 90% of
white; the camera white balances of the frames differing by up to 20%, as when auto white balance re-estimates
between shots) is decoded three ways: ours (:func:`loopexpose.brackets.load_bracket`), LibRaw with camera white balance
and no auto-brightness but its other defaults (each frame's own white balance, ``adjust_maximum_thr`` 0.75), and
``rawpy.postprocess()`` defaults (auto-brightness too). Reported: the median ratio of linear values between
consecutive frames (pixels unclipped in all frames; the EXIF ratio is 2.000) and the spread of the frames' mean R/G
(max/min - 1; 0 means one colour balance).

Cost: the real Kodak DC50 RAW (768 x 512, ``../shared/data/raw``; skipped when absent): header only
(:func:`loopexpose.raw.read_info`), the ordering measure (:func:`loopexpose.raw.measure`, half-size decode),
a full render (:func:`loopexpose.raw.render`), and ``fuse_scene`` of the file copied three times (ordering, three
renders, Mertens fusion, 16-bit PNG write). Median wall time of ``--repeats`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def consistency(folder: Path) -> dict:
    import kornia
    import rawpy
    import torch

    from dng import write_dng
    from loopexpose import brackets, io

    rng = np.random.default_rng(0)
    scene = rng.uniform(0.02, 0.2, size=(96, 128, 3))
    scene[0, 0] = 0.45  # x2 in the middle frame: 90% of white
    neutrals = {1 / 200: (0.5, 1.0, 0.7), 1 / 100: (0.6, 1.0, 0.6), 1 / 50: (0.45, 1.0, 0.75)}
    paths = [write_dng(folder / f"f{i}.dng", scene * t * 200, exposure_time=t, neutral=neutrals[t])
             for i, t in enumerate(sorted(neutrals))]  # fmt: skip
    ways = {"ours": brackets.load_bracket(brackets.order_bracket(folder, paths)).double()}
    for name, options in (
        ("libraw_camera_wb", dict(use_camera_wb=True, no_auto_bright=True)),
        ("rawpy_defaults", dict(use_camera_wb=True)),
    ):
        frames = []
        for path in paths:
            with rawpy.imread(str(path)) as raw:
                frames.append(raw.postprocess(gamma=(1, 1), output_bps=16, **options).astype(np.float64) / 65535)
        ways[name] = torch.from_numpy(np.stack(frames).transpose(0, 3, 1, 2))
    results = {}
    for name, frames in ways.items():
        linear = kornia.color.rgb_to_linear_rgb(frames) if name == "ours" else frames
        unclipped = (linear < 0.9).all(dim=(0, 1)) & (linear > 0.02).all(dim=(0, 1))
        ratios = [round(torch.median(linear[i + 1][:, unclipped] / linear[i][:, unclipped]).item(), 4) for i in (0, 1)]
        red_green = [(f[0][unclipped].mean() / f[1][unclipped].mean()).item() for f in linear]
        results[name] = {"ratios": ratios, "rg_spread": round(max(red_green) / min(red_green) - 1, 4)}
    return results


def cost(raw_file: Path, folder: Path, repeats: int) -> dict:
    from loopexpose import brackets, io, raw
    from loopexpose.cli.fuse import fuse_scene

    scene = folder / "copies"
    scene.mkdir()
    for i in range(3):
        shutil.copyfile(raw_file, scene / f"shot{i}{raw_file.suffix}")

    def fuse() -> None:
        brackets.discover._measure_cached.cache_clear()  # order afresh each time, as a new process would
        fuse_scene(scene, folder / "fused.png")

    cases = {
        "read_info": lambda: raw.read_info(raw_file),
        "measure": lambda: raw.measure(raw_file),
        "render": lambda: raw.render(raw_file),
        "fuse_3_copies": fuse,
    }
    timings = {}
    for name, run in cases.items():
        run()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        timings[name] = round(statistics.median(times), 4)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from loopexpose.paths import data_root

    summary: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "dng").mkdir()
        summary["consistency"] = consistency(Path(tmp) / "dng")
        for name, row in summary["consistency"].items():
            print(f"{name:18s} frame ratios {row['ratios']} (EXIF: 2.0, 2.0)   R/G spread {row['rg_spread']:.1%}")
        raw_file = data_root() / "raw" / "RAW_KODAK_DC50.KDC"
        if raw_file.is_file():
            summary["kdc_seconds"] = cost(raw_file, Path(tmp), args.repeats)
            for name, seconds in summary["kdc_seconds"].items():
                print(f"{name:18s} {seconds * 1000:8.1f} ms   (Kodak DC50, 768 x 512)")
        else:
            print(f"skipped the timings: {raw_file} not found")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
