"""``loopexpose correct``: batches of files, folders and globs; metadata and depth kept; errors per file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageCms
from typer.testing import CliRunner

import loopexpose
from loopexpose.cli import app
from loopexpose.io import read_image, write_image
from loopexpose.models import save

from test_api import _photo, randomised

SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return str(save(randomised(), tmp_path_factory.mktemp("model") / "random.safetensors"))


def _correct(model_path, *args: str):
    result = CliRunner().invoke(app, ["correct", *args, "--model", model_path, "--device", "cpu"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def _jpeg(path, height=24, width=36, seed=0, **options) -> None:
    Image.fromarray((_photo(height, width, seed) * 255).astype(np.uint8)).save(path, quality=95, **options)


def test_folder_with_a_corrupt_file_processes_the_rest(model_path, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    _jpeg(photos / "a.jpg")
    (photos / "b.jpg").write_bytes(b"not a jpeg at all")
    _jpeg(photos / "c.jpg", seed=1)
    out = tmp_path / "out"
    result = _correct(model_path, str(photos), "-o", str(out))
    assert result.exit_code == 2
    assert sorted(p.name for p in out.iterdir()) == ["a_loopexpose.jpg", "c_loopexpose.jpg"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "b.jpg" in errors[0] and "not an image" in errors[0]
    assert not list(out.glob("*.tmp*")) and not list(out.glob(".*"))  # nothing half-written
    umask = os.umask(0o022)
    os.umask(umask)
    assert (out / "a_loopexpose.jpg").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's owner-only 0600


def test_json_summary_parses(model_path, tmp_path):
    _jpeg(tmp_path / "dark.jpg")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    result = _correct(model_path, str(tmp_path / "dark.jpg"), str(tmp_path / "bad.png"), "-o", str(out), "--json")
    assert result.exit_code == 2
    summary = json.loads(result.stdout)
    assert (summary["ok"], summary["failed"], summary["skipped"]) == (1, 1, 0)
    good, bad = summary["files"]
    assert good["input"].endswith("dark.jpg") and good["output"] == str(out / "dark_loopexpose.jpg")
    assert good["status"] == "ok" and good["seconds"] >= 0 and (good["width"], good["height"]) == (36, 24)
    for key in ("exposure_before", "exposure_after"):
        assert 0 <= good[key]["mean_luma"] <= 1 and np.isfinite(good[key]["ev"])
    assert good["ev_change"] == pytest.approx(good["exposure_after"]["ev"] - good["exposure_before"]["ev"], abs=2e-3)
    assert bad["status"] == "failed" and "bad.png" in bad["error"]


def test_exif_orientation_and_icc_survive(model_path, tmp_path):
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = "Canon", "EOS D30", 6  # make, model, orientation: rotate 90 CW
    _jpeg(tmp_path / "turned.jpg", height=20, width=30, exif=exif.tobytes(), icc_profile=SRGB_ICC)
    result = _correct(model_path, str(tmp_path / "turned.jpg"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    target = tmp_path / "out" / "turned_loopexpose.jpg"
    with Image.open(target) as image:
        assert image.size == (20, 30)  # stored upright
        assert image.info.get("icc_profile") == SRGB_ICC
        written = image.getexif()
        assert written.get(0x010F) == "Canon" and written.get(0x0110) == "EOS D30"
        assert written.get(0x0112, 1) == 1  # pixels are upright, so no rotation is left to apply
    source, corrected = read_image(tmp_path / "turned.jpg"), read_image(target)
    assert corrected.pixels.shape == source.pixels.shape == (30, 20, 3)
    assert np.abs(corrected.pixels - source.pixels).mean() > 0.01  # corrected, not copied


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_in_gives_16_bit_out(model_path, tmp_path, suffix):
    ramp = np.linspace(0, 1, 40 * 50 * 3, dtype=np.float32).reshape(40, 50, 3)
    write_image(tmp_path / f"deep{suffix}", ramp, bits=16, icc=SRGB_ICC)
    result = _correct(model_path, str(tmp_path / f"deep{suffix}"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    photo = read_image(tmp_path / "out" / f"deep_loopexpose{suffix}")
    assert photo.bit_depth == 16 and photo.icc == SRGB_ICC
    levels = np.unique(np.round(photo.pixels * 65535).astype(np.int64))
    assert len(levels) > 4 * 256 and np.any(levels % 257 != 0)  # not 8-bit levels in a 16-bit file
    result = _correct(model_path, str(tmp_path / f"deep{suffix}"), "-o", str(tmp_path / "eight"), "--out-bits", "8")
    assert read_image(tmp_path / "eight" / f"deep_loopexpose{suffix}").bit_depth == 8


def test_recursive_folders_mirror_paths_and_formats(model_path, tmp_path):
    root = tmp_path / "root"
    (root / "day" / "one").mkdir(parents=True)
    _jpeg(root / "top.jpg")
    _jpeg(root / "day" / "one" / "deep.jpg", seed=2)
    out = tmp_path / "out"
    flat = _correct(model_path, str(root), "-o", str(out))
    assert flat.exit_code == 0 and [p.name for p in out.rglob("*.*")] == ["top_loopexpose.jpg"]
    result = _correct(model_path, str(root), "-r", "-o", str(out), "--format", "png")
    assert result.exit_code == 0, result.output
    assert (out / "day" / "one" / "deep_loopexpose.png").is_file() and (out / "top_loopexpose.png").is_file()
    inside = root / "results"  # an output folder inside the input folder: earlier results are not inputs
    for _ in range(2):
        assert _correct(model_path, str(root), "-r", "-o", str(inside)).exit_code == 0
    assert sorted(str(p.relative_to(inside)) for p in inside.rglob("*.jpg")) == [
        os.path.join("day", "one", "deep_loopexpose.jpg"), "top_loopexpose.jpg"
    ]


def test_globs_skip_existing_and_workers(model_path, tmp_path):
    for i in range(3):
        _jpeg(tmp_path / f"shot{i}.jpg", seed=i)
    _jpeg(tmp_path / "other.jpg")
    pattern = str(tmp_path / "shot*.jpg")  # quoted pattern: expanded by the command, not the shell
    one, two = tmp_path / "one", tmp_path / "two"
    assert _correct(model_path, pattern, "-o", str(one), "--format", "png").exit_code == 0
    assert sorted(p.name for p in one.iterdir()) == [f"shot{i}_loopexpose.png" for i in range(3)]
    assert _correct(model_path, pattern, "-o", str(two), "--format", "png", "--workers", "2").exit_code == 0
    for i in range(3):
        name = f"shot{i}_loopexpose.png"
        assert np.array_equal(read_image(one / name).pixels, read_image(two / name).pixels)
    stamp = (one / "shot0_loopexpose.png").stat().st_mtime_ns
    result = _correct(model_path, pattern, "-o", str(one), "--skip-existing", "--json")
    summary = json.loads(result.stdout)
    assert summary["skipped"] == 0 and summary["ok"] == 3  # --format same: .jpg outputs do not exist yet
    result = _correct(model_path, pattern, "-o", str(one), "--format", "png", "--skip-existing", "--json")
    assert json.loads(result.stdout)["skipped"] == 3
    assert (one / "shot0_loopexpose.png").stat().st_mtime_ns == stamp


def test_never_overwrites_an_input(model_path, tmp_path):
    _jpeg(tmp_path / "x.jpg")
    _jpeg(tmp_path / "x_loopexpose.jpg", seed=3)  # what x.jpg's output would be called, in the same folder
    before = (tmp_path / "x_loopexpose.jpg").read_bytes()
    result = _correct(model_path, str(tmp_path), "-o", str(tmp_path))
    assert result.exit_code == 2
    assert "would overwrite an input" in result.stderr
    assert (tmp_path / "x_loopexpose.jpg").read_bytes() == before
    assert (tmp_path / "x_loopexpose_loopexpose.jpg").is_file()  # the other input was still corrected


def test_missing_inputs_and_bad_options_are_one_line_errors(model_path, tmp_path):
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    command = [sys.executable, "-m", "loopexpose", "correct", "-o", str(tmp_path / "out"), "--model", model_path]
    result = subprocess.run([*command, str(tmp_path / "nope.jpg")], capture_output=True, text=True, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {tmp_path / 'nope.jpg'}: no such file or folder"
    ]
    result = subprocess.run([*command, str(tmp_path), "--format", "gif"], capture_output=True, text=True, env=env)
    assert result.returncode == 2 and result.stderr.strip().startswith("error: --format")
    assert "Traceback" not in result.stderr


def test_fuse_correct_is_the_loopexpose_mef_result(model_path, tmp_path):
    from test_api import _bracket

    scene = tmp_path / "scene"
    scene.mkdir()
    for i, frame in enumerate(_bracket()):
        write_image(scene / f"f{i}.png", frame.permute(1, 2, 0).numpy(), bits=16)
    runner = CliRunner()
    corrected = runner.invoke(app, ["fuse", str(scene), "-o", str(tmp_path / "mef"), "--correct", "--model", model_path,
                                    "--out-bits", "16"])  # fmt: skip
    plain = runner.invoke(app, ["fuse", str(scene), "-o", str(tmp_path / "plain"), "--out-bits", "16"])
    assert corrected.exit_code == 0 and plain.exit_code == 0, corrected.output + plain.output
    mef = read_image(tmp_path / "mef" / "scene.png").pixels
    expected = loopexpose.fuse(scene, model=loopexpose.load(model_path))
    assert np.abs(mef - expected).max() <= 1 / 65535 + 1e-6
    assert np.abs(mef - read_image(tmp_path / "plain" / "scene.png").pixels).mean() > 0.005


def test_exposure_estimate_is_stops_from_mid_grey():
    from loopexpose.cli.correct import exposure_estimate

    grey = np.full((8, 8, 3), 118, np.uint8)
    estimate = exposure_estimate(grey)
    assert estimate["mean_luma"] == pytest.approx(118 / 255, abs=1e-4) and estimate["ev"] == pytest.approx(0, abs=1e-3)
    one_stop_down = np.full((8, 8, 3), (118 / 255) * 2 ** (-1 / 2.2), np.float32)  # half the linear light
    assert exposure_estimate(one_stop_down)["ev"] == pytest.approx(-1, abs=1e-3)
    assert exposure_estimate((grey.astype(np.uint16) * 257))["ev"] == pytest.approx(0, abs=1e-3)
