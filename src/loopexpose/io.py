"""Reading and writing photos, and finding and ordering exposure brackets.

Pixels travel as ``float32`` numpy arrays shaped ``(H, W, 3)`` in ``[0, 1]`` (RGB, EXIF orientation applied) or
as tensors shaped ``(*, 3, H, W)``. Metadata (EXIF with the orientation reset, ICC profile, bit depth) rides
along in :class:`Photo` so that a corrected image can be written back with it.

A *scene* is a folder of images of one static scene taken at different exposures; a *collection* is a folder of
scene folders. :func:`order_bracket` orders a scene's frames from dark to bright by, in turn:

1. EXIF exposure (exposure time x ISO / f-number^2, as EV) when every frame has it;
2. a ``shutter_times.txt`` sidecar in the scene folder (one exposure time in seconds per line, in file-name
   order, or ``name time`` pairs);
3. EV tags in the file names when every frame has a distinct one (MSEC ``_N1.5 _N1 _0 _P1 _P1.5``,
   ``under/normal/over``, ``short/medium/long``, ``m2/zero/p2``, ``EV-2 .. EV+2``);
4. mean luminance.

Frames of one scene with different sizes: a frame whose aspect ratio is within 2% of the first (darkest)
frame's is resized to it with a warning (cameras and converters crop a few pixels); anything else is an error.
"""

from __future__ import annotations

import io as _io
import math
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from loopexpose.errors import LoopExposeError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff"}
_EXIF_IFD = 0x8769
_ORIENTATION = 0x0112
_EXPOSURE_TIME, _F_NUMBER, _ISO = 0x829A, 0x829D, 0x8827
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # Rec. 601, as in JPEG and OpenCV's RGB2GRAY


@dataclass
class Photo:
    """An image read from disk.

    Attributes:
        pixels: ``(H, W, 3)`` float32 RGB in ``[0, 1]``, EXIF orientation applied, alpha dropped.
        path: where it came from.
        bit_depth: 8 or 16, the depth of the file's samples.
        exif: raw EXIF bytes with the orientation tag reset to 1 (pixels are already upright), or ``None``.
        icc: the embedded ICC profile, or ``None``.
    """

    pixels: np.ndarray
    path: Path
    bit_depth: int = 8
    exif: bytes | None = None
    icc: bytes | None = None


def read_image(path: str | os.PathLike) -> Photo:
    """Read a JPEG, PNG or TIFF (8 or 16 bit; grey, RGB or with alpha) as a :class:`Photo`.

    Raises:
        LoopExposeError: the file is missing, not an image, truncated, or of an unsupported depth.
    """
    path = Path(path)
    if not path.exists():
        raise LoopExposeError("no such file", path)
    if path.is_dir():
        raise LoopExposeError("is a folder, expected an image file", path)
    data = np.fromfile(path, dtype=np.uint8)  # np.fromfile + imdecode copes with any characters in the path
    if data.size == 0:
        raise LoopExposeError("empty file", path)
    try:
        with Image.open(_io.BytesIO(data.tobytes())) as meta:
            # PIL reads headers only; decoding is OpenCV's (faster, and it keeps 16-bit RGB, which PIL cannot).
            exif = meta.getexif()
            orientation = int(exif.get(_ORIENTATION, 1) or 1)
            icc = meta.info.get("icc_profile") or None
            if _ORIENTATION in exif:
                exif[_ORIENTATION] = 1
            exif_bytes = exif.tobytes() if len(exif) else None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise LoopExposeError(f"not a readable image ({exc.__class__.__name__})", path) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = cv2.imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if raw is None:
        raise LoopExposeError("cannot decode image data (truncated or corrupt file?)", path)
    if _truncated_jpeg(data, path):
        raise LoopExposeError("truncated JPEG (no end-of-image marker)", path)
    if raw.dtype == np.uint8:
        bit_depth, scale = 8, 255.0
    elif raw.dtype == np.uint16:
        bit_depth, scale = 16, 65535.0
    elif raw.dtype == np.float32:
        bit_depth, scale = 16, 1.0
    else:
        raise LoopExposeError(f"unsupported sample type {raw.dtype}", path)
    if raw.ndim == 2:
        rgb = np.repeat(raw[:, :, None], 3, axis=2)
    elif raw.shape[2] == 1:
        rgb = np.repeat(raw, 3, axis=2)
    elif raw.shape[2] == 2:  # grey + alpha
        rgb = np.repeat(raw[:, :, :1], 3, axis=2)
    else:
        rgb = cv2.cvtColor(raw[:, :, :3], cv2.COLOR_BGR2RGB)
    pixels = np.clip(rgb.astype(np.float32) / np.float32(scale), 0.0, 1.0)
    pixels = np.ascontiguousarray(_apply_orientation(pixels, orientation))
    return Photo(pixels=pixels, path=path, bit_depth=bit_depth, exif=exif_bytes, icc=icc)


