"""What every correction model offers users: ``model.correct(image)`` for arrays, PIL images and tensors."""

from __future__ import annotations

from functools import partial

import cv2
import numpy as np
import torch
from torch import nn

from loopexpose.errors import LoopExposeError
from loopexpose.inputs import as_pixels, restore


class ExposureModel(nn.Module):
    """Base class of correction networks.

    Subclasses implement ``forward(x) -> {"output": (B, 3, H, W) in [0, 1], ...}`` for ``(B, 3, H, W)`` input in
    [0, 1], set ``arch`` (their registry name) and ``config`` (a dataclass), and may override
    :meth:`correct_array` with a faster CPU path for whole photos.
    """

    arch: str = ""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def correct(self, image, max_side: int = 0):
        """Correct one photo (or a stack of tensors) and return the same kind of object.

        Args:
            image: a numpy array ``(H, W, 3)`` of uint8, uint16 or float in [0, 1]; a PIL image (8-bit modes,
                16-bit grey ``I;16``); or a tensor ``(*, 3, H, W)``, uint8 or float in [0, 1] (each image is
                corrected on its own, on the model's device). :mod:`loopexpose.inputs` has the whole contract.
            max_side: if > 0, downscale so the long side is at most this first (0 = full resolution).
        Returns:
            The corrected image, same kind, dtype and shape (PIL: mode; smaller if ``max_side`` applied).
        Raises:
            LoopExposeError: an input outside the contract (int64 or bool arrays, floats in 0..255, NaN, empty
                images, PIL ``I``/``F`` images, ...), naming what was given.
        """
        pixels, given = as_pixels(image, "correct")
        if given.kind == "tensor":
            return restore(self._correct_tensor(pixels, max_side), given)
        return restore(self._correct_numpy(pixels, max_side), given)

    def _correct_numpy(self, array: np.ndarray, max_side: int) -> np.ndarray:
        """``(H, W, 3)`` uint8, uint16 or float32 in [0, 1] (checked by :func:`~loopexpose.inputs.as_pixels`)."""
        if max_side and max(array.shape[:2]) > max_side:
            scale = max_side / max(array.shape[:2])
            size = (max(1, round(array.shape[1] * scale)), max(1, round(array.shape[0] * scale)))
            array = cv2.resize(array, size, interpolation=cv2.INTER_AREA)
        # A subclass's correct_array is its CPU fast path; on other devices the generic tensor path runs there.
        runner = self.correct_array if self.device.type == "cpu" else partial(ExposureModel.correct_array, self)
        return runner(np.ascontiguousarray(array))

    def correct_array(self, array: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8/uint16/float32 -> same; the default runs :meth:`forward` on the whole image."""
        scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(array.dtype, 1.0)
        x = torch.from_numpy(array.astype(np.float32) / np.float32(scale)).permute(2, 0, 1)
        y = self._correct_tensor(x, 0).permute(1, 2, 0).numpy()
        return (np.clip(y, 0, 1) * scale + 0.5).astype(array.dtype) if scale != 1.0 else y

    def _correct_tensor(self, image: torch.Tensor, max_side: int) -> torch.Tensor:
        if image.ndim < 3 or image.shape[-3] != 3:
            raise LoopExposeError(f"expected a (*, 3, H, W) tensor, got shape {tuple(image.shape)}")
        lead, (h, w) = image.shape[:-3], image.shape[-2:]
        flat = image.reshape(-1, 3, h, w)
        outputs = []
        for frame in flat:  # one at a time: results never depend on the batch, and memory stays bounded
            x = frame[None].to(self.device, torch.float32).clamp(0, 1)
            if max_side and max(h, w) > max_side:
                scale = max_side / max(h, w)
                size = (max(1, round(h * scale)), max(1, round(w * scale)))
                x = torch.nn.functional.interpolate(x, size=size, mode="area")
            outputs.append(self._correct_frame(x))
        out = torch.stack(outputs).to(image.device, image.dtype if image.is_floating_point() else torch.float32)
        return out.reshape(*lead, *out.shape[-3:])

    def _correct_frame(self, x: torch.Tensor) -> torch.Tensor:
        """``(1, 3, H, W)`` in [0, 1] on the model's device -> ``(3, H, W)``.

        On the CPU a model with its own :meth:`correct_array` (a tiled fast path) gets the frame through it, so
        tensors enjoy the same speed and bounded memory as arrays (a whole-frame :meth:`forward` at 12 MP
        allocates gigabytes); float frames are rounded to 16 bits on that path.
        """
        if x.device.type == "cpu" and type(self).correct_array is not ExposureModel.correct_array:
            pixels = x[0].permute(1, 2, 0).contiguous().numpy()
            return torch.from_numpy(self.correct_array(pixels)).permute(2, 0, 1)
        return self(x)["output"][0]
