"""Where the real data lives: ``$LOOPEXPOSE_DATA``, else ``../shared/data`` next to the checkout."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_root() -> Path:
    """The folder holding ``brackets/``, ``singles/`` and ``raw/`` (it may not exist)."""
    env = os.environ.get("LOOPEXPOSE_DATA")
    if env:
        return Path(env)
    for base in (Path.cwd(), REPO_ROOT):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return REPO_ROOT.parent / "shared" / "data"
