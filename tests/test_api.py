"""The Python API: ``model.correct`` round-trips every input kind, tiling is exact, ``loopexpose.fuse``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import loopexpose
from conftest import randomised_curvegrid as randomised
from loopexpose import fusion
from loopexpose.errors import LoopExposeError
from loopexpose.io import write_image
from loopexpose.models import save




@pytest.fixture(scope="module")
def model():
    return randomised()


def _photo(height=37, width=53, seed=0) -> np.ndarray:
    """``(H, W, 3)`` float32 in [0, 1]: a smooth photo-like field (gradient plus blobs)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / width, yy / height, (xx + yy) / (width + height)], axis=-1)
    return np.clip(0.6 * base + 0.4 * rng.random((height, width, 3)).astype(np.float32), 0, 1)


# ------------------------------------------------------------------------------------------- input kinds


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_numpy_round_trips_dtype_and_shape(model, dtype):
    photo = _photo()
    integer = np.issubdtype(dtype, np.integer)
    image = (photo * np.iinfo(dtype).max + 0.5).astype(dtype) if integer else photo.astype(dtype)
    out = model.correct(image)
    assert isinstance(out, np.ndarray) and out.dtype == dtype and out.shape == image.shape
    assert not np.array_equal(out, image)  # the model did something


def test_16_bit_in_gives_16_bit_out(model):
    ramp = np.linspace(0, 65535, 64 * 64 * 3).reshape(64, 64, 3).astype(np.uint16)
    out = model.correct(ramp)
    assert out.dtype == np.uint16
    assert len(np.unique(out)) > 4 * 256  # real 16-bit precision, not 8-bit levels scaled up
    assert np.any(out % 257 != 0)


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_pil_round_trips_mode_and_size(model, mode):
    image = Image.fromarray((_photo() * 255).astype(np.uint8)).convert(mode)
    out = model.correct(image)
    assert isinstance(out, Image.Image) and out.mode == mode and out.size == image.size
    assert not np.array_equal(np.asarray(out), np.asarray(image))


