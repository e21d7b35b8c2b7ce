"""``loopexpose correct PATH... -o OUTDIR``: correct photos at full resolution with a LoopExpose model.

Inputs are files, folders (``--recursive`` descends into subfolders) and glob patterns (expanded here too, so a
quoted ``"shots/*.jpg"`` works). Each input ``a/b/photo.jpg`` becomes ``OUTDIR/photo_loopexpose.jpg``; files
found in a folder keep their path relative to it (``OUTDIR/<sub/folders>/photo_loopexpose.<ext>``). An output
is never an input: such a file, or two inputs that would write the same output, fail with a one-line error.

EXIF (orientation reset, pixels written upright) and the ICC profile are kept; 16-bit files give 16-bit
outputs unless ``--out-bits 8``. Camera RAW files (rawpy, the ``raw`` extra) are rendered by
:mod:`loopexpose.raw` (camera white balance, sRGB curve, 16 bits), corrected, and written as 16-bit TIFF with
``--format same`` (16-bit PNG with ``--format png``, 8-bit JPEG with ``--format jpg``), with their exposure EXIF. A file that cannot be read or written is reported in one line and the batch
goes on; the exit code is 2 when any file failed, else 0. Images above ``--max-pixels`` are refused from their
header. Ctrl-C stops the batch after the files being corrected (each written whole or not at all), says
``interrupted: N of M done`` and exits with 130.

Estimated exposure (``--json``, :func:`loopexpose.io.estimate_exposure`, as the web demo shows it): on a
256-pixel thumbnail, ``mean_luma`` is the mean Rec. 601 luma of the sRGB values in ``[0, 1]``, and ``ev`` is
``log2(mean linear luminance / linear mid-grey)``, with linear values ``v ** 2.2`` (Rec. 709 weights) and
mid-grey ``118 / 255``: 0 is a frame as bright as mid-grey on average, -1 one stop darker. ``ev_change`` is
after minus before.
"""

from __future__ import annotations

import glob
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from loopexpose.cli.app import MAX_PIXELS_HELP, app, print_error
from loopexpose.errors import LoopExposeError

FORMATS = ("same", "jpg", "png", "tif")
SUFFIX = "_loopexpose"
_GLOB_CHARS = set("*?[")


@dataclass
class Job:
    """One input file and where its result goes (``error`` set when it cannot be processed at all)."""

    source: Path
    target: Path | None = None
    error: str = ""
    result: dict = field(default_factory=dict)


def expand_inputs(paths: list[str], recursive: bool = False, exclude: Path | None = None) -> list[Job]:
    """Files to correct from files, folders and glob patterns, in order, without duplicates.

    Each job's ``result["relative"]`` is the path its output mirrors: the file name for files and glob
    matches, the path below the folder for files found in a folder. Files under ``exclude`` (the output
    folder) are skipped when scanning folders. A path that matches nothing becomes a job with an error.
    """
    from loopexpose.io import INPUT_SUFFIXES

    jobs: list[Job] = []
    seen: set[Path] = set()
    excluded = exclude.resolve() if exclude is not None else None

    def add(path: Path, relative: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            jobs.append(Job(source=path, result={"relative": relative}))

    for text in paths:
        path = Path(text)
        if path.is_dir():
            # an output folder inside the scanned folder holds earlier results: leave them out
            inner = excluded if excluded is not None and path.resolve() in excluded.parents else None
            walker = path.rglob("*") if recursive else path.iterdir()
            found = []
            for candidate in walker:
                relative = candidate.relative_to(path)
                if any(part.startswith(".") for part in relative.parts) or not candidate.is_file():
                    continue
                if candidate.suffix.lower() not in INPUT_SUFFIXES:
                    continue
                if inner is not None and inner in candidate.resolve().parents:
                    continue
                found.append((candidate, relative))
            for candidate, relative in sorted(found, key=lambda item: str(item[1])):
                add(candidate, relative)
        elif path.exists():
            add(path, Path(path.name))
        elif _GLOB_CHARS & set(text):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True) if Path(m).is_file())
            if not matches:
                jobs.append(Job(source=path, error=f"{text}: no files match this pattern"))
            for match in matches:
                add(match, Path(match.name))
        else:
            jobs.append(Job(source=path, error=f"{text}: no such file or folder"))
    return jobs


RAW_SAME_FORMAT = ".tif"
"""What ``--format same`` writes for a RAW input (a 16-bit TIFF, as raw converters hand photos to editors)."""


