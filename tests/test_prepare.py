"""``loopexpose prepare``: RAW and sRGB bracket rendering, MSEC regrouping, sidecars, resuming, bad files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from loopexpose import brackets, io, synth
from loopexpose.cli import app
from loopexpose.errors import LoopExposeError

runner = CliRunner()


# ------------------------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def raw_path():
    from loopexpose.paths import data_root

    path = data_root() / "raw" / "RAW_KODAK_DC50.KDC"
    if not path.is_file():
        pytest.skip(f"real RAW not found at {path}")
    pytest.importorskip("rawpy")
    return path


@pytest.fixture(scope="module")
def raw_scene(raw_path, tmp_path_factory):
    """The real RAW rendered at the MSEC EVs (full size, sRGB curve), once for the module."""
    out = tmp_path_factory.mktemp("raw") / "collection"
    settings = synth.RenderSettings(evs=list(synth.PRESETS["msec"]))
    result = synth.prepare_raw_scene(raw_path, out / raw_path.stem, settings)
    assert result.status == "done", result.message
    return out / raw_path.stem, settings


def _photos(folder, names=("astronaut", "coffee", "chelsea"), side=96):
    from skimage import data, transform

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        image = getattr(data, name)()
        scale = side / max(image.shape[:2])
        size = (round(image.shape[0] * scale), round(image.shape[1] * scale))
        small = transform.resize(image, size, anti_aliasing=True)
        paths.append(io.write_image(folder / f"{name}.png", small.astype(np.float32)))
    return paths


def _lumas(scene):
    return [float(io.luma(io.read_image(p).pixels).mean()) for p in brackets.order_bracket(scene).paths]


# ----------------------------------------------------------------------------------------- names and EVs


@pytest.mark.parametrize("ev", [-3, -2, -1.5, -1, -0.5, 0, 0.33, 1, 1.5, 2, 3])
def test_ev_tag_round_trips_through_io(ev):
    name = synth.frame_name("IMG_0042", ev)
    assert brackets.ev_from_filename(name) == pytest.approx(ev)


def test_ev_tags_are_msec_style():
    assert [synth.ev_tag(e) for e in synth.PRESETS["msec"]] == ["_N1.5", "_N1", "_0", "_P1", "_P1.5"]
    assert synth.PRESETS["radiometry"] == (-3, -2, -1, 0, 1, 2, 3)


def test_parse_evs_accepts_words_commas_and_presets():
    assert synth.parse_evs(["1", "-1.5,0", "-1"]) == [-1.5, -1, 0, 1]
    assert synth.parse_evs(None, "radiometry") == [-3, -2, -1, 0, 1, 2, 3]
    for bad in (["x"], ["nan"], ["40"]):
        with pytest.raises(LoopExposeError):
            synth.parse_evs(bad)
    with pytest.raises(LoopExposeError, match="preset"):
        synth.parse_evs(None, "nope")
    with pytest.raises(LoopExposeError, match="no EV"):
        synth.parse_evs([])


# ------------------------------------------------------------------------------------------ pure functions


def test_render_exposure_scales_clips_and_encodes():
    linear = torch.tensor([0.01, 0.2, 0.6]).view(3, 1, 1).expand(3, 4, 4)
    frames = [synth.render_exposure(linear, ev) for ev in (-2, 0, 2)]
    assert torch.allclose(frames[1], synth.tone_encode(linear))
    assert (frames[0] < frames[1]).all()
    assert frames[2][2].min().item() == pytest.approx(1.0)  # 0.6 * 4 clips at white
    assert synth.tone_encode(torch.full((3, 1, 1), 0.0031308))[0, 0, 0].item() == pytest.approx(0.04045, abs=1e-4)


def test_color_matrix_fit_recovers_a_known_matrix(rng):
    matrix = np.array([[1.6, -0.4, -0.2], [-0.3, 1.5, -0.2], [0.0, -0.6, 1.6]])
    camera = rng.uniform(0.05, 0.5, size=(64, 64, 3))
    fitted = synth.camera_to_srgb_matrix(camera, np.clip(camera @ matrix.T, 0, 1))
    assert np.allclose(fitted, matrix, atol=1e-6)
    assert synth.camera_to_srgb_matrix(camera, rng.uniform(0.05, 0.9, size=(64, 64, 3))) is None  # not a matrix


def test_sensor_noise_grows_relative_to_signal_as_exposure_drops():
    grey = torch.full((3, 64, 64), 0.18)
    generator = torch.Generator().manual_seed(0)
    relative = []
    for ev in (-3, 0):
        noisy = synth.add_sensor_noise(grey * 2.0**ev, full_well=2000, read_noise=3, generator=generator)
        relative.append(float(noisy.std() / noisy.mean()))
    assert relative[0] > 2 * relative[1]


# ---------------------------------------------------------------------------------------------- RAW path


def test_raw_brackets_brighten_monotonically_with_ev(raw_scene):
    scene, settings = raw_scene
    bracket = brackets.order_bracket(scene)
    assert bracket.rule == "filename"
    assert [p.name for p in bracket.paths] == [synth.frame_name(scene.name, e) for e in settings.evs]
    assert bracket.evs == pytest.approx([e - settings.evs[0] for e in settings.evs])
    lumas = _lumas(scene)
    assert all(b > a + 0.02 for a, b in zip(lumas, lumas[1:])), lumas
    record = synth.read_sidecar(scene)
    clipped = [frame["clipped_fraction"] for frame in record["frames"]]
    assert clipped == sorted(clipped) and clipped[-1] > clipped[2]


def test_raw_ev0_matches_rawpy_neutral_rendering(raw_scene, raw_path):
    import rawpy

    scene, _ = raw_scene
    ours = io.read_image(scene / synth.frame_name(scene.name, 0)).pixels
    with rawpy.imread(str(raw_path)) as raw:
        # rawpy's own neutral rendering (camera WB, no auto-brightness) with the sRGB curve ...
        srgb = raw.postprocess(use_camera_wb=True, no_auto_bright=True, gamma=(2.4, 12.92), output_bps=16)
        # ... and with its default BT.709 curve.
        default = raw.postprocess(use_camera_wb=True, no_auto_bright=True, output_bps=16)
    assert ours.shape == srgb.shape
    assert np.abs(ours - srgb / 65535.0).mean() < 1 / 255
    decoded = synth.decode_raw(raw_path)
    bt709 = io.to_numpy(synth.render_exposure(decoded.linear, 0, decoded.matrix, "bt709"))
    assert np.abs(bt709 - default / 65535.0).mean() < 0.5 / 255


def test_raw_scene_loads_as_a_collection_and_sidecar_is_not_an_image(raw_scene):
    scene, settings = raw_scene
    assert brackets.find_scenes(scene.parent) == [scene]
    assert (scene / synth.SIDECAR_NAME).is_file()
    assert all(p.suffix == ".png" for p in brackets.list_images(scene))
    assert brackets.load_bracket(scene, max_side=96).shape == (len(settings.evs), 3, 64, 96)
    record = json.loads((scene / synth.SIDECAR_NAME).read_text())
    assert record["complete"] is True and record["synthetic"] is False and record["kind"] == "raw"
    assert record["evs"] == settings.evs and record["settings"]["curve"] == "srgb"
    assert len(record["rendering"]["camera_to_srgb"]) == 3  # the colour matrix LibRaw uses was recovered


def test_raw_is_resumable_and_rerenders_when_settings_change(raw_path, tmp_path):
    scene = tmp_path / "scene"
    settings = synth.RenderSettings(evs=[-1, 0, 1], half_size=True)
    assert synth.prepare_raw_scene(raw_path, scene, settings).status == "done"
    stamp = (scene / "scene_N1.png").stat().st_mtime_ns
    assert synth.prepare_raw_scene(raw_path, scene, settings).status == "skipped"
    assert (scene / "scene_N1.png").stat().st_mtime_ns == stamp
    (scene / "scene_P1.png").unlink()  # a frame lost after completion: redo the scene
    assert synth.prepare_raw_scene(raw_path, scene, settings).status == "done"
    changed = synth.RenderSettings(evs=[-2, 0, 2], half_size=True)
    assert synth.prepare_raw_scene(raw_path, scene, changed).status == "done"
    assert sorted(p.name for p in brackets.list_images(scene)) == ["scene_0.png", "scene_N2.png", "scene_P2.png"]


def test_bad_raw_fails_in_one_line_without_output(tmp_path):
    pytest.importorskip("rawpy")
    bad = tmp_path / "broken.NEF"
    bad.write_bytes(b"not a raw file" * 10)
    result = synth.prepare_raw_scene(bad, tmp_path / "out" / "broken", synth.RenderSettings(evs=[0]))
    assert result.status == "failed"
    assert "broken.NEF" in result.message and "\n" not in result.message
    assert not (tmp_path / "out").exists()


def test_cli_raw_batch_continues_after_a_bad_file(raw_path, tmp_path):
    raws = tmp_path / "raws"
    raws.mkdir()
    os.symlink(raw_path, raws / raw_path.name)
    (raws / "bad.CR2").write_bytes(b"\x00" * 64)
    out = tmp_path / "out"
    args = ["prepare", "raw", str(raws), "-o", str(out), "--ev", "-1", "0", "1", "--half-size", "--workers", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "bad.CR2" in result.output
    scene = out / raw_path.stem
    expected = sorted(synth.frame_name(scene.name, e) for e in (-1, 0, 1))
    assert sorted(p.name for p in brackets.list_images(scene)) == expected
    assert synth.read_sidecar(scene)["settings"]["half_size"] is True
    (raws / "bad.CR2").unlink()
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "1 already complete" in again.output


# -------------------------------------------------------------------------------------------- sRGB path


def test_srgb_brackets_are_monotone_and_clip_more_as_ev_rises(tmp_path):
    paths = _photos(tmp_path / "photos")
    settings = synth.RenderSettings(evs=[-2, -1, 0, 1, 2])
    for path in paths:
        scene = tmp_path / "out" / path.stem
        assert synth.prepare_srgb_scene(path, scene, settings).status == "done"
        lumas = _lumas(scene)
        assert all(b > a for a, b in zip(lumas, lumas[1:])), (path.name, lumas)
        record = synth.read_sidecar(scene)
        clipped = [frame["clipped_fraction"] for frame in record["frames"]]
        assert clipped == sorted(clipped) and clipped[-1] > clipped[0] + 0.05, (path.name, clipped)
        assert record["synthetic"] is True and record["kind"] == "srgb"
        ev0 = io.read_image(scene / f"{path.stem}_0.png").pixels
        assert np.abs(ev0 - io.read_image(path).pixels).max() <= 1 / 255 + 1e-6  # EV 0 reproduces the photo
    assert len(brackets.find_scenes(tmp_path / "out")) == len(paths)


def test_srgb_degradations_noise_and_jpeg(tmp_path):
    (path,) = _photos(tmp_path / "photos", names=("astronaut",))
    clean = synth.RenderSettings(evs=[-2, 0])
    noisy = synth.RenderSettings(evs=[-2, 0], format="jpg", quality=70, noise={"full_well": 500.0, "read_noise": 4.0})
    assert synth.prepare_srgb_scene(path, tmp_path / "clean", clean).status == "done"
    assert synth.prepare_srgb_scene(path, tmp_path / "noisy", noisy).status == "done"
    assert sorted(p.name for p in brackets.list_images(tmp_path / "noisy")) == ["noisy_0.jpg", "noisy_N2.jpg"]
    assert brackets.order_bracket(tmp_path / "noisy").rule == "filename"
    def pixels(scene, tag, suffix):
        return io.read_image(tmp_path / scene / f"{scene}{tag}{suffix}").pixels

    errors = [np.abs(pixels("noisy", t, ".jpg") - pixels("clean", t, ".png")).mean() for t in ("_N2", "_0")]
    assert all(e > 0.005 for e in errors)
    again = tmp_path / "again"
    synth.prepare_srgb_scene(path, again, noisy)
    assert np.array_equal(io.read_image(again / "again_N2.jpg").pixels, pixels("noisy", "_N2", ".jpg"))  # seeded


def test_unreadable_photo_fails_and_the_cli_pool_carries_on(tmp_path):
    photos = tmp_path / "photos"
    _photos(photos, names=("astronaut", "coffee"), side=48)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    result = runner.invoke(app, ["prepare", "srgb", str(photos), "-o", str(out), "--preset", "radiometry", "-w", "2"])
    assert result.exit_code == 1, result.output
    assert "broken.jpg" in result.output and "2 scene(s) written" in result.output
    assert sorted(p.name for p in brackets.find_scenes(out)) == ["astronaut", "coffee"]
    assert len(brackets.list_images(out / "coffee")) == 7


def test_cli_rejects_bad_options(tmp_path):
    _photos(tmp_path / "photos", names=("coffee",), side=32)
    for extra in (["--ev", "-1", "bright"], ["--preset", "huge"], ["--curve", "log"], ["--jpeg", "101"]):
        result = runner.invoke(app, ["prepare", "srgb", str(tmp_path / "photos"), "-o", str(tmp_path / "o"), *extra])
        assert isinstance(result.exception, LoopExposeError), (extra, result.output)
    result = runner.invoke(app, ["prepare", "raw", str(tmp_path / "missing"), "-o", str(tmp_path / "o")])
    assert isinstance(result.exception, LoopExposeError)


# ------------------------------------------------------------------------------------------------- MSEC


def _fake_msec(root):
    rng = np.random.default_rng(1)
    names = {"training": ["a0001-jmac_DSC1459", "a0002-dgw_137"], "testing": ["a4001-x_1"]}
    for split, images in names.items():
        for name in images:
            base = rng.uniform(0.1, 0.4, size=(12, 16, 3)).astype(np.float32)
            for ev, tag in zip(synth.PRESETS["msec"], ("_N1.5", "_N1", "_0", "_P1", "_P1.5")):
                # one image names its 0 EV rendition without a suffix, as some copies of MSEC do
                tag = "" if (name == "a0002-dgw_137" and tag == "_0") else tag
                io.write_image(root / split / "INPUT_IMAGES" / f"{name}{tag}.JPG", np.clip(base * 2**ev, 0, 1))
            if split == "training":
                io.write_image(root / split / "GT_IMAGES" / f"{name}.jpg", base)
            else:
                for expert in "ab":
                    io.write_image(root / split / f"expert_{expert}_testing_set" / f"{name}.jpg", base)
    io.write_image(root / "training" / "INPUT_IMAGES" / "a0003-lonely_N1.JPG", np.zeros((4, 4, 3)))


def test_msec_regrouping_into_scene_folders(tmp_path):
    root, out = tmp_path / "MSEC", tmp_path / "out"
    _fake_msec(root)
    result = runner.invoke(app, ["prepare", "msec", str(root), "-o", str(out), "--link", "hardlink"])
    assert result.exit_code == 0, result.output
    training = out / "training"
    assert [p.name for p in brackets.find_scenes(training)] == ["a0001-jmac_DSC1459", "a0002-dgw_137", "a0003-lonely"]
    for name in ("a0001-jmac_DSC1459", "a0002-dgw_137"):
        scene = training / name
        bracket = brackets.order_bracket(scene)
        assert bracket.rule == "filename"
        assert [p.name for p in bracket.paths] == [synth.frame_name(name, e, ".JPG") for e in synth.PRESETS["msec"]]
        assert brackets.load_bracket(bracket).shape == (5, 3, 12, 16)
        record = synth.read_sidecar(scene)
        assert record["ground_truth"] == {"expert_c": "ground_truth/expert_c.jpg"}
        assert record["protocols"] == ["paired", "bracket-5"] and record["split"] == "training"
        assert (scene / "ground_truth" / "expert_c.jpg").stat().st_nlink == 2  # hard-linked, not copied
    lonely = synth.read_sidecar(training / "a0003-lonely")
    assert lonely["protocols"] == [] and lonely["evs"] == [-1.0]
    test_scene = synth.read_sidecar(out / "testing" / "a4001-x_1")
    assert test_scene["ground_truth"] == {f"expert_{e}": f"ground_truth/expert_{e}.jpg" for e in "ab"}
    again = runner.invoke(app, ["prepare", "msec", str(root), "-o", str(out), "--link", "hardlink"])
    assert again.exit_code == 0 and "4 already complete" in again.output


def test_msec_rejects_a_folder_without_inputs(tmp_path):
    with pytest.raises(LoopExposeError, match="INPUT_IMAGES"):
        synth.find_msec_scenes(tmp_path)


def test_reference_brackets_for_training(tmp_path):
    """The trainer's synthetic brackets: each scene's reference frame (nearest mid-grey) rendered at the EVs,
    exact exposure steps, kept on a second call."""
    import cv2

    from conftest import synthetic_bracket
    from loopexpose.brackets import order_bracket
    from loopexpose.io import read_image, write_image

    scenes = []
    for index in range(2):
        scene = tmp_path / "real" / f"scene {index}"
        scene.mkdir(parents=True)
        for ev, frame in zip((-2, 0, 2), synthetic_bracket(3, 40, 60, seed=index)):
            write_image(scene / f"f_{'N' if ev < 0 else 'P'}{abs(ev)}.png", frame.permute(1, 2, 0).numpy())
        scenes.append(order_bracket(scene))
    folder = synth.render_reference_brackets(scenes, tmp_path / "synthetic", [-1, 0, 1], max_side=32)
    made = sorted(p.name for p in folder.iterdir())
    assert made == ["real_scene_0", "real_scene_1"]
    frames = sorted((folder / "real_scene_0").glob("*.png"))
    assert len(frames) == 3
    source = read_image(tmp_path / "synthetic/sources/real_scene_0.png").pixels
    reference = read_image(scenes[0].paths[scenes[0].reference_index()]).pixels
    assert max(source.shape[:2]) == 32  # resized with the area filter
    expected = cv2.resize((reference * 255 + 0.5).astype("uint8"), None, fx=32 / 60, fy=32 / 60, interpolation=cv2.INTER_AREA)
    assert abs(source * 255 - expected).max() < 0.5
    lumas = [read_image(p).pixels.mean() for p in sorted(frames, key=lambda p: order_bracket(p.parent).paths.index(p))]
    assert lumas == sorted(lumas) and lumas[0] < lumas[1] < lumas[2]
    stamp = (folder / "real_scene_0" / frames[0].name).stat().st_mtime_ns
    synth.render_reference_brackets(scenes, tmp_path / "synthetic", [-1, 0, 1], max_side=32)  # nothing to do
    assert (folder / "real_scene_0" / frames[0].name).stat().st_mtime_ns == stamp
