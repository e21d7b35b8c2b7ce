"""Camera RAW files (rawpy/LibRaw, the optional ``raw`` extra): decoding, rendering and exposure metadata.

``loopexpose correct`` and ``loopexpose fuse`` read RAW files (:data:`loopexpose.io.RAW_SUFFIXES`) through
:func:`decode`, which :func:`loopexpose.io.read_image` and :func:`loopexpose.brackets.load_bracket` call for them, and
``prepare raw`` renders training brackets from them with :func:`decode_raw`. Every RAW is rendered the same way:

1. LibRaw's linear, demosaiced output in sRGB primaries (``rawpy.postprocess``: no auto-brightness, no tone
   curve, highlights clipped at the sensor's white level, 16 bits; the file's orientation applied), white-balanced
   with the camera's multipliers (LibRaw's daylight ones where the file has none);
2. the sRGB transfer curve (:func:`loopexpose.synth.tone_encode`, the curve ``prepare raw`` renders the training
   brackets with), as 16-bit samples.

No brightness is chosen per file: LibRaw's auto-brightness and its data-dependent white-level adjustment
(``adjust_maximum_thr``) are off, so one scene radiance gives values proportional to the frame's exposure. A RAW
bracket therefore needs no exposure normalisation to be consistent: its frames differ exactly by their exposure
ratio (time x ISO / f-number^2), as the frames of a JPEG bracket from the camera do, and fusion (Mertens and the
LoopExpose MEF, which work on display-referred frames) sees what it expects. The frames of one bracket also share
one white balance (:func:`bracket_white_balance`: the middle frame's, for auto-exposure bracketing the metered
0 EV shot), so that a camera that re-estimated its auto white balance between shots does not give the fusion
frames of different colour.

Exposure comes from the metadata LibRaw reads (``raw.other``: shutter time, f-number, ISO, capture time) and is
presented as EXIF (:meth:`RawInfo.exif`), so RAW frames are ordered by the same rule as JPEGs (EXIF exposure
time x ISO / f-number^2, :mod:`loopexpose.io`), fall back the same way when it is missing or repeated (mean luma
of the rendering, measured at half size with each frame's own white balance), and give their EXIF to
``correct``'s outputs. RAW input is written as 16-bit PNG or TIFF by default (JPEG stays 8-bit).

Bad input, each a one-line :class:`~loopexpose.errors.LoopExposeError` naming the file: rawpy not installed
(``pip install 'loopexpose[raw]'``), a format LibRaw does not read, a truncated or corrupt file (also when LibRaw
only complains on stderr and decodes the rest), an image above the pixel limit (checked from the header, before
the pixels are unpacked), and a bracket mixing RAW files with other images (:func:`check_bracket`).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image, TiffImagePlugin

from loopexpose.errors import LoopExposeError
from loopexpose.io import RAW_SUFFIXES, _captured_stderr, brightest_channel, check_pixels, darkest_channel, luma

if TYPE_CHECKING:
    import torch

__all__ = [
    "INSTALL_HINT", "RAW_SUFFIXES", "RawDecode", "RawInfo", "bracket_decoder", "bracket_white_balance",
    "camera_to_srgb_matrix", "check_bracket", "decode", "decode_raw", "is_raw", "measure", "rawpy_options",
    "read_info", "render", "require_rawpy",
]  # fmt: skip

INSTALL_HINT = "pip install 'loopexpose[raw]'"
_EXIF_IFD = 0x8769
_EXPOSURE_TIME, _F_NUMBER, _ISO, _DATE_ORIGINAL, _FOCAL_LENGTH = 0x829A, 0x829D, 0x8827, 0x9003, 0x920A


def is_raw(path: str | os.PathLike) -> bool:
    """True for a file whose suffix is a camera RAW format (:data:`RAW_SUFFIXES`, any case).

    >>> is_raw("IMG_0001.CR2"), is_raw("IMG_0001.JPG")
    (True, False)
    """
    return Path(path).suffix.lower() in RAW_SUFFIXES


def require_rawpy(path: object = None):
    """Import rawpy (the optional ``raw`` extra), or raise a one-line error saying how to install it.

    Args:
        path: the RAW file that needs it, named in the error.
    """
    try:
        import rawpy
    except ImportError:
        raise LoopExposeError(f"reading camera RAW files needs rawpy: {INSTALL_HINT}", path) from None
    return rawpy


def rawpy_options(rawpy, output_color: str = "raw", half_size: bool = False) -> dict:
    """The ``rawpy.postprocess`` options of our linear decode (camera white balance, no auto-brightness)."""
    return dict(
        output_color=getattr(rawpy.ColorSpace, output_color),
        gamma=(1, 1),
        no_auto_bright=True,
        use_camera_wb=True,
        output_bps=16,
        half_size=half_size,
        highlight_mode=rawpy.HighlightMode.Clip,
    )


# ------------------------------------------------------------------------------------------------ metadata


@dataclass(frozen=True)
class RawInfo:
    """What a RAW file's header says (read without unpacking the pixels).

    Attributes:
        path: the file.
        width, height: the rendered size, upright (LibRaw's orientation applied).
        exposure_time: seconds, or ``None`` when unknown.
        f_number: aperture, or ``None``.
        iso: ISO speed, or ``None``.
        captured: capture time, or ``None``.
        focal_length: millimetres, or ``None``.
        white_balance: the camera's white-balance multipliers (R, G, B, G2), or ``None`` when the file has none.
    """

    path: Path
    width: int
    height: int
    exposure_time: float | None = None
    f_number: float | None = None
    iso: float | None = None
    captured: datetime | None = None
    focal_length: float | None = None
    white_balance: tuple[float, ...] | None = None

    def exif(self) -> Image.Exif:
        """The exposure metadata as EXIF (Exif sub-IFD: exposure time, f-number, ISO, capture time, focal length)."""
        exif = Image.Exif()
        sub = exif.get_ifd(_EXIF_IFD)
        if self.exposure_time:
            sub[_EXPOSURE_TIME] = _rational(self.exposure_time)
        if self.f_number:
            sub[_F_NUMBER] = _rational(self.f_number)
        if self.iso:
            sub[_ISO] = int(round(self.iso))
        if self.focal_length:
            sub[_FOCAL_LENGTH] = _rational(self.focal_length)
        if self.captured is not None:
            sub[_DATE_ORIGINAL] = self.captured.strftime("%Y:%m:%d %H:%M:%S")
        return exif

    @property
    def ev(self) -> float | None:
        """log2(time x ISO/100 / f-number^2) as :func:`loopexpose.brackets.exif_ev` computes it for other files (missing
        f-number: f/1, missing ISO: 100), or ``None`` without an exposure time."""
        from loopexpose.brackets.discover import _exif_ev_of

        return _exif_ev_of(self.exif())


def _rational(value: float) -> TiffImagePlugin.IFDRational:
    # LibRaw hands over float32 values (1/230 s as 0.00435000006): 6 significant digits, as a small fraction
    fraction = Fraction(float(f"{value:.6g}")).limit_denominator(1_000_000)
    return TiffImagePlugin.IFDRational(fraction.numerator, fraction.denominator)


def _positive(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _info(raw, path: Path) -> RawInfo:
    sizes = raw.sizes
    width, height = (sizes.height, sizes.width) if sizes.flip in (5, 6) else (sizes.width, sizes.height)
    other = getattr(raw, "other", None)  # rawpy >= 0.22; older versions give no exposure metadata
    captured = getattr(other, "timestamp", None)
    multipliers = tuple(float(v) for v in raw.camera_whitebalance)
    return RawInfo(
        path=path,
        width=int(width),
        height=int(height),
        exposure_time=_positive(getattr(other, "shutter_speed", None)),
        f_number=_positive(getattr(other, "aperture", None)),
        iso=_positive(getattr(other, "iso_speed", None)),
        captured=captured if isinstance(captured, datetime) and captured.year > 1970 else None,
        focal_length=_positive(getattr(other, "focal_length", None)),
        white_balance=multipliers if len(multipliers) >= 3 and all(_positive(v) for v in multipliers[:3]) else None,
    )


# -------------------------------------------------------------------------------------------- opening files


def _with_raw(path: str | os.PathLike, work: Callable):
    """Open ``path`` with LibRaw, check its size against the pixel limit from the header, run ``work(raw, rawpy,
    info)`` and return its result; every failure becomes one :class:`LoopExposeError` naming the file.

    LibRaw prints some problems (``Unexpected end of file``, ``Corrupt data near ...``) on stderr and decodes what it
    can: those are captured and the file is refused as corrupt, as :mod:`loopexpose.io` does for JPEG and PNG.
    """
    path = Path(path)
    if not path.exists():
        raise LoopExposeError("no such file", path)
    if path.is_dir():
        raise LoopExposeError("is a folder, expected an image file", path)
    if path.stat().st_size == 0:
        raise LoopExposeError("empty file", path)
    rawpy = require_rawpy(path)
    complaints: list[str] = []
    try:
        with _captured_stderr() as complaints, rawpy.RawPy() as raw:
            raw.open_file(str(path))  # the header only: pixels are unpacked by postprocess
            info = _info(raw, path)
            check_pixels(info.width, info.height, path)
            result = work(raw, rawpy, info)
    except rawpy.LibRawFileUnsupportedError:
        raise LoopExposeError("not a RAW format LibRaw reads (unsupported camera or not a RAW file)", path) from None
    except rawpy.LibRawTooBigError:
        raise LoopExposeError("RAW image too large for LibRaw", path) from None
    except MemoryError:
        raise LoopExposeError("not enough memory to decode this RAW file", path) from None
    except (rawpy.LibRawError, OSError, ValueError) as exc:
        raise LoopExposeError(f"truncated or corrupt RAW file ({_detail(exc, complaints, path)})", path) from None
    if complaints:
        raise LoopExposeError(f"corrupt RAW data (LibRaw: {_strip_name(complaints[0], path)})", path)
    return result


def _detail(exc: Exception, complaints: list[str], path: Path) -> str:
    if complaints:  # what LibRaw printed says more than its error code ("Input/output error")
        return f"LibRaw: {_strip_name(complaints[0], path)}"
    text = exc.args[0] if len(exc.args) == 1 else str(exc)
    text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)  # LibRaw's messages are bytes
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def _strip_name(line: str, path: Path) -> str:
    """``"photo.CR2: Unexpected end of file"`` -> ``"Unexpected end of file"`` (LibRaw prefixes the file name)."""
    prefix = f"{path}: "
    return line[len(prefix):] if line.startswith(prefix) else line


def read_info(path: str | os.PathLike) -> RawInfo:
    """A RAW file's size, exposure metadata and white balance, from its header (no pixels are unpacked).

    Raises:
        LoopExposeError: rawpy missing, not a RAW LibRaw reads, a damaged header, or above the pixel limit.
    """
    return _with_raw(path, lambda raw, rawpy, info: info)


# ---------------------------------------------------------------------------------------------- rendering


def _postprocess(raw, rawpy, half_size: bool, white_balance: Sequence[float] | None) -> np.ndarray:
    """LibRaw's linear sRGB-primaries rendering, ``(H, W, 3)`` uint16, upright."""
    options = rawpy_options(rawpy, "sRGB", half_size)
    # LibRaw lowers the white level to the brightest pixel when that lies within 25% of it (adjust_maximum_thr):
    # a per-file brightness that would break the exposure ratios between the frames of a bracket. Off.
    options["adjust_maximum_thr"] = 0.0
    if white_balance is not None:  # (R, G, B, G2); a missing or zero G2 means "as G" to LibRaw
        multipliers = [float(v) for v in white_balance][:4]
        options.update(use_camera_wb=False, user_wb=multipliers + [0.0] * (4 - len(multipliers)))
    return raw.postprocess(**options)


@functools.lru_cache(maxsize=1)
def _srgb_table() -> np.ndarray:
    """The sRGB transfer curve of :func:`loopexpose.synth.tone_encode` for every 16-bit linear value: applied by
    table lookup, it is exact at 16 bits and needs no float copy of the image."""
    import torch

    from loopexpose.synth import tone_encode

    ramp = torch.arange(65536, dtype=torch.float64).div_(65535).view(1, 1, -1).expand(3, 1, -1)
    return (tone_encode(ramp)[0, 0].numpy() * 65535 + 0.5).astype(np.uint16)


def render(
    path: str | os.PathLike, max_side: int = 0, white_balance: Sequence[float] | None = None
) -> tuple[np.ndarray, RawInfo]:
    """Render a RAW file for correction or fusion (the pipeline in this module's docstring).

    Args:
        path: the RAW file.
        max_side: if > 0, the long side is at most this: LibRaw's half-size mode (no demosaicing) when that still
            leaves at least ``max_side``, then an area filter in linear light.
        white_balance: multipliers (R, G, B[, G2]) to use instead of the file's own (:func:`bracket_white_balance`).

    Returns:
        ``(pixels, info)``: ``(H, W, 3)`` uint16 sRGB, upright, and the header's :class:`RawInfo`.

    Raises:
        LoopExposeError: see :func:`read_info`; also a truncated or corrupt file.
    """

    def work(raw, rawpy, info: RawInfo) -> tuple[np.ndarray, RawInfo]:
        long_side = max(info.width, info.height)
        half = bool(max_side) and long_side // 2 >= max_side
        linear = _postprocess(raw, rawpy, half, white_balance)
        if max_side and long_side > max_side:
            scale = max_side / long_side  # target from the full size, so frames of one size stay one size
            size = (max(1, round(info.width * scale)), max(1, round(info.height * scale)))
            linear = cv2.resize(linear, size, interpolation=cv2.INTER_AREA)
        return linear, info

    linear, info = _with_raw(path, work)
    return np.ascontiguousarray(_srgb_table()[linear]), info


def decode(
    path: str | os.PathLike, max_side: int = 0, white_balance: Sequence[float] | None = None
) -> tuple[np.ndarray, int, bytes | None, bytes | None]:
    """:func:`render` in the form :mod:`loopexpose.io` decodes other files: ``(uint16 (H, W, 3) sRGB, 16, EXIF
    bytes, None)`` (no ICC profile: the pixels are sRGB)."""
    pixels, info = render(path, max_side, white_balance)
    exif = info.exif()
    return pixels, 16, exif.tobytes() if len(exif.get_ifd(_EXIF_IFD)) else None, None


def measure(path: str | os.PathLike) -> tuple[float, float | None]:
    """``(mean Rec. 601 luma in [0, 1], EXIF EV or None)`` of a RAW file, for bracket ordering: the luma of its
    rendering at half size (the file's own white balance) on a thumbnail of at most 256 pixels a side."""

    def work(raw, rawpy, info: RawInfo) -> tuple[float, float | None]:
        linear = _postprocess(raw, rawpy, True, None)
        scale = min(1.0, 256 / max(linear.shape[:2]))
        if scale < 1:
            size = (max(1, round(linear.shape[1] * scale)), max(1, round(linear.shape[0] * scale)))
            linear = cv2.resize(linear, size, interpolation=cv2.INTER_AREA)
        encoded = _srgb_table()[linear].astype(np.float32) / np.float32(65535)
        return float(luma(encoded).mean()), info.ev

    return _with_raw(path, work)


# ----------------------------------------------------------------------------------------------- brackets


def check_bracket(paths: Sequence[str | os.PathLike], scene: object = None) -> None:
    """Refuse a bracket that mixes RAW files with other images.

    A RAW frame rendered here and a JPEG, PNG or TIFF rendered by a camera or a converter differ in white balance,
    tone curve and bit depth, so their fusion would mix two renderings of the scene; the frames of a bracket must
    be of one kind. (A camera's RAW+JPEG pairs in one folder hit this: keep one kind in the scene folder.)

    Raises:
        LoopExposeError: one line naming ``scene``, how many frames are of each kind, and a few of their names.
    """
    raws = [Path(p).name for p in paths if is_raw(p)]
    others = [Path(p).name for p in paths if not is_raw(p)]
    if raws and others:
        raise LoopExposeError(
            f"bracket mixes {len(raws)} RAW file(s) ({_few(raws)}) with {len(others)} other image(s) ({_few(others)}); "
            "RAW and camera-rendered frames differ in colour and tone: keep one kind per scene folder "
            "(for RAW+JPEG pairs, move the JPEGs out)",
            scene,
        )


def _few(names: list[str], shown: int = 2) -> str:
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def bracket_white_balance(paths: Sequence[str | os.PathLike]) -> tuple[float, ...] | None:
    """The white balance every frame of a RAW bracket is rendered with: the camera's multipliers of the middle
    frame of ``paths`` (ordered darkest first: for auto-exposure bracketing the metered 0 EV shot), else of the
    first frame that has any; ``None`` when no frame has them (LibRaw's daylight multipliers for all)."""
    if not paths:
        return None
    middle = len(paths) // 2
    for path in [paths[middle], *paths[:middle], *paths[middle + 1:]]:
        balance = read_info(path).white_balance
        if balance is not None:
            return balance
    return None


def bracket_decoder(paths: Sequence[str | os.PathLike]) -> Callable[..., tuple[np.ndarray, int, bytes | None, None]]:
    """``decode(path, max_side=0)`` for the frames of one RAW bracket (``paths`` ordered darkest first): every frame
    with the white balance of :func:`bracket_white_balance`.

    Raises:
        LoopExposeError: the bracket mixes RAW files with other images (:func:`check_bracket`), or a frame's header
            cannot be read.
    """
    check_bracket(paths)
    balance = bracket_white_balance(paths)

    def decode_frame(path: str | os.PathLike, max_side: int = 0):
        return decode(path, max_side, white_balance=balance)

    return decode_frame


# ------------------------------------------------------------------------- linear decode for `prepare raw`


@dataclass
class RawDecode:
    """A RAW file decoded for bracket rendering.

    Attributes:
        linear: ``(3, H, W)`` float32 linear camera RGB, white-balanced, in [0, 1] (1 = white level).
        matrix: ``(3, 3)`` camera RGB -> linear sRGB, or ``None`` when ``linear`` is already linear sRGB.
        info: what the decoder reported (for the sidecar).
    """

    linear: torch.Tensor
    matrix: torch.Tensor | None
    info: dict = field(default_factory=dict)


def camera_to_srgb_matrix(camera: np.ndarray, srgb: np.ndarray, min_pixels: int = 1000) -> np.ndarray | None:
    """Fit the 3x3 matrix LibRaw applied to go from camera RGB to linear sRGB, from two renderings of one RAW.

    rawpy does not expose LibRaw's camera matrix for every camera (``rgb_xyz_matrix`` is zero for many older
    models although LibRaw still applies a built-in one), so we recover it: the two linear renderings differ only
    by that matrix, which least squares on pixels clipped in neither recovers to 16-bit precision.

    Args:
        camera: ``(H, W, 3)`` linear camera-RGB rendering in [0, 1].
        srgb: ``(H, W, 3)`` linear sRGB rendering of the same RAW in [0, 1].
        min_pixels: fewest usable pixels for a trustworthy fit.

    Returns:
        ``(3, 3)`` matrix (rows = sRGB channels), or ``None`` when the fit is not trustworthy.
    """
    cam = camera.reshape(-1, 3).astype(np.float64)
    out = srgb.reshape(-1, 3).astype(np.float64)
    usable = (brightest_channel(cam) < 0.98) & (brightest_channel(out) < 0.98)
    usable &= (darkest_channel(out) > 0.002) & (darkest_channel(cam) > 0.002)
    if np.count_nonzero(usable) < min_pixels:
        return None
    cam, out = cam[usable], out[usable]  # gathered once, not once per use
    solution, *_ = np.linalg.lstsq(cam, out, rcond=None)
    matrix = solution.T
    residual = np.abs(cam @ solution - out).max()
    if not np.all(np.isfinite(matrix)) or residual > 2e-3:
        return None
    return matrix


def decode_raw(path: str | os.PathLike, half_size: bool = False, max_side: int = 0) -> RawDecode:
    """Decode a camera RAW with rawpy to linear, white-balanced camera RGB (no auto-brightness, no tone curve), for
    ``prepare raw``, which scales it by ``2**EV`` before clipping and so needs the camera's own colour space.

    Args:
        path: any RAW that LibRaw reads.
        half_size: LibRaw's half-size mode (2x smaller, no demosaicing: fast).
        max_side: if > 0, downscale (area filter, in linear light) so the long side is at most this.

    Raises:
        LoopExposeError: rawpy is missing or the file is not a RAW it can decode (see :func:`read_info`).
    """
    import torch

    from loopexpose.io import to_tensor

    def work(raw, rawpy, _info: RawInfo):
        camera = raw.postprocess(**rawpy_options(rawpy, "raw", half_size)).astype(np.float32) / 65535.0
        # The matrix is fitted on half-size renderings: same colour pipeline, a quarter of the pixels.
        fit_cam = raw.postprocess(**rawpy_options(rawpy, "raw", True)).astype(np.float32) / 65535.0
        fit_srgb = raw.postprocess(**rawpy_options(rawpy, "sRGB", True)).astype(np.float32) / 65535.0
        matrix = camera_to_srgb_matrix(fit_cam, fit_srgb)
        if matrix is None:  # fall back to LibRaw's sRGB output (clipping then happens after the matrix)
            camera = raw.postprocess(**rawpy_options(rawpy, "sRGB", half_size)).astype(np.float32) / 65535.0
        info = {
            "white_level": int(raw.white_level),
            "black_level_per_channel": [int(v) for v in raw.black_level_per_channel],
            "camera_whitebalance": [round(float(v), 6) for v in raw.camera_whitebalance],
            "color_desc": raw.color_desc.decode(errors="replace"),
            "rawpy_version": rawpy.__version__,
            "libraw_version": ".".join(str(v) for v in rawpy.libraw_version),
        }
        return camera, matrix, info

    camera, matrix, info = _with_raw(path, work)
    if max_side and max(camera.shape[:2]) > max_side:
        scale = max_side / max(camera.shape[:2])
        size = (max(1, round(camera.shape[1] * scale)), max(1, round(camera.shape[0] * scale)))
        camera = cv2.resize(camera, size, interpolation=cv2.INTER_AREA)
    info.update(
        camera_to_srgb=None if matrix is None else [[round(float(v), 6) for v in row] for row in matrix],
        clipped_fraction_at_ev0=round(float((brightest_channel(camera) >= 0.999).mean()), 6),
        height=int(camera.shape[0]),
        width=int(camera.shape[1]),
    )
    return RawDecode(
        linear=to_tensor(camera),
        matrix=None if matrix is None else torch.from_numpy(matrix.astype(np.float32)),
        info=info,
    )
