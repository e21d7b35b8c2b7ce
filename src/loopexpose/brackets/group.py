"""Splitting a flat folder of shots (a memory card's worth) into exposure brackets.

A camera's auto-exposure bracketing (AEB) takes 2, 3, 5, 7 or 9 frames in quick succession with exposures one
step apart, in one of a few orders: centre first (``0 -1 +1``, ``0 -1 +1 -2 +2``: metered, under, over, the usual
default), ascending (``-2 -1 0 +1 +2``) or descending. :func:`group_brackets` finds those runs in a folder of single
files. Frames are taken in capture order (EXIF ``DateTimeOriginal`` + ``SubSecTimeOriginal`` when every frame
has it, else file-name order), and each boundary between two groups is set, and reported, by the first rule
that applies:

1. ``time gap``: more than :data:`MAX_GAP` seconds (2 s) between the end of one frame's exposure and the next
   frame's capture time: a bracket is shot in one burst.
2. Exposure pattern, on each burst, with one key per frame: the EXIF exposure bias (``ExposureBiasValue``) when
   it varies in the folder, else the exposure value log2(time x ISO/100 / f-number^2) (manual brackets, cameras
   that do not record the bias). The burst is cut into the fewest groups where every group of two or more
   frames is a bracket: 2, 3, 5, 7 or 9 distinct exposures one step (1/3 to 3 stops) apart, in one of the
   orders above. So ``0 -2 +2 0 -2 +2`` is two brackets although shot without a pause (``bias 0 repeats``), and
   ``0 | -2 -1 0 +1 +2`` is a single shot and a bracket (``bias -2 starts a new pattern``).
3. Image similarity, when any frame lacks EXIF exposure (the whole folder is then grouped this way): a frame
   joins the current group when its exposure-normalised thumbnail (:func:`view_similarity`) matches one of the
   group's at least :data:`SIMILAR_VIEW`, unless it repeats one of their exposures (:func:`exposure_offset`
   within 1/6 stop: the next bracket of the same view). Two brackets of one view shot back to back, the second
   starting at an exposure the first lacks, with no time gap and no EXIF, stay one group.

A group of one frame is a single shot (reported, never fused). Files that cannot be read are skipped and listed
in :attr:`Grouping.skipped`; a group whose frames differ in size carries an :attr:`Group.error` (it is reported
and not fused; the other groups are unaffected). Frames of a group are ordered for fusion by
:func:`loopexpose.brackets.order_bracket`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
from PIL import ExifTags, UnidentifiedImageError
from skimage.exposure import equalize_hist

from loopexpose.brackets.discover import _exif_ev_of, list_images
from loopexpose.errors import LoopExposeError
from loopexpose.io import LUMA_WEIGHTS, open_pil, read_pixels

MAX_GAP = 2.0
"""Seconds allowed between two frames of one bracket, beyond the first frame's exposure time."""
BRACKET_SIZES = (2, 3, 5, 7, 9)
"""Frame counts of camera AEB sequences."""
STEP_RANGE = (0.3, 3.2)
"""Smallest and largest AEB step, in stops (1/3 to 3 stops, with the rounding of nominal shutter times)."""
SIMILAR_VIEW = 0.43
"""Least :func:`view_similarity` of two frames of one view. On the real brackets in ``../shared/data`` (898 pairs
of frames 1 or 2 stops apart) the lowest was 0.475; between different scenes (7,000 pairs of middle frames,
scenes that are one view shot twice left out) the highest was 0.395."""
SAME_EXPOSURE = 1 / 6
"""Stops within which two frames of one view count as the same exposure (AEB steps are 1/3 stop or more)."""
THUMB_SIDE = 64
KEYS = ("bias", "ev", "similarity")

_ORIENTATION = 0x0112
_SWAPPED = {5, 6, 7, 8}  # EXIF orientations that turn the stored image by 90 degrees
_EV_TOLERANCE = {"bias": 0.05, "ev": 0.17}  # EXIF times are rounded to nominal 1/3 stops (1/60, 1/125, ...)


