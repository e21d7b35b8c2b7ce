"""The optional perceptual loss term: shift-tolerant LPIPS on a VGG-16 trunk, in plain torch.

ST-LPIPS (Ghildyal and Liu, "Shift-tolerant Perceptual Similarity Metric", ECCV 2022) is LPIPS (Zhang et al.
2018) on a VGG-16 made tolerant to small shifts: every 2x2 max-pool of stride 2 becomes a max-pool of stride 1
followed by a [1, 2, 1]^2 / 16 blur of stride 2 with reflect padding of 2 (anti-aliased down-sampling), and the
network was retrained for the metric. The distance between two images: both are mapped from [0, 1] to
[-1, 1] and standardised per channel (the trained ``scaling_layer``); features are taken after the last ReLU
of each of the 5 VGG stages, unit-normalised over channels at every pixel; their squared difference is weighted
per channel by a learned non-negative 1x1 convolution (``lin0..lin4``), averaged over pixels, and the 5 stages
are summed. 0 for identical images; about 0.1 to 0.7 for visibly different ones.

Weights: the ``stlpips-pytorch`` wheel (BSD-2; ``pip install 'loopexpose[perceptual]'``) ships them as
``stlpips_pytorch/weights/vST0.0/vgg_shift_tolerant.pth``. That package's own code needs torchvision (which
pulls a CUDA build of torch here), so only its weights file is used: located on disk without importing the
package's modules, and read with ``torch.load(weights_only=True)`` (tensors only, no arbitrary unpickling).
A ``.safetensors`` file with the same keys works too.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from loopexpose.errors import LoopExposeError

__all__ = ["STLPIPS", "MIN_SIDE", "PACKAGE_WEIGHTS", "package_weights", "load_stlpips"]

#: Where the ``stlpips-pytorch`` wheel keeps the shift-tolerant VGG weights, inside its package folder.
PACKAGE_WEIGHTS = Path("weights/vST0.0/vgg_shift_tolerant.pth")
#: VGG-16 convolution widths per stage; each stage but the first starts with an anti-aliased down-sampling.
#: Smallest image side: the last stage's reflect padding (2) needs at least 3 pixels there.
MIN_SIDE = 18
STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class _BlurDown(nn.Module):
    """The second half of anti-aliased down-sampling: reflect-pad 2, then a [1, 2, 1]^2 / 16 blur of stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = taps[:, None] * taps[None, :] / 16
        self.register_buffer("filt", kernel.expand(channels, 1, 3, 3).clone())  # the weights file's name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


class _Trunk(nn.Module):
    """The 5 stages as ``slice1..slice5``, modules numbered as in the weights file (conv, ReLU, ..., pool, blur)."""

    def __init__(self) -> None:
        super().__init__()
        index, channels = 0, 3
        for number, widths in enumerate(STAGES, start=1):
            stage = nn.Sequential()
            if number > 1:
                stage.add_module(str(index), nn.MaxPool2d(2, stride=1))
                stage.add_module(str(index + 1), _BlurDown(channels))
                index += 2
            for width in widths:
                stage.add_module(str(index), nn.Conv2d(channels, width, 3, padding=1))
                stage.add_module(str(index + 1), nn.ReLU())
                channels, index = width, index + 2
            self.add_module(f"slice{number}", stage)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for number in range(1, len(STAGES) + 1):
            x = getattr(self, f"slice{number}")(x)
            features.append(x)
        return features


class _Scaling(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.zeros(1, 3, 1, 1))
        self.register_buffer("scale", torch.ones(1, 3, 1, 1))


class _Linear(nn.Module):
    """Per-channel weights of one stage's squared feature difference (``lin<k>.model.1.weight``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))  # [0] was dropout


class STLPIPS(nn.Module):
    """Shift-tolerant LPIPS distance (see the module docstring); frozen, in eval mode.

    ``STLPIPS()`` has random weights (for tests); :func:`load_stlpips` gives the trained ones.

    Call it with two ``(*, 3, H, W)`` tensors in ``[0, 1]`` (H, W >= :data:`MIN_SIDE`); returns ``(*,)`` distances,
    >= 0 with the trained weights, differentiable with respect to both images.
    """

    def __init__(self) -> None:
        super().__init__()
        self.scaling_layer = _Scaling()
        self.net = _Trunk()
        for k, widths in enumerate(STAGES):
            self.add_module(f"lin{k}", _Linear(widths[-1]))
        self.requires_grad_(False)
        self.eval()

    def forward(self, image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        if image.shape != reference.shape or image.dim() < 3 or image.shape[-3] != 3:
            shapes = f"{tuple(image.shape)} and {tuple(reference.shape)}"
            raise ValueError(f"need two (*, 3, H, W) tensors of one shape, got {shapes}")
        if min(image.shape[-2:]) < MIN_SIDE:
            side = f"{MIN_SIDE}x{MIN_SIDE}"
            raise ValueError(f"images must be at least {side} for the 5 VGG stages, got {tuple(image.shape[-2:])}")
        lead = image.shape[:-3]
        both = torch.cat([image.reshape(-1, *image.shape[-3:]), reference.reshape(-1, *image.shape[-3:])])
        both = ((both * 2 - 1) - self.scaling_layer.shift) / self.scaling_layer.scale
        distance = 0
        for k, features in enumerate(self.net(both)):
            unit = features / (features.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
            first, second = unit.chunk(2)
            weighted = getattr(self, f"lin{k}").model(first.sub(second).square())
            distance = distance + weighted.mean(dim=(-3, -2, -1))
        return distance.reshape(lead)


def package_weights() -> Path | None:
    """The weights file of the installed ``stlpips-pytorch`` wheel, or ``None`` when it is not installed."""
    spec = importlib.util.find_spec("stlpips_pytorch")  # imports nothing but the package's empty __init__
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / PACKAGE_WEIGHTS
        if path.is_file():
            return path
    return None


def load_stlpips(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> STLPIPS:
    """The trained ST-LPIPS VGG distance.

    Args:
        path: a ``.pth`` (read with ``weights_only=True``) or ``.safetensors`` file with the keys of
            :class:`STLPIPS`; ``None`` or ``""``: the installed ``stlpips-pytorch`` wheel's file.
        device: where the network lives.

    Raises:
        LoopExposeError: no weights (the wheel is not installed and no path given), an unreadable file, or a
            file whose tensors do not fit the network; the message names the file.
    """
    if not path:
        path = package_weights()
        if path is None:
            raise LoopExposeError(
                "the perceptual loss needs the ST-LPIPS VGG weights: pip install 'loopexpose[perceptual]' "
                "(the stlpips-pytorch wheel), or name a weights file in loss.perceptual_weights"
            )
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is the file's problem
        raise LoopExposeError(f"cannot read perceptual weights: {exc}", path) from None
    model = STLPIPS()
    expected = model.state_dict()
    if not isinstance(state, dict) or set(state) != set(expected):
        keys = sorted(set(state) ^ set(expected)) if isinstance(state, dict) else ["(not a dict of tensors)"]
        raise LoopExposeError(f"not ST-LPIPS VGG weights: keys differ ({', '.join(keys[:4])}, ...)", path)
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor) or tensor.shape != expected[key].shape:
            raise LoopExposeError(f"not ST-LPIPS VGG weights: {key} has the wrong shape", path)
    model.load_state_dict(state)
    return model.to(device)
