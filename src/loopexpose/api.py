"""The top-level Python API: ``loopexpose.load`` (a correction model) and ``loopexpose.fuse`` (exposure fusion,
optionally of corrected frames: the LoopExpose multi-exposure-fusion result).

>>> import numpy as np, torch, loopexpose
>>> frames = torch.linspace(0.2, 0.8, 3).view(3, 1, 1, 1).expand(3, 3, 16, 24)  # a tiny 3-frame bracket
>>> loopexpose.fuse(frames).shape
torch.Size([3, 16, 24])
>>> loopexpose.fuse([np.full((16, 24, 3), v, np.uint8) for v in (40, 120, 220)]).dtype
dtype('uint8')
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from loopexpose.errors import LoopExposeError
from loopexpose.inputs import Given, as_frame_pixels, as_pixels, restore


def fuse(
    frames,
    model=None,
    preset: str = "opencv",
    device: str | torch.device | None = None,
    align: bool = False,
    deghost: bool = False,
    overwrite_frames: bool = False,
):
    """Exposure fusion of one bracket: plain Mertens, or with a ``model`` the LoopExpose MEF result.

    With a model, every frame is corrected with it and the corrected frames are fused together with the inputs
    (:func:`loopexpose.fusion.loop_fuse`: tone from the corrected frames, detail from the inputs); without a
    model this is plain Mertens fusion of the inputs with ``preset`` weights. With ``deghost``, things that
    moved between the frames come from the reference frame (the one nearest mid-grey) instead of appearing as
    semi-transparent ghosts (:func:`loopexpose.deghost.remove_ghosts`, before any correction).

    Args:
        frames: one bracket, as any of
            - a tensor ``(N, 3, H, W)`` (or a batch ``(B, N, 3, H, W)``), float in ``[0, 1]`` or uint8;
            - a sequence of numpy arrays ``(H, W, 3)`` (uint8, uint16 or float in ``[0, 1]``), or of PIL images
              (8-bit modes, 16-bit grey ``I;16``), all of one size and one dtype, in any order of exposure
              (fusion does not depend on the order); :mod:`loopexpose.inputs` has the whole contract;
            - a scene folder, or a sequence of image file paths of one scene (ordered darkest first and read
              with :func:`loopexpose.brackets.read_bracket`).
        model: ``None`` (no correction), a model from :func:`loopexpose.load`, a bundled model name or a
            ``.safetensors`` path (loaded on ``device``), or any callable mapping ``(N, 3, H, W)`` frames in
            ``[0, 1]`` to corrected frames of the same shape.
        preset: plain fusion's weights (without a model), ``"opencv"`` (``cv2.createMergeMertens()``
            defaults, as LoopExpose uses for its labels) or ``"mertens"`` (also well-exposedness), see
            :data:`loopexpose.fusion.PRESETS`.
        device: where to fuse (default: the tensor's device, else the model's, else the CPU).
        align: register the frames of a handheld bracket first (:func:`loopexpose.brackets.align.align_frames`:
            every frame warped onto the one nearest mid-grey, the borders cropped to the region all frames
            cover, so the result is a little smaller than the frames). A frame that cannot be aligned is left out
            with an :class:`~loopexpose.brackets.align.AlignmentWarning` naming it. One bracket only, not a batch.
        deghost: remove ghosts of moving objects (people, leaves, water, cars). The frames must be aligned (``align``, which runs first).
        overwrite_frames: a tensor given as ``frames`` may be overwritten: ``deghost`` then writes the ghost-free
            frames over it instead of into a copy of the bracket (at 12 MP, 5 frames are 0.7 GB and about 0.5 s).
            Frames read from files, given as arrays or PIL images, or converted, moved or aligned here are
            overwritten anyway (they are a copy already); a tensor whose elements share memory (``expand``) never.

    Returns:
        The fused image clipped to ``[0, 1]``, of the kind given: a tensor ``(3, H, W)`` (``(B, 3, H, W)`` for a
        batch) of the frames' dtype for tensors; an ``(H, W, 3)`` array of the frames' dtype for arrays; a PIL
        image of the frames' mode for PIL images (``RGB`` for ``RGBA`` and other colour modes, ``L`` for ``LA``:
        a fusion has no alpha); an ``(H, W, 3)`` float32 array in ``[0, 1]`` for files and folders (ready for
        :func:`loopexpose.io.write_image`).

    Raises:
        LoopExposeError: unreadable files, frames of different sizes or mixed dtypes, frames outside the input
            contract (int64 arrays, floats in 0..255, NaN, ...), an unknown model or preset, ``align`` with a
            batch of brackets.
    """
    from loopexpose import fusion, io

    if preset not in fusion.PRESETS:
        raise LoopExposeError(f"unknown fusion preset {preset!r} (choose one of {', '.join(sorted(fusion.PRESETS))})")
    kind, tensor, given, names = _as_bracket(frames)
    if align:
        tensor = _aligned(tensor, names)
    if isinstance(model, (str, os.PathLike)):
        from loopexpose.models import load

        model = load(model, device or "cpu")
    if device is not None:
        from loopexpose.models import resolve_device

        tensor = tensor.to(resolve_device(device))
    elif kind != "tensor" and model is not None and isinstance(model, torch.nn.Module):
        tensor = tensor.to(next(model.parameters()).device)
    corrector = _corrector(model)
    with torch.no_grad():
        weights = None
        if deghost:
            from loopexpose.deghost import remove_ghosts

            # Frames that are not the caller's memory are ours to change: no copy of the bracket.
            ours = overwrite_frames or not isinstance(frames, torch.Tensor) or not _shares_memory(tensor, frames)
            tensor, weights = remove_ghosts(tensor, out=tensor if ours and not _overlaps_itself(tensor) else None)
        if corrector is None:
            fused = fusion.fuse(tensor, preset=preset, frame_weights=weights).clamp_(0, 1)
        else:
            corrected = fusion.correct_frames(tensor, corrector)
            fused = fusion.loop_fuse(tensor, corrected, frame_weights=weights).clamp_(0, 1)
    if kind == "tensor":
        return restore(fused, given)
    pixels = io.to_numpy(fused)
    return pixels if kind == "files" else restore(pixels, given)


def _shares_memory(tensor: torch.Tensor, given: torch.Tensor) -> bool:
    """Whether ``tensor`` lies in the memory of the caller's ``given`` (not converted, moved or aligned here)."""
    return tensor.device == given.device and tensor.untyped_storage().data_ptr() == given.untyped_storage().data_ptr()


