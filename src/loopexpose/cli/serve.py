"""``loopexpose serve``: the web demo on loopback (needs the ``[web]`` extra: Gradio)."""

from __future__ import annotations

import errno
import ipaddress
import signal
import socket

import typer
from rich.console import Console
from rich.markup import escape

from loopexpose.cli.app import app
from loopexpose.errors import LoopExposeError


def check_port(host: str, port: int) -> None:
    """Refuse, in one line, a port that is out of range or already in use on ``host`` (Gradio would otherwise
    print a traceback advising an environment variable instead of ``--port``)."""
    if not 1 <= port <= 65535:
        raise LoopExposeError(f"--port must be 1..65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise LoopExposeError(f"--host {host!r} is not an address of this machine ({exc.strerror})") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise LoopExposeError(f"port {port} on {host} is in use; choose another with --port") from None
            raise LoopExposeError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); try --host or --port") from None


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
    check_port(host, port)
    limits = Limits(max_upload_mb=max_upload_mb, max_megapixels=max_megapixels, max_frames=max_frames)
    demo = WebDemo(models={name: None for name in model} if model else None, limits=limits, device=device)
    if not _is_loopback(host):
        console.print(f"[yellow]warning:[/] binding to {escape(host)}: anyone who can reach this machine can use the "
                      "demo", highlight=False)  # fmt: skip
    url = f"http://{'127.0.0.1' if host == 'localhost' else host}:{port}"
    console.print(f"LoopExpose demo on {escape(url)} (Ctrl+C stops it)", highlight=False)
    # SIGTERM (a service manager, ``kill``) stops the server like Ctrl+C does, so the private folder is removed.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        launch(demo, host=host, port=port, block=True)
    except OSError as exc:  # the port was taken between the check and the launch
        # (Gradio's message advises GRADIO_SERVER_PORT; ours is --port)
        raise LoopExposeError(f"port {port} on {host} is in use or cannot be bound; choose another with --port") from None
    finally:
        demo.close()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
