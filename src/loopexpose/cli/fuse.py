"""``loopexpose fuse SCENE... -o OUT``: Mertens exposure fusion of folders of brackets, one output per scene.

The same contract as ``loopexpose correct``: a scene that cannot be fused (a missing or empty folder, a bad
frame, an output that cannot be written: read-only folder, full disk, a folder in the output's place) is reported
in one line naming it and the problem, and the other scenes go on; a summary line follows, and the exit code is 2
when any scene failed. Outputs are written to a temporary file and renamed (never half-written, no temporary
file left), and never overwrite a frame of a scene. Ctrl-C says ``interrupted: N of M done`` and exits with 130.

With ``--group auto`` each folder is a flat folder of shots split into brackets
(:func:`loopexpose.brackets.group_brackets`): the groups are listed first, every bracket is fused as one scene
into ``OUT/<its first frame's name>.<format>``, single shots are counted and not fused, unreadable files are
skipped with a warning, and a group whose frames differ in size fails alone.

``--align`` registers handheld frames first (:mod:`loopexpose.brackets.align`) and prints every frame's estimated
motion per scene; a frame that cannot be aligned is left out of that scene's fusion with a warning line.
``--deghost`` on a bracket whose frames are shifted as a whole (hand-held, not aligned) warns in one line that it
looks misaligned and suggests ``--align`` (:class:`loopexpose.deghost.MisalignmentWarning`): deghosting would
otherwise take most of those frames from the reference.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from loopexpose.cli.app import MAX_PIXELS_HELP, app, print_error
from loopexpose.cli.scenes import GROUP_HELP, MAX_GAP_HELP, check_grouping, group_folders, print_grouping, print_skipped
from loopexpose.errors import LoopExposeError

if TYPE_CHECKING:
    from loopexpose.brackets.align import Alignment

FORMATS = ("png", "tif", "jpg")


@dataclass
class SceneJob:
    """One scene to fuse and where its result goes; ``error`` set when it cannot be fused at all; ``paths`` the
    frames of a group (``--group auto``), ``None`` for every image of ``folder``."""

    label: str
    folder: Path | None = None
    target: Path | None = None
    error: str = ""
    paths: list[Path] | None = None


def fuse_scene(
    scene: Path,
    target: Path,
    preset: str = "opencv",
    bits: int | None = None,
    device: str = "cpu",
    max_side: int = 0,
    corrector: Callable | None = None,
    paths: list[Path] | None = None,
    align: bool = False,
    deghost: bool = False,
) -> tuple[Path, Alignment | None]:
    """Load one scene's bracket (ordered by :mod:`loopexpose.brackets`), fuse it, and write ``target`` atomically.

    Args:
        scene: a folder of one bracket's frames.
        target: the output file (its suffix picks the format).
        preset: fusion preset, see :data:`loopexpose.fusion.PRESETS`.
        bits: 8 or 16 bits per sample in the output; ``None``: 16 for a RAW bracket written as PNG or TIFF, else 8.
        device: torch device for the fusion (``"cpu"``, ``"cuda"``, ...).
        max_side: downscale frames so the long side is at most this (0: full size).
        corrector: an exposure-correction model (``(N, 3, H, W) -> (N, 3, H, W)``); with one, the result is the
            LoopExpose MEF (:func:`loopexpose.fusion.loop_fuse` of the inputs and the corrected frames) and
            ``preset`` is not used.
        paths: the frames to fuse (a group found by ``--group auto``); default: every image in ``scene``.
        align: register the frames first (:func:`loopexpose.brackets.align.align_frames`); the output is cropped
            to the region every frame covers, and frames that cannot be aligned are left out
            (:class:`~loopexpose.brackets.align.AlignmentWarning`).
        deghost: remove ghosts of moving objects (:func:`loopexpose.deghost.remove_ghosts`), after ``align``.

    Returns:
        ``(target, alignment)``; ``alignment`` is ``None`` without ``align``.

    Raises:
        LoopExposeError: the scene cannot be read or the output cannot be written.
    """
    from loopexpose import io
    from loopexpose.api import fuse as fuse_frames
    from loopexpose.brackets import list_images, read_bracket

    paths = list(paths) if paths is not None else list_images(scene)  # listed once, checked, then read
    if target.resolve() in {path.resolve() for path in paths}:
        raise LoopExposeError(f"output {target} would overwrite a frame of the scene; choose another -o folder", scene)
    bracket, frames = read_bracket(scene, paths, max_side=max_side)  # ordered and loaded, each frame decoded once
    alignment = None
    if align:
        from loopexpose.brackets.align import align_frames

        alignment = align_frames(frames, names=[path.name for path in bracket.paths])
        frames = alignment.frames
    # Mertens or LoopExpose MEF; the frames are ours, so deghosting may write over them instead of copying them
    fused = fuse_frames(frames.to(device), model=corrector, preset=preset, deghost=deghost, overwrite_frames=True)
    raw = bracket.paths[0].suffix.lower() in io.RAW_SUFFIXES  # a bracket is all RAW or none (order_bracket)
    if bits is None:
        bits = 16 if raw and target.suffix.lower() in {".png", ".tif", ".tiff"} else 8
    # frames of a bracket share a profile; RAW frames are rendered to sRGB and carry none
    icc = io.read_icc(bracket.paths[0]) if bracket.paths and not raw else None
    return io.write_image(target, io.to_numpy(fused), bits=bits, icc=icc), alignment


@app.command()
def fuse(
    scenes: list[Path] = typer.Argument(..., help="Scene folders, or folders (collections) of scene folders."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: one OUT/<scene name>.<format> per scene."),
    preset: str = typer.Option(
        "opencv", help="Plain fusion's weights: 'opencv' (contrast, saturation; cv2.createMergeMertens defaults) or "
        "'mertens' (also well-exposedness, as in the paper). Not used with --correct.",
    ),  # fmt: skip
    out_bits: int = typer.Option(
        None, "--out-bits", help="Bits per sample: 8 or 16 (16: png or tif). Default: 16 for RAW brackets "
        "written as png or tif, else 8.", show_default=False,
    ),  # fmt: skip
    format: str = typer.Option("png", "--format", help="Output format: png, tif or jpg."),
    max_side: int = typer.Option(0, help="Downscale frames so the long side is at most this (0: full size)."),
    device: str = typer.Option("cpu", help="cpu, cuda or auto."),
    overwrite: bool = typer.Option(True, help="Replace existing outputs (--no-overwrite skips those scenes)."),
    correct: bool = typer.Option(
        False, "--correct", help="Correct every frame with --model, then fuse the corrected frames with the inputs "
        "(the LoopExpose MEF result: tone from the corrected frames, detail from the inputs).",
    ),
    model: str = typer.Option("default", help="With --correct: bundled model name or a .safetensors checkpoint."),
    group: str = typer.Option("folder", "--group", help=GROUP_HELP + " With auto, each bracket is written to "
                              "OUT/<its first frame's name>.<format>."),
    max_gap: float = typer.Option(2.0, "--max-gap", min=0.0, help=MAX_GAP_HELP),
    deghost: bool = typer.Option(
        False, "--deghost", help="Remove ghosts: what moved between the frames (people, leaves, water, cars) is "
        "taken from the frame nearest mid-grey instead of showing through semi-transparent. Frames must be aligned "
        "(a bracket that looks misaligned gets a warning: add --align).",
    ),
    max_pixels: int = typer.Option(None, "--max-pixels", help=MAX_PIXELS_HELP, show_default=False),
    align: bool = typer.Option(
        False, "--align", help="Register handheld frames to the one nearest mid-grey first (exposure-invariant: "
        "median-threshold bitmaps and ECC, then the camera's rotation from SIFT features), crop the borders to the "
        "region all frames cover, and print each frame's motion. A frame that cannot be aligned is left out with a "
        "warning.",
    ),
) -> None:
    """Fuse exposure brackets with Mertens exposure fusion: one image per scene folder.

    Frames are ordered by loopexpose.brackets (EXIF, shutter_times.txt, file-name EV tags, else luminance).
    With --group auto, a flat folder of many shots is first split into brackets (see `loopexpose scenes`). Camera
    RAW brackets (rawpy, the raw extra) are rendered with one white balance and the sRGB curve, and written 16-bit.

    A scene that cannot be fused is reported in one line and the others go on; the exit code is then 2.
    Ctrl-C: "interrupted: N of M done", exit 130.
    """
    from loopexpose import fusion
    from loopexpose.brackets.align import AlignmentWarning
    from loopexpose.deghost import MisalignmentWarning
    from loopexpose.io import set_max_pixels

    set_max_pixels(max_pixels)
    check_grouping(group)

    if preset not in fusion.PRESETS:
        raise LoopExposeError(f"--preset must be one of {', '.join(sorted(fusion.PRESETS))}, got {preset!r}")
    if out_bits not in (None, 8, 16):
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
    console = Console(stderr=True)
    singles = 0
    if group == "auto":
        jobs, singles = plan_groups(scenes, out, format, console, max_gap)
    else:
        jobs = plan_scenes(scenes, out, format)

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
                            with warnings.catch_warnings(record=True) as caught:
                                warnings.simplefilter("always")
                                _, alignment = fuse_scene(job.folder, job.target, preset=preset, bits=out_bits,
                                                          device=device, max_side=max_side, corrector=corrector,
                                                          align=align, deghost=deghost, paths=job.paths)  # fmt: skip
                            for warning in caught:  # frames left out (named by file), a misaligned bracket
                                # (both named by folder); frames resized (by path)
                                of_scene = issubclass(warning.category, (AlignmentWarning, MisalignmentWarning))
                                message = f"{job.folder}: {warning.message}" if of_scene else warning.message
                                print_error(message, progress.console, label="warning")
                            if alignment is not None:
                                progress.console.print(motion_table(job.label, alignment))
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
        summary = f"fused {counts['written']} {'bracket' if group == 'auto' else 'scene'}(s) into {out}"
        summary += f", skipped {counts['skipped']} existing" if counts["skipped"] else ""
        summary += f", {singles} single shot(s) not fused" if singles else ""
        failed = f", [bold red]{counts['failed']} failed[/]" if counts["failed"] else ""
        console.print(escape(summary) + failed, highlight=False)
    if counts["failed"]:
        raise typer.Exit(2)


def motion_table(scene: str, alignment: Alignment) -> Table:
    """Every frame's estimated motion (:class:`~loopexpose.brackets.align.Motion`) as a table titled by the scene."""
    x, y, width, height = alignment.crop
    table = Table(title=f"{scene}: aligned to {alignment.motions[alignment.reference].name}, cropped to "
                  f"{width}x{height} at ({x}, {y})", title_justify="left")  # fmt: skip
    for column in ("frame", "dx px", "dy px", "rotation deg", "model", "correlation"):
        table.add_column(column, justify="left" if column in ("frame", "model") else "right")
    for motion in alignment.motions:
        name = escape(motion.name)
        if motion.model == "reference":
            table.add_row(name, "0", "0", "0", "reference", "")
        elif not motion.aligned:
            table.add_row(name, "", "", "", f"[red]left out: {escape(motion.problem)}[/]", f"{motion.correlation:.3f}")
        else:
            model = f"{motion.model} via {escape(motion.via)}" if motion.via else motion.model
            table.add_row(name, f"{motion.dx:+.2f}", f"{motion.dy:+.2f}", f"{motion.rotation:+.2f}", model,
                          f"{motion.correlation:.3f}")  # fmt: skip
    return table


