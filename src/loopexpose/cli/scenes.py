"""``loopexpose scenes PATH...``: the scenes found under some folders, how their frames were ordered, and why.

With ``--group auto`` every folder is a flat folder of shots split into brackets and single shots
(:func:`loopexpose.brackets.group_brackets`), and the groups are listed with the rule that started each one.

A path or scene that cannot be read is reported in one line and the others are still listed; the exit code is
then 2. Reads only file headers and small thumbnails, and never imports torch.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from loopexpose.cli.app import MAX_PIXELS_HELP, app, print_error
from loopexpose.errors import LoopExposeError

GROUPINGS = ("folder", "auto")
GROUP_HELP = (
    "How frames make brackets: 'folder' (every folder holding images is one bracket) or 'auto' (every folder is "
    "a flat folder of shots, split into AEB brackets by EXIF exposure bias or exposure value and capture-time "
    "gaps, else by image similarity; single shots are listed, not fused). See docs/brackets.md."
)
MAX_GAP_HELP = (
    "With --group auto: seconds allowed between the end of one frame's exposure and the start of the next within "
    "a bracket (raise it for slow AEB with long exposures or a self-timer between frames)."
)

_RULE_HELP = {
    "exif": "EXIF exposure time x ISO / f-number^2",
    "shutter_times": "shutter_times.txt sidecar",
    "filename": "EV tags in file names",
    "luminance": "mean luminance",
    "single": "one frame",
}


@app.command()
def scenes(
    paths: list[Path] = typer.Argument(..., help="Scene folders, collections, or folders of collections."),
    files: bool = typer.Option(
        False, "--files", "-f", help="Also list each scene's files: darkest first (--group auto: capture order)."
    ),
    group: str = typer.Option("folder", "--group", help=GROUP_HELP),
    max_gap: float = typer.Option(2.0, "--max-gap", min=0.0, help=MAX_GAP_HELP),
    max_pixels: int = typer.Option(None, "--max-pixels", help=MAX_PIXELS_HELP, show_default=False),
) -> None:
    """List the exposure brackets found: frames, the rule that ordered them, and their EVs or mean lumas.

    Order rules, first that applies: exif (exposure time x ISO / f-number^2), shutter_times (sidecar file),
    filename (EV tags such as _N1 _0 _P1, under/normal/over, m2/zero/p2, EV-2..EV+2), luminance.
    With --group auto: the brackets and single shots of a flat folder, and the rule that split each boundary.
    A scene that cannot be read is reported in one line and the others are listed; the exit code is then 2.
    """
    from loopexpose.brackets import find_scenes, order_bracket
    from loopexpose.io import set_max_pixels

    set_max_pixels(max_pixels)
    check_grouping(group)
    errors = Console(stderr=True)
    failed = 0
    folders = []
    for path in paths:
        try:
            folders.extend(find_scenes(path))
        except LoopExposeError as exc:
            failed += 1
            print_error(exc, errors)
    console = Console()
    if group == "auto":
        for grouping in group_folders(folders, errors, max_gap):
            if isinstance(grouping, LoopExposeError):
                failed += 1
                print_error(grouping, errors)
                continue
            print_skipped(grouping, errors)
            print_grouping(console, grouping, files)
            for bad in (group for group in grouping.groups if group.error):
                failed += 1
                print_error(f"{bad.paths[0]}: group {bad.name} ({len(bad)} frames): {bad.error}", errors)
        if failed:
            raise typer.Exit(2)
        return
    brackets = []
    with Progress(
        TextColumn("ordering"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=errors, transient=True, disable=len(folders) < 8,
    ) as progress:  # fmt: skip
        task = progress.add_task("ordering", total=len(folders))
        for folder in folders:
            try:
                brackets.append(order_bracket(folder))
            except LoopExposeError as exc:
                failed += 1
                print_error(exc, progress.console)
            progress.advance(task)
    if brackets:
        _print_table(console, brackets, files)
    if failed:
        raise typer.Exit(2)


def _print_table(console: Console, brackets: list, files: bool) -> None:
    """The scenes table and the rules legend (every user-controlled string escaped)."""
    table = Table(title=f"{len(brackets)} scene(s), {sum(len(b) for b in brackets)} frames", title_justify="left")
    table.add_column("scene", overflow="fold")
    table.add_column("frames", justify="right")
    table.add_column("order rule")
    table.add_column("EV (stops from darkest)  /  mean luma x255", overflow="fold")
    table.add_column("ref", justify="right")
    if files:
        table.add_column("files, darkest first", overflow="fold")
    for bracket in brackets:
        if bracket.evs is not None:
            values = "EV " + " ".join(_stops(ev) for ev in bracket.evs)
        else:
            values = "luma " + " ".join(f"{value * 255:.0f}" for value in bracket.mean_luma)
        rule = escape(bracket.rule) + (f" [yellow]({escape(bracket.note)})[/]" if bracket.note else "")
        row = [_label(bracket.scene), str(len(bracket)), rule, values, str(bracket.reference_index())]
        if files:
            row.append(escape(", ".join(p.name for p in bracket.paths)))
        table.add_row(*row)
    console.print(table, highlight=False)
    console.print("rules: " + "; ".join(f"[bold]{k}[/] = {v}" for k, v in _RULE_HELP.items()), highlight=False)


def _stops(ev: float) -> str:
    """``1.5 -> '+1.5'``, ``2.0 -> '+2'``, ``0.0 -> '0'``."""
    text = f"{ev:+.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("+0", "-0") else text


def _label(scene: Path) -> str:
    """``collection/scene`` with rich markup escaped (scene names may contain brackets)."""
    return escape(f"{scene.parent.name}/{scene.name}")


def check_grouping(group: str) -> None:
    """Refuse a ``--group`` value other than :data:`GROUPINGS`."""
    if group not in GROUPINGS:
        raise LoopExposeError(f"--group must be one of {', '.join(GROUPINGS)}, got {group!r}")


def group_folders(folders: list[Path], console: Console, max_gap: float) -> list:
    """:func:`loopexpose.brackets.group_brackets` of every folder, with a progress bar on ``console`` while the
    shots are read: a :class:`~loopexpose.brackets.Grouping` per folder, or the :class:`LoopExposeError` of a
    folder that cannot be grouped."""
    from loopexpose.brackets import group_brackets, list_images

    results: list = []
    total = sum(len(list_images(folder)) for folder in folders)
    with Progress(
        TextColumn("reading shots"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True, disable=total < 50,
    ) as progress:  # fmt: skip
        task = progress.add_task("reading", total=total)
        for folder in folders:
            try:
                results.append(group_brackets(folder, max_gap, progress=lambda _: progress.advance(task)))
            except LoopExposeError as exc:
                results.append(exc)
    return results


def print_grouping(console: Console, grouping, files: bool) -> None:
    """The groups of one folder: a table (name, frames, exposure pattern, the rule that started the group) and
    a line on what the patterns were read from."""
    brackets, singles = len(grouping.brackets), len(grouping.singles)
    title = f"{escape(str(grouping.folder))}: {brackets} bracket(s), {singles} single shot(s)"
    table = Table(title=title, title_justify="left")
    table.add_column("group", overflow="fold")
    table.add_column("frames", justify="right")
    table.add_column("pattern", overflow="fold")
    table.add_column("split (why a group starts here)", overflow="fold")
    if files:
        table.add_column("files, capture order", overflow="fold")
    for group in grouping.groups:
        pattern = escape(group.pattern) + (" [yellow](not fused)[/]" if group.single else "")
        if group.error:
            pattern += " [red](cannot be fused)[/]"
        row = [escape(group.name), str(len(group)), pattern, escape(group.split)]
        if files:
            row.append(escape(", ".join(path.name for path in group.paths)))
        table.add_row(*row)
    console.print(table, highlight=False)
    console.print(f"grouping: {escape(grouping.note)}", highlight=False)


def print_skipped(grouping, console: Console) -> None:
    """One warning line per file of the folder that could not be read (it is left out of every group)."""
    for path, problem in grouping.skipped:
        print_error(f"{path}: {problem} (skipped)", console, label="warning")
