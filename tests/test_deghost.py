"""Ghost removal: detection, the ghost-free frames and weights, the fusion hooks, and ``deghost`` in the API,
the ``fuse`` command and the web demo."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import synthetic_bracket

import loopexpose
from loopexpose import deghost, fusion
from loopexpose.io import to_numpy, write_image

EVS = (-1.5, 0.0, 1.5)


def _linear_photo(name: str, height: int, width: int) -> torch.Tensor:
    from skimage import data, transform

    photo = transform.resize(getattr(data, name)()[..., :3], (height, width), anti_aliasing=True)
    return torch.from_numpy(photo.astype(np.float32)).permute(2, 0, 1) ** 2.2


def _render(linear: torch.Tensor, ev: float) -> torch.Tensor:
    """sRGB-ish 8-bit frame of linear light at ``ev`` stops."""
    return torch.floor((linear * 2.0**ev).clamp(0, 1) ** (1 / 2.2) * 255 + 0.5) / 255


def moving_bracket(places: list[int], height: int = 96, width: int = 160, side: int = 30, gain: float = 1.0):
    """``(frames, footprints)``: an astronaut bracket (EVs :data:`EVS`, reference in the middle) with a coffee-cup
    patch (its light times ``gain``) at column ``places[n]`` in frame ``n``, rendered at the frame's exposure;
    footprints ``(N, H, W)``."""
    scene = _linear_photo("astronaut", height, width)
    thing = _linear_photo("coffee", side, side) * gain
    frames, footprints = [], torch.zeros(len(places), height, width, dtype=torch.bool)
    top = (height - side) // 2
    for n, (left, ev) in enumerate(zip(places, EVS)):
        linear = scene.clone()
        linear[:, top : top + side, left : left + side] = thing
        frames.append(_render(linear, ev))
        footprints[n, top : top + side, left : left + side] = True
    return torch.stack(frames), footprints


MOVING = [10, 65, 120]  # the object walks left to right; in the reference (frame 1) it is in the middle
STILL = [65, 65, 65]


# ----------------------------------------------------------------------------------------------- detection


def test_reference_is_the_frame_nearest_mid_grey():
    frames, _ = moving_bracket(MOVING)
    assert deghost.reference_index(frames) == 1
    assert deghost.reference_index(frames.flip(0)) == 1


def test_exposure_matching_maps_frames_onto_the_reference():
    frames = synthetic_bracket(3, 64, 96)  # -2, 0, +2 EV
    matched = deghost.match_exposure(frames, reference=1)
    assert torch.equal(matched[1], frames[1])
    usable = (frames[0] > 0.05) & (frames[0] < 0.95) & (frames[1] < 0.95)  # neither frame clipped
    assert (matched[0] - frames[1])[usable].abs().mean() < 0.02
    assert (frames[0] - frames[1])[usable].abs().mean() > 0.1  # before matching they were far apart


def test_static_bracket_is_left_alone_even_where_a_frame_is_clipped():
    frames = synthetic_bracket(3, 64, 96)
    assert (frames[2] >= 0.99).float().mean() > 0.1, "the +2 EV frame must be partly saturated for this test"
    assert float(deghost.inconsistency(frames).max()) <= deghost.THRESHOLD
    clean, weights = deghost.remove_ghosts(frames)
    assert clean is frames and weights is None


def test_moving_object_is_found_in_every_frame_that_disagrees():
    frames, footprints = moving_bracket(MOVING)
    masks = deghost.ghost_masks(frames)
    assert masks.shape == (3, 1, 96, 160) and float(masks[1].max()) == 0  # small frames are not reduced
    for n in (0, 2):
        moved = footprints[n] | footprints[1]  # its own object, and the reference's (missing in this frame)
        assert float(masks[n, 0][moved].mean()) > 0.95
        assert float(masks[n, 0][~moved].mean()) < 0.15  # the dilation around the objects, nothing else


def test_ghost_free_frames_and_weights():
    frames, footprints = moving_bracket(MOVING)
    clean, weights = deghost.remove_ghosts(frames)
    still, _ = moving_bracket(STILL)
    assert weights is not None, "the reference is dark or clipped near its object: some weight must go"
    assert torch.equal(clean[1], frames[1]) and bool((weights[1] == 1).all())
    for n in (0, 2):
        # The object is gone from the frame: what is left where it stood is the reference's background mapped
        # to this frame's exposure, close to the real background of the still bracket.
        where = footprints[n]
        assert (clean[n] - still[n])[:, where].abs().mean() < 0.06 < (frames[n] - still[n])[:, where].abs().mean()
    assert float(weights.min()) >= 0 and float(weights.max()) <= 1


def test_fused_ghost_is_gone_and_plain_fusion_shows_it():
    frames, footprints = moving_bracket(MOVING)
    still, _ = moving_bracket(STILL)
    ghosts = (footprints[0] | footprints[2]) & ~footprints[1]
    for fuse in (
        lambda x, w=None: fusion.fuse(x, frame_weights=w),
        lambda x, w=None: fusion.loop_fuse(x, x, frame_weights=w),
    ):
        target = fuse(still).clamp(0, 1)
        clean, weights = deghost.remove_ghosts(frames)
        ghost_free = (fuse(clean, weights).clamp(0, 1) - target)[:, ghosts].abs().mean()
        plain = (fuse(frames).clamp(0, 1) - target)[:, ghosts].abs().mean()
        assert ghost_free < 0.02 and plain > 0.1, (float(ghost_free), float(plain))


def test_clipped_reference_takes_the_weight_away():
    frames, footprints = moving_bracket(MOVING, gain=8.0)  # a bright thing, blown out in the reference
    assert float((frames[1][:, footprints[1]].amax(0) >= 0.99).float().mean()) > 0.5
    clean, weights = deghost.remove_ghosts(frames)
    # At the reference's object, the darker frame shows the background, and a copy of the blown-out reference
    # cannot replace it: that frame gets no weight there (the fill could only be flat).
    blown = footprints[1] & (frames[1].amax(0) >= 0.99)
    assert float(weights[0, 0][blown].mean()) < 0.1
    assert float(weights[0, 0][~(footprints[0] | footprints[1])].mean()) > 0.95


def test_given_masks_are_used_and_checked():
    frames, _ = moving_bracket(MOVING)
    nothing = torch.zeros(3, 1, 24, 40)
    clean, weights = deghost.remove_ghosts(frames, masks=nothing)
    assert clean is frames and weights is None
    found = deghost.ghost_masks(frames)
    assert torch.equal(deghost.remove_ghosts(frames, masks=found)[0], deghost.remove_ghosts(frames)[0])
    with pytest.raises(ValueError, match="masks must be shaped"):
        deghost.remove_ghosts(frames, masks=torch.zeros(2, 1, 8, 8))


def test_batches_equal_one_bracket_at_a_time():
    moving, _ = moving_bracket(MOVING)
    static = synthetic_bracket(3, 96, 160)
    clean, weights = deghost.remove_ghosts(torch.stack([moving, static]))
    for b, frames in enumerate((moving, static)):
        one_clean, one_weights = deghost.remove_ghosts(frames)
        assert torch.equal(clean[b], one_clean)
        assert torch.equal(weights[b], torch.ones_like(weights[b]) if one_weights is None else one_weights)


def test_large_frames_are_reduced_for_the_masks():
    frames, _ = moving_bracket(MOVING, height=480, width=800, side=150)  # 384 000 px > WORK_PIXELS
    masks = deghost.ghost_masks(frames)
    assert masks.shape[-2:] == (240, 400)  # halved: a whole-number factor
    clean, weights = deghost.remove_ghosts(frames)
    assert clean.shape == frames.shape and not torch.equal(clean[0], frames[0])
    assert weights is None or weights.shape == (3, 1, 480, 800)


def shaken(frames: torch.Tensor, shift: int) -> torch.Tensor:
    """``frames`` with every frame but the middle one (the reference) moved by about ``shift`` pixels, as an
    unaligned hand-held bracket."""
    moved = frames.clone()
    moved[0] = torch.roll(frames[0], (shift, 2 * shift), (1, 2))
    moved[2] = torch.roll(frames[2], (-shift, -shift), (1, 2))
    return moved


def test_a_misaligned_bracket_is_named_and_a_moving_object_is_not():
    with warnings.catch_warnings():
        warnings.simplefilter("error", deghost.MisalignmentWarning)
        deghost.remove_ghosts(moving_bracket(MOVING, height=480, width=800, side=150)[0])  # what moved: no warning
        deghost.remove_ghosts(moving_bracket(STILL, height=480, width=800, side=150)[0])
    still, _ = moving_bracket(STILL, height=480, width=800, side=150)
    with pytest.warns(deghost.MisalignmentWarning, match=r"misaligned: 2 of its 3 frames are shifted .*--align"):
        clean, _ = deghost.remove_ghosts(shaken(still, 8))
    assert not torch.equal(clean[0], shaken(still, 8)[0])  # still deghosted: the warning changes nothing


def test_table_lookup_is_the_nearest_of_4096_entries():
    values = torch.rand(2, 37, 53)
    curve = np.sort(np.random.default_rng(0).random(deghost.CURVE_POINTS)).astype(np.float32)
    table = np.interp(np.linspace(0, 1, 4096), np.linspace(0, 1, curve.size), curve).astype(np.float32)
    nearest = np.floor(values.numpy() * np.float32(4095) + np.float32(0.5)).astype(np.int64)
    index = deghost._lut_index(values)
    assert index.dtype == torch.int32 and torch.equal(index.long(), torch.from_numpy(nearest))
    assert torch.equal(deghost._lut(index[:, 3:20, 5:40], curve), torch.from_numpy(table[nearest[:, 3:20, 5:40]]))


def test_in_place_equals_a_copy():
    frames, _ = moving_bracket(MOVING)
    clean, weights = deghost.remove_ghosts(frames)
    given = frames.clone()
    in_place, same_weights = deghost.remove_ghosts(given, out=given)
    assert in_place is given and torch.equal(in_place, clean) and torch.equal(same_weights, weights)
    with pytest.raises(ValueError, match="out must be"):
        deghost.remove_ghosts(frames, out=frames[:2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    frames, _ = moving_bracket(MOVING)
    clean, weights = deghost.remove_ghosts(frames.cuda())
    assert clean.device.type == weights.device.type == "cuda"
    cpu_clean, cpu_weights = deghost.remove_ghosts(frames)  # the same frames: weights are not None
    assert torch.allclose(clean.cpu(), cpu_clean, atol=1e-6) and torch.allclose(weights.cpu(), cpu_weights)
    fused = fusion.loop_fuse(clean, clean, frame_weights=weights).cpu()
    assert (fused - fusion.loop_fuse(cpu_clean, cpu_clean, frame_weights=cpu_weights)).abs().mean() < 1e-5


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        deghost.remove_ghosts(torch.rand(3, 4, 8, 8))
    with pytest.raises(TypeError):
        deghost.ghost_masks(np.zeros((3, 3, 8, 8)))


# -------------------------------------------------------------------------------------------- fusion hooks


def test_frame_weights_of_one_change_nothing():
    frames = synthetic_bracket(4, 37, 53)
    ones = torch.ones(4, 1, 37, 53)
    assert torch.equal(fusion.fuse(frames, frame_weights=ones), fusion.fuse(frames))
    assert torch.equal(fusion.loop_fuse(frames, frames.flip(-1), frame_weights=ones),
                       fusion.loop_fuse(frames, frames.flip(-1)))  # fmt: skip
    differentiable = frames.clone().requires_grad_(True)  # the pure-torch path
    assert torch.allclose(fusion.fuse(differentiable, frame_weights=ones), fusion.fuse(differentiable))


def test_a_frame_weighted_zero_everywhere_is_left_out():
    frames = synthetic_bracket(4, 37, 53)
    weights = torch.ones(4, 1, 37, 53)
    weights[3] = 0
    # Left out even where no frame has any quality (grey or clipped pixels, where the epsilon decides).
    for preset in ("opencv", "mertens"):
        assert torch.allclose(fusion.fuse(frames, preset, frame_weights=weights), fusion.fuse(frames[:3], preset),
                              atol=1e-5)  # fmt: skip
    torch_path = fusion.fuse(frames.clone().requires_grad_(True), frame_weights=weights)
    assert torch.allclose(torch_path, fusion.fuse(frames[:3]), atol=1e-5)
    batch = fusion.fuse(torch.stack([frames, frames]), frame_weights=torch.stack([weights, torch.ones_like(weights)]))
    assert torch.allclose(batch[0], fusion.fuse(frames[:3]), atol=1e-5) and torch.equal(batch[1], fusion.fuse(frames))


def test_zero_weight_in_every_frame_averages_evenly():
    frames = synthetic_bracket(3, 16, 24)
    zeros = torch.zeros(3, 1, 16, 24)
    assert torch.allclose(fusion.mertens_fuse(frames, levels=1, frame_weights=zeros), frames.mean(0), atol=1e-6)


def test_frame_weights_of_the_wrong_shape_are_refused():
    frames = synthetic_bracket(3, 16, 24)
    with pytest.raises(ValueError, match="frame_weights must be shaped"):
        fusion.fuse(frames, frame_weights=torch.ones(3, 16, 24))
    with pytest.raises(ValueError, match="frame_weights must be shaped"):
        fusion.loop_fuse(frames, frames, frame_weights=torch.ones(2, 1, 16, 24))


# ------------------------------------------------------------------------------------ API, command, web app


def test_api_deghost_for_tensors_arrays_and_models():
    frames, footprints = moving_bracket(MOVING)
    clean, weights = deghost.remove_ghosts(frames)
    out = loopexpose.fuse(frames, deghost=True)
    assert torch.equal(out, fusion.fuse(clean, frame_weights=weights).clamp(0, 1))
    assert not torch.allclose(out, loopexpose.fuse(frames), atol=0.05)
    arrays = [(to_numpy(f) * 255 + 0.5).astype(np.uint8) for f in frames]
    assert loopexpose.fuse(arrays, deghost=True).dtype == np.uint8

    class Brighter:
        def correct(self, x):
            return (x * 1.2).clamp(0, 1)

    with_model = loopexpose.fuse(frames, model=Brighter(), deghost=True)
    expected = fusion.loop_fuse(clean, (clean * 1.2).clamp(0, 1), frame_weights=weights).clamp(0, 1)
    assert torch.allclose(with_model, expected, atol=1e-6)


def _in_place_calls(monkeypatch) -> list[bool]:
    """Whether each ``remove_ghosts`` call from here on wrote the ghost-free frames over its input (no copy)."""
    calls, remove = [], deghost.remove_ghosts

    def spy(frames, reference=None, masks=None, out=None):
        calls.append(out is frames)
        return remove(frames, reference, masks, out)

    monkeypatch.setattr(deghost, "remove_ghosts", spy)
    return calls


def test_api_deghost_writes_over_the_frames_only_when_they_are_its_own(monkeypatch):
    frames, _ = moving_bracket(MOVING)
    clean, _ = deghost.remove_ghosts(frames)
    expected = loopexpose.fuse(frames, deghost=True)
    calls = _in_place_calls(monkeypatch)
    given = frames.clone()
    assert torch.equal(loopexpose.fuse(given, deghost=True), expected) and torch.equal(given, frames)  # a copy
    assert torch.equal(loopexpose.fuse(given, deghost=True, overwrite_frames=True), expected)
    assert torch.equal(given, clean)  # the ghost-free frames were written over the frames given: no copy
    as_bytes = (frames * 255).round().to(torch.uint8)  # converted to floats here: that copy is its own
    assert torch.equal(loopexpose.fuse(as_bytes, deghost=True), (expected * 255).round().to(torch.uint8))
    assert calls == [False, True, True]
    batch = frames.expand(2, *frames.shape)  # both brackets in one memory: writing one would change the other
    assert torch.equal(loopexpose.fuse(batch, deghost=True, overwrite_frames=True), expected.expand(2, *expected.shape))
    assert not any(calls[3:]) and torch.equal(batch[1], frames)  # copied (each bracket of the batch too)
    batch = torch.stack([frames, frames])  # a batch of its own: each bracket written over
    assert torch.equal(loopexpose.fuse(batch, deghost=True, overwrite_frames=True), expected.expand(2, *expected.shape))
    assert torch.equal(batch, clean.expand(2, *clean.shape))


def test_fuse_command_deghosts_the_frames_it_read_in_place(tmp_path, monkeypatch):
    from loopexpose.cli.fuse import fuse_scene
    from loopexpose.io import read_image

    frames, _ = moving_bracket(MOVING)
    scene = tmp_path / "walker"
    scene.mkdir()
    for n, frame in enumerate(frames):
        write_image(scene / f"walker_{n}.png", to_numpy(frame), bits=16)
    calls = _in_place_calls(monkeypatch)
    target, _ = fuse_scene(scene, tmp_path / "walker.png", bits=16, deghost=True)
    assert calls == [True]
    assert np.abs(read_image(target).pixels - loopexpose.fuse(scene, deghost=True)).max() < 1e-4


def test_fuse_command_deghost(tmp_path):
    from typer.testing import CliRunner

    from loopexpose.cli import app
    from loopexpose.io import read_image

    frames, _ = moving_bracket(MOVING)
    scene = tmp_path / "walker"
    scene.mkdir()
    for n, frame in enumerate(frames):
        write_image(scene / f"walker_{n}.png", to_numpy(frame), bits=16)
    runner = CliRunner()
    result = runner.invoke(app, ["fuse", str(scene), "-o", str(tmp_path / "out"), "--deghost", "--out-bits", "16"])
    assert result.exit_code == 0, result.output
    written = read_image(tmp_path / "out" / "walker.png").pixels
    assert np.abs(written - loopexpose.fuse(scene, deghost=True)).max() < 1e-4
    plain = runner.invoke(app, ["fuse", str(scene), "-o", str(tmp_path / "plain"), "--out-bits", "16"])
    assert plain.exit_code == 0
    assert np.abs(read_image(tmp_path / "plain" / "walker.png").pixels - written).max() > 0.1
    assert "--deghost" in runner.invoke(app, ["fuse", "--help"]).output
    assert "misaligned" not in result.output


def test_fuse_command_deghost_warns_of_a_misaligned_bracket(tmp_path):
    from typer.testing import CliRunner

    from loopexpose.cli import app

    scene = tmp_path / "handheld"
    scene.mkdir()
    for n, frame in enumerate(shaken(moving_bracket(STILL)[0], 4)):
        write_image(scene / f"handheld_{n}.png", to_numpy(frame))
    result = CliRunner().invoke(app, ["fuse", str(scene), "-o", str(tmp_path / "out"), "--deghost"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "misaligned" in line]
    assert len(lines) == 1 and lines[0].startswith(f"warning: {scene}: the bracket looks misaligned"), result.output
    assert "--align" in lines[0] and (tmp_path / "out" / "handheld.png").is_file()


def test_web_demo_remove_ghosts(tmp_path):
    from loopexpose.app import WebDemo
    from loopexpose.io import read_image

    class Identity:
        def correct(self, image):
            return image

    frames, _ = moving_bracket(MOVING)
    demo = WebDemo(models={"identity": Identity()}, workdir=tmp_path / "web")
    try:
        paths = []
        for n, frame in enumerate(frames):
            folder = demo.uploads / f"u{n}"
            folder.mkdir()
            paths.append(str(write_image(folder / f"walker_{n}.png", to_numpy(frame))))
        result = demo.fuse(paths, "identity", deghost=True)
        clean, weights = deghost.remove_ghosts(frames)
        expected = to_numpy(fusion.loop_fuse(clean, clean, frame_weights=weights).clamp(0, 1))
        assert np.abs(read_image(result.download).pixels - expected).max() <= 1 / 255 + 1e-6
        assert "Ghost removal: moving content replaced in 2 of 3 frames" in result.report
        assert "Ghost removal" not in demo.fuse(paths, "identity").report
    finally:
        demo.close()


# ------------------------------------------------------------------------------------------------ real data


@pytest.mark.data
def test_real_static_scene_with_a_pasted_moving_object(brackets_root):
    from loopexpose import brackets

    scene = brackets_root / "hdrps" / "Bigfoot Pass"
    bracket = brackets.order_bracket(scene)
    reference = bracket.reference_index()
    frames = brackets.load_bracket(bracket, max_side=320)[reference - 1 : reference + 2]  # -1, 0, +1 EV
    assert deghost.reference_index(frames) == 1
    assert float(deghost.ghost_masks(frames).max()) < 0.5, "a static scene: nothing should move"
    thing = _linear_photo("coffee", 40, 40)
    moved, still = frames.clone(), frames.clone()
    evs = (-1.0, 0.0, 1.0)  # HDRPS frames are about 1 EV apart
    for n, (left, ev) in enumerate(zip((20, 140, 260), evs)):
        moved[n, :, 100:140, left : left + 40] = _render(thing, ev)
        still[n, :, 100:140, 140:180] = _render(thing, ev)
    clean, weights = deghost.remove_ghosts(moved)
    ghost_free = fusion.fuse(clean, frame_weights=weights).clamp(0, 1)
    target = fusion.fuse(still).clamp(0, 1)
    for left in (20, 260):
        region = (slice(None), slice(100, 140), slice(left, left + 40))
        assert (ghost_free - target)[region].abs().mean() < 0.02
        assert (fusion.fuse(moved).clamp(0, 1) - target)[region].abs().mean() > 0.05
