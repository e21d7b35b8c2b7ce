"""Reconstruction losses any method may use: L1 and SSIM (the ST-LPIPS perceptual term is
:mod:`loopexpose.perceptual`). A method's own losses live with it, in ``loopexpose/methods/<method>/losses.py``.

All take images shaped ``(*, 3, H, W)`` in [0, 1] and return scalar tensors.
"""

from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F


def l1_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error between ``(*, 3, H, W)`` tensors.

    >>> l1_loss(torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2))
    tensor(1.)
    """
    return F.l1_loss(output, target)


def ssim_map(output: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel SSIM (Wang et al. 2004; Gaussian window, C1 = 0.01^2, C2 = 0.03^2, data range 1) of
    ``(*, C, H, W)`` tensors, over the 'valid' region (no padding), shaped ``(*, C, H - window + 1, ...)``.

    Same definition as ``kornia.metrics.ssim`` with ``padding="valid"``; written here with a separable
    Gaussian applied to the five moment maps in one grouped convolution, which is about 4x faster than kornia's
    2-D window on the CPU and matters because it runs on every training step.

    >>> x = torch.rand(1, 3, 16, 16)
    >>> bool(torch.allclose(ssim_map(x, x), torch.ones(1)))
    True
    """
    lead, (c, h, w) = output.shape[:-3], output.shape[-3:]
    window = min(window, h, w)
    gauss = kornia.filters.get_gaussian_kernel1d(window, sigma).to(output)
    x, y = output.reshape(-1, c, h, w), target.reshape(-1, c, h, w)
    moments = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    groups = moments.shape[1]
    moments = F.conv2d(moments, gauss.view(1, 1, 1, -1).expand(groups, 1, 1, window), groups=groups)
    moments = F.conv2d(moments, gauss.view(1, 1, -1, 1).expand(groups, 1, window, 1), groups=groups)
    mx, my, xx, yy, xy = moments.split(c, dim=1)
    c1, c2 = 0.01**2, 0.03**2
    vx, vy, cov = xx - mx * mx, yy - my * my, xy - mx * my
    value = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return value.reshape(*lead, *value.shape[-3:])


def ssim_loss(output: torch.Tensor, target: torch.Tensor, window: int = 11) -> torch.Tensor:
    """``1 - mean SSIM`` of ``(*, 3, H, W)`` tensors (see :func:`ssim_map`); 0 when equal.

    >>> x = torch.rand(2, 3, 16, 16)
    >>> float(ssim_loss(x, x)) < 1e-6
    True
    """
    return 1 - ssim_map(output, target, window).mean()
