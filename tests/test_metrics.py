"""Metrics: values computable by hand, orderings that must hold, and MEF-SSIM against a patch-by-patch loop."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from conftest import synthetic_bracket
from loopexpose import baselines, metrics
from loopexpose.fusion import fuse
from loopexpose.metrics import _gaussian_kernel, _grey255, mef_ssim, mef_ssim_single_scale


def test_psnr_by_hand():
    a, b = torch.zeros(2, 3, 8, 8), torch.full((2, 3, 8, 8), 0.1)
    assert torch.allclose(metrics.psnr(a, b), torch.tensor([20.0, 20.0]))
    assert metrics.psnr(a[0], a[0]).item() == metrics.PSNR_CAP_DB
    with pytest.raises(ValueError):
        metrics.psnr(a, b[0])


def test_ssim_identical_and_degraded():
    x = synthetic_bracket(1, 48, 64)[0]
    assert metrics.ssim(x, x).item() == pytest.approx(1.0, abs=1e-5)
    noisy = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    more = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert metrics.ssim(x, x).item() > metrics.ssim(noisy, x).item() > metrics.ssim(more, x).item()


def test_ciede2000_black_white_is_100():
    black, white = torch.zeros(3, 4, 4), torch.ones(3, 4, 4)
    assert metrics.ciede2000(black, white).item() == pytest.approx(100.0, abs=0.01)
    assert metrics.ciede2000(white, white).item() == 0.0


def test_consistency():
    frames = torch.stack([torch.zeros(3, 4, 4), torch.full((3, 4, 4), 0.1), torch.full((3, 4, 4), 0.2)])
    # pairs: 0.1 -> 20 dB, 0.2 -> 13.98 dB, 0.1 -> 20 dB
    expected = (20 + 20 + 10 * math.log10(1 / 0.04)) / 3
    assert metrics.consistency(frames).item() == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError):
        metrics.consistency(frames[:1])


def _mef_ssim_loop(stack: np.ndarray, fused: np.ndarray, w: int = 11) -> float:
    """Single-scale MEF-SSIM written patch by patch from the paper's definition (slow, for small images)."""
    count, height, width = stack.shape
    bd = w // 2
    g = _gaussian_kernel(w, 1.5).numpy()
    g = np.outer(g, g).ravel()
    eps = np.finfo(float).eps
    c = (0.03 * 255) ** 2
    scores = []
    for i in range(bd, height - bd):
        for j in range(bd, width - bd):
            x = stack[:, i - bd : i + bd + 1, j - bd : j + bd + 1].reshape(count, -1)
            centred = x - x.mean(axis=1, keepdims=True)
            contrast = np.linalg.norm(centred, axis=1) + 0.001
            total = x.sum(axis=0)
            r = (np.linalg.norm(total - total.mean()) + eps) / (np.linalg.norm(centred, axis=1).sum() + eps)
            p = min(math.tan(math.pi / 2 * min(max(r, eps), 1 - eps)), 10)
            weight = (contrast / w) ** p + eps
            weight /= weight.sum()
            desired = (weight[:, None] * centred / contrast[:, None]).sum(axis=0)
            if np.linalg.norm(desired) > 0:
                desired = desired / np.linalg.norm(desired) * contrast.max()
            f = fused[i - bd : i + bd + 1, j - bd : j + bd + 1].ravel()
            m1, m2 = (g * desired).sum(), (g * f).sum()
            v1, v2 = (g * (desired - m1) ** 2).sum(), (g * (f - m2) ** 2).sum()
            cov = (g * (desired - m1) * (f - m2)).sum()
            scores.append((2 * cov + c) / (v1 + v2 + c))
    return float(np.mean(scores))


