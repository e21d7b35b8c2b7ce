"""Models by name (timm-style): architectures register themselves; weights load from bundled names or files.

Each method's network (``loopexpose/methods/<method>/network.py``) registers its architecture with
:func:`register` when imported. This module imports them (:data:`NETWORKS`) on first use, not at its own import:
they import this module, so importing them here would make the two packages import each other.

>>> from loopexpose.models import create
>>> create("curvegrid").arch
'curvegrid'
"""

from __future__ import annotations

import importlib
import os
from dataclasses import asdict, fields
from pathlib import Path

import torch

from loopexpose.checkpoint import load_checkpoint, save_checkpoint
from loopexpose.config import check_dataclass
from loopexpose.errors import LoopExposeError

NETWORKS = ("loopexpose.methods.loopexpose.network", "loopexpose.methods.semantic.network")
"""The modules whose classes register the built-in architectures."""
_ARCHITECTURES: dict[str, tuple[type, type]] = {}
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def register(name: str, config_class: type):
    """Class decorator: make an :class:`~loopexpose.models.base.ExposureModel` buildable by ``name``."""

    def wrap(cls):
        cls.arch = name
        _ARCHITECTURES[name] = (cls, config_class)
        return cls

    return wrap


def architectures() -> dict[str, tuple[type, type]]:
    """Every registered architecture, ``name -> (model class, settings dataclass)`` (the built-in networks are
    imported on the first call)."""
    for module in NETWORKS:
        importlib.import_module(module)
    return _ARCHITECTURES


def create(arch: str, config: dict | None = None):
    """A freshly initialised model of architecture ``arch`` with ``config`` overriding its defaults."""
    registered = architectures()
    if arch not in registered:
        raise LoopExposeError(f"unknown architecture {arch!r} (known: {', '.join(sorted(registered))})")
    cls, config_class = registered[arch]
    if config is not None and not isinstance(config, dict):
        raise LoopExposeError(f"{arch} settings must be a table of names and values, got {type(config).__name__}")
    known = {f.name for f in fields(config_class)}
    unknown = set(config or {}) - known
    if unknown:
        raise LoopExposeError(f"unknown {arch} settings: {', '.join(sorted(map(str, unknown)))}")
    return cls(config_class(**check_dataclass(config, config_class, "model.config")))


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
    device = resolve_device(device)  # an unknown device fails before anything is read
    state, metadata = load_checkpoint(path)
    model_info = metadata.get("model")
    if not isinstance(model_info, dict) or not isinstance(model_info.get("arch"), str):
        raise LoopExposeError("checkpoint metadata has no model.arch (expected {\"model\": {\"arch\": NAME, "
                              "\"config\": {...}}})", path)  # fmt: skip
    try:
        model = create(model_info["arch"], model_info.get("config"))
    except LoopExposeError as exc:
        raise LoopExposeError(f"checkpoint metadata: {exc}", path) from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise LoopExposeError(f"weights do not fit {model_info['arch']}: {str(exc).splitlines()[0]}", path) from None
    model.metadata = metadata
    return model.to(device).eval()


def save(model, path: str | os.PathLike, **metadata) -> Path:
    """Save a model's weights and everything needed to rebuild it."""
    info = {"model": {"arch": model.arch, "config": asdict(model.config)}, **metadata}
    return save_checkpoint(path, model.state_dict(), info)


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; an unknown device, or ``"cuda"`` without a GPU, is a clear
    error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise LoopExposeError(f"unknown device {str(device)!r} (use cpu, cuda, cuda:N, mps or auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LoopExposeError("--device cuda asked for, but torch sees no CUDA device")
    backend = getattr(torch, device.type, None) if device.type not in ("cpu", "cuda", "meta") else None
    available = getattr(backend, "is_available", None)
    if device.type not in ("cpu", "cuda", "meta") and not (callable(available) and available()):
        raise LoopExposeError(f"device {str(device)!r} asked for, but torch sees no {device.type} device")
    return device