def plan_scenes(paths: list[Path], out: Path, format: str) -> list[SceneJob]:
    """One job per scene found under ``paths`` (:func:`loopexpose.brackets.find_scenes`), each with its output
    ``OUT/<scene name>.<format>``; a path that holds no scene, or a scene whose output another scene already
    claims, becomes a job with an error (the others go on)."""
    jobs: list[SceneJob] = []
    claimed: dict[Path, Path] = {}
    for folder in _find_folders(paths):
        if isinstance(folder, SceneJob):
            jobs.append(folder)
            continue
        job = SceneJob(label=folder.name, folder=folder, target=out / f"{folder.name}.{format}")
        jobs.append(_claim(job, folder, claimed))
    return jobs


def plan_groups(
    paths: list[Path], out: Path, format: str, console: Console, max_gap: float
) -> tuple[list[SceneJob], int]:
    """``--group auto``: one job per bracket found in the folders under ``paths``
    (:func:`loopexpose.brackets.group_brackets`), each with its output ``OUT/<first frame's name>.<format>``,
    and the number of single shots (not fused). The groups of each folder and every file skipped are printed on
    ``console`` first; a folder that cannot be grouped, and a group that cannot be fused (frames of different
    sizes), become jobs with an error (the others go on)."""
    found = _find_folders(paths)
    groupings = iter(group_folders([item for item in found if isinstance(item, Path)], console, max_gap))
    jobs: list[SceneJob] = []
    claimed: dict[Path, Path] = {}
    singles = 0
    for item in found:
        if isinstance(item, SceneJob):  # a path that holds no images
            jobs.append(item)
            continue
        grouping = next(groupings)
        if isinstance(grouping, LoopExposeError):
            jobs.append(SceneJob(label=item.name, error=str(grouping)))
            continue
        print_skipped(grouping, console)
        print_grouping(console, grouping, files=False)
        singles += len(grouping.singles)
        for group in grouping.brackets:
            job = SceneJob(label=group.name, folder=grouping.folder, target=out / f"{group.name}.{format}",
                           paths=group.paths)  # fmt: skip
            if group.error:
                job.error = f"{group.paths[0]}: group {group.name} ({len(group)} frames): {group.error}"
            jobs.append(_claim(job, group.paths[0], claimed))
    return jobs, singles


