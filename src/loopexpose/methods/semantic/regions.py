"""Region providers: ``(B, 3, H, W)`` images in [0, 1] -> ``(B, K, H, W)`` one-hot region masks.

* :func:`superpixel_regions` (default, offline, no weights): SLIC or Felzenszwalb superpixels from
  scikit-image. These are colour/position clusters, not object masks: an honest stand-in for a segmenter.
* :class:`FastSAMRegions`: FastSAM through ``ultralytics`` from a local weights file (the paper's segmenter).

Either way the ``K`` channels are in a fixed order (darkest region first by mean luma), so a network can learn
what a channel means; a region that does not exist is an all-zero channel.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from loopexpose.errors import LoopExposeError
from loopexpose.io import LUMA_WEIGHTS


def labels_to_masks(labels: np.ndarray, image: np.ndarray, regions: int) -> np.ndarray:
    """``(H, W)`` integer labels -> ``(K, H, W)`` float32 one-hot masks, darkest region first.

    The ``K - 1`` largest labels keep their own channel; all smaller ones share the last slot before sorting
    (so a segmenter that over-segments still gives ``K`` channels).
    """
    ids, counts = np.unique(labels, return_counts=True)
    keep = ids[np.argsort(-counts, kind="stable")][: regions - 1] if len(ids) > regions else ids
    slot = np.full(labels.max() + 1, len(keep), dtype=np.int64)
    slot[keep] = np.arange(len(keep))
    merged = slot[labels]
    n = int(merged.max()) + 1
    luma = image @ np.asarray(LUMA_WEIGHTS, np.float32)
    sums = np.bincount(merged.ravel(), weights=luma.ravel(), minlength=n)
    areas = np.bincount(merged.ravel(), minlength=n)
    order = np.argsort(sums / np.maximum(areas, 1), kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    masks = np.zeros((regions, *labels.shape), np.float32)
    np.put_along_axis(masks, rank[merged][None], 1.0, axis=0)
    return masks


def superpixel_regions(images: torch.Tensor, regions: int = 8, method: str = "slic") -> torch.Tensor:
    """Classical region masks from scikit-image superpixels (CPU, no gradient).

    Args:
        images: ``(B, 3, H, W)`` in [0, 1].
        regions: ``K``, the number of mask channels.
        method: ``"slic"`` (about ``K`` compact colour regions) or ``"felzenszwalb"`` (graph-based; the smaller
            segments are merged into one channel).
    Returns:
        ``(B, K, H, W)`` one-hot float masks on ``images``' device.

    >>> superpixel_regions(torch.rand(2, 3, 17, 23), regions=4).sum(1).eq(1).all().item()
    True
    """
    from skimage.segmentation import felzenszwalb, slic

    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) images, got {tuple(images.shape)}")
    if regions < 1:
        raise ValueError(f"regions must be >= 1, got {regions}")
    out = []
    for frame in images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy():
        if method == "slic":
            labels = slic(frame, n_segments=regions, compactness=10.0, start_label=0, channel_axis=-1)
        elif method == "felzenszwalb":
            labels = felzenszwalb(frame, scale=max(frame.shape[:2]) * 2.0, sigma=0.8, min_size=16)
        else:
            raise ValueError(f"unknown superpixel method {method!r} (slic, felzenszwalb)")
        out.append(labels_to_masks(labels, frame, regions))
    return torch.from_numpy(np.stack(out)).to(images.device)


class FastSAMRegions:
    """FastSAM instance masks through ``ultralytics`` from a local ``.pt`` file (never downloaded; read with
    ultralytics' weights-only loader, ``ULTRALYTICS_SAFE_LOAD=1``, where the installed version has it).

    Masks are painted largest first, so smaller objects win where they overlap; pixels no mask covers form one
    more region. Call with ``(B, 3, H, W)`` images in [0, 1] -> ``(B, K, H, W)`` like :func:`superpixel_regions`.
    """

    def __init__(self, weights: str | os.PathLike, regions: int = 8, imgsz: int = 256, device: str = "cpu"):
        path = Path(weights)
        if not path.is_file():
            raise LoopExposeError("segmenter weights not found", path)
        # ultralytics' restricted loader (torch.load(weights_only=True) against an allow-list of its model
        # classes; versions without it ignore the flag), and no network use. It reads the flag when imported, so
        # where it was imported before, its module-level copy is set too.
        os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"
        os.environ["YOLO_OFFLINE"] = "1"
        try:
            from ultralytics import FastSAM
            from ultralytics.nn import tasks
        except ImportError:
            raise LoopExposeError(
                "FastSAM needs the optional 'ultralytics' package: pip install 'loopexpose[semantic]'", path
            ) from None
        if hasattr(tasks, "SAFE_LOAD"):
            tasks.SAFE_LOAD = True
        try:  # an absolute path: ultralytics renames a bare "FastSAM.pt" to "FastSAM-x.pt" and fetches names it lacks
            self.model = FastSAM(str(path.resolve()))
        except Exception as exc:  # noqa: BLE001 - whatever ultralytics raises, the file is the problem
            raise LoopExposeError(f"cannot load FastSAM weights ({type(exc).__name__}: {exc})", path) from None
        self.regions, self.imgsz, self.device = regions, imgsz, device

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for frame in images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy():
            bgr = np.ascontiguousarray((frame[..., ::-1] * 255 + 0.5).astype(np.uint8))
            result = self.model(bgr, imgsz=self.imgsz, retina_masks=True, verbose=False, device=self.device)[0]
            labels = np.zeros(frame.shape[:2], np.int64)
            if result.masks is not None:
                masks = result.masks.data.cpu().numpy() > 0.5
                for i in np.argsort(-masks.reshape(len(masks), -1).sum(1)):
                    labels[masks[i][: labels.shape[0], : labels.shape[1]]] = i + 1
            out.append(labels_to_masks(labels, frame, self.regions))
        return torch.from_numpy(np.stack(out)).to(images.device)


def region_means(values: torch.Tensor, masks: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean of ``(B, C, H, W)`` values inside each of ``(B, K, H, W)`` masks -> ``(B, K, C)`` (0 for empty masks)."""
    area = masks.sum((-2, -1))  # (B, K)
    total = torch.einsum("bkhw,bchw->bkc", masks, values)
    return total / (area[..., None] + eps)


def paint_regions(values: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``(B, K, C)`` per-region values painted onto ``(B, K, H, W)`` masks -> ``(B, C, H, W)``."""
    return torch.einsum("bkc,bkhw->bchw", values, masks)
