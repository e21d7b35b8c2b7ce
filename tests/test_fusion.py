"""Mertens fusion: agreement with OpenCV, properties, shapes, dtypes, gradients, and the ``fuse`` command."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import loopexpose
from conftest import synthetic_bracket

from loopexpose import fusion
from loopexpose.fusion import (
    PRESETS,
    contrast,
    fuse,
    mertens_fuse,
    pyr_down,
    pyr_up,
    pyramid_levels,
    quality_weights,
    saturation,
    well_exposedness,
)

ODD_SIZES = [(1, 1), (1, 7), (2, 2), (3, 5), (5, 3), (33, 1), (37, 53), (64, 64), (2, 300)]


def opencv_fuse(bracket: torch.Tensor, preset: str = "opencv") -> torch.Tensor:
    """``cv2.createMergeMertens(...).process`` on a ``(N, 3, H, W)`` bracket in [0, 1], fed float in 0..255.

    Channels are passed in RGB order: OpenCV's only channel-order-dependent step is its luma, which it takes
    with ``COLOR_RGB2GRAY``, so RGB input gives the Rec. 601 luma we use.
    """
    merge = cv2.createMergeMertens(*PRESETS[preset])
    frames = [np.ascontiguousarray(f.permute(1, 2, 0).numpy() * 255.0, dtype=np.float32) for f in bracket]
    return torch.from_numpy(merge.process(frames)).permute(2, 0, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.clamp(0, 1) - b.clamp(0, 1)).double().square().mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def differentiable(x: torch.Tensor) -> torch.Tensor:
    """A copy that records gradients, which sends every function down the pure-torch path."""
    return x.clone().requires_grad_(True)


# ----------------------------------------------------------------------------------------- building blocks


@pytest.mark.parametrize("size", ODD_SIZES)
@pytest.mark.parametrize("torch_path", [False, True], ids=["opencv-path", "torch-path"])
def test_pyramid_ops_and_laplacian_match_opencv(size, torch_path, rng):
    pixels = rng.random((*size, 3), dtype=np.float32)
    x = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
    x = differentiable(x) if torch_path else x
    down = pyr_down(x).detach().permute(1, 2, 0).numpy()
    assert np.abs(down - cv2.pyrDown(pixels).reshape(down.shape)).max() < 1e-6
    height, width = size
    for out_h in {2 * height, max(1, 2 * height - 1)}:
        for out_w in {2 * width, max(1, 2 * width - 1)}:
            ours = pyr_up(x, (out_h, out_w)).detach().permute(1, 2, 0).numpy()
            theirs = cv2.pyrUp(pixels, dstsize=(out_w, out_h)).reshape(ours.shape)
            assert np.abs(ours - theirs).max() < 1e-6, (out_h, out_w)
    grey = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    ours = contrast(x).detach()[0].numpy()
    assert np.abs(ours - np.abs(cv2.Laplacian(grey, cv2.CV_32F))).max() < 2e-6


def test_measures_on_known_pixels():
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    grey = torch.full((3, 1, 1), 0.5)
    assert saturation(red).item() == pytest.approx(math.sqrt(2 / 3))
    assert saturation(grey).item() == 0
    assert well_exposedness(grey).item() == pytest.approx(1.0)
    assert well_exposedness(torch.ones(3, 1, 1)).item() == pytest.approx(math.exp(-3 * 0.25 / 0.08))
    assert contrast(torch.rand(3, 8, 8).mul(0).add(0.3)).abs().max().item() < 1e-6  # flat image: no contrast


def test_pyramid_levels_is_opencvs():
    assert pyramid_levels(356, 536) == 9  # floor(log2(356)) + 1
    assert pyramid_levels(512, 700) == 10  # exact power of two
    assert pyramid_levels(1, 1) == 1
    assert pyramid_levels(4000, 6000) == 12


# --------------------------------------------------------------------------------------- against OpenCV


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("shape", [(3, 37, 53), (2, 1, 7), (4, 5, 3), (5, 64, 64), (3, 2, 2), (2, 33, 1), (2, 3, 301)])
def test_matches_opencv_on_synthetic_odd_sizes(shape, preset):
    bracket = synthetic_bracket(*shape)
    reference = opencv_fuse(bracket, preset)
    assert psnr(fuse(bracket, preset), reference) >= 45
    assert psnr(fuse(differentiable(bracket), preset).detach(), reference) >= 45


@pytest.mark.data
@pytest.mark.slow
def test_matches_opencv_on_every_hdrps_scene(brackets_root):
    from loopexpose.brackets import find_scenes, list_images
    from loopexpose.io import read_image, to_tensor

    scenes = find_scenes(brackets_root / "hdrps")
    assert len(scenes) >= 20
    worst = math.inf
    for scene in scenes:
        # Fusion does not depend on frame order, so skip order_bracket (it decodes every frame once more).
        bracket = torch.stack([to_tensor(read_image(path).pixels) for path in list_images(scene)])
        value = psnr(fuse(bracket, "opencv"), opencv_fuse(bracket, "opencv"))
        assert value >= 45, scene.name
        worst = min(worst, value)
    assert worst >= 45


# ----------------------------------------------------------------------------------------------- properties


@pytest.mark.parametrize("copies", [2, 5])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_copies_of_one_image_fuse_to_that_image(copies, preset):
    image = synthetic_bracket(3, 29, 41)[1]
    stacked = image.expand(copies, -1, -1, -1)
    assert torch.allclose(fuse(stacked, preset), image, atol=1e-5)
    assert torch.allclose(fuse(differentiable(stacked.contiguous()), preset).detach(), image, atol=1e-5)


def test_single_frame_is_returned_unchanged():
    bracket = synthetic_bracket(1, 17, 23)
    out = mertens_fuse(bracket)
    assert torch.equal(out, bracket[0])
    out.add_(1)  # a copy, not a view of the input
    assert bracket.max() <= 1


@pytest.mark.parametrize("exponents", [PRESETS["mertens"], PRESETS["opencv"], (0.5, 2.0, 1.5), (0, 0, 0)])
def test_weights_are_non_negative_and_sum_to_one(exponents):
    bracket = torch.cat([synthetic_bracket(4, 21, 34), torch.full((1, 3, 21, 34), 0.5)])  # grey: zero weight
    weights = quality_weights(bracket, *exponents)
    assert weights.shape == (5, 1, 21, 34)
    assert (weights >= 0).all()
    assert torch.allclose(weights.sum(0), torch.ones(1, 21, 34), atol=1e-6)


def test_strip_wise_weights_equal_whole_image_weights(monkeypatch):
    bracket = synthetic_bracket(3, 45, 31)
    whole = quality_weights(bracket)
    monkeypatch.setattr(fusion, "STRIP_PIXELS", 3 * 31 * 4)  # 4-row strips
    assert torch.allclose(quality_weights(bracket), whole, rtol=0, atol=1e-7)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_output_is_unclipped_but_near_range_and_in_range_after_clipping(preset):
    bracket = synthetic_bracket(5, 48, 64)
    out = fuse(bracket, preset)
    assert out.shape == (3, 48, 64) and torch.isfinite(out).all()
    # Not clipped (Laplacian blending overshoots at strong edges, here up to ~0.2 on a tiny busy image)...
    assert out.min() > -0.5 and out.max() < 1.5
    assert out.min() < 0 or out.max() > 1
    clipped = out.clamp(0, 1)
    assert clipped.min() >= 0 and clipped.max() <= 1


@pytest.mark.parametrize("exponents", [PRESETS["mertens"], PRESETS["opencv"], (0.5, 2.0, 1.5)])
def test_gradients_reach_the_inputs_and_are_finite(exponents):
    # Includes flat grey frames (zero saturation and contrast: where sqrt and pow have infinite slopes).
    bracket = torch.cat([synthetic_bracket(3, 19, 26), torch.full((1, 3, 19, 26), 0.5)]).requires_grad_(True)
    out = mertens_fuse(bracket, *exponents)
    out.square().mean().backward()
    assert bracket.grad is not None and torch.isfinite(bracket.grad).all() and bracket.grad.abs().sum() > 0


def test_gradcheck_in_float64():
    bracket = synthetic_bracket(2, 5, 6).double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: mertens_fuse(x, 1.0, 1.0, 1.0), (bracket,), atol=1e-5, fast_mode=True)


# --------------------------------------------------------------------------------------- shapes and paths


def test_batch_of_brackets_equals_one_by_one():
    batch = torch.stack([synthetic_bracket(3, 23, 35, seed=0), synthetic_bracket(3, 23, 35).flip(-1)])
    fused = fuse(batch)
    assert fused.shape == (2, 3, 23, 35)
    for i in range(2):
        assert torch.allclose(fused[i], fuse(batch[i]), atol=1e-6)
    assert torch.allclose(fuse(differentiable(batch)).detach(), fused, atol=1e-5)


@pytest.mark.parametrize("size", [(1, 1), (1, 9), (9, 1), (2, 1000), (7, 3)])
def test_any_size_works(size):
    bracket = torch.rand(3, 3, *size, generator=torch.Generator().manual_seed(1))
    assert fuse(bracket).shape == (3, *size)
    assert torch.allclose(fuse(differentiable(bracket)).detach(), fuse(bracket), atol=1e-5)
    assert psnr(fuse(bracket), opencv_fuse(bracket)) >= 45


def test_opencv_path_equals_torch_path():
    bracket = synthetic_bracket(4, 57, 83)
    for preset in PRESETS:
        assert torch.allclose(fuse(bracket, preset), fuse(differentiable(bracket), preset).detach(), atol=1e-5)


def test_chunked_blending_equals_unchunked(monkeypatch):
    bracket = differentiable(synthetic_bracket(5, 20, 30))
    whole = fuse(bracket).detach()
    monkeypatch.setattr(fusion, "CHUNK_PIXELS", 2 * 20 * 30)  # two frames at a time
    assert torch.allclose(fuse(bracket).detach(), whole, atol=1e-6)


def test_levels_option():
    bracket = synthetic_bracket(3, 16, 16)
    weights = quality_weights(bracket)
    assert torch.allclose(mertens_fuse(bracket, levels=1), (weights * bracket).sum(0), atol=1e-6)
    assert not torch.allclose(mertens_fuse(bracket, levels=2), mertens_fuse(bracket), atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_dtypes_on_cpu(dtype):
    bracket = synthetic_bracket(3, 24, 40)
    out = fuse(bracket.to(dtype))
    assert out.dtype == dtype
    error = (out.float() - fuse(bracket)).abs()
    assert error.mean() < (1e-6 if dtype == torch.float64 else 5e-3) and error.max() < 0.06


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    bracket = synthetic_bracket(4, 37, 53)
    out = fuse(bracket.to("cuda", dtype))
    assert out.device.type == "cuda" and out.dtype == dtype
    assert (out.float().cpu() - fuse(bracket)).abs().mean() < (1e-5 if dtype == torch.float32 else 5e-3)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown fusion preset"):
        fuse(torch.rand(2, 3, 4, 4), "paper")
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        fuse(torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match=r"\(\*, 3, H, W\)"):
        fuse(torch.rand(2, 4, 4, 4))
    with pytest.raises(TypeError, match="floating-point"):
        fuse(torch.zeros(2, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="exponent"):
        mertens_fuse(torch.rand(2, 3, 4, 4), contrast=-1)
    with pytest.raises(ValueError, match="levels"):
        mertens_fuse(torch.rand(2, 3, 4, 4), levels=0)


# ---------------------------------------------------------------------------------------- the LoopExpose MEF


def test_loop_fuse_without_detail_or_corrected_frames_is_mertens():
    bracket = synthetic_bracket(4, 45, 61)
    plain = mertens_fuse(bracket, *PRESETS["mertens"])
    assert psnr(fusion.loop_fuse(bracket, detail=0.0), plain) > 60
    # every level from corrected + input frames: Mertens of all of them
    corrected = synthetic_bracket(4, 45, 61).flip(-1)
    both = mertens_fuse(torch.cat([corrected, bracket]), *PRESETS["mertens"])
    assert psnr(fusion.loop_fuse(bracket, corrected, detail=0.0, base_levels=99), both) > 60
    assert psnr(fusion.loop_fuse(bracket, corrected, detail=0.0), both) < 50  # normally only the base is


def test_loop_fuse_takes_tone_from_corrected_frames_and_detail_from_inputs():
    # A flat-toned textured scene, under-exposed by 2 stops; the "corrected" frames are the scene, flat-blurred.
    rng = torch.Generator().manual_seed(0)
    scene = (0.5 + 0.15 * torch.randn(1, 1, 96, 96, generator=rng)).clamp(0, 1).expand(1, 3, -1, -1)
    inputs = torch.cat([scene * 0.25, scene * 0.5])
    corrected = torch.full_like(inputs, 0.5)
    fused = fusion.loop_fuse(inputs, corrected)
    assert abs(fused.mean().item() - 0.5) < abs(fusion.loop_fuse(inputs).mean().item() - 0.5) - 0.05
    assert fused.std().item() > 0.5 * inputs[1].std().item()  # the texture comes from the inputs


def test_loop_fuse_detail_weights_raise_mef_ssim():
    from loopexpose.metrics import mef_ssim

    bracket = synthetic_bracket(5, 96, 128)
    plain = mertens_fuse(bracket, *PRESETS["mertens"]).clamp(0, 1)
    detailed = fusion.loop_fuse(bracket).clamp(0, 1)
    assert mef_ssim(bracket, detailed).item() > mef_ssim(bracket, plain).item()


@pytest.mark.parametrize("size", [(1, 1), (2, 9), (37, 53), (64, 64)])
def test_loop_fuse_shapes_batches_and_dtypes(size):
    bracket = synthetic_bracket(3, *size)
    corrected = bracket.flip(-1) ** 0.5
    one = fusion.loop_fuse(bracket, corrected)
    assert one.shape == (3, *size) and torch.isfinite(one).all()
    batch = fusion.loop_fuse(torch.stack([bracket, corrected]), torch.stack([corrected, bracket]))
    assert torch.allclose(batch[0], one, atol=1e-5)
    assert fusion.loop_fuse(bracket.double(), corrected.double()).dtype == torch.float64


def test_loop_fuse_refuses_bad_arguments():
    bracket = torch.rand(3, 3, 8, 8)
    with pytest.raises(ValueError, match="does not match"):
        fusion.loop_fuse(bracket, torch.rand(3, 3, 8, 9))
    with pytest.raises(ValueError, match="base_levels"):
        fusion.loop_fuse(bracket, base_levels=0)
    with pytest.raises(ValueError, match="detail"):
        fusion.loop_fuse(bracket, detail=-1.0)


# ------------------------------------------------------------------------------------------------- the CLI


def _write_scene(folder, bracket):
    from loopexpose.io import to_numpy, write_image

    folder.mkdir(parents=True)
    for i, frame in enumerate(bracket):
        write_image(folder / f"frame_{i}.png", to_numpy(frame), bits=16)
    return folder


def test_fuse_command_writes_one_file_per_scene_and_reports_bad_scenes(tmp_path):
    from typer.testing import CliRunner

    from loopexpose.cli import app
    from loopexpose.io import read_image

    collection = tmp_path / "collection"
    _write_scene(collection / "odd (1)", synthetic_bracket(3, 21, 30))
    _write_scene(collection / "two", synthetic_bracket(2, 16, 16))
    broken = collection / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["fuse", str(collection), "-o", str(out), "--out-bits", "16"])
    assert result.exit_code == 2, result.output
    assert sorted(p.name for p in out.iterdir()) == ["odd (1).png", "two.png"]  # nothing half-written
    errors = [line for line in result.output.splitlines() if "error" in line]
    assert len(errors) == 1 and "a.png" in errors[0]
    photo = read_image(out / "odd (1).png")
    assert photo.bit_depth == 16 and photo.pixels.shape == (21, 30, 3)
    fused = loopexpose.fuse(collection / "odd (1)")
    assert np.abs(photo.pixels - fused).max() < 1e-4  # 16-bit output

    result = CliRunner().invoke(app, ["fuse", str(collection / "two"), "-o", str(out), "--preset", "paper"])
    assert result.exit_code != 0 and "preset" in str(result.exception or result.output)
