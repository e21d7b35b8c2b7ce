"""The images the Python API accepts, in one place: what ``model.correct`` and ``loopexpose.fuse`` take, how
each kind becomes pixels in ``[0, 1]``, and how a result goes back to the kind, shape and dtype that was given.

Accepted:

- numpy arrays ``(H, W, 3)``: uint8 (0..255), uint16 (0..65535), float16/32/64 in ``[0, 1]``;
- tensors ``(*, 3, H, W)``: uint8 (0..255), float16/bfloat16/32/64 in ``[0, 1]``;
- PIL images: ``RGB``, ``L``, ``RGBA``, ``LA`` and the other 8-bit modes Pillow converts to RGB (``P``, ``1``,
  ``CMYK``, ``YCbCr``, ...), and 16-bit grey ``I;16`` (also ``I;16L``, ``I;16B``, ``I;16N``) as 0..65535.

Float values must be finite and lie in ``[0, 1]``; up to :data:`FLOAT_SLACK` outside (resampling overshoot,
rounding) is clipped. Everything else raises :class:`~loopexpose.errors.LoopExposeError` naming what was given:
other integer dtypes (int8..int64, uint32, uint64: their scale is unknown, guessing gives garbage), bool,
complex and object dtypes, NaN or infinite values, floats outside ``[0, 1]`` (such as 0..255), empty images,
PIL ``I`` (32-bit integer) and ``F`` (32-bit float) images, whose range is not defined.

Results come back as given: same kind, shape and dtype; PIL images keep their mode (``RGBA`` and ``LA`` keep
their alpha) except the modes without a lossless way back (``P``, ``1``, ``CMYK``, ...), which come back ``RGB``.

>>> import numpy as np
>>> pixels, given = as_pixels(np.full((2, 3, 3), 0.5))
>>> pixels.dtype, given.dtype
(dtype('float32'), dtype('float64'))
>>> as_pixels(np.zeros((2, 3, 3), np.int64))
Traceback (most recent call last):
...
loopexpose.errors.LoopExposeError: cannot correct an int64 array of shape (2, 3, 3): integer images must be uint8 (0..255) or uint16 (0..65535); convert it first, e.g. array.astype(np.uint8) for 0..255 data
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from loopexpose.errors import LoopExposeError

FLOAT_SLACK = 0.01
"""Float pixels may stray this far outside ``[0, 1]`` (resampling overshoot) and are clipped; further is an error."""

ARRAY_SCALES = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}
"""Integer numpy dtypes accepted, with the value that means white (float16/32/64 mean white at 1.0)."""
TENSOR_SCALES = {torch.uint8: 255}
"""Integer tensor dtypes accepted (floating tensors of any precision mean white at 1.0)."""
PIL_16_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
"""16-bit grey PIL modes, read as uint16 0..65535 (Pillow's own ``convert("RGB")`` would saturate them)."""
PIL_UNDEFINED = {"I": "32-bit integer", "F": "32-bit float"}
"""PIL modes refused: their pixels have no agreed white level."""
PIL_KEPT = ("RGB", "L", "RGBA", "LA", "I;16")
"""PIL modes a result comes back in; other accepted modes come back ``RGB``."""


@dataclass(frozen=True)
class Given:
    """What the caller gave, enough to hand a result back in the same form.

    ``kind`` is ``"numpy"``, ``"tensor"`` or ``"pil"``; ``dtype`` the numpy or torch dtype given (for PIL the
    working dtype, uint8 or uint16); ``mode`` the PIL mode; ``alpha`` the PIL alpha channel, if any.
    """

    kind: str
    dtype: object
    mode: str = ""
    alpha: object = None


def describe(image) -> str:
    """``"an int64 array of shape (4, 4, 3)"``, ``"a PIL image of mode 'F' (4x3)"``: what was given, for errors."""
    if isinstance(image, np.ndarray):
        return _article(f"{image.dtype} array of shape {image.shape}")
    if isinstance(image, torch.Tensor):
        return _article(f"{str(image.dtype).removeprefix('torch.')} tensor of shape {tuple(image.shape)}")
    if _is_pil(image):
        return f"a PIL image of mode {image.mode!r} ({image.size[0]}x{image.size[1]})"
    return _article(f"object of type {type(image).__name__}")


def as_pixels(image, action: str = "correct", label: str = "") -> tuple[np.ndarray | torch.Tensor, Given]:
    """Check one image against the contract above and return ``(pixels, given)``.

    Args:
        image: a numpy array, a PIL image or a tensor.
        action: the verb of error messages (``"cannot correct ..."``, ``"cannot fuse ..."``).
        label: names the image in error messages (``"frame 2"``).
    Returns:
        ``pixels``: for arrays and PIL images an ``(H, W, 3)`` array, uint8 or uint16 as given (16-bit grey PIL:
        uint16) or float32 in ``[0, 1]`` for floats; for tensors a floating tensor in ``[0, 1]`` (uint8 scaled
        to float32, floats keep their dtype). ``given``: pass it to :func:`restore` with the result.
    Raises:
        LoopExposeError: anything outside the contract, naming what was given and why.
    """
    if isinstance(image, torch.Tensor):
        return _tensor_pixels(image, action, label)
    if isinstance(image, np.ndarray):
        return _array_pixels(image, action, label), Given("numpy", image.dtype)
    if _is_pil(image):
        return _pil_pixels(image, action, label)
    raise _refuse(image, action, label, "expected a numpy array (H, W, 3), a PIL image or a tensor (*, 3, H, W)")


def as_frame_pixels(frames: Sequence, action: str = "fuse") -> tuple[list[np.ndarray], Given]:
    """``as_pixels`` of every frame of a bracket given as arrays or PIL images, which must share one kind and one
    dtype (or PIL mode family) and one size: a uint8 frame beside a uint16 one has no common scale."""
    checked = [as_pixels(frame, action, f"frame {i}") for i, frame in enumerate(frames)]
    kinds = {given.kind for _, given in checked}
    if "tensor" in kinds:
        raise LoopExposeError(f"cannot {action} a list holding tensors: stack them into one (N, 3, H, W) tensor")
    if len(kinds) > 1:
        raise LoopExposeError(f"cannot {action} frames of mixed kinds ({', '.join(sorted(kinds))}): give one kind")
    if len({given.dtype for _, given in checked}) > 1:
        names = dict.fromkeys(str(given.dtype) if given.kind == "numpy" else given.mode for _, given in checked)
        raise LoopExposeError(
            f"cannot {action} frames of mixed dtypes ({', '.join(names)}): give every frame the same dtype"
        )
    shapes = list(dict.fromkeys(pixels.shape for pixels, _ in checked))
    if len(shapes) > 1:
        raise LoopExposeError(f"frames must all be (H, W, 3) arrays of one size, got shapes {shapes}")
    return [pixels for pixels, _ in checked], checked[0][1]


def restore(result, given: Given):
    """A result (pixels of :func:`as_pixels`' working dtype, or floats in ``[0, 1]``) in the form ``given``."""
    if given.kind == "tensor":
        if given.dtype == torch.uint8:
            return (result.float().clamp(0, 1) * 255).round_().to(torch.uint8)
        return result.to(given.dtype)
    dtype = np.dtype(given.dtype)
    if result.dtype != dtype:
        if dtype in ARRAY_SCALES and result.dtype.kind == "f":
            result = (np.clip(result, 0, 1) * np.float32(ARRAY_SCALES[dtype]) + np.float32(0.5)).astype(dtype)
        else:
            result = result.astype(dtype)
    if given.kind == "numpy":
        return result
    return _to_pil(result, given)


# ----------------------------------------------------------------------------------------------- per kind


def _array_pixels(array: np.ndarray, action: str, label: str) -> np.ndarray:
    dtype = array.dtype
    if dtype not in ARRAY_SCALES and dtype.kind != "f":
        raise _refuse(array, action, label, _dtype_reason(dtype.kind, "array.astype(np.uint8) for 0..255 data"))
    if array.ndim != 3 or array.shape[2] != 3:
        raise _refuse(array, action, label, "expected an (H, W, 3) RGB array", shape_first=True)
    if array.size == 0:
        raise _refuse(array, action, label, "the image is empty")
    if dtype in ARRAY_SCALES:
        return array
    lo, hi = float(array.min()), float(array.max())
    _check_float_range(array, lo, hi, action, label)
    array = array.astype(np.float32, copy=False)
    return np.clip(array, 0, 1) if lo < 0 or hi > 1 else array


def _tensor_pixels(tensor: torch.Tensor, action: str, label: str) -> tuple[torch.Tensor, Given]:
    dtype = tensor.dtype
    if dtype not in TENSOR_SCALES and not dtype.is_floating_point:
        kind = "b" if dtype == torch.bool else "c" if dtype.is_complex else "i"
        raise _refuse(tensor, action, label, _dtype_reason(kind, "tensor.to(torch.uint8) for 0..255 data", tensor=True))
    if tensor.ndim < 3 or tensor.shape[-3] != 3:
        raise _refuse(tensor, action, label, "expected a (*, 3, H, W) tensor", shape_first=True)
    if tensor.numel() == 0:
        raise _refuse(tensor, action, label, "the image is empty")
    given = Given("tensor", dtype)
    if dtype in TENSOR_SCALES:
        return tensor.float() / TENSOR_SCALES[dtype], given
    lo, hi = (float(v) for v in torch.aminmax(tensor.detach()))
    _check_float_range(tensor, lo, hi, action, label)
    return (tensor.clamp(0, 1) if lo < 0 or hi > 1 else tensor), given


def _pil_pixels(image, action: str, label: str) -> tuple[np.ndarray, Given]:
    mode = image.mode
    if mode in PIL_UNDEFINED:
        raise _refuse(image, action, label, f"{PIL_UNDEFINED[mode]} pixels have no defined white level; convert the "
                      "image to a uint16, or a float numpy array in [0, 1], first")  # fmt: skip
    if image.size[0] == 0 or image.size[1] == 0:
        raise _refuse(image, action, label, "the image is empty")
    if mode in PIL_16_BIT:
        grey = np.asarray(image).astype(np.uint16)  # native byte order whatever the mode's
        return np.repeat(grey[..., None], 3, axis=2), Given("pil", np.dtype(np.uint16), "I;16")
    alpha = image.getchannel("A") if mode in ("RGBA", "LA") else None
    try:
        rgb = np.asarray(image if mode == "RGB" else image.convert("RGB"))
    except (ValueError, OSError) as exc:  # a mode Pillow cannot convert to RGB
        raise _refuse(image, action, label, f"Pillow cannot convert it to RGB ({exc})") from None
    kept = mode if mode in PIL_KEPT else "RGB"
    return rgb, Given("pil", np.dtype(np.uint8), kept, alpha)


def _to_pil(pixels: np.ndarray, given: Given):
    from PIL import Image

    if given.mode == "I;16":
        luma = pixels.astype(np.float32) @ np.asarray([0.299, 0.587, 0.114], np.float32)
        return Image.fromarray((np.clip(luma, 0, 65535) + np.float32(0.5)).astype(np.uint16))
    out = Image.fromarray(np.ascontiguousarray(pixels.astype(np.uint8, copy=False)))
    if given.mode in ("L", "LA"):
        out = out.convert("L")
    if given.alpha is not None:
        alpha = given.alpha if given.alpha.size == out.size else given.alpha.resize(out.size, Image.Resampling.BOX)
        out.putalpha(alpha)
    return out


# ------------------------------------------------------------------------------------------------ helpers


def _check_float_range(image, lo: float, hi: float, action: str, label: str) -> None:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise _refuse(image, action, label, "it holds NaN or infinite values")
    if lo < -FLOAT_SLACK or hi > 1 + FLOAT_SLACK:
        hint = "; divide 0..255 data by 255 (0..65535 data by 65535)" if hi > 1 + FLOAT_SLACK and lo >= 0 else ""
        raise _refuse(image, action, label, f"its values span [{lo:.4g}, {hi:.4g}] but float images must lie in "
                      f"[0, 1]{hint}")  # fmt: skip


def _dtype_reason(kind: str, example: str, tensor: bool = False) -> str:
    accepted = "uint8 (0..255) or float in [0, 1]" if tensor else "uint8 (0..255), uint16 (0..65535) or float in [0, 1]"
    if kind in "iu":
        integers = "uint8 (0..255)" if tensor else "uint8 (0..255) or uint16 (0..65535)"
        return f"integer images must be {integers}; convert it first, e.g. {example}"
    if kind == "b":
        return f"bool is not a pixel type; give {accepted}"
    return f"not a pixel type; give {accepted}"


def _refuse(image, action: str, label: str, reason: str, shape_first: bool = False) -> LoopExposeError:
    subject = describe(image)
    subject = f"{label} ({subject})" if label else subject
    if shape_first:  # keep "expected an (H, W, 3) RGB array, got shape ..." for shape errors
        shape = image.shape if isinstance(image, np.ndarray) else tuple(image.shape)
        return LoopExposeError(f"{reason}, got shape {shape}" + (f" for {label}" if label else ""))
    return LoopExposeError(f"cannot {action} {subject}: {reason}")


def _article(noun: str) -> str:
    return ("an " if noun[0] in "aeio" else "a ") + noun


def _is_pil(image) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a core dependency
        return False
    return isinstance(image, Image.Image)