@dataclass
class Shot:
    """One file of the folder, as far as grouping needs it.

    Attributes:
        path: the file.
        size: ``(width, height)`` upright (EXIF orientation applied).
        thumb: ``(64, 64)`` float32 Rec. 601 luma thumbnail in ``[0, 1]`` (aspect ratio not kept).
        time: capture time in seconds (EXIF ``DateTimeOriginal`` + ``SubSecTimeOriginal``), or ``None``.
        exposure_time: EXIF exposure time in seconds, or ``None``.
        bias: EXIF exposure bias in stops, or ``None``.
        ev: EXIF exposure value (:func:`loopexpose.brackets.exif_ev`, larger is brighter), or ``None``.
    """

    path: Path
    size: tuple[int, int]
    thumb: np.ndarray
    time: float | None = None
    exposure_time: float | None = None
    bias: float | None = None
    ev: float | None = None


@dataclass
class Group:
    """Consecutive shots taken as one bracket, or a single shot.

    Attributes:
        paths: the files, in capture order.
        split: why a group starts here: the rule that set the boundary before its first frame.
        pattern: how its frames make one bracket (``"bias 0 -2 +2, centre first"``), or ``"single shot"``.
        error: why it cannot be fused (frames of different sizes), else ``""``.
    """

    paths: list[Path]
    split: str
    pattern: str
    error: str = ""

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def name(self) -> str:
        """The first frame's file name without its suffix (``IMG_0001``): fused outputs are named after it."""
        return self.paths[0].stem

    @property
    def single(self) -> bool:
        """One frame: a single shot, not a bracket."""
        return len(self.paths) == 1


@dataclass
class Grouping:
    """The groups of one folder.

    Attributes:
        folder: the folder.
        groups: in capture order.
        key: what the exposure patterns were read from, one of :data:`KEYS`: ``"bias"`` (EXIF exposure bias),
            ``"ev"`` (EXIF exposure value) or ``"similarity"`` (no EXIF exposure: image similarity).
        note: why that key, and how frames were put in capture order.
        skipped: ``(file, problem)`` for every file that could not be read.
    """

    folder: Path
    groups: list[Group]
    key: str
    note: str
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def brackets(self) -> list[Group]:
        """Groups of two or more frames."""
        return [group for group in self.groups if not group.single]

    @property
    def singles(self) -> list[Group]:
        """Groups of one frame."""
        return [group for group in self.groups if group.single]


def group_brackets(
    folder: str | os.PathLike, max_gap: float = MAX_GAP, progress: Callable[[Path], None] | None = None
) -> Grouping:
    """Split a folder of shots into brackets and single shots (rules in the module's docstring).

    Args:
        folder: a folder of image files (not searched below).
        max_gap: seconds allowed between frames of one bracket beyond the earlier frame's exposure time.
        progress: called with each file after it is read.

    Raises:
        LoopExposeError: the folder is missing, is not a folder, or holds no readable image.
    """
    folder = Path(folder)
    paths = list_images(folder)
    if not paths:
        raise LoopExposeError("no images in folder", folder)
    shots, skipped = [], []
    for path in paths:
        try:
            shots.append(read_shot(path))
        except LoopExposeError as exc:
            skipped.append((path, str(exc).removeprefix(f"{path}: ")))
        if progress is not None:
            progress(path)
    if not shots:
        raise LoopExposeError(f"none of the {len(paths)} image files can be read", folder)
    notes = []
    if all(shot.time is not None for shot in shots):
        shots.sort(key=lambda shot: (shot.time, shot.path.name))
        notes.append("frames in capture-time order")
    else:
        notes.append("frames in file-name order (not every frame has a capture time)")
    biases = [shot.bias for shot in shots]
    if all(b is not None for b in biases) and max(biases) - min(biases) > _EV_TOLERANCE["bias"]:
        key, keys = "bias", biases
        notes.append("patterns of EXIF exposure bias")
    elif all(shot.ev is not None for shot in shots):
        key, keys = "ev", [shot.ev for shot in shots]
        why = "no bias recorded" if None in biases else "bias constant"
        notes.append(f"patterns of EXIF exposure value (time, f-number, ISO; {why})")
    else:
        key, keys = "similarity", []
        missing = sum(shot.ev is None for shot in shots)
        notes.append(f"image similarity ({missing} of {len(shots)} frames lack EXIF exposure)")
    groups: list[Group] = []
    start, split = 0, "first frame"
    for end in range(1, len(shots) + 1):
        gap = _time_gap(shots[end - 1], shots[end]) if end < len(shots) else None
        if end < len(shots) and (gap is None or gap <= max_gap):
            continue
        burst = shots[start:end]
        if key == "similarity":
            groups.extend(_group_by_similarity(burst, split))
        else:
            groups.extend(_group_by_pattern(burst, keys[start:end], key, split))
        start, split = end, f"time gap {gap:.1f} s" if gap is not None else ""
    return Grouping(folder=folder, groups=groups, key=key, note="; ".join(notes), skipped=skipped)