def _truncated_jpeg(data: np.ndarray, path: Path) -> bool:
    if path.suffix.lower() not in {".jpg", ".jpeg"}:
        return False
    tail = data[-4096:].tobytes()
    return b"\xff\xd9" not in tail


def _apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Make pixels upright given an EXIF orientation tag (1..8)."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 1)[::-1],
        8: lambda a: np.rot90(a, 1),
    }
    return ops[orientation](pixels) if orientation in ops else pixels


def write_image(
    path: str | os.PathLike,
    pixels: np.ndarray,
    bits: int = 8,
    exif: bytes | None = None,
    icc: bytes | None = None,
    quality: int = 95,
) -> Path:
    """Write ``(H, W, 3)`` float pixels in ``[0, 1]`` atomically (temp file in the same folder, then rename).

    Args:
        path: output file; the suffix picks the format (``.jpg``/``.jpeg``, ``.png``, ``.tif``/``.tiff``).
        pixels: ``(H, W, 3)`` RGB, float in ``[0, 1]`` (values outside are clipped) or uint8/uint16.
        bits: 8 or 16 (16 is PNG and TIFF only).
        exif: EXIF bytes to embed (JPEG, PNG, TIFF at 8 bits; PNG at 16 bits).
        icc: ICC profile to embed (every format and depth).
        quality: JPEG quality, 1..100.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise LoopExposeError(f"unsupported output format {suffix!r} (use .jpg, .png or .tif)", path)
    if bits not in (8, 16):
        raise LoopExposeError(f"bits must be 8 or 16, got {bits}", path)
    if bits == 16 and suffix in {".jpg", ".jpeg"}:
        raise LoopExposeError("JPEG cannot hold 16-bit samples; use .png or .tif", path)
    pixels = np.asarray(pixels)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise LoopExposeError(f"expected (H, W, 3) pixels, got shape {pixels.shape}", path)
    quantised = _quantise(pixels, bits)
    if bits == 8:
        payload = _encode_pil(quantised, suffix, exif, icc, quality)
    else:
        payload = _encode_16bit(quantised, suffix, exif, icc)
    atomic_write_bytes(path, payload)
    return path


def _quantise(pixels: np.ndarray, bits: int) -> np.ndarray:
    top = 255 if bits == 8 else 65535
    dtype = np.uint8 if bits == 8 else np.uint16
    if pixels.dtype == dtype:
        return pixels
    if pixels.dtype == np.uint8:
        return pixels.astype(np.uint16) * 257
    if pixels.dtype == np.uint16:
        return (pixels // 257).astype(np.uint8)
    return (np.clip(pixels.astype(np.float32), 0.0, 1.0) * top + 0.5).astype(dtype)


def _encode_pil(rgb8: np.ndarray, suffix: str, exif: bytes | None, icc: bytes | None, quality: int) -> bytes:
    image = Image.fromarray(np.ascontiguousarray(rgb8), mode="RGB")
    options: dict = {}
    if exif:
        options["exif"] = exif
    if icc:
        options["icc_profile"] = icc
    buffer = _io.BytesIO()
    if suffix in {".jpg", ".jpeg"}:
        image.save(buffer, format="JPEG", quality=int(quality), subsampling=0 if quality >= 90 else 2, **options)
    elif suffix == ".png":
        image.save(buffer, format="PNG", compress_level=3, **options)
    else:
        image.save(buffer, format="TIFF", compression="tiff_deflate", **options)
    return buffer.getvalue()


def _encode_16bit(rgb16: np.ndarray, suffix: str, exif: bytes | None, icc: bytes | None) -> bytes:
    # PIL cannot write 16-bit RGB, so OpenCV encodes and the metadata is added here.
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb16), cv2.COLOR_RGB2BGR)
    if suffix == ".png":
        ok, encoded = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
        if not ok:
            raise LoopExposeError("OpenCV failed to encode 16-bit PNG")
        chunks = []
        if icc:
            import zlib

            chunks.append((b"iCCP", b"icc\x00\x00" + zlib.compress(icc)))
        if exif:
            chunks.append((b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
        return _png_insert_chunks(encoded.tobytes(), chunks)
    import tifffile

    buffer = _io.BytesIO()
    extratags = [(34675, "B", len(icc), icc, True)] if icc else []
    tifffile.imwrite(buffer, rgb16, photometric="rgb", compression="zlib", extratags=extratags)
    return buffer.getvalue()


def _png_insert_chunks(png: bytes, chunks: list[tuple[bytes, bytes]]) -> bytes:
    """Insert ancillary chunks right after IHDR (iCCP must precede IDAT)."""
    import struct
    import zlib

    ihdr_end = 8 + 8 + struct.unpack(">I", png[8:12])[0] + 4
    extra = b"".join(
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        for kind, data in chunks
    )
    return png[:ihdr_end] + extra + png[ihdr_end:]


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write bytes to ``path`` through a temp file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` float array in [0, 1] -> ``(3, H, W)`` float32 tensor in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1).contiguous()


def to_numpy(image: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` tensor in [0, 1] -> ``(H, W, 3)`` float32 array."""
    return image.detach().to("cpu", torch.float32).permute(1, 2, 0).contiguous().numpy()


