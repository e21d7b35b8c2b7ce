"""Camera RAW input for ``correct`` and ``fuse`` (:mod:`loopexpose.raw`): exposure from metadata, bracket order,
one white balance per bracket, exposure ratios kept, 16-bit outputs, the pixel limit, and one-line errors.

Three kinds of test: pure parts and rules with a fake ``rawpy`` (no extra needed), real LibRaw on tiny linear DNGs
written here (:mod:`dng`: known pixels, exposure and white balance), and the real Kodak DC50 RAW in
``../shared/data/raw`` (skipped when absent).
"""

from __future__ import annotations

import math
import shutil
import sys
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image
from typer.testing import CliRunner

from loopexpose import brackets, io, raw
from loopexpose.cli import app
from loopexpose.cli.correct import output_path
from loopexpose.cli.fuse import fuse_scene
from loopexpose.errors import LoopExposeError

from conftest import randomised_curvegrid
from dng import write_dng

runner = CliRunner()


def _error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error:")]


# -------------------------------------------------------------------------------------------- a fake rawpy


def fake_rawpy(files: dict[str, dict]) -> SimpleNamespace:
    """A stand-in for the ``rawpy`` module: each file name maps to what its header says (``size``, ``shutter``,
    ``aperture``, ``iso``, ``wb``, ``level`` of the uniform linear image LibRaw would return, or ``unsupported``).
    Every ``postprocess`` call is recorded in ``.calls`` as ``(file name, options)``."""
    calls: list[tuple[str, dict]] = []

    class LibRawError(Exception):
        pass

    class LibRawFileUnsupportedError(LibRawError):
        pass

    class LibRawTooBigError(LibRawError):
        pass

    class RawPy:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def open_file(self, path: str) -> None:
            self.name = Path(path).name
            spec = files[self.name]
            if spec.get("unsupported"):
                raise LibRawFileUnsupportedError(b"Unsupported file format or not RAW file")
            self.spec = spec
            width, height = spec.get("size", (16, 12))
            self.sizes = SimpleNamespace(width=width, height=height, flip=spec.get("flip", 0))
            self.other = SimpleNamespace(
                shutter_speed=spec.get("shutter", 0.0), aperture=spec.get("aperture", 0.0),
                iso_speed=spec.get("iso", 0.0), focal_length=0.0, timestamp=datetime(2024, 5, 1, 10, 0),
            )  # fmt: skip
            self.camera_whitebalance = list(spec.get("wb", (2.0, 1.0, 1.5, 0.0)))

        def postprocess(self, **options) -> np.ndarray:
            calls.append((self.name, options))
            width, height = self.sizes.width, self.sizes.height
            if options.get("half_size"):
                width, height = width // 2, height // 2
            if self.sizes.flip in (5, 6):
                width, height = height, width
            return np.full((height, width, 3), round(self.spec.get("level", 0.2) * 65535), np.uint16)

    return SimpleNamespace(
        RawPy=RawPy, ColorSpace=SimpleNamespace(sRGB="sRGB", raw="raw"), HighlightMode=SimpleNamespace(Clip=0),
        LibRawError=LibRawError, LibRawFileUnsupportedError=LibRawFileUnsupportedError,
        LibRawTooBigError=LibRawTooBigError, __version__="fake", libraw_version=(0, 0, 0), calls=calls,
    )  # fmt: skip


@pytest.fixture()
def fake(monkeypatch, tmp_path):
    """``make(files)`` installs a fake rawpy for ``files`` and writes placeholder RAW files in ``tmp_path/scene``."""

    def make(files: dict[str, dict]) -> tuple[SimpleNamespace, Path]:
        module = fake_rawpy(files)
        monkeypatch.setitem(sys.modules, "rawpy", module)
        scene = tmp_path / "scene"
        scene.mkdir(exist_ok=True)
        for name in files:
            (scene / name).write_bytes(b"placeholder RAW bytes " + name.encode())
        return module, scene

    return make


# ----------------------------------------------------------------------------------------------- pure parts


