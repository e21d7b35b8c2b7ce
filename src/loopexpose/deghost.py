"""Ghost removal for exposure fusion: per-frame, per-pixel weights that keep moving objects out of the blend.

A bracket shot over a second or two catches people, cars, leaves and water in a different place in every frame;
plain fusion averages them into semi-transparent ghosts. Here every frame is compared with the *reference*
frame (the one whose mean luma is nearest mid-grey, 118/255) after mapping it to the reference's exposure;
where it disagrees, its weight goes to 0, so the content there comes from the reference (and from the frames
that agree with it). The reference keeps weight 1 everywhere, so every pixel has a source.

The steps, on a copy reduced to about :data:`WORK_PIXELS` pixels (masks need no more, and it keeps the cost
to a few tens of milliseconds whatever the frame size):

1. **Exposure matching** (:func:`exposure_curves`): for every frame and channel, the intensity mapping to
   the reference found by histogram matching (``g = Q_ref o F_frame``, quantile function of the reference after
   the cumulative histogram of the frame; Grossberg and Nayar's intensity mapping function). Histogram matching
   needs no correspondence between pixels, so moving objects barely bias it (they are in both frames, somewhere),
   and it captures the camera's own response, clipping included. We measured it against mapping the frames with
   the correction model (``loopexpose.load("default")``, then the same matching of the corrected frames):
   ``bench/ghosts.py`` (docs/benchmarks.md, "Ghost removal"). The model maps every frame near mid-grey but with
   its own local curves per frame, which leaves larger differences on static content, and costs a network
   pass per frame; histogram matching separated moving from static pixels better, at no cost.
2. **Inconsistency** (:func:`inconsistency`): per channel, each pixel's value is an interval in the reference's
   scale: the mapped value plus or minus a tolerance (a floor for noise and JPEG, plus the frame's quantisation
   step times the mapping's slope, which is steep where a dark frame is lifted). A *clipped* value is only a
   bound: a pixel saturated in a frame may be anything brighter than what saturation maps to, a black one
   anything darker, and the same holds for the reference's own clipped pixels. The inconsistency is the gap
   between the frame's and the reference's intervals (0 when they overlap), so a pixel that is saturated in one
   frame is not a ghost, unless the other frame says it is too dark to saturate there (an object moved in).
3. **Masks** (:func:`ghost_masks`): threshold at :data:`THRESHOLD`, then morphology: an opening removes
   isolated pixels (noise), a closing joins the pieces of one object (its flat parts can match the background),
   a dilation covers the object's edge and the coarse pyramid levels (the Laplacian blend spreads each frame's
   weight over the kernel of the coarse levels, so a mask that stops at the object's edge lets its blur in), and
   a Gaussian blur makes the transition soft.
4. **Weights** (:func:`ghost_weights`): ``1 - mask``, upsampled to the frames' size; they multiply the Mertens
   quality weights before normalisation (``frame_weights`` of :func:`loopexpose.fusion.mertens_fuse` and
   :func:`loopexpose.fusion.loop_fuse`).

Shapes: frames ``(N, 3, H, W)`` (one bracket) or ``(B, N, 3, H, W)``, RGB in ``[0, 1]``; weights
``(N, 1, H, W)`` (resp. ``(B, N, 1, H, W)``) in ``[0, 1]``. Not differentiable (thresholds and morphology):
deghosting is for inference.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from loopexpose.baselines import MID_GREY
from loopexpose.io import LUMA_WEIGHTS

__all__ = [
    "WORK_PIXELS",
    "THRESHOLD",
    "reference_index",
    "exposure_curves",
    "match_exposure",
    "inconsistency",
    "ghost_masks",
    "remove_ghosts",
]

#: Pixels of the reduced copy the masks are computed on (about 640 x 480).
WORK_PIXELS = 300_000
#: Inconsistency (gap between a frame's and the reference's intervals, in the reference's [0, 1] scale) above
#: which a pixel is a ghost. Chosen on the synthetic moving objects and the static scenes of bench/ghosts.py.
THRESHOLD = 0.04
#: Values at or above this (below LOW) are clipped: only a bound on the scene's brightness.
HIGH = 0.9
LOW = 0.015
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


def _intervals(values: np.ndarray, curve: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` bounds, in the reference's scale, of the scene value behind ``values`` of one channel
    (``curve`` and ``bounds`` as :func:`_curves` gives them for that frame and channel)."""
    grid = np.linspace(0, 1, curve.shape[-1], dtype=np.float32)
    mapped = np.interp(values, grid, curve)
    slope = np.interp(values, grid, np.gradient(curve, grid))
    tolerance = TOLERANCE + STEP * slope
    low, high = mapped - tolerance, mapped + tolerance
    dark = values <= LOW
    high[dark] = bounds[0] + tolerance[dark]
    low[dark] = -np.inf
    bright = values >= HIGH
    low[bright] = bounds[1] - tolerance[bright]
    high[bright] = np.inf
    return low.astype(np.float32), high.astype(np.float32)


