"""Tiny linear DNG files for RAW tests: real input for LibRaw (rawpy) with chosen pixels, exposure and white balance.

A linear DNG (photometric ``LinearRaw``) holds demosaiced camera RGB, so a test knows exactly what LibRaw decodes.
The colour matrix makes camera RGB equal to linear sRGB (D65), so the white-balanced decode is ``linear / neutral``
(scaled so the green multiplier is 1), clipped at the white level.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import tifffile

_SRGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
_RATIONAL, _SRATIONAL = 5, 10  # TIFF field types


def _rationals(values) -> tuple[int, ...]:
    pairs = [Fraction(float(v)).limit_denominator(1_000_000) for v in values]
    return tuple(x for f in pairs for x in (f.numerator, f.denominator))


def write_dng(
    path: str | Path,
    linear: np.ndarray,
    exposure_time: float | None = 0.01,
    f_number: float | None = 8.0,
    neutral: tuple[float, float, float] = (1.0, 1.0, 1.0),
    white_level: int = 4095,
    captured: str = "2024:05:01 10:00:00",
) -> Path:
    """Write ``linear`` (``(H, W, 3)`` camera RGB in [0, 1], 1 = the white level) as a linear DNG.

    Args:
        exposure_time, f_number: written as the TIFF/EP ``ExposureTime``/``FNumber`` tags LibRaw reads (``None``:
            left out). No ISO tag: LibRaw reads ISO from the Exif IFD only, which tifffile cannot write.
        neutral: ``AsShotNeutral``, the camera's white balance (multipliers are its inverse).
    """
    path = Path(path)
    data = (np.clip(linear, 0, 1) * white_level + 0.5).astype(np.uint16)
    xyz_to_camera = np.linalg.inv(_SRGB_TO_XYZ).ravel()
    tags = [
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50708, "s", 0, "loopexpose test camera", True),  # UniqueCameraModel
        (50721, _SRATIONAL, 9, _rationals(xyz_to_camera), True),  # ColorMatrix1
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1: D65
        (50728, _RATIONAL, 3, _rationals(neutral), True),  # AsShotNeutral
        (50717, "H", 1, white_level, True),  # WhiteLevel
        (306, "s", 0, captured, True),  # DateTime
    ]
    if exposure_time is not None:
        tags.append((33434, _RATIONAL, 1, _rationals([exposure_time]), True))
    if f_number is not None:
        tags.append((33437, _RATIONAL, 1, _rationals([f_number]), True))
    tifffile.imwrite(path, data, photometric=34892, extratags=tags, metadata=None, subfiletype=0)
    return path
