"""Shared fixtures. Tests that need the real brackets use ``data_root`` and skip when it is absent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loopexpose.paths import data_root as _data_root

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def data_root():
    root = _data_root()
    if not (root / "brackets").is_dir():
        pytest.skip(f"real data not found at {root} (set LOOPEXPOSE_DATA or place it at ../shared/data)")
    return root


@pytest.fixture(scope="session")
def brackets_root(data_root):
    return data_root / "brackets"


@pytest.fixture()
def rng():
    return np.random.default_rng(0)


def synthetic_bracket(n: int = 3, height: int = 37, width: int = 53, seed: int = 0) -> torch.Tensor:
    """An ``(n, 3, H, W)`` bracket rendered from a scikit-image photo at EVs spread over -2..+2."""
    from skimage import data, transform

    photo = transform.resize(data.astronaut(), (height, width), anti_aliasing=True).astype(np.float32)
    linear = torch.from_numpy(photo).permute(2, 0, 1) ** 2.2
    evs = torch.linspace(-2, 2, n) if n > 1 else torch.zeros(1)
    frames = [(linear * 2.0**ev).clamp(0, 1) ** (1 / 2.2) for ev in evs]
    return torch.stack(frames)


def randomised_curvegrid(seed: int = 0):
    """A CurveGrid with random heads, so correction visibly changes images (a fresh one is the identity)."""
    from loopexpose.models import create

    torch.manual_seed(seed)
    model = create("curvegrid")
    for head in (model.curve_head, model.grid_head):
        torch.nn.init.normal_(head.weight, std=0.3)
        torch.nn.init.normal_(head.bias, std=0.3)
    return model.eval()


@pytest.fixture(autouse=True)
def _restore_pixel_limit():
    """``--max-pixels`` sets ``$LOOPEXPOSE_MAX_PIXELS`` for the process (so that worker processes inherit it);
    commands run in this process must not leave theirs to the next test."""
    import os

    from loopexpose.io import MAX_PIXELS_ENV

    saved = os.environ.pop(MAX_PIXELS_ENV, None)
    yield
    os.environ.pop(MAX_PIXELS_ENV, None)
    if saved is not None:
        os.environ[MAX_PIXELS_ENV] = saved
