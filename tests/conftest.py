"""Shared fixtures. Tests that need the real brackets use ``data_root`` and skip when it is absent."""

from __future__ import annotations

from pathlib import Path

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


@pytest.fixture()
def frame_reads(monkeypatch):
    """Records how bracket frames are read from here on: ``reads.decoded``, every file decoded at full size
    (``loopexpose.io._decode`` as :mod:`loopexpose.brackets` calls it), and ``reads.measured``, every file whose
    mean luma was measured on a decode of its own (``discover._measure``). A PNG bracket read once, as
    :func:`loopexpose.brackets.read_bracket` reads it, decodes each frame once and measures none on its own."""
    from types import SimpleNamespace

    from loopexpose.brackets import discover

    reads = SimpleNamespace(decoded=[], measured=[])
    decode, measure = discover._decode, discover._measure
    monkeypatch.setattr(discover, "_decode", lambda path, *a: reads.decoded.append(Path(path)) or decode(path, *a))
    monkeypatch.setattr(discover, "_measure", lambda path: reads.measured.append(Path(path)) or measure(path))
    return reads


def camera_motion(dx: float, dy: float, degrees: float, height: int, width: int) -> np.ndarray:
    """``(3, 3)`` reference pixel -> frame pixel: the frame's content turned ``degrees`` clockwise on screen about
    the centre and moved by ``(dx, dy)`` pixels (the convention of :class:`loopexpose.brackets.align.Motion`)."""
    angle = np.radians(degrees)
    c, s = np.cos(angle), np.sin(angle)
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    matrix = np.eye(3)
    matrix[:2, :2] = [[c, -s], [s, c]]
    matrix[:2, 2] = centre + (dx, dy) - matrix[:2, :2] @ centre
    return matrix


def shaken_bracket(
    motions: list[np.ndarray],
    evs: tuple[float, ...] = (-2.0, 0.0, 2.0),
    photo: str = "coffee",
    side: int = 320,
    inset: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(unshaken, shaken)``: a scikit-image photo rendered at ``evs`` with :mod:`loopexpose.synth` (long side
    ``side``), seen through a window inset by ``inset`` of each side; in ``shaken`` frame ``i`` sees the window
    moved by ``motions[i]`` (reference pixel -> frame pixel, see :func:`camera_motion`), sampled from the whole
    photo so that no border is invented. Both ``(N, 3, h, w)`` float32 in [0, 1], quantised to 8 bits."""
    import cv2
    from skimage import data

    from loopexpose.synth import render_exposure, srgb_to_linear

    pixels = getattr(data, photo)()[:, :, :3]
    scale = side / max(pixels.shape[:2])
    pixels = cv2.resize(pixels, (round(pixels.shape[1] * scale), round(pixels.shape[0] * scale)),
                        interpolation=cv2.INTER_AREA)  # fmt: skip
    linear = srgb_to_linear(torch.from_numpy(pixels.astype(np.float32) / 255).permute(2, 0, 1))
    frames = torch.stack([render_exposure(linear, ev) for ev in evs])
    height, width = frames.shape[-2:]
    mx, my = round(inset * width), round(inset * height)
    w, h = width - 2 * mx, height - 2 * my
    offset = np.array([[1, 0, mx], [0, 1, my], [0, 0, 1]], np.float64)
    shaken = []
    for frame, motion in zip(frames, motions):
        to_photo = offset @ np.linalg.inv(motion)  # shaken frame pixel -> photo pixel
        planes = [cv2.warpPerspective(plane.numpy(), to_photo, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)
                  for plane in frame]  # fmt: skip
        shaken.append(torch.from_numpy(np.stack(planes)))
    unshaken = frames[:, :, my : my + h, mx : mx + w]
    return (torch.round(unshaken.clamp(0, 1) * 255) / 255).contiguous(), torch.round(torch.stack(shaken).clamp(0, 1) * 255) / 255
