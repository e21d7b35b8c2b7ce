"""The optional perceptual term: ST-LPIPS on a plain-torch VGG, its weights loading, and its use in training."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from loopexpose.errors import LoopExposeError
from loopexpose.perceptual import STLPIPS, load_stlpips, package_weights


def _photo(side: int = 64) -> torch.Tensor:
    from skimage import data, transform

    image = transform.resize(data.astronaut(), (side, side), anti_aliasing=True).astype(np.float32)
    return torch.from_numpy(image).permute(2, 0, 1)


def _blurred(image: torch.Tensor, size: int) -> torch.Tensor:
    return torch.nn.functional.avg_pool2d(image[None], size, 1, size // 2, count_include_pad=False)[0]


@pytest.fixture(scope="module")
def trained():
    if package_weights() is None:
        pytest.skip("stlpips-pytorch is not installed (pip install 'loopexpose[perceptual]')")
    return load_stlpips()


def test_shipped_weights_rank_distortions(trained):
    photo = _photo()
    assert trained(photo, photo).item() == pytest.approx(0.0, abs=1e-6)
    mild, strong = trained(photo, _blurred(photo, 3)).item(), trained(photo, _blurred(photo, 7)).item()
    assert 0.01 < mild < strong < 1.0
    # a one-pixel shift is what the shift-tolerant network was trained to forgive: nearer than a mild blur
    shifted = torch.roll(photo, 1, dims=-1)
    assert trained(photo[..., 4:-4, 4:-4], shifted[..., 4:-4, 4:-4]).item() < mild


def test_distance_shapes_and_gradients():
    torch.manual_seed(0)
    model = STLPIPS()
    x = torch.rand(2, 3, 3, 32, 40, requires_grad=True)
    d = model(x, torch.rand(2, 3, 3, 32, 40))
    assert d.shape == (2, 3)
    d.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in model.parameters())  # frozen: only the images get gradients
    with pytest.raises(ValueError, match="18x18"):
        model(torch.rand(3, 17, 40), torch.rand(3, 17, 40))
    assert model(torch.rand(3, 18, 18), torch.rand(3, 18, 18)).shape == ()  # the smallest that runs
    with pytest.raises(ValueError, match="one shape"):
        model(torch.rand(3, 32, 32), torch.rand(3, 32, 33))


def test_weights_load_from_safetensors_and_bad_files_are_refused(tmp_path):
    torch.manual_seed(1)
    model = STLPIPS()
    for p in model.parameters():
        p.data.abs_()  # trained lin weights are non-negative; any values load
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = load_stlpips(path)
    a, b = torch.rand(3, 32, 32), torch.rand(3, 32, 32)
    assert torch.equal(loaded(a, b), model(a, b))

    state = model.state_dict()
    del state["lin0.model.1.weight"]
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(LoopExposeError, match=r"partial\.safetensors: not ST-LPIPS VGG weights"):
        load_stlpips(tmp_path / "partial.safetensors")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(LoopExposeError, match=r"junk\.pth: cannot read"):
        load_stlpips(tmp_path / "junk.pth")
    # a pickle that would run code on load is refused (tensors-only unpickling)
    (tmp_path / "evil.pth").write_bytes(pickle.dumps(print, protocol=2))
    with pytest.raises(LoopExposeError, match=r"evil\.pth: cannot read"):
        load_stlpips(tmp_path / "evil.pth")


def test_missing_package_is_a_clear_error(monkeypatch):
    import loopexpose.perceptual as perceptual

    monkeypatch.setattr(perceptual, "package_weights", lambda: None)
    with pytest.raises(LoopExposeError, match=r"pip install 'loopexpose\[perceptual\]'"):
        perceptual.load_stlpips()


@pytest.mark.slow
def test_training_with_the_perceptual_term(data_root, tmp_path):
    from loopexpose.train import load_config, run

    torch.manual_seed(2)
    weights = tmp_path / "random.safetensors"
    model = STLPIPS()
    save_file({k: v.abs().contiguous() for k, v in model.state_dict().items()}, str(weights))
    config = load_config(None, {
        "out_dir": str(tmp_path / "run"),
        "data": {"roots": [str(data_root / "brackets/merianos2016")], "max_side": 64, "crop": 32, "synthetic_evs": [],
                 "val_scenes": ["merianos2016/Flowers"], "val_max_side": 64},
        "train": {"warmup_epochs": 1, "feedback_epochs": 0, "brackets_per_step": 2},
        "loss": {"perceptual": 0.5, "perceptual_weights": str(weights)},
    })  # fmt: skip
    run(config, quiet=True)
    (row,) = [json.loads(line) for line in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert row["perceptual"] > 0
    weighted = row["l1"] + 0.5 * row["ssim"] + 0.1 * row["ranking"] + 0.5 * row["consistency"] + 0.5 * row["perceptual"]
    assert row["loss"] == pytest.approx(weighted, rel=1e-4)
    config["loss"]["perceptual_weights"] = str(tmp_path / "missing.safetensors")
    with pytest.raises(LoopExposeError, match=r"missing\.safetensors: cannot read"):
        run(config, quiet=True)
