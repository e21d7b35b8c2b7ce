"""The typer application every command module registers on (``from loopexpose.cli.app import app``), and the
one way commands print a user error."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(
    name="loopexpose",
    help="Unsupervised exposure correction and exposure fusion.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def print_error(message: object, console: Console | None = None, label: str = "error") -> None:
    """One line ``<label>: <message>`` on stderr (or ``console``), the message escaped: file names may hold
    ``[`` and ``]``, which Rich would otherwise take for markup (and drop, or fail on)."""
    console = console or Console(stderr=True)
    console.print(f"[bold red]{label}:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


MAX_PIXELS_HELP = (
    "Refuse images above this many pixels (width x height), read from the file's header before decoding; "
    "0: no limit. Default 178956970 (about 179 MP: where Pillow refuses a file as a decompression bomb)."
)
