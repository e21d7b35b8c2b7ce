"""Simple exposure-correction baselines: what any learned corrector must beat.

Each takes ``(*, 3, H, W)`` RGB in ``[0, 1]`` and returns the same shape in ``[0, 1]``, one image at a time
(nothing depends on the other images of a batch). They are strong on some metrics: :func:`gain_to_mid_grey`
lands close to a bracket's mid-grey reference frame in PSNR (it fixes the global exposure, which PSNR weighs
most) while recovering no clipped shadow or highlight detail.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

__all__ = ["MID_GREY", "mean_luma", "gain_to_mid_grey", "gamma_to_mid_grey", "auto_levels", "clahe"]

MID_GREY = 118 / 255  # the target mean luma of a well-exposed frame (LoopExpose, SeqMSEC)
_REC601 = (0.299, 0.587, 0.114)


def mean_luma(images: torch.Tensor) -> torch.Tensor:
    """Mean Rec. 601 luma of each image: ``(*, 3, H, W)`` in [0, 1] -> ``(*, 1, 1, 1)`` in [0, 1].

    Example:
        >>> mean_luma(torch.full((2, 3, 4, 4), 0.25)).flatten().tolist()
        [0.25, 0.25]
    """
    weights = torch.tensor(_REC601, dtype=images.dtype, device=images.device).view(3, 1, 1)
    return (images * weights).sum(dim=-3, keepdim=True).mean(dim=(-2, -1), keepdim=True)


def gain_to_mid_grey(images: torch.Tensor, target: float = MID_GREY) -> torch.Tensor:
    """Multiply each image by one number so that its mean luma becomes ``target`` (clipped to [0, 1]).

    The one-liner baseline of the LoopExpose discussion: about as close to the reference exposure as a trained
    corrector, but clipped highlights stay clipped and crushed shadows come back as noise.

    Example:
        >>> round(mean_luma(gain_to_mid_grey(torch.full((3, 4, 4), 0.1))).item(), 4)
        0.4627
    """
    gain = target / mean_luma(images).clamp_min(1e-4)
    return (images * gain).clamp(0, 1)


def gamma_to_mid_grey(images: torch.Tensor, target: float = MID_GREY) -> torch.Tensor:
    """Raise each image to the power ``gamma`` that takes its mean luma to ``target``: ``x ** (log t / log m)``.

    Gamma keeps black at black and white at white, so unlike a gain it never clips; it is exact for the mean
    of a flat image and approximate otherwise.

    Example:
        >>> round(gamma_to_mid_grey(torch.full((3, 2, 2), 0.25))[0, 0, 0].item(), 4)
        0.4627
    """
    m = mean_luma(images).clamp(1e-4, 1 - 1e-4)
    gamma = (math.log(target) / torch.log(m)).clamp(0.1, 10.0)
    return images.clamp(0, 1).clamp_min(1e-8) ** gamma


def auto_levels(images: torch.Tensor, low: float = 0.01, high: float = 0.99) -> torch.Tensor:
    """Stretch each image's luma percentiles ``low`` .. ``high`` to 0 .. 1 (one mapping for all channels, so
    colours keep their hue), then apply a gamma to bring the mean luma to mid-grey, as photo editors'
    "auto levels" does.

    Example:
        >>> x = torch.linspace(0.2, 0.4, 48).view(3, 4, 4)
        >>> y = auto_levels(x)
        >>> round(y.min().item(), 3), round(y.max().item(), 3)
        (0.0, 1.0)
    """
    weights = torch.tensor(_REC601, dtype=images.dtype, device=images.device).view(3, 1, 1)
    grey = (images * weights).sum(dim=-3).flatten(-2).float()
    lo = torch.quantile(grey, low, dim=-1)[..., None, None, None].to(images.dtype)
    hi = torch.quantile(grey, high, dim=-1)[..., None, None, None].to(images.dtype)
    stretched = ((images - lo) / (hi - lo).clamp_min(1e-3)).clamp(0, 1)
    return gamma_to_mid_grey(stretched)


def clahe(images: torch.Tensor, clip_limit: float = 2.0, tiles: int = 8) -> torch.Tensor:
    """OpenCV CLAHE (contrast-limited adaptive histogram equalisation) on the L channel of CIELAB, 8-bit.

    Args:
        images: ``(*, 3, H, W)`` in [0, 1] (moved to the CPU and back).
        clip_limit: OpenCV's ``clipLimit``.
        tiles: grid of ``tiles x tiles`` tiles.
    """
    operator = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles))
    flat = images.detach().reshape(-1, *images.shape[-3:]).clamp(0, 1)
    out = []
    for image in flat:
        rgb8 = (image.permute(1, 2, 0).cpu().float().numpy() * 255 + 0.5).astype(np.uint8)
        lab = cv2.cvtColor(rgb8, cv2.COLOR_RGB2LAB)
        lab[:, :, 0] = operator.apply(np.ascontiguousarray(lab[:, :, 0]))
        result = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB).astype(np.float32) / 255
        out.append(torch.from_numpy(result).permute(2, 0, 1))
    return torch.stack(out).to(images.device, images.dtype).reshape(images.shape)
