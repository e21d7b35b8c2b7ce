"""Mertens exposure fusion as pure, differentiable functions over tensors.

Mertens, Kautz and Van Reeth, "Exposure Fusion" (Pacific Graphics 2007): every frame of a bracket gets a
per-pixel quality weight (local contrast x colour saturation x well-exposedness, each raised to an exponent);
the weights are normalised over the bracket, and the frames are blended level by level: the Laplacian pyramid
of each frame is multiplied by the Gaussian pyramid of its weight, summed over frames, and collapsed.

Shapes: a bracket is ``(N, 3, H, W)`` and a batch of equally long brackets ``(B, N, 3, H, W)``, RGB in
``[0, 1]``. Any ``N >= 1`` and any ``H x W`` work (odd sizes, 1-pixel-wide images). Everything is differentiable
with respect to the frames.

The defaults follow OpenCV's ``cv2.createMergeMertens().process`` (which the LoopExpose authors used for their
pseudo-labels) so closely that the two agree to well over 45 dB PSNR:

* contrast: absolute value of the 3x3 Laplacian ``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]`` of Rec. 601 luma, borders
  reflected without repeating the edge pixel (OpenCV's ``BORDER_REFLECT_101``);
* saturation: ``sqrt(sum_c (x_c - mean)^2)`` over the three channels. That is ``sqrt(3)`` times the standard
  deviation of the paper; the constant factor cancels when weights are normalised (see :func:`saturation`);
* well-exposedness: ``prod_c exp(-(x_c - 0.5)^2 / (2 * 0.2^2))``;
* weight: ``contrast^a * saturation^b * exposedness^c + 1e-12``, then divided by its sum over the bracket;
* pyramids: OpenCV's 5-tap binomial kernel ``[1, 4, 6, 4, 1] / 16``; down-sampling with reflect-101 borders
  and output size ``ceil(size / 2)``; up-sampling exactly as ``cv2.pyrUp`` (reflect-101 at the top/left,
  edge repeated at the bottom/right, odd sizes cropped);
* number of levels: ``floor(log2(min(H, W))) + 1`` (OpenCV's ``maxlevel + 1``).

Two presets (:data:`PRESETS`): ``"mertens"`` (1, 1, 1), the paper's, and ``"opencv"`` (1, 1, 0), the defaults
of ``cv2.createMergeMertens()``, which ignore well-exposedness. The output is NOT clipped: the Laplacian blend
can over- or undershoot ``[0, 1]`` by a few percent near strong edges, exactly as OpenCV's does; callers clamp.

Two code paths, same numbers (to float rounding; tests check both against OpenCV):

* CPU, float32/64, no autograd (inference, pseudo-labels): OpenCV's SIMD ``pyrDown``/``pyrUp``/``Laplacian``
  on each plane plus in-place torch arithmetic, one bracket and one frame at a time through reused pyramid
  buffers; weights in cache-sized strips of rows. Memory: the input, the output, and per worker thread one
  bracket's weights plus ~5 x H x W floats per channel of pyramids: 9 frames of 24 megapixels (2.4 GiB of
  input) peak at 4.3 GiB resident for the whole process (``bench/fusion.py``, ``docs/benchmarks.md``).
* Everything else (CUDA, half precision, or when gradients are recorded): pure torch, differentiable,
  all frames of a chunk at once (:data:`CHUNK_PIXELS` frames x pixels per chunk bounds the pyramids).

Differences from OpenCV that remain are float rounding (the 1/255 scaling, the order of sums), amplified
where every frame is flat (contrast x saturation near 0 everywhere): there the normalised weights are ratios
of tiny numbers, and OpenCV fed the same 8-bit frames as uint8 and as float x 255 disagrees with itself as much.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from loopexpose.io import LUMA_WEIGHTS

__all__ = [
    "PRESETS",
    "LUMA_WEIGHTS",
    "WEIGHT_EPSILON",
    "contrast",
    "saturation",
    "well_exposedness",
    "quality_weights",
    "pyramid_levels",
    "pyr_down",
    "pyr_up",
    "gaussian_pyramid",
    "laplacian_pyramid",
    "collapse_laplacian_pyramid",
    "blend_pyramids",
    "mertens_fuse",
    "fuse",
    "loop_fuse",
    "correct_frames",
]

#: Exponents ``(contrast, saturation, exposedness)`` of the two documented presets.
PRESETS: dict[str, tuple[float, float, float]] = {
    "mertens": (1.0, 1.0, 1.0),  # the paper
    "opencv": (1.0, 1.0, 0.0),  # cv2.createMergeMertens() defaults; what LoopExpose used for pseudo-labels
}
WEIGHT_EPSILON = 1e-12  # added to every weight before normalising (OpenCV's), so all-zero pixels average evenly
EXPOSEDNESS_SIGMA = 0.2
#: Frames x pixels blended at once; larger chunks are faster, smaller ones use less memory.
CHUNK_PIXELS = 48_000_000
#: torch threads for the elementwise work of the CPU path (``None``: leave torch's setting). That work sits
#: between OpenCV calls and is memory-bound, so a second thread gains little, while on shared or busy cores
#: OpenMP's barrier spinning made it 3x slower in our benchmark (docs/benchmarks.md). OpenCV keeps its threads.
CPU_THREADS: int | None = 1
#: Frames x pixels per strip when computing weights on the CPU (about 3 MB of float32 RGB: cache-sized).
STRIP_PIXELS = 1 << 18


# ------------------------------------------------------------------------------------------------ borders


def _reflect101(index: int, size: int) -> int:
    """OpenCV's ``borderInterpolate(index, size, BORDER_REFLECT_101)``: reflect without repeating the edge."""
    if size == 1:
        return 0
    while not 0 <= index < size:
        index = -index if index < 0 else 2 * size - 2 - index
    return index


