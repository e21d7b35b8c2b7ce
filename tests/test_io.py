"""Reading and writing photos: depths, channel layouts, EXIF orientation, metadata round trips, bad files."""

from __future__ import annotations

import io
import os

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageOps

from loopexpose.errors import LoopExposeError
from loopexpose.io import (
    atomic_write_bytes,
    brightest_channel,
    darkest_channel,
    luma,
    read_icc,
    read_image,
    to_numpy,
    to_tensor,
    write_image,
)

SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _rgb8(height=20, width=30, seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)


def _exif(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[271], exif[272] = "Canon", "EOS D30"
    exif.get_ifd(0x8769).update({0x829A: 0.004, 0x829D: 2.8, 0x8827: 200})
    if orientation is not None:
        exif[0x0112] = orientation
    return exif


# ----------------------------------------------------------------------------------------- depths and layouts


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_round_trip_is_exact(tmp_path, suffix):
    samples = np.random.default_rng(1).integers(0, 65536, (17, 23, 3), dtype=np.uint16)
    samples[0, 0] = [0, 1, 65535]
    source = tmp_path / f"in{suffix}"
    cv2.imwrite(str(source), samples[:, :, ::-1])  # OpenCV writes BGR
    photo = read_image(source)
    assert photo.bit_depth == 16 and photo.pixels.dtype == np.float32 and photo.pixels.shape == (17, 23, 3)
    out = write_image(tmp_path / f"out{suffix}", photo.pixels, bits=16)
    back = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, samples)
    assert read_image(out).bit_depth == 16


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_8bit_round_trip_is_exact(tmp_path, suffix):
    samples = _rgb8()
    Image.fromarray(samples).save(tmp_path / f"in{suffix}")
    photo = read_image(tmp_path / f"in{suffix}")
    assert photo.bit_depth == 8
    write_image(tmp_path / f"out{suffix}", photo.pixels, bits=8)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / f"out{suffix}").convert("RGB")), samples)


def test_grey_8_and_16_bit(tmp_path):
    grey8 = _rgb8()[:, :, 0]
    Image.fromarray(grey8, "L").save(tmp_path / "g8.png")
    photo = read_image(tmp_path / "g8.png")
    assert photo.pixels.shape == (20, 30, 3) and photo.bit_depth == 8
    np.testing.assert_allclose(photo.pixels[:, :, 1], grey8 / 255, atol=1e-6)
    grey16 = np.random.default_rng(2).integers(0, 65536, (9, 11), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), grey16)
    photo = read_image(tmp_path / "g16.png")
    assert photo.bit_depth == 16
    np.testing.assert_allclose(photo.pixels[:, :, 2], grey16 / 65535, atol=1e-6)


@pytest.mark.parametrize("mode", ["LA", "RGBA", "P"])
def test_alpha_and_palette_dropped_to_rgb(tmp_path, mode):
    rgb = _rgb8()
    if mode == "LA":
        image = Image.fromarray(np.dstack([rgb[:, :, 0], np.full((20, 30), 77, np.uint8)]), "LA")
        expected = np.repeat(rgb[:, :, :1], 3, axis=2)
    elif mode == "RGBA":
        image = Image.fromarray(np.dstack([rgb, np.full((20, 30), 10, np.uint8)]), "RGBA")
        expected = rgb
    else:
        image = Image.fromarray(rgb).quantize(16)
        expected = np.asarray(image.convert("RGB"))
    image.save(tmp_path / "x.png")
    photo = read_image(tmp_path / "x.png")
    assert photo.pixels.shape == (20, 30, 3)
    np.testing.assert_allclose(photo.pixels, expected / 255, atol=1e-6)  # alpha ignored, not composited


def test_16bit_rgba_tiff(tmp_path):
    samples = np.random.default_rng(3).integers(0, 65536, (8, 9, 4), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "a.tif"), samples)
    photo = read_image(tmp_path / "a.tif")
    assert photo.bit_depth == 16
    np.testing.assert_allclose(photo.pixels, samples[:, :, 2::-1] / 65535, atol=1e-6)


# ----------------------------------------------------------------------------------------- orientation

