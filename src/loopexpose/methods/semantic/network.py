"""Semantic-aware exposure correction (after Wu et al., 2026, "CLIP-Guided Unsupervised Semantic-Aware Exposure
Correction"), reimplemented from the paper's description at a size that trains on a CPU.

Pipeline for ``(B, 3, H, W)`` input in [0, 1]:

1. **regions**: the photo is area-downscaled to a working thumbnail (long side ``work_side``); a frozen region
   provider (SLIC superpixels by default, FastSAM when given) cuts it into ``K`` one-hot masks;
2. **semantic features**: a conv layer turns masks + per-region mean colour into semantic features, pooled to
   every scale of the U-Net;
3. **U-Net**: at every scale, *adaptive semantic-aware fusion* (ASF: cross-attention from image features to
   per-region semantic tokens, layer-normalised key/value projections, residual) and, below full resolution,
   *residual spatial Mamba blocks* (a four-direction 2-D selective scan, then a spatial-frequency feed-forward);
4. **output**: per-pixel curve strengths ``alpha`` (``iterations`` maps per channel, in [-1, 1]) at thumbnail
   size, bilinearly upsampled and applied at full resolution as ``x <- x + alpha x (1 - x)`` (a quadratic
   curve that brightens for alpha > 0, darkens for alpha < 0, and never leaves [0, 1]);
5. **rules on the trained result** (eval mode; shared with LoopExpose's CurveGrid, :mod:`loopexpose.exposure`):
   pixels bright in every channel are changed by one gain on R, G and B alike (no colour invented for clipped
   highlights), and a frame darker than mid-grey is lifted if its result falls short of its target level and
   blended with its plain exposure to that level.

Unlike the paper, the network predicts a correction at thumbnail size instead of the output pixels, so its cost
does not grow with the photo (3 MP on 2 CPU cores stays interactive); fine edges between differently corrected
regions may show slight halos because ``alpha`` is upsampled without a guide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from loopexpose.exposure import apply_exposure_rules, exposure_rules, neutral_highlights
from loopexpose.models.base import ExposureModel
from loopexpose.models.registry import register
from loopexpose.methods.semantic.regions import paint_regions, region_means, superpixel_regions
from loopexpose.methods.semantic.recogniser import ExposureRecogniser
from loopexpose.methods.semantic.scan import scan_orders, selective_scan


@dataclass
class SemanticConfig:
    """Architecture settings (stored in every checkpoint)."""

    work_side: int = 128  # long side of the thumbnail the network sees
    regions: int = 8  # K, number of region masks
    segmenter: str = "slic"  # built-in region provider: "slic" or "felzenszwalb"
    width: int = 16  # channels at full thumbnail resolution (x1.5, x2 at the lower scales)
    d_state: int = 4  # state size n of the selective scan
    iterations: int = 4  # curve iterations applied at full resolution


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SemanticFusion(nn.Module):
    """ASF: image features attend to ``K`` region tokens of the semantic features (cross-attention, residual).

    Region tokens (mask-pooled semantic features) instead of per-pixel semantic keys keep the cost at
    ``O(HW * K)``: the masks are piecewise constant, so per-pixel keys would repeat the same ``K`` vectors.
    """

    def __init__(self, channels: int, semantic_channels: int) -> None:
        super().__init__()
        self.query = nn.Sequential(ChannelNorm(channels), nn.Conv2d(channels, channels, 1))
        self.key = nn.Sequential(nn.LayerNorm(semantic_channels), nn.Linear(semantic_channels, channels))
        self.value = nn.Sequential(nn.LayerNorm(semantic_channels), nn.Linear(semantic_channels, channels))
        self.out = nn.Conv2d(2 * channels, channels, 1)
        self.scale = channels**-0.5

    def forward(self, x: torch.Tensor, semantic: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """``x (B, C, h, w)``, ``semantic (B, S, h, w)``, ``masks (B, K, h, w)`` -> ``(B, C, h, w)``."""
        tokens = region_means(semantic, masks)  # (B, K, S)
        present = masks.sum((-2, -1)) > 0  # (B, K)
        q = self.query(x)
        k, v = self.key(tokens), self.value(tokens)
        logits = torch.einsum("bchw,bkc->bkhw", q, k) * self.scale
        logits = logits.masked_fill(~present[:, :, None, None], float("-inf"))
        attended = torch.einsum("bkhw,bkc->bchw", logits.softmax(1), v)
        return x + self.out(torch.cat([x, attended], 1))


class SpatialScan2D(nn.Module):
    """2-D selective scan (VMamba's SS2D): scan the map along 4 directions with input-dependent S6, merge by sum."""

    def __init__(self, channels: int, d_state: int) -> None:
        super().__init__()
        d, self.d_state, self.rank = channels, d_state, max(1, math.ceil(channels / 16))
        self.in_proj = nn.Conv2d(channels, 2 * d, 1)
        self.depthwise = nn.Conv2d(d, d, 3, 1, 1, groups=d)
        self.x_proj = nn.Parameter(torch.randn(4, d, self.rank + 2 * d_state) * d**-0.5)
        self.dt_proj = nn.Parameter(torch.randn(4, self.rank, d) * self.rank**-0.5)
        # Step sizes start in [1e-3, 1e-1] as in Mamba: softplus(bias) = dt.
        dt = torch.exp(torch.rand(4, d) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1).float()).repeat(4, d, 1))
        self.D = nn.Parameter(torch.ones(4, d))
        self.norm = ChannelNorm(d)
        self.out_proj = nn.Conv2d(d, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        u, z = self.in_proj(x).chunk(2, 1)
        u = F.silu(self.depthwise(u))
        d = u.shape[1]
        orders = scan_orders(h, w, x.device)  # (4, L)
        seq = u.flatten(2)[:, :, orders].permute(0, 2, 3, 1)  # (B, 4, L, d)
        proj = torch.einsum("bkld,kde->bkle", seq, self.x_proj)
        dt, B, C = proj.split([self.rank, self.d_state, self.d_state], -1)
        delta = F.softplus(torch.einsum("bklr,krd->bkld", dt, self.dt_proj) + self.dt_bias[:, None])
        merged = u.new_zeros(b, d, h * w)
        for k in range(4):  # each direction has its own A, D, projections
            y = selective_scan(seq[:, k], delta[:, k], -torch.exp(self.A_log[k]), B[:, k], C[:, k], self.D[k])
            merged = merged.index_add(2, orders[k], y.transpose(1, 2))
        y = self.norm(merged.view(b, d, h, w)) * F.silu(z)
        return self.out_proj(y)


class SpatialFrequencyFFN(nn.Module):
    """Feed-forward with a spatial branch (1x1, depthwise 3x3, GELU) beside a frequency branch (1x1 on the FFT)."""

    def __init__(self, channels: int, expand: int = 2) -> None:
        super().__init__()
        hidden = channels * expand
        self.spatial = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden), nn.GELU(),
            nn.Conv2d(hidden, channels, 1),
        )  # fmt: skip
        self.frequency = nn.Sequential(nn.Conv2d(2 * channels, 2 * channels, 1), nn.GELU(), nn.Conv2d(2 * channels, 2 * channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfft2(x.float(), norm="ortho")
        mixed = self.frequency(torch.cat([spectrum.real, spectrum.imag], 1))
        real, imag = mixed.chunk(2, 1)
        back = torch.fft.irfft2(torch.complex(real, imag), s=x.shape[-2:], norm="ortho").to(x.dtype)
        return self.spatial(x) + back


class ResidualMambaBlock(nn.Module):
    """``x + SS2D(LN x)``, then ``x + SFFN(LN x)``."""

    def __init__(self, channels: int, d_state: int) -> None:
        super().__init__()
        self.norm1, self.scan = ChannelNorm(channels), SpatialScan2D(channels, d_state)
        self.norm2, self.ffn = ChannelNorm(channels), SpatialFrequencyFFN(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.scan(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def _conv_block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GELU())


def _pool_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return x if x.shape[-2:] == size else F.adaptive_avg_pool2d(x, size)


def _curves(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The network's result without the exposure rules: the curves of strengths ``alpha`` on ``x`` (any size, or rows
    of it), then neutral highlights."""
    return neutral_highlights(x, apply_quadratic_curves(x, alpha))


def _with_rules(x: torch.Tensor, alpha: torch.Tensor, rules: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """:func:`_curves`, then the exposure rules' numbers ``rules``."""
    return apply_exposure_rules(x, _curves(x, alpha), *rules)


def apply_quadratic_curves(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Iterated quadratic curves ``x <- x + a x (1 - x)`` (Zero-DCE's light-enhancement curve).

    Args:
        x: ``(B, 3, H, W)`` in [0, 1].
        alpha: ``(B, 3 * n, H, W)`` strengths in [-1, 1], ``n`` iterations (channel-major per iteration).
    Returns:
        ``(B, 3, H, W)`` in [0, 1].

    >>> x = torch.full((1, 3, 2, 2), 0.25)
    >>> apply_quadratic_curves(x, torch.ones(1, 3, 2, 2))[0, 0, 0, 0].item()
    0.4375
    """
    for a in alpha.split(3, dim=1):
        x = x + a * x * (1 - x)
    return x.clamp(0, 1)


@register("semantic", SemanticConfig)
class SemanticNet(ExposureModel):
    """Semantic-aware correction network. Input and output ``(B, 3, H, W)`` in [0, 1], any ``H, W``.

    ``forward`` returns ``{"output", "alpha" (B, 3n, h, w), "masks" (B, K, h, w), "thumb" (B, 3, h, w)}`` where
    ``h, w`` is the thumbnail size. It also carries :attr:`recogniser`, the exposure-situation classifier that
    made its training pseudo-labels (not used at inference), so a checkpoint is self-contained.
    """

    def __init__(self, config: SemanticConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or SemanticConfig()
        c1, c2, c3 = config.width, config.width * 3 // 2, config.width * 2
        k = config.regions
        self.semantic_in = nn.Sequential(nn.Conv2d(k + 3, c1, 3, 1, 1), nn.GELU())  # masks -> semantic features
        self.stem = _conv_block(3, c1)
        self.fuse1, self.fuse2, self.fuse3 = SemanticFusion(c1, c1), SemanticFusion(c2, c1), SemanticFusion(c3, c1)
        self.down1, self.down2 = _conv_block(c1, c2, 2), _conv_block(c2, c3, 2)
        self.enc2, self.mid = ResidualMambaBlock(c2, config.d_state), ResidualMambaBlock(c3, config.d_state)
        self.up2, self.up1 = nn.Conv2d(c3 + c2, c2, 1), nn.Conv2d(c2 + c1, c1, 1)
        # the scan's cost is O(hw * channels * d_state * log hw): it runs on the 1/2 and 1/4 scales of the encoder
        self.dec2, self.dec1 = _conv_block(c2, c2), _conv_block(c1, c1)
        self.head = nn.Conv2d(c1, 3 * config.iterations, 3, 1, 1)
        nn.init.zeros_(self.head.weight)  # start as the identity
        nn.init.zeros_(self.head.bias)
        self.recogniser = ExposureRecogniser()
        self.segmenter, self._regions_name = None, ""  # see use_segmenter(); not part of the checkpoint

    def thumbnail(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, 3, h, w)`` with long side ``min(work_side, max(H, W))`` (area filter)."""
        h, w = x.shape[-2:]
        scale = min(1.0, self.config.work_side / max(h, w))
        if scale == 1.0:
            return x
        return F.interpolate(x, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")

    def regions(self, thumb: torch.Tensor) -> torch.Tensor:
        """Region masks of a thumbnail: ``(B, 3, h, w)`` -> ``(B, K, h, w)`` one-hot, from the segmenter set with
        :meth:`use_segmenter` (e.g. FastSAM), else the built-in superpixels."""
        if self.segmenter is not None:
            return self.segmenter(thumb).to(thumb)
        return superpixel_regions(thumb, self.config.regions, self.config.segmenter)

    def use_segmenter(self, provider, name: str) -> None:
        """Take region masks from ``provider`` (``(B, 3, h, w)`` -> ``(B, K, h, w)``, K = ``config.regions``)
        instead of the built-in superpixels; ``name`` says what it is (:attr:`regions_name`)."""
        self.segmenter, self._regions_name = provider, name

    @property
    def regions_name(self) -> str:
        """What makes the region masks, in words (the CLI prints it)."""
        return self._regions_name or f"{self.config.segmenter} superpixels (scikit-image; offline stand-in for FastSAM)"

    def predict(self, thumb: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Curve strengths ``(B, 3n, h, w)`` in [-1, 1] from a thumbnail and its region masks."""
        h, w = thumb.shape[-2:]
        ph, pw = (-h) % 4, (-w) % 4  # two stride-2 levels: pad odd sizes, crop the result
        if ph or pw:
            mode = "reflect" if min(h, w) > max(ph, pw) else "replicate"
            thumb = F.pad(thumb, (0, pw, 0, ph), mode=mode)
            masks = F.pad(masks, (0, pw, 0, ph), mode="replicate")
        colours = paint_regions(region_means(thumb, masks), masks)
        semantic = self.semantic_in(torch.cat([masks, colours * 2 - 1], 1))
        s1 = thumb.shape[-2:]
        s2 = ((s1[0] + 1) // 2, (s1[1] + 1) // 2)
        s3 = ((s2[0] + 1) // 2, (s2[1] + 1) // 2)
        m2, m3 = _pool_to(masks, s2), _pool_to(masks, s3)
        e1 = self.fuse1(self.stem(thumb * 2 - 1), semantic, masks)
        e2 = self.enc2(self.fuse2(self.down1(e1), _pool_to(semantic, s2), m2))
        e3 = self.mid(self.fuse3(self.down2(e2), _pool_to(semantic, s3), m3))
        d2 = self.dec2(self.up2(torch.cat([F.interpolate(e3, size=s2, mode="bilinear", align_corners=False), e2], 1)))
        d1 = self.dec1(self.up1(torch.cat([F.interpolate(d2, size=s1, mode="bilinear", align_corners=False), e1], 1)))
        return torch.tanh(self.head(d1))[..., :h, :w]

    def forward(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``(B, 3, H, W)`` in [0, 1] (and optional thumbnail-sized masks) -> dict with ``"output"`` in [0, 1]."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) images, got {tuple(x.shape)}")
        thumb = self.thumbnail(x)
        if masks is None:
            masks = self.regions(thumb)
        elif masks.shape[-2:] != thumb.shape[-2:]:
            masks = F.interpolate(masks, size=thumb.shape[-2:], mode="nearest")
        alpha = self.predict(thumb, masks.to(thumb))
        full = alpha if alpha.shape[-2:] == x.shape[-2:] else F.interpolate(alpha, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if self.training:
            out = apply_quadratic_curves(x, full)
        else:  # the rules shared with CurveGrid: fixed, on the trained result, not learned
            with torch.no_grad():
                out = _with_rules(x, full, self._rules(thumb, alpha))
        return {"output": out, "alpha": alpha, "masks": masks, "thumb": thumb}

    def _rules(self, thumb: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The exposure rules' numbers (:func:`loopexpose.exposure.exposure_rules`) of thumbnails whose curve
        strengths are ``alpha``."""
        return exposure_rules(thumb, _curves(thumb, alpha), self._network)

    @torch.no_grad()
    def correct_array(self, pixels: np.ndarray, tile_rows: int = 128) -> np.ndarray:
        """Correct one ``(H, W, 3)`` RGB array (uint8, uint16 or float in [0, 1]); returns the same dtype.

        The CPU path for whole photos: the network and the rules' numbers come from the thumbnail; the curve
        strengths are upsampled along the columns once (``h x W``, small) and along the rows tile by tile, where
        the curves and the rules are applied. Memory: one float copy of the photo for the thumbnail (dropped before
        the tiles), then a few tiles above the input and output, whatever the size. The same result as
        :meth:`forward` up to rounding, with any ``tile_rows`` (128: at 12 MP a quarter faster than 256, measured
        with ``bench/correct.py --model semantic``; no faster below).
        """
        scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(pixels.dtype, 1.0)
        height, width = pixels.shape[:2]
        device = self.device
        # The thumbnail exactly as forward() makes it (the superpixels are sensitive to its rounding), from one
        # float copy of the photo, dropped before the tiles.
        thumb = self.thumbnail(torch.from_numpy(pixels).permute(2, 0, 1)[None].to(device, torch.float32) / scale)
        alpha = self.predict(thumb, self.regions(thumb).to(thumb))
        rules = self._rules(thumb, alpha)
        # Bilinear upsampling is separable: columns once here, rows per tile below (F.interpolate's weights).
        wide = F.interpolate(alpha, size=(alpha.shape[-2], width), mode="bilinear", align_corners=False)
        rows = ((torch.arange(height, dtype=torch.float64) + 0.5) * (alpha.shape[-2] / height) - 0.5).clamp(min=0)
        low = rows.floor().long().clamp(max=alpha.shape[-2] - 1)
        high = (low + 1).clamp(max=alpha.shape[-2] - 1)
        frac = (rows - low).to(wide).view(1, 1, -1, 1)
        out = np.empty_like(pixels)
        for top in range(0, height, tile_rows):
            part = slice(top, min(height, top + tile_rows))
            x = torch.from_numpy(pixels[part].astype(np.float32) / np.float32(scale)).permute(2, 0, 1)[None].to(device)
            strengths = torch.lerp(wide[:, :, low[part]], wide[:, :, high[part]], frac[:, :, part])
            y = _with_rules(x, strengths, rules)[0].permute(1, 2, 0).cpu().numpy()
            out[part] = (y * scale + 0.5).astype(pixels.dtype) if scale != 1.0 else y
        return out

    def _network(self, thumb: torch.Tensor) -> torch.Tensor:
        """The network and its neutral highlights, no exposure rules, on ``(B, 3, h, w)`` thumbnails of at most the
        working size."""
        return _curves(thumb, self.predict(thumb, self.regions(thumb)))