def _pad_reflect101(x: torch.Tensor, pad: int, dim: int) -> torch.Tensor:
    """Pad ``x`` by ``pad`` on both sides of ``dim`` (-1 or -2) with reflect-101 borders, for any size."""
    size = x.shape[dim]
    if size > pad:
        # F.pad's "reflect" is reflect-101, but it wants a 3-D input and a size larger than the pad.
        pads = (pad, pad, 0, 0) if dim == -1 else (0, 0, pad, pad)
        padded = F.pad(x.reshape(-1, *x.shape[-2:]), pads, mode="reflect")
        return padded.reshape(*x.shape[:-2], *padded.shape[-2:])
    index = [_reflect101(i, size) for i in range(-pad, size + pad)]
    return x.index_select(dim, torch.tensor(index, device=x.device))


# ----------------------------------------------------------------------------------------------- measures


def _check_frames(images: torch.Tensor, name: str = "images") -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() < 3 or images.shape[-3] != 3:
        raise ValueError(f"{name} must be shaped (*, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor in [0, 1], got {images.dtype}")


def _recording(*tensors: torch.Tensor) -> bool:
    """True when autograd records operations on any of ``tensors`` (so in-place shortcuts are off)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _luma(images: torch.Tensor) -> torch.Tensor:
    red, green, blue = images.unbind(dim=-3)
    return (red * LUMA_WEIGHTS[0] + green * LUMA_WEIGHTS[1] + blue * LUMA_WEIGHTS[2]).unsqueeze(-3)


def contrast(images: torch.Tensor) -> torch.Tensor:
    """Local contrast: absolute Laplacian of the Rec. 601 luma.

    Args:
        images: ``(*, 3, H, W)`` RGB in ``[0, 1]``.

    Returns:
        ``(*, 1, H, W)``, non-negative (at most 4 for inputs in ``[0, 1]``).

    Example:
        >>> contrast(torch.zeros(2, 3, 4, 5)).shape
        torch.Size([2, 1, 4, 5])
    """
    _check_frames(images)
    grey = _luma(images)
    if _opencv_ok(grey):  # one fused pass instead of six (see pyr_down)
        laplacian = _opencv_planes(grey, grey.shape[-2:], lambda src, dst: cv2.Laplacian(src, -1, dst=dst))
        return laplacian.abs_()
    # 3x3 Laplacian as shifted sums of a reflect-101-padded copy (cv2.Laplacian's ksize=1 kernel and border).
    padded = _pad_reflect101(_pad_reflect101(grey, 1, -1), 1, -2)
    laplacian = (
        padded[..., :-2, 1:-1] + padded[..., 2:, 1:-1] + padded[..., 1:-1, :-2] + padded[..., 1:-1, 2:] - 4 * grey
    )
    return laplacian.abs()


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    if not _recording(x):
        return x.sqrt()
    # sqrt has an infinite derivative at 0 (grey pixels); give it 0 there so gradients stay finite.
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


def _channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel ``(sum_c (x_c - m)^2, m)`` over RGB, ``m`` the channel mean; ``(*, 1, H, W)`` each."""
    # Plain arithmetic on the three planes: torch.var_mean over a strided channel dimension is ~20x slower.
    # sum_c (x_c - m)^2 = ((r - g)^2 + (g - b)^2 + (b - r)^2) / 3, without the cancellation of E[x^2] - m^2.
    red, green, blue = images.unbind(dim=-3)
    mean = (red + green + blue) / 3
    spread = ((red - green).square() + (green - blue).square() + (blue - red).square()) / 3
    return spread.unsqueeze(-3), mean.unsqueeze(-3)


def saturation(images: torch.Tensor) -> torch.Tensor:
    """Colour saturation: ``sqrt(sum_c (x_c - mean_c x)^2)`` over the RGB channels of each pixel.

    This is ``sqrt(3)`` x the (population) standard deviation the paper names; OpenCV computes this form, and
    the constant factor cancels in the normalised weights (up to the tiny :data:`WEIGHT_EPSILON`).

    Args:
        images: ``(*, 3, H, W)`` RGB in ``[0, 1]``.

    Returns:
        ``(*, 1, H, W)`` in ``[0, sqrt(2/3)]``.

    Example:
        >>> round(saturation(torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)).item(), 4)  # sqrt(2/3)
        0.8165
    """
    _check_frames(images)
    return _safe_sqrt(_channel_stats(images)[0])


def _exposedness_from_stats(spread: torch.Tensor, mean: torch.Tensor, sigma: float) -> torch.Tensor:
    # sum_c (x_c - 0.5)^2 = sum_c (x_c - m)^2 + 3 (m - 0.5)^2: reuses the saturation's statistics.
    return torch.exp((spread + 3 * (mean - 0.5).square()) * (-1 / (2 * sigma**2)))


def well_exposedness(images: torch.Tensor, sigma: float = EXPOSEDNESS_SIGMA) -> torch.Tensor:
    """Well-exposedness: product over RGB of a Gaussian around mid-grey, ``exp(-(x - 0.5)^2 / (2 sigma^2))``.

    Args:
        images: ``(*, 3, H, W)`` RGB in ``[0, 1]``.
        sigma: the Gaussian's width (0.2 in the paper and OpenCV).

    Returns:
        ``(*, 1, H, W)`` in ``(0, 1]``; 1 for mid-grey.

    Example:
        >>> well_exposedness(torch.full((3, 1, 1), 0.5)).item()
        1.0
    """
    _check_frames(images)
    return _exposedness_from_stats(*_channel_stats(images), sigma)