@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("suffix", [".jpg", ".png", ".tif"])
def test_exif_orientation_applied(tmp_path, orientation, suffix):
    upright = np.zeros((20, 32, 3), np.uint8)
    upright[:10, :16] = (250, 0, 0)  # red top-left quadrant
    upright[:10, 16:] = (0, 250, 0)  # green top-right
    upright[10:, :16] = (0, 0, 250)  # blue bottom-left
    # store the image so that applying `orientation` makes it upright: invert PIL's transpose
    inverse = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
               5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
               8: Image.Transpose.ROTATE_270}  # fmt: skip
    stored = Image.fromarray(upright)
    if orientation in inverse:
        stored = stored.transpose(inverse[orientation])
    path = tmp_path / f"o{orientation}{suffix}"
    options = {"quality": 95, "subsampling": 0} if suffix == ".jpg" else {}
    if suffix == ".tif":  # Pillow's TIFF writer takes the orientation as a TIFF tag, not from EXIF
        stored.save(path, tiffinfo={0x0112: orientation})
    else:
        stored.save(path, exif=_exif(orientation).tobytes(), **options)
    assert _pillow_upright(path).shape == upright.shape  # the inverse table agrees with Pillow's exif_transpose
    photo = read_image(path)
    assert photo.pixels.shape == (20, 32, 3)
    got = (photo.pixels * 255).round()
    np.testing.assert_allclose(got, upright, atol=12 if suffix == ".jpg" else 0)
    parsed = Image.Exif()
    parsed.load(photo.exif)
    assert parsed.get(0x0112, 1) == 1  # pixels are upright now, so the tag is reset


