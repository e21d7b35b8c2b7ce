"""Models by name (timm-style): architectures register themselves; weights load from bundled names or files.

>>> from loopexpose.models import create
>>> create("curvegrid").arch
'curvegrid'
"""

from __future__ import annotations

import os
from dataclasses import asdict, fields
from pathlib import Path

import torch

from loopexpose.checkpoint import load_checkpoint, save_checkpoint
from loopexpose.errors import LoopExposeError

ARCHITECTURES: dict[str, tuple[type, type]] = {}
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def register(name: str, config_class: type):
    """Class decorator: make an :class:`~loopexpose.models.base.ExposureModel` buildable by ``name``."""

    def wrap(cls):
        cls.arch = name
        ARCHITECTURES[name] = (cls, config_class)
        return cls

    return wrap


def create(arch: str, config: dict | None = None):
    """A freshly initialised model of architecture ``arch`` with ``config`` overriding its defaults."""
    if arch not in ARCHITECTURES:
        raise LoopExposeError(f"unknown architecture {arch!r} (known: {', '.join(sorted(ARCHITECTURES))})")
    cls, config_class = ARCHITECTURES[arch]
    known = {f.name for f in fields(config_class)}
    unknown = set(config or {}) - known
    if unknown:
        raise LoopExposeError(f"unknown {arch} settings: {', '.join(sorted(unknown))}")
    return cls(config_class(**(config or {})))


def bundled() -> list[str]:
    """Names of the weights that ship inside the package (``loopexpose.load(name)``)."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))


def resolve(spec: str | os.PathLike) -> Path:
    """A bundled name (``"default"``) or a path to a ``.safetensors`` file -> the checkpoint path."""
    path = Path(spec)
    if path.suffix == ".safetensors" or path.exists():
        return path
    candidate = WEIGHTS_DIR / f"{spec}.safetensors"
    if candidate.is_file():
        return candidate
    raise LoopExposeError(
        f"unknown model {str(spec)!r}: not a bundled name ({', '.join(bundled()) or 'none bundled'}) "
        "nor a .safetensors file"
    )


def load(spec: str | os.PathLike = "default", device: str | torch.device = "cpu"):
    """A ready model in eval mode from a bundled name or a checkpoint file (its JSON rebuilds the model)."""
    path = resolve(spec)
    state, metadata = load_checkpoint(path)
    model_info = metadata.get("model") or {}
    if "arch" not in model_info:
        raise LoopExposeError("checkpoint metadata has no model.arch", path)
    model = create(model_info["arch"], model_info.get("config"))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise LoopExposeError(f"weights do not fit {model_info['arch']}: {str(exc).splitlines()[0]}", path) from None
    model.metadata = metadata
    return model.to(resolve_device(device)).eval()


def save(model, path: str | os.PathLike, **metadata) -> Path:
    """Save a model's weights and everything needed to rebuild it."""
    info = {"model": {"arch": model.arch, "config": asdict(model.config)}, **metadata}
    return save_checkpoint(path, model.state_dict(), info)


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is a clear error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LoopExposeError("--device cuda asked for, but torch sees no CUDA device")
    return device
