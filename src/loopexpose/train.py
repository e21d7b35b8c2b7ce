"""``loopexpose train``: read a config, check it, hand it to its method's trainer.

Each method trains in its own package, the same way (:mod:`loopexpose.methods`):

- ``method = "loopexpose"`` (the default): :mod:`loopexpose.methods.loopexpose.train`, the nested loop;
- ``method = "semantic"``: :mod:`loopexpose.methods.semantic.train`, the semantic-aware model.

What both use is shared at the top level: brackets and splits (:mod:`loopexpose.data`, :mod:`loopexpose.brackets`),
config checks (:mod:`loopexpose.config`), checkpoints (:mod:`loopexpose.models`, :mod:`loopexpose.checkpoint`).
The trainers are imported when used, as the registry imports the networks: no shared module imports a method.
"""

from __future__ import annotations

import copy
import os
import tomllib
from pathlib import Path

from loopexpose.errors import LoopExposeError


def load_config(path: str | Path | None, overrides: dict | None = None) -> dict:
    """Read a TOML config over the LoopExpose trainer's defaults and check it whole
    (:func:`loopexpose.methods.loopexpose.train.check_train_config`: unknown keys, types, ranges, choices), so a
    bad config fails before any data is read.

    A config with ``method = "semantic"`` is returned as written: the semantic trainer applies its own defaults
    and checks (:func:`loopexpose.methods.semantic.train.merged_config`).
    """
    from loopexpose.methods.loopexpose.train import DEFAULTS, check_train_config

    user: dict = {}
    if path is not None:
        path = Path(path)
        try:
            user = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise LoopExposeError("no such config file", path) from None
        except tomllib.TOMLDecodeError as exc:
            raise LoopExposeError(f"invalid TOML ({exc})", path) from None
    if user.get("method") == "semantic":
        return {"out_dir": "runs/semantic", **user, **(overrides or {})}
    config = copy.deepcopy(DEFAULTS)
    _merge(config, user, path, "")
    if overrides:
        _merge(config, overrides, path, "")
    return check_train_config(config, path)


def _merge(base: dict, user: dict, path, prefix: str) -> None:
    for key, value in user.items():
        if key not in base and prefix != "model.config.":
            raise LoopExposeError(f"unknown config key {prefix}{key!r}", path)
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, path, f"{prefix}{key}.")
        else:
            base[key] = value


def run(config: dict, device: str = "cpu", resume: bool = False, out_dir: Path | None = None, quiet: bool = False) -> Path:
    """Train with the config's ``method`` (see :func:`load_config`); returns the best checkpoint's path."""
    if config.get("method", "loopexpose") == "semantic":
        from loopexpose.methods.semantic.train import run as run_semantic

        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise LoopExposeError("the semantic trainer runs in one process; start it without torchrun")
        return run_semantic(config, device=device, resume=resume, out_dir=Path(out_dir or config["out_dir"]))
    from loopexpose.methods.loopexpose.train import run as run_loopexpose

    return run_loopexpose(config, device=device, resume=resume, out_dir=out_dir, quiet=quiet)
