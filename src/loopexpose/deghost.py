"""Ghost removal for exposure fusion: moving things come from one frame instead of showing through.

A bracket shot over a second or two catches people, cars, leaves and water in a different place in every frame;
plain fusion averages them into semi-transparent ghosts. Here every frame is compared with the *reference*
frame (the one whose mean luma is nearest mid-grey, 118/255) after mapping it to the reference's exposure, and
where it disagrees, its content is replaced by the reference's, mapped to its exposure, and its fusion weight
goes to 0 where the reference cannot stand in (clipped). The reference itself is never changed and keeps its
weight everywhere, so every pixel has a source.

The analysis runs on a copy reduced by a whole-number factor to at most :data:`WORK_PIXELS` pixels (masks need
no more; it keeps the cost to tens of milliseconds whatever the frame size); only the replacement and the
weights are computed at full size, and only in the boxes around what moved.

1. **Exposure matching** (:func:`exposure_curves`): for every frame and channel, the intensity mapping to
   the reference found by histogram matching (``g = Q_ref o F_frame``, the reference's quantile function after
   the frame's cumulative histogram: Grossberg and Nayar's intensity mapping function). It needs no pixel
   correspondence, so moving objects barely bias it (they are in both frames, somewhere), and it follows the
   camera's own response, clipping included. The correction model is the other way to bring frames to one
   exposure; ``bench/ghosts.py`` measured both on moving objects pasted into real brackets (docs/benchmarks.md,
   "Ghost removal"): with 1 % (0.1 %) of the static pixels flagged, histogram matching finds 85 % (73 %) of the
   moving pixels, the ``default`` model's corrected frames 76 % (67 %) compared directly and 67 % (48 %) when
   histogram-matched in turn. The model corrects every frame on its own, with its own local curves, so static
   content does not come out equal across frames, and it costs a network pass per frame.
2. **Inconsistency** (:func:`inconsistency`): per channel, each pixel's value is an interval in the reference's
   scale: the mapped value plus or minus a tolerance (a floor for noise and JPEG, plus the frame's quantisation
   step times the mapping's slope, steep where a dark frame is lifted); the reference's interval also spans its
   3x3 neighbourhood (sub-pixel shifts, motion blur). A *clipped* value is only a bound: a channel saturated
   in a frame may be anything brighter than the darkest reference value behind that level, a black one anything
   darker; and where a camera clips one channel it pulls the others towards white, so those become upper
   bounds (:func:`_intervals`). The inconsistency is the gap between the intervals (0 where they overlap), so a
   pixel saturated in one frame is not a ghost, unless the other frame says it is too dark to saturate there
   (an object moved in).
3. **Masks** (:func:`ghost_masks`): threshold at :data:`THRESHOLD`; an opening removes isolated pixels (noise),
   a closing joins the pieces of one object (its flat parts can match the background), a dilation covers its
   edge and soft shadow, and a Gaussian blur makes the transition soft.
4. **Ghost-free frames and weights** (:func:`remove_ghosts`): under its mask each non-reference frame gets the
   reference mapped to *its* exposure (histogram matching the other way round). Weights alone are not enough:
   a Laplacian-pyramid blend spreads each frame's weight over the kernel of the coarse levels, so an object
   whose weight is 0 still leaks its blurred shape back in (ΔE*ab 2.6 on average on the benchmark with exact
   masks); replaced content leaves nothing at any level. Where the reference is clipped, its mapped copy would
   be flat, so there the frame's weight (``frame_weights`` of :func:`loopexpose.fusion.mertens_fuse` and
   :func:`loopexpose.fusion.loop_fuse`, multiplying the quality weights before normalisation) goes to 0 and
   the pixel comes from the frames that agree with the reference.

Shapes: frames ``(N, 3, H, W)`` (one bracket) or ``(B, N, 3, H, W)``, RGB in ``[0, 1]``; weights
``(N, 1, H, W)`` (resp. ``(B, N, 1, H, W)``) in ``[0, 1]``. The frames must be aligned. Not differentiable
(thresholds, morphology): deghosting is for inference. Limits: the reference decides, so what moves inside a
region the reference has clipped (clouds in a blown sky) is not seen; a frame that differs from the reference
everywhere (a different scene) is replaced almost entirely. So is most of every frame of a hand-held bracket
that was not aligned: a shift of 32 px at 12 MP flags over half of each frame. :func:`remove_ghosts` then warns
(:class:`MisalignmentWarning`: a frame with ghosts whose content is shifted as a whole, by phase correlation on
the reduced copy) that the frames should be aligned first; the replacement itself stays one pass over each
frame, whatever it covers.
"""

