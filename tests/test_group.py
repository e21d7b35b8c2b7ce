"""Grouping a flat folder of shots into brackets (``loopexpose.brackets.group``): a generated memory card of 60
JPEGs with EXIF (AEB sequences of 3, 5 and 7 frames in every camera order, single shots, brackets back to back),
the same card without exposure bias, a folder without EXIF grouped by image similarity, bad files, and the
``scenes --group auto`` and ``fuse --group auto`` commands."""

from __future__ import annotations

import inspect
import math
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational
from skimage import data as skdata
from typer.testing import CliRunner

from loopexpose import synth
from loopexpose.brackets import group_brackets, order_bracket
from loopexpose.brackets.group import BRACKET_SIZES, MAX_GAP, _bracket_order, exposure_offset, view_similarity
from loopexpose.cli import app
from loopexpose.cli.scenes import scenes as scenes_command
from loopexpose.errors import LoopExposeError

# (exposure biases of one burst in shooting order, seconds from the end of the previous burst)
CARD = [
    ([0, -2, 2], None),  # Canon 0 - +
    ([0], 20.0),
    ([0, -1, 1, -2, 2], 15.0),
    ([0, -1, 1], 30.0),
    ([0, -1, 1], 0.35),  # back to back: the bias pattern restarts
    ([0], 12.0),
    ([-3, -2, -1, 0, 1, 2, 3], 25.0),  # Nikon ascending
    ([1, 0, 2], 40.0),  # exposure compensation +1
    ([0], 9.0),
    ([-2, -1, 0, 1, 2], 0.35),  # a single shot, then a bracket without a pause
    ([0, -1, 1, -2, 2, -3, 3], 0.35),  # and another bracket without a pause
    ([2, 0, -2], 18.0),  # descending
    ([1 / 3], 7.0),
    ([1 / 3], 0.35),  # two single shots at one exposure, back to back
    ([0, -1 / 3, 1 / 3, -2 / 3, 2 / 3], 11.0),  # 1/3-stop steps
    ([0, -2, 2], 0.35),
    ([3, 2, 1, 0, -1, -2, -3], 14.0),  # descending 7
    ([0], 8.0),
]
WITHIN = 0.35  # seconds between the frames of a burst, after each exposure
NOMINAL_TIMES = [1 / 8000 * 2 ** (k / 3) for k in range(0, 46)]  # 1/8000 s .. 1/4 s in third stops
START = datetime(2024, 5, 1, 10, 0, 0)


def _nominal(seconds: float) -> Fraction:
    """The camera's displayed shutter time nearest ``seconds`` (1/125, 1/100, ...), as EXIF stores it."""
    nearest = min(NOMINAL_TIMES, key=lambda t: abs(math.log2(t / seconds)))
    return Fraction(1, round(1 / nearest)) if nearest < 0.3 else Fraction(nearest).limit_denominator(10)


def _write_shot(path: Path, pixels: np.ndarray, when: datetime | None, bias: float | None, exposure_time, size=None):
    """A JPEG of ``pixels`` (H, W, 3 float in [0, 1]) with EXIF capture time and exposure (``None``: tag left out)."""
    exif = Image.Exif()
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    if when is not None:
        sub[ExifTags.Base.DateTimeOriginal] = when.strftime("%Y:%m:%d %H:%M:%S")
        sub[ExifTags.Base.SubsecTimeOriginal] = f"{when.microsecond // 10000:02d}"
    if bias is not None:
        sub[ExifTags.Base.ExposureBiasValue] = IFDRational(Fraction(bias).limit_denominator(3))
    if exposure_time is not None:
        sub[ExifTags.Base.ExposureTime] = IFDRational(exposure_time)
        sub[ExifTags.Base.FNumber] = IFDRational(8)
        sub[ExifTags.Base.ISOSpeedRatings] = 200
    image = Image.fromarray((np.clip(pixels, 0, 1) * 255 + 0.5).astype(np.uint8))
    if size is not None:
        image = image.resize(size)
    image.save(path, quality=90, exif=exif.tobytes())