def read_shot(path: str | os.PathLike) -> Shot:
    """Read what grouping needs of one file: EXIF capture time and exposure, upright size, a small thumbnail.

    Raises:
        LoopExposeError: the file is not a readable image (damaged, truncated, not an image, too large).
    """
    path = Path(path)
    try:
        with open_pil(path, path) as image:
            exif = image.getexif()
            width, height = image.size
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        raise LoopExposeError("not a readable image", path) from None
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    if _number(exif.get(_ORIENTATION)) in _SWAPPED:
        width, height = height, width
    grey = read_pixels(path, max_side=4 * THUMB_SIDE) @ np.asarray(LUMA_WEIGHTS, np.float32)
    thumb = cv2.resize(grey, (THUMB_SIDE, THUMB_SIDE), interpolation=cv2.INTER_AREA)
    return Shot(
        path=path,
        size=(width, height),
        thumb=thumb,
        time=_capture_time(sub),
        exposure_time=_number(sub.get(ExifTags.Base.ExposureTime)),
        bias=_number(sub.get(ExifTags.Base.ExposureBiasValue)),
        ev=_exif_ev_of(exif),
    )


def view_similarity(a: np.ndarray, b: np.ndarray) -> float | None:
    """How much two thumbnails show the same view, whatever their exposures: in ``[-1, 1]``, 1 for one view.

    Each thumbnail is histogram-equalised over the pixels neither clips (an exposure change is a monotonic
    tone curve there, which equalisation undoes), its large-scale shading removed (a Gaussian of 1/16 of the
    side: otherwise every landscape with a bright sky on top looks alike), and the two are correlated (zero-mean
    normalised cross-correlation) over those pixels. Tolerates a few pixels of handheld shake at 64 pixels a side.

    Args:
        a, b: ``(S, S)`` float luma thumbnails in ``[0, 1]``.

    Returns:
        the similarity, or ``None`` when less than 3% of the pixels are unclipped in both (nothing to compare).

    >>> ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1)) ** 2
    >>> round(view_similarity(ramp, np.clip(ramp * 2, 0, 1)), 2)
    1.0
    """
    valid = (a > 1 / 255) & (a < 254 / 255) & (b > 1 / 255) & (b < 254 / 255)
    if valid.sum() < 0.03 * valid.size:
        return None
    weight = valid.astype(np.float32)
    sigma = a.shape[0] / 16
    shading = cv2.GaussianBlur(weight, (0, 0), sigma)
    detail = []
    for thumb in (a, b):
        flat = equalize_hist(thumb, nbins=256, mask=valid).astype(np.float32) * weight
        # normalised convolution: the local mean of the valid pixels alone
        detail.append(flat - cv2.GaussianBlur(flat, (0, 0), sigma) / np.maximum(shading, 1e-3))
    total = weight.sum()
    x, y = (d - (d * weight).sum() / total for d in detail)
    denominator = math.sqrt(float((x * x * weight).sum() * (y * y * weight).sum()))
    return float((x * y * weight).sum() / denominator) if denominator > 0 else None