def luma(pixels: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of ``(..., 3)`` RGB pixels, same range as the input."""
    return pixels @ np.asarray(LUMA_WEIGHTS, dtype=np.float32)


# --------------------------------------------------------------------------------------------- brackets


@dataclass
class Bracket:
    """A scene's frames in exposure order (darkest first).

    Attributes:
        scene: the scene folder.
        paths: frame files, darkest first.
        evs: relative exposure of each frame in stops (0 for the first), or ``None`` when ordered by luminance.
        rule: how the order was found: ``"exif"``, ``"shutter_times"``, ``"filename"`` or ``"luminance"``.
    """

    scene: Path
    paths: list[Path]
    evs: list[float] | None
    rule: str
    mean_luma: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def name(self) -> str:
        return self.scene.name


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder`` (hidden files skipped), sorted by name."""
    folder = Path(folder)
    if not folder.exists():
        raise LoopExposeError("no such folder", folder)
    if not folder.is_dir():
        raise LoopExposeError("not a folder", folder)
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def find_scenes(root: str | os.PathLike) -> list[Path]:
    """Scene folders under ``root``: ``root`` itself if it holds images, else its sub-folders that do (sorted).

    Raises:
        LoopExposeError: ``root`` is missing or holds no images at all.
    """
    root = Path(root)
    if list_images(root):
        return [root]
    scenes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and list_images(p))
    if not scenes:
        raise LoopExposeError("no images found (expected a scene folder or a folder of scene folders)", root)
    return scenes


_NAMED_EV = {
    "under": -1.0, "normal": 0.0, "over": 1.0,
    "short": -1.0, "medium": 0.0, "long": 1.0,
    "m3": -3.0, "m2": -2.0, "m1": -1.0, "zero": 0.0, "p1": 1.0, "p2": 2.0, "p3": 3.0,
}  # fmt: skip
_MSEC_RE = re.compile(r"_(N|P)(\d+(?:\.\d+)?)$|_(0)$")
_EV_RE = re.compile(r"ev\s*([+-]?\d+(?:\.\d+)?)", re.IGNORECASE)
_WORD_RE = re.compile(r"(?:^|[^a-z0-9])(" + "|".join(sorted(_NAMED_EV, key=len, reverse=True)) + r")(?:$|[^a-z0-9])")


def ev_from_filename(name: str) -> float | None:
    """The EV offset a file name announces (``a_N1.5.jpg`` -> -1.5, ``img(p2).png`` -> 2), or ``None``."""
    stem = Path(name).stem
    match = _MSEC_RE.search(stem)
    if match:
        if match.group(3):
            return 0.0
        value = float(match.group(2))
        return -value if match.group(1) == "N" else value
    match = _EV_RE.search(stem)
    if match:
        return float(match.group(1))
    match = _WORD_RE.search(stem.lower())
    if match:
        return _NAMED_EV[match.group(1)]
    return None


def exif_ev(path: Path) -> float | None:
    """Exposure of a file from EXIF as log2(time x ISO / f-number^2) (larger is brighter), or ``None``."""
    try:
        with Image.open(path) as image:
            sub = image.getexif().get_ifd(_EXIF_IFD)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return None
    time, f_number, iso = sub.get(_EXPOSURE_TIME), sub.get(_F_NUMBER), sub.get(_ISO)
    try:
        time = float(time)
        f_number = float(f_number) if f_number else 1.0
        iso = float(iso[0] if isinstance(iso, tuple) else iso) if iso else 100.0
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not (time > 0 and f_number > 0 and iso > 0):
        return None
    return math.log2(time * iso / 100.0 / f_number**2)


