"""``loopexpose demo``: the main job on an embedded default (filled in once the model lands)."""

from pathlib import Path

import typer

from loopexpose.cli.app import app


@app.command()
def demo(out: Path = typer.Option(Path("demo-output"), "--out", "-o", help="Output folder.")) -> None:
    """Render a bracket from a scikit-image photo, correct every frame, fuse, and write a comparison."""
    raise typer.Exit(0)