def test_exposure_ev_is_time_times_iso_over_f_number_squared():
    info = raw.RawInfo(Path("a.CR2"), 8, 6, exposure_time=1 / 100, f_number=4.0, iso=400.0)
    assert info.ev == pytest.approx(math.log2(0.01 * 4 / 16))
    assert raw.RawInfo(Path("a.CR2"), 8, 6, exposure_time=0.5).ev == pytest.approx(-1.0)  # f/1, ISO 100 assumed
    assert raw.RawInfo(Path("a.CR2"), 8, 6, f_number=2.0, iso=100.0).ev is None  # no exposure time: no EV
    exif = raw.RawInfo(Path("a.CR2"), 8, 6, exposure_time=0.00435000006, f_number=6.19999981, iso=84.0).exif()
    sub = Image.Exif()
    sub.load(exif.tobytes())
    tags = sub.get_ifd(0x8769)
    assert float(tags[0x829A]) == pytest.approx(0.00435) and float(tags[0x829D]) == pytest.approx(6.2)
    assert tags[0x8827] == 84


def test_output_defaults_for_raw_input():
    out = Path("out")
    assert output_path(Path("IMG_1.CR2"), out, "same") == out / "IMG_1_loopexpose.tif"  # 16-bit TIFF
    assert output_path(Path("IMG_1.nef"), out, "png") == out / "IMG_1_loopexpose.png"
    assert output_path(Path("IMG_1.JPG"), out, "same") == out / "IMG_1_loopexpose.jpg"
    assert raw.is_raw("x.DNG") and not raw.is_raw("x.tif")
    assert brackets.ev_from_filename("shot_m2EV.CR2") == -2.0  # EV tags in RAW file names are read too


