"""CurveGrid: the LoopExpose single-exposure-correction network, built to run at full resolution on a CPU.

Everything is predicted from a fixed-size thumbnail (``thumb x thumb``, area-downsampled), so the network's cost
does not grow with the photo. Full-resolution work is a handful of operations per pixel:

1. **global tone and colour**: one monotone piecewise-linear curve per channel (``knots`` knots, from 0 to 1),
   ``y0 = curve_c(x_c)``;
2. **local correction**: a bilateral grid of per-channel offsets, ``grid x grid`` cells by ``bins`` luminance
   bins, sliced at each pixel by its position and the luma of ``y0`` (edge-aware, as in HDRNet's guided
   upsampling), ``out = clamp(y0 + slice(grid, luma(y0)), 0, 1)``;
3. **luminance feature**: one scalar per image from the global features, which the Luminance Ranking Loss
   orders by exposure.

Every frame's result depends on that frame alone (no batch statistics), and :meth:`CurveGrid.apply` is
exact on any tile of the image, which is how :meth:`correct` bounds memory on very large photos.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import cv2
import numpy as np

from loopexpose.io import LUMA_WEIGHTS
from loopexpose.models.base import ExposureModel
from loopexpose.models.registry import register


@dataclass
class CurveGridConfig:
    """Architecture settings (stored in every checkpoint)."""

    thumb: int = 128  # side of the square thumbnail the network sees
    width: int = 16  # channels after the first layer (doubled per stride-2 layer, capped at 4x)
    grid: int = 16  # spatial cells of the bilateral grid per side
    bins: int = 8  # luminance bins of the bilateral grid
    knots: int = 16  # knots of each global tone curve


@dataclass
class CurveGridParams:
    """What the network predicts for a batch of images (all small, independent of resolution).

    Attributes:
        curves: ``(B, 3, knots)`` values of the per-channel tone curves at ``linspace(0, 1, knots)``.
        grid: ``(B, 3, bins, grid, grid)`` bilateral grid of per-channel offsets.
        luminance: ``(B,)`` scalar luminance feature of each input.
    """

    curves: torch.Tensor
    grid: torch.Tensor
    luminance: torch.Tensor


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2, inplace=True))


@register("curvegrid", CurveGridConfig)
class CurveGrid(ExposureModel):
    """Global curves + bilateral grid of local offsets, predicted from a thumbnail.

    Input and output: ``(B, 3, H, W)`` RGB in ``[0, 1]``, any ``H, W``.
    """

    def __init__(self, config: CurveGridConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or CurveGridConfig()
        w = config.width
        # thumb -> thumb/16 = grid cells (4 stride-2 layers for the default 256 -> 16)
        steps = max(1, round(torch.log2(torch.tensor(config.thumb / config.grid)).item()))
        chans = [3] + [min(w * 2**i, 4 * w) for i in range(steps)]
        self.encoder = nn.Sequential(*[_conv(chans[i], chans[i + 1], 2) for i in range(steps)])
        c = chans[-1]
        self.local = nn.Sequential(_conv(c, c), nn.Conv2d(c, c, 3, 1, 1))
        self.global_features = nn.Sequential(_conv(c, c, 2), _conv(c, c, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.global_mlp = nn.Sequential(nn.Linear(c, c), nn.LeakyReLU(0.2, inplace=True))
        self.global_to_local = nn.Linear(c, c)
        self.curve_head = nn.Linear(c, 3 * (config.knots - 1))
        self.luminance_head = nn.Linear(c, 1)
        self.grid_head = nn.Conv2d(c, 3 * config.bins, 1)
        # Start as the identity: flat softmax increments give a diagonal curve, zero offsets leave it alone.
        for head in (self.curve_head, self.grid_head):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    # ------------------------------------------------------------------ prediction from the thumbnail
    def thumbnail(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, 3, thumb, thumb)`` by area averaging (bilinear when upsampling)."""
        size = (self.config.thumb, self.config.thumb)
        if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
            return F.adaptive_avg_pool2d(x, size)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def predict(self, x: torch.Tensor) -> CurveGridParams:
        """Predict curves, grid and luminance feature from ``(B, 3, H, W)`` images in [0, 1]."""
        features = self.encoder(self.thumbnail(x) * 2 - 1)
        g = self.global_mlp(self.global_features(features))
        local = self.local(features) + self.global_to_local(g)[:, :, None, None]
        b = x.shape[0]
        increments = torch.softmax(self.curve_head(g).view(b, 3, -1), dim=-1)
        curves = torch.cat([increments.new_zeros(b, 3, 1), increments.cumsum(-1)], dim=-1)
        cells = self.config.grid
        grid = self.grid_head(F.leaky_relu(local, 0.2))
        if grid.shape[-1] != cells or grid.shape[-2] != cells:
            grid = F.adaptive_avg_pool2d(grid, (cells, cells))
        grid = grid.view(b, 3, self.config.bins, cells, cells)
        return CurveGridParams(curves=curves, grid=grid, luminance=self.luminance_head(g).squeeze(-1))

    # ------------------------------------------------------------------ full-resolution application
    def apply(
        self, x: torch.Tensor, params: CurveGridParams, rows: tuple[int, int] | None = None, height: int | None = None
    ) -> torch.Tensor:
        """Apply predicted parameters to full-resolution pixels.

        Args:
            x: ``(B, 3, h, W)`` pixels in [0, 1]: the whole image, or rows ``rows[0]:rows[1]`` of an image of
                ``height`` rows (the result is then exactly that tile of the whole-image result).
            params: from :meth:`predict` on the whole image.
        Returns:
            ``(B, 3, h, W)`` corrected pixels in [0, 1].
        """
        b, _, h, w = x.shape
        top, full_h = (rows[0], height) if rows is not None else (0, h)
        y0 = apply_curves(x, params.curves)
        guide = (y0 * y0.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)).sum(1)
        offsets = bilateral_slice(params.grid, guide, top, full_h)
        return (y0 + offsets).clamp_(0, 1) if not torch.is_grad_enabled() else (y0 + offsets).clamp(0, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, 3, H, W)`` in [0, 1] -> ``{"output": (B, 3, H, W) in [0, 1], "luminance": (B,)}``."""
        params = self.predict(x)
        return {"output": self.apply(x, params), "luminance": params.luminance}

    @torch.no_grad()
    def forward_tiled(self, x: torch.Tensor, tile_rows: int = 256) -> torch.Tensor:
        """:meth:`forward`'s output for ``(B, 3, H, W)`` images, applied in row tiles so the per-pixel work never
        holds more than ``tile_rows`` rows at once (used for whole photos on CUDA); identical to ``forward``."""
        params = self.predict(x)
        height = x.shape[-2]
        tiles = [
            self.apply(x[..., top : top + tile_rows, :], params, rows=(top, min(height, top + tile_rows)), height=height)
            for top in range(0, height, tile_rows)
        ]
        return torch.cat(tiles, dim=-2)

    def _correct_frame(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            return super()._correct_frame(x)  # the OpenCV fast path
        return self.forward_tiled(x)[0]

    # ------------------------------------------------------------------ fast CPU path for whole photos
    @torch.no_grad()
    def correct_array(self, pixels: np.ndarray, tile_rows: int = 256) -> np.ndarray:
        """Correct one ``(H, W, 3)`` RGB array (uint8, uint16 or float in [0, 1]); returns the same dtype.

        The CPU inference path: the network sees an OpenCV area-downscaled thumbnail, then the curves are
        applied as exact look-up tables (uint8: 256 entries, uint16: 65536; float input is rounded to 16 bits)
        and the grid is sliced with ``cv2.remap`` over row tiles, so memory stays a few tiles above the
        input and output whatever the size. Agrees with :meth:`forward` up to rounding (OpenCV's bilinear
        weights are fixed-point, 1/32 pixel).
        """
        if pixels.dtype == np.uint8:
            top, levels = 255, 256
        elif pixels.dtype == np.uint16:
            top, levels = 65535, 65536
        else:
            pixels = (np.clip(pixels, 0, 1) * 65535 + 0.5).astype(np.uint16)
            return self.correct_array(pixels, tile_rows).astype(np.float32) / np.float32(65535)
        height, width = pixels.shape[:2]
        size = (self.config.thumb, self.config.thumb)
        inter = cv2.INTER_AREA if height >= size[0] and width >= size[1] else cv2.INTER_LINEAR
        thumb = cv2.resize(pixels, size, interpolation=inter).astype(np.float32) / np.float32(top)
        device = next(self.parameters()).device
        params = self.predict(torch.from_numpy(thumb).permute(2, 0, 1)[None].to(device))
        ramp = torch.linspace(0, 1, levels, device=device).view(1, 1, 1, levels).expand(1, 3, 1, levels)
        luts = apply_curves(ramp.contiguous(), params.curves)[0, :, 0].cpu().numpy()  # (3, levels)
        texture = _grid_texture(params.grid[0].float().cpu().numpy())
        bins, cells_y, cells_x = params.grid.shape[2:]
        step = np.float32(cells_x + 1)
        col = ((np.arange(width) + 0.5) * (cells_x / width) - 0.5).clip(0, cells_x - 1).astype(np.float32)
        luma_weights = np.asarray([LUMA_WEIGHTS], np.float32)
        out = np.empty_like(pixels)

        def run(start: int) -> None:
            tile = pixels[start : start + tile_rows]
            rows = tile.shape[0]
            if levels == 256:
                y0 = cv2.LUT(tile, np.ascontiguousarray(luts.T[None]))
            else:
                y0 = np.stack([luts[c][tile[..., c]] for c in range(3)], axis=-1)
            guide = cv2.transform(y0, luma_weights)
            pos = guide * np.float32(bins - 1)
            low_bin = np.minimum(np.floor(pos), np.float32(bins - 2))
            frac = pos - low_bin
            row = ((np.arange(start, start + rows) + 0.5) * (cells_y / height) - 0.5).clip(0, cells_y - 1)
            map_y = np.ascontiguousarray(np.broadcast_to(row.astype(np.float32)[:, None], (rows, width)))
            map_x = low_bin * step + col
            low = cv2.remap(texture, map_x, map_y, cv2.INTER_LINEAR)
            high = cv2.remap(texture, map_x + step, map_y, cv2.INTER_LINEAR)
            result = y0 + low + frac[..., None] * (high - low)
            out[start : start + rows] = (np.clip(result, 0, 1) * np.float32(top) + np.float32(0.5)).astype(out.dtype)

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, min(2, torch.get_num_threads()))) as pool:
            list(pool.map(run, range(0, height, tile_rows)))
        return out


def _grid_texture(grid: np.ndarray) -> np.ndarray:
    """``(3, D, Gh, Gw)`` grid -> ``(Gh, D * (Gw + 1), 3)`` float32 image: bins side by side, each followed by a
    copy of its last column so bilinear lookups at the right edge never reach the next bin."""
    padded = np.concatenate([grid, grid[..., -1:]], axis=-1)  # (3, D, Gh, Gw + 1)
    return np.ascontiguousarray(padded.transpose(2, 1, 3, 0).reshape(grid.shape[2], -1, 3)).astype(np.float32)


def apply_curves(x: torch.Tensor, curves: torch.Tensor) -> torch.Tensor:
    """Per-channel piecewise-linear curves.

    Args:
        x: ``(B, 3, H, W)`` in [0, 1].
        curves: ``(B, 3, K)`` curve values at ``linspace(0, 1, K)``.
    Returns:
        ``(B, 3, H, W)``.
    """
    b, c, h, w = x.shape
    k = curves.shape[-1]
    pos = x.reshape(b, c, -1).clamp(0, 1) * (k - 1)
    index = pos.detach().floor().clamp_(max=k - 2).long()
    frac = pos - index
    low = torch.gather(curves, 2, index)
    high = torch.gather(curves, 2, index + 1)
    return (low + frac * (high - low)).view(b, c, h, w)


def _interpolation_matrix(n: int, cells: int, start: int, full: int, device, dtype) -> torch.Tensor:
    """``(n, cells)`` linear-interpolation weights of pixels ``start .. start + n`` of an axis ``full`` long
    from ``cells`` cell centres (pixel-centre aligned, clamped at the borders: two non-zeros per row)."""
    centres = (torch.arange(start, start + n, device=device, dtype=torch.float64) + 0.5) * (cells / full) - 0.5
    centres = centres.clamp_(0, cells - 1)
    index = centres.floor().clamp_(max=max(cells - 2, 0)).long()
    frac = (centres - index).to(dtype)
    matrix = torch.zeros(n, cells, device=device, dtype=dtype)
    rows = torch.arange(n, device=device)
    matrix[rows, index] = 1 - frac
    if cells > 1:
        matrix[rows, index + 1] += frac
    else:
        matrix[rows, index] = 1
    return matrix


def bilateral_slice(grid: torch.Tensor, guide: torch.Tensor, top: int = 0, full_height: int | None = None) -> torch.Tensor:
    """Trilinear lookup of a bilateral grid at every pixel (HDRNet's slicing), differentiable in ``grid``.

    Args:
        grid: ``(B, C, D, Gh, Gw)`` values over (luminance bin, row cell, column cell).
        guide: ``(B, h, W)`` per-pixel guide in [0, 1] choosing the bin.
        top, full_height: the guide covers rows ``top .. top + h`` of an image ``full_height`` rows tall.
    Returns:
        ``(B, C, h, W)``.

    Written by hand rather than with ``F.grid_sample`` on a 5-D grid, whose CPU kernel is several times slower
    here: spatial weights are separable, so the grid is interpolated to the image's rows and columns at every
    bin with two small matrix products (fast forward and backward), and only the bin interpolation is per pixel.
    """
    b, c, d, gh, gw = grid.shape
    _, h, w = guide.shape
    full_height = full_height or h
    rows = _interpolation_matrix(h, gh, top, full_height, grid.device, grid.dtype)
    cols = _interpolation_matrix(w, gw, 0, w, grid.device, grid.dtype)
    plane = rows @ grid @ cols.T  # (B, C, D, h, W)
    pos = guide.clamp(0, 1) * (d - 1)
    index = pos.detach().floor().clamp_(max=d - 2).long()
    frac = (pos - index).unsqueeze(1)
    index = index.unsqueeze(1).unsqueeze(2).expand(b, c, 1, h, w)
    low = torch.gather(plane, 2, index).squeeze(2)
    high = torch.gather(plane, 2, index + 1).squeeze(2)
    return low + frac * (high - low)