def exposure_offset(a: np.ndarray, b: np.ndarray) -> float | None:
    """Stops of light from thumbnail ``a`` to thumbnail ``b`` of one view (positive: ``b`` is brighter).

    The median over the pixels well inside the range in both of log2 of the ratio of their linear values
    (sRGB taken as gamma 2.2, as :func:`loopexpose.io.estimate_exposure` does). ``None`` when under 3% of the
    pixels qualify.

    >>> ramp = np.tile(np.linspace(0.1, 0.4, 64, dtype=np.float32), (64, 1))
    >>> round(exposure_offset(ramp, ramp * 2 ** (1 / 2.2)), 2)
    1.0
    """
    valid = (a > 0.03) & (a < 0.97) & (b > 0.03) & (b < 0.97)
    if valid.sum() < 0.03 * valid.size:
        return None
    # one median of per-pixel log ratios: nothing in OpenCV or scikit-image does this
    return float(np.median(2.2 * (np.log2(b[valid]) - np.log2(a[valid]))))


# ------------------------------------------------------------------------------------------------ helpers


def _number(value) -> float | None:
    """A finite EXIF number (rational, int, float) as float, else ``None``."""
    try:
        number = float(value[0] if isinstance(value, tuple) else value)
    except (TypeError, ValueError, ZeroDivisionError, IndexError):
        return None
    return number if math.isfinite(number) else None


def _capture_time(sub) -> float | None:
    """Seconds (from an arbitrary origin, local time) of ``DateTimeOriginal`` (else ``DateTimeDigitized``) plus
    its sub-second field, or ``None``."""
    for stamp_tag, subsec_tag in ((ExifTags.Base.DateTimeOriginal, ExifTags.Base.SubsecTimeOriginal),
                                  (ExifTags.Base.DateTimeDigitized, ExifTags.Base.SubsecTimeDigitized)):  # fmt: skip
        stamp = sub.get(stamp_tag)
        if not isinstance(stamp, str):
            continue
        try:
            moment = datetime.strptime(stamp.strip().rstrip("\x00")[:19], "%Y:%m:%d %H:%M:%S")
        except ValueError:
            continue
        seconds = (moment - datetime(1970, 1, 1)).total_seconds()
        digits = str(sub.get(subsec_tag) or "").strip().rstrip("\x00")
        if digits.isdigit():
            seconds += int(digits) / 10 ** len(digits)
        return seconds
    return None


def _time_gap(earlier: Shot, later: Shot) -> float | None:
    """Seconds from the end of ``earlier``'s exposure to ``later``'s capture; ``None`` without both times."""
    if earlier.time is None or later.time is None:
        return None
    return later.time - earlier.time - (earlier.exposure_time or 0.0)


def _stops(value: float) -> str:
    """``-2.0 -> '-2'``, ``0.333 -> '+0.33'``, ``0 -> '0'``."""
    text = f"{value:+.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("+0", "-0") else text


def _bracket_order(keys: list[float], tolerance: float) -> str | None:
    """The AEB order of ``keys`` (``"centre first"``, ``"ascending"``, ``"descending"``) when they are
    :data:`BRACKET_SIZES` distinct exposures one step apart, else ``None``."""
    count = len(keys)
    if count not in BRACKET_SIZES:
        return None
    ranked = sorted(range(count), key=lambda i: keys[i])
    low, high = keys[ranked[0]], keys[ranked[-1]]
    step = (high - low) / (count - 1)
    if not STEP_RANGE[0] <= step <= STEP_RANGE[1]:
        return None
    if any(abs(keys[i] - (low + rank * step)) > tolerance for rank, i in enumerate(ranked)):
        return None
    rank = [0] * count
    for position, i in enumerate(ranked):
        rank[i] = position
    if rank == sorted(rank):
        return "ascending"
    if rank == sorted(rank, reverse=True):
        return "descending"
    middle = count // 2
    if count % 2 and rank[0] == middle:
        pairs = [{rank[2 * p - 1], rank[2 * p]} for p in range(1, middle + 1)]
        if all(pair == {middle - p, middle + p} for p, pair in enumerate(pairs, start=1)):
            return "centre first"
    return None


