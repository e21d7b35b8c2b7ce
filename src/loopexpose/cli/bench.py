"""``loopexpose bench``: speed (megapixels per second) and peak memory of correction and fusion, ours vs OpenCV.

Speed is measured in this process: the median of ``--repeat`` timed runs after one warm-up, as megapixels of
output per second (a 5-frame fusion of a 1 MP bracket counts as 1 MP).

Memory is measured per case in a fresh child process (``multiprocessing`` spawn), as its peak resident set size
during one run minus its resident size before it (the peak is reset after the inputs were allocated and the
libraries imported, through ``/proc/self/clear_refs``; elsewhere ``ru_maxrss`` growth is the fallback). That
counts what the operation itself allocates, in torch, OpenCV and numpy alike (tracemalloc sees only Python
allocations, and torch's CPU allocator reports nothing); it misses memory that was already resident and reused.
On CUDA, peak memory is ``torch.cuda.max_memory_allocated`` instead.
"""

from __future__ import annotations

import math
import multiprocessing
import statistics
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loopexpose.cli.app import app
from loopexpose.errors import LoopExposeError

CASES = ("correct", "fuse-ours", "fuse-opencv")


def _inputs(megapixels: float, frames: int):
    import numpy as np
    import torch

    height = max(16, int(round(math.sqrt(megapixels * 1e6 * 2 / 3))))
    width = max(16, int(round(height * 1.5)))
    rng = np.random.default_rng(0)
    # A smooth random scene (noise would make every method's work atypical), rendered at EVs -2..+2.
    base = rng.random((height // 8 + 2, width // 8 + 2, 3)).astype(np.float32)
    import cv2

    scene = cv2.resize(base, (width, height), interpolation=cv2.INTER_CUBIC).clip(0.01, 1) ** 2.2
    evs = np.linspace(-2, 2, frames)
    bracket = np.stack([np.clip(scene * 2.0**ev, 0, 1) ** (1 / 2.2) for ev in evs]).astype(np.float32)
    return torch.from_numpy(bracket).permute(0, 3, 1, 2).contiguous(), height, width


def _load_model(spec: str, device: str):
    from loopexpose.models import bundled, create, load

    if spec == "default" and "default" not in bundled():
        return create("curvegrid").to(device).eval(), "curvegrid (untrained: no bundled default yet)"
    if spec in {"curvegrid"}:
        return create(spec).to(device).eval(), f"{spec} (untrained)"
    return load(spec, device), spec


def _runner(case: str, megapixels: float, frames: int, model_spec: str, device: str):
    """Set up one case and return a function that runs it once (inputs already allocated)."""
    import numpy as np
    import torch

    bracket, _, _ = _inputs(megapixels, frames)
    if case == "correct":
        model, _ = _load_model(model_spec, device)
        photo = (bracket[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        return lambda: model.correct(photo)
    if case == "fuse-ours":
        from loopexpose.fusion import fuse

        images = bracket.to(device)

        def run():
            with torch.no_grad():
                out = fuse(images, "opencv")
            if images.device.type == "cuda":
                torch.cuda.synchronize()
            return out

        return run
    if case == "fuse-opencv":
        import cv2

        merge = cv2.createMergeMertens()
        stack = [np.ascontiguousarray(f.permute(1, 2, 0).numpy() * 255) for f in bracket]
        return lambda: merge.process(stack)
    raise ValueError(case)


def _memory_child(case: str, megapixels: float, frames: int, model_spec: str, device: str, queue) -> None:
    import resource

    import torch

    torch.set_num_threads(2)
    try:
        run = _runner(case, megapixels, frames, model_spec, device)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            run()
            queue.put(torch.cuda.max_memory_allocated() / 2**20)
            return
        if _reset_peak_rss():
            before = _status_kib("VmRSS")
            run()
            queue.put((_status_kib("VmHWM") - before) / 1024)
        else:  # no /proc: the high-water mark of setup may hide the run's (then this reads 0)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            run()
            queue.put((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
    except Exception as exc:  # noqa: BLE001 - reported in the table, not a crash of the benchmark
        queue.put(f"error: {exc}")


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs), so that it measures
    the run alone and not the setup before it."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(field)


def _peak_memory(case: str, megapixels: float, frames: int, model_spec: str, device: str) -> float | str:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_memory_child, args=(case, megapixels, frames, model_spec, device, queue))
    process.start()
    try:
        value = queue.get(timeout=600)
    finally:
        process.join(timeout=60)
    return value


@app.command()
def bench(
    sizes: str = typer.Option("0.25,1", help="Comma-separated image sizes in megapixels (3:2 aspect)."),
    frames: int = typer.Option(5, help="Frames per bracket for fusion."),
    repeat: int = typer.Option(3, help="Timed runs per case (median reported), after one warm-up."),
    model: str = typer.Option("default", help="Model for the correction case: bundled name, .safetensors, or curvegrid."),
    cases: str = typer.Option(",".join(CASES), help="Comma-separated subset of: " + ", ".join(CASES)),
    memory: bool = typer.Option(True, help="Measure peak memory in a child process per case."),
    device: str = typer.Option("cpu", help="cpu, cuda or auto (OpenCV always runs on the CPU)."),
    threads: int = typer.Option(2, help="torch threads (OpenCV uses its own pool)."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the table as Markdown here (e.g. for docs/benchmarks.md)."),
) -> None:
    """Time correction and fusion at several sizes, ours vs OpenCV, and print (and optionally save) a table."""
    import platform

    import cv2
    import torch

    from loopexpose.io import atomic_write_bytes
    from loopexpose.models import resolve_device

    torch.set_num_threads(threads)
    device = str(resolve_device(device))
    try:
        size_list = [float(s) for s in sizes.split(",") if s.strip()]
    except ValueError:
        raise LoopExposeError(f"--sizes must be comma-separated numbers of megapixels, got {sizes!r}") from None
    case_list = [c.strip() for c in cases.split(",") if c.strip()]
    unknown = set(case_list) - set(CASES)
    if unknown or not size_list or any(s <= 0 for s in size_list):
        raise LoopExposeError(f"bad --cases or --sizes (cases: {', '.join(CASES)})")
    _, model_name = _load_model(model, device) if "correct" in case_list else (None, "-")
    console = Console()
    rows = []
    for megapixels in size_list:
        for case in case_list:
            case_device = "cpu" if case == "fuse-opencv" else device
            run = _runner(case, megapixels, frames, model, case_device)
            _, height, width = _inputs(megapixels, 1)
            run()  # warm-up
            times = []
            for _ in range(max(1, repeat)):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            peak = _peak_memory(case, megapixels, frames, model, case_device) if memory else None
            rows.append({"case": case, "size": f"{width}x{height}", "mp": width * height / 1e6, "device": case_device,
                         "seconds": seconds, "mp_per_s": width * height / 1e6 / seconds, "peak_mb": peak})  # fmt: skip
            console.print(f"{case:12s} {width}x{height}: {seconds * 1000:.1f} ms", highlight=False)
    table = Table(title=f"loopexpose bench ({frames}-frame brackets for fusion; correction model: {model_name})")
    header = ["case", "size", "MP", "device", "ms", "MP/s", "peak memory (MiB)"]
    for column in header:
        table.add_column(column, justify="left" if column in ("case", "size", "device") else "right")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        peak = row["peak_mb"]
        peak_text = "-" if peak is None else (peak if isinstance(peak, str) else f"{peak:.0f}")
        cells = [row["case"], row["size"], f"{row['mp']:.2f}", row["device"], f"{row['seconds'] * 1000:.1f}",
                 f"{row['mp_per_s']:.2f}", peak_text]  # fmt: skip
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    console.print(table)
    if out is not None:
        cpu = platform.processor() or platform.machine()
        note = (f"\n`loopexpose bench --sizes {sizes} --frames {frames} --repeat {repeat} --device {device} "
                f"--threads {threads}` on {cpu}, torch {torch.__version__}, OpenCV {cv2.__version__}, "
                f"{torch.get_num_threads()} torch threads. Correction: `model.correct` on a uint8 photo "
                f"({model_name}). Fusion: Mertens, preset opencv, {frames} frames. Peak memory: growth of a child "
                "process's peak RSS during one run (CUDA: max allocated).\n")  # fmt: skip
        atomic_write_bytes(out, ("\n".join(lines) + "\n" + note).encode("utf-8"))
        console.print(f"wrote {escape(str(out))}", highlight=False)
