"""Finding exposure brackets on disk and ordering their frames from dark to bright.

A *scene* is a folder of images of one static scene taken at different exposures; a *collection* is a folder of
scene folders. :func:`find_scenes` finds scene folders, :func:`list_images` a folder's image files, and
:func:`order_bracket` orders a scene's frames from dark to bright by, in turn:

1. EXIF exposure (exposure time x ISO / f-number^2, as EV) when every frame has it;
2. a ``shutter_times.txt`` sidecar in the scene folder, or next to a lone scene folder (one exposure time in
   seconds per line, in file-name order, or ``name time`` pairs);
3. EV tags in the file names when every frame has a distinct one (MSEC ``_N1.5 _N1 _0 _P1 _P1.5``,
   ``under/normal/over``, ``short/medium/long``, ``m2/zero/p2``, ``EV-2 .. EV+2``);
4. mean luminance (cheap: JPEGs decoded at reduced scale, results cached).

The rule used is reported in :attr:`Bracket.rule` (and by ``loopexpose scenes``). Every frame's mean luma is
measured whatever the rule (ties, :attr:`Bracket.note`, :meth:`Bracket.reference_index`): PNGs and TIFFs have no
reduced decode, so :func:`read_bracket`, which orders and loads a bracket as ``fuse`` does, measures them on the
samples it loads instead of decoding them twice.

Frames of one scene with different sizes: a frame whose aspect ratio is within 2% of the first (darkest)
frame's is resized to it with a warning (cameras and converters crop a few pixels); anything else is an error.
Reading and writing the files themselves is :mod:`loopexpose.io`'s.
"""

from __future__ import annotations

import functools
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from loopexpose.errors import LoopExposeError
from loopexpose.io import (
    INPUT_SUFFIXES,
    RAW_SUFFIXES,
    REFERENCE_LUMA,
    _decode,
    _reduce,
    _to_float,
    _truncated_jpeg,
    luma,
    open_pil,
    read_image,
)

if TYPE_CHECKING:  # torch is imported where tensors are made, so that `loopexpose scenes` and --help start fast
    import torch

RULES = ("exif", "shutter_times", "filename", "luminance", "single")