def make_card(folder: Path, bias: bool = True, size=(32, 24)) -> list[list[str]]:
    """Write :data:`CARD` as ``IMG_0001.JPG``.. into ``folder``; return the expected groups (file names).

    Every burst shows its own random scene, metered at its own level (so exposure values differ between bursts
    as on a real card), except a burst that repeats the one before without a pause. A frame's shutter time is
    the metered one x 2^bias, rounded to the nominal third-stop series; ``bias=False`` leaves
    ExposureBiasValue out (grouping then reads exposure values).
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    clock, index, expected = START, 1, []
    for burst, (biases, gap) in enumerate(CARD):
        if burst == 0 or biases != CARD[burst - 1][0] or gap != WITHIN:  # else the same sequence again (held
            scene = rng.random((size[1], size[0], 3), dtype=np.float32) * 0.5  # shutter: same view, same metering)
            metered = 1 / 125 * 2 ** float(rng.uniform(-2, 2))
        clock += timedelta(seconds=gap or 0)
        names = []
        for value in biases:
            shutter = _nominal(metered * 2**value)
            name = f"IMG_{index:04d}.JPG"
            _write_shot(folder / name, scene * 2 ** (value / 2.2), clock, value if bias else None, shutter)
            clock += timedelta(seconds=float(shutter) + WITHIN)
            names.append(name)
            index += 1
        clock -= timedelta(seconds=WITHIN)
        expected.append(names)
    assert index - 1 == 60
    return expected


def names(grouping) -> list[list[str]]:
    return [[path.name for path in group.paths] for group in grouping.groups]


# ------------------------------------------------------------------------------------------ EXIF patterns


@pytest.mark.parametrize(
    ("keys", "order"),
    [
        ([0, -2, 2], "centre first"), ([0, 2, -2], "centre first"), ([0, -1, 1, -2, 2], "centre first"),
        ([0, -1, 1, -2, 2, -3, 3, -4, 4], "centre first"), ([-2, -1, 0, 1, 2], "ascending"),
        ([3, 2, 1, 0, -1, -2, -3], "descending"), ([0, 1], "ascending"), ([1, 0], "descending"),
        ([0, -1 / 3, 1 / 3], "centre first"), ([1, 0, 2], "centre first"),
        ([0, -1, 1, -2], None),  # four frames: no camera shoots that
        ([0, -1, 2], None),  # uneven steps
        ([0, 0, 0], None),  # one exposure repeated
        ([-1, 1, 0], None),  # no camera order
        ([0, -1, -2, 1, 2], None),
        ([0, -0.1, 0.1], None),  # steps under 1/3 stop: metering drift, not a bracket
        ([0, -4, 4], None),  # steps over 3 stops
    ],
)  # fmt: skip
def test_bracket_orders(keys, order):
    assert _bracket_order([float(k) for k in keys], 0.05) == order


def test_bracket_sizes_are_camera_sizes():
    assert BRACKET_SIZES == (2, 3, 5, 7, 9)


def test_card_of_60_grouped_exactly_by_bias(tmp_path):
    expected = make_card(tmp_path / "card")
    grouping = group_brackets(tmp_path / "card")
    assert grouping.key == "bias" and "capture-time order" in grouping.note
    assert names(grouping) == expected
    assert len(grouping.brackets) == 12 and len(grouping.singles) == 6 and not grouping.skipped
    splits = [group.split for group in grouping.groups]
    assert splits[0] == "first frame"
    assert splits[1] == "time gap 20.0 s" and splits[2] == "time gap 15.0 s"
    assert splits[4] == "bias 0 repeats"  # 0 -1 +1 | 0 -1 +1 back to back
    assert splits[9] == "bias -2 starts a new pattern"  # single 0 | -2 -1 0 +1 +2
    assert splits[10] == "bias 0 repeats"
    assert splits[13] == "bias +0.33 repeats"  # two single shots back to back
    assert grouping.groups[0].pattern == "bias 0 -2 +2, centre first"
    assert grouping.groups[6].pattern.endswith("ascending") and grouping.groups[16].pattern.endswith("descending")
    assert grouping.groups[1].pattern == "single shot" and grouping.groups[1].single
    assert [g.name for g in grouping.brackets][:3] == ["IMG_0001", "IMG_0005", "IMG_0010"]


def test_card_without_bias_grouped_exactly_by_exposure_value(tmp_path):
    expected = make_card(tmp_path / "card", bias=False)
    grouping = group_brackets(tmp_path / "card")
    assert grouping.key == "ev" and "no bias recorded" in grouping.note
    assert names(grouping) == expected
    assert grouping.groups[4].split == "EV 0 repeats"


def test_files_out_of_name_order_follow_capture_time(tmp_path):
    folder = tmp_path / "card"
    expected = make_card(folder)
    first = [folder / name for name in expected[0]]  # the first bracket renamed to sort last by name
    for path in first:
        path.rename(folder / f"ZZZ_{path.name}")
    grouping = group_brackets(folder)
    assert names(grouping)[0] == [f"ZZZ_{name}" for name in expected[0]]


def test_grouped_bracket_is_ordered_dark_to_bright(tmp_path):
    make_card(tmp_path / "card")
    group = group_brackets(tmp_path / "card").groups[2]  # 0 -1 +1 -2 +2
    bracket = order_bracket(tmp_path / "card", group.paths)
    assert bracket.rule == "exif"
    assert [p.name for p in bracket.paths] == ["IMG_0008.JPG", "IMG_0006.JPG", "IMG_0005.JPG", "IMG_0007.JPG",
                                               "IMG_0009.JPG"]  # fmt: skip


# ------------------------------------------------------------------------------------------ bad input


def test_unreadable_files_are_skipped_with_their_problem(tmp_path):
    folder = tmp_path / "card"
    expected = make_card(folder)
    (folder / "IMG_0002.JPG").write_bytes((folder / "IMG_0002.JPG").read_bytes()[:300])  # cut short
    (folder / "notes.jpg").write_text("not a photo")
    grouping = group_brackets(folder)
    assert [path.name for path, _ in grouping.skipped] == ["IMG_0002.JPG", "notes.jpg"]
    assert all(problem and "\n" not in problem for _, problem in grouping.skipped)
    expected[0].remove("IMG_0002.JPG")  # 0 +2 left: a two-frame bracket
    assert names(grouping) == expected
    assert grouping.groups[0].pattern == "bias 0 +2, ascending"


def test_mixed_sizes_make_an_error_for_that_group_only(tmp_path):
    folder = tmp_path / "card"
    make_card(folder)
    with Image.open(folder / "IMG_0006.JPG") as image:
        exif = image.getexif().tobytes()
        image.resize((40, 24)).save(folder / "IMG_0006.JPG", exif=exif)
    grouping = group_brackets(folder)
    bad = [group for group in grouping.groups if group.error]
    assert [group.name for group in bad] == ["IMG_0005"]
    assert "IMG_0005.JPG 32x24" in bad[0].error and "IMG_0006.JPG 40x24" in bad[0].error


def test_empty_and_unreadable_folders_are_errors(tmp_path):
    with pytest.raises(LoopExposeError, match="no images"):
        group_brackets(tmp_path)
    (tmp_path / "a.jpg").write_text("x")
    with pytest.raises(LoopExposeError, match="none of the 1 image files"):
        group_brackets(tmp_path)


# ------------------------------------------------------------------------------------------ no EXIF

NO_EXIF_CARD = [  # (photo, EV offsets in shooting order)
    ("astronaut", [0, -2, 2]),
    ("rocket", [0]),
    ("coffee", [-2, -1, 0, 1, 2]),
    ("chelsea", [0, -1, 1]),
    ("chelsea", [0, -1, 1]),  # one view twice, back to back: split where an exposure repeats
    ("hubble_deep_field", [0]),
    ("immunohistochemistry", [0, -1, 1, -2, 2]),
    ("camera", [1, 0, -1]),
    ("coins", [0]),
    ("astronaut", [0]),  # the first view again, later
]


@pytest.fixture(scope="module")
def no_exif_card(tmp_path_factory) -> tuple[Path, list[list[str]]]:
    """:data:`NO_EXIF_CARD` rendered with :func:`loopexpose.synth.render_exposure` as JPEGs without EXIF."""
    folder = tmp_path_factory.mktemp("no_exif") / "card"
    folder.mkdir()
    index, expected = 1, []
    for photo, evs in NO_EXIF_CARD:
        pixels = getattr(skdata, photo)()
        pixels = np.repeat(pixels[..., None], 3, 2) if pixels.ndim == 2 else pixels[..., :3]
        small = cv2.resize(pixels, (96, 64), interpolation=cv2.INTER_AREA)
        linear = synth.srgb_to_linear(torch.from_numpy(small).permute(2, 0, 1).float() / 255)
        group = []
        for ev in evs:
            frame = synth.render_exposure(linear, ev).permute(1, 2, 0).numpy()
            name = f"DSC{index:05d}.jpg"
            _write_shot(folder / name, frame, None, None, None)
            group.append(name)
            index += 1
        expected.append(group)
    return folder, expected


def test_no_exif_folder_grouped_by_similarity(no_exif_card):
    folder, expected = no_exif_card
    grouping = group_brackets(folder)
    assert grouping.key == "similarity" and "file-name order" in grouping.note
    assert names(grouping) == expected
    splits = [group.split for group in grouping.groups]
    assert splits[1].startswith("another view (similarity")
    assert splits[4] == "same view at the exposure of DSC00010.jpg again"
    assert grouping.groups[2].pattern == "5 frames of one view"


def test_view_similarity_and_exposure_offset_ignore_exposure():
    coffee = skdata.coffee()[::4, ::4].astype(np.float32) @ np.float32([0.299, 0.587, 0.114]) / 255
    thumb = cv2.resize(coffee, (64, 64), interpolation=cv2.INTER_AREA)
    brighter = np.clip(thumb * 2 ** (1 / 2.2), 0, 1)  # one stop more light, gamma 2.2
    assert view_similarity(thumb, brighter) > 0.9
    assert exposure_offset(thumb, brighter) == pytest.approx(1.0, abs=0.05)
    other = cv2.resize(skdata.camera().astype(np.float32) / 255, (64, 64), interpolation=cv2.INTER_AREA)
    assert view_similarity(thumb, other) < 0.43
    assert view_similarity(thumb, np.ones_like(thumb)) is None  # all white: nothing to compare


# ------------------------------------------------------------------------------------------ command line


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "400", "NO_COLOR": "1"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_cli_scenes_group_auto_lists_groups_and_why(tmp_path):
    folder = tmp_path / "card"
    make_card(folder)
    (folder / "broken.jpg").write_text("not a photo")
    result = invoke("scenes", str(folder), "--group", "auto", "--files")
    assert result.exit_code == 0, result.output
    assert "12 bracket(s), 6 single shot(s)" in result.stdout
    assert "bias 0 -2 +2, centre first" in result.stdout and "time gap 20.0 s" in result.stdout
    assert "bias -2 starts a new pattern" in result.stdout and "single shot (not fused)" in result.stdout
    assert "IMG_0001.JPG, IMG_0002.JPG, IMG_0003.JPG" in result.stdout
    assert "grouping: frames in capture-time order; patterns of EXIF exposure bias" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "broken.jpg" in warnings[0] and "skipped" in warnings[0]


def test_cli_scenes_group_auto_mixed_sizes_fail_one_group(tmp_path):
    folder = tmp_path / "card"
    make_card(folder)
    with Image.open(folder / "IMG_0014.JPG") as image:
        exif = image.getexif().tobytes()
        image.resize((24, 32)).save(folder / "IMG_0014.JPG", exif=exif)
    result = invoke("scenes", str(folder), "--group", "auto")
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "group IMG_0013" in errors[0] and "different sizes" in errors[0], result.stderr
    assert "bias 0 -2 +2, centre first" in result.stdout  # the other groups are listed


def test_cli_max_gap_joins_a_slow_bracket(tmp_path):
    folder = tmp_path / "slow"
    folder.mkdir()
    scene = np.random.default_rng(3).random((24, 32, 3), dtype=np.float32) * 0.5
    for index, bias in enumerate((0, -2, 2)):  # a bracket shot 3 s apart (self-timer, slow AEB)
        when = START + timedelta(seconds=3 * index)
        _write_shot(folder / f"IMG_{index + 1:04d}.JPG", scene * 2 ** (bias / 2.2), when, bias, _nominal(2**bias / 125))
    default = invoke("scenes", str(folder), "--group", "auto")
    assert default.exit_code == 0 and "0 bracket(s), 3 single shot(s)" in " ".join(default.stdout.split())
    assert "time gap 3.0 s" in default.stdout
    joined = invoke("scenes", str(folder), "--group", "auto", "--max-gap", "4")
    assert joined.exit_code == 0 and "1 bracket(s), 0 single shot(s)" in " ".join(joined.stdout.split())
    out = tmp_path / "fused"
    fused = invoke("fuse", str(folder), "--group", "auto", "--max-gap", "4", "-o", str(out))
    assert fused.exit_code == 0 and [p.name for p in out.iterdir()] == ["IMG_0001.png"], fused.output
    assert invoke("scenes", str(folder), "--group", "auto", "--max-gap", "-1").exit_code == 2
    # the option's default is the library's (written out in the CLI so that --help does not import OpenCV)
    assert inspect.signature(scenes_command).parameters["max_gap"].default.default == MAX_GAP


def test_cli_group_option_is_checked(tmp_path):
    with pytest.raises(LoopExposeError, match="--group must be one of folder, auto"):
        invoke("scenes", str(tmp_path), "--group", "smart")


def test_cli_fuse_group_auto_fuses_each_bracket(tmp_path):
    folder = tmp_path / "card"
    make_card(folder)
    with Image.open(folder / "IMG_0006.JPG") as image:  # the second bracket gets a frame of another size
        exif = image.getexif().tobytes()
        image.resize((40, 24)).save(folder / "IMG_0006.JPG", exif=exif)
    out = tmp_path / "fused"
    result = invoke("fuse", str(folder), "--group", "auto", "-o", str(out))
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "group IMG_0005" in errors[0] and "different sizes" in errors[0]
    grouping = group_brackets(folder)
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(f"{g.name}.png" for g in grouping.brackets if g.name != "IMG_0005")
    assert "fused 11 bracket(s)" in result.stderr and "6 single shot(s) not fused" in result.stderr
    assert "1 failed" in result.stderr
    with Image.open(out / "IMG_0001.png") as fused:
        assert fused.size == (32, 24)


def test_cli_fuse_group_auto_ctrl_c_says_how_far_it_got(tmp_path, monkeypatch):
    import loopexpose.cli.fuse as fuse_command

    make_card(tmp_path / "card")
    calls = []
    real = fuse_command.fuse_scene

    def interrupted_at_third(*args, **kwargs):
        calls.append(kwargs["paths"])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fuse_command, "fuse_scene", interrupted_at_third)
    result = invoke("fuse", str(tmp_path / "card"), "--group", "auto", "-o", str(tmp_path / "out"))
    assert result.exit_code == 130
    assert "interrupted: 2 of 12 done" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["IMG_0001.png", "IMG_0005.png"]
    assert [p.name for p in calls[1]] == [f"IMG_000{i}.JPG" for i in range(5, 10)]


def test_scenes_group_auto_does_not_import_torch(tmp_path):
    import subprocess
    import sys

    make_card(tmp_path / "card")
    probe = (
        "import sys\nfrom loopexpose.cli import main\nsys.argv = ['loopexpose', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO TORCH', file=sys.stderr)\n"
    )
    args = ["scenes", str(tmp_path / "card"), "--group", "auto"]
    result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60)
    assert result.stderr.strip().endswith("NO TORCH"), result.stderr[-500:]
    assert "patterns of EXIF exposure bias" in result.stdout
