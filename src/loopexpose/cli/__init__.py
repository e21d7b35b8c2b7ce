"""``loopexpose`` command line: one module per command, all registered on :data:`loopexpose.cli.app.app`.

User errors (:class:`~loopexpose.errors.LoopExposeError`) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

from rich.console import Console

from loopexpose.cli.app import app
from loopexpose.errors import LoopExposeError

# Every module of this package except ``app`` defines commands; importing it registers them.
for _module in pkgutil.iter_modules(__path__):
    if _module.name != "app":
        importlib.import_module(f"{__name__}.{_module.name}")


def main() -> None:
    """Console entry point."""
    try:
        app()
    except LoopExposeError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        Console(stderr=True).print("[bold red]interrupted[/]")
        sys.exit(130)


__all__ = ["app", "main"]