def _group_by_pattern(shots: list[Shot], keys: list[float], key: str, split: str) -> list[Group]:
    """Cut one burst into the fewest groups whose runs of 2+ frames are AEB brackets (dynamic programming;
    a two-frame bracket costs a little more than one group, so ``0 | -2 0 +2`` wins over ``0 -2 | 0 +2``)."""
    tolerance = _EV_TOLERANCE[key]
    count = len(shots)
    best: list[tuple[float, int, str]] = [(0.0, 0, "")] + [(math.inf, 0, "")] * count  # (cost, start, order)
    for end in range(1, count + 1):
        for size in sorted(set(BRACKET_SIZES) | {1}, reverse=True):  # longest first: it wins ties
            begin = end - size
            if begin < 0:
                continue
            order = "single shot" if size == 1 else _bracket_order(keys[begin:end], tolerance)
            cost = best[begin][0] + (1.5 if size == 2 else 1.0)
            if order and cost < best[end][0]:
                best[end] = (cost, begin, order)
    runs = []
    end = count
    while end > 0:
        runs.append((best[end][1], end, best[end][2]))
        end = best[end][1]
    runs.reverse()
    label = "bias" if key == "bias" else "EV"
    groups = []
    for index, (begin, end, order) in enumerate(runs):
        values = keys[begin:end]
        if index:  # EVs are shown from the previous group's first frame, biases as recorded
            previous = keys[runs[index - 1][0] : runs[index - 1][1]]
            shown = _stops(values[0] - (0.0 if key == "bias" else previous[0]))
            repeated = any(abs(values[0] - other) <= tolerance for other in previous)
            split = f"{label} {shown} {'repeats' if repeated else 'starts a new pattern'}"
        if order != "single shot":
            shown = values if key == "bias" else [v - values[0] for v in values]
            order = f"{label} {' '.join(_stops(v) for v in shown)}, {order}"
        groups.append(_make_group(shots[begin:end], split, order))
    return groups


def _group_by_similarity(shots: list[Shot], split: str) -> list[Group]:
    """Cut one burst where a frame shows another view than the current group, or repeats one of its exposures."""
    groups: list[Group] = []
    members, reason = [shots[0]], split
    for shot in shots[1:]:
        why = _similarity_boundary(members, shot)
        if why:
            groups.append(_make_group(members, reason, f"{len(members)} frames of one view"))
            members, reason = [shot], why
        else:
            members.append(shot)
    groups.append(_make_group(members, reason, f"{len(members)} frames of one view"))
    return groups


def _similarity_boundary(members: list[Shot], shot: Shot) -> str:
    """Why ``shot`` cannot join ``members`` (another view, or one of their exposures again), else ``""``."""
    scores = [view_similarity(member.thumb, shot.thumb) for member in members]
    known = [score for score in scores if score is not None]
    if known and max(known) < SIMILAR_VIEW:
        return f"another view (similarity {max(known):.2f} < {SIMILAR_VIEW})"
    for member, score in zip(members, scores):
        if score is not None and score >= SIMILAR_VIEW:
            offset = exposure_offset(member.thumb, shot.thumb)
            if offset is not None and abs(offset) < SAME_EXPOSURE:
                return f"same view at the exposure of {member.path.name} again"
    return ""


def _make_group(shots: list[Shot], split: str, pattern: str) -> Group:
    """A :class:`Group` of ``shots`` (a single shot when alone), with the size check."""
    return Group(
        paths=[shot.path for shot in shots],
        split=split,
        pattern="single shot" if len(shots) == 1 else pattern,
        error=_size_problem(shots),
    )


def _size_problem(shots: list[Shot]) -> str:
    """``""`` when every frame has one size, else an error naming the sizes and a frame of each."""
    sizes: dict[tuple[int, int], str] = {}
    for shot in shots:
        sizes.setdefault(shot.size, shot.path.name)
    if len(sizes) < 2:
        return ""
    listed = ", ".join(f"{name} {w}x{h}" for (w, h), name in sizes.items())
    return f"frames of different sizes in one group ({listed}); fuse them separately or resize them first"
