"""Bracket discovery and exposure ordering: synthetic scenes for each rule, and every real scene in
``../shared/data/brackets`` checked against the rules in ``../shared/data/README.md`` and ``manifest.csv``."""

from __future__ import annotations

import csv
import re
import time
import warnings
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loopexpose.brackets import (
    Bracket,
    ev_from_filename,
    exif_ev,
    find_scenes,
    list_images,
    load_bracket,
    mean_luma,
    order_bracket,
    read_bracket,
)
from loopexpose.errors import LoopExposeError

# ----------------------------------------------------------------------------------------- helpers


def _save(path: Path, level: float, size=(24, 16), exposure_time: float | None = None, fmt=None) -> Path:
    """A flat-ish grey frame of brightness ``level`` in [0, 1], optionally with EXIF exposure time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(-0.05, 0.05, size[0], dtype=np.float32)[None, :, None]
    pixels = np.clip(level + ramp + np.zeros((size[1], size[0], 3), np.float32), 0, 1)
    image = Image.fromarray((pixels * 255 + 0.5).astype(np.uint8))
    options = {}
    if exposure_time is not None:
        exif = Image.Exif()
        exif.get_ifd(0x8769).update({0x829A: exposure_time, 0x829D: 4.0, 0x8827: 100})
        options["exif"] = exif.tobytes()
    image.save(path, format=fmt, **options)
    return path


# ----------------------------------------------------------------------------------------- file-name tags


@pytest.mark.parametrize(
    ("name", "ev"),
    [
        ("beach_N1.5.jpg", -1.5), ("beach_N1.jpg", -1.0), ("beach_0.jpg", 0.0), ("beach_P1.JPG", 1.0),
        ("beach_P1.5.png", 1.5),  # MSEC
        ("landscape_under.png", -1.0), ("landscape_normal.png", 0.0), ("landscape_over.png", 1.0),
        ("room_dark.png", -1.0), ("room_bright.png", 1.0), ("mean530.png", 0.0), ("short.jpg", -1.0),
        ("img_0001_img2(m2).JPG.jpg", -2.0), ("img4(zero).JPG", 0.0), ("img6(p2).JPG", 2.0), ("img3(0).JPG", 0.0),
        ("StudioEV-2.png", -2.0), ("StudioEV0.png", 0.0), ("StudioEV+4.png", 4.0), ("Img_EV4.jpg", 4.0),
        ("800px-StLouisArchMultExpEV-1.82.JPG", -1.82), ("1_window_evaluative_m1EV.JPG", -1.0),
        ("2_window_evaluative_0EV.JPG", 0.0), ("x_p1EV.jpg", 1.0),
        ("_MDF0001.png", None), ("img1.JPG", None), ("DSC_0163.png", None), ("hangover.png", None),
        ("level3.png", None), ("photo (1).jpg", None), ("evaluation.png", None),
    ],
)  # fmt: skip
def test_ev_from_filename(name, ev):
    assert ev_from_filename(name) == ev


# ----------------------------------------------------------------------------------------- ordering rules


def test_exif_rule_beats_misleading_names(tmp_path):
    # names say the opposite of the EXIF exposure; EXIF wins and EVs are log2 time ratios
    _save(tmp_path / "a_over.jpg", 0.2, exposure_time=1 / 400)
    _save(tmp_path / "b_normal.jpg", 0.5, exposure_time=1 / 100)
    _save(tmp_path / "c_under.jpg", 0.8, exposure_time=1 / 25)
    bracket = order_bracket(tmp_path)
    assert bracket.rule == "exif"
    assert [p.name for p in bracket.paths] == ["a_over.jpg", "b_normal.jpg", "c_under.jpg"]
    assert bracket.evs == pytest.approx([0.0, 2.0, 4.0])
    assert exif_ev(tmp_path / "b_normal.jpg") == pytest.approx(np.log2(0.01 / 16))


def test_exif_order_kept_when_luminance_disagrees(tmp_path):
    _save(tmp_path / "1.jpg", 0.6, exposure_time=1 / 200)
    _save(tmp_path / "2.jpg", 0.3, exposure_time=1 / 50)
    bracket = order_bracket(tmp_path)
    assert bracket.rule == "exif" and [p.name for p in bracket.paths] == ["1.jpg", "2.jpg"]
    assert "luminance disagrees" in bracket.note


def test_filename_rule(tmp_path):
    for name, level in [("s_P1.png", 0.3), ("s_N1.png", 0.5), ("s_0.png", 0.7)]:  # lumas scrambled on purpose
        _save(tmp_path / name, level)
    bracket = order_bracket(tmp_path)
    assert bracket.rule == "filename"
    assert [p.name for p in bracket.paths] == ["s_N1.png", "s_0.png", "s_P1.png"]
    assert bracket.evs == [0.0, 1.0, 2.0]


def test_filename_rule_needs_every_frame_tagged(tmp_path):
    _save(tmp_path / "x_under.png", 0.7)
    _save(tmp_path / "x_other.png", 0.2)
    bracket = order_bracket(tmp_path)
    assert bracket.rule == "luminance" and bracket.evs is None
    assert [p.name for p in bracket.paths] == ["x_other.png", "x_under.png"]


def test_luminance_rule_and_reference(tmp_path):
    levels = {"b.png": 0.9, "a.png": 0.1, "c.png": 0.45, "d.png": 0.25}
    for name, level in levels.items():
        _save(tmp_path / name, level)
    bracket = order_bracket(tmp_path)
    assert bracket.rule == "luminance"
    assert [p.name for p in bracket.paths] == ["a.png", "d.png", "c.png", "b.png"]
    assert bracket.mean_luma == sorted(bracket.mean_luma)
    assert bracket.reference_index() == 2  # 0.45 is nearest 118/255
    assert mean_luma(tmp_path / "a.png") == pytest.approx(0.1, abs=0.01)


@pytest.mark.parametrize("layout", ["one_column", "pairs"])
def test_shutter_times_sidecar(tmp_path, layout):
    scene = tmp_path / "church"
    times = {"m1.png": "1/4", "m2.png": "1", "m3.png": "1/16"}
    for name, level in zip(times, (0.5, 0.8, 0.2)):
        _save(scene / name, level)
    lines = list(times.values()) if layout == "one_column" else [f"{n} {t}" for n, t in times.items()]
    (scene / "shutter_times.txt").write_text("\n".join(lines) + "\n")
    bracket = order_bracket(scene)
    assert bracket.rule == "shutter_times"
    assert [p.name for p in bracket.paths] == ["m3.png", "m1.png", "m2.png"]
    assert bracket.evs == pytest.approx([0.0, 2.0, 4.0])


def test_shutter_times_in_parent_of_lone_scene(tmp_path):
    # the shared memorial_church collection keeps its sidecar next to its only scene folder
    for name, level in [("a.png", 0.8), ("b.png", 0.2)]:
        _save(tmp_path / "Memorial" / name, level)
    (tmp_path / "shutter_times.txt").write_text("2\n0.5\n")
    assert order_bracket(tmp_path / "Memorial").rule == "shutter_times"


def test_bad_sidecar_is_a_clear_error(tmp_path):
    _save(tmp_path / "a.png", 0.3)
    _save(tmp_path / "b.png", 0.6)
    (tmp_path / "shutter_times.txt").write_text("1/4\n")
    with pytest.raises(LoopExposeError, match="shutter_times.txt"):
        order_bracket(tmp_path)


def test_single_frame_bracket(tmp_path):
    _save(tmp_path / "only.jpg", 0.4)
    bracket = order_bracket(tmp_path)
    assert len(bracket) == 1 and bracket.rule == "single" and bracket.evs == [0.0]
    assert load_bracket(bracket).shape == (1, 3, 16, 24)


# ----------------------------------------------------------------------------------------- discovery


def test_find_scenes_with_awkward_names(tmp_path):
    names = ["Ben&Jerry's", "Bandon Sunset (1)", "Devil's [Tower]", "plain"]
    for name in names:
        _save(tmp_path / "collection" / name / "a.png", 0.3)
        _save(tmp_path / "collection" / name / "b.png", 0.6)
    (tmp_path / "collection" / "notes").mkdir()  # no images: not a scene
    (tmp_path / "collection" / ".hidden").mkdir()
    _save(tmp_path / "collection" / ".hidden" / "x.png", 0.5)
    scenes = find_scenes(tmp_path)  # a folder of collections
    assert [s.name for s in scenes] == sorted(names)
    assert find_scenes(tmp_path / "collection") == scenes
    assert find_scenes(scenes[0]) == [scenes[0]]
    for scene in scenes:
        bracket = order_bracket(scene)
        assert bracket.collection == "collection" and load_bracket(bracket).shape == (2, 3, 16, 24)


def test_list_images_skips_non_images_and_hidden(tmp_path):
    _save(tmp_path / "a.png", 0.3)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".b.png").write_bytes(b"")
    assert list_images(tmp_path) == [tmp_path / "a.png"]


@pytest.mark.parametrize("make", ["missing", "empty", "file"])
def test_find_scenes_errors(tmp_path, make):
    target = tmp_path / "x"
    if make == "empty":
        target.mkdir()
    elif make == "file":
        target.write_text("not a folder")
    with pytest.raises(LoopExposeError, match=re.escape(str(target))):
        find_scenes(target)


def test_unreadable_frame_names_the_file(tmp_path):
    _save(tmp_path / "a.png", 0.3)
    (tmp_path / "b.jpg").write_text("this is not a JPEG")
    with pytest.raises(LoopExposeError, match=r"b\.jpg"):
        order_bracket(tmp_path)


# ----------------------------------------------------------------------------------------- mixed sizes


def test_mixed_sizes_close_aspect_resized_with_warning(tmp_path):
    _save(tmp_path / "a.png", 0.2, size=(200, 100))
    _save(tmp_path / "b.png", 0.6, size=(202, 101))
    with pytest.warns(UserWarning, match="resized 202x101 to 200x100"):
        frames = load_bracket(tmp_path)
    assert frames.shape == (2, 3, 100, 200)


def test_mixed_sizes_different_aspect_is_an_error(tmp_path):
    _save(tmp_path / "a.png", 0.2, size=(200, 100))
    _save(tmp_path / "b.png", 0.6, size=(100, 100))
    with pytest.raises(LoopExposeError, match=r"b\.png.*different aspect ratio"):
        load_bracket(tmp_path)


def test_load_bracket_max_side(tmp_path):
    _save(tmp_path / "a.png", 0.2, size=(300, 200))
    _save(tmp_path / "b.png", 0.6, size=(300, 200))
    frames = load_bracket(tmp_path, max_side=60)
    assert frames.shape == (2, 3, 40, 60) and frames.dtype.is_floating_point
    assert float(frames[0].mean()) < float(frames[1].mean())


def _write_kind(path: Path, pixels: np.ndarray, kind: str) -> None:
    import tifffile

    from loopexpose.io import write_image

    if kind == "float.tif":
        tifffile.imwrite(path.with_suffix(".tif"), pixels.astype(np.float32), photometric="rgb")
    elif kind == "exif.tif":  # Pillow's TIFF with EXIF exposure times, opposite to the frames' brightness
        _save(path.with_suffix(".tif"), float(pixels.mean()), exposure_time=1 / (10 + 100 * float(pixels.mean())))
    else:
        bits, suffix = kind.split(".")
        write_image(path.with_suffix(f".{suffix}"), pixels, bits=int(bits))


@pytest.mark.parametrize("kind", ["8.tif", "16.tif", "8.png", "16.png", "float.tif", "exif.tif"])
@pytest.mark.parametrize("max_side", [0, 40])
def test_read_bracket_orders_and_loads_as_order_and_load_but_decodes_once(tmp_path, monkeypatch, kind, max_side):
    from loopexpose.brackets import discover

    rng = np.random.default_rng(3)
    texture = rng.random((48, 64, 3)).astype(np.float32)
    for name, gain in (("a", 1.0), ("b", 0.3), ("c", 1.7), ("d", 0.6)):  # names not in exposure order
        _write_kind(tmp_path / name, np.clip(texture * gain, 0, 1), kind)
    discover._measure_cached.cache_clear()
    bracket = order_bracket(tmp_path)
    expected = load_bracket(bracket, max_side=max_side)
    discover._measure_cached.cache_clear()
    decoded = []
    monkeypatch.setattr(discover, "_decode", lambda path, *a: decoded.append(path) or io_decode(path, *a))
    got, frames = read_bracket(tmp_path, max_side=max_side)
    assert got == bracket and got.rule == ("exif" if kind == "exif.tif" else "luminance")  # to the last bit
    assert [p.stem for p in got.paths] == (["c", "a", "d", "b"] if kind == "exif.tif" else ["b", "d", "a", "c"])
    assert frames.dtype == expected.dtype and np.array_equal(frames.numpy(), expected.numpy())
    assert sorted(decoded) == sorted(bracket.paths)  # each frame decoded once: for ordering and loading alike
    assert discover._measure_cached.cache_info().currsize == 0  # nothing measured on a decode of its own


def io_decode(path, *args):
    from loopexpose.io import _decode

    return _decode(path, *args)


# ----------------------------------------------------------------------------------------- real data


def _manifest(collection: Path) -> dict[Path, dict[str, dict]]:
    """``{scene folder: {file name: manifest row}}``; scene ``.`` is the collection's lone scene folder."""
    scenes: dict[Path, dict[str, dict]] = defaultdict(dict)
    with open(collection / "manifest.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            folder = collection / row["scene"]
            if row["scene"] == ".":
                (folder,) = [p for p in collection.iterdir() if p.is_dir()]
            scenes[folder][row["file"]] = row
    return scenes


def _digits(name: str) -> int:
    return int(re.findall(r"\d+", Path(name).stem)[-1])


def _shutter_order(collection: Path, names: list[str]) -> list[str]:
    """memorial_church: line i of shutter_times.txt is memorial00(60+i).png; longest time is brightest."""
    times = [float(Fraction(t)) for t in (collection / "shutter_times.txt").read_text().split()]
    by_name = {f"memorial{60 + i + 1:04d}.png": t for i, t in enumerate(times)}
    return sorted(names, key=by_name.__getitem__)


# What ../shared/data/README.md and each SOURCE.txt say decides the order, as a key on (name, manifest row).
EXPECTED_ORDER = {
    "hdrps": lambda names, rows, c: sorted(names),  # _MDFnnnn numbering increases with exposure
    "deepfuse": lambda names, rows, c: sorted(names),  # file-name order == brightness order in all 46
    "merianos2016": lambda names, rows, c: sorted(names, key=_digits),  # suffix 1/2/3 = dark/mid/bright
    "memorial_church": lambda names, rows, c: _shutter_order(c, names),
    "waterloo_mef": lambda names, rows, c: sorted(names, key=lambda n: int(rows[n]["luma_rank"])),
    "mef_misc": lambda names, rows, c: sorted(names, key=lambda n: int(rows[n]["luma_rank"])),
}


@pytest.mark.data
def test_every_real_scene_ordered_by_the_readme_rules(brackets_root):
    started = time.perf_counter()
    collections = sorted(p for p in brackets_root.iterdir() if p.is_dir())
    assert {c.name for c in collections} >= set(EXPECTED_ORDER), "a collection named in the README is missing"
    rules_seen: dict[str, str] = {}
    checked = 0
    for collection in collections:
        manifest = _manifest(collection)
        scenes = find_scenes(collection)
        assert set(scenes) == set(manifest), f"{collection.name}: scene folders differ from manifest.csv"
        expected_order = EXPECTED_ORDER.get(collection.name, EXPECTED_ORDER["mef_misc"])
        for scene in scenes:
            rows = manifest[scene]
            bracket = order_bracket(scene)
            names = [p.name for p in bracket.paths]
            assert sorted(names) == sorted(rows), f"{scene}: files differ from manifest.csv"
            assert names == expected_order(list(rows), rows, collection), f"{scene}: {bracket.rule} order wrong"
            assert len(bracket.mean_luma) == len(names)
            for name, value in zip(names, bracket.mean_luma):  # our luma matches the manifest's 8-bit luma
                assert value == pytest.approx(float(rows[name]["mean_luma"]) / 255, abs=0.005), name
            if bracket.evs is not None:
                assert bracket.evs[0] == 0 and bracket.evs == sorted(bracket.evs)
            # Every metadata source present must agree with the manifest's luma_rank. The one exception is
            # memorial_church, whose two darkest frames differ only inside the windows: its luma_rank swaps
            # memorial0074/0075 (SOURCE.txt: "use shutter_times, not luma_rank, for the darkest frames").
            if collection.name != "memorial_church":
                by_luma = sorted(rows, key=lambda n: int(rows[n]["luma_rank"]))
                assert names == by_luma, f"{scene}: disagrees with luma_rank"
                paths = [scene / n for n in by_luma]
                for source in (exif_ev, lambda p: ev_from_filename(p.name)):
                    evs = [source(p) for p in paths]
                    if all(e is not None for e in evs) and len(set(evs)) == len(evs):
                        assert evs == sorted(evs), f"{scene}: EXIF/file-name EVs disagree with luma_rank"
            rules_seen[f"{collection.name}/{scene.name}"] = bracket.rule
            checked += len(names)
    elapsed = time.perf_counter() - started
    assert checked == sum(len(r) for c in collections for r in _manifest(c).values())
    # which rule decided, for the scenes whose README entry names one
    assert rules_seen["memorial_church/Memorial"] == "shutter_times"
    assert rules_seen["mef_misc/Land"] == rules_seen["mef_misc/LivingRoom"] == rules_seen["mef_misc/Villa"] == "exif"
    assert rules_seen["waterloo_mef/Studio"] == rules_seen["mef_misc/Stream"] == "filename"
    assert rules_seen["waterloo_mef/Landscape"] == rules_seen["deepfuse/Seq_67"] == "filename"
    assert rules_seen["waterloo_mef/YellowHall"] == rules_seen["hdrps/507"] == "luminance"
    assert elapsed < 60, f"ordering {checked} images took {elapsed:.1f} s"


@pytest.mark.data
def test_memorial_church_shutter_times(brackets_root):
    bracket = order_bracket(brackets_root / "memorial_church" / "Memorial")
    assert bracket.paths[0].name == "memorial0076.png" and bracket.paths[-1].name == "memorial0061.png"
    assert bracket.evs == pytest.approx(list(range(16)))  # 1/1024 s .. 32 s, one stop apart


@pytest.mark.data
@pytest.mark.parametrize("collection", ["hdrps", "waterloo_mef", "memorial_church", "mef_misc"])
def test_real_brackets_read_in_one_pass_as_ordered_and_loaded(brackets_root, collection):
    from loopexpose.brackets import discover

    for scene in find_scenes(brackets_root / collection)[:4]:
        discover._measure_cached.cache_clear()
        bracket = order_bracket(scene)
        expected = load_bracket(bracket, max_side=128)
        discover._measure_cached.cache_clear()
        got, frames = read_bracket(scene, max_side=128)
        assert got == bracket and np.array_equal(frames.numpy(), expected.numpy()), scene


@pytest.mark.data
def test_real_bracket_loads(brackets_root):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # shared scenes have one size per scene: no resize warnings
        frames = load_bracket(brackets_root / "hdrps" / "Ben&Jerry's", max_side=128)
    assert frames.shape == (9, 3, 85, 128)
    means = frames.mean(dim=(1, 2, 3))
    assert bool((means[1:] > means[:-1]).all())
    assert isinstance(order_bracket(brackets_root / "hdrps" / "Ben&Jerry's"), Bracket)
