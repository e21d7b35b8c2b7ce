"""Training losses: reconstruction (L1, SSIM), cross-exposure consistency and LoopExpose's Luminance Ranking Loss.

All take images shaped ``(*, 3, H, W)`` in [0, 1] unless said otherwise and return scalar tensors.
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


def cross_exposure_consistency_loss(corrected: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between each corrected frame of a bracket and the bracket's mean corrected frame.

    Every exposure of one scene should be corrected to the same image; the pseudo-label says so only where the
    label is reachable from a frame, this term says it everywhere (a clipped region must not come out one way
    from the dark frame and another from the bright one).

    Args:
        corrected: ``(B, k, 3, H, W)`` corrected frames of ``B`` brackets of ``k`` frames, in [0, 1].
    Returns:
        Scalar; 0 when all frames of every bracket agree.

    >>> frames = torch.zeros(1, 2, 3, 4, 4); frames[0, 1] = 0.5
    >>> cross_exposure_consistency_loss(frames)
    tensor(0.2500)
    """
    if corrected.ndim != 5:
        raise ValueError(f"corrected must be (B, k, 3, H, W), got shape {tuple(corrected.shape)}")
    return (corrected - corrected.mean(dim=1, keepdim=True)).abs().mean()


def luminance_ranking_loss(features: torch.Tensor, margin: float = 0.1, reduction: str = "mean") -> torch.Tensor:
    """Luminance Ranking Loss: luminance features must increase with the bracket's exposure order.

    For every pair of frames ``i < j`` of a bracket (``i`` darker), the hinge ``max(0, f_i + margin - f_j)``
    penalises a darker frame whose feature is not at least ``margin`` below a brighter frame's.

    Args:
        features: ``(B, N)`` scalar feature of each frame, frames ordered darkest first (``N >= 1``).
        margin: the required gap between consecutive ranks.
        reduction: ``"mean"`` over all pairs of all brackets, or ``"sum"``.
    Returns:
        Scalar loss; 0 for ``N = 1``.

    >>> luminance_ranking_loss(torch.tensor([[0.0, 1.0, 2.0]]), margin=0.5)
    tensor(0.)
    >>> luminance_ranking_loss(torch.tensor([[2.0, 1.0]]), margin=0.5)
    tensor(1.5000)
    """
    if features.ndim != 2:
        raise ValueError(f"features must be (B, N), got shape {tuple(features.shape)}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    n = features.shape[1]
    if n < 2:
        return features.sum() * 0
    i, j = torch.triu_indices(n, n, offset=1, device=features.device)
    hinge = F.relu(features[:, i] + margin - features[:, j])
    return hinge.mean() if reduction == "mean" else hinge.sum()
