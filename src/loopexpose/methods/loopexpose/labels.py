"""LoopExpose's pseudo-labels, the lower level of the nested loop: the Mertens fusion of a bracket.

During warm-up a bracket's label is the fusion of its input frames; after warm-up the network's own corrected
frames (no gradient) are fed back into the fusion, with the inputs by default, so the labels improve as the
network improves. Every frame of the bracket is supervised by its bracket's label.

A fusion's overall brightness is a by-product of its weights (a blend of frames from -2 to +2 EV lands wherever
its weights put it), so the label takes its exposure from the bracket itself: it is re-exposed to the mean luma
of the bracket's frame nearest mid-grey, the frame the camera's meter would have picked (:func:`anchor_exposure`).
Measured on the validation scenes (long side 384, `bench/label_exposure.py`): the fused label is 20.5 dB from that
frame, the anchored label 23.9 dB; local tone, detail and colour stay the fusion's.
"""

from __future__ import annotations

import torch

from loopexpose import fusion
from loopexpose.errors import LoopExposeError
from loopexpose.methods.loopexpose.network import finish, mean_luma


def anchor_exposure(label: torch.Tensor, anchor: torch.Tensor, steps: int = 16) -> torch.Tensor:
    """Re-expose ``label`` ``(B, 3, H, W)`` to the mean luma of ``anchor`` ``(B, 3, H, W)``, both sRGB in [0, 1].

    One gain per image in linear light, found by bisection on its logarithm (the mean luma grows with the gain;
    ``steps`` halvings of 2^-6..2^6, so within 0.1 % of the gain): a gain above 1 with
    Reinhard's roll-off (:func:`~loopexpose.methods.loopexpose.network.finish`: white stays white and nothing
    clips, so highlights keep their hue), a gain below 1 plainly (nothing can clip).

    >>> label = torch.full((1, 3, 4, 4), 0.3)
    >>> round(mean_luma(anchor_exposure(label, torch.full((1, 3, 4, 4), 0.5))).item(), 3)
    0.5
    """
    import kornia

    linear = kornia.color.rgb_to_linear_rgb(label.clamp(0, 1))

    def expose(gain: torch.Tensor) -> torch.Tensor:
        darker = kornia.color.linear_rgb_to_rgb(linear * gain.clamp(max=1).view(-1, 1, 1, 1))
        return torch.where((gain >= 1).view(-1, 1, 1, 1), finish(label, gain.clamp(min=1)), darker)

    level = mean_luma(anchor).flatten()
    low, high = torch.full_like(level, -6.0), torch.full_like(level, 6.0)
    for _ in range(steps):
        middle = (low + high) / 2
        brighter = mean_luma(expose(2**middle)).flatten() < level
        low, high = torch.where(brighter, middle, low), torch.where(brighter, high, middle)
    return expose(2 ** ((low + high) / 2))


def pseudo_label(
    frames: torch.Tensor,
    preset: str,
    reference: torch.Tensor,
    corrected: torch.Tensor | None = None,
    mode: str = "",
) -> torch.Tensor:
    """The lower level: Mertens fusion of a batch of brackets, re-exposed to each bracket's reference frame.

    Args:
        frames: ``(B, k, 3, H, W)`` input frames in [0, 1].
        preset: fusion preset name (``loopexpose.fusion.PRESETS``).
        reference: ``(B,)`` int, the window index of each bracket's frame nearest mid-grey (its exposure anchor).
        corrected: ``(B, k, 3, H, W)`` the network's corrected frames (feedback stage) or ``None`` (warm-up).
        mode: ``"corrected+inputs"`` or ``"corrected"`` for the feedback stage.
    Returns:
        ``(B, 3, H, W)`` in [0, 1].
    """
    with torch.no_grad():
        if corrected is None:
            stack = frames
        elif mode == "corrected":
            stack = corrected
        elif mode == "corrected+inputs":
            stack = torch.cat([corrected, frames], dim=1)
        else:
            raise LoopExposeError(f"fusion.feedback must be 'corrected+inputs' or 'corrected', got {mode!r}")
        fused = fusion.fuse(stack, preset=preset).clamp(0, 1)
        anchor = frames[torch.arange(frames.shape[0], device=frames.device), reference.to(frames.device)]
        return anchor_exposure(fused, anchor)