def _sidecar_times(scene: Path, paths: list[Path]) -> list[float] | None:
    sidecar = scene / "shutter_times.txt"
    if not sidecar.is_file():
        return None
    rows = [line.split() for line in sidecar.read_text().splitlines() if line.strip() and not line.startswith("#")]
    try:
        if all(len(r) == 2 for r in rows):
            table = {name: _parse_time(t) for name, t in rows}
            return [table[p.name] for p in paths]
        if len(rows) == len(paths) and all(len(r) == 1 for r in rows):
            return [_parse_time(r[0]) for r in rows]
    except (KeyError, ValueError, ZeroDivisionError):
        pass
    raise LoopExposeError("cannot match shutter_times.txt to the scene's images (one time per image expected)", sidecar)


def _parse_time(text: str) -> float:
    if "/" in text:
        num, den = text.split("/")
        return float(num) / float(den)
    return float(text)


def mean_luma(path: Path, max_side: int = 256) -> float:
    """Mean Rec. 601 luma of a file in [0, 1], measured on a copy whose long side is at most ``max_side``."""
    pixels = read_image(path).pixels
    scale = max_side / max(pixels.shape[:2])
    if scale < 1:
        pixels = cv2.resize(pixels, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return float(luma(pixels).mean())


def order_bracket(scene: str | os.PathLike, paths: list[Path] | None = None) -> Bracket:
    """Order a scene's frames from darkest to brightest (rules in the module docstring).

    Args:
        scene: the scene folder.
        paths: its frames (default: every image in the folder).
    """
    scene = Path(scene)
    paths = list(paths) if paths is not None else list_images(scene)
    if not paths:
        raise LoopExposeError("no images in scene folder", scene)
    lumas = [mean_luma(p) for p in paths]
    exposure: list[float] | None = None
    rule = "luminance"
    evs = [exif_ev(p) for p in paths]
    if all(e is not None for e in evs) and len(set(evs)) == len(evs):
        exposure, rule = evs, "exif"
    if exposure is None:
        times = _sidecar_times(scene, paths)
        if times is not None:
            exposure, rule = [math.log2(t) for t in times], "shutter_times"
    if exposure is None:
        tags = [ev_from_filename(p.name) for p in paths]
        if len(paths) > 1 and all(t is not None for t in tags) and len(set(tags)) == len(tags):
            exposure, rule = tags, "filename"
    keys = exposure if exposure is not None else lumas
    order = sorted(range(len(paths)), key=lambda i: (keys[i], lumas[i]))
    ordered_evs = None
    if exposure is not None:
        base = exposure[order[0]]
        ordered_evs = [float(exposure[i] - base) for i in order]
    return Bracket(
        scene=scene,
        paths=[paths[i] for i in order],
        evs=ordered_evs,
        rule=rule,
        mean_luma=[lumas[i] for i in order],
    )


def load_bracket(bracket: Bracket | str | os.PathLike, max_side: int = 0) -> torch.Tensor:
    """Load a bracket's frames as one ``(N, 3, H, W)`` tensor in [0, 1], darkest first.

    Args:
        bracket: a :class:`Bracket` or a scene folder (ordered with :func:`order_bracket`).
        max_side: if > 0, frames are downscaled (area filter) so the long side is at most this.

    Frames whose size differs from the first frame's are resized to it with a warning when the aspect ratio
    agrees within 2%; otherwise :class:`LoopExposeError`.
    """
    if not isinstance(bracket, Bracket):
        bracket = order_bracket(bracket)
    frames = []
    target: tuple[int, int] | None = None
    for path in bracket.paths:
        pixels = read_image(path).pixels
        if max_side and max(pixels.shape[:2]) > max_side:
            scale = max_side / max(pixels.shape[:2])
            size = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
            pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
        if target is None:
            target = pixels.shape[:2]
        elif pixels.shape[:2] != target:
            ratio = (pixels.shape[1] / pixels.shape[0]) / (target[1] / target[0])
            if abs(ratio - 1) > 0.02:
                raise LoopExposeError(
                    f"frame is {pixels.shape[1]}x{pixels.shape[0]} but the scene's first frame is "
                    f"{target[1]}x{target[0]} (different aspect ratio)",
                    path,
                )
            warnings.warn(f"{path}: resized {pixels.shape[1]}x{pixels.shape[0]} to {target[1]}x{target[0]}")
            pixels = cv2.resize(pixels, (target[1], target[0]), interpolation=cv2.INTER_AREA)
        frames.append(to_tensor(pixels))
    return torch.stack(frames)
