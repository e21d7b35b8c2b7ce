"""Benchmark: correcting one photo at full resolution with ``model.correct(array)``: MP/s and peak memory.

Run from the repository root (on a quiet machine; nothing else busy)::

    .venv/bin/python bench/correct.py                   # 0.5, 3, 12 and 50 MP on the CPU (and CUDA if present)
    .venv/bin/python bench/correct.py --sizes 0.5,3 --repeats 3 --model path/to/model.safetensors
    .venv/bin/python bench/correct.py --end-to-end      # also per JPEG file: decode + correct + encode + write

Each case runs in a fresh child process that imports torch, loads the model, makes its input, then times
``model.correct(photo)`` (one warm-up, then the median of ``--repeats`` runs) and reports its peak resident
set size (``ru_maxrss``): the whole process, torch and the input and output images included. A baseline child
that only imports torch and loads the model (no image) is measured too, so the table also shows the growth
above it. CPU time (``time.process_time``, all threads) is printed beside the wall time: when other jobs share
the cores, wall time grows but the work does not. On CUDA the memory figure is
``torch.cuda.max_memory_allocated`` (the input arrives and leaves as a numpy array, so transfers are in the time).

Input: scikit-image's astronaut photo (512 x 512) resized with OpenCV's bicubic filter to each 4:3 size and
darkened by about 1.5 stops, as a uint8 RGB array (an 8-bit JPEG as decoded).

Model: the bundled ``default`` weights when they exist, else a CurveGrid with random heads (the cost is the
same: the architecture, not the weights, decides it).

Reference: the LoopExpose authors' network corrects a 3-megapixel photo in 4.8 s with a 2.3 GB peak on this
kind of 2-core CPU machine (a quoted figure, not re-measured here); the script prints our speed-up over it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

SIZES = {0.5: (612, 816), 3: (1500, 2000), 12: (3000, 4000), 50: (6120, 8160)}  # megapixels -> (H, W), 4:3
REFERENCE_3MP = {"seconds": 4.8, "peak_gb": 2.3, "what": "LoopExpose authors' network, 3 MP, 2-core CPU (quoted)"}
TARGET_12MP = {"seconds": 1.0, "peak_gb": 1.5}


def load_model(spec: str, device: str):
    """``(model, description)``: ``spec`` loaded, or a random-head CurveGrid when ``spec`` is ``default`` and no
    default weights are bundled yet."""
    import torch

    from loopexpose.models import bundled, create, load

    if spec == "default" and "default" not in bundled():
        torch.manual_seed(0)
        model = create("curvegrid")
        for head in (model.curve_head, model.grid_head):
            torch.nn.init.normal_(head.weight, std=0.3)
            torch.nn.init.normal_(head.bias, std=0.3)
        return model.to(device).eval(), "curvegrid with random heads (no bundled default yet)"
    return load(spec, device), spec


def make_photo(height: int, width: int):
    """``(height, width, 3)`` uint8: a real photo resized and darkened, allocated once (no float copy)."""
    import cv2
    import numpy as np
    from skimage import data

    photo = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_CUBIC)
    darken = (np.clip((np.arange(256) / 255.0) ** 2.2 * 2**-1.5, 0, 1) ** (1 / 2.2) * 255 + 0.5).astype(np.uint8)
    return cv2.LUT(photo, darken, dst=photo)


def child(megapixels: float | None, spec: str, device: str, repeats: int, threads: int) -> dict:
    """Run one case in this (fresh) process and return its measurements."""
    import torch

    torch.set_num_threads(threads)
    model, description = load_model(spec, device)
    if megapixels is None:  # baseline: torch imported, model loaded, no image
        return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "model": description}
    height, width = SIZES[megapixels]
    photo = make_photo(height, width)
    cuda = device.startswith("cuda")
    model.correct(photo)  # warm-up: thread pools, allocator, CUDA kernels
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, cpu_times = [], []
    out = None
    for _ in range(repeats):
        out = None  # drop the previous result first, so that the peak is one call's, not two outputs'
        start, cpu_start = time.perf_counter(), time.process_time()
        out = model.correct(photo)
        times.append(time.perf_counter() - start)  # the result is a numpy array: CUDA work has finished
        cpu_times.append(time.process_time() - cpu_start)
    assert out.shape == photo.shape and out.dtype == photo.dtype
    result = {
        "megapixels": height * width / 1e6,
        "size": f"{width}x{height}",
        "device": device,
        "seconds": statistics.median(times),
        "cpu_seconds": statistics.median(cpu_times),  # all threads: shows the work when other jobs share the cores
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "model": description,
    }
    if cuda:
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def end_to_end_child(megapixels: float, spec: str, device: str, repeats: int, threads: int) -> dict:
    """Time ``loopexpose correct`` on one JPEG (quality 95): decode, correct, encode, write; in this process."""
    import tempfile
    from pathlib import Path

    import torch

    from loopexpose.cli.correct import correct_file
    from loopexpose.io import write_image

    torch.set_num_threads(threads)
    model, description = load_model(spec, device)
    height, width = SIZES[megapixels]
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "photo.jpg", Path(folder) / "photo_loopexpose.jpg"
        write_image(source, make_photo(height, width), quality=95)
        correct_file(model, source, target, None, 0, 95)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            correct_file(model, source, target, None, 0, 95)
            times.append(time.perf_counter() - start)
    return {"megapixels": height * width / 1e6, "size": f"{width}x{height}", "device": device,
            "seconds": statistics.median(times), "model": description,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip


def run_child(megapixels: float | None, args, device: str, end_to_end: bool = False) -> dict:
    command = [sys.executable, __file__, "--child", "base" if megapixels is None else str(megapixels),
               "--model", args.model, "--device", device, "--repeats", str(args.repeats),
               "--threads", str(args.threads)] + (["--end-to-end"] if end_to_end else [])  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True)
    if output.returncode != 0:
        raise SystemExit(f"child for {megapixels} MP on {device} failed:\n{output.stderr[-2000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0.5,3,12,50", help="comma-separated megapixels among 0.5, 3, 12, 50")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (median), after one warm-up")
    parser.add_argument("--model", default="default", help="bundled name or .safetensors path")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (CPU, plus CUDA when present)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the machine has 2 cores)")
    parser.add_argument("--end-to-end", action="store_true",
                        help="also time `loopexpose correct` per JPEG file (decode + correct + encode + write)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        megapixels = None if args.child == "base" else float(args.child)
        if args.end_to_end:
            print(json.dumps(end_to_end_child(megapixels, args.model, args.device, args.repeats, args.threads)))
            return
        print(json.dumps(child(megapixels, args.model, args.device, args.repeats, args.threads)))
        return

    import cv2
    import torch

    sizes = [float(s) for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        raise SystemExit(f"unknown sizes {unknown}; choose among {sorted(SIZES)}")
    devices = ["cpu", "cuda"] if args.device == "auto" and torch.cuda.is_available() else [args.device]
    if args.device == "auto" and not torch.cuda.is_available():
        devices = ["cpu"]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"OpenCV {cv2.__version__}, {args.threads} torch threads, median of {args.repeats} runs", flush=True)
    baseline = run_child(None, args, "cpu")
    print(f"model: {baseline['model']}; baseline peak RSS (torch imported, model loaded, no image): "
          f"{baseline['peak_rss_mib']:.0f} MiB", flush=True)  # fmt: skip
    rows = []
    for device in devices:
        for megapixels in sizes:
            row = run_child(megapixels, args, device)
            row["above_baseline_mib"] = row["peak_rss_mib"] - baseline["peak_rss_mib"]
            rows.append(row)
            extra = f", CUDA peak {row['cuda_peak_mib']:.0f} MiB" if "cuda_peak_mib" in row else ""
            print(f"{device:4s} {row['size']:>9s} ({row['megapixels']:.1f} MP): {row['seconds']:.3f} s "
                  f"(CPU time {row['cpu_seconds']:.3f} s), "
                  f"{row['megapixels'] / row['seconds']:.1f} MP/s, peak RSS {row['peak_rss_mib']:.0f} MiB "
                  f"(+{row['above_baseline_mib']:.0f} over baseline){extra}", flush=True)  # fmt: skip

    print("\n| device | size | MP | seconds | CPU seconds | MP/s | peak RSS (MiB) | above baseline (MiB) "
          "| CUDA peak (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        cuda = f"{row['cuda_peak_mib']:.0f}" if "cuda_peak_mib" in row else "-"
        print(f"| {row['device']} | {row['size']} | {row['megapixels']:.2f} | {row['seconds']:.3f} | "
              f"{row['cpu_seconds']:.3f} | "
              f"{row['megapixels'] / row['seconds']:.1f} | {row['peak_rss_mib']:.0f} | {row['above_baseline_mib']:.0f} "
              f"| {cuda} |")  # fmt: skip

    if args.end_to_end:
        print("\nend to end, one JPEG file (quality 95) through `loopexpose correct`'s correct_file:")
        for device in devices:
            for megapixels in sizes:
                row = run_child(megapixels, args, device, end_to_end=True)
                print(f"{device:4s} {row['size']:>9s}: {row['seconds']:.3f} s per file, "
                      f"{row['megapixels'] / row['seconds']:.1f} MP/s, peak RSS {row['peak_rss_mib']:.0f} MiB",
                      flush=True)  # fmt: skip

    cpu = {round(r["megapixels"]): r for r in rows if r["device"] == "cpu"}
    if 3 in cpu:
        ours = cpu[3]
        print(f"\n3 MP vs reference ({REFERENCE_3MP['what']}: {REFERENCE_3MP['seconds']} s, "
              f"{REFERENCE_3MP['peak_gb']} GB): {REFERENCE_3MP['seconds'] / ours['seconds']:.1f}x faster, "
              f"{REFERENCE_3MP['peak_gb'] * 1000 / (ours['peak_rss_mib'] * 1.048576):.1f}x less peak memory "
              f"(target: >= 10x faster)")  # fmt: skip
    if 12 in cpu:
        ours = cpu[12]
        peak_gb = ours["peak_rss_mib"] * 1.048576 / 1000
        ok = ours["seconds"] <= TARGET_12MP["seconds"] and peak_gb < TARGET_12MP["peak_gb"]
        print(f"12 MP: {ours['seconds']:.2f} s (target <= {TARGET_12MP['seconds']} s), peak RSS "
              f"{ours['peak_rss_mib'] * 1.048576 / 1000:.2f} GB (target < {TARGET_12MP['peak_gb']} GB): "
              f"{'met' if ok else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