def _power(measure: torch.Tensor, exponent: float) -> torch.Tensor | None:
    """``measure ** exponent``, or ``None`` for exponent 0 (the measure is ignored, as ``pow(x, 0) == 1``)."""
    if exponent == 0:
        return None
    if exponent == 1:
        return measure
    # A fractional power of 0 has an infinite derivative; keep gradients finite without changing values.
    return torch.where(measure > 0, measure.clamp_min(torch.finfo(measure.dtype).tiny) ** exponent, 0.0)


def quality_weights(
    images: torch.Tensor,
    contrast: float = 1.0,
    saturation: float = 1.0,
    exposedness: float = 1.0,
    normalise: bool = True,
) -> torch.Tensor:
    """Normalised Mertens weights of the frames of one or more brackets.

    ``w = contrast^a * saturation^b * exposedness^c + 1e-12``, divided by its sum over the frames. Computed in
    float32 (or float64 for float64 input) whatever the input's dtype: the epsilon underflows in half precision.
    With ``normalise=False`` the division is left out (to normalise over frames held in several tensors).

    Args:
        images: ``(*, N, 3, H, W)`` RGB in ``[0, 1]``; the frames of a bracket are along dimension ``-4``.
        contrast: exponent of the contrast measure (0 ignores it).
        saturation: exponent of the saturation measure.
        exposedness: exponent of the well-exposedness measure.
        normalise: divide by the sum over the frames.

    Returns:
        ``(*, N, 1, H, W)`` float32 weights, non-negative, summing to 1 over ``N`` (when normalised).

    Example:
        >>> w = quality_weights(torch.rand(4, 3, 8, 8))
        >>> w.shape, bool(torch.allclose(w.sum(0), torch.ones(1, 8, 8)))
        (torch.Size([4, 1, 8, 8]), True)
    """
    _check_frames(images)
    if images.dim() < 4:
        raise ValueError(f"images must be shaped (*, N, 3, H, W), got {tuple(images.shape)}")
    for name, value in (("contrast", contrast), ("saturation", saturation), ("exposedness", exposedness)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"the {name} exponent must be a finite number >= 0, got {value}")
    work = images if images.dtype == torch.float64 else images.float()
    exponents = (contrast, saturation, exposedness)
    height, width = work.shape[-2:]
    rows = max(2, STRIP_PIXELS // (work[..., 0, 0, :].numel()))
    if _recording(work) or work.device.type != "cpu" or height <= rows:
        return _weights_of_block(work, *exponents, normalise)
    # On the CPU, go in strips of rows that stay in cache: a dozen full-size temporaries cost ~5x more, mostly
    # in page faults. The Laplacian needs one row above and below each strip.
    out = torch.empty_like(work[..., :1, :, :])
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        first, last = max(0, top - 1), min(height, bottom + 1)
        block = _weights_of_block(work[..., first:last, :], *exponents, normalise)
        out[..., top:bottom, :] = block[..., top - first : bottom - first, :]
    return out


def _weights_of_block(
    work: torch.Tensor, contrast: float, saturation: float, exposedness: float, normalise: bool = True
) -> torch.Tensor:
    in_place = not _recording(work)

    def times(weight: torch.Tensor | None, factor: torch.Tensor | None) -> torch.Tensor | None:
        if weight is None or factor is None:
            return factor if weight is None else weight
        return weight.mul_(factor) if in_place else weight * factor

    weight = _power(_contrast(work), contrast)
    if saturation or exposedness:
        spread, mean = _channel_stats(work)
        if saturation:
            weight = times(weight, _power(_safe_sqrt(spread), saturation))
        if exposedness:
            weight = times(weight, _power(_exposedness_from_stats(spread, mean, EXPOSEDNESS_SIGMA), exposedness))
    if weight is None:
        return torch.full_like(work[..., :1, :, :], 1 / work.shape[-4] if normalise else 1.0)
    weight = weight.add_(WEIGHT_EPSILON) if in_place else weight + WEIGHT_EPSILON
    if not normalise:
        return weight
    if in_place:
        return weight.div_(weight.sum(dim=-4, keepdim=True))
    return weight / weight.sum(dim=-4, keepdim=True)


_contrast, _saturation = contrast, saturation  # quality_weights' arguments shadow these names


def _times_frame_weights(raw: torch.Tensor, frame_weights: torch.Tensor, in_place: bool) -> torch.Tensor:
    """Unnormalised quality weights ``(*, N, 1, H, W)`` times ``frame_weights``, epsilon included: a frame weighted
    0 never contributes, even where no frame has any quality (flat, grey, clipped), where Mertens' epsilon would
    average all frames. A pixel that *every* frame weights 0 is averaged evenly."""
    frame_weights = frame_weights.to(raw)
    weight = raw.mul_(frame_weights) if in_place else raw * frame_weights
    # Only when no frame is positive everywhere can a pixel be 0 in every frame (one reduction, no full-size map).
    if not bool((frame_weights.flatten(-3).amin(dim=-1) > 0).any(dim=-1).all()):
        unweighted = (frame_weights == 0).all(dim=-4, keepdim=True)
        weight = torch.where(unweighted, torch.ones_like(weight), weight)
    return weight


def _weighted(raw: torch.Tensor, frame_weights: torch.Tensor, in_place: bool) -> torch.Tensor:
    """:func:`_times_frame_weights`, normalised over the frames. With ``frame_weights == 1`` this is exactly
    the normalised ``raw``."""
    weight = _times_frame_weights(raw, frame_weights, in_place)
    total = weight.sum(dim=-4, keepdim=True)
    return weight.div_(total) if in_place else weight / total


def _check_frame_weights(frame_weights: torch.Tensor | None, images: torch.Tensor) -> None:
    if frame_weights is None:
        return
    expected = (*images.shape[:-3], 1, *images.shape[-2:])
    if not isinstance(frame_weights, torch.Tensor) or tuple(frame_weights.shape) != expected:
        shape = tuple(frame_weights.shape) if isinstance(frame_weights, torch.Tensor) else type(frame_weights).__name__
        raise ValueError(f"frame_weights must be shaped {expected} for images {tuple(images.shape)}, got {shape}")


# ----------------------------------------------------------------------------------------------- pyramids
# Hand-written rather than kornia's pyrdown/pyrup: kornia floors odd sizes (37 -> 18, OpenCV gives 19), blurs
# differently (0.11 max difference from cv2.pyrDown on even sizes, version 0.9) and up-samples bilinearly
# (0.06 from cv2.pyrUp), so its pyramids cannot reproduce OpenCV's fusion.


def pyramid_levels(height: int, width: int) -> int:
    """OpenCV's number of pyramid levels for Mertens fusion: ``floor(log2(min(H, W))) + 1``.

    Computed as OpenCV does, in single precision (``int(logf(min) / logf(2))``), so the count matches it even
    where rounding matters.

    Example:
        >>> pyramid_levels(356, 536), pyramid_levels(1, 7)
        (9, 1)
    """
    smallest = np.float32(min(height, width))
    return int(np.float32(np.log(smallest)) / np.float32(np.log(np.float32(2.0)))) + 1


def _every_other(x: torch.Tensor, dim: int, start: int, count: int) -> torch.Tensor:
    """``count`` samples of ``x`` along ``dim`` at ``start, start + 2, ...`` (a strided view)."""
    return x.narrow(dim, start, 2 * count - 1).unfold(dim, 1, 2).squeeze(-1)


def _down_1d(x: torch.Tensor, dim: int) -> torch.Tensor:
    out = (x.shape[dim] + 1) // 2
    p = _pad_reflect101(x, 2, dim)
    # [1, 4, 6, 4, 1] / 16 at every second position, from strided views of the padded copy.
    t0, t1, t2, t3, t4 = (_every_other(p, dim, k, out) for k in range(5))
    return ((t0 + t4) + 4 * (t1 + t3) + 6 * t2) * 0.0625


def _opencv_ok(x: torch.Tensor) -> bool:
    """True when ``x`` may go through OpenCV: on the CPU, float32/64, and no gradient is being recorded."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and not (torch.is_grad_enabled() and x.requires_grad)
    )


def _opencv_planes(x: torch.Tensor, size: tuple[int, int], apply) -> torch.Tensor:
    """Run ``apply(src, dst)`` on every ``(H, W)`` plane of ``x`` into a new ``(*, size)`` tensor."""
    source = x.contiguous().reshape(-1, *x.shape[-2:]).numpy()
    out = torch.empty(*x.shape[:-2], *size, dtype=x.dtype)
    for src, dst in zip(source, out.view(-1, *size).numpy()):
        apply(src, dst)
    return out


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """Blur with the 5x5 binomial kernel and drop every other row and column, as ``cv2.pyrDown``.

    Args:
        x: ``(*, C, H, W)``, any range.

    Returns:
        ``(*, C, ceil(H / 2), ceil(W / 2))``; borders reflected without repeating the edge (reflect-101).

    Example:
        >>> pyr_down(torch.ones(1, 3, 5, 8)).shape
        torch.Size([1, 3, 3, 4])
    """
    size = ((x.shape[-2] + 1) // 2, (x.shape[-1] + 1) // 2)
    if _opencv_ok(x):
        # Same numbers as the torch code below (to float rounding), ~15x faster: torch has no fused strided
        # 5-tap filter on the CPU, and the torch version takes ~10 passes over memory where OpenCV takes one.
        return _opencv_planes(x, size, lambda src, dst: cv2.pyrDown(src, dst=dst, dstsize=size[::-1]))
    return _down_1d(_down_1d(x, -1), -2)


def _up_1d(x: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    n = x.shape[dim]
    # cv2.pyrUp reflects at the start (s[-1] = s[1]) and repeats the edge at the end (s[n] = s[n-1]); a single
    # sample is repeated on both sides.
    before = _reflect101(-2, 2 * n) // 2
    p = torch.cat([x.narrow(dim, before, 1), x, x.narrow(dim, n - 1, 1)], dim=dim)
    left, right = p.narrow(dim, 0, n), p.narrow(dim, 2, n)
    even = (left + right + 6 * x) * 0.125
    odd = (x + right) * 0.5
    # Interleave: out[2i] = even[i], out[2i + 1] = odd[i].
    both = torch.stack([even, odd], dim=dim)
    shape = list(x.shape)
    shape[dim] = 2 * n
    return both.reshape(shape).narrow(dim, 0, size)


def pyr_up(x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Insert zero rows and columns, blur with 4 x the 5x5 binomial kernel, as ``cv2.pyrUp(x, dstsize=size)``.

    Args:
        x: ``(*, C, h, w)``, any range.
        size: ``(H, W)`` of the result, each ``2h`` or ``2h - 1`` (resp. ``w``); default ``(2h, 2w)``.

    Returns:
        ``(*, C, H, W)``.

    Example:
        >>> pyr_up(torch.ones(1, 3, 3, 4), (5, 8)).shape
        torch.Size([1, 3, 5, 8])
    """
    h, w = x.shape[-2:]
    height, width = size if size is not None else (2 * h, 2 * w)
    if height not in (2 * h, 2 * h - 1) or width not in (2 * w, 2 * w - 1):
        raise ValueError(f"pyr_up size must be (2h or 2h-1, 2w or 2w-1) for input {h}x{w}, got {height}x{width}")
    if _opencv_ok(x):  # as in pyr_down: same numbers, much faster
        return _opencv_planes(x, (height, width), lambda src, dst: cv2.pyrUp(src, dst=dst, dstsize=(width, height)))
    return _up_1d(_up_1d(x, -2, height), -1, width)


def gaussian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """``[x, pyr_down(x), pyr_down(pyr_down(x)), ...]``, ``levels`` tensors in all.

    Args:
        x: ``(*, C, H, W)``.
        levels: number of levels, >= 1 (the first is ``x`` itself).
    """
    pyramid = [x]
    for _ in range(levels - 1):
        pyramid.append(pyr_down(pyramid[-1]))
    return pyramid


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Band-pass levels ``G_l - pyr_up(G_{l+1})`` of the Gaussian pyramid, ending with its coarsest level.

    Args:
        x: ``(*, C, H, W)``.
        levels: number of levels, >= 1. :func:`collapse_laplacian_pyramid` inverts it (up to rounding).
    """
    gaussian = gaussian_pyramid(x, levels)
    bands = [fine - pyr_up(coarse, fine.shape[-2:]) for fine, coarse in zip(gaussian[:-1], gaussian[1:])]
    return bands + [gaussian[-1]]


def collapse_laplacian_pyramid(pyramid: list[torch.Tensor]) -> torch.Tensor:
    """Rebuild an image from its Laplacian pyramid (finest level first)."""
    image = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        image = pyr_up(image, band.shape[-2:]).add_(band)  # a fresh tensor: adding in place is safe
    return image


def blend_pyramids(
    images: torch.Tensor, weights: torch.Tensor, levels: int, out: list[torch.Tensor] | None = None
) -> list[torch.Tensor]:
    """Laplacian pyramid of ``sum_n gaussian(weights_n) * laplacian(images_n)``, the frames summed over dim -4.

    Args:
        images: ``(*, N, C, H, W)``.
        weights: ``(*, N, 1, H, W)``, normalised over ``N``.
        levels: number of pyramid levels, >= 1.
        out: a pyramid to add the blend to (in place when no gradient is recorded), e.g. the blend of other
            frames of the same brackets.

    Returns:
        ``levels`` tensors ``(*, C, H_l, W_l)``, finest first.
    """
    in_place = not (torch.is_grad_enabled() and (images.requires_grad or weights.requires_grad))
    blended: list[torch.Tensor] = []
    image_level, weight_level = images, weights
    for level in range(levels):
        if level < levels - 1:
            image_next = pyr_down(image_level)
            up = pyr_up(image_next, image_level.shape[-2:])
            band = torch.sub(image_level, up, out=up) if in_place else image_level - up
        else:
            image_next, band = None, image_level
        if in_place and band is not image_level:
            contribution = band.mul_(weight_level).sum(dim=-4)
        else:
            contribution = (band * weight_level).sum(dim=-4)
        if out is None:
            blended.append(contribution)
        else:
            blended.append(out[level].add_(contribution) if in_place else out[level] + contribution)
        if image_next is not None:
            weight_level = pyr_down(weight_level)
        image_level = image_next
    return blended


_threads_lock = threading.Lock()
_threads_users = 0
_threads_saved = 0


@contextlib.contextmanager
def _cpu_threads():
    """Run the block with :data:`CPU_THREADS` torch threads and restore the caller's count afterwards.

    Counted, so that overlapping calls from several threads restore the count the first one found.
    """
    global _threads_users, _threads_saved
    if CPU_THREADS is None:
        yield
        return
    with _threads_lock:
        if _threads_users == 0:
            _threads_saved = torch.get_num_threads()
            torch.set_num_threads(CPU_THREADS)
        _threads_users += 1
    try:
        yield
    finally:
        with _threads_lock:
            _threads_users -= 1
            if _threads_users == 0:
                torch.set_num_threads(_threads_saved)


def _pyramid_sizes(height: int, width: int, levels: int) -> list[tuple[int, int]]:
    sizes = [(height, width)]
    for _ in range(levels - 1):
        sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
    return sizes


def _fuse_on_cpu(
    images: torch.Tensor,
    exponents: tuple[float, float, float],
    levels: int,
    workers: int = 1,
    frame_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`mertens_fuse` for the CPU without autograd: same arithmetic, in place, bracket by bracket.

    One bracket's weights at a time, and one frame at a time through one set of pyramid buffers that every
    frame and bracket reuses, so nothing full-sized is allocated per frame (allocation and page faults cost more
    than the arithmetic here). A batch is shared among ``workers`` threads (OpenCV and torch release the GIL),
    which beats OpenCV's and torch's own threading of each small step. Memory: the input, the output, and per
    worker one bracket's weights (``N x H x W`` floats) and about ``4.7 x H x W`` floats per channel of pyramids.

    Args:
        images: ``(B, N, C, H, W)`` float32/64 on the CPU.
        exponents: ``(contrast, saturation, exposedness)``.
        workers: threads; brackets are dealt out round-robin.
        frame_weights: ``(B, N, 1, H, W)`` factors of the quality weights, or ``None``.
    """
    images = images.detach().contiguous()
    fused = torch.empty(images.shape[0], *images.shape[2:], dtype=images.dtype)
    workers = max(1, min(workers, images.shape[0]))
    if workers == 1:
        _fuse_brackets_on_cpu(images, range(images.shape[0]), exponents, levels, fused, frame_weights)
        return fused
    with ThreadPoolExecutor(workers) as pool:
        jobs = [
            pool.submit(
                _fuse_brackets_on_cpu, images, range(w, images.shape[0], workers), exponents, levels, fused,
                frame_weights,
            )
            for w in range(workers)
        ]
        for job in jobs:
            job.result()
    return fused


def _fuse_brackets_on_cpu(
    images: torch.Tensor,
    which: range,
    exponents: tuple[float, float, float],
    levels: int,
    fused: torch.Tensor,
    frame_weights: torch.Tensor | None = None,
) -> None:
    """Fuse brackets ``which`` of ``images`` ``(B, N, C, H, W)`` into ``fused[which]``, reusing one set of buffers."""
    _, frames, channels, height, width = images.shape
    sizes = _pyramid_sizes(height, width, levels)
    frame_pyramid = [torch.empty(channels, *size, dtype=images.dtype) for size in sizes]  # [0] is the frame
    weight_pyramid = [torch.empty(1, *size, dtype=images.dtype) for size in sizes]
    up = [torch.empty(channels, *size, dtype=images.dtype) for size in sizes[:-1]]
    result = [torch.empty(channels, *size, dtype=images.dtype) for size in sizes]
    for b in which:
        if frame_weights is None:
            weights = quality_weights(images[b], *exponents).to(images.dtype)
        else:
            weights = _weighted(quality_weights(images[b], *exponents, normalise=False), frame_weights[b], True)
            weights = weights.to(images.dtype)
        result[0] = fused[b].zero_()
        for level in result[1:]:
            level.zero_()
        for n in range(frames):
            frame_pyramid[0], weight_pyramid[0] = images[b, n], weights[n]
            for level in range(levels - 1):
                _pyr_down_into(frame_pyramid[level], frame_pyramid[level + 1])
                _pyr_down_into(weight_pyramid[level], weight_pyramid[level + 1])
                _pyr_up_into(frame_pyramid[level + 1], up[level])
                band = torch.sub(frame_pyramid[level], up[level], out=up[level])
                result[level].addcmul_(band, weight_pyramid[level])
            result[-1].addcmul_(frame_pyramid[-1], weight_pyramid[-1])
        for level in range(levels - 2, -1, -1):
            result[level].add_(_pyr_up_into(result[level + 1], up[level]))


def _pyr_down_into(source: torch.Tensor, target: torch.Tensor) -> None:
    size = (target.shape[-1], target.shape[-2])
    for src, dst in zip(source.numpy(), target.numpy()):
        cv2.pyrDown(src, dst=dst, dstsize=size)


def _pyr_up_into(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    size = (target.shape[-1], target.shape[-2])
    for src, dst in zip(source.numpy(), target.numpy()):
        cv2.pyrUp(src, dst=dst, dstsize=size)
    return target


# ----------------------------------------------------------------------------------------------- fusion


def mertens_fuse(
    images: torch.Tensor,
    contrast: float = 1.0,
    saturation: float = 1.0,
    exposedness: float = 1.0,
    levels: int | None = None,
    frame_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fuse an exposure bracket (or a batch of them) with Mertens exposure fusion.

    Args:
        images: ``(N, 3, H, W)`` one bracket, or ``(B, N, 3, H, W)`` a batch of brackets, RGB in ``[0, 1]``,
            float32/float64 (float16/bfloat16 too; weights are then computed in float32). Frame order is free.
        contrast: exponent of the contrast measure (0 ignores it).
        saturation: exponent of the saturation measure.
        exposedness: exponent of the well-exposedness measure. The defaults are the paper's;
            ``cv2.createMergeMertens()`` uses ``(1, 1, 0)``: see :data:`PRESETS` and :func:`fuse`.
        levels: pyramid levels including the full-resolution one; ``None`` is OpenCV's
            ``floor(log2(min(H, W))) + 1``; ``1`` is a plain per-pixel weighted average.
        frame_weights: ``(N, 1, H, W)`` (resp. ``(B, N, 1, H, W)``) factors in ``[0, 1]`` of each frame's
            quality weights, applied before normalisation (e.g. from :func:`loopexpose.deghost.remove_ghosts`: 0
            where a frame showed a moving object), or ``None``. A frame weighted 0 at a pixel does not contribute
            there (where every frame is, all are averaged evenly); all ones gives the same result as ``None``.

    Returns:
        ``(3, H, W)`` or ``(B, 3, H, W)``, same dtype and device as ``images``. NOT clipped: it may leave
        ``[0, 1]`` slightly near strong edges (as OpenCV's); clamp before saving. With ``N == 1`` the frame
        itself is returned (a copy).

    Example:
        >>> bracket = torch.rand(3, 3, 16, 24)
        >>> mertens_fuse(bracket).shape, mertens_fuse(bracket[None].expand(2, -1, -1, -1, -1)).shape
        (torch.Size([3, 16, 24]), torch.Size([2, 3, 16, 24]))
    """
    _check_frames(images)
    if images.dim() not in (4, 5):
        raise ValueError(f"images must be (N, 3, H, W) or (B, N, 3, H, W), got {tuple(images.shape)}")
    if images.shape[-4] == 0 or images.shape[-1] == 0 or images.shape[-2] == 0:
        raise ValueError(f"images must hold at least one non-empty frame, got {tuple(images.shape)}")
    height, width = images.shape[-2:]
    if levels is None:
        levels = pyramid_levels(height, width)
    if not isinstance(levels, int) or levels < 1:
        raise ValueError(f"levels must be a positive int or None, got {levels!r}")
    _check_frame_weights(frame_weights, images)
    if images.shape[-4] == 1:
        return images.select(-4, 0).clone()
    if _opencv_ok(images) and (frame_weights is None or not _recording(frame_weights)):
        workers = torch.get_num_threads()  # the caller's thread budget, spent on brackets in parallel
        with _cpu_threads():
            brackets = images.reshape(-1, *images.shape[-4:])
            if frame_weights is not None:
                frame_weights = frame_weights.detach().reshape(-1, *frame_weights.shape[-4:])
            fused = _fuse_on_cpu(brackets, (contrast, saturation, exposedness), levels, workers, frame_weights)
        return fused if images.dim() == 5 else fused[0]
    if frame_weights is None:
        weights = quality_weights(images, contrast, saturation, exposedness).to(images.dtype)
    else:
        raw = quality_weights(images, contrast, saturation, exposedness, normalise=False)
        in_place = not _recording(raw, frame_weights)
        weights = _weighted(raw, frame_weights, in_place).to(images.dtype)
    # Blend a few frames at a time and add up the pyramids: the result is the same, the peak memory smaller.
    frames = images.shape[-4]
    batch = images.shape[0] if images.dim() == 5 else 1
    chunk = max(1, CHUNK_PIXELS // max(1, batch * height * width))
    total: list[torch.Tensor] | None = None
    for start in range(0, frames, chunk):
        count = min(chunk, frames - start)
        total = blend_pyramids(images.narrow(-4, start, count), weights.narrow(-4, start, count), levels, total)
    return collapse_laplacian_pyramid(total)


def fuse(
    images: torch.Tensor,
    preset: str = "opencv",
    levels: int | None = None,
    frame_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mertens fusion with a named preset of exponents.

    Args:
        images: ``(N, 3, H, W)`` or ``(B, N, 3, H, W)`` in ``[0, 1]``.
        preset: ``"opencv"`` (contrast 1, saturation 1, exposedness 0: ``cv2.createMergeMertens()``'s defaults,
            used by the LoopExpose authors for their pseudo-labels) or ``"mertens"`` (1, 1, 1: the paper).
        levels: see :func:`mertens_fuse`.
        frame_weights: see :func:`mertens_fuse` (deghosting).

    Returns:
        ``(3, H, W)`` or ``(B, 3, H, W)``, not clipped.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown fusion preset {preset!r}; choose one of {sorted(PRESETS)}")
    return mertens_fuse(images, *PRESETS[preset], levels=levels, frame_weights=frame_weights)


#: :func:`loop_fuse`: exponent of the band activity in the weights of the fine levels, and the number of coarsest
#: levels taken from the fusion of corrected and input frames. Chosen by MEF-SSIM on the training and validation
#: scenes (bench/loop_fuse_sweep.py, docs/evaluation.md); exponents 2 to 4 with 3 to 5 levels all beat plain Mertens.
DETAIL_EXPONENT = 3.0
BASE_LEVELS = 4


def _band_activity(band: torch.Tensor) -> torch.Tensor:
    """Local activity of a Laplacian band ``(*, 3, h, w)``: ``|band|`` averaged over channels, then smoothed
    over a 5x5 binomial neighbourhood (one pyramid step down and up). ``(*, 1, h, w)``, >= 0."""
    magnitude = band.abs().mean(dim=-3, keepdim=True)
    if min(magnitude.shape[-2:]) < 2:
        return magnitude
    return pyr_up(pyr_down(magnitude), magnitude.shape[-2:]).clamp_min_(0)


def _frame_band(image: torch.Tensor, smaller: torch.Tensor, n: int, in_place: bool) -> torch.Tensor:
    """Laplacian band of frame ``n`` (dimension -4) of ``image`` given ``smaller = pyr_down(image)``."""
    frame = image.select(-4, n)
    up = pyr_up(smaller.select(-4, n), frame.shape[-2:])
    return torch.sub(frame, up, out=up) if in_place else frame - up


def loop_fuse(
    inputs: torch.Tensor,
    corrected: torch.Tensor | None = None,
    detail: float = DETAIL_EXPONENT,
    base_levels: int = BASE_LEVELS,
    frame_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """The LoopExpose multi-exposure-fusion result: detail from the input frames, tone from the corrected ones.

    A Laplacian-pyramid blend (Mertens' paper weights, :data:`PRESETS` ``"mertens"``) split in two:

    * the ``base_levels`` coarsest levels (global tone and large-scale contrast) blend the corrected frames
      together with the inputs: where the network made every frame well exposed, its tone wins;
    * the finer levels blend only the input frames (the sensor's detail, without the noise a correction lifts
      out of the shadows), and there each frame's Mertens weight is multiplied by the local activity of its
      band raised to ``detail`` (salience-weighted pyramid fusion, Burt and Kolczynski 1993): per level and per
      region, the frame that holds the detail gets the weight, where plain Mertens averages it with flatter
      frames and loses contrast.

    On the validation scenes this beats plain Mertens fusion of the inputs on MEF-SSIM (docs/evaluation.md);
    ``corrected=None`` gives the detail-weighted fusion of the inputs alone (the same pyramid, base from the
    inputs), which isolates what the corrected frames add.

    Args:
        inputs: ``(*, N, 3, H, W)`` the bracket's frames in ``[0, 1]``, any order.
        corrected: ``(*, M, 3, H, W)`` corrected frames of the same bracket(s) in ``[0, 1]`` (usually ``M == N``),
            or ``None``.
        detail: exponent of the band activity at the fine levels (0: plain Mertens weights there).
        base_levels: number of coarsest pyramid levels blended from corrected and input frames (at least 1).
        frame_weights: ``(*, N, 1, H, W)`` factors in ``[0, 1]`` of each input frame's weights, applied before
            normalisation at every level, and to corrected frame ``n`` as to input frame ``n`` (it shows the same
            moment); e.g. from :func:`loopexpose.deghost.remove_ghosts`. Needs ``M == N``. ``None``: no factors.

    Returns:
        ``(*, 3, H, W)``, not clipped (as :func:`mertens_fuse`).

    Example:
        >>> bracket = torch.rand(3, 3, 40, 48)
        >>> loop_fuse(bracket, bracket.flip(-1)).shape
        torch.Size([3, 40, 48])
    """
    _check_frames(inputs, "inputs")
    if inputs.dim() < 4:
        raise ValueError(f"inputs must be (*, N, 3, H, W), got {tuple(inputs.shape)}")
    if corrected is not None:
        _check_frames(corrected, "corrected")
        if corrected.shape[:-4] != inputs.shape[:-4] or corrected.shape[-3:] != inputs.shape[-3:]:
            raise ValueError(f"corrected {tuple(corrected.shape)} does not match inputs {tuple(inputs.shape)}")
    if not (math.isfinite(detail) and detail >= 0) or base_levels < 1:
        raise ValueError(f"need detail >= 0 and base_levels >= 1, got {detail} and {base_levels}")
    _check_frame_weights(frame_weights, inputs)
    if frame_weights is not None and corrected is not None and corrected.shape != inputs.shape:
        raise ValueError(f"frame_weights need one corrected frame per input, got {tuple(corrected.shape)}")
    paper = PRESETS["mertens"]
    levels = pyramid_levels(*inputs.shape[-2:])
    split = max(levels - base_levels, 0)
    work = inputs if inputs.dtype == torch.float64 else inputs.float()
    in_place = not _recording(work) and (corrected is None or not _recording(corrected))
    raw = quality_weights(work, *paper, normalise=False)
    if frame_weights is not None:
        in_place = in_place and not _recording(frame_weights)
        raw = _times_frame_weights(raw, frame_weights, in_place)
    inputs_sum = raw.sum(dim=-4, keepdim=True)

    def down(x: torch.Tensor) -> torch.Tensor:  # to the first coarse level
        for _ in range(split):
            x = pyr_down(x)
        return x

    # The coarse levels' weights first, taken down to 1/2^split of the size, so no full-size map of them outlives
    # this block: Mertens weights over inputs and corrected frames together, each tensor blended on its own.
    if corrected is not None:
        corrected = corrected.to(work)
        raw_corrected = quality_weights(corrected, *paper, normalise=False)
        if frame_weights is not None:
            raw_corrected = _times_frame_weights(raw_corrected, frame_weights, in_place)
        total = inputs_sum + raw_corrected.sum(dim=-4, keepdim=True)
        base_weight = down(raw / total)
        corrected_weight = down(raw_corrected.div_(total) if in_place else raw_corrected / total)
        corrected = down(corrected)
        del raw_corrected, total
    # The fine levels: inputs only, Mertens weights times band activity ^ detail, normalised over the frames.
    # One frame's band at a time (computed twice: for the weights, then for the blend) bounds the memory to the
    # frames plus a few single-channel maps per frame.
    weight = raw.div_(inputs_sum) if in_place else raw / inputs_sum
    del inputs_sum
    fine: list[torch.Tensor] = []
    image = work
    for _ in range(split):
        smaller = pyr_down(image)
        frames = range(image.shape[-4])
        band = functools.partial(_frame_band, image, smaller, in_place=in_place)
        salient = torch.stack([_band_activity(band(n)).pow_(detail) for n in frames], dim=-4)
        salient = salient.mul_(weight).add_(WEIGHT_EPSILON) if in_place else salient * weight + WEIGHT_EPSILON
        norm = salient.sum(dim=-4, keepdim=True)
        salient = salient.div_(norm) if in_place else salient / norm
        level = None
        for n in frames:
            part = band(n).mul_(salient.select(-4, n)) if in_place else band(n) * salient.select(-4, n)
            level = part if level is None else (level.add_(part) if in_place else level + part)
        fine.append(level)
        image, weight = smaller, pyr_down(weight)
    # The coarse levels: ``image`` and ``weight`` are the inputs and their own weights at 1/2^split by now.
    coarse = blend_pyramids(image, weight if corrected is None else base_weight, levels - split)
    if corrected is not None:
        coarse = blend_pyramids(corrected, corrected_weight, levels - split, coarse)
    return collapse_laplacian_pyramid(fine + coarse).to(inputs.dtype)


def correct_frames(frames: torch.Tensor, model: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Run an exposure-correction ``model`` on every frame of ``(N, 3, H, W)`` or ``(B, N, 3, H, W)`` frames.

    The frames go to the model's device (``model.device`` or its first parameter's) and come back to theirs;
    no gradients are recorded; the result is clamped to ``[0, 1]``.
    """
    device = getattr(model, "device", None)
    if device is None and isinstance(model, torch.nn.Module):
        device = next((p.device for p in model.parameters()), None)
    flat = frames.reshape(-1, *frames.shape[-3:])
    with torch.no_grad():
        corrected = model(flat.to(device) if device is not None else flat)
    return corrected.to(frames.device, frames.dtype).clamp(0, 1).reshape(frames.shape)