from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
import torch

from loopexpose.baselines import MID_GREY
from loopexpose.io import LUMA_WEIGHTS, brightest_channel

__all__ = [
    "WORK_PIXELS",
    "THRESHOLD",
    "reference_index",
    "exposure_curves",
    "match_exposure",
    "inconsistency",
    "ghost_masks",
    "remove_ghosts",
    "MisalignmentWarning",
]

#: Pixels of the reduced copy the masks are computed on (about 640 x 480).
WORK_PIXELS = 300_000
#: Inconsistency (gap between a frame's and the reference's intervals, in the reference's [0, 1] scale) above
#: which a pixel is a ghost. Chosen on the synthetic moving objects and the static scenes of bench/ghosts.py.
THRESHOLD = 0.04
#: Values at or above this (at or below LOW) are clipped: only a bound on the scene's brightness. Well below 1:
#: cameras roll highlights off and clip each hue at its own level (HDRPS's Waffle House neon sign tops out near
#: 0.77 in red where a frame 4 stops darker says it must be clipped).
HIGH = 0.9
LOW = 0.015
#: How far the reference's channels may have been pulled up where it clipped another channel (:func:`_intervals`):
#: 0.2 and 0.3 left the same ghost energy on the benchmark; with 0.3 a sunset's glow (Merianos' SecretBeach) is
#: no longer flagged.
CROSSTALK = 0.3
#: Width of the ramp from "clipped" to "trusted" (:func:`_distrust`).
RAMP = 0.1
#: Tolerance of a pixel's value, in the reference's scale: a floor (noise, JPEG) plus the frame's quantisation
#: step (after the area reduction) times the slope of its mapping.
TOLERANCE = 0.02
STEP = 2 / 255
CURVE_POINTS = 256
LUT_SIZE = 4096
#: Morphology, as fractions of the reduced copy's diagonal: opening (noise), closing (one object's pieces),
#: dilation (edges and coarse pyramid levels) and the Gaussian blur's sigma.
OPEN_FRACTION = 0.0026
CLOSE_FRACTION = 0.02
DILATE_FRACTION = 0.02
BLUR_FRACTION = 0.008
#: A frame looks misaligned when at least this share of it is a ghost (soft mask > 0.5) and its content as a whole
#: is shifted by at least :data:`MISALIGNED_SHIFT` pixels of the reduced copy (about 0.25 % of its diagonal; 14 px
#: at 12 MP) from the reference's. Real brackets with motion stay below: the largest shift among those of
#: docs/benchmarks.md ("Real brackets with motion") is 1.0 px (DeepFuse Seq_77, clouds over 17.8 % of a frame).
MISALIGNED_SHARE = 0.05
MISALIGNED_SHIFT = 2.0


class MisalignmentWarning(UserWarning):
    """Deghosting found frames of a bracket shifted as a whole: it is not aligned, and most of those frames is
    replaced by the reference. The message names the frames and the shift."""


def _check(frames: torch.Tensor) -> None:
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"frames must be a torch.Tensor, got {type(frames).__name__}")
    if frames.dim() != 4 or frames.shape[1] != 3 or not frames.is_floating_point():
        raise ValueError(f"frames must be a float tensor shaped (N, 3, H, W), got {tuple(frames.shape)} {frames.dtype}")


