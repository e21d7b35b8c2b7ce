"""CurveGrid: the LoopExpose single-exposure-correction network, built to run at full resolution on a CPU.

Everything is predicted from a fixed-size thumbnail (``thumb x thumb``, area-downsampled) and the thumbnail's
luma histogram, so the network's cost does not grow with the photo. Full-resolution work is a handful of
operations per pixel:

1. **global tone and colour**: one monotone piecewise-linear curve per channel (``knots`` knots, from 0 to 1),
   ``y0 = curve_c(x_c)``;
2. **neutral highlights**: where the input is bright in every channel (clipped or nearly: no reliable hue),
   the three curves give way to one gain on R, G and B alike (what the curves' mean does to the brightest
   channel), so a white sky stays white or grey instead of taking a colour (:func:`highlight_weight`);
3. **local tone**: a bilateral grid of luma offsets, ``grid x grid`` cells by ``bins`` luminance bins, sliced
   at each pixel by its position and the luma of ``y0`` (edge-aware, as in HDRNet's guided upsampling) and
   added to all three channels, ``out = clamp(y0 + slice(grid, luma(y0)), 0, 1)``;
4. **exposure rules** (in eval mode, on the trained network's result; :mod:`loopexpose.exposure`): a frame
   darker than mid-grey is brought up, if it falls short of it, to the geometric mean of mid-grey and the level
   the network gives the same scene exposed to mid-grey (one gain in linear light with Reinhard's roll-off),
   then averaged with the input exposed to that level by one gain: the camera's own tone beside the
   fusion-trained curves;
5. **luminance feature**: one scalar per image from the global features, which the Luminance Ranking Loss
   orders by exposure.

Colour is global (the curves) and local work is tone only: local per-channel offsets fitted the pseudo-labels'
colours of clipped regions (a purple or yellow cast on white skies and walls) and did not generalise.

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

from loopexpose.exposure import (
    MID_GREY_LINEAR, apply_exposure_rules, exposure_key, exposure_rules, finish, highlight_weight, roll_off,
    srgb_to_linear,
)  # fmt: skip
from loopexpose.io import LUMA_WEIGHTS, brightest_channel, darkest_channel
from loopexpose.models.base import ExposureModel
from loopexpose.models.registry import register


@dataclass
class CurveGridConfig:
    """Architecture settings (stored in every checkpoint)."""

    thumb: int = 128  # side of the square thumbnail the network sees
    width: int = 16  # channels after the first layer (doubled per stride-2 layer, capped at 4x)
    grid: int = 16  # spatial cells of the bilateral grid per side
    bins: int = 8  # luminance bins of the bilateral grid
    knots: int = 32  # knots of each global tone curve
    histogram: int = 32  # bins of the thumbnail's luma histogram fed to the global head


@dataclass
class CurveGridParams:
    """What the network predicts for a batch of images (all small, independent of resolution).

    Attributes:
        curves: ``(B, 3, knots)`` values of the per-channel tone curves at ``linspace(0, 1, knots)``.
        grid: ``(B, 1, bins, grid, grid)`` bilateral grid of luma offsets.
        luminance: ``(B,)`` scalar luminance feature of each input.
        gain, exposure, blend: ``(B,)`` the exposure rules' numbers (:func:`loopexpose.exposure.exposure_rules`;
            in train mode 1, 1 and 0: no rules).
    """

    curves: torch.Tensor
    grid: torch.Tensor
    luminance: torch.Tensor
    gain: torch.Tensor
    exposure: torch.Tensor
    blend: torch.Tensor


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
        self.global_mlp = nn.Sequential(nn.Linear(c + config.histogram, c), nn.LeakyReLU(0.2, inplace=True))
        self.global_to_local = nn.Linear(c, c)
        self.curve_head = nn.Linear(c, 3 * (config.knots - 1) + 1)  # increments per channel + one white level
        self.luminance_head = nn.Linear(c, 1)
        self.grid_head = nn.Conv2d(c, config.bins, 1)
        # Start as the exposure prior: zero heads give the prior curve of each image and no offsets.
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
        thumb = self.thumbnail(x)
        params = self._predict_thumbnail(thumb)
        if not self.training:  # the exposure rules: fixed, on the trained network's result, not learned
            with torch.no_grad():
                rules = exposure_rules(thumb, self.apply(thumb, params), self._network)
                params.gain, params.exposure, params.blend = rules
        return params

    def _network(self, thumb: torch.Tensor) -> torch.Tensor:
        """The network alone (no exposure rules) on ``(B, 3, thumb, thumb)`` thumbnails -> their results."""
        return self.apply(thumb, self._predict_thumbnail(thumb))

    def _predict_thumbnail(self, thumb: torch.Tensor) -> CurveGridParams:
        """The network proper: ``(B, 3, thumb, thumb)`` thumbnails -> parameters (no exposure rules)."""
        features = self.encoder(thumb * 2 - 1)
        # The luma histogram states the exposure directly; the convolutions add what it cannot (content).
        luma = (thumb * thumb.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)).sum(1)
        hist = soft_histogram(luma, self.config.histogram) * self.config.histogram
        g = self.global_mlp(torch.cat([self.global_features(features), hist], dim=1))
        local = self.local(features) + self.global_to_local(g)[:, :, None, None]
        b = thumb.shape[0]
        prior_increments, prior_white = prior_curve_logits(exposure_key(luma), self.config.knots)
        head = self.curve_head(g)
        increments = torch.softmax(head[:, :-1].view(b, 3, -1) + prior_increments[:, None], dim=-1)
        # One white level for the three curves, so clipped white comes out neutral (grey when darkened).
        white = torch.sigmoid(head[:, -1] + prior_white).view(b, 1, 1)
        curves = torch.cat([increments.new_zeros(b, 3, 1), increments.cumsum(-1) * white], dim=-1)
        cells = self.config.grid
        grid = self.grid_head(F.leaky_relu(local, 0.2))
        if grid.shape[-1] != cells or grid.shape[-2] != cells:
            grid = F.adaptive_avg_pool2d(grid, (cells, cells))
        grid = grid.view(b, 1, self.config.bins, cells, cells)
        ones = torch.ones_like(white[:, 0, 0])
        return CurveGridParams(curves, grid, self.luminance_head(g).squeeze(-1), ones, ones, torch.zeros_like(ones))

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
        # Highlights: R, G and B scaled alike, by what the curves' mean does to the brightest channel.
        brightest = x.amax(dim=1, keepdim=True).clamp_min(1e-3)
        neutral = x * apply_curves(brightest, params.curves.mean(1, keepdim=True)) / brightest
        weight = highlight_weight(x)
        y0 = torch.lerp(y0, neutral, weight)
        guide = (y0 * y0.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)).sum(1, keepdim=True)
        offsets = bilateral_slice(params.grid, guide[:, 0], top, full_h)
        # Highlights take the luma offset as a gain (R, G, B scaled alike): an offset added to a bright, slightly
        # coloured pixel that is being darkened would raise its saturation.
        out = y0 + offsets * torch.lerp(torch.ones_like(y0), y0 / guide.clamp_min(1e-3), weight)
        out = out.clamp_(0, 1) if not torch.is_grad_enabled() else out.clamp(0, 1)
        return apply_exposure_rules(x, out, params.gain, params.exposure, params.blend)

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
    def correct_array(self, pixels: np.ndarray, tile_rows: int | None = None) -> np.ndarray:
        """Correct one ``(H, W, 3)`` RGB array (uint8, uint16 or float in [0, 1]); returns the same dtype.

        The CPU inference path: the network sees an OpenCV area-downscaled thumbnail, then the curves are
        applied as exact look-up tables (uint8: 256 entries, uint16: 65536; float input is rounded to 16 bits)
        and the grid is sliced with ``cv2.remap`` over row tiles, so memory stays a few tiles above the
        input and output whatever the size. Agrees with :meth:`forward` up to rounding (OpenCV's bilinear
        weights are fixed-point, 1/32 pixel). Any ``tile_rows`` gives the same result; the default,
        :data:`TILE_PIXELS` per tile, keeps a tile's float arrays in the CPU's cache.
        """
        if pixels.dtype == np.uint8:
            top, levels = 255, 256
        elif pixels.dtype == np.uint16:
            top, levels = 65535, 65536
        else:
            pixels = (np.clip(pixels, 0, 1) * 65535 + 0.5).astype(np.uint16)
            return self.correct_array(pixels, tile_rows).astype(np.float32) / np.float32(65535)
        height, width = pixels.shape[:2]
        tile_rows = tile_rows or max(8, TILE_PIXELS // width)
        size = (self.config.thumb, self.config.thumb)
        inter = cv2.INTER_AREA if height >= size[0] and width >= size[1] else cv2.INTER_LINEAR
        thumb = cv2.resize(pixels, size, interpolation=inter).astype(np.float32) / np.float32(top)
        device = next(self.parameters()).device
        params = self.predict(torch.from_numpy(thumb).permute(2, 0, 1)[None].to(device))
        ramp = torch.linspace(0, 1, levels).view(1, 1, 1, levels).expand(1, 3, 1, levels)
        luts = apply_curves(ramp.contiguous(), params.curves.cpu())[0, :, 0].numpy()  # (3, levels)
        neutral_lut = np.ascontiguousarray(luts.mean(0))  # the curves' mean, for highlights
        weight_lut = highlight_weight(ramp)[0, 0, 0].numpy()  # (levels,) by the smallest channel
        first_bright = int(np.argmax(weight_lut > 0))
        floor, blend = float(params.gain[0]), float(params.blend[0])
        # With a blend, the result's share (1 - blend) and the plain exposure's share (blend) are each scaled into
        # the tables, so blending is one addition per sample.
        result_scale = np.float32((1 - blend) * top)
        if floor != 1:  # the floor as a table from the result, quantised finely (to output samples when nothing
            steps = 4096 if levels == 256 else 65536  # follows it)
            ramp_in = torch.linspace(0, 1, steps).view(1, 1, 1, steps).expand(1, 3, 1, steps)
            finish_lut = finish(ramp_in, params.gain[:1].cpu())[0, 0, 0].numpy()
            if blend:
                finish_lut = (finish_lut * result_scale).astype(np.float32)
            else:
                finish_lut = (finish_lut * top + 0.5).astype(pixels.dtype)
        if blend:  # the input exposed to the result's level, as a table from the input samples
            exposed = finish(ramp, params.exposure[:1].cpu())[0, 0, 0].numpy()
            exposed_lut = np.ascontiguousarray(exposed * np.float32(blend * top), dtype=np.float32)
            out_depth = cv2.CV_8U if levels == 256 else cv2.CV_16U
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
            darkest = darkest_channel(tile)  # not tile.min(axis=2): 65 against 3 ms of CPU per 3 MP
            # The highlight rules run on the pixels bright in every channel alone, found once as flat indices
            # (gathering by integer indices with np.take is 3 to 10x faster than by a boolean mask).
            bright = np.flatnonzero(darkest >= first_bright)
            if bright.size:
                flat_y0 = y0.reshape(-1, 3)
                picked, source = np.take(flat_y0, bright, axis=0), np.take(tile.reshape(-1, 3), bright, axis=0)
                weight = weight_lut[np.take(darkest, bright)][:, None]
                brightest = brightest_channel(source)
                scale = neutral_lut[brightest] / np.maximum(brightest.astype(np.float32), np.float32(1e-3) * top)
                picked += weight * (source * scale[:, None] - picked)
                flat_y0[bright] = picked
            guide = cv2.transform(y0, luma_weights)
            pos = guide * np.float32(bins - 1)
            low_bin = np.minimum(np.floor(pos), np.float32(bins - 2))
            frac = pos - low_bin
            row = ((np.arange(start, start + rows) + 0.5) * (cells_y / height) - 0.5).clip(0, cells_y - 1)
            map_y = np.ascontiguousarray(np.broadcast_to(row.astype(np.float32)[:, None], (rows, width)))
            map_x = low_bin * step + col
            low = cv2.remap(texture, map_x, map_y, cv2.INTER_LINEAR)
            high = cv2.remap(texture, map_x + step, map_y, cv2.INTER_LINEAR)
            offsets = low + frac * (high - low)
            result = y0 + offsets[..., None]
            if bright.size:  # highlights take the offset as a gain, as in apply()
                gain = picked / np.maximum(np.take(guide, bright), np.float32(1e-3))[:, None] - 1
                result.reshape(-1, 3)[bright] += np.take(offsets, bright)[:, None] * weight * gain
            np.clip(result, 0, 1, out=result)
            if floor != 1:  # 12 bits in (16 for 16-bit images) are exact enough
                index = (result * np.float32(len(finish_lut) - 1) + np.float32(0.5)).astype(np.uint16)
                result = np.take(finish_lut, index)  # twice as fast as finish_lut[index], the same values
                if not blend:  # the table gave output samples
                    out[start : start + rows] = result
                    return
            elif blend:
                result *= result_scale
            if blend:  # the sum, rounded and saturated into the output in one pass
                exposed = cv2.LUT(tile, exposed_lut) if levels == 256 else exposed_lut[tile]
                cv2.add(result, exposed, dst=out[start : start + rows], dtype=out_depth)
            else:
                out[start : start + rows] = (result * np.float32(top) + np.float32(0.5)).astype(out.dtype)

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, min(2, torch.get_num_threads()))) as pool:
            list(pool.map(run, range(0, height, tile_rows)))
        return out


#: Pixels per tile of :meth:`CurveGrid.correct_array`: 1.5 MB per float32 RGB array, which stays in cache. Tiles
#: of 256 rows were a third slower at 3 and 12 MP on the 2-core development CPU (``bench/correct.py``).
TILE_PIXELS = 1 << 17


def _grid_texture(grid: np.ndarray) -> np.ndarray:
    """``(1, D, Gh, Gw)`` grid -> ``(Gh, D * (Gw + 1))`` float32 image: bins side by side, each followed by a
    copy of its last column so bilinear lookups at the right edge never reach the next bin."""
    padded = np.concatenate([grid[0], grid[0, ..., -1:]], axis=-1)  # (D, Gh, Gw + 1)
    return np.ascontiguousarray(padded.transpose(1, 0, 2).reshape(grid.shape[2], -1)).astype(np.float32)


# ------------------------------------------------------------------------------------- the exposure prior
def prior_curve_logits(key: torch.Tensor, knots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The curve a fresh network applies to each image, as the logits the curve head's output is added to.

    Linear light scaled so the image's key lands on linear mid-grey, encoded as sRGB: the "gain to mid-grey" in
    linear light. A brightening gain rolls the highlights off (Reinhard's curve, white to white); a darkening
    one maps white to grey (every clipped pixel stays neutral). The curve head learns corrections to it, so a dark frame starts
    brightened as far as its key says instead of having to learn every stop.

    Args:
        key: ``(B,)`` exposure keys (:func:`exposure_key`).
        knots: knots of the curve.
    Returns:
        ``(B, knots - 1)`` log increments (their softmax is the curve's shape from 0 to its white level) and
        ``(B,)`` the logit of the white level (the curve's value at 1).

    >>> increments, white = prior_curve_logits(torch.tensor([0.18, 0.72]), 5)  # mid-grey; 2 stops over
    >>> torch.allclose(increments[0].softmax(-1), torch.full((4,), 0.25), atol=0.02), round(white[0].sigmoid().item(), 2)
    (True, 1.0)
    >>> round(white[1].sigmoid().item(), 2)  # white darkened by 2 stops: sRGB of linear 0.25
    0.54
    """
    import kornia

    level = torch.linspace(0, 1, knots, device=key.device)
    gain = MID_GREY_LINEAR / key.detach().float()
    scaled = srgb_to_linear(level[None]) * gain[:, None]
    # Reinhard's roll-off with the white point at the scaled white: a brightening gain compresses the highlights
    # (which hold a dark frame's detail) instead of clipping them; a darkening gain (white <= 1) stays linear.
    white = gain.clamp_min(1)[:, None]
    linear = torch.where(white > 1, roll_off(scaled, white), scaled)
    curve = kornia.color.linear_rgb_to_rgb(linear.clamp(0, 1)[:, None, None].expand(-1, 3, 1, -1))[:, 0, 0]
    white_level = curve[:, -1].clamp(0.02, 0.999)
    increments = curve.diff(dim=-1).clamp_min(1e-4 * white_level[:, None])  # every increment stays reachable by the head
    return torch.log(increments / increments.sum(-1, keepdim=True)), torch.logit(white_level)


def soft_histogram(values: torch.Tensor, bins: int) -> torch.Tensor:
    """Soft (linearly interpolated) histogram: ``(B, *)`` values in [0, 1] -> ``(B, bins)`` summing to 1 per
    row, bin centres at ``linspace(0, 1, bins)``.

    >>> soft_histogram(torch.full((1, 2, 2), 0.5), 3).tolist()
    [[0.0, 1.0, 0.0]]
    """
    flat = values.flatten(1).clamp(0, 1)
    centres = torch.linspace(0, 1, bins, device=values.device, dtype=values.dtype).view(1, bins, 1)
    return (1 - (flat[:, None] - centres).abs() * (bins - 1)).clamp_min(0).mean(-1)


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
