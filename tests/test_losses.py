"""Losses: the Luminance Ranking Loss on hand-made cases, and SSIM against kornia's reference."""

from __future__ import annotations

import kornia
import pytest
import torch

from loopexpose.losses import l1_loss, ssim_loss, ssim_map
from loopexpose.methods.loopexpose.losses import cross_exposure_consistency_loss, luminance_ranking_loss


def test_ranking_loss_zero_for_correct_order():
    features = torch.tensor([[0.0, 0.5, 1.0, 2.0], [-3.0, -1.0, 0.0, 5.0]])
    assert luminance_ranking_loss(features, margin=0.2) == 0


def test_ranking_loss_positive_for_reversed_order():
    forward = torch.tensor([[0.0, 1.0, 2.0]])
    assert luminance_ranking_loss(forward.flip(-1), margin=0.1) > 0


def test_ranking_loss_hand_computed():
    # pairs (0,1): relu(1 + .5 - 0) = 1.5; (0,2): relu(1 + .5 - 2) = 0; (1,2): relu(0 + .5 - 2) = 0
    features = torch.tensor([[1.0, 0.0, 2.0]])
    assert torch.isclose(luminance_ranking_loss(features, margin=0.5, reduction="sum"), torch.tensor(1.5))
    assert torch.isclose(luminance_ranking_loss(features, margin=0.5, reduction="mean"), torch.tensor(0.5))


def test_ranking_loss_margin_matters():
    features = torch.tensor([[0.0, 0.05]])
    assert luminance_ranking_loss(features, margin=0.0) == 0
    assert torch.isclose(luminance_ranking_loss(features, margin=0.1), torch.tensor(0.05))


def test_ranking_loss_gradient_sign():
    features = torch.tensor([[1.0, 0.0]], requires_grad=True)  # darker frame ranked above the brighter
    luminance_ranking_loss(features, margin=0.1).backward()
    assert features.grad[0, 0] > 0  # descent lowers the darker frame's feature
    assert features.grad[0, 1] < 0  # and raises the brighter frame's


def test_ranking_loss_any_length():
    assert luminance_ranking_loss(torch.zeros(3, 1)) == 0
    long = torch.arange(9.0).view(1, 9)
    assert luminance_ranking_loss(long, margin=1.0) == 0
    assert luminance_ranking_loss(long, margin=1.5) > 0


def test_ranking_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="\\(B, N\\)"):
        luminance_ranking_loss(torch.zeros(3))
    with pytest.raises(ValueError, match="reduction"):
        luminance_ranking_loss(torch.zeros(1, 2), reduction="max")


def test_ssim_matches_kornia():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 40, 36)
    y = (x + 0.2 * torch.rand_like(x)).clamp(0, 1)
    ours = ssim_map(x, y).mean()
    reference = kornia.metrics.ssim(x, y, 11, padding="valid").mean()
    assert torch.isclose(ours, reference, atol=1e-5)


def test_ssim_loss_and_l1_zero_on_equal_and_grow_with_noise():
    x = torch.rand(1, 3, 32, 32)
    assert ssim_loss(x, x) < 1e-6 and l1_loss(x, x) == 0
    small = ssim_loss(x, (x + 0.05 * torch.randn_like(x)).clamp(0, 1))
    large = ssim_loss(x, (x + 0.3 * torch.randn_like(x)).clamp(0, 1))
    assert 0 < small < large


def test_ssim_loss_accepts_bracket_batches():
    x = torch.rand(2, 4, 3, 24, 24, requires_grad=True)
    loss = ssim_loss(x, torch.rand(2, 4, 3, 24, 24))
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_consistency_loss_zero_when_frames_agree_and_pulls_them_together():
    same = torch.rand(2, 1, 3, 8, 8).expand(2, 4, 3, 8, 8)
    assert cross_exposure_consistency_loss(same) == 0
    frames = torch.stack([torch.full((3, 4, 4), 0.2), torch.full((3, 4, 4), 0.6)])[None].requires_grad_()
    loss = cross_exposure_consistency_loss(frames)
    assert torch.isclose(loss, torch.tensor(0.2))  # each frame is 0.2 from the mean
    loss.backward()
    assert (frames.grad[0, 0] < 0).all() and (frames.grad[0, 1] > 0).all()  # descent brings them together
    with pytest.raises(ValueError, match="B, k, 3, H, W"):
        cross_exposure_consistency_loss(torch.rand(2, 3, 8, 8))
