"""Image-quality metrics for exposure correction (SEC) and exposure fusion (MEF), as pure functions.

Every function takes tensors shaped ``(*, 3, H, W)`` with RGB in ``[0, 1]`` (a stack of frames is
``(N, 3, H, W)``), returns one value per image (shape ``*``), and works on any device.

* :func:`psnr` - peak signal-to-noise ratio in dB (peak 1), capped at :data:`PSNR_CAP_DB` for identical images.
* :func:`ssim` - mean SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03), kornia's,
  over RGB channels and the valid region.
* :func:`ciede2000` - mean CIEDE2000 colour difference, scikit-image's (sRGB D65 -> CIELAB).
* :func:`mef_ssim` - MEF-SSIM of Ma, Zeng and Wang (TIP 2015), multi-scale, vectorised; needs no ground truth.
* :func:`consistency` - cross-exposure consistency: mean pairwise PSNR between the frames of one bracket.
* :func:`highlight_chroma_added` - CIELAB chroma a correction adds to pixels that are bright in its input (a
  colour cast on clipped highlights); needs no ground truth.
* :func:`stlpips` - shift-tolerant LPIPS (:mod:`loopexpose.perceptual`), when the ``stlpips-pytorch`` wheel's
  weights are installed (``pip install 'loopexpose[perceptual]'``).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from loopexpose.io import LUMA_WEIGHTS

__all__ = [
    "PSNR_CAP_DB",
    "MEF_SSIM_SCALE_WEIGHTS",
    "psnr",
    "ssim",
    "ciede2000",
    "consistency",
    "highlight_chroma_added",
    "BRIGHT_LEVEL",
    "mef_ssim",
    "mef_ssim_single_scale",
    "stlpips",
]

#: PSNR of identical images would be infinite; it is reported as this (a mean of PSNRs stays finite).
PSNR_CAP_DB = 100.0
#: The first three MS-SSIM exponents (Wang, Simoncelli, Bovik 2003), normalised to sum to 1, as in Ma et al.
MEF_SSIM_SCALE_WEIGHTS = tuple(w / (0.0448 + 0.2856 + 0.3001) for w in (0.0448, 0.2856, 0.3001))


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    for name, x in (("image", a), ("reference", b)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() < 3 or x.shape[-3] != 3:
            raise ValueError(f"{name} must be shaped (*, 3, H, W), got {tuple(x.shape)}")
    if a.shape != b.shape:
        raise ValueError(f"image and reference must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def psnr(image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio ``10 log10(1 / MSE)`` in dB, per image.

    Args:
        image: ``(*, 3, H, W)`` in ``[0, 1]``.
        reference: same shape, in ``[0, 1]``.

    Returns:
        ``(*)`` float32, at most :data:`PSNR_CAP_DB` (identical images).

    Example:
        >>> round(psnr(torch.zeros(3, 4, 4), torch.full((3, 4, 4), 0.1)).item(), 2)
        20.0
    """
    _check_pair(image, reference)
    mse = (image.double() - reference.double()).pow(2).mean(dim=(-3, -2, -1))
    return (10 * torch.log10(1.0 / mse.clamp_min(10 ** (-PSNR_CAP_DB / 10)))).float()