@pytest.mark.parametrize("shape", [(3, 20, 30), (2, 3, 20, 30), (2, 2, 3, 20, 30)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tensor_round_trips_dtype_and_shape(model, shape, dtype):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    out = model.correct(x)
    assert isinstance(out, torch.Tensor) and out.shape == x.shape and out.dtype == dtype
    assert 0 <= out.min() and out.max() <= 1 and not torch.allclose(out, x, atol=1e-3)


def test_tensor_frames_are_corrected_independently(model):
    x = torch.rand(3, 3, 24, 40, generator=torch.Generator().manual_seed(1))
    together = model.correct(x)
    alone = torch.stack([model.correct(frame) for frame in x])
    assert torch.equal(together, alone)


def test_max_side_downscales_only_when_asked(model):
    image = (_photo(40, 80) * 255).astype(np.uint8)
    assert model.correct(image).shape == (40, 80, 3)
    assert model.correct(image, max_side=20).shape == (10, 20, 3)


def test_bad_input_is_a_clear_error(model):
    with pytest.raises(LoopExposeError, match=r"\(H, W, 3\)"):
        model.correct(np.zeros((4, 4), np.uint8))
    with pytest.raises(LoopExposeError, match="cannot correct"):
        model.correct([1, 2, 3])


# ------------------------------------------------------------------------------- tiled vs single pass


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiles_agree_with_a_single_pass(model, dtype):
    image = (_photo(101, 67) * np.iinfo(dtype).max).astype(dtype)
    single = model.correct_array(image, tile_rows=10_000)
    for rows in (1, 7, 32):
        assert np.array_equal(model.correct_array(image, tile_rows=rows), single)


def test_default_tiles_hold_a_fixed_number_of_pixels_and_agree_with_a_single_pass(model):
    from loopexpose.methods.loopexpose.network import TILE_PIXELS

    image = (_photo(100, 4096) * 255).astype(np.uint8)  # the default tiles: 32 rows, 4 of them
    assert TILE_PIXELS // 4096 == 32
    assert np.array_equal(model.correct_array(image), model.correct_array(image, tile_rows=10_000))


@pytest.mark.parametrize("which", ["random", "default"])
def test_fast_path_agrees_with_forward(model, which):
    """The tiled OpenCV path and the whole-image torch forward give the same picture up to rounding."""
    if which == "default":
        model = loopexpose.load("default")
    photo = _photo(90, 130)
    image = (photo * 255 + 0.5).astype(np.uint8)
    fast = model.correct_array(image, tile_rows=16).astype(np.float32) / 255
    with torch.no_grad():
        x = torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)[None]
        reference = model(x)["output"][0].permute(1, 2, 0).numpy()
    # The network sees OpenCV's 8-bit thumbnail on one side and torch's float one on the other; a random network
    # (heads of std 0.3) turns that into curves up to about 2.5/255 apart, the trained one into rounding.
    assert np.abs(fast - reference).max() <= (3 if which == "random" else 2) / 255
    assert np.abs(fast - reference).mean() < (1.5 if which == "random" else 0.3) / 255
    # tensors on the CPU go through the same fast path, and agree with forward likewise
    assert (model.correct(x[0]).permute(1, 2, 0).numpy() - reference).__abs__().max() < 1e-3


# ---------------------------------------------------------------------------------------- loopexpose.fuse


def _bracket(n=3, height=24, width=36) -> torch.Tensor:
    photo = torch.from_numpy(_photo(height, width)).permute(2, 0, 1) ** 2.2
    return torch.stack([(photo * 2.0**ev).clamp(0, 1) ** (1 / 2.2) for ev in torch.linspace(-2, 2, n)])


def test_fuse_without_a_model_is_mertens(model):
    frames = _bracket()
    out = loopexpose.fuse(frames)
    assert out.shape == (3, 24, 36)
    assert torch.allclose(out, fusion.fuse(frames, "opencv").clamp(0, 1))
    assert torch.allclose(loopexpose.fuse(frames, preset="mertens"), fusion.fuse(frames, "mertens").clamp(0, 1))


def test_fuse_with_a_model_fuses_corrected_frames_with_the_inputs(model):
    frames = _bracket()
    out = loopexpose.fuse(frames, model=model)
    expected = fusion.loop_fuse(frames, model.correct(frames)).clamp(0, 1)
    assert torch.allclose(out, expected, atol=1e-6)
    assert not torch.allclose(out, loopexpose.fuse(frames), atol=1e-3)


def test_fuse_takes_arrays_pil_images_files_and_a_model_path(model, tmp_path):
    frames = _bracket()
    arrays = [(f.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8) for f in frames]
    fused = loopexpose.fuse(arrays, model=model)
    assert fused.dtype == np.uint8 and fused.shape == (24, 36, 3)
    pil = loopexpose.fuse([Image.fromarray(a) for a in arrays], model=model)
    assert isinstance(pil, Image.Image) and np.array_equal(np.asarray(pil), fused)
    scene = tmp_path / "scene"
    scene.mkdir()
    for i, a in enumerate(arrays):
        write_image(scene / f"f{i}.png", a)
    checkpoint = save(model, tmp_path / "model.safetensors")
    from_files = loopexpose.fuse(scene, model=str(checkpoint))
    assert from_files.dtype == np.float32 and from_files.shape == (24, 36, 3)
    assert np.abs(from_files * 255 - fused).max() <= 1.0


def test_fuse_of_files_decodes_every_frame_once(model, tmp_path, frame_reads):
    from loopexpose.brackets import load_bracket, order_bracket
    from loopexpose.io import to_numpy

    scene = tmp_path / "scene"
    scene.mkdir()
    for name, frame in zip("cab", _bracket()):  # names not in exposure order: the order comes from the pixels
        write_image(scene / f"{name}.png", frame.permute(1, 2, 0).numpy())
    expected = to_numpy(loopexpose.fuse(load_bracket(order_bracket(scene)), model=model))
    paths = sorted(scene.iterdir())
    frame_reads.decoded.clear(), frame_reads.measured.clear()
    for frames in (scene, paths):  # a folder, and its files in any order
        assert np.array_equal(loopexpose.fuse(frames, model=model), expected)
    assert sorted(frame_reads.decoded) == sorted(paths * 2) and frame_reads.measured == []


def test_fuse_bad_preset_and_frames(model):
    with pytest.raises(LoopExposeError, match="preset"):
        loopexpose.fuse(_bracket(), preset="nope")
    with pytest.raises(LoopExposeError, match="one size"):
        loopexpose.fuse([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)])
