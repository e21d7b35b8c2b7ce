"""Correction networks. Every module here registers its architectures on import (see :mod:`.registry`)."""

import importlib
import pkgutil

from loopexpose.models.base import ExposureModel
from loopexpose.models.registry import ARCHITECTURES, bundled, create, load, resolve_device, save

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in {"base", "registry"}:
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ARCHITECTURES", "ExposureModel", "bundled", "create", "load", "resolve_device", "save"]