def _pillow_upright(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


# ----------------------------------------------------------------------------------------- metadata


@pytest.mark.parametrize(("suffix", "bits"), [(".jpg", 8), (".png", 8), (".tif", 8), (".png", 16), (".tif", 16)])
def test_exif_and_icc_survive_write(tmp_path, suffix, bits):
    source = tmp_path / "src.jpg"
    Image.fromarray(_rgb8()).save(source, exif=_exif(6).tobytes(), icc_profile=SRGB_ICC, quality=95)
    photo = read_image(source)
    assert photo.icc == SRGB_ICC and photo.pixels.shape == (30, 20, 3)  # rotated by orientation 6
    out = write_image(tmp_path / f"out{suffix}", photo.pixels, bits=bits, exif=photo.exif, icc=photo.icc)
    with Image.open(out) as image:
        assert image.info.get("icc_profile") == SRGB_ICC
        exif = image.getexif()
        sub = exif.get_ifd(0x8769)
        assert (exif.get(271), exif.get(272)) == ("Canon", "EOS D30")
        assert float(sub[0x829A]) == pytest.approx(0.004) and float(sub[0x829D]) == pytest.approx(2.8)
        assert int(sub[0x8827]) == 200
        assert exif.get(0x0112, 1) == 1  # not rotated twice
    again = read_image(out)
    assert again.bit_depth == bits and again.icc == SRGB_ICC and again.pixels.shape == (30, 20, 3)
    assert read_icc(out) == SRGB_ICC and read_icc(source) == SRGB_ICC
    if suffix == ".jpg":  # lossy: noise recompressed at quality 95
        assert float(np.abs(again.pixels - photo.pixels).mean()) < 0.02
    else:
        np.testing.assert_allclose(again.pixels, photo.pixels, atol=1e-6)


def test_tiff_metadata_does_not_copy_structure_tags(tmp_path):
    Image.fromarray(_rgb8()).save(tmp_path / "a.tif", exif=_exif().tobytes())
    photo = read_image(tmp_path / "a.tif")
    parsed = Image.Exif()
    parsed.load(photo.exif)
    assert 273 not in parsed and 256 not in parsed  # StripOffsets/ImageWidth describe the old file only
    write_image(tmp_path / "b.jpg", photo.pixels, exif=photo.exif)
    assert read_image(tmp_path / "b.jpg").pixels.shape == (20, 30, 3)


# ----------------------------------------------------------------------------------------- writing


def test_write_rejects_bad_requests(tmp_path):
    pixels = np.zeros((4, 5, 3), np.float32)
    with pytest.raises(LoopExposeError, match="16-bit"):
        write_image(tmp_path / "a.jpg", pixels, bits=16)
    with pytest.raises(LoopExposeError, match="unsupported output format"):
        write_image(tmp_path / "a.bmp", pixels)
    with pytest.raises(LoopExposeError, match=r"\(H, W, 3\)"):
        write_image(tmp_path / "a.png", np.zeros((4, 5)))
    assert list(tmp_path.iterdir()) == []


def test_write_clips_and_quantises(tmp_path):
    pixels = np.array([[[-0.5, 0.5, 1.5]]], np.float32)
    write_image(tmp_path / "a.png", pixels)
    assert np.asarray(Image.open(tmp_path / "a.png")).tolist() == [[[0, 128, 255]]]


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    atomic_write_bytes(target, b"old")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temp file left


def test_write_into_new_folder_with_awkward_name(tmp_path):
    out = write_image(tmp_path / "Ben&Jerry's [x] (1)" / "é.png", np.full((3, 4, 3), 0.5, np.float32))
    assert read_image(out).pixels.shape == (3, 4, 3)


# ----------------------------------------------------------------------------------------- bad files


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(LoopExposeError, match="no such file"):
        read_image(tmp_path / "none.jpg")
    with pytest.raises(LoopExposeError, match="is a folder"):
        read_image(tmp_path)


def test_text_file_named_jpg(tmp_path):
    (tmp_path / "a.jpg").write_text("hello, I am not a photo\n")
    with pytest.raises(LoopExposeError) as info:
        read_image(tmp_path / "a.jpg")
    message = str(info.value)
    assert str(tmp_path / "a.jpg") in message and "not an image" in message and "\n" not in message


def test_empty_file(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(LoopExposeError, match="empty file"):
        read_image(tmp_path / "a.png")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF"])
@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_truncated_files_detected(tmp_path, fmt, keep):
    buffer = io.BytesIO()
    Image.fromarray(_rgb8(64, 64)).save(buffer, format=fmt)
    data = buffer.getvalue()
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(LoopExposeError, match="truncated|corrupt"):
        read_image(path)


# ----------------------------------------------------------------------------------------- tensors


def test_tensor_round_trip_and_luma():
    pixels = _rgb8().astype(np.float32) / 255
    tensor = to_tensor(pixels)
    assert tensor.shape == (3, 20, 30) and tensor.dtype == torch.float32
    np.testing.assert_array_equal(to_numpy(tensor), pixels)
    assert luma(np.array([1.0, 1.0, 1.0], np.float32)) == pytest.approx(1.0)
    assert luma(np.array([0.0, 1.0, 0.0], np.float32)) == pytest.approx(0.587)


@pytest.mark.parametrize("orientation", [2, 6, 7])
def test_16bit_tiff_orientation(tmp_path, orientation):
    import tifffile

    stored = np.zeros((6, 10, 3), np.uint16)
    stored[0, 0] = (60000, 0, 0)  # stored top-left pixel
    tifffile.imwrite(tmp_path / "a.tif", stored, photometric="rgb", extratags=[(0x0112, "H", 1, orientation, True)])
    pixels = read_image(tmp_path / "a.tif").pixels
    # where the stored top-left lands once upright, and the upright shape
    expected = {2: ((0, 9), (6, 10)), 6: ((0, 5), (10, 6)), 7: ((9, 5), (10, 6))}[orientation]
    assert pixels.shape[:2] == expected[1]
    assert tuple(np.argwhere(pixels[:, :, 0] > 0.5)[0]) == expected[0]


def test_brightest_and_darkest_channel_match_numpy_reductions():
    rng = np.random.default_rng(0)
    for pixels in (
        rng.integers(0, 256, (7, 5, 3), dtype=np.uint8),
        rng.integers(0, 65536, (2, 7, 5, 3), dtype=np.uint16),
        np.concatenate([rng.normal(size=(20, 3)), [[np.inf, -np.inf, 0.0]]]).astype(np.float32),
    ):
        brightest, darkest = brightest_channel(pixels), darkest_channel(pixels)
        assert brightest.dtype == darkest.dtype == pixels.dtype
        np.testing.assert_array_equal(brightest, pixels.max(axis=-1))
        np.testing.assert_array_equal(darkest, pixels.min(axis=-1))


@pytest.mark.parametrize("shape", [(0, 4, 3), (1, 70_000, 3), (40, 3_000, 3), (7, 5, 3)])
def test_quantise_in_bands_matches_the_whole_array_formula(shape):
    from loopexpose.io import _quantise

    pixels = np.random.default_rng(0).uniform(-0.1, 1.1, shape).astype(np.float32)
    for bits, dtype in ((8, np.uint8), (16, np.uint16)):
        expected = (np.clip(pixels, 0, 1) * (2**bits - 1) + 0.5).astype(dtype)
        np.testing.assert_array_equal(_quantise(pixels, bits), expected)
        np.testing.assert_array_equal(_quantise(pixels.astype(np.float64), bits), expected)
