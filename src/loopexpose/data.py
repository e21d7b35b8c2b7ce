"""Exposure-bracket datasets for training and evaluation.

Scenes are found with :func:`loopexpose.brackets.find_scenes` under one or more roots (a scene, a collection of scenes
or a folder of collections such as ``../shared/data/brackets``) and ordered darkest first with
:func:`loopexpose.brackets.order_bracket`. A scene is known by its key ``"collection/scene"`` (folder names).

* :func:`scan_brackets` finds and orders every scene under some roots.
* :func:`split_scenes` splits them into train and validation, deterministically, by scene: a scene goes to
  validation when a stable hash of its key falls below ``val_fraction`` (or when it is in an explicit list),
  so a scene never leaks frames into both sides and the split does not change when collections are added.
* :class:`BracketDataset` yields random training windows: ``k`` consecutive frames (in exposure order) of one
  scene, resized so the long side is at most ``max_side``, randomly cropped to ``crop x crop`` and flipped.
* :class:`BucketBatchSampler` groups items of equal ``k`` so batches stack to ``(B, k, 3, H, W)``;
  :func:`collate_brackets` stacks them (and pads with a mask if lengths ever differ).
* :class:`ValidationSet` yields whole validation brackets with their reference frame (mean luma nearest
  118/255) for evaluation.

Randomness is per item: each item draws from a generator seeded by ``(seed, epoch, index)``, so an item is the
same whichever worker loads it and however many workers there are. Frames are decoded and resized once and
kept in memory as uint8 (the shared data is ~100 MB of files, ~300 MB decoded at ``max_side=512``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from loopexpose.errors import LoopExposeError
from loopexpose.brackets import Bracket, find_scenes, load_bracket, order_bracket
from loopexpose.io import REFERENCE_LUMA

PathLike = str | os.PathLike


def scene_key(bracket: Bracket) -> str:
    """``"collection/scene"``: the names of a bracket's parent folder and its own folder."""
    return f"{bracket.collection}/{bracket.name}"


def scan_brackets(roots: PathLike | Sequence[PathLike], min_frames: int = 1) -> list[Bracket]:
    """Find and order every scene under ``roots`` (sorted by key, duplicates removed).

    Args:
        roots: scene folders, collections (folders of scenes) or folders of collections.
        min_frames: scenes with fewer frames are left out.

    Raises:
        LoopExposeError: a root is missing or holds no images, or a frame cannot be read.
    """
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    folders = {scene.resolve(): scene for root in roots for scene in find_scenes(root)}
    brackets = [order_bracket(scene) for scene in folders.values()]
    return sorted((b for b in brackets if len(b) >= min_frames), key=scene_key)


