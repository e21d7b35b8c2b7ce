"""``loopexpose demo``: the main job on an embedded default, with nothing to download.

Renders a 5-frame bracket (-2..+2 EV) from a photo that ships with scikit-image, corrects every frame with
the bundled default model, fuses the corrected frames (the LoopExpose MEF result) and, for comparison, the
input frames (plain Mertens), and writes everything plus one side-by-side comparison PNG.
"""

from __future__ import annotations

import time
from pathlib import Path

from typing import TYPE_CHECKING

import typer
from rich.console import Console

from loopexpose.cli.app import app

if TYPE_CHECKING:  # numpy, torch and matplotlib are imported when the demo runs, so that --help starts fast
    import torch

EVS = (-2.0, -1.0, 0.0, 1.0, 2.0)
PHOTOS = ("coffee", "astronaut", "chelsea", "rocket")


def render_bracket(photo: str = "coffee", evs: tuple[float, ...] = EVS) -> torch.Tensor:
    """``(len(evs), 3, H, W)`` frames in [0, 1]: a scikit-image photo linearised, scaled by ``2**ev``, clipped
    at white and sRGB-encoded again (see :func:`loopexpose.synth.render_exposure`)."""
    import numpy as np
    import torch
    from skimage import data

    from loopexpose.synth import render_exposure, srgb_to_linear

    if photo not in PHOTOS:
        raise typer.BadParameter(f"choose one of {', '.join(PHOTOS)}", param_hint="--photo")
    pixels = getattr(data, photo)()
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    linear = srgb_to_linear(torch.from_numpy(pixels[:, :, :3].astype(np.float32) / 255).permute(2, 0, 1))
    return torch.stack([render_exposure(linear, ev) for ev in evs])


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-output"), "--out", "-o", help="Output folder."),
    photo: str = typer.Option("coffee", help=f"scikit-image photo: {', '.join(PHOTOS)}."),
    model: str = typer.Option("default", "--model", "-m", help="Bundled model name or .safetensors file."),
    preset: str = typer.Option("opencv", help="Preset of the plain Mertens fusion shown beside the LoopExpose MEF: "
                               "opencv (1,1,0) or mertens (1,1,1)."),
) -> None:
    """Render a bracket from a scikit-image photo, correct every frame, fuse, and write a comparison."""
    import numpy as np
    import torch

    from loopexpose import fusion
    from loopexpose.io import to_numpy, write_image
    from loopexpose.models import load
    from loopexpose.viz import comparison_sheet

    console = Console()
    frames = render_bracket(photo)
    corrector = load(model)
    started = time.perf_counter()
    corrected = torch.stack([corrector.correct(frame) for frame in frames])
    seconds = time.perf_counter() - started
    fused_inputs = fusion.fuse(frames, preset=preset).clamp(0, 1)
    fused_loop = fusion.loop_fuse(frames, corrected).clamp(0, 1)

    out.mkdir(parents=True, exist_ok=True)
    labels = [f"EV {ev:+g}" for ev in EVS]
    for ev, frame, fixed in zip(EVS, frames, corrected):
        tag = f"{'N' if ev < 0 else 'P'}{abs(ev):g}" if ev else "0"
        write_image(out / f"input_{tag}.png", to_numpy(frame))
        write_image(out / f"corrected_{tag}.png", to_numpy(fixed))
    write_image(out / "fused_inputs_mertens.png", to_numpy(fused_inputs))
    write_image(out / "fused_loopexpose.png", to_numpy(fused_loop))
    sheet = comparison_sheet(
        [
            ("Input bracket (rendered from scikit-image's '" + photo + "')", [to_numpy(f) for f in frames], labels),
            (f"Corrected by model '{model}', each frame on its own", [to_numpy(f) for f in corrected], labels),
            (
                "Fusion",
                [to_numpy(fused_inputs), to_numpy(fused_loop)],
                [f"Mertens ({preset}) of the inputs", "LoopExpose MEF (corrected + inputs)"],
            ),
        ]
    )
    write_image(out / "comparison.png", sheet.astype(np.float32) / 255)
    mean = lambda t: float(t.mean())  # noqa: E731
    console.print(f"corrected {len(frames)} frames of {frames.shape[-1]}x{frames.shape[-2]} in {seconds:.2f} s")
    console.print("mean level before: " + ", ".join(f"{mean(f):.2f}" for f in frames))
    console.print("mean level after:  " + ", ".join(f"{mean(f):.2f}" for f in corrected))
    console.print(f"wrote {out}/comparison.png and {2 * len(frames) + 2} images")