@pytest.mark.parametrize("which", ["frame", "mean", "noise"])
def test_mef_ssim_vectorised_matches_patch_loop(which):
    bracket = synthetic_bracket(4, 26, 30)
    candidate = {"frame": bracket[1], "mean": bracket.mean(0), "noise": torch.rand(3, 26, 30, generator=torch.Generator().manual_seed(1))}[which]
    x, y = _grey255(bracket), _grey255(candidate)
    expected = _mef_ssim_loop(x.numpy(), y.numpy())
    assert mef_ssim_single_scale(x, y).item() == pytest.approx(expected, abs=1e-9)


def test_mef_ssim_identical_stack_scores_one():
    frame = synthetic_bracket(1, 60, 80)[0]
    assert mef_ssim(frame.expand(5, -1, -1, -1), frame).item() == pytest.approx(1.0, abs=1e-4)
    flat = torch.full((3, 48, 48), 0.4)
    assert mef_ssim(flat.expand(3, -1, -1, -1), flat).item() == pytest.approx(1.0, abs=1e-6)


def test_mef_ssim_mertens_beats_darkest_frame():
    bracket = synthetic_bracket(5, 96, 128)
    fused = fuse(bracket, "mertens").clamp(0, 1)
    scores = mef_ssim(bracket, torch.stack([fused, bracket[0]]))
    assert scores[0] > scores[1] + 0.1
    assert scores[0] > 0.9


def test_mef_ssim_batch_equals_single_and_checks_shapes():
    bracket = synthetic_bracket(3, 48, 52)
    batch = mef_ssim(bracket, bracket)
    assert batch.shape == (3,)
    assert batch[2].item() == pytest.approx(mef_ssim(bracket, bracket[2]).item(), abs=1e-6)
    with pytest.raises(ValueError, match="at least 44"):
        mef_ssim(bracket[:, :, :40], bracket[0, :, :40])
    with pytest.raises(ValueError):
        mef_ssim(bracket, bracket[0, :, :10])


def test_mef_ssim_is_fast_on_a_0_2_megapixel_bracket():
    bracket = synthetic_bracket(5, 356, 536)  # 0.19 MP, the HDRPS size
    mef_ssim(bracket, bracket[2])  # warm up
    start = time.perf_counter()
    mef_ssim(bracket, bracket[2])
    # Well under a second on an idle 2-core CPU; the bound leaves room for a busy CI machine (a per-patch
    # Python loop takes minutes).
    assert time.perf_counter() - start < 5.0


@pytest.mark.data
def test_mef_ssim_orders_real_bracket(brackets_root):
    from loopexpose.evaluate import load_window
    from loopexpose.brackets import order_bracket

    bracket = order_bracket(brackets_root / "hdrps" / "507")
    frames, _, _ = load_window(bracket, max_side=256)
    fused = fuse(frames, "opencv").clamp(0, 1)
    scores = mef_ssim(frames, torch.stack([fused, frames[0]]))
    assert scores[0] > scores[1]


def test_gain_baseline_hits_mid_grey():
    dark = synthetic_bracket(3, 32, 32)[:1]
    out = baselines.gain_to_mid_grey(dark)
    assert baselines.mean_luma(out).item() == pytest.approx(baselines.MID_GREY, abs=0.03)  # clipping costs a bit
    assert out.min() >= 0 and out.max() <= 1


def test_gamma_and_levels_and_clahe_keep_shape_and_range():
    frames = synthetic_bracket(3, 32, 40)
    for function in (baselines.gamma_to_mid_grey, baselines.auto_levels, baselines.clahe):
        out = function(frames)
        assert out.shape == frames.shape and out.min() >= 0 and out.max() <= 1
    brighter = baselines.gamma_to_mid_grey(frames[:1])
    assert baselines.mean_luma(brighter).item() > baselines.mean_luma(frames[:1]).item()