def is_validation_scene(key: str, val_fraction: float) -> bool:
    """Stable hash split: ``True`` when the SHA-1 of ``key`` maps below ``val_fraction`` in ``[0, 1)``.

    >>> is_validation_scene("hdrps/507", 0.0), is_validation_scene("hdrps/507", 1.0)
    (False, True)
    """
    digest = hashlib.sha1(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < val_fraction


def split_scenes(
    brackets: Sequence[Bracket], val_fraction: float = 0.1, val_scenes: Sequence[str] | None = None
) -> tuple[list[Bracket], list[Bracket]]:
    """Split brackets into ``(train, validation)`` by scene.

    Args:
        brackets: from :func:`scan_brackets`.
        val_fraction: share of scenes (by stable hash of ``"collection/scene"``) put in validation.
        val_scenes: if given, exactly these scenes are validation (each ``"collection/scene"`` or a bare scene
            name) and ``val_fraction`` is ignored.

    Raises:
        LoopExposeError: a name in ``val_scenes`` matches no scene.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    if val_scenes is not None:
        wanted = set(val_scenes)
        matched = {n for b in brackets for n in (scene_key(b), b.name) if n in wanted}
        if wanted - matched:
            raise LoopExposeError(f"validation scene(s) not found: {', '.join(sorted(wanted - matched))}")
        is_val = [scene_key(b) in wanted or b.name in wanted for b in brackets]
    else:
        is_val = [is_validation_scene(scene_key(b), val_fraction) for b in brackets]
    train = [b for b, v in zip(brackets, is_val) if not v]
    val = [b for b, v in zip(brackets, is_val) if v]
    return train, val


def item_generator(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator of one item: depends only on ``(seed, epoch, index)``."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, index]))


class _FrameCache:
    """Decoded, resized frames per scene as ``(N, 3, H, W)`` uint8 tensors, loaded on first use."""

    def __init__(self, max_side: int) -> None:
        self.max_side = max_side
        self.frames: dict[str, torch.Tensor] = {}

    def get(self, bracket: Bracket) -> torch.Tensor:
        key = scene_key(bracket)
        if key not in self.frames:
            frames = load_bracket(bracket, max_side=self.max_side)
            self.frames[key] = (frames * 255.0 + 0.5).clamp(0, 255).to(torch.uint8)
        return self.frames[key]


@dataclass
class _Plan:
    scene: int
    k: int
    start: int


class BracketDataset(Dataset):
    """Random training windows of exposure brackets.

    Item ``i`` is a window of scene ``i % len(scenes)`` (so ``len(dataset) = len(scenes) * repeats``) as a dict:

    * ``frames``: ``(k, 3, crop, crop)`` float32 in ``[0, 1]``, darkest first;
    * ``evs``: ``(k,)`` float32, stops relative to the window's first frame (NaN when the scene was ordered by
      luminance alone, see ``has_evs``);
    * ``mean_luma``: ``(k,)`` float32 in ``[0, 1]``, of the whole frames (before cropping);
    * ``positions``: ``(k,)`` int64, the frames' indices in the full bracket;
    * ``reference``: int, window index of the frame whose mean luma is nearest 118/255;
    * ``has_evs`` (bool), ``scene`` (``"collection/scene"``), ``rule`` (the ordering rule).

    How a window is drawn, all from the item's own generator (:func:`item_generator`):
    ``k`` uniform in ``k_range`` clipped to the bracket length; a uniform start so the window is ``k``
    consecutive frames in exposure order (with ``around_reference``, among the windows that contain the frame
    nearest mid-grey, as the evaluation protocol does); a uniform ``crop x crop`` position (frames whose short
    side is below ``crop`` are first upscaled bilinearly so it fits) or, with ``crop_scale=(lo, hi)``, a crop of
    a uniform ``lo..hi`` fraction of each side resized to ``crop x crop`` (so a network that looks at the whole
    frame sees about a whole scene, as at inference); a horizontal flip with probability 1/2. Frames were
    resized once (area filter) so their long side is at most ``max_side``.

    Args:
        brackets: scenes (e.g. the train half of :func:`split_scenes`), or roots to :func:`scan_brackets`.
        k_range: ``(k_min, k_max)`` window lengths, inclusive.
        crop: side of the square crop, or ``None`` for whole frames (then batch size 1 unless sizes agree).
        max_side: cap on the long side applied when frames are decoded; 0 keeps full size.
        flip: random horizontal flips.
        seed: base seed; with the epoch and the index it fixes every random choice.
        repeats: items per scene per epoch.
        min_frames: scenes with fewer frames are dropped (2: a bracket needs two exposures).
        around_reference: windows always contain the frame whose mean luma is nearest 118/255.
        crop_scale: ``(lo, hi)`` fractions of each side to crop before resizing to ``crop``; ``None`` crops
            ``crop x crop`` pixels directly.

    An index may be an int (uses :attr:`epoch`, see :meth:`set_epoch`) or an ``(index, epoch)`` tuple, which is
    what :class:`BucketBatchSampler` yields, so persistent workers still see the right epoch.
    """

    def __init__(
        self,
        brackets: Sequence[Bracket] | PathLike | Sequence[PathLike],
        k_range: tuple[int, int] = (2, 9),
        crop: int | None = 256,
        max_side: int = 512,
        flip: bool = True,
        seed: int = 0,
        repeats: int = 1,
        min_frames: int = 2,
        around_reference: bool = False,
        crop_scale: tuple[float, float] | None = None,
    ) -> None:
        if isinstance(brackets, (str, os.PathLike)) or (brackets and not isinstance(brackets[0], Bracket)):
            brackets = scan_brackets(brackets)  # type: ignore[arg-type]
        if crop_scale is not None and not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must be (lo, hi) with 0 < lo <= hi <= 1, got {crop_scale}")
        if not 1 <= k_range[0] <= k_range[1]:
            raise ValueError(f"k_range must be (k_min, k_max) with 1 <= k_min <= k_max, got {k_range}")
        if crop is not None and crop < 1:
            raise ValueError(f"crop must be positive or None, got {crop}")
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.brackets = [b for b in brackets if len(b) >= min_frames]  # type: ignore[union-attr]
        if not self.brackets:
            raise LoopExposeError(f"no scene with at least {min_frames} frames to train on")
        self.k_range = (int(k_range[0]), int(k_range[1]))
        self.crop = crop
        self.flip = flip
        self.seed = seed
        self.repeats = repeats
        self.around_reference = around_reference
        self.crop_scale = crop_scale
        self.epoch = 0
        self._cache = _FrameCache(max_side)

    def __len__(self) -> int:
        return len(self.brackets) * self.repeats

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for int indices (call it each epoch when not using :class:`BucketBatchSampler`)."""
        self.epoch = int(epoch)

    def preload(self) -> None:
        """Decode every scene now (call before starting DataLoader workers so they share the cache)."""
        for bracket in self.brackets:
            self._cache.get(bracket)

    def _unpack(self, index: int | tuple[int, int]) -> tuple[int, int]:
        if isinstance(index, (tuple, list)):
            return int(index[0]), int(index[1])
        return int(index), self.epoch

    def _plan(self, index: int, epoch: int, rng: np.random.Generator) -> _Plan:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        scene = index % len(self.brackets)
        n = len(self.brackets[scene])
        k = min(int(rng.integers(self.k_range[0], self.k_range[1] + 1)), n)
        if self.around_reference:
            reference = self.brackets[scene].reference_index()
            start = int(rng.integers(max(0, reference - k + 1), min(reference, n - k) + 1))
        else:
            start = int(rng.integers(0, n - k + 1))
        return _Plan(scene=scene, k=k, start=start)

    def window_length(self, index: int | tuple[int, int]) -> int:
        """The ``k`` item ``index`` will have, without loading any pixels."""
        index, epoch = self._unpack(index)
        return self._plan(index, epoch, item_generator(self.seed, epoch, index)).k

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        index, epoch = self._unpack(index)
        rng = item_generator(self.seed, epoch, index)
        plan = self._plan(index, epoch, rng)
        bracket = self.brackets[plan.scene]
        positions = list(range(plan.start, plan.start + plan.k))
        frames = self._cache.get(bracket)[positions].float() / 255.0
        if self.crop is not None and self.crop_scale is not None:
            frames = _random_scaled_crop(frames, self.crop, self.crop_scale, rng)
        elif self.crop is not None:
            frames = _random_crop(frames, self.crop, rng)
        if self.flip and rng.random() < 0.5:
            frames = frames.flip(-1)
        lumas = [bracket.mean_luma[i] for i in positions]
        if bracket.evs is not None:
            evs = torch.tensor([bracket.evs[i] - bracket.evs[plan.start] for i in positions], dtype=torch.float32)
        else:
            evs = torch.full((plan.k,), float("nan"))
        return {
            "frames": frames.contiguous(),
            "evs": evs,
            "mean_luma": torch.tensor(lumas, dtype=torch.float32),
            "positions": torch.tensor(positions, dtype=torch.int64),
            "reference": int(np.argmin([abs(v - REFERENCE_LUMA) for v in lumas])),
            "has_evs": bracket.evs is not None,
            "scene": scene_key(bracket),
            "rule": bracket.rule,
        }


