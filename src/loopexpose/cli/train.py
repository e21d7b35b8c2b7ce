"""``loopexpose train``: train a model from a TOML config (LoopExpose's nested loop, or the semantic model)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from loopexpose.cli.app import app


@app.command()
def train(
    config: Path = typer.Option(Path("configs/default.toml"), "--config", "-c", help="TOML config (see configs/)."),
    device: str = typer.Option("cpu", "--device", "-d", help="cpu, cuda, cuda:N or auto."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT_DIR/last.safetensors if present."),
    out_dir: Path = typer.Option(None, "--out-dir", "-o", help="Overrides the config's out_dir."),
    threads: int = typer.Option(0, "--threads", help="CPU threads for torch (0 = torch's default)."),
    clip_weights: Path = typer.Option(
        None, "--clip-weights", help="Semantic model: local CLIP weights (open_clip .safetensors/.bin or a "
        "transformers folder) for the exposure recogniser; sets guidance.clip_weights. Never downloaded.",
    ),
    segmenter_weights: Path = typer.Option(
        None, "--segmenter-weights", help="Semantic model: local FastSAM weights (.pt, read by ultralytics) for "
        "the region masks; sets guidance.segmenter_weights. Never downloaded.",
    ),
) -> None:
    """Train a correction model; writes logs, curves and best/last checkpoints to the run folder."""
    import torch

    from loopexpose.errors import LoopExposeError
    from loopexpose.train import load_config, run

    if threads:
        torch.set_num_threads(threads)
    settings = load_config(config)
    guidance = {"clip_weights": clip_weights, "segmenter_weights": segmenter_weights}
    guidance = {key: str(value) for key, value in guidance.items() if value is not None}
    if guidance:
        if settings.get("method") != "semantic":
            raise LoopExposeError("--clip-weights and --segmenter-weights are for the semantic model (method = "
                                  "\"semantic\" in the config)", config)  # fmt: skip
        for key, value in guidance.items():
            if not Path(value).exists():
                raise LoopExposeError(f"{key.replace('_', ' ')} not found", value)
        settings["guidance"] = {**settings.get("guidance", {}), **guidance}
    best = run(settings, device=device, resume=resume, out_dir=out_dir)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        typer.echo(f"best checkpoint: {best}")
