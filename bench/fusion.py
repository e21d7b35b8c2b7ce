"""Benchmark: our Mertens fusion against ``cv2.createMergeMertens().process`` on the same brackets.

Run from the repository root::

    .venv/bin/python bench/fusion.py              # speed + LoopExpose MEF + batched fusion + 9 x 24 MP memory
    .venv/bin/python bench/fusion.py --quick      # 0.5 and 3 MP only, no memory run

Brackets: five frames (about -2..+2 EV around mid-grey) of an HDRPS scene from ``../shared/data`` resized to
each size (a synthetic bracket when the data is absent). Both sides get the same pixels; conversions to each
library's layout are outside the timed region; times are the best of ``--repeats`` runs, ours and OpenCV's
interleaved so that background load hits both alike. Preset: OpenCV's defaults (1, 1, 0) on both sides.

The LoopExpose MEF line times ``fusion.loop_fuse`` of the 5 frames and their 5 corrected frames (corrected by
the bundled ``default`` model beforehand, not timed) against OpenCV's Mertens fusion of the 5 frames.

The memory figures come from child processes that only fuse 9 frames of 24 megapixels (6000 x 4000), plainly
and with 9 corrected frames (``loop_fuse``), and report their peak resident memory (``VmHWM``), the inputs
included.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
import timeit

import cv2
import numpy as np
import torch

from loopexpose import fusion

SIZES = {0.5: (600, 864), 3: (1500, 2000), 12: (3000, 4000)}  # megapixels -> (H, W)


def source_bracket(frames: int = 5) -> np.ndarray:
    """``(frames, h, w, 3)`` float32 in [0, 1]: a real HDRPS window when the data is there."""
    from loopexpose import brackets, paths

    scene = paths.data_root() / "brackets" / "hdrps" / "Ahwahnee Great Lounge"
    if scene.is_dir():
        bracket, stack = brackets.read_bracket(scene)  # darkest first
        middle = int(torch.tensor(bracket.mean_luma).sub(0.45).abs().argmin())
        start = min(max(0, middle - frames // 2), len(stack) - frames)
        return stack[start : start + frames].permute(0, 2, 3, 1).numpy()
    sys.path.insert(0, "tests")
    from conftest import synthetic_bracket

    return synthetic_bracket(frames, 356, 536).permute(0, 2, 3, 1).numpy()


def resized(bracket: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.stack([cv2.resize(frame, (width, height), interpolation=cv2.INTER_CUBIC) for frame in bracket]).clip(0, 1)


def both_layouts(base: np.ndarray, mp: float) -> tuple[torch.Tensor, list[np.ndarray]]:
    """The bracket at ``mp`` megapixels as our ``(N, 3, H, W)`` tensor and OpenCV's list of 0..255 arrays."""
    frames = resized(base, *SIZES[mp])
    ours = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
    return ours, [np.ascontiguousarray(f * 255.0, dtype=np.float32) for f in frames]


def best_of(function, repeats: int) -> float:
    return min(timeit.repeat(function, number=1, repeat=repeats))


def speed_table(megapixels: list[float], repeats: int) -> list[dict]:
    base = source_bracket()
    merge = cv2.createMergeMertens(*fusion.PRESETS["opencv"])
    rows = []
    for mp in megapixels:
        height, width = SIZES[mp]
        ours_input, cv_input = both_layouts(base, mp)
        fusion.fuse(ours_input)  # warm-up (allocator, OpenCV thread pool)
        merge.process(cv_input)
        ours, theirs = [], []
        for _ in range(repeats):
            theirs.append(best_of(lambda: merge.process(cv_input), 1))
            ours.append(best_of(lambda: fusion.fuse(ours_input), 1))
        reference = torch.from_numpy(merge.process(cv_input)).permute(2, 0, 1)
        ours_out = fusion.fuse(ours_input)
        mse = (ours_out.clamp(0, 1) - reference.clamp(0, 1)).square().mean().item()
        psnr = 10 * np.log10(1 / mse) if mse > 0 else float("inf")
        rows.append({"mp": mp, "size": f"{width}x{height}", "ours_s": min(ours), "opencv_s": min(theirs),
                     "ratio": min(ours) / min(theirs), "psnr_db": psnr})  # fmt: skip
        print(f"{mp:>5} MP {width}x{height}: ours {min(ours):.3f} s, OpenCV {min(theirs):.3f} s, "
              f"ratio {min(ours) / min(theirs):.2f}, PSNR {psnr:.1f} dB", flush=True)  # fmt: skip
    return rows