def _random_crop(frames: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    """``(k, 3, H, W)`` -> ``(k, 3, size, size)``; upscales first (bilinear) when the short side is below ``size``."""
    height, width = frames.shape[-2:]
    if min(height, width) < size:
        scale = size / min(height, width)
        new = (max(size, round(height * scale)), max(size, round(width * scale)))
        frames = F.interpolate(frames, size=new, mode="bilinear", align_corners=False).clamp(0, 1)
        height, width = new
    top = int(rng.integers(0, height - size + 1))
    left = int(rng.integers(0, width - size + 1))
    return frames[..., top : top + size, left : left + size]


def _random_scaled_crop(
    frames: torch.Tensor, size: int, scale: tuple[float, float], rng: np.random.Generator
) -> torch.Tensor:
    """``(k, 3, H, W)`` -> ``(k, 3, size, size)``: a crop of a random ``scale`` fraction of each side, resized."""
    height, width = frames.shape[-2:]
    ch = max(1, round(height * rng.uniform(*scale)))
    cw = max(1, round(width * rng.uniform(*scale)))
    top = int(rng.integers(0, height - ch + 1))
    left = int(rng.integers(0, width - cw + 1))
    window = frames[..., top : top + ch, left : left + cw]
    mode = "area" if min(ch, cw) >= size else "bilinear"
    return F.interpolate(window, size=(size, size), mode=mode).clamp(0, 1)


class BucketBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of items with equal window length ``k``, for ``(B, k, 3, H, W)`` fusion batches.

    Each epoch the item indices are grouped by :meth:`BracketDataset.window_length`, shuffled within each group
    and cut into batches; the batches are then shuffled (all with a generator seeded by ``(seed, epoch)``).
    Yields lists of ``(index, epoch)`` so the dataset draws each item's randomness for the right epoch.
    Use as ``DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_brackets)``; call
    :meth:`set_epoch` before each epoch.

    Args:
        dataset: the :class:`BracketDataset`.
        batch_size: items per batch (a group's last batch may be smaller unless ``drop_last``).
        shuffle: shuffle items and batches; otherwise batches come in index order within ascending ``k``.
        drop_last: drop each group's incomplete last batch.
        seed: base seed (defaults to the dataset's).
    """

    def __init__(
        self,
        dataset: BracketDataset,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = dataset.seed if seed is None else seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose windows and order the next iteration yields (also sets the dataset's)."""
        self.epoch = int(epoch)
        self.dataset.set_epoch(epoch)

    def _batches(self) -> list[list[tuple[int, int]]]:
        groups: dict[int, list[int]] = {}
        for index in range(len(self.dataset)):
            groups.setdefault(self.dataset.window_length((index, self.epoch)), []).append(index)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, 0x5A3]))
        batches = []
        for k in sorted(groups):
            members = groups[k]
            if self.shuffle:
                members = [members[i] for i in rng.permutation(len(members))]
            for start in range(0, len(members), self.batch_size):
                batch = members[start : start + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append([(i, self.epoch) for i in batch])
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


def collate_brackets(items: Sequence[dict]) -> dict:
    """Stack :class:`BracketDataset` items into a batch.

    Returns a dict with ``frames`` ``(B, K, 3, H, W)``, ``evs``/``mean_luma`` ``(B, K)``, ``positions`` ``(B, K)``,
    ``mask`` ``(B, K)`` bool (``True`` for real frames), ``length`` ``(B,)``, ``reference`` ``(B,)``,
    ``has_evs`` ``(B,)`` and the lists ``scene`` and ``rule``. With equal ``k`` (what
    :class:`BucketBatchSampler` gives) ``K = k`` and the mask is all ``True``; otherwise shorter windows are
    padded at the end with zeros (``evs`` with NaN, ``positions`` with -1) up to the longest.

    Raises:
        ValueError: the items' crops differ in size.
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    sizes = {tuple(item["frames"].shape[1:]) for item in items}
    if len(sizes) != 1:
        raise ValueError(f"items differ in frame size {sorted(sizes)}; use a crop or batch size 1")
    lengths = [item["frames"].shape[0] for item in items]
    longest = max(lengths)

    def pad(tensor: torch.Tensor, value: float) -> torch.Tensor:
        missing = longest - tensor.shape[0]
        if missing == 0:
            return tensor
        filler = torch.full((missing, *tensor.shape[1:]), value, dtype=tensor.dtype)
        return torch.cat([tensor, filler])

    return {
        "frames": torch.stack([pad(item["frames"], 0.0) for item in items]),
        "evs": torch.stack([pad(item["evs"], float("nan")) for item in items]),
        "mean_luma": torch.stack([pad(item["mean_luma"], 0.0) for item in items]),
        "positions": torch.stack([pad(item["positions"], -1) for item in items]),
        "mask": torch.stack([torch.arange(longest) < n for n in lengths]),
        "length": torch.tensor(lengths, dtype=torch.int64),
        "reference": torch.tensor([item["reference"] for item in items], dtype=torch.int64),
        "has_evs": torch.tensor([item["has_evs"] for item in items]),
        "scene": [item["scene"] for item in items],
        "rule": [item["rule"] for item in items],
    }


@dataclass
class ValidationBracket:
    """A whole validation bracket.

    Attributes:
        frames: ``(N, 3, H, W)`` float32 in ``[0, 1]``, darkest first, long side at most ``max_side``.
        reference: index of the frame whose mean luma is nearest 118/255 (the evaluation reference).
        evs: ``(N,)`` stops relative to the first frame, or ``None`` when ordered by luminance.
        mean_luma: ``(N,)`` mean luma of each frame in ``[0, 1]``.
        scene: ``"collection/scene"``.
        rule: the ordering rule (see :func:`loopexpose.brackets.order_bracket`).
        bracket: the underlying :class:`~loopexpose.brackets.Bracket` (file paths).
    """

    frames: torch.Tensor
    reference: int
    evs: list[float] | None
    mean_luma: list[float]
    scene: str
    rule: str
    bracket: Bracket


class ValidationSet:
    """Whole validation brackets in a fixed order (sorted by scene key), for evaluation.

    Args:
        brackets: scenes (e.g. the validation half of :func:`split_scenes`), or roots to :func:`scan_brackets`.
        max_side: frames are resized (area filter) so the long side is at most this; 0 keeps full size.
        min_frames: scenes with fewer frames are dropped.
        cache: keep decoded frames (uint8) in memory between passes.
    """

    def __init__(
        self,
        brackets: Sequence[Bracket] | PathLike | Sequence[PathLike],
        max_side: int = 512,
        min_frames: int = 2,
        cache: bool = True,
    ) -> None:
        if isinstance(brackets, (str, os.PathLike)) or (brackets and not isinstance(brackets[0], Bracket)):
            brackets = scan_brackets(brackets)  # type: ignore[arg-type]
        self.brackets = sorted((b for b in brackets if len(b) >= min_frames), key=scene_key)  # type: ignore[union-attr]
        self.max_side = max_side
        self._cache = _FrameCache(max_side) if cache else None

    def __len__(self) -> int:
        return len(self.brackets)

    def __getitem__(self, index: int) -> ValidationBracket:
        bracket = self.brackets[index]
        if self._cache is not None:
            frames = self._cache.get(bracket).float() / 255.0
        else:
            frames = load_bracket(bracket, max_side=self.max_side)
        return ValidationBracket(
            frames=frames,
            reference=bracket.reference_index(),
            evs=bracket.evs,
            mean_luma=list(bracket.mean_luma),
            scene=scene_key(bracket),
            rule=bracket.rule,
            bracket=bracket,
        )

    def __iter__(self) -> Iterator[ValidationBracket]:
        for index in range(len(self)):
            yield self[index]