def test_stlpips_metric_is_the_perceptual_distance(monkeypatch):
    from loopexpose import perceptual
    from loopexpose.errors import LoopExposeError

    if perceptual.package_weights() is None:
        pytest.skip("stlpips-pytorch is not installed")
    a, b = torch.rand(2, 3, 32, 40), torch.rand(2, 3, 32, 40)
    value = metrics.stlpips(a, b)
    assert value.shape == (2,) and torch.allclose(value, perceptual.load_stlpips()(a, b))
    assert metrics.stlpips(a, a).abs().max() < 1e-6
    metrics._stlpips_model.cache_clear()
    monkeypatch.setattr(perceptual, "package_weights", lambda: None)
    with pytest.raises(LoopExposeError, match="perceptual"):
        metrics.stlpips(a, b)
    metrics._stlpips_model.cache_clear()


def test_highlight_chroma_added():
    from loopexpose.metrics import highlight_chroma_added

    sky = torch.ones(3, 16, 16)
    sky[:, :8] = 0.5  # only the bottom half is bright
    tinted = sky.clone()
    tinted[0, 8:] = 0.85  # the bright half turned cyan, the rest untouched
    assert highlight_chroma_added(sky * 0.9, sky).item() == pytest.approx(0, abs=1e-3)  # darker, still neutral
    assert highlight_chroma_added(tinted, sky).item() > 10
    purple = sky.clone()
    purple[1, :8] = 0.3  # a colour cast outside the bright pixels does not count
    assert highlight_chroma_added(purple, sky).item() == pytest.approx(0, abs=1e-3)
    # desaturating a bright coloured pixel adds nothing (floored at 0); saturating it adds chroma
    warm = torch.tensor([1.0, 0.9, 0.86]).view(3, 1, 1).expand(3, 4, 4)
    assert highlight_chroma_added(torch.full((3, 4, 4), 0.9), warm).item() == 0
    assert highlight_chroma_added(torch.tensor([1.0, 0.8, 0.7]).view(3, 1, 1).expand(3, 4, 4), warm).item() > 5
    batch = highlight_chroma_added(torch.stack([tinted, sky * 0.5]), torch.stack([sky, sky * 0.5]))
    assert batch.shape == (2,) and batch[0] > 10 and batch[1].isnan()  # nothing bright in the second input


def test_region_exposure_error_counts_stops_per_region():
    import kornia

    from loopexpose.metrics import reference_regions, region_exposure_error

    from skimage import data, transform

    photo = torch.from_numpy(transform.resize(data.astronaut(), (48, 64))).permute(2, 0, 1).float()
    reference = photo * 0.5 + 0.2  # nothing black or clipped
    regions = reference_regions(reference, segments=12)
    assert int(regions.max()) >= 4
    linear = kornia.color.rgb_to_linear_rgb(reference)
    one_stop = kornia.color.linear_rgb_to_rgb(linear / 2)
    assert region_exposure_error(reference, reference, regions).item() == pytest.approx(0, abs=1e-5)
    assert region_exposure_error(one_stop, reference, regions).item() == pytest.approx(1, abs=1e-3)
    # The left half a stop darker, the right half a stop brighter: the mean hardly moves, the regions do.
    swapped = one_stop.clone()
    swapped[..., 32:] = kornia.color.linear_rgb_to_rgb((linear * 2).clamp(0, 1))[..., 32:]
    batch = torch.stack([reference, swapped])
    errors = region_exposure_error(batch, reference, regions)
    assert errors.shape == (2,) and errors[0] < 1e-5 and 0.6 < errors[1] < 1.01  # regions across the seam mix both


def test_region_exposure_error_ignores_clipped_and_black_regions():
    from loopexpose.metrics import region_exposure_error

    reference = torch.ones(3, 8, 8)
    reference[:, :, :4] = 0.5
    regions = torch.zeros(8, 8, dtype=torch.long)
    regions[:, 4:] = 1  # region 1 is clipped white in the reference: unknown exposure
    image = reference.clone()
    image[:, :, 4:] = 0.2  # whatever happens there does not count
    assert region_exposure_error(image, reference, regions).item() == pytest.approx(0, abs=1e-6)
    assert region_exposure_error(image, torch.ones(3, 8, 8), regions).isnan()
