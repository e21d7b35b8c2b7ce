"""``loopexpose`` command line: one module per command, all registered on :data:`loopexpose.cli.app.app`.

User errors (:class:`~loopexpose.errors.LoopExposeError`) become one line on stderr and exit code 2; Ctrl-C
exits with 130 (the batch commands first say how far they got), also during start-up.

Command modules import only typer and rich at module level (numpy, OpenCV and torch inside the commands), so
that ``loopexpose --help`` and the commands that need no model start in well under a second.
"""

from __future__ import annotations

import sys

try:
    import importlib
    import pkgutil

    from rich.console import Console

    from loopexpose.cli.app import app, print_error
    from loopexpose.errors import LoopExposeError

    # Every module of this package except ``app`` defines commands; importing it registers them.
    for _module in pkgutil.iter_modules(__path__):
        if _module.name != "app":
            importlib.import_module(f"{__name__}.{_module.name}")
except KeyboardInterrupt:  # Ctrl-C while the command line is being set up: no traceback
    sys.stderr.write("interrupted\n")
    sys.exit(130)


def main() -> None:
    """Console entry point."""
    try:
        app()
    except LoopExposeError as exc:
        print_error(exc)
        sys.exit(2)
    except KeyboardInterrupt:
        Console(stderr=True).print("[bold red]interrupted[/]")
        sys.exit(130)


__all__ = ["app", "main", "print_error"]