def _gap(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Distance between intervals ``a = (low, high)`` and ``b``, 0 where they overlap."""
    return np.maximum(np.maximum(a[0] - b[1], b[0] - a[1]), 0)


def _inconsistency(small: np.ndarray, curves: np.ndarray, bounds: np.ndarray, reference: int) -> np.ndarray:
    """``(N, h, w)``: per pixel, the gap between each frame's and the reference's intervals.

    Where neither has a saturated channel, the Euclidean norm of the three channels' gaps. Where one has, only
    the brightest channel is compared: when a camera clips one channel it also bends the others (yellow neon
    turns white, skin turns yellow), so the unclipped channels of such a pixel are no evidence either way.
    """
    identity = np.linspace(0, 1, curves.shape[-1], dtype=np.float32)
    # The reference's interval spans its 3x3 neighbourhood: a sub-pixel shift, or a frame blurred by its longer
    # exposure, then does not light up every edge, while objects (many pixels wide) are still far outside.
    slack = np.ones((3, 3), np.uint8)
    ref = [
        (cv2.erode(low, slack), cv2.dilate(high, slack))
        for low, high in (_intervals(small[reference, ..., c], identity, bounds[reference, c]) for c in range(3))
    ]
    gaps = np.zeros(small.shape[:3], np.float32)
    for n in range(small.shape[0]):
        if n == reference:
            continue
        frame = [_intervals(small[n, ..., c], curves[n, c], bounds[n, c]) for c in range(3)]
        gaps[n] = np.sqrt(sum(_gap(f, r) ** 2 for f, r in zip(frame, ref)))
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
    top = small_reference.max(axis=-1)
    return 1 - np.clip((HIGH - top) / RAMP, 0, 1) * np.clip((top - LOW) / RAMP, 0, 1)


def _lut(values: torch.Tensor, curve: np.ndarray) -> torch.Tensor:
    """``curve`` (sampled at ``linspace(0, 1, P)``) applied to ``values`` in [0, 1]: a lookup in a 4096-entry
    table interpolated from it (twice as fast as interpolating per pixel; off by at most 1/4096 x its slope)."""
    table = np.interp(np.linspace(0, 1, LUT_SIZE), np.linspace(0, 1, curve.shape[-1]), curve).astype(np.float32)
    index = torch.mul(values, LUT_SIZE - 1).add_(0.5).clamp_(0, LUT_SIZE - 1).to(torch.int32)
    return torch.from_numpy(table).to(values)[index]


def _resized(small: np.ndarray, height: int, width: int) -> np.ndarray:
    if small.shape == (height, width):
        return small
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def _boxes(mask: np.ndarray, factor: int, height: int, width: int):
    """``(reduced, full)`` pairs of ``(rows, cols)`` slices around each connected part of the reduced ``mask``
    (one pixel of margin), in the reduced copy and in the full-size frame (the last part stretched to the edge
    over the rows and columns the reduction left out)."""
    count, _, stats, _ = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8), connectivity=8)
    small_height, small_width = mask.shape
    for left, top, box_width, box_height, _ in stats[1:count]:
        top, left = max(0, top - 1), max(0, left - 1)
        bottom, right = min(small_height, top + box_height + 2), min(small_width, left + box_width + 2)
        full_bottom = height if bottom == small_height else bottom * factor
        full_right = width if right == small_width else right * factor
        yield (slice(top, bottom), slice(left, right)), (slice(top * factor, full_bottom), slice(left * factor, full_right))


def remove_ghosts(
    frames: torch.Tensor, reference: int | None = None, masks: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ghost-free frames and fusion weights: the two halves of deghosting (module docstring, step 4).

    Args:
        frames: ``(N, 3, H, W)`` one bracket or ``(B, N, 3, H, W)`` a batch, RGB in ``[0, 1]``, any order.
        reference: index of the reference frame (default: per bracket, :func:`reference_index`).
        masks: ``(N, 1, h, w)`` (resp. ``(B, N, 1, h, w)``) soft masks in ``[0, 1]`` of any size, e.g. from
            :func:`ghost_masks` and edited, or found on another bracket to process two alike; default: found here.

    Returns:
        ``(frames, weights)``: the frames, where each non-reference frame's moving content is replaced by the
        reference mapped to that frame's exposure (the input itself when nothing moves, else a new tensor),
        and ``(N, 1, H, W)`` (resp. ``(B, N, 1, H, W)``) float32 weights in ``[0, 1]`` for the fusion's
        ``frame_weights``: 0 where a frame showed moving content and the reference is clipped there, 1
        elsewhere and everywhere in the reference frame. Both on the frames' device.

    Example:
        >>> frames = torch.linspace(0.2, 0.8, 3).view(3, 1, 1, 1).expand(3, 3, 16, 24)  # static: nothing moves
        >>> clean, weights = remove_ghosts(frames)
        >>> clean is frames, bool((weights == 1).all())
        (True, True)
    """
    if isinstance(frames, torch.Tensor) and frames.dim() == 5:
        given = [None] * len(frames) if masks is None else masks
        pairs = [remove_ghosts(bracket, reference, m) for bracket, m in zip(frames, given)]
        if all(clean is bracket for (clean, _), bracket in zip(pairs, frames)):
            return frames, torch.stack([weights for _, weights in pairs])
        return torch.stack([clean for clean, _ in pairs]), torch.stack([weights for _, weights in pairs])
    _check(frames)
    height, width = frames.shape[-2:]
    small = _reduced(frames)
    reference = _reference(small) if reference is None else reference
    if masks is None:
        masks = [_clean(gaps) for gaps in _inconsistency(small, *_curves(small, reference), reference)]
    else:
        if masks.dim() != 4 or masks.shape[:2] != (len(frames), 1):
            raise ValueError(f"masks must be shaped ({len(frames)}, 1, h, w), got {tuple(masks.shape)}")
        masks = [_resized(m.detach().cpu().float().numpy(), *small.shape[1:3]) for m in masks[:, 0]]
        masks = [np.clip(m, 0, 1).astype(np.float32) for m in masks]
    distrust = _distrust(small[reference])
    factor = _factor(height, width)
    weights = torch.ones(len(masks), 1, height, width, device=frames.device)
    clean = frames
    for n, mask in enumerate(masks):
        if n == reference or not mask.any():
            continue
        if clean is frames:
            clean = frames.clone()
        # The reference mapped to this frame's exposure (histogram matching the other way round) replaces the
        # moving content, so that no pyramid level of the frame holds the object any more.
        inverse = _curves(small[[n, reference]], 0)[0][1]
        drop = mask * distrust
        # Each part on its own (only its box is touched at full size); overlapping boxes are harmless: both
        # blend from the untouched input.
        for (rows, cols), (full_rows, full_cols) in _boxes(mask, factor, height, width):
            size = (full_cols.stop - full_cols.start, full_rows.stop - full_rows.start)
            alpha = torch.from_numpy(cv2.resize(mask[rows, cols], size, interpolation=cv2.INTER_LINEAR)).to(frames)
            source = frames[reference, :, full_rows, full_cols]
            for c in range(3):
                filled = _lut(source[c], inverse[c])
                clean[n, c, full_rows, full_cols] = torch.lerp(frames[n, c, full_rows, full_cols], filled, alpha)
            lost = cv2.resize(drop[rows, cols], size, interpolation=cv2.INTER_LINEAR)
            weights[n, 0, full_rows, full_cols] = torch.from_numpy(1 - lost).to(weights)
    return clean, weights
