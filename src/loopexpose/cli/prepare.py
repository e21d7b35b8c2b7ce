"""``loopexpose prepare raw|srgb|msec``: make training brackets (scene folders of EV-tagged frames).

Each subcommand writes one scene folder per input under ``OUT`` (a collection the trainer reads through
``data.roots``), skips scenes whose sidecar says complete (so an interrupted batch resumes), runs files in a
process pool, reports each bad file in one line and carries on, and exits 1 at the end if any file failed.
Ctrl-C lets the scenes being rendered finish, says ``interrupted: N of M done`` and exits with 130 (run the same
command again to resume).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from loopexpose.cli.app import MAX_PIXELS_HELP, app, print_error
from loopexpose.errors import LoopExposeError

prepare_app = typer.Typer(
    help="Make training brackets from RAW files, ordinary photos, or the MSEC dataset (see docs/data.md).",
    no_args_is_help=True,
)
app.add_typer(prepare_app, name="prepare")

# `--ev -1.5 -1 0 1 1.5`: click options take one value each, so the words after the first are collected from the
# extra arguments (numbers only; anything else is still an error).
_EXTRA_EVS = {"allow_extra_args": True, "ignore_unknown_options": True}
_DEFAULT_WORKERS = min(2, os.cpu_count() or 1)

# Options shared by `prepare raw` and `prepare srgb`.
Evs = Annotated[list[str] | None, typer.Option(
    "--ev", help="EV offsets in stops: --ev -1.5 -1 0 1 1.5 (or --ev=-1.5,-1,0,1,1.5). Put the input folder first."
)]  # fmt: skip
Preset = Annotated[str | None, typer.Option(
    "--preset", help="EV preset: msec (-1.5 -1 0 1 1.5) or radiometry (-3..+3 in 1 EV steps). Default: msec."
)]  # fmt: skip
Noise = Annotated[bool, typer.Option("--noise", help="Add shot + read noise that grows as exposure drops.")]
FullWell = Annotated[float, typer.Option("--full-well", help="Noise model: electrons at the white level.")]
ReadNoise = Annotated[float, typer.Option("--read-noise", help="Noise model: read noise in electrons.")]
Seed = Annotated[int, typer.Option("--seed", help="Noise seed (combined with each file name).")]
MaxSide = Annotated[int, typer.Option("--max-side", help="Downscale so the long side is at most this (0: keep).")]
Workers = Annotated[int, typer.Option("--workers", "-w", help="Parallel processes.")]


def _evs(ctx: typer.Context, ev: list[str] | None, preset: str | None) -> list[float]:
    words = list(ev or [])
    for word in ctx.args:
        try:
            float(word.replace(",", " ").split()[0])
        except (ValueError, IndexError):
            raise LoopExposeError(f"unexpected argument {word!r}") from None
        words.append(word)
    if not words and not preset:
        preset = "msec"
    from loopexpose import synth

    return synth.parse_evs(words, preset)


def _noise(noise: bool, full_well: float, read_noise: float) -> dict | None:
    if not noise:
        return None
    if full_well <= 0 or read_noise < 0:
        raise LoopExposeError(f"need --full-well > 0 and --read-noise >= 0, got {full_well} and {read_noise}")
    return {"full_well": float(full_well), "read_noise": float(read_noise)}


def _init_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it lets running scenes end
    import torch

    torch.set_num_threads(1)  # the pool already uses every worker; more threads per process only contend


def run_jobs(jobs: list[tuple], worker, workers: int, label: str) -> list[synth.SceneResult]:
    """Run ``worker(*job)`` for every job (in a process pool when ``workers > 1``) under a progress bar; print one
    line per failure as it happens."""
    console = Console(stderr=True)
    results: list[synth.SceneResult] = []
    columns = (TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(label, total=len(jobs))

            def record(result: synth.SceneResult) -> None:
                results.append(result)
                if result.status == "failed":
                    print_error(result.message, progress.console, label="failed")
                progress.advance(task)

            if workers <= 1 or len(jobs) <= 1:
                for job in jobs:
                    record(worker(*job))
            else:
                context = multiprocessing.get_context("spawn")  # fork after torch threads start can deadlock
                pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context, initializer=_init_worker)
                try:
                    for future in as_completed([pool.submit(worker, *job) for job in jobs]):
                        record(future.result())
                finally:
                    pool.shutdown(wait=True, cancel_futures=True)
    except KeyboardInterrupt:
        print_error(f"{len(results)} of {len(jobs)} done (run the same command again to resume)", console,
                    label="interrupted")  # fmt: skip
        raise typer.Exit(130) from None
    return results


def _finish(results: list[synth.SceneResult], out: Path) -> None:
    counts = {status: sum(r.status == status for r in results) for status in ("done", "skipped", "failed")}
    Console(stderr=True).print(
        escape(f"{counts['done']} scene(s) written, {counts['skipped']} already complete, {counts['failed']} failed "
               f"-> {out}"),
        highlight=False,
    )  # fmt: skip
    if counts["failed"]:
        raise typer.Exit(1)


def _check_workers(workers: int) -> int:
    if workers < 1:
        raise LoopExposeError(f"--workers must be >= 1, got {workers}")
    return workers


def _render_all(sources: list[Path], out: Path, settings, render, workers: int, label: str) -> None:
    """One scene folder per source under ``out``, rendered by ``render`` in a process pool."""
    from loopexpose import synth

    names = synth.scene_names(sources)
    jobs = [(path, out / names[path], settings) for path in sources]
    _finish(run_jobs(jobs, render, _check_workers(workers), label), out)


@prepare_app.command("raw", context_settings=_EXTRA_EVS)
def prepare_raw(
    ctx: typer.Context,
    raw_dir: Path = typer.Argument(..., help="Folder of camera RAW files (or one RAW file)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output collection folder (one scene folder per RAW)."),
    ev: Evs = None,
    preset: Preset = None,
    curve: str = typer.Option("srgb", "--curve", help="Tone curve: srgb (IEC 61966-2-1) or bt709 (rawpy's default)."),
    fmt: str = typer.Option("png", "--format", help="Frame format: png, jpg or tif."),
    bits: int = typer.Option(8, "--bits", help="8 or 16 (16: png or tif)."),
    quality: int = typer.Option(95, "--quality", help="JPEG quality when --format jpg."),
    max_side: MaxSide = 0,
    half_size: bool = typer.Option(False, "--half-size", help="LibRaw half-size decode: 2x smaller, much faster."),
    noise: Noise = False,
    full_well: FullWell = 2000.0,
    read_noise: ReadNoise = 3.0,
    seed: Seed = 0,
    workers: Workers = _DEFAULT_WORKERS,
) -> None:
    """Render exposure brackets from camera RAW files: linear decode, x 2^EV, clip at white, sRGB."""
    from loopexpose import synth

    settings = synth.RenderSettings(
        evs=_evs(ctx, ev, preset),
        curve=curve,
        format=fmt.lower().lstrip("."),
        bits=bits,
        quality=quality,
        max_side=max_side,
        half_size=half_size,
        noise=_noise(noise, full_well, read_noise),
        seed=seed,
    )
    synth.require_rawpy()  # fail early, once, when the extra is missing
    sources = synth.list_raws(raw_dir)
    if not sources:
        raise LoopExposeError(f"no RAW files found (looked for {', '.join(sorted(synth.RAW_SUFFIXES))})", raw_dir)
    _render_all(sources, out, settings, synth.prepare_raw_scene, workers, "prepare raw")


@prepare_app.command("srgb", context_settings=_EXTRA_EVS)
def prepare_srgb(
    ctx: typer.Context,
    photo_dir: Path = typer.Argument(..., help="Folder of ordinary photos (JPEG, PNG, TIFF)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output collection folder (one scene folder per photo)."),
    ev: Evs = None,
    preset: Preset = None,
    curve: str = typer.Option("srgb", "--curve", help="Tone curve: srgb or bt709."),
    jpeg: int = typer.Option(0, "--jpeg", help="Degradation: write frames as JPEG at this quality (0: lossless PNG)."),
    noise: Noise = False,
    full_well: FullWell = 2000.0,
    read_noise: ReadNoise = 3.0,
    seed: Seed = 0,
    max_side: MaxSide = 0,
    workers: Workers = _DEFAULT_WORKERS,
    max_pixels: int = typer.Option(None, "--max-pixels", help=MAX_PIXELS_HELP, show_default=False),
) -> None:
    """Render SYNTHETIC brackets from ordinary sRGB photos: inverse sRGB, x 2^EV, clip, re-encode."""
    from loopexpose import synth
    from loopexpose.brackets import list_images
    from loopexpose.io import RAW_SUFFIXES, set_max_pixels

    set_max_pixels(max_pixels)
    if jpeg < 0 or jpeg > 100:
        raise LoopExposeError(f"--jpeg must be a quality 1..100 (or 0 for PNG), got {jpeg}")
    settings = synth.RenderSettings(
        evs=_evs(ctx, ev, preset),
        curve=curve,
        format="jpg" if jpeg else "png",
        quality=jpeg or 95,
        max_side=max_side,
        noise=_noise(noise, full_well, read_noise),
        seed=seed,
    )
    sources = [p for p in list_images(photo_dir) if p.suffix.lower() not in RAW_SUFFIXES]  # RAWs: `prepare raw`
    if not sources:
        raise LoopExposeError("no photos found (expected .jpg, .png or .tif files)", photo_dir)
    _render_all(sources, out, settings, synth.prepare_srgb_scene, workers, "prepare srgb")


@prepare_app.command("msec")
def prepare_msec(
    msec_root: Path = typer.Argument(..., help="MSEC folder (holding INPUT_IMAGES/, or training/, testing/, ...)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: OUT/<split>/<image>/ scene folders."),
    link: str = typer.Option("copy", "--link", help="copy, hardlink (saves space) or symlink."),
    workers: int = typer.Option(1, "--workers", "-w", help="Parallel processes (file copying is I/O bound)."),
) -> None:
    """Regroup MSEC (INPUT_IMAGES/<name>_N1.5.JPG .., GT_IMAGES/) into scene folders with ground truth beside."""
    from loopexpose import synth

    if link not in ("copy", "hardlink", "symlink"):
        raise LoopExposeError(f"--link must be copy, hardlink or symlink, got {link!r}")
    scenes = synth.find_msec_scenes(msec_root)
    if not scenes:
        raise LoopExposeError("no images in INPUT_IMAGES/", msec_root)
    jobs = [(scene, out / scene.split / scene.name, link) for scene in scenes]
    _finish(run_jobs(jobs, synth.prepare_msec_scene, _check_workers(workers), "prepare msec"), out)