def reference_index(frames: torch.Tensor) -> int:
    """Index of the frame whose mean Rec. 601 luma is nearest mid-grey (118/255): the reference.

    Args:
        frames: ``(N, 3, H, W)`` RGB in ``[0, 1]``.

    Example:
        >>> reference_index(torch.linspace(0.1, 0.9, 5).view(5, 1, 1, 1).expand(5, 3, 2, 2))
        2
    """
    _check(frames)
    return _reference(_reduced(frames))


def _factor(height: int, width: int, pixels: int = WORK_PIXELS) -> int:
    """The whole-number reduction that brings ``height x width`` to at most ``pixels`` pixels."""
    return max(1, math.ceil(math.sqrt(height * width / pixels)))


def _reduced(frames: torch.Tensor) -> np.ndarray:
    """``(N, h, w, 3)`` float32 in [0, 1]: the frames averaged over ``f x f`` blocks, ``f = _factor(H, W)``
    (``h = H // f``; the last ``H % f`` rows and columns are left out)."""
    height, width = frames.shape[-2:]
    factor = _factor(height, width)
    size = (width // factor, height // factor)
    out = np.empty((frames.shape[0], size[1], size[0], 3), np.float32)
    for n, frame in enumerate(frames.detach().to("cpu", torch.float32)):
        for c, plane in enumerate(frame.numpy()):
            if factor == 1:
                out[n, ..., c] = plane
            else:  # a whole-number factor takes OpenCV's fast path for area averaging (3x faster)
                cropped = plane[: size[1] * factor, : size[0] * factor]
                out[n, ..., c] = cv2.resize(cropped, size, interpolation=cv2.INTER_AREA)
    return np.clip(out, 0, 1, out=out)


def _reference(small: np.ndarray) -> int:
    """Index of the frame of ``small`` ``(N, h, w, 3)`` whose mean Rec. 601 luma is nearest mid-grey."""
    mean_luma = (small @ np.asarray(LUMA_WEIGHTS, np.float32)).mean(axis=(1, 2))
    return int(np.abs(mean_luma - MID_GREY).argmin())


def _curves(small: np.ndarray, reference: int) -> tuple[np.ndarray, np.ndarray]:
    """Intensity mapping of every frame and channel of ``small`` ``(N, h, w, 3)`` to the reference.

    Returns:
        ``curves`` ``(N, 3, CURVE_POINTS)``, non-decreasing, the mapping sampled at ``linspace(0, 1)``; and
        ``bounds`` ``(N, 3, 2)``: the brightest reference value behind a frame value <= :data:`LOW` and the
        darkest one behind a value >= :data:`HIGH` (the extreme ranks of the clipped values, not their middle:
        a clipped value is only a bound).
    """
    # Hand-written: skimage.exposure.match_histograms returns the matched image, not the mapping, and we need the
    # mapping's value at the clipping levels and its slope.
    grid = np.linspace(0, 1, CURVE_POINTS, dtype=np.float64)
    count = small.shape[1] * small.shape[2]
    quantiles = (np.arange(count) + 0.5) / count
    curves = np.empty((small.shape[0], 3, CURVE_POINTS), np.float32)
    bounds = np.empty((small.shape[0], 3, 2), np.float32)
    for c in range(3):
        ref_sorted = np.sort(small[reference, ..., c].ravel())
        for n in range(small.shape[0]):
            frame_sorted = ref_sorted if n == reference else np.sort(small[n, ..., c].ravel())
            # Mid-rank cumulative distribution of the frame at each grid value (ties count half), then the
            # reference's quantile function there.
            below = np.searchsorted(frame_sorted, grid, side="left")
            upto = np.searchsorted(frame_sorted, grid, side="right")
            curves[n, c] = np.interp((below + upto) / (2 * count), quantiles, ref_sorted)
            dark = np.searchsorted(frame_sorted, LOW, side="right") / count
            bright = np.searchsorted(frame_sorted, HIGH, side="left") / count
            bounds[n, c] = np.interp([dark, bright], quantiles, ref_sorted)
    curves[reference] = grid  # the reference maps to itself exactly
    bounds[reference] = (LOW, HIGH)
    return curves, bounds


def exposure_curves(frames: torch.Tensor, reference: int | None = None) -> torch.Tensor:
    """Intensity mapping functions of every frame to the reference frame's exposure, by histogram matching.

    Args:
        frames: ``(N, 3, H, W)`` RGB in ``[0, 1]``.
        reference: index of the reference frame (default :func:`reference_index`).

    Returns:
        ``(N, 3, 256)`` float32: ``curves[n, c, k]`` is the reference's value for value ``k / 255`` of channel
        ``c`` of frame ``n``; non-decreasing in ``k``; the reference's own curve is the identity.

    Example:
        >>> frames = torch.rand(1, 3, 32, 32).pow(torch.tensor([2.0, 1.0]).view(2, 1, 1, 1))  # a darker copy
        >>> curves = exposure_curves(frames, reference=1)
        >>> abs(curves[0, 0, 64].item() - 0.5) < 0.05  # 0.25 in the darker frame is 0.5 in the reference
        True
    """
    _check(frames)
    reference = reference_index(frames) if reference is None else reference
    return torch.from_numpy(_curves(_reduced(frames), reference)[0])


def _apply_curves(small: np.ndarray, curves: np.ndarray) -> np.ndarray:
    grid = np.linspace(0, 1, curves.shape[-1], dtype=np.float32)
    out = np.empty_like(small)
    for n in range(small.shape[0]):
        for c in range(3):
            out[n, ..., c] = np.interp(small[n, ..., c], grid, curves[n, c])
    return out


def match_exposure(frames: torch.Tensor, reference: int | None = None) -> torch.Tensor:
    """Every frame mapped to the reference frame's exposure with :func:`exposure_curves` (full size).

    Args:
        frames: ``(N, 3, H, W)`` RGB in ``[0, 1]``.
        reference: index of the reference frame (default :func:`reference_index`).

    Returns:
        ``(N, 3, H, W)`` float32 in ``[0, 1]``; the reference frame unchanged.
    """
    curves = exposure_curves(frames, reference).numpy()
    array = frames.detach().to("cpu", torch.float32).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return torch.from_numpy(_apply_curves(np.ascontiguousarray(array), curves)).permute(0, 3, 1, 2)


def _intervals(values: np.ndarray, curves: np.ndarray, bounds: np.ndarray, judge: bool = False):
    """Bounds, in the reference's scale, of the scene behind one frame's pixels ``values`` ``(h, w, 3)``
    (``curves`` ``(3, P)`` and ``bounds`` ``(3, 2)`` as :func:`_curves` gives them for that frame).

    Where a camera clips one channel it pulls the others up too (a yellow sun glow or a neon sign turns white),
    so at a frame's clipped pixel its unclipped channels are only upper bounds. ``judge`` (the reference) goes
    further: at its clipped pixels every channel's lower bound is lowered by :data:`CROSSTALK`, whichever channel
    clipped first. A frame found to disagree where the reference is clipped loses its weight there (a flat copy
    of the reference cannot replace it), so a false alarm there throws away the highlight detail the darker
    frames are for (a sunset's glow went white without this), while an object in front of a blown-out sky
    still differs by more than that.

    Returns:
        ``(low, high)`` ``(h, w, 3)`` per channel, ``(top_low, top_high)`` ``(h, w)`` for the pixel's brightest
        channel, and ``clipped`` ``(h, w)``: where a channel is at or above :data:`HIGH`.
    """
    grid = np.linspace(0, 1, curves.shape[-1], dtype=np.float32)
    low, high = np.empty_like(values), np.empty_like(values)
    floor = np.full(values.shape[:2], -np.inf, np.float32)  # the clipped channels' lower bound
    for c in range(3):
        channel = values[..., c]
        mapped = np.interp(channel, grid, curves[c])
        tolerance = TOLERANCE + STEP * np.interp(channel, grid, np.gradient(curves[c], grid))
        low[..., c], high[..., c] = mapped - tolerance, mapped + tolerance
        dark, bright = channel <= LOW, channel >= HIGH
        high[..., c][dark], low[..., c][dark] = bounds[c, 0] + tolerance[dark], -np.inf
        high[..., c][bright] = np.inf
        floor = np.where(bright, np.maximum(floor, bounds[c, 1] - tolerance), floor)
    # Per channel, not numpy's slow reductions over the last axis of length 3 (as in brightest_channel).
    clipped = (values[..., 0] >= HIGH) | (values[..., 1] >= HIGH) | (values[..., 2] >= HIGH)
    top_low = np.where(clipped, floor, brightest_channel(low))
    top_high = np.where(clipped, np.float32(np.inf), brightest_channel(high))
    if judge:
        low[clipped] -= CROSSTALK
    else:
        low[clipped[..., None] & (values < HIGH)] = -np.inf
    return (low, high), (top_low.astype(np.float32), top_high.astype(np.float32)), clipped


def _gap(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Distance between intervals ``a = (low, high)`` and ``b``, 0 where they overlap."""
    return np.maximum(np.maximum(a[0] - b[1], b[0] - a[1]), 0)


def _inconsistency(small: np.ndarray, curves: np.ndarray, bounds: np.ndarray, reference: int) -> np.ndarray:
    """``(N, h, w)``: per pixel, the Euclidean norm of the gaps between each frame's and the reference's
    intervals, over the channels and, where either is clipped, the brightest channel (0 for the reference)."""
    identity = np.tile(np.linspace(0, 1, curves.shape[-1], dtype=np.float32), (3, 1))
    # The reference's intervals span its 3x3 neighbourhood: a sub-pixel shift, or a frame blurred by its longer
    # exposure, then does not light up every edge, while objects (many pixels wide) are still far outside.
    slack = np.ones((3, 3), np.uint8)

    def widened(interval):
        return cv2.erode(interval[0], slack), cv2.dilate(interval[1], slack)

    ref_channels, ref_top, ref_clipped = _intervals(small[reference], identity, bounds[reference], judge=True)
    ref_channels, ref_top = widened(ref_channels), widened(ref_top)
    gaps = np.zeros(small.shape[:3], np.float32)
    for n in range(small.shape[0]):
        if n == reference:
            continue
        channels, top, clipped = _intervals(small[n], curves[n], bounds[n])
        gap = _gap(channels, ref_channels) ** 2
        squares = gap[..., 0] + gap[..., 1] + gap[..., 2]  # the sum(axis=-1) numpy would do, in its order
        squares += np.where(clipped | ref_clipped, _gap(top, ref_top) ** 2, 0)
        gaps[n] = np.sqrt(squares)
    return gaps


def inconsistency(frames: torch.Tensor, reference: int | None = None) -> torch.Tensor:
    """How far each frame is from the reference after exposure matching, per pixel, on the reduced copy.

    Args:
        frames: ``(N, 3, H, W)`` RGB in ``[0, 1]``.
        reference: index of the reference frame (default :func:`reference_index`).

    Returns:
        ``(N, 1, h, w)`` float32 >= 0 (``h x w`` about :data:`WORK_PIXELS`, the frames' aspect): the gap between
        the frame's and the reference's value intervals (module docstring), in the reference's ``[0, 1]`` scale;
        0 for the reference itself. Above :data:`THRESHOLD` is a ghost.
    """
    _check(frames)
    reference = reference_index(frames) if reference is None else reference
    small = _reduced(frames)
    return torch.from_numpy(_inconsistency(small, *_curves(small, reference), reference)).unsqueeze(1)


def _disk(radius: float) -> np.ndarray:
    size = 2 * max(1, round(radius)) + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def _clean(gaps: np.ndarray) -> np.ndarray:
    """One frame's gaps ``(h, w)`` -> soft mask ``(h, w)`` in [0, 1] (thresholded, cleaned, dilated, blurred)."""
    diagonal = math.hypot(*gaps.shape)
    mask = (gaps > THRESHOLD).astype(np.uint8)
    if not mask.any():
        return np.zeros(gaps.shape, np.float32)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _disk(OPEN_FRACTION * diagonal))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _disk(CLOSE_FRACTION * diagonal))
    mask = cv2.dilate(mask, _disk(DILATE_FRACTION * diagonal))
    return np.clip(cv2.GaussianBlur(mask.astype(np.float32), (0, 0), BLUR_FRACTION * diagonal), 0, 1)


def ghost_masks(frames: torch.Tensor, reference: int | None = None) -> torch.Tensor:
    """Soft masks of the moving content of every frame, on the reduced copy.

    Args:
        frames: ``(N, 3, H, W)`` RGB in ``[0, 1]``.
        reference: index of the reference frame (default :func:`reference_index`).

    Returns:
        ``(N, 1, h, w)`` float32 in ``[0, 1]`` (1: this frame disagrees with the reference there); all 0 for the
        reference.
    """
    gaps = inconsistency(frames, reference)
    return torch.from_numpy(np.stack([_clean(g) for g in gaps[:, 0].numpy()])).unsqueeze(1)


def _distrust(small_reference: np.ndarray) -> np.ndarray:
    """``(h, w)`` in [0, 1]: 1 where the reference is clipped (a channel >= HIGH, or all channels <= LOW), so
    that a copy of it mapped to another exposure would be flat or noisy; 0 well inside the range."""
    top = brightest_channel(small_reference)
    return 1 - np.clip((HIGH - top) / RAMP, 0, 1) * np.clip((top - LOW) / RAMP, 0, 1)


def _lut_index(values: torch.Tensor) -> torch.Tensor:
    """``values`` in [0, 1] -> int32 indices into a :data:`LUT_SIZE`-entry table (nearest entry)."""
    return torch.mul(values, LUT_SIZE - 1).add_(0.5).clamp_(0, LUT_SIZE - 1).to(torch.int32)


def _lut(index: torch.Tensor, curve: np.ndarray) -> torch.Tensor:
    """``curve`` (sampled at ``linspace(0, 1, P)``) at the values behind ``index`` (:func:`_lut_index`): a lookup
    in a 4096-entry table interpolated from it (twice as fast as interpolating per pixel; off by at most 1/4096 x
    its slope). ``index_select`` on the flat indices: 2.5x faster than advanced indexing, the same values."""
    table = np.interp(np.linspace(0, 1, LUT_SIZE), np.linspace(0, 1, curve.shape[-1]), curve).astype(np.float32)
    table = torch.from_numpy(table).to(index.device)
    return table.index_select(0, index.reshape(-1)).view(index.shape)


def _resized(small: np.ndarray, height: int, width: int) -> np.ndarray:
    if small.shape == (height, width):
        return small
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def _boxes(mask: np.ndarray, factor: int, height: int, width: int):
    """Disjoint ``(reduced, full)`` pairs of ``(rows, cols)`` slices that hold every non-zero pixel of the reduced
    ``mask``: a box per connected part (one pixel of margin), boxes that overlap merged, in the reduced copy and
    in the full-size frame (stretched to its edge over the rows and columns the reduction left out)."""
    count, _, stats, _ = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8), connectivity=8)
    small_height, small_width = mask.shape
    boxes = [
        [max(0, top - 1), min(small_height, top + rows + 1), max(0, left - 1), min(small_width, left + cols + 1)]
        for left, top, cols, rows, _ in stats[1:count]
    ]
    merged = True
    while merged:  # a handful of boxes: the quadratic merge costs nothing
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                if a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]:
                    boxes[i] = [min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])]
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    for top, bottom, left, right in boxes:
        full_bottom = height if bottom == small_height else bottom * factor
        full_right = width if right == small_width else right * factor
        full = (slice(top * factor, full_bottom), slice(left * factor, full_right))
        yield (slice(top, bottom), slice(left, right)), full


