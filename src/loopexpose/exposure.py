"""The exposure rules every correction model ends with: fixed rules on a trained network's result, in eval mode.

Trained on pseudo-labels, a correction network brings a dark frame to a darker result than the same scene's
brighter frames, and renders it with the labels' look (an exposure fusion's lifted shadows and compressed
highlights) where the scene's well-exposed photo is the camera's own rendering of more light. So, for a frame
darker than mid-grey (:func:`exposure_rules`, applied by :func:`apply_exposure_rules`):

1. **floor**: if its result falls short of a target level, it is lifted to it by one gain in linear light with
   Reinhard's roll-off (:func:`finish`, :func:`floor_gain`). The target is ``level ** FLOOR_WEIGHT *
   MID_GREY ** (1 - FLOOR_WEIGHT)``, ``level`` being what the network gives the same thumbnail exposed to
   mid-grey (:func:`expose_to_mid_grey`): a night scene stays darker than a day scene;
2. **blend**: the result is mixed, with weight :data:`EXPOSURE_BLEND`, with the *input* exposed to the result's
   level by one gain in linear light: the camera's own tone beside the network's.

Brighter frames are left as the network made them. The rules have no parameters and are not used in training;
the gains are found on thumbnails, so they cost a network pass on one more thumbnail. Both models use them:
:class:`~loopexpose.methods.loopexpose.network.CurveGrid` (which also folds them into its look-up tables) and
:class:`~loopexpose.methods.semantic.network.SemanticNet`. Measured in ``bench/exposure_floor.py``.

Images are ``(B, 3, H, W)`` sRGB in [0, 1] unless named otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from loopexpose.baselines import MID_GREY, mean_luma
from loopexpose.io import LUMA_WEIGHTS
from loopexpose.metrics import BRIGHT_LEVEL


def finish(images: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """One exposure change: ``(B, 3, H, W)`` sRGB in [0, 1] scaled by ``gain`` ``(B,)`` in linear light, with
    Reinhard's roll-off whose white point is the gain (so white stays white and nothing clips); gain 1 is the
    identity.

    >>> round(finish(torch.full((1, 3, 1, 1), 0.2), torch.tensor([2.0]))[0, 0, 0, 0].item(), 3)
    0.279
    >>> [round(v, 5) for v in finish(torch.ones(1, 3, 1, 1), torch.tensor([4.0])).flatten().tolist()]
    [1.0, 1.0, 1.0]
    """
    import kornia

    return _finish_linear(kornia.color.rgb_to_linear_rgb(images.clamp(0, 1)), gain)


def _finish_linear(linear: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """:func:`finish` of images already in linear light (``(B, 3, H, W)``), returning sRGB."""
    import kornia

    gain = gain.view(-1, 1, 1, 1).to(linear)
    return kornia.color.linear_rgb_to_rgb(roll_off(linear * gain, gain).clamp(0, 1))


def roll_off(scaled: torch.Tensor, white: torch.Tensor) -> torch.Tensor:
    """Reinhard's extended tone curve of linear values ``scaled`` with white point ``white`` (broadcast): ``white``
    maps to 1, small values keep their scale. What :func:`finish` and CurveGrid's exposure prior brighten with."""
    return scaled * (1 + scaled / white**2) / (1 + scaled)


#: Where the exposure floor aims between the network's own level (1) and mid-grey (0), in log luma
#: (:func:`exposure_rules`).
FLOOR_WEIGHT = 0.5

#: Weight of the plain exposure in a dark frame's result (:func:`exposure_rules`): the result is
#: ``lerp(network result, input exposed to the same mean luma, EXPOSURE_BLEND)``. Why: the fusion-trained curves
#: lift shadows and compress highlights as an exposure fusion does, while the well-exposed photo of the scene is
#: the camera's own rendering of more light: at the same mean luma, one linear-light gain of the input scores
#: higher SSIM on dark frames (noise and local contrast kept as the camera's) and the curves higher PSNR on
#: frames two or more stops under; half of each beat both on the training split's 109 scenes as on the
#: validation ones, for -1 and -2 EV frames alike (``bench/exposure_floor.py``). Bright frames keep the curves
#: alone: darkening by a gain turns clipped white grey and cost them PSNR and SSIM.
EXPOSURE_BLEND = 0.5


