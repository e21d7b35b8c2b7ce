"""LoopExpose's pseudo-labels, the lower level of the nested loop: the Mertens fusion of a bracket.

During warm-up a bracket's label is the fusion of its input frames; after warm-up the network's own corrected
frames (no gradient) are fed back into the fusion, with the inputs by default, so the labels improve as the
network improves. Every frame of the bracket is supervised by its bracket's label.
"""

from __future__ import annotations

import torch

from loopexpose import fusion
from loopexpose.errors import LoopExposeError


def pseudo_label(frames: torch.Tensor, preset: str, corrected: torch.Tensor | None = None, mode: str = "") -> torch.Tensor:
    """The lower level: Mertens fusion of a batch of brackets, clamped to [0, 1].

    Args:
        frames: ``(B, k, 3, H, W)`` input frames in [0, 1].
        preset: fusion preset name (``loopexpose.fusion.PRESETS``).
        corrected: ``(B, k, 3, H, W)`` the network's corrected frames (feedback stage) or ``None`` (warm-up).
        mode: ``"corrected+inputs"`` or ``"corrected"`` for the feedback stage.
    Returns:
        ``(B, 3, H, W)``.
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
        return fusion.fuse(stack, preset=preset).clamp(0, 1)
