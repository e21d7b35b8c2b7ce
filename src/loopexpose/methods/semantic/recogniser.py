"""Exposure-situation recognisers: is a photo, and each region of it, under-, well- or over-exposed?

Both recognisers answer ``region_logits(x, masks) -> (B, K, 3)`` and ``global_logits(x) -> (B, 3)`` with
classes ordered :data:`CLASSES`:

* :class:`ExposureRecogniser`: a small fully convolutional CNN trained by us on the shared exposure brackets,
  whose exposure order is a free label (:func:`bracket_region_labels`). The offline default.
* :class:`ClipExposureRecogniser`: CLIP (``open_clip`` or ``transformers``, from local files only) scoring
  each region crop against prompts, plus a small trainable adapter (zero-initialised, so it starts as
  zero-shot CLIP) that :func:`train_recogniser` fine-tunes on the same bracket labels.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from loopexpose.errors import LoopExposeError
from loopexpose.io import LUMA_WEIGHTS

CLASSES = ("under", "well", "over")
PROMPTS = ("an underexposed photo", "a well-exposed photo", "an overexposed photo")
MID_GREY = 0.45  # mean luma of a "well exposed" region (sRGB), used to label brackets


class ExposureRecogniser(nn.Module):
    """Fully convolutional under/well/over classifier: a logit map at 1/8 resolution, pooled per region.

    Each location sees its neighbourhood and the image's global context (concatenated pooled features), since
    whether a region is too dark depends on its surroundings as well as its own brightness.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, 2, 1), nn.GELU(), nn.Conv2d(w, 2 * w, 3, 2, 1), nn.GELU(),
            nn.Conv2d(2 * w, 2 * w, 3, 2, 1), nn.GELU(), nn.Conv2d(2 * w, 2 * w, 3, 1, 2, dilation=2), nn.GELU(),
        )  # fmt: skip
        self.classify = nn.Sequential(nn.Conv2d(4 * w, 2 * w, 1), nn.GELU(), nn.Conv2d(2 * w, len(CLASSES), 1))

    def logit_map(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> ``(B, 3, H/8, W/8)`` class logits."""
        f = self.features(x * 2 - 1)
        context = f.mean((-2, -1), keepdim=True).expand_as(f)
        return self.classify(torch.cat([f, context], 1))

    def region_logits(self, x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)``, ``(B, K, h, w)`` masks -> ``(B, K, 3)`` logits (zeros for empty regions)."""
        logits = F.interpolate(self.logit_map(x), size=masks.shape[-2:], mode="bilinear", align_corners=False)
        area = masks.sum((-2, -1))
        return torch.einsum("bkhw,bchw->bkc", masks, logits) / (area[..., None] + 1e-6)

    def global_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, 3)``."""
        return self.logit_map(x).mean((-2, -1))


def region_crops(x: torch.Tensor, masks: torch.Tensor, size: int, fill: float = 0.5) -> torch.Tensor:
    """Square crops of each region's bounding box, pixels outside the region set to ``fill``.

    Args:
        x: ``(B, 3, H, W)`` in [0, 1]; masks: ``(B, K, h, w)`` (resized to ``H, W`` if needed).
    Returns:
        ``(B, K, 3, size, size)``; an empty region gives a ``fill`` square.
    """
    if masks.shape[-2:] != x.shape[-2:]:
        masks = F.interpolate(masks, size=x.shape[-2:], mode="nearest")
    b, k = masks.shape[:2]
    crops = x.new_full((b, k, 3, size, size), fill)
    for i in range(b):
        for j in range(k):
            m = masks[i, j]
            ys, xs = torch.nonzero(m > 0.5, as_tuple=True)
            if len(ys) == 0:
                continue
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            patch = (x[i] * m + fill * (1 - m))[:, y0:y1, x0:x1]
            crops[i, j] = F.interpolate(patch[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    return crops


class ClipExposureRecogniser(nn.Module):
    """Zero-shot CLIP exposure scores with a trainable residual adapter on the image embedding.

    Args:
        encode_image: ``(N, 3, S, S)`` CLIP-normalised pixels -> ``(N, E)`` embeddings.
        text_features: ``(3, E)`` embeddings of :data:`PROMPTS`.
        image_size: ``S``; mean, std: CLIP's pixel normalisation.
    """

    def __init__(self, encode_image, text_features: torch.Tensor, image_size: int, mean, std) -> None:
        super().__init__()
        self.encode_image = encode_image
        self.register_buffer("text_features", F.normalize(text_features.detach().float(), dim=-1))
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        e = text_features.shape[-1]
        self.adapter = nn.Linear(e, e)
        nn.init.zeros_(self.adapter.weight)
        nn.init.zeros_(self.adapter.bias)
        self.logit_scale = nn.Parameter(torch.tensor(4.0))  # exp(4) ~ 55: CLIP's usual sharpness
        self.image_size = image_size

    def parameters_to_train(self) -> list[nn.Parameter]:
        return [*self.adapter.parameters(), self.logit_scale]

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` in [0, 1] -> ``(N, E)`` unit image embeddings (after the adapter)."""
        pixels = F.interpolate(pixels, size=(self.image_size,) * 2, mode="bilinear", align_corners=False)
        feats = self.encode_image((pixels - self.mean) / self.std).float()
        return F.normalize(feats + self.adapter(feats), dim=-1)

    def global_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit_scale.exp() * self.embed(x) @ self.text_features.t()

    def region_logits(self, x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        b, k = masks.shape[:2]
        crops = region_crops(x, masks, self.image_size).flatten(0, 1)
        logits = self.logit_scale.exp() * self.embed(crops) @ self.text_features.t()
        return logits.view(b, k, -1) * (masks.sum((-2, -1)) > 0)[..., None]

    def prompt_similarity(self, x: torch.Tensor, prompt: int = 1) -> torch.Tensor:
        """Cosine similarity ``(B,)`` of each image with a prompt (default "a well-exposed photo")."""
        return self.embed(x) @ self.text_features[prompt]


def load_clip(weights: str | os.PathLike, arch: str = "ViT-B-32", device: str = "cpu") -> ClipExposureRecogniser:
    """A :class:`ClipExposureRecogniser` from local CLIP files; nothing is ever downloaded.

    Args:
        weights: a ``transformers`` model folder (``config.json`` + weights + tokenizer files, as written by
            ``save_pretrained``), or an ``open_clip`` checkpoint file of architecture ``arch``.
    Raises:
        LoopExposeError: missing files, or the optional package not installed.
    """
    path = Path(weights)
    if not path.exists():
        raise LoopExposeError("CLIP weights not found", path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if path.is_dir():
        try:
            from transformers import AutoTokenizer, CLIPModel
        except ImportError:
            raise LoopExposeError("a CLIP folder needs 'transformers': pip install 'loopexpose[semantic]'", path) from None
        try:
            model = CLIPModel.from_pretrained(path, local_files_only=True).to(device).eval()
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise LoopExposeError(f"cannot load CLIP: {str(exc).splitlines()[0]}", path) from None
        tokens = tokenizer(list(PROMPTS), padding=True, return_tensors="pt").to(device)
        with torch.no_grad():
            text = _features(model.get_text_features(**tokens))

        def encode_image(pixels):
            return _features(model.get_image_features(pixel_values=pixels))

        size = model.config.vision_config.image_size
        mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    else:
        try:
            import open_clip
        except ImportError:
            raise LoopExposeError("a CLIP file needs 'open_clip_torch': pip install 'loopexpose[semantic]'", path) from None
        try:
            model = open_clip.create_model(arch, pretrained=str(path), device=device).eval()
        except (RuntimeError, ValueError, KeyError) as exc:
            raise LoopExposeError(f"cannot load open_clip {arch}: {str(exc).splitlines()[0]}", path) from None
        with torch.no_grad():
            text = model.encode_text(open_clip.get_tokenizer(arch)(list(PROMPTS)).to(device))
        encode_image = model.encode_image
        size = model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        mean = getattr(model.visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
        std = getattr(model.visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)
    for p in model.parameters():  # CLIP stays frozen; only the adapter trains
        p.requires_grad_(False)
    recogniser = ClipExposureRecogniser(encode_image, text, int(size), mean, std).to(device)
    recogniser.clip = model  # keep the module (and its device moves) reachable
    return recogniser


def _features(out) -> torch.Tensor:
    """transformers 4.x returns a tensor, 5.x may return a model output with ``pooler_output``."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def bracket_region_labels(bracket: torch.Tensor, masks: torch.Tensor, margin: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Free labels from a bracket's exposure order, per frame and per region.

    For each region, the frame whose region mean luma is nearest :data:`MID_GREY` is "well"; darker frames are
    "under" and brighter ones "over". With 5 or more frames the frames within ``margin`` of that one are
    ambiguous and labelled ``-1`` (ignored). The whole-frame label uses the whole frame the same way.

    Args:
        bracket: ``(N, 3, H, W)`` in [0, 1], darkest first (one static scene).
        masks: ``(K, H, W)`` regions (e.g. of the middle frame), shared by all frames.
    Returns:
        ``(N,)`` frame labels and ``(N, K)`` region labels in {-1, 0, 1, 2} (-1 also for empty regions).
    """
    n = bracket.shape[0]
    luma = (bracket * bracket.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)).sum(1)  # (N, H, W)
    area = masks.sum((-2, -1))
    region_luma = torch.einsum("khw,nhw->nk", masks, luma) / (area + 1e-6)  # (N, K)
    means = torch.cat([luma.mean((-2, -1))[:, None], region_luma], 1)  # column 0 = whole frame
    best = (means - MID_GREY).abs().argmin(0)  # (K + 1,)
    index = torch.arange(n)[:, None]
    labels = torch.where(index < best, 0, torch.where(index > best, 2, 1))
    if n >= 5 and margin > 0:
        labels = torch.where(((index - best).abs() <= margin) & (index != best), -1, labels)
    labels[:, 1:][:, area == 0] = -1
    return labels[:, 0], labels[:, 1:]


def recogniser_loss(recogniser, x: torch.Tensor, masks: torch.Tensor, frame_labels, region_labels) -> torch.Tensor:
    """Cross-entropy of whole-frame and per-region predictions against bracket labels (``-1`` ignored)."""
    frame = F.cross_entropy(recogniser.global_logits(x), frame_labels, ignore_index=-1)
    regions = recogniser.region_logits(x, masks)
    region = F.cross_entropy(regions.flatten(0, 1), region_labels.flatten(), ignore_index=-1)
    return torch.nan_to_num(frame) + torch.nan_to_num(region)


def train_recogniser(recogniser, frames, masks, frame_labels, region_labels, steps: int = 300, batch: int = 16,
                     lr: float = 2e-3, seed: int = 0, progress=None) -> list[float]:  # fmt: skip
    """Fit a recogniser (the CNN, or a CLIP adapter) on labelled frames; returns the loss per step.

    Args:
        frames: ``(N, 3, H, W)`` in [0, 1]; masks ``(N, K, H, W)``; frame_labels ``(N,)``; region_labels ``(N, K)``.
        progress: optional ``callable(step, loss)`` (e.g. a rich progress update).
    """
    params = recogniser.parameters_to_train() if hasattr(recogniser, "parameters_to_train") else list(recogniser.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    recogniser.train()
    losses = []
    for step in range(steps):
        pick = torch.randint(0, frames.shape[0], (min(batch, frames.shape[0]),), generator=generator)
        x, m = frames[pick], masks[pick]
        if torch.rand((), generator=generator) < 0.5:  # mirror: exposure does not depend on left/right
            x, m = x.flip(-1), m.flip(-1)
        loss = recogniser_loss(recogniser, x, m, frame_labels[pick], region_labels[pick])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step, loss.item())
    recogniser.eval()
    return losses
