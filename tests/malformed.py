"""A corpus of malformed and unusual image files, generated on the fly, with the outcome each should have.

Used by ``test_reliability.py`` to run every command that reads images over the same inputs. Each case is a
file name, its bytes, and either ``None`` (a valid image: it must be processed) or a piece of the one-line
error it must give. Nothing here is random: every file is the same on every run.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image


@dataclass(frozen=True)
class Case:
    """One file of the corpus: ``error`` is ``None`` for a valid image, else a fragment of its error line
    (``""``: any error)."""

    name: str
    payload: bytes
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


def photo(height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    """A smooth ``(H, W, 3)`` uint8 photo-like image (JPEG-friendly, not noise)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = seed * 0.7
    rgb = np.stack([np.sin(x / 5 + phase), np.cos(y / 4 - phase), np.sin((x + y) / 7)], axis=-1)
    return ((rgb * 0.4 + 0.5) * 200 + 20).astype(np.uint8)


def encode(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def tiff(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header announces ``width x height`` RGB pixels, with one tiny IDAT (a decompression-bomb
    header without the bomb: the size check must fire before any decoding)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def animated_png() -> bytes:
    frames = [Image.fromarray(photo(seed=s)) for s in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def corpus() -> list[Case]:
    """Every case, valid ones first."""
    rgb = photo(96, 128)  # big enough that cuts at 30% and more fall in the pixel data, not the headers
    jpeg, png, tif = encode(rgb, "JPEG", quality=90), encode(rgb, "PNG"), tiff(rgb, photometric="rgb")
    floats = rgb.astype(np.float32) / 255
    grey16 = rgb[:, :, 0].astype(np.uint16) * 257
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    odd_names = ["it's \"quoted\".png", "[red]x[oops] [raw].png", "ünïcødé 写真 (1).png", "a;b&c $HOME.png"]
    cases = [
        Case("plain.jpg", jpeg, None),
        Case("png_named.jpg", png, None),  # wrong extension: read by content
        Case("cmyk.jpg", _cmyk_jpeg(rgb), None),
        Case("cmyk.tif", _save(Image.fromarray(rgb).convert("CMYK"), "TIFF"), None),
        Case("rgb16.png", _png16(rgb), None),
        Case("grey16.png", encode(grey16, "PNG"), None),
        Case("palette.png", _save(palette, "PNG"), None),
        Case("animated.png", animated_png(), None),  # APNG: the first frame
        Case("float32.tif", tiff(floats, photometric="rgb"), None),
        Case("float16.tif", tiff(floats.astype(np.float16), photometric="rgb"), None),
        Case("one_pixel.png", encode(rgb[:1, :1], "PNG"), None),
        Case("wide_strip.png", encode(np.tile(rgb[:2], (1, 125, 1)), "PNG"), None),  # 4000 x 2
        *(Case(name, png, None) for name in odd_names),
        Case("empty.png", b"", "empty file"),
        Case("text.jpg", b"this is a text file, not a JPEG\n", "not an image"),
        Case("gif_named.png", _save(Image.fromarray(rgb).convert("P"), "GIF"), "unsupported image format GIF"),
        Case("bomb.png", png_header_only(20000, 20000), "image is 400.0 MP; the limit is 179.0 MP"),
        Case("int16.tif", tiff((rgb.astype(np.int16) - 128), photometric="rgb"), "unsupported sample type int16"),
        Case("int32.tif", tiff(rgb.astype(np.int32), photometric="rgb"), "unsupported sample type int32"),
        Case("nan.tif", tiff(np.full_like(floats, np.nan), photometric="rgb"), "NaN"),
        Case("jpeg_cut_eoi.jpg", jpeg[: len(jpeg) // 2] + b"\xff\xd9", "corrupt JPEG data"),
    ]
    for fraction in (0.02, 0.3, 0.6, 0.95):  # any cut breaks a file; the message depends on where
        for label, data in (("jpg", jpeg), ("png", png), ("tif", tif)):
            cases.append(Case(f"cut{round(fraction * 100):02d}.{label}", data[: int(len(data) * fraction)], ""))
    return cases


def _save(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _cmyk_jpeg(rgb: np.ndarray) -> bytes:
    return _save(Image.fromarray(rgb).convert("CMYK"), "JPEG")


def _png16(rgb: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".png", (rgb[:, :, ::-1].astype(np.uint16) * 257))
    assert ok
    return data.tobytes()


def write_corpus(folder: Path, cases: list[Case] | None = None) -> list[Case]:
    """Write the corpus into ``folder`` (created); returns the cases written."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = corpus() if cases is None else cases
    for case in cases:
        (folder / case.name).write_bytes(case.payload)
    return cases