@dataclass
class Bracket:
    """A scene's frames in exposure order (darkest first).

    Attributes:
        scene: the scene folder.
        paths: frame files, darkest first.
        evs: exposure of each frame in stops relative to the first (so ``evs[0] == 0``), or ``None`` when the
            order comes from luminance alone. Named levels (``under/normal/over``) count as 1 stop apart.
        rule: how the order was found, one of :data:`RULES`: ``"exif"``, ``"shutter_times"``, ``"filename"``,
            ``"luminance"`` or ``"single"`` (one frame).
        mean_luma: mean Rec. 601 luma of each frame in ``[0, 1]`` (same order as ``paths``).
        note: why a metadata rule was not used, or where its order disagrees with the frames' luminance.
    """

    scene: Path
    paths: list[Path]
    evs: list[float] | None
    rule: str
    mean_luma: list[float] = field(default_factory=list)
    note: str = ""

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def name(self) -> str:
        """The scene folder's name."""
        return self.scene.name

    @property
    def collection(self) -> str:
        """The name of the folder holding the scene (its collection)."""
        return self.scene.parent.name

    def reference_index(self, target: float = REFERENCE_LUMA) -> int:
        """Index of the frame whose mean luma is nearest ``target`` (in ``[0, 1]``; default 118/255)."""
        return int(np.argmin([abs(value - target) for value in self.mean_luma]))


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder`` (by suffix; hidden files skipped), sorted by name.

    Raises:
        LoopExposeError: ``folder`` is missing or is not a folder.
    """
    folder = Path(folder)
    if not folder.exists():
        raise LoopExposeError("no such folder", folder)
    if not folder.is_dir():
        raise LoopExposeError("not a folder", folder)
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in INPUT_SUFFIXES and not p.name.startswith(".")
    )


def find_scenes(root: str | os.PathLike, max_depth: int = 3) -> list[Path]:
    """Scene folders under ``root``, sorted: ``root`` itself if it holds images, else the folders below it that do.

    A folder holding images is a scene and is not searched further, so ``root`` may be a scene, a collection
    (folder of scenes) or a folder of collections (``max_depth`` levels down at most).

    Raises:
        LoopExposeError: ``root`` is missing, not a folder, or holds no images at all.
    """
    root = Path(root)
    if list_images(root):
        return [root]
    scenes = _scene_folders(root, max_depth)
    if not scenes:
        raise LoopExposeError("no images found (expected a scene folder or a folder of scene folders)", root)
    return scenes


def _scene_folders(folder: Path, depth: int) -> list[Path]:
    found: list[Path] = []
    if depth <= 0:
        return found
    for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found.extend([child] if list_images(child) else _scene_folders(child, depth - 1))
    return found


_NAMED_EV = {
    "underexposed": -1.0, "under": -1.0, "dark": -1.0, "short": -1.0, "low": -1.0,
    "normal": 0.0, "mean": 0.0, "medium": 0.0, "mid": 0.0, "zero": 0.0,
    "overexposed": 1.0, "over": 1.0, "bright": 1.0, "long": 1.0, "high": 1.0,
}  # fmt: skip
_NUMBER = r"(\d+(?:\.\d+)?)"
_FILENAME_PATTERNS = (  # (pattern, how to turn its groups into an EV), tried in order on the lower-case stem
    (re.compile(r"_([np])" + _NUMBER + r"$"), lambda s, v: -float(v) if s == "n" else float(v)),  # MSEC _N1.5
    (re.compile(r"_(0)$"), lambda _: 0.0),  # MSEC _0
    (re.compile(r"ev\s*([+-]?)" + _NUMBER + r"(?![\d.])"), lambda s, v: -float(v) if s == "-" else float(v)),
    (re.compile(r"(?<![a-z0-9.])([mp+-]?)" + _NUMBER + r"\s*ev(?![a-z])"), lambda s, v: _signed(s, v)),  # m1EV
    (re.compile(r"(?<![a-z0-9])([mp])" + _NUMBER + r"(?![a-z0-9])"), lambda s, v: _signed(s, v)),  # (m2), _p1
    (re.compile(r"\(\s*(0)\s*\)"), lambda _: 0.0),  # img3(0)
    (re.compile(r"(?<![a-z])(" + "|".join(sorted(_NAMED_EV, key=len, reverse=True)) + r")(?![a-z])"),
     lambda word: _NAMED_EV[word]),
)  # fmt: skip


def _signed(sign: str, value: str) -> float:
    return -float(value) if sign in ("m", "-") else float(value)


def ev_from_filename(name: str) -> float | None:
    """The EV offset a file name announces, or ``None``.

    Understood: MSEC ``a_N1.5.jpg`` -> -1.5, ``a_0.jpg`` -> 0, ``a_P1.jpg`` -> 1; ``StudioEV-2.png`` -> -2,
    ``Img_EV4.jpg`` -> 4; ``x_m1EV.JPG`` -> -1; ``img2(m2).JPG`` -> -2, ``img6(p2)`` -> 2, ``img3(0)`` -> 0;
    words ``under/dark/short`` -> -1, ``normal/mean/medium/zero`` -> 0, ``over/bright/long`` -> +1 (ordinal
    levels, counted as 1 stop apart). Repeated image suffixes (``a.JPG.jpg``) are ignored.

    >>> [ev_from_filename(n) for n in ("a_N1.5.jpg", "StudioEV+2.png", "img2(m2).JPG.jpg", "sky_over.png")]
    [-1.5, 2.0, -2.0, 1.0]
    >>> ev_from_filename("_MDF0001.png") is None
    True
    """
    stem = Path(name).name
    while Path(stem).suffix.lower() in INPUT_SUFFIXES:
        stem = Path(stem).stem
    is_msec = bool(re.search(r"_[NP]\d+(?:\.\d+)?$|_0$", stem))  # MSEC tags are upper case
    lower = stem.lower()
    for index, (pattern, convert) in enumerate(_FILENAME_PATTERNS):
        if index == 0 and not is_msec:
            continue
        match = pattern.search(lower)
        if match:
            return float(convert(*match.groups()))
    return None


def exif_ev(path: str | os.PathLike) -> float | None:
    """Exposure of a file from EXIF as log2(time x ISO/100 / f-number^2) (larger is brighter), or ``None``.

    A missing f-number counts as f/1 and a missing ISO as 100; a missing exposure time gives ``None``.
    """
    try:
        with open_pil(path, path) as image:
            return _exif_ev_of(image.getexif())
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, LoopExposeError):
        return None


def _exif_ev_of(exif: Image.Exif) -> float | None:
    try:
        sub = exif.get_ifd(ExifTags.IFD.Exif)
        time = sub.get(ExifTags.Base.ExposureTime)
        f_number, iso = sub.get(ExifTags.Base.FNumber), sub.get(ExifTags.Base.ISOSpeedRatings)
        time = float(time)
        f_number = float(f_number) if f_number else 1.0
        iso = float(iso[0] if isinstance(iso, tuple) else iso) if iso else 100.0
    except (TypeError, ValueError, ZeroDivisionError, KeyError, OSError):
        return None
    if not (time > 0 and f_number > 0 and iso > 0) or not math.isfinite(time):
        return None
    return math.log2(time * iso / 100.0 / f_number**2)


def _sidecar_times(scene: Path, paths: list[Path]) -> list[float] | None:
    """Exposure times from ``shutter_times.txt`` in the scene folder or, for a lone scene, in its parent.

    The file holds one time per line (seconds, ``1/250`` allowed) in file-name order, or ``name time`` pairs.
    """
    sidecar = scene / "shutter_times.txt"
    in_scene = sidecar.is_file()
    if not in_scene:
        sidecar = scene.parent / "shutter_times.txt"
        if not sidecar.is_file():
            return None
    rows = [line.split() for line in sidecar.read_text(errors="replace").splitlines()]
    rows = [row for row in rows if row and not row[0].startswith("#")]
    names = sorted(paths)
    try:
        if rows and all(len(r) == 2 for r in rows):
            table = {name: _parse_time(t) for name, t in rows}
            if in_scene or all(p.name in table for p in paths):
                return [table[p.name] for p in paths]
        lone = in_scene or sum(1 for p in scene.parent.iterdir() if p.is_dir() and not p.name.startswith(".")) == 1
        if lone and len(rows) == len(paths) and all(len(r) == 1 for r in rows):
            by_name = {p: _parse_time(r[0]) for p, r in zip(names, rows)}
            return [by_name[p] for p in paths]
    except (KeyError, ValueError, ZeroDivisionError):
        pass
    if in_scene:
        raise LoopExposeError("cannot match shutter_times.txt to the scene's images (one time per image)", sidecar)
    return None


def _parse_time(text: str) -> float:
    if "/" in text:
        num, den = text.split("/")
        value = float(num) / float(den)
    else:
        value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(text)
    return value


def mean_luma(path: str | os.PathLike) -> float:
    """Mean Rec. 601 luma of an image file, in ``[0, 1]``.

    Measured cheaply: JPEGs are decoded at reduced scale (DCT scaling, long side >= 256) and results are cached
    by path, size and modification time, so ordering a collection twice decodes it once.

    Raises:
        LoopExposeError: the file is missing or not a readable image.
    """
    return _measure(Path(path))[0]


def _measure(path: Path) -> tuple[float, float | None]:
    """``(mean luma in [0, 1], EXIF EV or None)`` of one file, cached."""
    try:
        stat = path.stat()
    except OSError:
        raise LoopExposeError("no such file", path) from None
    return _measure_cached(str(path), stat.st_mtime_ns, stat.st_size)


_PIL_MODES = {"RGB", "RGBA", "L", "LA", "P", "PA", "CMYK", "YCbCr", "1"}  # measured on Pillow's 8-bit decode


@functools.lru_cache(maxsize=8192)
def _measure_cached(path_text: str, mtime_ns: int, size: int) -> tuple[float, float | None]:
    path = Path(path_text)
    if path.suffix.lower() in RAW_SUFFIXES:
        from loopexpose.raw import measure

        return measure(path)
    ev = None
    try:
        with open_pil(path, path) as image:
            ev = _exif_ev_of(image.getexif())
            # PIL's fast path is 8-bit only (it clips 16-bit grey); deeper files go through read_image.
            # (JPEG, PNG and TIFF only: anything else goes to read_image below, which refuses it)
            if image.format in {"JPEG", "MPO", "PNG", "TIFF"} and image.mode in _PIL_MODES:
                if image.format == "JPEG":
                    scale = 256 / max(image.size)
                    if scale < 1:
                        image.draft("RGB", (round(image.width * scale), round(image.height * scale)))
                grey = np.asarray(image.convert("RGB").convert("L"), dtype=np.float32)
                if _truncated_jpeg(np.fromfile(path, dtype=np.uint8)[-4096:]) and image.format == "JPEG":
                    raise OSError("truncated")
                return float(grey.mean() / 255.0), ev
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        pass  # read_image below gives the user-facing error
    return float(luma(read_image(path).pixels).mean()), ev


def order_bracket(scene: str | os.PathLike, paths: list[Path] | None = None) -> Bracket:
    """Order a scene's frames from darkest to brightest and say which rule decided.

    Rules, in turn (the first that applies wins):

    1. ``"exif"``: every frame has EXIF exposure time (with ISO and f-number when present), all different;
    2. ``"shutter_times"``: a ``shutter_times.txt`` sidecar in the scene folder (or, for a lone scene, in the
       folder above it);
    3. ``"filename"``: every frame's name carries a distinct EV tag (:func:`ev_from_filename`);
    4. ``"luminance"``: mean luma of each frame.

    A single frame gives rule ``"single"``. Ties are broken by mean luma. When a metadata rule's order
    disagrees with the frames' luminance, :attr:`Bracket.note` says so (the metadata order is kept).

    Args:
        scene: the scene folder.
        paths: its frames (default: every image in the folder).

    Raises:
        LoopExposeError: no images, or a frame that cannot be read.
    """
    scene = Path(scene)
    return _order(scene, _scene_paths(scene, paths), {})


def _scene_paths(scene: Path, paths: list[Path] | None) -> list[Path]:
    """``paths`` (default: every image of ``scene``), checked: not empty, not RAW files beside other images."""
    paths = list(paths) if paths is not None else list_images(scene)
    if not paths:
        raise LoopExposeError("no images in scene folder", scene)
    if any(p.suffix.lower() in RAW_SUFFIXES for p in paths):
        from loopexpose.raw import check_bracket

        check_bracket(paths, scene)  # RAW files beside other images: an error
    return paths


def _order(scene: Path, paths: list[Path], known: dict[Path, tuple[float, float | None]]) -> Bracket:
    """:func:`order_bracket` of ``paths``, with the ``(mean luma, EXIF EV)`` of the frames in ``known`` as given."""
    measures = [known[p] if p in known else _measure(p) for p in paths]
    lumas = [m[0] for m in measures]
    exposure: list[float] | None = None
    rule, note = "luminance", ""
    if len(paths) == 1:
        exposure, rule = [measures[0][1] or 0.0], "single"
    if exposure is None:
        evs = [m[1] for m in measures]
        if all(e is not None for e in evs) and len(set(evs)) == len(evs):
            exposure, rule = evs, "exif"
        elif any(e is not None for e in evs):
            note = "EXIF exposure incomplete or repeated; "
    if exposure is None:
        times = _sidecar_times(scene, paths)
        if times is not None:
            exposure, rule = [math.log2(t) for t in times], "shutter_times"
    if exposure is None:
        tags = [ev_from_filename(p.name) for p in paths]
        if all(t is not None for t in tags) and len(set(tags)) == len(tags):
            exposure, rule = tags, "filename"
    keys = exposure if exposure is not None else lumas
    order = sorted(range(len(paths)), key=lambda i: (keys[i], lumas[i]))
    ordered_lumas = [lumas[i] for i in order]
    ordered_evs = None
    if exposure is not None:
        base = exposure[order[0]]
        ordered_evs = [float(exposure[i] - base) for i in order]
        flips = [paths[order[i]].name for i in range(1, len(order)) if ordered_lumas[i] < ordered_lumas[i - 1]]
        if flips:
            note += f"luminance disagrees at {', '.join(flips)}; "
    return Bracket(
        scene=scene,
        paths=[paths[i] for i in order],
        evs=ordered_evs,
        rule=rule,
        mean_luma=ordered_lumas,
        note=note.rstrip("; "),
    )


def load_bracket(bracket: Bracket | str | os.PathLike, max_side: int = 0) -> torch.Tensor:
    """Load a bracket's frames as one ``(N, 3, H, W)`` tensor in [0, 1], darkest first.

    Args:
        bracket: a :class:`Bracket` or a scene folder (ordered with :func:`order_bracket`).
        max_side: if > 0, frames are downscaled (area filter; JPEGs decoded at reduced scale first) so the long
            side is at most this.

    Frames whose size differs from the first frame's are resized to it with a warning when the aspect ratio
    agrees within 2%; otherwise :class:`LoopExposeError`.
    """
    if not isinstance(bracket, Bracket):
        bracket = order_bracket(bracket)
    return _load(bracket, max_side, {})


def read_bracket(
    scene: str | os.PathLike, paths: list[Path] | None = None, max_side: int = 0
) -> tuple[Bracket, torch.Tensor]:
    """:func:`order_bracket` then :func:`load_bracket`, decoding every frame once.

    The same bracket (order, rule, mean lumas to the last bit) and the same frames. JPEG and RAW frames are
    measured as :func:`order_bracket` does (a reduced decode); upright 8-bit RGB and 16-bit or float PNGs and
    TIFFs are measured on the samples that are then loaded, which :func:`order_bracket` followed by
    :func:`load_bracket` would decode twice. Their integer samples are held until the frames are stacked (a
    quarter of the stack's memory for 8-bit frames, half for 16-bit).

    Args:
        scene: the scene folder.
        paths: its frames (default: every image in the folder).
        max_side: as :func:`load_bracket`.

    Returns:
        ``(bracket, frames)``: the :class:`Bracket` and its ``(N, 3, H, W)`` frames in ``[0, 1]``, darkest first.

    Raises:
        LoopExposeError: as :func:`order_bracket` and :func:`load_bracket`.
    """
    scene = Path(scene)
    paths = _scene_paths(scene, paths)
    known: dict[Path, tuple[float, float | None]] = {}
    decoded: dict[Path, np.ndarray] = {}
    for path in paths:
        measured = _measure_decoded(path, max_side)
        if measured is not None:
            known[path], decoded[path] = measured
    return (bracket := _order(scene, paths, known)), _load(bracket, max_side, decoded)


def _measure_decoded(path: Path, max_side: int) -> tuple[tuple[float, float | None], np.ndarray] | None:
    """``((mean luma, EXIF EV), samples)`` of a PNG or TIFF whose luma :func:`_measure_cached` would take from the
    very samples :func:`loopexpose.io._decode` gives (``max_side`` applied), or ``None``: JPEG and RAW (cheap to
    measure as they are), rotated frames (Pillow measures them as stored, and a float mean depends on the pixels'
    order), modes that Pillow converts to RGB its own way (palette, grey, CMYK, alpha), TIFF codecs outside
    :data:`_PIL_TIFF_CODECS`, or a file either reader refuses (the error then comes from the usual path)."""
    if path.suffix.lower() not in {".png", ".tif", ".tiff"}:
        return None
    try:
        with open_pil(path, path) as image:
            exif = image.getexif()
            ev = _exif_ev_of(exif)
            orientation = exif.get(0x0112, 1)
            pil_measures = image.mode in _PIL_MODES  # _measure_cached's fast path, on PIL's decode
            compression = image.info.get("compression", "raw") if image.format == "TIFF" else "raw"
            if image.format not in {"PNG", "TIFF"} or orientation not in (1, None) or (
                pil_measures and (image.mode != "RGB" or compression not in _PIL_TIFF_CODECS)
            ):  # fmt: skip
                return None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, LoopExposeError):
        if path.suffix.lower() not in {".tif", ".tiff"}:
            return None
        pil_measures, ev = False, None  # e.g. a float TIFF: measured on read_image's samples, EV unknown
    try:
        samples, _, _, _ = _decode(path)
    except LoopExposeError:
        return None
    if pil_measures:
        if samples.dtype == np.uint16:  # Pillow opens 16-bit RGB as 8-bit RGB: the high bytes
            samples8 = (samples >> 8).astype(np.uint8)
        elif samples.dtype == np.uint8:
            samples8 = samples
        else:
            return None
        grey = np.asarray(Image.fromarray(samples8, "RGB").convert("L"), dtype=np.float32)
        mean = float(grey.mean() / 255.0)
    else:
        mean = float(luma(_to_float(samples)).mean())
    return (mean, ev), _reduce(samples, max_side, samples.shape[1::-1])  # upright: stored as it is


#: TIFF codecs Pillow decodes itself, exactly as OpenCV does (lossless): with another one Pillow may fail where
#: OpenCV does not, and :func:`_measure_cached` then measures OpenCV's samples another way.
_PIL_TIFF_CODECS = {"raw", "tiff_lzw", "tiff_adobe_deflate", "tiff_deflate", "packbits"}


def _load(bracket: Bracket, max_side: int, decoded: dict[Path, np.ndarray]) -> torch.Tensor:
    """:func:`load_bracket`, taking the samples of the frames in ``decoded`` from there (each dropped once used)."""
    import torch

    decode = _decode
    if any(Path(p).suffix.lower() in RAW_SUFFIXES for p in bracket.paths):
        from loopexpose.raw import bracket_decoder

        decode = bracket_decoder(bracket.paths)  # every frame with one white balance

    # Each frame is decoded to its integer samples and converted straight into its slot of one (N, 3, H, W) float32
    # buffer: one full-size float copy per frame (a float HWC frame, a stack and a transpose cost four, 5.6 s of
    # memory traffic for 5 x 12 MP on the 2-core CPU).
    stack: np.ndarray | None = None
    for index, path in enumerate(bracket.paths):
        samples = decoded.pop(path) if path in decoded else decode(Path(path), max_side)[0]
        if stack is None:
            stack = np.empty((len(bracket.paths), 3, *samples.shape[:2]), np.float32)
        elif samples.shape[:2] != stack.shape[2:]:
            height, width = stack.shape[2:]
            ratio = (samples.shape[1] / samples.shape[0]) / (width / height)
            if abs(ratio - 1) > 0.02:
                raise LoopExposeError(
                    f"frame is {samples.shape[1]}x{samples.shape[0]} but the scene's first frame is "
                    f"{width}x{height} (different aspect ratio)",
                    path,
                )
            warnings.warn(f"{path}: resized {samples.shape[1]}x{samples.shape[0]} to {width}x{height}")
            samples = cv2.resize(samples, (width, height), interpolation=cv2.INTER_AREA)
        _to_float(samples.transpose(2, 0, 1), out=stack[index])
    return torch.from_numpy(stack)
