"""What every correction model shares: the :class:`ExposureModel` base class and the registry (models by name,
bundled weights). The networks themselves live with their methods: ``loopexpose/methods/<method>/network.py``."""

from loopexpose.models.base import ExposureModel
from loopexpose.models.registry import architectures, bundled, create, load, resolve_device, save

__all__ = ["ExposureModel", "architectures", "bundled", "create", "load", "resolve_device", "save"]
