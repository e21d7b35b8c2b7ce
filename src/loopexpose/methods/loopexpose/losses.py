"""LoopExpose's own losses: the Luminance Ranking Loss and cross-exposure consistency (the reconstruction terms,
L1 and SSIM, are the shared :mod:`loopexpose.losses`).

Both return scalar tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
