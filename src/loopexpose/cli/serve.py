"""``loopexpose serve``: the web demo on loopback (needs the ``[web]`` extra: Gradio)."""

from __future__ import annotations

import ipaddress
import signal

import typer
from rich.console import Console

from loopexpose.cli.app import app


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to bind; anything but loopback exposes the demo."),
    port: int = typer.Option(7860, help="Port."),
    model: list[str] = typer.Option(
        None, "--model", "-m", help="Bundled name or .safetensors file; repeat for several (default: all bundled)."
    ),
    device: str = typer.Option("cpu", help="auto, cpu or cuda."),
    max_upload_mb: float = typer.Option(50.0, help="Largest accepted file, MB."),
    max_megapixels: float = typer.Option(40.0, help="Largest accepted photo, megapixels."),
    max_frames: int = typer.Option(9, help="Most frames in one bracket."),
) -> None:
    """Run the web demo: correct a photo, or order, correct and fuse a bracket, in your browser."""
    from loopexpose.app import Limits, WebDemo, launch
    from loopexpose.models import resolve_device

    console = Console()
    resolve_device(device)  # a clear error now rather than on the first request
    limits = Limits(max_upload_mb=max_upload_mb, max_megapixels=max_megapixels, max_frames=max_frames)
    demo = WebDemo(models={name: None for name in model} if model else None, limits=limits, device=device)
    if not _is_loopback(host):
        console.print(f"[yellow]warning:[/] binding to {host}: anyone who can reach this machine can use the demo")
    console.print(f"LoopExpose demo on http://{'127.0.0.1' if host == 'localhost' else host}:{port} (Ctrl+C stops it)")
    # SIGTERM (a service manager, ``kill``) stops the server like Ctrl+C does, so the private folder is removed.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        launch(demo, host=host, port=port, block=True)
    finally:
        demo.close()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