def expose_to_mid_grey(images: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` sRGB in [0, 1] re-exposed so that each image's exposure key (:func:`exposure_key`) is
    linear mid-grey: one gain in linear light, clipped as a longer exposure clips. Same shape and range."""
    import kornia

    key = exposure_key((images * images.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)).sum(1))
    gain = (MID_GREY_LINEAR / key).view(-1, 1, 1, 1)
    return kornia.color.linear_rgb_to_rgb((kornia.color.rgb_to_linear_rgb(images) * gain).clamp(0, 1))


def floor_gain(input_luma: torch.Tensor, output: torch.Tensor, level: torch.Tensor, steps: int = 6) -> torch.Tensor:
    """The gain of :func:`finish` that brings a frame darker than mid-grey up to ``level``: ``(B,)``, 1 where the
    input was not darker than mid-grey or its output is already as bright.

    Why: trained on pseudo-labels, the network corrects a dark frame to a darker result than the same scene's
    brighter frames (measured on the validation brackets: corrected -2 EV frames 0.2 EV below their reference
    frame, over-exposed ones on it), so the frames of one bracket disagree. ``level`` comes from what the
    network itself gives the scene at a normal exposure (:func:`exposure_rules`), so a night scene stays
    darker than a day scene; a fixed mid-grey target cost night scenes up to 6 dB.

    Args:
        input_luma: ``(B,)`` mean Rec. 601 luma of each input.
        output: ``(B, 3, h, w)`` the corrected thumbnails, sRGB in [0, 1].
        level: ``(B,)`` target mean luma.
        steps: fixed-point iterations (the mean luma goes about as the gain to the power 1/2.2).

    >>> dark = torch.full((1, 3, 4, 4), 0.3)
    >>> round(mean_luma(finish(dark, floor_gain(torch.tensor([0.2]), dark, torch.tensor([0.45])))).item(), 3)
    0.45
    >>> floor_gain(torch.tensor([0.6]), dark, torch.tensor([0.45])).item()  # the input was bright: no floor
    1.0
    """
    import kornia

    gain = torch.ones_like(input_luma)
    darker = input_luma < MID_GREY
    linear = kornia.color.rgb_to_linear_rgb(output.clamp(0, 1))  # once: only the gain changes between steps
    for _ in range(steps):
        mean = mean_luma(_finish_linear(linear, gain)).flatten().clamp_min(1e-4)
        gain = torch.where(darker, (gain * (level / mean) ** 2.2).clamp(1, 64), gain)
    return gain


def expose_to_level(images: torch.Tensor, level: torch.Tensor, steps: int = 12) -> torch.Tensor:
    """``(B, 3, H, W)`` sRGB in [0, 1], each exposed to the mean luma ``level`` ``(B,)`` by one gain in linear light:
    brightening with :func:`finish`'s roll-off (white stays white), darkening as a plain gain (clipped white turns
    grey, as a shorter exposure would not: the information is gone). Same shape and range.

    A yardstick rather than a correction (``bench/label_gap.py``, ``bench/exposure_floor.py``, the trainer's
    validation): exposed to the level of what they are scored against, results are compared in tone, colour and
    detail alone. Brightening is not the inverse of darkening (the roll-off compresses highlights, darkening keeps
    their shape). ``steps`` fixed-point iterations on the gain (the mean luma goes about as the gain to the power
    1/2.2).

    >>> image = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.3
    >>> round(mean_luma(expose_to_level(image, torch.tensor([0.5]))).item(), 3)
    0.5
    >>> round(mean_luma(expose_to_level(image, torch.tensor([0.05]))).item(), 3)
    0.05
    """
    import kornia

    linear = kornia.color.rgb_to_linear_rgb(images.clamp(0, 1))
    gain = torch.ones(len(images), dtype=images.dtype, device=images.device)
    exposed = images.clone()
    for _ in range(steps):
        up = gain >= 1  # each image through its own branch only
        if bool(up.any()):
            exposed[up] = _finish_linear(linear[up], gain[up])
        if not bool(up.all()):
            down = ~up
            exposed[down] = kornia.color.linear_rgb_to_rgb((linear[down] * gain[down].view(-1, 1, 1, 1)).clamp(0, 1))
        gain = gain * (level.to(gain) / mean_luma(exposed).flatten().clamp_min(1e-4)) ** 2.2
    return exposed


#: Linear mid-grey (sRGB 118/255, the evaluation's mid-grey): where CurveGrid's prior curve and
#: :func:`expose_to_mid_grey` put an image's key.
MID_GREY_LINEAR = 0.18


def srgb_to_linear(values: torch.Tensor) -> torch.Tensor:
    """Inverse sRGB transfer of ``(B, K)`` values (``kornia.color.rgb_to_linear_rgb``, which wants RGB images)."""
    import kornia

    return kornia.color.rgb_to_linear_rgb(values[:, None, None].expand(-1, 3, 1, -1))[:, 0, 0]


def exposure_key(luma: torch.Tensor) -> torch.Tensor:
    """``(B, h, w)`` Rec. 601 luma of thumbnails in [0, 1] -> ``(B,)`` exposure key: their mean (the statistic
    that picks the evaluation's reference frame and that the ``gain`` baseline matches) as linear light.
    CurveGrid's prior gain and :func:`expose_to_mid_grey` move it to mid-grey.

    (The median of linear luma, exposure-invariant in theory, was tried: the fused labels' brightness follows
    the mean far better, 19.6 against 17.4 dB PSNR of the untrained prior to the validation labels.)

    >>> round(exposure_key(torch.full((1, 2, 2), 0.5)).item(), 3)  # sRGB 0.5 is linear 0.214
    0.214
    """
    return srgb_to_linear(luma.flatten(1).mean(1, keepdim=True).clamp(1 / 255, 1))[:, 0]


#: Smallest-channel levels between which a pixel's own colour gives way to a neutral change (see
#: :func:`highlight_weight`); fully at the level the highlight chroma metric calls bright.
HIGHLIGHT_RAMP = (0.7, BRIGHT_LEVEL)


def highlight_weight(x: torch.Tensor) -> torch.Tensor:
    """How far each pixel is a highlight without reliable hue: ``(B, 3, H, W)`` in [0, 1] -> ``(B, 1, H, W)``.

    0 while the smallest channel is below ``HIGHLIGHT_RAMP[0]``, rising linearly to 1 at ``HIGHLIGHT_RAMP[1]``
    (0.85, the level of :func:`loopexpose.metrics.highlight_chroma_added`): a pixel bright in every channel is
    clipped or nearly, and a per-channel correction would only invent a colour for it.

    >>> highlight_weight(torch.tensor([0.9, 0.95, 1.0]).view(1, 3, 1, 1)).item()
    1.0
    >>> highlight_weight(torch.tensor([0.5, 1.0, 1.0]).view(1, 3, 1, 1)).item()
    0.0
    """
    low, high = HIGHLIGHT_RAMP
    return ((x.amin(dim=1, keepdim=True) - low) / (high - low)).clamp(0, 1)


def neutral_highlights(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Highlights without reliable hue changed neutrally: where ``x`` is bright in every channel
    (:func:`highlight_weight`), ``out`` gives way to ``x`` scaled by one number, the change of mean luma there, so
    a clipped white sky comes out white or grey, never tinted. ``x``, ``out``: ``(B, 3, H, W)`` in [0, 1]; returns
    the same shape. Exact on any tile.

    >>> x = torch.ones(1, 3, 1, 1); out = torch.tensor([0.9, 0.8, 1.0]).view(1, 3, 1, 1)  # a tinted white
    >>> [round(v, 3) for v in neutral_highlights(x, out).flatten().tolist()]
    [0.853, 0.853, 0.853]
    """
    weights = x.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
    ratio = (out * weights).sum(1, keepdim=True) / (x * weights).sum(1, keepdim=True).clamp_min(1e-3)
    return torch.lerp(out, (x * ratio).clamp(0, 1), highlight_weight(x))


def exposure_rules(
    thumb: torch.Tensor, result: torch.Tensor, correct: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The rules' numbers for a batch, found on thumbnails.

    Args:
        thumb: ``(B, 3, h, w)`` input thumbnails.
        result: ``(B, 3, h, w)`` the network's result on them (no rules).
        correct: the network alone (no rules) on other thumbnails: ``(B, 3, h, w)`` -> ``(B, 3, h, w)``; called
            once, on ``thumb`` exposed to mid-grey, and only when a frame is darker than mid-grey.
    Returns:
        ``(gain, exposure, blend)``, each ``(B,)``: the floor's gain of the result (:func:`finish`; 1: none), the
        gain that exposes the input to the floored result's mean luma, and the blend weight (0: none).
    """
    mean = mean_luma(thumb).flatten()
    ones = torch.ones_like(mean)
    darker = mean < MID_GREY
    if not bool(darker.any()):
        return ones, ones, torch.zeros_like(mean)
    level = mean_luma(correct(expose_to_mid_grey(thumb))).flatten()
    gain = floor_gain(mean, result, level**FLOOR_WEIGHT * MID_GREY ** (1 - FLOOR_WEIGHT))
    exposure = floor_gain(mean, thumb, mean_luma(finish(result, gain)).flatten())
    return gain, exposure, torch.where(darker, EXPOSURE_BLEND, 0.0).to(mean)


def apply_exposure_rules(
    x: torch.Tensor, out: torch.Tensor, gain: torch.Tensor, exposure: torch.Tensor, blend: torch.Tensor
) -> torch.Tensor:
    """Apply :func:`exposure_rules`' numbers at any resolution: ``x`` the input and ``out`` the network's result,
    ``(B, 3, H, W)`` (or the same rows of both); returns the final result, same shape. Exact on any tile."""
    if bool((gain != 1).any()):
        out = _finish_by_table(out, gain)
    if bool((blend > 0).any()):
        out = torch.lerp(out, _finish_by_table(x, exposure), blend.view(-1, 1, 1, 1).to(out))
    return out


def _finish_by_table(images: torch.Tensor, gain: torch.Tensor, size: int = 4097) -> torch.Tensor:
    """:func:`finish` through a table of ``size`` samples per image, linearly interpolated: within 1e-5 of it, and
    twice as fast on whole photos (the sRGB transfer's powers are the cost)."""
    b = images.shape[0]
    ramp = torch.linspace(0, 1, size, device=images.device, dtype=images.dtype).view(1, 1, 1, size)
    table = finish(ramp.expand(b, 3, 1, size), gain)[:, 0, 0]  # (B, size): the same curve for R, G and B
    position = images.clamp(0, 1).reshape(b, -1) * (size - 1)
    low = position.floor().clamp_(max=size - 2)
    index = low.long()
    return torch.lerp(table.gather(1, index), table.gather(1, index + 1), position - low).view_as(images)