def ssim(image: torch.Tensor, reference: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """Mean structural similarity (Wang et al. 2004) per image: Gaussian window (sigma 1.5), RGB averaged.

    Uses ``kornia.metrics.ssim`` over the valid region (no padding), the usual convention of published tables.

    Args:
        image: ``(*, 3, H, W)`` in ``[0, 1]``; H and W at least ``window_size``.
        reference: same shape, in ``[0, 1]``.
        window_size: side of the Gaussian window.

    Returns:
        ``(*)`` float32 in ``[-1, 1]``; 1 for identical images.

    Example:
        >>> x = torch.rand(2, 3, 16, 16)
        >>> ssim(x, x).tolist()
        [1.0, 1.0]
    """
    import kornia

    _check_pair(image, reference)
    if min(image.shape[-2:]) < window_size:
        raise ValueError(f"ssim needs images of at least {window_size}x{window_size}, got {tuple(image.shape)}")
    lead = image.shape[:-3]
    a = image.reshape(-1, *image.shape[-3:]).float()
    b = reference.reshape(-1, *reference.shape[-3:]).float()
    value = kornia.metrics.ssim(a, b, window_size, max_val=1.0, padding="valid").mean(dim=(-3, -2, -1))
    return value.reshape(lead)


def ciede2000(image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean CIEDE2000 colour difference per image (``skimage.color.deltaE_ciede2000``, sRGB D65 -> CIELAB).

    Args:
        image: ``(*, 3, H, W)`` sRGB in ``[0, 1]``.
        reference: same shape.

    Returns:
        ``(*)`` float32, >= 0 (0 for identical images; about 2.3 is a just-noticeable difference).

    Example:
        >>> x = torch.rand(3, 8, 8)
        >>> ciede2000(x, x).item()
        0.0
    """
    from skimage import color

    _check_pair(image, reference)
    lead = image.shape[:-3]
    a = image.detach().reshape(-1, *image.shape[-3:]).clamp(0, 1).permute(0, 2, 3, 1).cpu().double().numpy()
    b = reference.detach().reshape(-1, *reference.shape[-3:]).clamp(0, 1).permute(0, 2, 3, 1).cpu().double().numpy()
    values = [float(color.deltaE_ciede2000(color.rgb2lab(x), color.rgb2lab(y)).mean()) for x, y in zip(a, b)]
    return torch.tensor(values, dtype=torch.float32).reshape(lead)


def consistency(frames: torch.Tensor) -> torch.Tensor:
    """Cross-exposure consistency: mean PSNR over all pairs of frames of one bracket (higher = more alike).

    A perfect exposure corrector maps every frame of a bracket to the same image, so this is high for it;
    note that it is also high for any method that outputs the same image whatever the input (even a bad one),
    so read it next to the reference metrics.

    Args:
        frames: ``(*, N, 3, H, W)`` in ``[0, 1]``, N >= 2.

    Returns:
        ``(*)`` float32 dB.

    Example:
        >>> consistency(torch.zeros(3, 3, 4, 4)).item()
        100.0
    """
    if frames.dim() < 4 or frames.shape[-4] < 2:
        raise ValueError(f"consistency needs (*, N, 3, H, W) with N >= 2, got {tuple(frames.shape)}")
    n = frames.shape[-4]
    first, second = torch.triu_indices(n, n, offset=1, device=frames.device)
    pairs = psnr(frames.index_select(-4, first), frames.index_select(-4, second))
    return pairs.mean(dim=-1)


#: A pixel whose every channel is at least this (in [0, 1]) is "bright" for :func:`highlight_chroma_added`.
BRIGHT_LEVEL = 0.85


def highlight_chroma_added(image: torch.Tensor, source: torch.Tensor, level: float = BRIGHT_LEVEL) -> torch.Tensor:
    """CIELAB chroma a correction adds to the pixels that are bright in its input: a colour-cast measure.

    Over the pixels of ``source`` whose every channel is at least ``level`` (clipped or nearly clipped
    highlights, which carry no reliable hue), the mean of ``max(0, C*(image) - C*(source))``, where
    ``C* = sqrt(a*^2 + b*^2)`` (``kornia.color.rgb_to_lab``: sRGB, D65). A correction that keeps such pixels'
    colour (or desaturates them) scores 0; one that paints a white sky purple scores the chroma it painted
    (a difference of about 2.3 is just noticeable).

    Args:
        image: ``(*, 3, H, W)`` corrected image in ``[0, 1]``.
        source: ``(*, 3, H, W)`` the input it was corrected from, in ``[0, 1]``.
        level: brightness threshold on every channel of ``source``.

    Returns:
        ``(*)`` float32; NaN for an image whose input has no bright pixel (leave those out of means).

    Example:
        >>> white = torch.ones(3, 4, 4)
        >>> round(highlight_chroma_added(white * 0.8, white).item(), 3)  # darkened, still neutral
        0.0
        >>> tinted = white.clone(); tinted[1] = 0.8  # white turned magenta
        >>> round(highlight_chroma_added(tinted, white).item(), 1)
        32.0
        >>> highlight_chroma_added(white * 0.5, white * 0.5).isnan().item()  # nothing bright in the input
        True
    """
    import kornia

    _check_pair(image, source)
    lead = image.shape[:-3]
    out = kornia.color.rgb_to_lab(image.detach().reshape(-1, *image.shape[-3:]).float().clamp(0, 1))
    src = kornia.color.rgb_to_lab(source.detach().reshape(-1, *source.shape[-3:]).float().clamp(0, 1))
    # C* by torch.hypot: Tensor.norm(dim=1) computes the same 200x slower on the CPU (90 ms for 5 x 0.1 MP)
    added = (torch.hypot(out[:, 1], out[:, 2]) - torch.hypot(src[:, 1], src[:, 2])).clamp_min(0)  # (N, H, W)
    bright = (source.detach().reshape(-1, *source.shape[-3:]) >= level).all(dim=1).float()
    count = bright.sum(dim=(-2, -1))
    value = (added * bright).sum(dim=(-2, -1)) / count.clamp_min(1)
    return torch.where(count > 0, value, torch.full_like(value, float("nan"))).reshape(lead)


#: Regions whose reference mean luma is outside this range (black or clipped: their exposure is unknown) are
#: left out of :func:`region_exposure_error`.
REGION_LUMA_RANGE = (0.02, 0.95)


def reference_regions(reference: torch.Tensor, segments: int = 100) -> torch.Tensor:
    """Superpixels of a reference frame for :func:`region_exposure_error`: ``(3, H, W)`` in [0, 1] -> ``(H, W)``
    int64 labels ``0 .. K-1`` (scikit-image's SLIC, about ``segments`` compact regions that follow edges).

    >>> labels = reference_regions(torch.rand(3, 32, 48), segments=6)
    >>> labels.shape, int(labels.min())
    (torch.Size([32, 48]), 0)
    """
    from skimage.segmentation import slic

    pixels = reference.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    labels = slic(pixels, n_segments=segments, compactness=10, start_label=0, channel_axis=-1)
    return torch.from_numpy(labels.astype(np.int64))


def region_exposure_error(image: torch.Tensor, reference: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """How far each region's exposure is from the reference frame's, in stops: a local exposure measure.

    For every region (e.g. :func:`reference_regions` of the reference frame), the mean luma of ``image`` and of
    ``reference`` over the region, in linear light; the error is ``|log2(image / reference)|``, averaged over
    regions weighted by area. Regions black or clipped in the reference (:data:`REGION_LUMA_RANGE`) are left out:
    their exposure is unknown. A global gain that matches the mean can still leave a dark subject under a bright
    sky off by stops; this counts it.

    Args:
        image: ``(*, 3, H, W)`` corrected images in ``[0, 1]``.
        reference: ``(3, H, W)`` the reference frame in ``[0, 1]``.
        regions: ``(H, W)`` integer region labels ``0 .. K-1``.

    Returns:
        ``(*)`` float32 errors in stops (EV); NaN where no region qualifies.

    Example:
        >>> ref = torch.full((3, 4, 4), 0.5)
        >>> regions = torch.zeros(4, 4, dtype=torch.long); regions[:, 2:] = 1
        >>> import kornia
        >>> darker = ref.clone()  # the left region one stop darker in linear light
        >>> darker[:, :, :2] = kornia.color.linear_rgb_to_rgb(kornia.color.rgb_to_linear_rgb(ref) / 2)[:, :, :2]
        >>> round(region_exposure_error(ref, ref, regions).item(), 3), round(region_exposure_error(darker, ref, regions).item(), 2)
        (0.0, 0.5)
    """
    import kornia

    _check_pair(image, reference.expand_as(image))
    weights = image.new_tensor(LUMA_WEIGHTS).view(3, 1, 1).float()
    lead = image.shape[:-3]
    flat = image.detach().reshape(-1, *image.shape[-3:]).float().clamp(0, 1)
    luma = (kornia.color.rgb_to_linear_rgb(flat) * weights).sum(-3).flatten(1)  # (N, HW)
    ref_luma = (kornia.color.rgb_to_linear_rgb(reference.detach().float().clamp(0, 1)) * weights).sum(-3).flatten()
    ref_srgb = (reference.detach().float().clamp(0, 1) * weights).sum(-3).flatten()
    labels = regions.to(luma.device).flatten().long()
    count = torch.zeros(int(labels.max()) + 1, device=luma.device).index_add_(0, labels, torch.ones_like(ref_luma))
    area = count.clamp_min(1)
    mean_ref = torch.zeros_like(count).index_add_(0, labels, ref_luma) / area
    mean_ref_srgb = torch.zeros_like(count).index_add_(0, labels, ref_srgb) / area
    mean_out = torch.zeros(luma.shape[0], count.numel(), device=luma.device).index_add_(1, labels, luma) / area
    low, high = REGION_LUMA_RANGE
    usable = (count > 0) & (mean_ref_srgb >= low) & (mean_ref_srgb <= high)
    error = (torch.log2(mean_out.clamp_min(1e-5)) - torch.log2(mean_ref.clamp_min(1e-5))).abs()
    weight = count * usable
    value = (error * weight).sum(-1) / weight.sum().clamp_min(1)
    return torch.where(weight.sum() > 0, value, torch.full_like(value, float("nan"))).reshape(lead)


# ----------------------------------------------------------------------------------------------- MEF-SSIM


def _grey255(images: torch.Tensor) -> torch.Tensor:
    """``(*, 3, H, W)`` in [0, 1] -> ``(*, H, W)`` Rec. 601 grey in [0, 255], float64 (the statistics below
    subtract large nearly equal numbers, which float32 would not survive)."""
    weights = torch.tensor(LUMA_WEIGHTS, dtype=torch.float64, device=images.device).view(3, 1, 1)
    return (images.double() * weights).sum(dim=-3) * 255.0


def _separable_filter(maps: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Correlate ``(C, H, W)`` float64 maps with the outer product of a 1-D kernel; valid region only.

    On CPU this uses ``cv2.sepFilter2D``: torch's float64 ``conv2d`` is about 20x slower there, and float32 is not
    enough (the statistics subtract products of grey levels up to 255^2 that nearly cancel).
    """
    size = kernel.numel()
    if maps.device.type == "cpu":
        import cv2

        k = kernel.double().numpy()
        bd = size // 2
        out = [cv2.sepFilter2D(m, cv2.CV_64F, k, k)[bd : m.shape[0] - bd, bd : m.shape[1] - bd] for m in maps.numpy()]
        return torch.from_numpy(np.stack(out))
    x = maps.unsqueeze(1)
    k = kernel.to(maps).view(1, 1, 1, -1)
    return F.conv2d(F.conv2d(x, k), k.transpose(-1, -2)).squeeze(1)


def _gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(t * t) / (2 * sigma * sigma))
    return g / g.sum()


def _desired_patches(stack: torch.Tensor, window_size: int = 11, sigma: float = 1.5) -> dict[str, torch.Tensor]:
    """Everything MEF-SSIM needs from the source stack at one scale, for every patch position.

    Args:
        stack: ``(K, H, W)`` grey levels in ``[0, 255]``, float64.

    Returns:
        Maps over the valid region ``(h, w)`` (and ``(K, h, w)`` for per-frame ones): the box means ``mu``, the
        structure coefficients ``a`` and ``scale`` (desired patch ``r = scale * sum_k a_k (x_k - mu_k)``), and the
        Gaussian-weighted mean ``mu_r`` and variance ``var_r`` of ``r``.
    """
    count = stack.shape[0]
    n = window_size * window_size
    box = torch.full((window_size,), 1.0 / window_size, dtype=torch.float64)
    gauss = _gaussian_kernel(window_size, sigma)

    # Products of every pair of frames (i <= j), as maps; filtered, they give patch cross-moments.
    first, second = torch.triu_indices(count, count)
    products = stack[first] * stack[second]  # (P, H, W), P = K (K + 1) / 2
    box_stats = _separable_filter(torch.cat([stack, products]), box)  # uniform window: means, covariances
    mu = box_stats[:count]  # (K, h, w)
    cov_box = box_stats[count:] - mu[first] * mu[second]  # (P, h, w)
    gauss_stats = _separable_filter(torch.cat([stack, products]), gauss)  # Gaussian window: final moments
    g_x, g_xx = gauss_stats[:count], gauss_stats[count:]

    # Contrast of each frame's patch: ||x_k - mu_k|| (+ 0.001 against division by zero, as the authors do).
    diagonal = (first == second).nonzero().flatten()
    norm = torch.sqrt((n * cov_box[diagonal]).clamp_min(0))  # (K, h, w)
    contrast = norm + 0.001
    # Structural consistency R = ||sum_k (x_k - mu_k)|| / sum_k ||x_k - mu_k|| decides how sharply the
    # weighting favours the highest-contrast frame: p = tan(pi R / 2), capped at 10 (the authors' cap).
    eps = float(np.finfo(np.float64).eps)
    twice = torch.where(first == second, 1.0, 2.0).to(stack).view(-1, 1, 1)  # off-diagonal pairs count twice
    sum_norm = torch.sqrt((n * (twice * cov_box).sum(dim=0)).clamp_min(0))
    consistency_r = ((sum_norm + eps) / (norm.sum(dim=0) + eps)).clamp(eps, 1 - eps)
    p = torch.tan(math.pi / 2 * consistency_r).clamp_max(10.0)
    weight = (contrast / window_size) ** p + eps
    weight = weight / weight.sum(dim=0)
    # Desired patch = max contrast x unit vector along sum_k w_k (x_k - mu_k) / c_k; with a_k = w_k / c_k it is
    # scale * sum_k a_k (x_k - mu_k), and every statistic of it is a quadratic form in a over pair moments.
    a = weight / contrast
    pair_coef = twice * a[first] * a[second]  # (P, h, w)
    structure_norm = torch.sqrt((n * (pair_coef * cov_box).sum(dim=0)).clamp_min(0))
    scale = torch.where(structure_norm > 0, contrast.amax(dim=0) / structure_norm.clamp_min(1e-300), 1.0)
    # Gaussian-weighted moments of r:
    # sum_kl a_k a_l E[(x_k - mu_k)(x_l - mu_l)] = sum_kl a_k a_l E[x_k x_l] - 2 (a.mu)(a.E[x]) + (a.mu)^2
    a_mu, a_g = (a * mu).sum(dim=0), (a * g_x).sum(dim=0)
    mu_r = scale * (a_g - a_mu)
    e_rr = scale * scale * ((pair_coef * g_xx).sum(dim=0) - 2 * a_mu * a_g + a_mu * a_mu)
    var_r = (e_rr - mu_r * mu_r).clamp_min(0)
    return {"a": a, "a_mu": a_mu, "scale": scale, "mu_r": mu_r, "var_r": var_r}


def _mef_quality(
    stack: torch.Tensor, desired: dict, fused: torch.Tensor, window_size: int = 11, sigma: float = 1.5, k: float = 0.03
) -> torch.Tensor:
    """Mean MEF-SSIM quality map of ``(M, H, W)`` grey images against the desired patches of ``(K, H, W)``."""
    count, m = stack.shape[0], fused.shape[0]
    gauss = _gaussian_kernel(window_size, sigma)
    maps = torch.cat([(stack[None] * fused[:, None]).flatten(0, 1), fused, fused * fused])
    stats = _separable_filter(maps, gauss)
    g_xf = stats[: m * count].unflatten(0, (m, count))  # (M, K, h, w)
    g_f, g_ff = stats[m * count : m * count + m], stats[m * count + m :]
    # E[r f] = scale * sum_k a_k (E[x_k f] - mu_k E[f])
    e_rf = desired["scale"] * ((desired["a"] * g_xf).sum(dim=1) - desired["a_mu"] * g_f)
    cov = e_rf - desired["mu_r"] * g_f
    var_f = (g_ff - g_f * g_f).clamp_min(0)
    c = (k * 255.0) ** 2
    quality = (2 * cov + c) / (desired["var_r"] + var_f + c)
    return quality.mean(dim=(-2, -1))


def mef_ssim_single_scale(
    stack: torch.Tensor, fused: torch.Tensor, window_size: int = 11, sigma: float = 1.5, k: float = 0.03
) -> torch.Tensor:
    """Single-scale MEF-SSIM of a fused image against its source stack, on grey levels in ``[0, 255]``.

    See :func:`mef_ssim` for the definition. Both arguments must already be grey: ``stack`` ``(K, H, W)``,
    ``fused`` ``(H, W)`` (or ``(M, H, W)`` to score several), float64, values in ``[0, 255]``.

    Returns:
        The mean of the quality map over the valid region: 0-dim (or ``(M,)``) float64.
    """
    desired = _desired_patches(stack, window_size, sigma)
    quality = _mef_quality(stack, desired, fused.reshape(-1, *fused.shape[-2:]), window_size, sigma, k)
    return quality.reshape(fused.shape[:-2])


def _halve(x: torch.Tensor) -> torch.Tensor:
    """2x2 mean then keep every other pixel; odd sizes repeat the last row/column (MATLAB 'symmetric')."""
    pad_h, pad_w = x.shape[-2] % 2, x.shape[-1] % 2
    if pad_h or pad_w:
        x = F.pad(x.unsqueeze(0), (0, pad_w, 0, pad_h), mode="replicate").squeeze(0)
    return F.avg_pool2d(x.unsqueeze(0), 2).squeeze(0)


def mef_ssim(
    stack: torch.Tensor,
    fused: torch.Tensor,
    scale_weights: tuple[float, ...] = MEF_SSIM_SCALE_WEIGHTS,
    window_size: int = 11,
) -> torch.Tensor:
    """MEF-SSIM (Ma, Zeng, Wang, "Perceptual Quality Assessment for Multi-Exposure Image Fusion", TIP 2015).

    Scores a fused image against the exposure stack it came from, with no ground truth. Per 11x11 patch
    (grey levels in [0, 255]), every source patch ``x_k`` splits into mean, contrast ``c_k = ||x_k - mu_k||`` and
    structure ``s_k = (x_k - mu_k) / c_k``. The desired patch has the largest contrast ``max_k c_k`` and the
    structure ``sum_k w_k s_k`` (normalised), with ``w_k = c_k^p`` (normalised over ``k``) and
    ``p = tan(pi R / 2)``, ``R = ||sum_k (x_k - mu_k)|| / sum_k ||x_k - mu_k||``: where the sources agree in
    structure (R near 1) the weighting follows the highest contrast, where they disagree all count.
    Luminance is not compared. The patch score is SSIM's contrast-structure term
    ``(2 cov + C) / (var_r + var_f + C)``, ``C = (0.03 * 255)^2``, with Gaussian-weighted (sigma 1.5) moments.
    The scale score is its mean over the valid region; scales are 2x2-averaged and subsampled, and combined as
    ``prod_l Q_l^beta_l`` with the first three MS-SSIM exponents normalised (:data:`MEF_SSIM_SCALE_WEIGHTS`).

    Implementation details follow the authors' release where the paper is silent: contrast and R use a
    uniform 11x11 window while the final moments use the Gaussian one; ``c_k`` gets +0.001; ``p`` is capped at
    10; frames are Rec. 601 grey. Instead of a loop over patches, all patch statistics are computed for every
    pixel at once from separable filters of the frames, their pairwise products and their products with the
    fused image (the desired patch is linear in the frames, so its moments are quadratic forms of those maps).
    The stack's part is computed once however many images are scored against it.

    Args:
        stack: ``(K, 3, H, W)`` source frames in ``[0, 1]`` (any order), K >= 1.
        fused: ``(3, H, W)`` image to score, or ``(M, 3, H, W)`` several, in ``[0, 1]`` (clamped).
        scale_weights: exponent per scale; its length is the number of scales (3 in the paper).
        window_size: patch side.

    Returns:
        0-dim (or ``(M,)``) float32 tensor, at most 1 (1: the fused image has the desired structure everywhere).

    Raises:
        ValueError: wrong shapes, or an image smaller than ``window_size * 2^(scales - 1)`` (44 px by default).

    Example:
        >>> frame = torch.rand(3, 48, 48)
        >>> round(mef_ssim(frame.expand(4, -1, -1, -1), frame).item(), 3)
        1.0
    """
    if not isinstance(stack, torch.Tensor) or stack.dim() != 4 or stack.shape[1] != 3 or stack.shape[0] < 1:
        raise ValueError(f"stack must be (K, 3, H, W) with K >= 1, got {getattr(stack, 'shape', type(stack))}")
    if not isinstance(fused, torch.Tensor) or tuple(fused.shape[-3:]) != tuple(stack.shape[1:]) or fused.dim() > 4:
        raise ValueError(f"fused must be (3, H, W) or (M, 3, H, W) like the stack's frames, got {getattr(fused, 'shape', None)}")
    levels = len(scale_weights)
    smallest = min(stack.shape[-2:]) / 2 ** (levels - 1)
    if smallest < window_size:
        raise ValueError(
            f"mef_ssim with {levels} scales needs images of at least {window_size * 2 ** (levels - 1)} px a side, "
            f"got {tuple(stack.shape[-2:])}"
        )
    x = _grey255(stack.detach().clamp(0, 1))
    y = _grey255(fused.detach().clamp(0, 1).reshape(-1, *fused.shape[-3:]))
    total = torch.ones(y.shape[0], dtype=torch.float64, device=x.device)
    for level, beta in enumerate(scale_weights):
        if level:
            x, y = _halve(x), _halve(y)
        q = _mef_quality(x, _desired_patches(x, window_size), y, window_size)
        # A negative scale score (anti-correlated structure) cannot be raised to a fractional power; as in
        # MS-SSIM implementations, it is floored at 0 for the product.
        total = total * q.clamp_min(0) ** beta
    return total.float().reshape(fused.shape[:-3])


# ----------------------------------------------------------------------------------------------- ST-LPIPS


def stlpips(image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Shift-tolerant LPIPS distance (Ghildyal and Liu 2022; :class:`loopexpose.perceptual.STLPIPS`), lower is
    closer. Replaces LPIPS, whose ``lpips`` package needs torchvision and downloads its backbone.

    Args:
        image: ``(*, 3, H, W)`` in ``[0, 1]``, at least 18 x 18 (:data:`loopexpose.perceptual.MIN_SIDE`).
        reference: same shape.

    Returns:
        ``(*)`` float32 on the CPU, >= 0.

    Raises:
        LoopExposeError: the weights are not installed (see :func:`loopexpose.perceptual.load_stlpips`).
    """
    _check_pair(image, reference)
    model = _stlpips_model().to(image.device)
    with torch.no_grad():
        return model(image.float(), reference.float()).cpu()


@functools.cache
def _stlpips_model():
    from loopexpose.perceptual import load_stlpips

    return load_stlpips()
