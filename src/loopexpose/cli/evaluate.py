"""``loopexpose eval``: score correction and fusion methods side by side and write a report.

A scene that cannot be read (a bad frame, a missing folder) is reported in one line and left out of the report;
the others are evaluated, and the exit code is then 2.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from loopexpose.cli.app import MAX_PIXELS_HELP, app, print_error
from loopexpose.errors import LoopExposeError


def _split_names(values: list[str] | None) -> list[str]:
    return [name.strip() for value in values or [] for name in value.split(",") if name.strip()]


def _scan(roots: list[Path], on_error) -> list:
    """:func:`loopexpose.data.scan_brackets`, but a root or scene that cannot be read goes to ``on_error`` and
    the others are kept."""
    from loopexpose.data import scene_key
    from loopexpose.brackets import find_scenes, order_bracket

    folders: dict[Path, Path] = {}
    for root in roots:
        try:
            folders.update((scene.resolve(), scene) for scene in find_scenes(root))
        except LoopExposeError as exc:
            on_error(exc)
    brackets = []
    for scene in folders.values():
        try:
            brackets.append(order_bracket(scene))
        except LoopExposeError as exc:
            on_error(exc)
    return sorted(brackets, key=scene_key)


def _select_scenes(roots: list[Path], scenes: list[str], scenes_file: Path | None, split: str, val_fraction: float,
                   on_error=None):  # fmt: skip
    from loopexpose.data import scan_brackets, scene_key, split_scenes

    brackets = scan_brackets(roots) if on_error is None else _scan(roots, on_error)
    wanted = list(scenes)
    if scenes_file is not None:
        if not scenes_file.is_file():
            raise LoopExposeError("no such scene list", scenes_file)
        wanted += [line.strip() for line in scenes_file.read_text().splitlines() if line.strip() and line[0] != "#"]
    if wanted:
        missing = [w for w in wanted if not any(w in (b.name, scene_key(b)) for b in brackets)]
        if missing:
            raise LoopExposeError(f"scene(s) not found under {', '.join(map(str, roots))}: {', '.join(missing)}")
        brackets = [b for b in brackets if b.name in wanted or scene_key(b) in wanted]
    if split == "val":
        brackets = split_scenes(brackets, val_fraction)[1]
    elif split == "train":
        brackets = split_scenes(brackets, val_fraction)[0]
    elif split != "all":
        raise LoopExposeError(f"--split must be all, train or val, got {split!r}")
    if not brackets:
        raise LoopExposeError("no scenes left to evaluate after --scenes/--split")
    return brackets


@app.command("eval")
def evaluate(
    roots: list[Path] = typer.Argument(..., help="Scene folders, collections, or (paired) a folder with input/ and gt/."),
    protocol: str = typer.Option("bracket-5", help="bracket-5 (real brackets, no ground truth) or paired."),
    methods: list[str] = typer.Option(
        None, "--methods", "-m",
        help="Comma-separated or repeated: identity, gain, gamma, autolevels, clahe, mertens-cv2, mertens, "
        "mertens:<preset>, model:<name|file.safetensors>. Default: all baselines and fusions, and model:default.",
    ),  # fmt: skip
    max_side: int = typer.Option(512, help="Evaluate with the long side downscaled to this (0: full size)."),
    scenes: list[str] = typer.Option(None, "--scenes", help="Only these scenes (name or collection/name; comma-separated)."),
    scenes_file: Path = typer.Option(None, help="Text file of scene names, one per line."),
    split: str = typer.Option("all", help="all, or the val / train half of loopexpose.data.split_scenes."),
    val_fraction: float = typer.Option(0.1, help="Validation share for --split (stable hash of collection/scene; configs/default.toml uses 0.1)."),
    fusion_preset: str = typer.Option(
        "opencv", help="Mertens preset of 'mertens', 'loopmef-plain' and 'loopmef-corrected' (loopmef uses loop_fuse)."
    ),
    input_dir: str = typer.Option("input", help="paired: folder of inputs under the root."),
    gt_dir: str = typer.Option("gt", help="paired: folder of ground truths (e.g. expert_c for MSEC)."),
    out: Path = typer.Option(Path("eval-report"), "--out", "-o", help="Report folder."),
    device: str = typer.Option("cpu", help="cpu, cuda or auto (for models)."),
    gallery: bool = typer.Option(True, help="Write the HTML gallery of inputs / outputs / reference."),
    max_pixels: int = typer.Option(None, "--max-pixels", help=MAX_PIXELS_HELP, show_default=False),
) -> None:
    """Compare exposure correction and fusion methods on real brackets and write a Markdown/JSON/CSV report.

    A scene that cannot be read is reported in one line and left out; the exit code is then 2.
    """
    import torch

    from loopexpose import evaluate as ev
    from loopexpose.io import set_max_pixels

    set_max_pixels(max_pixels)
    torch.manual_seed(0)
    console = Console()
    errors = Console(stderr=True)
    failed: list[str] = []

    def skip(exc: LoopExposeError) -> None:
        failed.append(str(exc))
        print_error(exc, errors)

    names = _split_names(methods) or list(ev.DEFAULT_METHODS)
    method_list = ev.build_methods(names, device=device, fusion_preset=fusion_preset)
    gallery_writer = ev.Gallery(out) if gallery else None
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[scene]}"), console=console, transient=True)  # fmt: skip
    if protocol == "bracket-5":
        brackets = _select_scenes(list(roots), _split_names(scenes), scenes_file, split, val_fraction, skip)
        with progress:
            task = progress.add_task("bracket-5", total=len(brackets), scene="")

            def step(key: str) -> None:
                completed = progress.tasks[0].completed + (1 if progress.tasks[0].fields["scene"] else 0)
                progress.update(task, completed=completed, scene=escape(key))

            results = ev.evaluate_bracket5(brackets, method_list, max_side, on_scene=gallery_writer, progress=step,
                                           on_error=skip)  # fmt: skip
    elif protocol == "paired":
        if len(roots) != 1:
            raise LoopExposeError("the paired protocol takes one root holding input/ and gt/")
        pairs = ev.find_pairs(roots[0], input_dir, gt_dir)
        with progress:
            task = progress.add_task("paired", total=len(pairs), scene="")
            results = ev.evaluate_paired(pairs, method_list, max_side, on_scene=gallery_writer,
                                         progress=lambda key: progress.update(task, advance=1, scene=escape(key)))  # fmt: skip
    else:
        raise LoopExposeError(f"unknown protocol {protocol!r} (bracket-5 or paired)")
    if not results.scenes:
        raise LoopExposeError("no scene could be evaluated")
    command = "loopexpose " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report = ev.write_report(results, out, command=command, gallery=gallery_writer)
    header, rows = ev.summary_table(results)
    table = Table(title=f"{protocol}: {len(results.scenes)} scenes (means)")
    for column in header:
        table.add_column(column, justify="left" if column in ("method", "kind") else "right")
    for row in rows:
        table.add_row(*[escape(cell.replace("**", "")) for cell in row])
    console.print(table)
    for line in ev.baseline_findings(results):
        console.print(f"- {escape(line)}", highlight=False)
    console.print(f"report: {escape(str(report))}", highlight=False)
    if failed:
        errors.print(f"{len(failed)} scene(s) could not be read and are left out of the report", highlight=False)
        raise typer.Exit(2)