def loop_mef(megapixels: list[float], repeats: int) -> list[dict]:
    from loopexpose.models import load

    base = source_bracket()
    model = load("default")
    merge = cv2.createMergeMertens(*fusion.PRESETS["opencv"])
    rows = []
    for mp in megapixels:
        inputs, cv_input = both_layouts(base, mp)
        corrected = model.correct(inputs)
        theirs = best_of(lambda: merge.process(cv_input), repeats)
        ours = best_of(lambda: fusion.loop_fuse(inputs, corrected), repeats)
        rows.append({"mp": mp, "loop_fuse_s": ours, "opencv_s": theirs, "ratio": ours / theirs})
        print(f"{mp:>5} MP LoopExpose MEF (5 + 5 frames): loop_fuse {ours:.3f} s, OpenCV Mertens of the 5 inputs "
              f"{theirs:.3f} s, ratio {ours / theirs:.2f}", flush=True)  # fmt: skip
    return rows


def batched(repeats: int, brackets: int = 8, mp: float = 0.5) -> dict:
    height, width = SIZES[mp]
    frames = torch.from_numpy(resized(source_bracket(), height, width)).permute(0, 3, 1, 2)
    # Eight different brackets: the same scene under eight global gains, so no call can reuse another's work.
    batch = torch.stack([(frames * (0.7 + 0.05 * i)).clamp(0, 1) for i in range(brackets)]).contiguous()
    fusion.fuse(batch)
    separate = best_of(lambda: [fusion.fuse(batch[i]) for i in range(brackets)], repeats)
    together = best_of(lambda: fusion.fuse(batch), repeats)
    print(f"{brackets} brackets of 5 x {mp} MP: separate calls {separate / brackets:.3f} s per bracket, "
          f"one batched call {together / brackets:.3f} s per bracket ({separate / together:.2f}x)", flush=True)
    return {"brackets": brackets, "mp": mp, "separate_s_per_bracket": separate / brackets,
            "batched_s_per_bracket": together / brackets}  # fmt: skip


def peak_rss_gib() -> float:
    """This process's peak resident memory. Linux's ``VmHWM`` belongs to the process image, whereas
    ``ru_maxrss`` is inherited across fork and exec, so a child would report its parent's peak."""
    try:
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 2**20
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def memory_child(kind: str) -> None:
    """Fuse 9 frames of 24 MP (``kind`` "fuse"), or with 9 corrected frames (``kind`` "loop_fuse"), and print
    peak RSS (GiB) and time as JSON."""
    torch.set_num_threads(2)
    generator = torch.Generator().manual_seed(0)
    # Smooth random frames at 9 exposures (cheap to make, nothing special for the fusion), written in place so
    # that making them does not raise the peak above the input itself.
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 60, 40, generator=generator), size=(6000, 4000))[0]
    images = torch.empty(9, *base.shape)
    for i, ev in enumerate(range(-4, 5)):
        torch.mul(base, 2.0 ** (ev / 2), out=images[i]).clamp_(0, 1)
    corrected = None
    if kind == "loop_fuse":  # stand-ins for corrected frames: the scene at one exposure, slightly varied
        corrected = torch.empty_like(images)
        for i in range(9):
            torch.mul(base, 0.95 + 0.01 * i, out=corrected[i]).clamp_(0, 1)
    del base
    before = peak_rss_gib()
    start = time.perf_counter()
    fused = fusion.fuse(images) if corrected is None else fusion.loop_fuse(images, corrected)
    seconds = time.perf_counter() - start
    peak = peak_rss_gib()
    inputs = images.numel() * 4 / 2**30 * (1 if corrected is None else 2)
    print(json.dumps({"input_gib": inputs, "rss_before_gib": before, "peak_rss_gib": peak,
                      "seconds": seconds, "finite": bool(torch.isfinite(fused).all())}))  # fmt: skip


def memory(kind: str) -> dict:
    command = [sys.executable, __file__, "--memory-child", kind]
    output = subprocess.run(command, capture_output=True, text=True, check=True)
    result = json.loads(output.stdout.strip().splitlines()[-1])
    frames = "9 x 24 MP (6000x4000)" + (" + 9 corrected" if kind == "loop_fuse" else "")
    print(f"{kind} {frames}: input {result['input_gib']:.2f} GiB, peak RSS before fusing "
          f"{result['rss_before_gib']:.2f} GiB, peak RSS {result['peak_rss_gib']:.2f} GiB, {result['seconds']:.1f} s",
          flush=True)  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="0.5 and 3 MP only, no memory run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-child", choices=("fuse", "loop_fuse"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    torch.set_num_threads(2)
    cv2.setNumThreads(2)
    print(f"torch {torch.__version__}, OpenCV {cv2.__version__}, {platform.processor() or platform.machine()}, "
          f"torch threads {torch.get_num_threads()}, OpenCV threads {cv2.getNumThreads()}")  # fmt: skip
    speed_table([0.5, 3] if args.quick else [0.5, 3, 12], args.repeats)
    loop_mef([3] if args.quick else [3, 12], max(1, args.repeats // 2))
    batched(args.repeats)
    if not args.quick:
        memory("fuse")
        memory("loop_fuse")


if __name__ == "__main__":
    main()
