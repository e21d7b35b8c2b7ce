"""Checkpoints: ``NAME.safetensors`` (weights) beside ``NAME.json`` (model config, epoch, metrics, git revision).

A checkpoint file alone rebuilds its model: the JSON holds ``{"model": {"name": ..., "config": {...}}, ...}``.
Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from loopexpose.errors import LoopExposeError
from loopexpose.io import atomic_write_bytes


def metadata_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of a ``.safetensors`` file."""
    return Path(path).with_suffix(".json")


def git_revision() -> str | None:
    """The current git commit of the source tree, or ``None`` outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def save_checkpoint(path: str | os.PathLike, state: dict[str, torch.Tensor], metadata: dict) -> Path:
    """Write weights and metadata atomically (weights first, then the JSON that makes the pair complete)."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    atomic_write_bytes(path, save(tensors))
    meta = {"git_revision": git_revision(), **metadata}
    atomic_write_bytes(metadata_path(path), json.dumps(meta, indent=2, sort_keys=True, default=str).encode())
    return path


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[dict, dict]:
    """Read ``(state_dict, metadata)``; raises :class:`LoopExposeError` for a missing or malformed pair."""
    path = Path(path)
    if not path.is_file():
        raise LoopExposeError("no such checkpoint file", path)
    meta_file = metadata_path(path)
    if not meta_file.is_file():
        raise LoopExposeError(f"checkpoint metadata {meta_file.name} is missing beside it", path)
    try:
        metadata = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LoopExposeError(f"checkpoint metadata is not valid JSON ({exc})", meta_file) from None
    if not isinstance(metadata, dict):
        raise LoopExposeError(f"checkpoint metadata must be a JSON object, got a {type(metadata).__name__}", meta_file)
    try:
        state = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise LoopExposeError(f"not a readable safetensors file ({exc})", path) from None
    return state, metadata