def output_path(relative: Path, out_dir: Path, format: str) -> Path:
    """``OUTDIR/<relative folders>/<stem>_loopexpose.<ext>``, ``ext`` from ``format`` or the input's suffix
    (:data:`RAW_SAME_FORMAT` for a RAW input).

    >>> output_path(Path("a/IMG_1.CR2"), Path("out"), "same").as_posix()
    'out/a/IMG_1_loopexpose.tif'
    """
    from loopexpose.io import RAW_SUFFIXES

    suffix = relative.suffix.lower() if format == "same" else f".{format}"
    suffix = RAW_SAME_FORMAT if suffix in RAW_SUFFIXES else suffix
    return out_dir / relative.parent / f"{relative.stem}{SUFFIX}{suffix}"


def plan_outputs(jobs: list[Job], out_dir: Path, format: str) -> None:
    """Give every job its target; refuse targets that are an input file or another job's target."""
    inputs = {job.source.resolve() for job in jobs if not job.error}
    claimed: dict[Path, Path] = {}
    for job in jobs:
        if job.error:
            continue
        target = output_path(job.result["relative"], out_dir, format)
        key = target.resolve()
        if key in inputs:
            job.error = f"{job.source}: output {target} would overwrite an input file; choose another -o folder"
        elif key in claimed:
            job.error = f"{job.source}: output {target} would also be written for {claimed[key]}; rename one of them"
        else:
            claimed[key] = job.source
            job.target = target


def exposure_estimate(pixels) -> dict:
    """``{"mean_luma", "ev"}`` of ``(H, W, 3)`` uint8/uint16/float pixels (:func:`loopexpose.io.estimate_exposure`)."""
    from loopexpose.io import estimate_exposure

    mean_luma, ev = estimate_exposure(pixels)
    return {"mean_luma": mean_luma, "ev": ev}


def correct_file(model, source: Path, target: Path, bits: int | None, max_side: int, quality: int) -> dict:
    """Read ``source``, correct it with ``model`` (from its integer samples), write ``target`` atomically.

    Args:
        bits: 8 or 16 bits per output sample; ``None``: the input's depth (8 for JPEG outputs).
    Returns:
        ``{"width", "height", "bits_in", "bits_out", "exposure_before", "exposure_after"}``.
    """
    import numpy as np

    from loopexpose import io

    # The file's own samples (uint8, uint16, or float32 for float TIFFs), upright, as read_image decodes them but
    # without its float32 copy: the model's LUT path is exact and fastest on integers, 16-bit precision
    # survives, and a 50 MP photo saves 600 MB.
    samples, bit_depth, exif, icc = io._decode(Path(source))
    if samples.dtype not in (np.uint8, np.uint16):
        samples = (np.clip(samples, 0, 1) * np.float32(65535) + np.float32(0.5)).astype(np.uint16)
    corrected = model.correct(samples, max_side=max_side)
    if bits is None:
        bits = 8 if target.suffix.lower() in {".jpg", ".jpeg"} else bit_depth
    io.write_image(target, corrected, bits=bits, exif=exif, icc=icc, quality=quality)
    return {
        "width": int(corrected.shape[1]),
        "height": int(corrected.shape[0]),
        "bits_in": bit_depth,
        "bits_out": bits,
        "exposure_before": exposure_estimate(samples),
        "exposure_after": exposure_estimate(corrected),
    }


