"""CLIP-guided (or recogniser-guided) pseudo-ground-truth: a tailored correction of each input photo.

For every region, candidate gamma adjustments ``x ** g`` are scored by the exposure recogniser; the region's
gamma is the softmax-weighted (by ``log p(well)``) geometric mean of the candidates, so a region the recogniser
finds under-exposed gets ``g < 1`` (brighter), an over-exposed one ``g > 1`` (darker). The per-region gammas
are blended with the whole-photo choice, painted on the masks, smoothed so no seam appears at region borders,
and applied: the result is the pseudo-label the network learns to reproduce.
"""

from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F

from loopexpose.methods.semantic.regions import paint_regions

DEFAULT_GAMMAS = tuple(float(2.0**e) for e in torch.linspace(-2.0, 2.0, 9))  # 1/4 .. 4


@torch.no_grad()
def pseudo_label(
    x: torch.Tensor,
    masks: torch.Tensor,
    recogniser,
    gammas: tuple[float, ...] = DEFAULT_GAMMAS,
    temperature: float = 0.3,
    region_weight: float = 0.6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-ground-truth corrections of ``x``.

    Args:
        x: ``(B, 3, H, W)`` in [0, 1].
        masks: ``(B, K, h, w)`` region masks (resized to ``H, W`` when needed).
        recogniser: has ``region_logits(x, masks) -> (B, K, 3)`` and ``global_logits(x) -> (B, 3)``.
        gammas: candidate exponents (``< 1`` brightens).
        temperature: softmax temperature over the candidates' ``log p(well)`` (lower = closer to argmax).
        region_weight: 0 = one gamma for the whole photo, 1 = fully per-region gammas.
    Returns:
        ``(B, 3, H, W)`` pseudo-labels in [0, 1], and the ``(B, 1, H, W)`` gamma map that made them.
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) images, got {tuple(x.shape)}")
    if masks.shape[-2:] != x.shape[-2:]:
        masks = F.interpolate(masks.float(), size=x.shape[-2:], mode="nearest")
    base = x.clamp(1e-4, 1)
    log_g = torch.log(x.new_tensor(gammas))
    region_scores, global_scores = [], []
    for g in gammas:
        candidate = base**g
        region_scores.append(recogniser.region_logits(candidate, masks).log_softmax(-1)[..., 1])
        global_scores.append(recogniser.global_logits(candidate).log_softmax(-1)[..., 1])
    region_log_gamma = (torch.stack(region_scores, -1) / temperature).softmax(-1) @ log_g  # (B, K)
    global_log_gamma = (torch.stack(global_scores, -1) / temperature).softmax(-1) @ log_g  # (B,)
    mixed = region_weight * region_log_gamma + (1 - region_weight) * global_log_gamma[:, None]
    gamma_map = paint_regions(mixed[..., None], masks)  # (B, 1, H, W) log-gamma
    sigma = max(x.shape[-2:]) / 24
    size = 2 * int(2 * sigma) + 1
    gamma_map = kornia.filters.gaussian_blur2d(gamma_map, (size, size), (sigma, sigma), border_type="replicate")
    gamma_map = gamma_map.exp()
    return (base**gamma_map).clamp(0, 1), gamma_map
