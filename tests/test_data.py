"""Bracket datasets: windows, crops, determinism, bucketing, split, validation brackets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from loopexpose.data import (
    BracketDataset,
    BucketBatchSampler,
    ValidationSet,
    collate_brackets,
    is_validation_scene,
    scan_brackets,
    scene_key,
    split_scenes,
)
from loopexpose.errors import LoopExposeError


@pytest.fixture()
def collection(tmp_path):
    """Scenes of 1, 3, 5 and 9 frames (60x40 PNG, brightness rising with the frame index)."""
    root = tmp_path / "col"
    for name, n in [("one", 1), ("three's", 3), ("five & co", 5), ("nine (x)", 9)]:
        scene = root / name
        scene.mkdir(parents=True)
        gradient = np.linspace(0, 1, 60, dtype=np.float32)[None, :, None] * np.ones((40, 60, 3), np.float32)
        for i in range(n):
            level = (i + 1) / (n + 1)
            pixels = np.clip(gradient * 0.3 + level * 0.7, 0, 1)
            Image.fromarray((pixels * 255).astype(np.uint8)).save(scene / f"f{n - i:02d}.png")  # names reversed
    return root


def test_scan_and_items(collection):
    brackets = scan_brackets(collection)
    assert [scene_key(b) for b in brackets] == ["col/five & co", "col/nine (x)", "col/one", "col/three's"]
    dataset = BracketDataset(brackets, k_range=(2, 4), crop=32, max_side=48, seed=3)
    assert len(dataset) == 3  # the one-frame scene is dropped
    for index in range(len(dataset)):
        item = dataset[index]
        k = item["frames"].shape[0]
        assert 2 <= k <= 4 and k == dataset.window_length(index)
        assert item["frames"].shape == (k, 3, 32, 32) and item["frames"].dtype == torch.float32
        assert 0 <= float(item["frames"].min()) and float(item["frames"].max()) <= 1
        means = item["frames"].mean(dim=(1, 2, 3))
        assert bool((means[1:] > means[:-1]).all()), "window not darkest first"
        positions = item["positions"]
        assert bool((positions[1:] - positions[:-1] == 1).all()), "window not contiguous"
        assert item["mean_luma"].shape == (k,) and item["rule"] == "luminance" and not item["has_evs"]
        assert torch.isnan(item["evs"]).all()
        assert 0 <= item["reference"] < k


def test_k_clipped_to_bracket_length(collection):
    dataset = BracketDataset(collection, k_range=(7, 9), crop=16, max_side=48)
    by_scene = {}
    for index in range(len(dataset)):
        item = dataset[index]
        by_scene[item["scene"]] = item["frames"].shape[0]
    assert by_scene["col/three's"] == 3 and by_scene["col/five & co"] == 5 and 7 <= by_scene["col/nine (x)"] <= 9


def test_resize_cap_and_upscale_for_small_frames(collection):
    dataset = BracketDataset(collection, k_range=(2, 2), crop=None, max_side=30, flip=False)
    assert dataset[0]["frames"].shape[-2:] == (20, 30)  # 60x40 capped to long side 30
    dataset = BracketDataset(collection, k_range=(2, 2), crop=36, max_side=30)
    assert dataset[0]["frames"].shape[-2:] == (36, 36)  # short side 20 < 36: upscaled first


def test_deterministic_per_item_and_epoch(collection):
    make = lambda: BracketDataset(collection, k_range=(2, 9), crop=24, max_side=48, seed=7)  # noqa: E731
    a, b = make(), make()
    for index in (2, 0, 1):  # order does not matter
        assert torch.equal(a[index]["frames"], b[index]["frames"])
    b.set_epoch(1)
    differs = [not torch.equal(a[i]["frames"], b[i]["frames"]) for i in range(len(a))]
    assert any(differs)
    assert torch.equal(b[(1, 0)]["frames"], a[1]["frames"])  # (index, epoch) overrides the dataset epoch
    other_seed = BracketDataset(collection, k_range=(2, 9), crop=24, max_side=48, seed=8)
    assert any(not torch.equal(a[i]["frames"], other_seed[i]["frames"]) for i in range(len(a)))


def test_same_items_with_workers(collection):
    dataset = BracketDataset(collection, k_range=(2, 5), crop=16, max_side=48, repeats=4)
    sampler = BucketBatchSampler(dataset, batch_size=2, seed=1)
    plain = [b["frames"] for b in DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_brackets)]
    workers = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_brackets, num_workers=2)
    assert all(torch.equal(x, y["frames"]) for x, y in zip(plain, workers, strict=True))


def test_bucket_sampler_equal_k_and_covers_everything(collection):
    dataset = BracketDataset(collection, k_range=(2, 9), crop=16, max_side=48, repeats=6)
    sampler = BucketBatchSampler(dataset, batch_size=3)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        seen = []
        for batch in DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_brackets):
            k = batch["frames"].shape[1]
            assert batch["frames"].ndim == 5 and bool(batch["mask"].all()) and bool((batch["length"] == k).all())
            seen.extend(batch["scene"])
        assert sorted(seen) == sorted(dataset[i]["scene"] for i in range(len(dataset))) and len(seen) == 18
    lengths = [len(b) for b in sampler]
    assert sum(lengths) == 18 and max(lengths) <= 3
    assert list(BucketBatchSampler(dataset, 3, seed=5)) == list(BucketBatchSampler(dataset, 3, seed=5))
    dropped = BucketBatchSampler(dataset, 4, drop_last=True)
    assert all(len(b) == 4 for b in dropped)


def test_collate_pads_mixed_lengths():
    def item(k):
        return {"frames": torch.rand(k, 3, 8, 8), "evs": torch.arange(k, dtype=torch.float32),
                "mean_luma": torch.rand(k), "positions": torch.arange(k), "reference": 0, "has_evs": True,
                "scene": f"c/s{k}", "rule": "filename"}  # fmt: skip

    batch = collate_brackets([item(2), item(4)])
    assert batch["frames"].shape == (2, 4, 3, 8, 8)
    assert batch["mask"].tolist() == [[True, True, False, False], [True] * 4]
    assert math.isnan(batch["evs"][0, 3]) and batch["positions"][0, 2] == -1
    assert float(batch["frames"][0, 2:].abs().sum()) == 0
    with pytest.raises(ValueError, match="frame size"):
        collate_brackets([item(2), {**item(2), "frames": torch.rand(2, 3, 9, 8)}])


def test_split_is_stable_and_by_scene(collection):
    brackets = scan_brackets(collection, min_frames=2)
    train, val = split_scenes(brackets, val_fraction=0.5)
    assert {scene_key(b) for b in train}.isdisjoint(scene_key(b) for b in val)
    assert len(train) + len(val) == 3
    assert [scene_key(b) for b in val] == [scene_key(b) for b in split_scenes(brackets, 0.5)[1]]
    assert split_scenes(brackets, 0.0)[1] == [] and split_scenes(brackets, 1.0)[0] == []
    train, val = split_scenes(brackets, val_scenes=["col/nine (x)", "three's"])
    assert sorted(b.name for b in val) == ["nine (x)", "three's"] and [b.name for b in train] == ["five & co"]
    with pytest.raises(LoopExposeError, match="not found: nope"):
        split_scenes(brackets, val_scenes=["nope"])
    # the hash is a fixed function of the key, independent of which other scenes exist
    share = np.mean([is_validation_scene(f"c/scene{i}", 0.2) for i in range(2000)])
    assert 0.17 < share < 0.23


def test_validation_set(collection):
    validation = ValidationSet(collection, max_side=30)
    assert len(validation) == 3
    items = list(validation)
    assert [v.scene for v in items] == ["col/five & co", "col/nine (x)", "col/three's"]
    nine = items[1]
    assert nine.frames.shape == (9, 3, 20, 30) and nine.frames.dtype == torch.float32
    means = nine.frames.mean(dim=(1, 2, 3))
    assert bool((means[1:] > means[:-1]).all())
    target = 118 / 255
    assert nine.reference == int(np.argmin([abs(m - target) for m in nine.mean_luma]))
    assert abs(float(means[nine.reference]) - target) < 0.1
    assert torch.equal(validation[1].frames, nine.frames)  # cached


def test_bad_arguments(collection):
    with pytest.raises(ValueError):
        BracketDataset(collection, k_range=(3, 2))
    with pytest.raises(LoopExposeError, match="at least 20 frames"):
        BracketDataset(collection, min_frames=20)
    with pytest.raises(LoopExposeError, match="no such folder"):
        BracketDataset(collection / "missing")


@pytest.mark.data
def test_every_shared_collection(brackets_root):
    brackets = scan_brackets(brackets_root)
    assert len({b.collection for b in brackets}) >= 6 and len(brackets) >= 100
    train, val = split_scenes(brackets, val_fraction=0.1)
    assert val and {scene_key(b) for b in train}.isdisjoint(scene_key(b) for b in val)
    # decoding every frame takes ~10-30 s on 2 busy cores: train on two scenes of each collection
    sample = [b for c in sorted({b.collection for b in train}) for b in [x for x in train if x.collection == c][:2]]
    dataset = BracketDataset(sample, k_range=(2, 9), crop=64, max_side=96, seed=0)
    sampler = BucketBatchSampler(dataset, batch_size=8)
    checked = 0
    for batch in DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_brackets):
        assert batch["frames"].shape[-3:] == (3, 64, 64) and bool(batch["mask"].all())
        checked += batch["frames"].shape[0]
    assert checked == len(dataset) == len(sample) >= 11  # memorial_church has one scene
    first = ValidationSet(val, max_side=96)[0]
    assert first.frames.shape[0] >= 2 and max(first.frames.shape[-2:]) == 96