def test_mixed_raw_and_jpeg_bracket_is_a_one_line_error(tmp_path):
    scene = tmp_path / "mixed scene"
    scene.mkdir()
    (scene / "IMG_1.CR2").write_bytes(b"raw")
    (scene / "IMG_2.CR2").write_bytes(b"raw")
    Image.fromarray(np.full((12, 16, 3), 90, np.uint8)).save(scene / "IMG_1.JPG")
    with pytest.raises(LoopExposeError) as caught:
        brackets.order_bracket(scene)  # refused before any file is decoded: rawpy is not even needed
    message = str(caught.value)
    assert "\n" not in message and str(scene) in message
    assert "2 RAW file(s) (IMG_1.CR2, IMG_2.CR2) with 1 other image(s) (IMG_1.JPG)" in message
    result = runner.invoke(app, ["fuse", str(scene), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and len(_error_lines(result)) == 1 and "mixes" in _error_lines(result)[0]
    assert not (tmp_path / "out" / "mixed scene.png").exists()


def test_missing_extra_is_a_one_line_error_naming_the_file(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "rawpy", None)  # `import rawpy` now raises ImportError
    scene = tmp_path / "scene"
    scene.mkdir()
    for name in ("a.NEF", "b.NEF"):
        (scene / name).write_bytes(b"raw")
    with pytest.raises(LoopExposeError, match=r"a\.NEF: reading camera RAW files needs rawpy: pip install 'loopexpose\[raw\]'"):
        io.read_image(scene / "a.NEF")
    result = runner.invoke(app, ["fuse", str(scene), "-o", str(tmp_path / "out")])
    errors = _error_lines(result)
    assert result.exit_code == 2 and len(errors) == 1
    assert "pip install 'loopexpose[raw]'" in errors[0] and "a.NEF" in errors[0]


# ------------------------------------------------------------------------------------------ with a fake rawpy


def test_raw_bracket_is_ordered_by_exif_exposure(fake):
    # shutter, ISO and aperture brackets: exposure is time x ISO / f-number^2
    _, scene = fake({
        "a.CR2": {"shutter": 1 / 25, "aperture": 8.0, "iso": 100.0, "level": 0.4},  # 8x
        "b.CR2": {"shutter": 1 / 200, "aperture": 8.0, "iso": 100.0, "level": 0.05},  # 1x
        "c.CR2": {"shutter": 1 / 200, "aperture": 8.0, "iso": 400.0, "level": 0.2},  # 4x (ISO)
        "d.CR2": {"shutter": 1 / 50, "aperture": 4.0, "iso": 100.0, "level": 0.8},  # 16x (aperture)
    })  # fmt: skip
    bracket = brackets.order_bracket(scene)
    assert bracket.rule == "exif" and bracket.note == ""
    assert [p.name for p in bracket.paths] == ["b.CR2", "c.CR2", "a.CR2", "d.CR2"]
    assert bracket.evs == pytest.approx([0.0, 2.0, 3.0, 4.0], abs=1e-6)


def test_repeated_exif_exposure_falls_back_to_luminance(fake):
    _, scene = fake({name: {"shutter": 1 / 100, "level": level} for name, level in
                     (("x1.ORF", 0.5), ("x2.ORF", 0.1), ("x3.ORF", 0.3))})  # fmt: skip
    bracket = brackets.order_bracket(scene)
    assert bracket.rule == "luminance" and "EXIF exposure incomplete or repeated" in bracket.note
    assert [p.name for p in bracket.paths] == ["x2.ORF", "x3.ORF", "x1.ORF"]


def test_bracket_frames_share_one_white_balance_and_no_per_file_brightness(fake):
    module, scene = fake({
        "1.RAF": {"shutter": 1 / 400, "wb": (2.1, 1.0, 1.6, 0.0)},
        "2.RAF": {"shutter": 1 / 200, "wb": (1.9, 1.0, 1.8, 0.0)},  # the middle frame: its balance for all
        "3.RAF": {"shutter": 1 / 100, "wb": (2.3, 1.0, 1.4, 0.0)},
    })  # fmt: skip
    frames = brackets.load_bracket(scene)
    assert frames.shape == (3, 3, 12, 16)
    decodes = [(name, options) for name, options in module.calls if not options["half_size"]]
    assert [name for name, _ in decodes] == ["1.RAF", "2.RAF", "3.RAF"]
    for _, options in decodes:
        assert options["user_wb"] == [1.9, 1.0, 1.8, 0.0] and options["use_camera_wb"] is False
        assert options["no_auto_bright"] is True and options["adjust_maximum_thr"] == 0.0
        assert options["gamma"] == (1, 1) and options["output_color"] == "sRGB"
    # downscaled: LibRaw's half-size mode (no demosaicing) first, when that still leaves the size asked for
    module.calls.clear()
    assert brackets.load_bracket(scene, max_side=6).shape == (3, 3, 4, 6)
    assert all(options["half_size"] for _, options in module.calls)
    # a lone RAW (correct) uses its own camera balance
    module.calls.clear()
    io.read_image(scene / "3.RAF")
    assert module.calls[-1][1]["use_camera_wb"] is True and "user_wb" not in module.calls[-1][1]


def test_pixel_limit_is_checked_from_the_header(fake):
    module, scene = fake({"big.NEF": {"size": (4000, 3000), "flip": 6}})
    io.set_max_pixels(1_000_000)
    with pytest.raises(io.TooLargeError, match=r"big\.NEF: image is 3000x4000 \(12\.0 MP\)"):
        io.read_image(scene / "big.NEF")
    with pytest.raises(io.TooLargeError):
        io.image_size(scene / "big.NEF")
    assert module.calls == []  # refused before anything was decoded
    io.set_max_pixels(0)
    assert io.image_size(scene / "big.NEF") == (3000, 4000)  # upright: LibRaw's flip 6 is a 90-degree turn


def test_unsupported_raw_is_a_one_line_error(fake):
    _, scene = fake({"odd.X3F": {"unsupported": True}})
    with pytest.raises(LoopExposeError, match=r"odd\.X3F: not a RAW format LibRaw reads") as caught:
        io.read_image(scene / "odd.X3F")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("suffix", "bits"), [(".png", 16), (".tif", 16), (".jpg", 8)])
def test_fused_raw_bracket_is_16_bit_by_default(fake, tmp_path, suffix, bits):
    _, scene = fake({f"{i}.DNG": {"shutter": 2.0**i / 100, "level": 0.1 * (i + 1)} for i in range(3)})
    target, _ = fuse_scene(scene, tmp_path / f"fused{suffix}")
    stored = cv2.imread(str(target), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == (np.uint16 if bits == 16 else np.uint8)


# --------------------------------------------------------------------------- real LibRaw on generated DNGs


@pytest.fixture()
def dng_bracket(tmp_path):
    """Three linear DNGs of one scene at 1/200, 1/100 and 1/50 s, named out of order; the middle frame's brightest
    pixel is at 90% of white (LibRaw's default white-level adjustment would brighten that frame alone), and the
    frames' camera white balances differ."""
    pytest.importorskip("rawpy")
    rng = np.random.default_rng(0)
    scene_linear = rng.uniform(0.02, 0.2, size=(48, 64, 3))
    scene_linear[0, 0] = 0.45  # x2 (the 1/100 s frame): 0.9 of white
    folder = tmp_path / "dng scene"
    folder.mkdir()
    neutrals = {1 / 200: (0.5, 1.0, 0.7), 1 / 100: (0.6, 1.0, 0.6), 1 / 50: (0.45, 1.0, 0.75)}
    names = {1 / 200: "c.dng", 1 / 100: "a.dng", 1 / 50: "b.dng"}
    for time, name in names.items():
        write_dng(folder / name, scene_linear * time * 200, exposure_time=time, neutral=neutrals[time])
    return folder, scene_linear


def test_dng_bracket_keeps_exposure_ratios_and_one_white_balance(dng_bracket):
    import kornia
    import torch

    folder, _ = dng_bracket
    bracket = brackets.order_bracket(folder)
    assert bracket.rule == "exif" and [p.name for p in bracket.paths] == ["c.dng", "a.dng", "b.dng"]
    assert bracket.evs == pytest.approx([0.0, 1.0, 2.0], abs=1e-3)
    linear = kornia.color.rgb_to_linear_rgb(brackets.load_bracket(bracket).double())  # (3, 3, H, W)
    unclipped = (linear < 0.9).all(dim=(0, 1))
    for darker, brighter in ((0, 1), (1, 2)):
        ratio = linear[brighter][:, unclipped] / linear[darker][:, unclipped].clamp_min(1e-4)
        bright_enough = linear[darker][:, unclipped] > 0.02
        assert torch.median(ratio[bright_enough]).item() == pytest.approx(2.0, rel=0.01)
    # every frame has the middle frame's colour balance, although their cameras' balances differ by up to 20%
    def balance(frame: torch.Tensor) -> list[float]:
        colour = frame[:, unclipped]
        return [(colour[0].mean() / colour[1].mean()).item(), (colour[2].mean() / colour[1].mean()).item()]

    for frame in linear:
        assert balance(frame) == pytest.approx(balance(linear[1]), rel=0.01)
    alone = kornia.color.rgb_to_linear_rgb(io.to_tensor(io.read_image(folder / "c.dng").pixels).double())
    assert balance(alone)[0] == pytest.approx(balance(linear[1])[0] * 0.6 / 0.5, rel=0.02)  # its own: redder


def test_dng_bracket_through_the_cli(dng_bracket, tmp_path):
    folder, _ = dng_bracket
    out = tmp_path / "out"
    result = runner.invoke(app, ["fuse", str(folder), "-o", str(out)])
    assert result.exit_code == 0, result.output
    fused = cv2.imread(str(out / "dng scene.png"), cv2.IMREAD_UNCHANGED)
    assert fused.dtype == np.uint16 and fused.shape == (48, 64, 3)
    result = runner.invoke(app, ["fuse", str(folder), "-o", str(out), "--format", "jpg"])
    assert result.exit_code == 0 and cv2.imread(str(out / "dng scene.jpg"), cv2.IMREAD_UNCHANGED).dtype == np.uint8
    result = runner.invoke(app, ["fuse", str(folder), "-o", str(tmp_path / "small"), "--max-pixels", "1000"])
    errors = _error_lines(result)
    assert result.exit_code == 2 and len(errors) == 1 and "image is 64x48" in errors[0]
    assert not (tmp_path / "small" / "dng scene.png").exists()


def test_python_api_fuses_raw_files(dng_bracket):
    import loopexpose

    folder, _ = dng_bracket
    fused = loopexpose.fuse([folder / "b.dng", folder / "c.dng", folder / "a.dng"])
    assert fused.dtype == np.float32 and fused.shape == (48, 64, 3)
    assert np.array_equal(fused, loopexpose.fuse(folder))


def test_truncated_and_garbage_raw_files_are_one_line_errors(dng_bracket, tmp_path, capfd):
    folder, _ = dng_bracket
    data = (folder / "a.dng").read_bytes()
    cut = tmp_path / "cut.dng"
    cut.write_bytes(data[: len(data) // 3])
    garbage = tmp_path / "garbage.CR2"
    garbage.write_bytes(b"this is a text file, not a camera RAW\n" * 4)
    capfd.readouterr()
    for path, problem in ((cut, "truncated or corrupt RAW file (LibRaw: Unexpected end of file)"),
                          (garbage, "not a RAW format LibRaw reads")):  # fmt: skip
        with pytest.raises(LoopExposeError) as caught:
            io.read_image(path)
        assert str(caught.value).startswith(f"{path}: {problem}") and "\n" not in str(caught.value)
    assert capfd.readouterr().err == ""  # what LibRaw printed was captured, not shown


# ----------------------------------------------------------------------------------- the real Kodak DC50 RAW


@pytest.fixture(scope="module")
def kdc():
    from loopexpose.paths import data_root

    path = data_root() / "raw" / "RAW_KODAK_DC50.KDC"
    if not path.is_file():
        pytest.skip(f"real RAW not found at {path} (set LOOPEXPOSE_DATA or place it at ../shared/data)")
    pytest.importorskip("rawpy", reason="the raw extra (rawpy) is not installed")
    return path


def test_kdc_rendering_matches_rawpy_and_the_prepare_raw_frames(kdc):
    import rawpy

    from loopexpose import synth

    pixels, info = raw.render(kdc)
    assert pixels.dtype == np.uint16 and pixels.shape == (512, 768, 3) and (info.width, info.height) == (768, 512)
    assert info.exposure_time == pytest.approx(1 / 230, rel=0.01) and info.iso == 84
    ours = pixels / 65535.0
    with rawpy.imread(str(kdc)) as handle:  # LibRaw's own sRGB-curve rendering, camera WB, no auto-brightness
        reference = handle.postprocess(use_camera_wb=True, no_auto_bright=True, gamma=(2.4, 12.92), output_bps=16)
    assert np.abs(ours - reference / 65535.0).mean() < 0.05 / 255  # measured: 0.003 / 255
    decoded = synth.decode_raw(kdc)  # the training brackets' EV 0 frame (`prepare raw`)
    prepared = io.to_numpy(synth.render_exposure(decoded.linear, 0.0, decoded.matrix, "srgb"))
    assert np.abs(ours - prepared).mean() < 0.05 / 255  # measured: 0.002 / 255 (max 0.05 / 255)


def test_correct_kdc_writes_16_bit_tiff_with_exposure_exif(kdc, tmp_path):
    from loopexpose.models import save

    model = str(save(randomised_curvegrid(), tmp_path / "random.safetensors"))
    out = tmp_path / "out"
    result = runner.invoke(app, ["correct", str(kdc), "-o", str(out), "--model", model, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    target = out / "RAW_KODAK_DC50_loopexpose.tif"
    stored = tifffile.imread(target)
    assert stored.dtype == np.uint16 and stored.shape == (512, 768, 3)
    with Image.open(target) as image:
        exif = image.getexif().get_ifd(0x8769)
    assert float(exif[0x829A]) == pytest.approx(1 / 230, rel=0.01) and exif[0x8827] == 84
    assert exif[0x9003] == "1997:04:23 08:00:47"
    result = runner.invoke(app, ["correct", str(kdc), "-o", str(out), "--model", model, "--format", "jpg"])
    assert result.exit_code == 0 and cv2.imread(str(out / "RAW_KODAK_DC50_loopexpose.jpg")).dtype == np.uint8


def test_kdc_copied_three_times_is_a_degenerate_bracket(kdc, tmp_path):
    scene = tmp_path / "kdc bracket"
    scene.mkdir()
    for i in range(3):
        (scene / f"shot{i}.KDC").write_bytes(kdc.read_bytes())
    bracket = brackets.order_bracket(scene)
    # equal EXIF exposure cannot order the frames: the luminance rule (equal too: file-name order) decides
    assert bracket.rule == "luminance" and "EXIF exposure incomplete or repeated" in bracket.note
    assert [p.name for p in bracket.paths] == ["shot0.KDC", "shot1.KDC", "shot2.KDC"]
    out = tmp_path / "out"
    result = runner.invoke(app, ["fuse", str(scene), "-o", str(out)])
    assert result.exit_code == 0, result.output
    fused = cv2.imread(str(out / "kdc bracket.png"), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    assert fused.dtype == np.uint16
    single, _ = raw.render(kdc)
    # the fusion of three identical frames is that frame (up to the pyramid's rounding)
    assert np.abs(fused.astype(np.float64) - single).mean() / 65535 < 0.5 / 255


def test_web_demo_fuses_an_uploaded_raw_bracket(dng_bracket, tmp_path):
    from loopexpose.app import WebDemo

    class Identity:
        def correct(self, image):
            return image

    folder, _ = dng_bracket
    demo = WebDemo(models={"identity": Identity()}, workdir=tmp_path / "web")
    uploads = []
    for n, path in enumerate(sorted(folder.iterdir())):  # as Gradio stores them: one sub-folder each
        folder = demo.uploads / f"u{n}"
        folder.mkdir()
        uploads.append(str(shutil.copy(path, folder / path.name)))
    result = demo.fuse(uploads, "identity")
    assert result.rule == "exif" and result.names == ["c.dng", "a.dng", "b.dng"]  # 1/200, 1/100, 1/50 s
    assert result.download.is_file()
