"""Benchmark: training steps per second of the real loop (:func:`loopexpose.train.run`), CPU vs GPU.

Run from the repository root::

    .venv/bin/python bench/train_speed.py                        # default config; cpu, and cuda when present
    .venv/bin/python bench/train_speed.py --devices cuda --compile
    .venv/bin/python bench/train_speed.py --roots brackets/hdrps --threads 2   # a quicker CPU figure
    torchrun --nproc-per-node 4 bench/train_speed.py --devices cuda           # 4 GPUs, one global batch per step

It trains the config (``configs/default.toml`` unless ``--config``) for 2 warm-up-stage epochs and 1 feedback
epoch, without validation, into a temporary folder, and times each epoch from the end of the previous
checkpoint write to the start of the next (so decoding the data, building the model and writing files are
outside the timed region; loading batches, the forward pass, the pseudo-label fusion, backward and the
optimiser step are inside). The first epoch is left out (allocator, cuDNN autotuning and ``torch.compile``
warm up there). A step is one optimiser step over the global batch (``train.brackets_per_step`` brackets of
k frames each); the feedback stage fuses the corrected frames with the inputs, so its steps cost more.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from loopexpose import train
from loopexpose.methods.loopexpose import train as loopexpose_train


def measure(config: dict, device: str, out: Path) -> list[dict]:
    """Train ``config`` on ``device``; one row per timed epoch: stage, steps, seconds, steps/s."""
    marks: list[tuple[float, float, dict]] = []  # (entered _save, left _save, row)
    save = loopexpose_train._save

    def timed_save(out_dir, model, optimizer, cfg, row, *rest):
        entered = time.perf_counter()
        save(out_dir, model, optimizer, cfg, row, *rest)
        marks.append((entered, time.perf_counter(), dict(row)))

    loopexpose_train._save = timed_save  # the epoch's end is the moment it is saved
    try:
        train.run(config, device, out_dir=out, quiet=True)
    finally:
        loopexpose_train._save = save
    rows = []
    for (_, left, _), (entered, _, row) in zip(marks, marks[1:]):
        seconds = entered - left
        rows.append({"device": device, "stage": row["stage"], "steps": row["steps"], "seconds": round(seconds, 3),
                     "steps_per_s": round(row["steps"] / seconds, 3),
                     "brackets_per_s": round(row["steps"] * config["train"]["brackets_per_step"] / seconds, 2)})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/default.toml"))
    parser.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--roots", nargs="*", help="override data.roots (e.g. brackets/hdrps for a quick CPU run)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--compile", action="store_true", help="cuda.compile = true")
    parser.add_argument("--no-amp", action="store_true", help="cuda.amp = false (float32 on the GPU)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    overrides: dict = {"data": {"val_fraction": 0.0, "val_scenes": []}, "train": {"warmup_epochs": 2, "feedback_epochs": 1}}
    overrides["cuda"] = {"compile": args.compile, "amp": not args.no_amp}
    if args.roots:
        overrides["data"]["roots"] = args.roots
    config = train.load_config(args.config, overrides)
    main_rank = os.environ.get("RANK", "0") == "0"
    rows = []
    for device in args.devices.split(","):
        with tempfile.TemporaryDirectory() as out:
            rows += measure(config, device, Path(out))
    if not main_rank:
        return
    world = int(os.environ.get("WORLD_SIZE", "1"))
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU threads, "
          f"GPU {gpu}, {world} rank(s); config {args.config}, roots {config['data']['roots']}, crop {config['data']['crop']}, "
          f"window {config['data']['window']}, {config['train']['brackets_per_step']} brackets per step")  # fmt: skip
    print(f"{'device':8} {'stage':9} {'steps':>5} {'seconds':>8} {'steps/s':>8} {'brackets/s':>10}")
    for r in rows:
        print(f"{r['device']:8} {r['stage']:9} {r['steps']:5d} {r['seconds']:8.2f} {r['steps_per_s']:8.3f} {r['brackets_per_s']:10.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
