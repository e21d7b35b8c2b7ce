"""A training run's resumable state in one file, committed by one atomic rename: ``RUN/state.safetensors``.

The file holds the model's tensors (``model.NAME``) and the optimizer's (``optimizer.INDEX.NAME``), with the epoch,
the best score and the log rows as JSON in its metadata. It is written to a temp file in the run folder, flushed
to disk, then renamed over the last one, so whenever the process dies the folder holds either the previous
epoch's complete state or this one's, never a mix (the old layout wrote weights, optimizer and log as separate
files: a kill between two writes left a run that could not resume). ``last``/``best`` checkpoints and
``log.jsonl``/``log.csv`` are written after the commit from the same state, and rewritten from it on resume.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from loopexpose.errors import LoopExposeError

STATE_FILE = "state.safetensors"
FORMAT = 1


def save_state(out: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, info: dict) -> Path:
    """Commit ``model``, ``optimizer`` and ``info`` (JSON-able: epoch, best score, log rows) as the run's state."""
    tensors = {f"model.{name}": value for name, value in model.state_dict().items()}
    for index, state in optimizer.state_dict()["state"].items():
        tensors.update({f"optimizer.{index}.{name}": torch.as_tensor(v) for name, v in state.items()})
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}  # no shared storage
    metadata = {"loopexpose_state": json.dumps({"format": FORMAT, **info})}
    path = Path(out) / STATE_FILE
    write_durably(path, save(tensors, metadata=metadata))
    return path


def load_state(out: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device) -> dict:
    """Load the committed state into ``model`` and ``optimizer``; returns its ``info``.

    Raises:
        LoopExposeError: the file is unreadable, of another format, or does not fit the model.
    """
    path = Path(out) / STATE_FILE
    try:
        with safe_open(str(path), "pt", device="cpu") as handle:
            info = json.loads((handle.metadata() or {})["loopexpose_state"])
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise LoopExposeError(f"run state is unreadable ({exc}); start the run again without --resume", path) from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise LoopExposeError(f"run state of an unknown format {info.get('format') if isinstance(info, dict) else info!r}", path)
    weights = {name.removeprefix("model."): t for name, t in tensors.items() if name.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise LoopExposeError(f"run state does not fit the configured model: {str(exc).splitlines()[0]}", path) from None
    load_optimizer(optimizer, {name.removeprefix("optimizer."): t for name, t in tensors.items()
                               if name.startswith("optimizer.")}, device)  # fmt: skip
    return info


def read_info(out: Path) -> dict | None:
    """The committed state's ``info`` (epoch, best score, best epoch, log rows) without its tensors; ``None``
    when there is none or it is unreadable."""
    try:
        with safe_open(str(Path(out) / STATE_FILE), "pt", device="cpu") as handle:
            return json.loads((handle.metadata() or {})["loopexpose_state"])
    except (SafetensorError, OSError, KeyError, ValueError):
        return None


def load_optimizer(optimizer: torch.optim.Optimizer, flat: dict[str, torch.Tensor], device) -> None:
    """Load ``{"INDEX.NAME": tensor}`` optimizer state (``step`` stays on the CPU, as torch keeps it)."""
    state = optimizer.state_dict()
    for key, value in flat.items():
        index, name = key.split(".", 1)
        state["state"].setdefault(int(index), {})[name] = value.to(device) if name != "step" else value
    optimizer.load_state_dict(state)


def write_durably(path: Path, payload: bytes) -> None:
    """Write ``payload`` to a temp file beside ``path``, flush it to disk, rename it over ``path`` (atomic), and
    flush the folder, so a crash or power loss leaves the old file or the new one, complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - folders cannot be opened on some platforms
        return
    try:
        os.fsync(folder)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(folder)


def remove_stale_temp_files(out: Path) -> list[str]:
    """Delete the temp files a killed writer left in the run folder (``.NAME.XXXX.tmp``); returns their names."""
    stale = sorted(p for p in Path(out).glob(".*.tmp") if p.is_file())
    for path in stale:
        path.unlink(missing_ok=True)
    return [p.name for p in stale]
