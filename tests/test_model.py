"""The CurveGrid network: shapes, identity start, batch independence, exact tiling, fast CPU path, checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import loopexpose
from loopexpose import metrics
from conftest import randomised_curvegrid as randomised
from loopexpose.errors import LoopExposeError
from loopexpose.models import create, load, save
from loopexpose.methods.loopexpose.network import apply_curves, bilateral_slice




def test_fresh_model_applies_the_exposure_prior():
    """Untrained, the curves are the prior: linear light scaled so each frame's key (its mean luma) lands on
    mid-grey. Exposures of one scene then come out alike, and clipped white comes out neutral grey."""
    from conftest import synthetic_bracket

    model = create("curvegrid").eval()
    bracket = synthetic_bracket(5, 96, 96)  # -2..+2 EV in linear light
    with torch.no_grad():
        out = model(bracket)
    assert out["output"].shape == bracket.shape and out["luminance"].shape == (5,)
    means = (out["output"] * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(1).mean((1, 2))
    # near mid-grey (118/255 = 0.46; brightened frames roll their highlights off a little)
    assert ((means > 0.38) & (means < 0.48)).all(), means
    clipped = (bracket[4] == 1).all(0)
    assert clipped.sum() > 100
    white = out["output"][4][:, clipped]
    assert (white < 0.9).all() and (white.amax(0) - white.amin(0)).max() < 1e-6  # darkened, neutral
    assert metrics.consistency(out["output"]) > 22 > metrics.consistency(bracket) + 8


@pytest.mark.parametrize("size", [(1, 1), (7, 3), (33, 65), (300, 17)])
def test_any_size(size):
    model = randomised()
    with torch.no_grad():
        out = model(torch.rand(1, 3, *size))["output"]
    assert out.shape == (1, 3, *size)
    assert out.min() >= 0 and out.max() <= 1


def test_parameter_budget():
    assert sum(p.numel() for p in create("curvegrid").parameters()) < 500_000


def test_output_independent_of_batch():
    model = randomised()
    x = torch.rand(4, 3, 40, 56)
    with torch.no_grad():
        together = model(x)["output"]
        alone = torch.cat([model(x[i : i + 1])["output"] for i in range(4)])
    assert torch.allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize("kind", ["mixed", "dark"])
def test_tiles_equal_whole_image(kind):
    model = randomised() if kind == "mixed" else load("default")
    x = torch.rand(1, 3, 101, 64) ** (1 if kind == "mixed" else 4)
    with torch.no_grad():
        params = model.predict(x)
        assert (params.blend.item() > 0) == (kind == "dark")  # the dark frame's result includes the exposure blend
        whole = model.apply(x, params)
        tiles = torch.cat(
            [model.apply(x[:, :, r : r + 16], params, rows=(r, min(101, r + 16)), height=101) for r in range(0, 101, 16)],
            dim=2,
        )
    assert torch.allclose(whole, tiles, atol=1e-6)


def test_forward_tiled_equals_forward():
    model = randomised()
    x = torch.rand(2, 3, 77, 45)
    with torch.no_grad():
        assert torch.allclose(model.forward_tiled(x, tile_rows=10), model(x)["output"], atol=1e-6)


def test_curves_are_piecewise_linear_interpolation():
    curves = torch.tensor([[[0.0, 0.5, 1.0]] * 3])
    x = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert torch.allclose(apply_curves(x.contiguous(), curves)[0, 0, 0], torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    curves = torch.tensor([[[0.0, 0.8, 1.0]] * 3])
    assert torch.allclose(apply_curves(x.contiguous(), curves)[0, 0, 0], torch.tensor([0.0, 0.4, 0.8, 0.9, 1.0]))


def test_bilateral_slice_picks_bins_by_guide():
    grid = torch.zeros(1, 1, 2, 1, 1)
    grid[0, 0, 1] = 1.0  # offset 0 in the dark bin, 1 in the bright bin
    guide = torch.tensor([[[0.0, 0.25, 1.0]]])
    out = bilateral_slice(grid, guide)
    assert torch.allclose(out[0, 0, 0], torch.tensor([0.0, 0.25, 1.0]))


def test_gradients_reach_every_head():
    model = randomised()
    out = model(torch.rand(2, 3, 32, 32))
    (out["output"].mean() + out["luminance"].sum()).backward()
    for name in ("curve_head", "grid_head", "luminance_head"):
        grad = getattr(model, name).weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", ["mixed", "bright", "dark"])
def test_fast_cpu_path_matches_torch(kind):
    import cv2

    model = randomised()
    rng = np.random.default_rng(0)
    image = (rng.random((90, 130, 3)) ** 2 * 255).astype(np.uint8)
    if kind == "bright":  # most pixels in the highlight ramp, where the neutral curve and the offset-as-gain rules apply
        image = (255 * (0.6 + 0.4 * rng.random((90, 130, 3)))).astype(np.uint8)
    if kind == "dark":  # far below mid-grey: the bundled model's exposure floor applies
        image, model = image // 6, load("default")
    fast = model.correct(image).astype(np.float32) / 255
    side = model.config.thumb  # the thumbnail the fast path makes
    thumb = cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
    with torch.no_grad():
        params = model.predict(torch.from_numpy(thumb).permute(2, 0, 1)[None])
        ref = model.apply(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255, params)[0].permute(1, 2, 0).numpy()
    assert (params.gain.item() > 1.05 and params.blend.item() > 0) or kind != "dark"
    assert np.abs(fast - ref).max() < 3 / 255
    assert np.abs(fast - ref).mean() < 1 / 255


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_correct_round_trips_array_kinds(dtype):
    model = randomised()
    top = {np.uint8: 255, np.uint16: 65535, np.float32: 1.0}[dtype]
    image = (np.random.default_rng(1).random((21, 34, 3)) * top).astype(dtype)
    out = model.correct(image)
    assert out.dtype == dtype and out.shape == image.shape
    assert not np.array_equal(out, image)


def test_correct_pil_and_tensor():
    model = randomised()
    image = Image.fromarray((np.random.default_rng(2).random((20, 30, 3)) * 255).astype(np.uint8))
    out = model.correct(image)
    assert isinstance(out, Image.Image) and out.size == image.size and out.mode == "RGB"
    tensor = torch.rand(2, 2, 3, 12, 9, dtype=torch.float64)
    out = model.correct(tensor)
    assert out.shape == tensor.shape and out.dtype == torch.float64


def test_correct_rejects_bad_shapes():
    with pytest.raises(LoopExposeError, match="expected an \\(H, W, 3\\)"):
        create("curvegrid").correct(np.zeros((4, 4), np.uint8))
    with pytest.raises(LoopExposeError, match="cannot correct"):
        create("curvegrid").correct("photo.jpg")


def test_checkpoint_round_trip(tmp_path):
    model = randomised()
    path = save(model, tmp_path / "m.safetensors", epoch=3)
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["model"]["arch"] == "curvegrid" and meta["epoch"] == 3
    again = load(path)
    x = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        assert torch.equal(model(x)["output"], again(x)["output"])


def test_load_errors_are_one_line(tmp_path):
    with pytest.raises(LoopExposeError, match="unknown model"):
        load("no-such-model")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    (tmp_path / "bad.json").write_text(json.dumps({"model": {"arch": "curvegrid", "config": {}}}))
    with pytest.raises(LoopExposeError, match="not a readable safetensors"):
        load(bad)
    lone = tmp_path / "lone.safetensors"
    save(create("curvegrid"), lone)
    (tmp_path / "lone.json").unlink()
    with pytest.raises(LoopExposeError, match="metadata"):
        load(lone)


def test_bundled_default_loads():
    model = loopexpose.load("default")
    assert model.arch == "curvegrid"
    image = np.full((16, 24, 3), 20, np.uint8)
    assert model.correct(image).mean() > image.mean()  # a dark frame gets brighter


def test_highlights_get_no_colour():
    """Pixels bright in every channel keep their hue: the curves give way to their mean and local offsets act as
    a gain, so a randomised network (strong per-channel curves) adds no chroma there, on both paths."""
    model = randomised()
    rng = np.random.default_rng(1)
    bright = 0.86 + 0.14 * rng.random((64, 64, 3)).astype(np.float32)
    source = torch.from_numpy(bright).permute(2, 0, 1)
    with torch.no_grad():
        slow = model(source[None])["output"][0]
    fast = torch.from_numpy(model.correct((bright * 255).round().astype(np.uint8)).astype(np.float32) / 255).permute(2, 0, 1)
    for out in (slow, fast):
        assert metrics.highlight_chroma_added(out, source).item() < 0.5
    dark = torch.from_numpy(0.2 + 0.3 * rng.random((3, 64, 64)).astype(np.float32))
    with torch.no_grad():  # elsewhere the per-channel curves do change colour (the test would notice a no-op)
        coloured = model(dark[None])["output"][0]
    assert (coloured[0] - coloured[2]).abs().mean() > (dark[0] - dark[2]).abs().mean() + 0.02


def test_neutral_ramp_bracket_stays_neutral():
    """A grey ramp rendered at -2..+2 EV comes out grey from the bundled model: CIELAB chroma at most 2 on
    average over each frame (the global curves may shift the white balance slightly; measured 0.3-1.7, max 2.8 at
    -2 EV) and nothing added to its bright pixels."""
    import kornia

    model = loopexpose.load("default")
    ramp = torch.linspace(0, 1, 256).view(1, 1, 256).expand(3, 32, 256)
    linear = kornia.color.rgb_to_linear_rgb(ramp)
    for ev in (-2, -1, 0, 1, 2):
        frame = kornia.color.linear_rgb_to_rgb((linear * 2.0**ev).clamp(0, 1))
        out = model.correct(frame)
        chroma = kornia.color.rgb_to_lab(out[None])[0, 1:].norm(dim=0)
        assert chroma.mean() <= 2.0, (ev, float(chroma.mean()))
        added = metrics.highlight_chroma_added(out, frame)
        assert added.isnan() or added <= 0.5, (ev, float(added))


def test_exposure_floor_brings_a_dark_frame_to_its_normal_exposures_level():
    import kornia
    from skimage import data as skdata

    from loopexpose.baselines import MID_GREY, mean_luma

    model = load("default")
    normal = torch.from_numpy(skdata.coffee()).permute(2, 0, 1)[None].float() / 255
    dark = kornia.color.linear_rgb_to_rgb(kornia.color.rgb_to_linear_rgb(normal) / 8)  # the same scene, -3 EV
    with torch.no_grad():
        level = mean_luma(model(normal)["output"]).item()
        floored = model(dark)["output"]
        assert model.predict(dark).gain.item() > 1.2 > 1.1 > model.predict(normal).gain.item()
        model.train()  # the network alone: no floor
        unfloored = model(dark)["output"]
    target = (level * MID_GREY) ** 0.5  # the network's level shrunk halfway to mid-grey
    assert abs(mean_luma(floored).item() - target) < 0.01 < 0.02 < abs(mean_luma(unfloored).item() - target)


def test_exposure_blend_averages_a_dark_frames_result_with_its_plain_exposure():
    import kornia
    from skimage import data as skdata

    from loopexpose.baselines import mean_luma
    from loopexpose.exposure import EXPOSURE_BLEND, finish

    model = load("default")
    normal = torch.from_numpy(skdata.coffee()).permute(2, 0, 1)[None].float() / 255
    dark = kornia.color.linear_rgb_to_rgb(kornia.color.rgb_to_linear_rgb(normal) / 8)  # the same scene, -3 EV
    bright = kornia.color.linear_rgb_to_rgb((kornia.color.rgb_to_linear_rgb(normal) * 4).clamp(0, 1))
    with torch.no_grad():
        params = model.predict(dark)
        out = model.apply(dark, params)
        assert params.blend.item() == EXPOSURE_BLEND and params.exposure.item() > 4  # about 3 stops back
        params.blend.zero_()
        network = model.apply(dark, params)  # the curves, grid and floor alone
        exposed = finish(dark, params.exposure)  # one gain in linear light
        assert model.predict(bright).blend.item() == 0  # bright frames keep the curves alone
    assert abs(mean_luma(exposed).item() - mean_luma(network).item()) < 0.01  # exposed to the result's level
    assert torch.allclose(out, torch.lerp(network, exposed, EXPOSURE_BLEND), atol=1e-5)
    assert (out - network).abs().mean() > 0.005  # the blend changes the picture


def test_expose_to_level_reaches_the_level_brightening_with_roll_off_and_darkening_by_a_gain():
    import kornia
    from skimage import data as skdata

    from loopexpose.baselines import mean_luma
    from loopexpose.exposure import expose_to_level

    photo = torch.from_numpy(skdata.coffee()[::4, ::4].copy()).permute(2, 0, 1)[None].float() / 255
    photos = torch.cat([photo, photo])
    out = expose_to_level(photos, torch.tensor([0.7, 0.2]))
    assert torch.allclose(mean_luma(out).flatten(), torch.tensor([0.7, 0.2]), atol=2e-3)
    white = torch.ones(1, 3, 2, 2)
    assert expose_to_level(torch.cat([photo[..., :2, :2], white]), torch.tensor([0.9, 0.5]))[1].min() < 0.6
    brighter = expose_to_level(photo, torch.tensor([0.7]))
    assert brighter.max() <= 1 and (brighter >= 0.999).float().mean() < 0.01  # roll-off: almost nothing clips
    linear = kornia.color.rgb_to_linear_rgb(photo)  # darkening: one gain in linear light, ratios kept
    darker = kornia.color.rgb_to_linear_rgb(out[1:])
    ratio = darker[linear > 0.05] / linear[linear > 0.05]
    assert ratio.std() / ratio.mean() < 0.01
