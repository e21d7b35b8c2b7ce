"""Losses of the semantic-aware model: region consistency and semantic-prompt alignment (pure functions).

All take ``(B, 3, H, W)`` images in [0, 1] and ``(B, K, H, W)`` one-hot region masks; they return scalars.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from loopexpose.io import LUMA_WEIGHTS
from loopexpose.methods.semantic.regions import region_means


def _luma(x: torch.Tensor) -> torch.Tensor:
    return (x * x.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)).sum(1, keepdim=True)


def region_order_loss(output: torch.Tensor, source: torch.Tensor, masks: torch.Tensor, margin: float = 0.02) -> torch.Tensor:
    """Keep the brightness order of regions: if region i is darker than j in the input, it stays darker.

    Hinge ``relu(out_i - out_j)`` over region pairs whose input means differ by more than ``margin``.

    >>> m = torch.zeros(1, 2, 2, 2); m[0, 0, :, 0] = 1; m[0, 1, :, 1] = 1
    >>> x = torch.tensor([0.2, 0.6]).view(1, 1, 1, 2).expand(1, 3, 2, 2)
    >>> region_order_loss(x, x, m).item(), region_order_loss(x.flip(-1), x, m).item() > 0
    (0.0, True)
    """
    present = masks.sum((-2, -1)) > 0  # (B, K)
    src = region_means(_luma(source), masks)[..., 0]  # (B, K)
    out = region_means(_luma(output), masks)[..., 0]
    darker = (src[:, :, None] + margin < src[:, None, :]) & present[:, :, None] & present[:, None, :]
    violation = F.relu(out[:, :, None] - out[:, None, :]) * darker
    return violation.sum() / darker.sum().clamp(min=1)


def region_structure_loss(output: torch.Tensor, source: torch.Tensor, masks: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """``1 - correlation`` of output and input luma inside each region, area-weighted: textures stay in place."""
    lo, ls = _luma(output), _luma(source)
    mo, ms = region_means(lo, masks), region_means(ls, masks)  # (B, K, 1)
    do = lo - torch.einsum("bkc,bkhw->bchw", mo, masks)
    ds = ls - torch.einsum("bkc,bkhw->bchw", ms, masks)
    cov = torch.einsum("bkhw,bchw->bk", masks, do * ds)
    var_o = torch.einsum("bkhw,bchw->bk", masks, do * do)
    var_s = torch.einsum("bkhw,bchw->bk", masks, ds * ds)
    corr = cov / torch.sqrt((var_o + eps) * (var_s + eps))
    area = masks.sum((-2, -1))
    return ((1 - corr) * area).sum() / area.sum().clamp(min=1)


def region_consistency_loss(output: torch.Tensor, source: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Region semantics stay coherent: brightness order of regions plus structure within them."""
    return region_order_loss(output, source, masks) + region_structure_loss(output, source, masks)


def prompt_alignment_loss(output: torch.Tensor, masks: torch.Tensor, recogniser) -> torch.Tensor:
    """Pull the photo and each region towards "a well-exposed photo": cross-entropy towards the "well" class
    of the recogniser (with CLIP, its logits are the scaled similarities to the three prompts)."""
    well = torch.ones(output.shape[0], dtype=torch.long, device=output.device)
    loss = F.cross_entropy(recogniser.global_logits(output), well)
    regions = recogniser.region_logits(output, masks)  # (B, K, 3)
    present = (masks.sum((-2, -1)) > 0).flatten()
    if present.any():
        flat = regions.flatten(0, 1)[present]
        loss = loss + F.cross_entropy(flat, torch.ones(len(flat), dtype=torch.long, device=output.device))
    return loss


def smoothness_loss(alpha: torch.Tensor) -> torch.Tensor:
    """Total variation of ``(B, C, h, w)`` curve maps (mean absolute neighbour difference)."""
    return (alpha.diff(dim=-1).abs().mean() + alpha.diff(dim=-2).abs().mean()) / 2


def segmentation_agreement(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How well two ``(B, K, H, W)`` segmentations agree: area-weighted best-match IoU of ``a``'s regions, ``(B,)``.

    1 = identical partitions. A metric (not differentiable): segment the output and the input, compare.

    >>> m = torch.zeros(1, 2, 2, 2); m[0, 0, 0] = 1; m[0, 1, 1] = 1
    >>> segmentation_agreement(m, m).item()
    1.0
    """
    inter = torch.einsum("bihw,bjhw->bij", a, b)
    area_a, area_b = a.sum((-2, -1)), b.sum((-2, -1))
    iou = inter / (area_a[:, :, None] + area_b[:, None, :] - inter).clamp(min=1e-6)
    return (iou.amax(-1) * area_a).sum(-1) / area_a.sum(-1).clamp(min=1e-6)