@app.command()
def correct(
    paths: list[str] = typer.Argument(..., help="Image files, folders and glob patterns."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: OUT/<name>_loopexpose.<ext> per input."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into subfolders (mirrored in OUT)."),
    model: str = typer.Option("default", help="Bundled model name ('default') or a .safetensors checkpoint."),
    device: str = typer.Option("auto", help="cpu, cuda (cuda:N) or auto (CUDA when available)."),
    max_side: int = typer.Option(0, "--max-side", help="Downscale so the long side is at most N (0: full resolution)."),
    out_bits: int = typer.Option(
        None, "--out-bits", help="8 or 16 bits per sample (default: the input's depth; 16 for RAW; 8 for jpg)."
    ),
    format: str = typer.Option(
        "same", "--format", help="Output format: jpg, png, tif or same (as the input; tif for RAW input)."
    ),
    quality: int = typer.Option(95, help="JPEG quality, 1..100."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Leave inputs whose output already exists."),
    workers: int = typer.Option(1, help="Files corrected at once (threads; each photo already uses 2 threads)."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable summary on stdout."),
    max_pixels: int = typer.Option(None, "--max-pixels", help=MAX_PIXELS_HELP, show_default=False),
    segmenter_weights: Path = typer.Option(
        None, "--segmenter-weights", help="Semantic model: region masks from local FastSAM weights (.pt, read by "
        "ultralytics) instead of its built-in superpixels. Never downloaded.",
    ),
) -> None:
    """Correct the exposure of photos at full resolution with a LoopExpose model.

    EXIF and ICC profiles are kept and inputs are never overwritten. A file that fails is reported in one line
    and the others are still processed; the exit code is then 2. Ctrl-C: "interrupted: N of M done", exit 130.
    """
    from loopexpose.io import set_max_pixels
    from loopexpose.models import load, resolve_device

    set_max_pixels(max_pixels)

    format = format.lower().lstrip(".")
    format = "jpg" if format == "jpeg" else "tif" if format == "tiff" else format
    if format not in FORMATS:
        raise LoopExposeError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if out_bits not in (None, 8, 16):
        raise LoopExposeError(f"--out-bits must be 8 or 16, got {out_bits}")
    if out_bits == 16 and format == "jpg":
        raise LoopExposeError("--out-bits 16 needs --format png, tif or same (JPEG is 8-bit)")
    if not 1 <= quality <= 100:
        raise LoopExposeError(f"--quality must be 1..100, got {quality}")
    if max_side < 0 or workers < 1:
        raise LoopExposeError("--max-side must be >= 0 and --workers >= 1")
    if out.exists() and not out.is_dir():
        raise LoopExposeError("output folder is a file", out)
    try:
        torch_device = resolve_device(device)
    except RuntimeError:
        raise LoopExposeError(f"--device must be cpu, cuda, cuda:N or auto, got {device!r}") from None
    network = load(model, torch_device)
    if hasattr(network, "use_segmenter"):  # the semantic model: say which region masks it uses
        if segmenter_weights is not None:
            from loopexpose.methods.semantic.regions import FastSAMRegions

            fastsam = FastSAMRegions(segmenter_weights, regions=network.config.regions, device=str(torch_device))
            network.use_segmenter(fastsam, "FastSAM (local weights)")
        Console(stderr=True).print(f"regions: {escape(network.regions_name)}", highlight=False)
    elif segmenter_weights is not None:
        raise LoopExposeError(f"--segmenter-weights is for the semantic model; {model!r} does not use regions")

    jobs = expand_inputs(paths, recursive=recursive, exclude=out)
    if not jobs:
        raise LoopExposeError("no images found in the given paths")
    plan_outputs(jobs, out, format)
    console = Console(stderr=True)
    lock = threading.Lock()
    counts = {"ok": 0, "skipped": 0, "failed": 0}

    def report(job: Job, status: str, progress: Progress) -> None:
        with lock:
            counts[status] += 1
            job.result["status"] = status
            if job.error:
                print_error(job.error, progress.console)

    def run(job: Job, progress: Progress, task) -> None:
        try:
            if job.error:
                report(job, "failed", progress)
            elif skip_existing and job.target.exists():
                report(job, "skipped", progress)
            else:
                start = time.perf_counter()
                try:
                    job.target.parent.mkdir(parents=True, exist_ok=True)
                    job.result.update(correct_file(network, job.source, job.target, out_bits, max_side, quality))
                    job.result["seconds"] = round(time.perf_counter() - start, 3)
                    report(job, "ok", progress)
                except LoopExposeError as exc:
                    job.error = str(exc)
                    report(job, "failed", progress)
                except OSError as exc:  # e.g. a full disk or a read-only folder: this file fails, the rest go on
                    job.error = f"{job.source}: {exc.strerror or exc}"
                    report(job, "failed", progress)
        finally:
            progress.advance(task)

    interrupted = False
    try:
        with Progress(
            TextColumn("correcting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=True,
        ) as progress:  # fmt: skip
            task = progress.add_task("correct", total=len(jobs))
            if workers == 1:
                for job in jobs:
                    run(job, progress, task)
            else:
                pool = ThreadPoolExecutor(max_workers=workers)
                try:
                    list(pool.map(lambda job: run(job, progress, task), jobs))
                finally:  # on Ctrl-C: files being corrected finish (written whole), the others never start
                    pool.shutdown(wait=True, cancel_futures=True)
    except KeyboardInterrupt:
        interrupted = True
        print_error(f"{sum(counts.values())} of {len(jobs)} done", console, label="interrupted")

    line = f"corrected {counts['ok']} file(s) into {out}"
    line += f", skipped {counts['skipped']} existing" if counts["skipped"] else ""
    console.print(escape(line) + (f", [bold red]{counts['failed']} failed[/]" if counts["failed"] else ""))
    if as_json:
        summary = {
            "model": model,
            "device": str(torch_device),
            "files": [_json_row(job) for job in jobs],
            **counts,
        }
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    if interrupted:
        raise typer.Exit(130)
    if counts["failed"]:
        raise typer.Exit(2)


def _json_row(job: Job) -> dict:
    row = {
        "input": str(job.source),
        "output": str(job.target) if job.target is not None else None,
        "status": job.result.get("status", "not done"),  # not done: Ctrl-C came first
    }
    if job.error:
        row["error"] = job.error
    for key in ("seconds", "width", "height", "bits_in", "bits_out", "exposure_before", "exposure_after"):
        if key in job.result:
            row[key] = job.result[key]
    if "exposure_before" in row:
        row["ev_change"] = round(row["exposure_after"]["ev"] - row["exposure_before"]["ev"], 3)
    return row