def _overlaps_itself(tensor: torch.Tensor) -> bool:
    """Whether elements of ``tensor`` may share memory (``expand``), so that it cannot be written in place.

    >>> _overlaps_itself(torch.zeros(2, 3, 4, 5)), _overlaps_itself(torch.zeros(2, 1, 4, 5).expand(2, 3, 4, 5))
    (False, True)
    """
    span = 0  # the extent of the dimensions with smaller strides: a larger stride must step past it
    for stride, size in sorted((s, n) for s, n in zip(tensor.stride(), tensor.shape) if n > 1):
        if stride <= span:
            return True
        span += stride * (size - 1)
    return False


def _aligned(frames: torch.Tensor, names: list[str] | None) -> torch.Tensor:
    """The bracket ``(N, 3, H, W)`` registered and cropped (:func:`loopexpose.brackets.align.align_frames`)."""
    from loopexpose.brackets.align import align_frames

    if frames.ndim != 4:
        raise LoopExposeError(f"align=True takes one bracket (N, 3, H, W), not a batch {tuple(frames.shape)}")
    return align_frames(frames, names=names).frames


def _corrector(model) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A function ``(N, 3, H, W) -> (N, 3, H, W)`` from a model (its ``correct``, which is tiled on the CPU and
    never depends on the batch) or a plain callable; ``None`` for no model."""
    if model is None:
        return None
    correct = getattr(model, "correct", None)
    if correct is not None:
        def run(x: torch.Tensor) -> torch.Tensor:
            return correct(x)

        run.device = getattr(model, "device", None)  # fusion.correct_frames sends the frames there
        return run
    if callable(model):
        return model
    raise LoopExposeError(
        f"model must be a loopexpose model, a model name or path, or a callable; got {type(model).__name__}"
    )


def _as_bracket(frames) -> tuple[str, torch.Tensor, Given | None, list[str] | None]:
    """``(kind, (N, 3, H, W) float tensor in [0, 1], given, names)`` from any input :func:`fuse` accepts;
    ``given`` (:mod:`loopexpose.inputs`) says how to hand the result back (``None`` for files); ``names`` are the
    frames' file names (``None`` for pixels given in memory)."""
    from loopexpose import brackets

    if isinstance(frames, torch.Tensor):
        if frames.ndim not in (4, 5) or frames.shape[-3] != 3:
            raise LoopExposeError(f"expected frames shaped (N, 3, H, W) or (B, N, 3, H, W), got {tuple(frames.shape)}")
        tensor, given = as_pixels(frames, "fuse")
        return "tensor", tensor, given, None
    if isinstance(frames, (str, os.PathLike)):
        bracket, tensor = brackets.read_bracket(Path(frames))  # ordered and loaded, each frame decoded once
        return "files", tensor, None, [path.name for path in bracket.paths]
    if not isinstance(frames, Sequence) or isinstance(frames, (str, bytes, np.ndarray)) or len(frames) == 0:
        raise LoopExposeError(
            "frames must be a tensor (N, 3, H, W), a list of arrays, PIL images or files, or a scene folder"
        )
    first = frames[0]
    if isinstance(first, (str, os.PathLike)):
        paths = [Path(p) for p in frames]
        bracket, tensor = brackets.read_bracket(paths[0].parent, paths)
        return "files", tensor, None, [path.name for path in bracket.paths]
    arrays, given = as_frame_pixels(frames, "fuse")
    if given.kind == "pil":  # a fused image has no alpha: RGBA frames give RGB, LA frames L
        given = replace(given, alpha=None)
    scale = {np.dtype(np.uint8): 1 / 255, np.dtype(np.uint16): 1 / 65535}.get(arrays[0].dtype, 1.0)
    stack = np.stack(arrays).astype(np.float32) * np.float32(scale)
    kind = "pil" if given.kind == "pil" else "numpy"
    return kind, torch.from_numpy(np.clip(stack, 0, 1).transpose(0, 3, 1, 2).copy()), given, None