def _misaligned(small: np.ndarray, curves: np.ndarray, masks: list[np.ndarray], reference: int) -> dict[int, float]:
    """``{frame: shift}``: the frames whose masks cover at least :data:`MISALIGNED_SHARE` and whose luma, mapped
    to the reference's exposure, is shifted from the reference's by at least :data:`MISALIGNED_SHIFT` pixels of
    ``small`` (phase correlation, Hann window: the peak of the static majority, which moving objects do not move)."""
    suspects = [n for n, mask in enumerate(masks) if n != reference and (mask > 0.5).mean() >= MISALIGNED_SHARE]
    if not suspects:
        return {}
    weights = np.asarray(LUMA_WEIGHTS, np.float32)
    window = cv2.createHanningWindow(small.shape[2:0:-1], cv2.CV_32F)
    target = small[reference] @ weights
    shifts = {}
    for n in suspects:
        mapped = _apply_curves(small[n : n + 1], curves[n : n + 1])[0] @ weights
        (dx, dy), _ = cv2.phaseCorrelate(target, mapped, window)
        if math.hypot(dx, dy) >= MISALIGNED_SHIFT:
            shifts[n] = math.hypot(dx, dy)
    return shifts


def remove_ghosts(
    frames: torch.Tensor,
    reference: int | None = None,
    masks: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Ghost-free frames and fusion weights: the two halves of deghosting (module docstring, step 4).

    Args:
        frames: ``(N, 3, H, W)`` one bracket or ``(B, N, 3, H, W)`` a batch, RGB in ``[0, 1]``, any order.
        reference: index of the reference frame (default: per bracket, :func:`reference_index`).
        masks: ``(N, 1, h, w)`` (resp. ``(B, N, 1, h, w)``) soft masks in ``[0, 1]`` of any size, e.g. from
            :func:`ghost_masks` and edited, or found on another bracket to process two alike; default: found here.
        out: where to write the ghost-free frames, shaped like ``frames``; ``frames`` itself saves a copy (at
            12 MP, 5 frames are 0.7 GB) when the caller may change them. Default: a new tensor when anything moved.

    Returns:
        ``(frames, weights)``: the frames, where each non-reference frame's moving content is replaced by the
        reference mapped to that frame's exposure (``out``, or the input itself when nothing moved, else a new
        tensor); and ``(N, 1, H, W)`` (resp. ``(B, N, 1, H, W)``) float32 weights in ``[0, 1]`` for the
        fusion's ``frame_weights``: 0 where a frame showed moving content and the reference is clipped there,
        1 elsewhere and everywhere in the reference frame; ``None`` where that leaves every weight at 1. Both
        on the frames' device.

    Warns:
        MisalignmentWarning: (masks found here) frames with ghosts are shifted as a whole against the reference:
        the bracket is not aligned, and most of those frames would come from the reference.

    Example:
        >>> frames = torch.linspace(0.2, 0.8, 3).view(3, 1, 1, 1).expand(3, 3, 16, 24)  # static: nothing moves
        >>> clean, weights = remove_ghosts(frames)
        >>> clean is frames, weights
        (True, None)
    """
    if isinstance(frames, torch.Tensor) and frames.dim() == 5:
        given = [None] * len(frames) if masks is None else masks
        targets = [None] * len(frames) if out is None else out
        in_place = out is frames  # each bracket its own out (not a copy of itself onto itself)
        pairs = [remove_ghosts(bracket, reference, m, bracket if in_place else o)
                 for bracket, m, o in zip(frames, given, targets)]  # fmt: skip
        weights = None
        if any(w is not None for _, w in pairs):
            ones = torch.ones(frames.shape[1], 1, *frames.shape[-2:], device=frames.device)
            weights = torch.stack([ones if w is None else w for _, w in pairs])
        if out is None and all(clean is bracket for (clean, _), bracket in zip(pairs, frames)):
            return frames, weights
        return (out if out is not None else torch.stack([clean for clean, _ in pairs])), weights
    _check(frames)
    if out is not None and (not isinstance(out, torch.Tensor) or out.shape != frames.shape):
        raise ValueError(f"out must be a tensor shaped like frames {tuple(frames.shape)}")
    height, width = frames.shape[-2:]
    small = _reduced(frames)
    reference = _reference(small) if reference is None else reference
    factor = _factor(height, width)
    if masks is None:
        curves, bounds = _curves(small, reference)
        masks = [_clean(gaps) for gaps in _inconsistency(small, curves, bounds, reference)]
        shifted = _misaligned(small, curves, masks, reference)
        if shifted:
            verb = "is" if len(shifted) == 1 else "are"
            warnings.warn(
                f"the bracket looks misaligned: {len(shifted)} of its {len(frames)} frames {verb} shifted against the "
                f"reference (up to {max(shifted.values()) * factor:.0f} px), so deghosting replaces most of them "
                "with it; align the frames first (--align, or align=True in loopexpose.fuse)",
                MisalignmentWarning,
                stacklevel=2,
            )
    else:
        if masks.dim() != 4 or masks.shape[:2] != (len(frames), 1):
            raise ValueError(f"masks must be shaped ({len(frames)}, 1, h, w), got {tuple(masks.shape)}")
        masks = [_resized(m.detach().cpu().float().numpy(), *small.shape[1:3]) for m in masks[:, 0]]
        masks = [np.clip(m, 0, 1).astype(np.float32) for m in masks]
    distrust = _distrust(small[reference])
    weights = source = None
    clean = frames if out is None else out
    if out is not None and out is not frames:
        out.copy_(frames)
    for n, mask in enumerate(masks):
        if n == reference or not mask.any():
            continue
        if clean is frames and out is None:
            clean = frames.clone()
        # The reference mapped to this frame's exposure (histogram matching the other way round) replaces the
        # moving content, so that no pyramid level of the frame holds the object any more.
        inverse = _curves(small[[n, reference]], 0)[0][1]
        drop = mask * distrust
        if weights is None and drop.any():
            weights = torch.ones(len(masks), 1, height, width, device=frames.device)
        if source is None:  # the reference's table indices (it is never changed), once for all frames: int32,
            # 0.14 GB at 12 MP, and 0.2 s saved per frame replaced all over (a bracket that was not aligned)
            source = _lut_index(frames[reference])
        for (rows, cols), (full_rows, full_cols) in _boxes(mask, factor, height, width):  # only what moved
            size = (full_cols.stop - full_cols.start, full_rows.stop - full_rows.start)
            alpha = torch.from_numpy(cv2.resize(mask[rows, cols], size, interpolation=cv2.INTER_LINEAR)).to(frames)
            for c in range(3):
                filled = _lut(source[c, full_rows, full_cols], inverse[c])
                clean[n, c, full_rows, full_cols].lerp_(filled, alpha)  # boxes are disjoint: each pixel blended once
            if weights is not None:
                lost = cv2.resize(drop[rows, cols], size, interpolation=cv2.INTER_LINEAR)
                weights[n, 0, full_rows, full_cols] = torch.from_numpy(1 - lost).to(weights)
    return clean, weights