def _find_folders(paths: list[Path]) -> list[Path | SceneJob]:
    """The scene folders under ``paths`` in order (:func:`loopexpose.brackets.find_scenes`, each once), with a
    job holding the error in the place of every path that holds none."""
    from loopexpose.brackets import find_scenes

    found: list[Path | SceneJob] = []
    seen: set[Path] = set()
    for path in paths:
        try:
            folders = find_scenes(path)
        except LoopExposeError as exc:
            found.append(SceneJob(label=str(path), error=str(exc)))
            continue
        except OSError as exc:  # e.g. a folder that cannot be listed
            found.append(SceneJob(label=str(path), error=f"{path}: {exc.strerror or exc}"))
            continue
        for folder in folders:
            if folder.resolve() not in seen:
                seen.add(folder.resolve())
                found.append(folder)
    return found


def _claim(job: SceneJob, source: Path, claimed: dict[Path, Path]) -> SceneJob:
    """Give ``job`` its target unless another job already writes there or a folder is in its place."""
    if job.error:
        return job
    if job.target in claimed:
        job.error = (f"{source}: output {job.target} is also the output of {claimed[job.target]} (two scenes named "
                     f"{job.label!r}); fuse them into different --out folders")  # fmt: skip
    elif job.target.is_dir():
        job.error = f"{source}: output {job.target} is a folder"
    else:
        claimed[job.target] = source
    return job


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

