"""``loopexpose fuse SCENE... -o OUT``: Mertens exposure fusion of folders of brackets, one output per scene.

The same contract as ``loopexpose correct``: a scene that cannot be fused (a missing or empty folder, a bad
frame, an output that cannot be written: read-only folder, full disk, a folder in the output's place) is reported
in one line naming it and the problem, and the other scenes go on; a summary line follows, and the exit code is 2
when any scene failed. Outputs are written to a temporary file and renamed (never half-written, no temporary
file left), and never overwrite a frame of a scene. Ctrl-C says ``interrupted: N of M done`` and exits with 130.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from loopexpose.cli.app import MAX_PIXELS_HELP, app, print_error
from loopexpose.errors import LoopExposeError

FORMATS = ("png", "tif", "jpg")


@dataclass
class SceneJob:
    """One scene to fuse and where its result goes; ``error`` set when it cannot be fused at all."""

    label: str
    folder: Path | None = None
    target: Path | None = None
    error: str = ""


def fuse_scene(
    scene: Path,
    target: Path,
    preset: str = "opencv",
    bits: int = 8,
    device: str = "cpu",
    max_side: int = 0,
    corrector: Callable | None = None,
    deghost: bool = False,
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
        deghost: remove ghosts of moving objects (:func:`loopexpose.deghost.remove_ghosts`).

    Raises:
        LoopExposeError: the scene cannot be read or the output cannot be written.
    """
    from loopexpose import io
    from loopexpose.api import fuse as fuse_frames

    bracket = io.order_bracket(scene)
    inputs = {path.resolve() for path in bracket.paths}
    if target.resolve() in inputs:
        raise LoopExposeError(f"output {target} would overwrite a frame of the scene; choose another -o folder", scene)
    frames = io.load_bracket(bracket, max_side=max_side).to(device)
    fused = fuse_frames(frames, model=corrector, preset=preset, deghost=deghost)  # Mertens, or the LoopExpose MEF
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
    deghost: bool = typer.Option(
        False, "--deghost", help="Remove ghosts: what moved between the frames (people, leaves, water, cars) is "
        "taken from the frame nearest mid-grey instead of showing through semi-transparent. Frames must be aligned.",
    ),
    max_pixels: int = typer.Option(None, "--max-pixels", help=MAX_PIXELS_HELP, show_default=False),
) -> None:
    """Fuse exposure brackets with Mertens exposure fusion: one image per scene folder.

    Frames are ordered by loopexpose.io (EXIF, shutter_times.txt, file-name EV tags, else luminance).

    A scene that cannot be fused is reported in one line and the others go on; the exit code is then 2.
    Ctrl-C: "interrupted: N of M done", exit 130.
    """
    from loopexpose import fusion
    from loopexpose.io import set_max_pixels

    set_max_pixels(max_pixels)

    if preset not in fusion.PRESETS:
        raise LoopExposeError(f"--preset must be one of {', '.join(sorted(fusion.PRESETS))}, got {preset!r}")
    if out_bits not in (8, 16):
        raise LoopExposeError(f"--out-bits must be 8 or 16, got {out_bits}")
    format = format.lower().lstrip(".")
    if format not in FORMATS:
        raise LoopExposeError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if out_bits == 16 and format == "jpg":
        raise LoopExposeError("--out-bits 16 needs --format png or tif (JPEG is 8-bit)")
    if max_side < 0:
        raise LoopExposeError(f"--max-side must be >= 0, got {max_side}")
    if out.exists() and not out.is_dir():
        raise LoopExposeError("output folder is a file", out)
    device = _device(device)
    corrector = None
    if correct:
        from loopexpose.models import load

        corrector = load(model, device).correct
    jobs = plan_scenes(scenes, out, format)

    console = Console(stderr=True)
    counts = {"written": 0, "skipped": 0, "failed": 0}
    try:
        with Progress(
            TextColumn("fusing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[scene]}"), console=console, transient=True,
        ) as progress:  # fmt: skip
            task = progress.add_task("fuse", total=len(jobs), scene="")
            for job in jobs:
                progress.update(task, scene=escape(job.label))
                if not job.error and job.target.exists() and not job.target.is_dir() and not overwrite:
                    counts["skipped"] += 1
                else:
                    if not job.error:
                        try:
                            fuse_scene(job.folder, job.target, preset=preset, bits=out_bits, device=device,
                                       max_side=max_side, corrector=corrector, deghost=deghost)  # fmt: skip
                        except LoopExposeError as exc:
                            job.error = str(exc)
                        except OSError as exc:  # read-only folder, full disk, a folder in the output's place
                            job.error = f"{job.folder}: cannot write {job.target}: {exc.strerror or exc}"
                    if job.error:
                        counts["failed"] += 1
                        print_error(job.error, progress.console)
                    else:
                        counts["written"] += 1
                progress.advance(task)
    except KeyboardInterrupt:
        print_error(f"{sum(counts.values())} of {len(jobs)} done", console, label="interrupted")
        raise typer.Exit(130) from None
    finally:
        summary = f"fused {counts['written']} scene(s) into {out}"
        summary += f", skipped {counts['skipped']} existing" if counts["skipped"] else ""
        failed = f", [bold red]{counts['failed']} failed[/]" if counts["failed"] else ""
        console.print(escape(summary) + failed, highlight=False)
    if counts["failed"]:
        raise typer.Exit(2)


def plan_scenes(paths: list[Path], out: Path, format: str) -> list[SceneJob]:
    """One job per scene found under ``paths`` (:func:`loopexpose.io.find_scenes`), each with its output
    ``OUT/<scene name>.<format>``; a path that holds no scene, or a scene whose output another scene already
    claims, becomes a job with an error (the others go on)."""
    from loopexpose.io import find_scenes

    jobs: list[SceneJob] = []
    claimed: dict[Path, Path] = {}
    seen: set[Path] = set()
    for path in paths:
        try:
            folders = find_scenes(path)
        except LoopExposeError as exc:
            jobs.append(SceneJob(label=str(path), error=str(exc)))
            continue
        except OSError as exc:  # e.g. a folder that cannot be listed
            jobs.append(SceneJob(label=str(path), error=f"{path}: {exc.strerror or exc}"))
            continue
        for folder in folders:
            if folder.resolve() in seen:
                continue
            seen.add(folder.resolve())
            target = out / f"{folder.name}.{format}"
            job = SceneJob(label=folder.name, folder=folder, target=target)
            if target in claimed:
                job.error = (f"{folder}: output {target} is also the output of {claimed[target]} (two scenes named "
                             f"{folder.name!r}); fuse them into different --out folders")  # fmt: skip
            elif target.is_dir():
                job.error = f"{folder}: output {target} is a folder"
            else:
                claimed[target] = folder
            jobs.append(job)
    return jobs


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

