"""``loopexpose fuse SCENE... -o OUT``: Mertens exposure fusion of folders of brackets, one output per scene."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from loopexpose.cli.app import app
from loopexpose.errors import LoopExposeError

FORMATS = ("png", "tif", "jpg")


def fuse_scene(
    scene: Path,
    target: Path,
    preset: str = "opencv",
    bits: int = 8,
    device: str = "cpu",
    max_side: int = 0,
    corrector: Callable | None = None,
) -> Path:
    """Load one scene's bracket (ordered by :mod:`loopexpose.io`), fuse it, and write ``target`` atomically.

    Args:
        scene: a folder of one bracket's frames.
        target: the output file (its suffix picks the format).
        preset: fusion preset, see :data:`loopexpose.fusion.PRESETS`.
        bits: 8 or 16 bits per sample in the output.
        device: torch device for the fusion (``"cpu"``, ``"cuda"``, ...).
        max_side: downscale frames so the long side is at most this (0: full size).
        corrector: an exposure-correction model (``(N, 3, H, W) -> (N, 3, H, W)``); with one, the result is the
            LoopExpose MEF (:func:`loopexpose.fusion.loop_fuse` of the inputs and the corrected frames) and
            ``preset`` is not used.

    Raises:
        LoopExposeError: the scene cannot be read or the output cannot be written.
    """
    from loopexpose import io
    from loopexpose.api import fuse as fuse_frames

    bracket = io.order_bracket(scene)
    frames = io.load_bracket(bracket, max_side=max_side).to(device)
    fused = fuse_frames(frames, model=corrector, preset=preset)  # plain Mertens, or the LoopExpose MEF
    icc = io.read_image(bracket.paths[0]).icc if bracket.paths else None  # frames of a bracket share a profile
    return io.write_image(target, io.to_numpy(fused), bits=bits, icc=icc)


@app.command()
def fuse(
    scenes: list[Path] = typer.Argument(..., help="Scene folders, or folders (collections) of scene folders."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: one OUT/<scene name>.<format> per scene."),
    preset: str = typer.Option(
        "opencv", help="Plain fusion's weights: 'opencv' (contrast, saturation; cv2.createMergeMertens defaults) or "
        "'mertens' (also well-exposedness, as in the paper). Not used with --correct.",
    ),  # fmt: skip
    out_bits: int = typer.Option(8, "--out-bits", help="Bits per sample: 8 or 16 (16: png or tif)."),
    format: str = typer.Option("png", "--format", help="Output format: png, tif or jpg."),
    max_side: int = typer.Option(0, help="Downscale frames so the long side is at most this (0: full size)."),
    device: str = typer.Option("cpu", help="cpu, cuda or auto."),
    overwrite: bool = typer.Option(True, help="Replace existing outputs (--no-overwrite skips those scenes)."),
    correct: bool = typer.Option(
        False, "--correct", help="Correct every frame with --model, then fuse the corrected frames with the inputs "
        "(the LoopExpose MEF result: tone from the corrected frames, detail from the inputs).",
    ),
    model: str = typer.Option("default", help="With --correct: bundled model name or a .safetensors checkpoint."),
) -> None:
    """Fuse exposure brackets with Mertens exposure fusion: one image per scene folder.

    Frames are ordered by loopexpose.io (EXIF, shutter_times.txt, file-name EV tags, else luminance).

    A scene that cannot be fused is reported in one line and skipped; the exit code is then 2.
    """
    from loopexpose import fusion
    from loopexpose.io import find_scenes

    if preset not in fusion.PRESETS:
        raise LoopExposeError(f"--preset must be one of {', '.join(sorted(fusion.PRESETS))}, got {preset!r}")
    if out_bits not in (8, 16):
        raise LoopExposeError(f"--out-bits must be 8 or 16, got {out_bits}")
    format = format.lower().lstrip(".")
    if format not in FORMATS:
        raise LoopExposeError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if out_bits == 16 and format == "jpg":
        raise LoopExposeError("--out-bits 16 needs --format png or tif (JPEG is 8-bit)")
    device = _device(device)
    corrector = None
    if correct:
        from loopexpose.models import load

        corrector = load(model, device).correct
    folders = [scene for path in scenes for scene in find_scenes(path)]
    _refuse_name_clashes(folders)

    console = Console(stderr=True)
    failed = written = skipped = 0
    with Progress(
        TextColumn("fusing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[scene]}"),
        console=console, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("fuse", total=len(folders), scene="")
        for folder in folders:
            progress.update(task, scene=escape(folder.name))
            target = out / f"{folder.name}.{format}"
            if target.exists() and not overwrite:
                skipped += 1
            else:
                try:
                    fuse_scene(
                        folder, target, preset=preset, bits=out_bits, device=device, max_side=max_side, corrector=corrector
                    )
                    written += 1
                except LoopExposeError as exc:
                    failed += 1
                    progress.console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            progress.advance(task)
    summary = f"fused {written} scene(s) into {out}" + (f", skipped {skipped} existing" if skipped else "")
    console.print(escape(summary) + (f", [bold red]{failed} failed[/]" if failed else ""), highlight=False)
    if failed:
        raise typer.Exit(2)


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LoopExposeError(f"--device must be cpu, cuda, cuda:N or auto, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LoopExposeError("--device cuda asked for, but torch sees no CUDA device")
    return name


def _refuse_name_clashes(folders: list[Path]) -> None:
    seen: dict[str, Path] = {}
    for folder in folders:
        if folder.name in seen and seen[folder.name] != folder:
            raise LoopExposeError(
                f"two scenes are named {folder.name!r} ({seen[folder.name]} and {folder}); their outputs would "
                "clash in OUT/<scene name>: fuse them into different --out folders"
            )
        seen[folder.name] = folder
