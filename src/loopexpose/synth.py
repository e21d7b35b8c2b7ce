"""Exposure brackets rendered from camera RAW files or ordinary sRGB photos, and MSEC regrouping.

LoopExpose trains on brackets (several exposures of one static scene). Real brackets are scarce, so this module
renders them: a RAW file is decoded to a linear, white-balanced image, scaled by ``2**EV`` for each requested
exposure offset, clipped at the sensor's white level, converted to sRGB primaries and tone-encoded. An sRGB photo
goes through the same steps after an inverse sRGB transfer (an approximation: the photo's own tone curve and
clipping are baked in, so such brackets are labelled *synthetic*).

Every prepared scene is one folder holding the frames, named in the MSEC style that
:func:`loopexpose.brackets.ev_from_filename` reads (``<name>_N1.5.png``, ``_N1``, ``_0``, ``_P1``, ``_P1.5``), and a
JSON sidecar :data:`SIDECAR_NAME`, written last, whose ``"complete": true`` marks a finished scene (so a batch can be
resumed). A folder of such scenes is a collection that :func:`loopexpose.brackets.find_scenes` and the trainer read.

Pure functions work on tensors shaped ``(*, 3, H, W)``; the ``prepare_*_scene`` functions do one file each (they
are what ``loopexpose prepare`` runs in a process pool). RAW decoding itself (:func:`decode_raw`, rawpy options,
errors) lives in :mod:`loopexpose.raw`, shared with ``correct`` and ``fuse``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import kornia
import numpy as np
import torch

from loopexpose.errors import LoopExposeError
from loopexpose.io import (
    IMAGE_SUFFIXES,
    LUMA_WEIGHTS,
    RAW_SUFFIXES,
    atomic_write_bytes,
    brightest_channel,
    read_image,
    to_numpy,
    to_tensor,
    write_image,
)
from loopexpose.raw import RawDecode, camera_to_srgb_matrix, decode_raw, rawpy_options, require_rawpy  # noqa: F401

SIDECAR_NAME = "prepared.json"
SIDECAR_FORMAT = "loopexpose-prepared-scene"
SIDECAR_VERSION = 1

PRESETS: dict[str, tuple[float, ...]] = {
    "msec": (-1.5, -1.0, 0.0, 1.0, 1.5),
    "radiometry": (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0),
}
CURVES = ("srgb", "bt709")

# sRGB (D65) -> XYZ, IEC 61966-2-1.
_XYZ_FROM_SRGB = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)


# ------------------------------------------------------------------------------------------- names and EVs


def ev_tag(ev: float) -> str:
    """MSEC-style EV suffix: ``-1.5 -> "_N1.5"``, ``-1 -> "_N1"``, ``0 -> "_0"``, ``1 -> "_P1"``, ``0.33 -> "_P0.33"``.

    >>> [ev_tag(e) for e in (-1.5, -1, 0, 1, 1.5)]
    ['_N1.5', '_N1', '_0', '_P1', '_P1.5']
    """
    ev = round(float(ev), 4)
    if ev == 0:
        return "_0"
    return f"_{'N' if ev < 0 else 'P'}{abs(ev):g}"


def frame_name(stem: str, ev: float, suffix: str = ".png") -> str:
    """File name of a prepared frame: ``frame_name("IMG_1", -1.5) == "IMG_1_N1.5.png"``."""
    return f"{stem}{ev_tag(ev)}{suffix}"


def parse_evs(values: list[str] | tuple[str, ...] | None, preset: str | None = None) -> list[float]:
    """EV offsets from command-line words (``["-1.5", "-1,0", "1"]``) and/or a preset name, sorted, unique.

    Raises:
        LoopExposeError: an unknown preset, a word that is not a number, or no EVs at all.
    """
    evs: list[float] = []
    if preset:
        if preset not in PRESETS:
            raise LoopExposeError(f"unknown EV preset {preset!r} (choose from {', '.join(PRESETS)})")
        evs.extend(PRESETS[preset])
    for word in values or ():
        for part in str(word).replace(",", " ").split():
            try:
                value = float(part)
            except ValueError:
                raise LoopExposeError(f"--ev expects numbers (EV offsets in stops), got {part!r}") from None
            if not np.isfinite(value) or abs(value) > 16:
                raise LoopExposeError(f"EV offset {part} is out of range (-16..16 stops)")
            evs.append(value)
    evs = sorted({round(e, 4) for e in evs})
    if not evs:
        raise LoopExposeError("no EV offsets given (use --ev -1.5 -1 0 1 1.5 or --preset msec)")
    return evs


# ------------------------------------------------------------------------------------------ pure functions


def srgb_to_linear(image: torch.Tensor) -> torch.Tensor:
    """Inverse sRGB transfer (IEC 61966-2-1): ``(*, 3, H, W)`` sRGB in [0, 1] -> linear light in [0, 1]."""
    _check_image(image)
    return kornia.color.rgb_to_linear_rgb(image)


def tone_encode(linear: torch.Tensor, curve: str = "srgb") -> torch.Tensor:
    """Encode linear light for display.

    Args:
        linear: ``(*, 3, H, W)`` linear RGB; values are clipped to [0, 1] first.
        curve: ``"srgb"`` (IEC 61966-2-1 transfer, what sRGB viewers assume) or ``"bt709"`` (the Rec. 709
            camera curve ``1.099 L^0.45 - 0.099`` with a linear toe of slope 4.5, LibRaw's and rawpy's default,
            for a look that matches ``rawpy.postprocess()``).

    Returns:
        ``(*, 3, H, W)`` encoded RGB in [0, 1].

    >>> tone_encode(torch.full((3, 1, 1), 0.5))[0, 0, 0].item() > 0.7
    True
    """
    _check_image(linear)
    linear = linear.clamp(0.0, 1.0)
    if curve == "srgb":
        return kornia.color.linear_rgb_to_rgb(linear).clamp(0.0, 1.0)
    if curve == "bt709":
        return torch.where(linear < 0.018, 4.5 * linear, 1.099 * linear.clamp_min(0.018) ** 0.45 - 0.099).clamp(0, 1)
    raise ValueError(f"curve must be one of {CURVES}, got {curve!r}")


def apply_color_matrix(image: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Per-pixel 3x3 colour transform: ``out[c] = sum_k matrix[c, k] * image[k]``.

    Args:
        image: ``(*, 3, H, W)`` linear RGB (any range).
        matrix: ``(3, 3)``, rows = output channels.

    Returns:
        ``(*, 3, H, W)``, not clipped.
    """
    _check_image(image)
    if matrix.shape != (3, 3):
        raise ValueError(f"matrix must be (3, 3), got {tuple(matrix.shape)}")
    return torch.einsum("ck,...khw->...chw", matrix.to(image), image)


def add_sensor_noise(
    exposure: torch.Tensor,
    full_well: float = 2000.0,
    read_noise: float = 3.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Shot (Poisson) and read (Gaussian) noise of a sensor with ``full_well`` electrons at the white level.

    ``exposure`` is linear light relative to the white level *after* EV scaling, so a frame taken with less light
    collects fewer electrons and its relative noise grows as exposure drops, as in a shutter bracket at fixed ISO.

    Args:
        exposure: ``(*, 3, H, W)`` linear, >= 0 (values above 1 are allowed: clipping comes after the noise).
        full_well: electrons at the white level (smaller = noisier; phones ~1000-5000, full frame ~30000+).
        read_noise: standard deviation of the read noise in electrons.
        generator: for reproducible noise.

    Returns:
        ``(*, 3, H, W)`` noisy linear exposure (not clipped, may be slightly negative).
    """
    _check_image(exposure)
    if full_well <= 0 or read_noise < 0:
        raise ValueError(f"need full_well > 0 and read_noise >= 0, got {full_well}, {read_noise}")
    electrons = torch.poisson(exposure.clamp_min(0.0) * full_well, generator=generator)
    if read_noise > 0:
        electrons = electrons + read_noise * torch.randn(
            exposure.shape, generator=generator, dtype=exposure.dtype, device=exposure.device
        )
    return electrons / full_well


def render_exposure(
    linear: torch.Tensor,
    ev: float,
    matrix: torch.Tensor | None = None,
    curve: str = "srgb",
    noise: dict | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One frame of a bracket: scale linear light by ``2**ev``, (add noise,) clip at white, to sRGB, encode.

    Args:
        linear: ``(*, 3, H, W)`` linear image in [0, 1] relative to the white level (1 = saturation), in camera
            RGB when ``matrix`` is given, else already in linear sRGB primaries.
        ev: exposure offset in stops.
        matrix: ``(3, 3)`` camera RGB -> linear sRGB, applied after clipping (sensors clip in their own space).
        curve: tone curve, see :func:`tone_encode`.
        noise: keyword arguments of :func:`add_sensor_noise`, or ``None`` for no added noise.
        generator: for reproducible noise.

    Returns:
        ``(*, 3, H, W)`` encoded sRGB in [0, 1].
    """
    exposure = linear * float(2.0**ev)
    if noise is not None:
        exposure = add_sensor_noise(exposure, generator=generator, **noise)
    exposure = exposure.clamp(0.0, 1.0)
    if matrix is not None:
        exposure = apply_color_matrix(exposure, matrix)
    return tone_encode(exposure, curve)


def frame_stats(frame: torch.Tensor) -> dict[str, float]:
    """Mean Rec. 601 luma and clipped fraction (pixels whose brightest channel encodes to 255) of a ``(3, H, W)``
    frame in [0, 1]."""
    weights = torch.tensor(LUMA_WEIGHTS, dtype=frame.dtype, device=frame.device).view(3, 1, 1)
    luma = (frame * weights).sum(dim=-3)
    clipped = frame.amax(dim=-3) >= 254.5 / 255.0
    return {"mean_luma": round(float(luma.mean()), 6), "clipped_fraction": round(float(clipped.float().mean()), 6)}


# ------------------------------------------------------------------------------------------ scene folders


@dataclass
class RenderSettings:
    """How ``prepare raw`` / ``prepare srgb`` render a scene (recorded in the sidecar; resuming compares it)."""

    evs: list[float]
    curve: str = "srgb"
    format: str = "png"
    bits: int = 8
    quality: int = 95
    max_side: int = 0
    half_size: bool = False
    noise: dict | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.curve not in CURVES:
            raise LoopExposeError(f"unknown tone curve {self.curve!r} (choose from {', '.join(CURVES)})")
        if f".{self.format}" not in IMAGE_SUFFIXES:
            raise LoopExposeError(f"unsupported output format {self.format!r} (use png, jpg or tif)")
        if self.bits not in (8, 16) or (self.bits == 16 and self.format in ("jpg", "jpeg")):
            raise LoopExposeError(f"{self.bits}-bit output is not possible as {self.format} (use 8, or png/tif)")
        if not 1 <= self.quality <= 100:
            raise LoopExposeError(f"JPEG quality must be 1..100, got {self.quality}")

    def to_json(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


@dataclass
class SceneResult:
    """What happened to one input: ``status`` is ``"done"``, ``"skipped"`` (already complete) or ``"failed"``."""

    source: str
    scene: str
    status: str
    message: str = ""


def read_sidecar(scene_dir: str | os.PathLike) -> dict | None:
    """The scene's sidecar as a dict, or ``None`` when absent or unreadable."""
    path = Path(scene_dir) / SIDECAR_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == SIDECAR_FORMAT else None


def write_sidecar(scene_dir: Path, record: dict) -> None:
    """Write the sidecar atomically (call it after every frame is written)."""
    record = {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, **record}
    atomic_write_bytes(scene_dir / SIDECAR_NAME, (json.dumps(record, indent=2) + "\n").encode("utf-8"))


def is_complete(scene_dir: Path, settings: dict, source: Path | None = None) -> bool:
    """True when the scene's sidecar says complete, for these settings and source, and every frame exists."""
    record = read_sidecar(scene_dir)
    if not record or record.get("complete") is not True or record.get("settings") != settings:
        return False
    if source is not None and record.get("source_bytes") != _size(source):
        return False
    return all((scene_dir / frame["file"]).is_file() for frame in record.get("frames", []))


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _start_scene(scene_dir: Path) -> None:
    """Forget a previous (stale or partial) rendering: drop its sidecar first, then the frames it listed."""
    old = read_sidecar(scene_dir)
    (scene_dir / SIDECAR_NAME).unlink(missing_ok=True)
    for frame in (old or {}).get("frames", []):
        name = Path(str(frame.get("file", "")))
        if name.name == str(name) and name.suffix.lower() in IMAGE_SUFFIXES:  # only plain file names we wrote
            (scene_dir / name).unlink(missing_ok=True)
    scene_dir.mkdir(parents=True, exist_ok=True)


def _seed_for(name: str, seed: int) -> int:
    return (zlib.crc32(name.encode("utf-8")) + 1_000_003 * int(seed)) % (2**63)


def _render_scene(
    linear: torch.Tensor,
    matrix: torch.Tensor | None,
    source: Path,
    scene_dir: Path,
    settings: RenderSettings,
    kind: str,
    synthetic: bool,
    icc: bytes | None,
    extra: dict,
) -> None:
    _start_scene(scene_dir)
    generator = torch.Generator().manual_seed(_seed_for(source.name, settings.seed))
    frames = []
    for ev in settings.evs:
        frame = render_exposure(linear, ev, matrix, settings.curve, settings.noise, generator)
        name = frame_name(scene_dir.name, ev, f".{settings.format}")
        write_image(scene_dir / name, to_numpy(frame), bits=settings.bits, icc=icc, quality=settings.quality)
        frames.append({"file": name, "ev": float(ev), **frame_stats(frame)})
    write_sidecar(
        scene_dir,
        {
            "complete": True,
            "kind": kind,
            "synthetic": synthetic,
            "source": str(source),
            "source_bytes": _size(source),
            "evs": [float(e) for e in settings.evs],
            "frames": frames,
            "settings": settings.to_json(),
            "rendering": extra,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )


def prepare_raw_scene(source: str | os.PathLike, scene_dir: str | os.PathLike, settings: RenderSettings) -> SceneResult:
    """Render one RAW file into a scene folder of EV-tagged frames plus sidecar (skipped when already complete).

    Never raises for a bad file: the problem comes back as a ``"failed"`` :class:`SceneResult`.
    """
    source, scene_dir = Path(source), Path(scene_dir)
    if is_complete(scene_dir, settings.to_json(), source):
        return SceneResult(str(source), str(scene_dir), "skipped")
    try:
        decoded = decode_raw(source, half_size=settings.half_size, max_side=settings.max_side)
        extra = {
            "pipeline": "rawpy linear decode (camera WB, no auto-bright, highlight clip) -> x 2^EV"
            + (" -> sensor noise" if settings.noise else "")
            + " -> clip at white level -> camera-to-sRGB matrix -> "
            + settings.curve
            + " curve",
            **decoded.info,
        }
        _render_scene(decoded.linear, decoded.matrix, source, scene_dir, settings, "raw", False, None, extra)
    except LoopExposeError as exc:
        return SceneResult(str(source), str(scene_dir), "failed", str(exc))
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop a batch; report it in one line
        return SceneResult(str(source), str(scene_dir), "failed", f"{source}: {exc.__class__.__name__}: {exc}")
    return SceneResult(str(source), str(scene_dir), "done")


def prepare_srgb_scene(
    source: str | os.PathLike, scene_dir: str | os.PathLike, settings: RenderSettings
) -> SceneResult:
    """Render one ordinary photo into a synthetic bracket scene folder (inverse sRGB -> x 2^EV -> clip -> sRGB).

    Never raises for a bad file: the problem comes back as a ``"failed"`` :class:`SceneResult`.
    """
    source, scene_dir = Path(source), Path(scene_dir)
    if is_complete(scene_dir, settings.to_json(), source):
        return SceneResult(str(source), str(scene_dir), "skipped")
    try:
        photo = read_image(source)
        pixels = photo.pixels
        if settings.max_side and max(pixels.shape[:2]) > settings.max_side:
            scale = settings.max_side / max(pixels.shape[:2])
            size = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
            pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
        linear = srgb_to_linear(to_tensor(pixels))
        extra = {
            "pipeline": "inverse sRGB transfer (approximately linear) -> x 2^EV"
            + (" -> sensor noise" if settings.noise else "")
            + " -> clip at 1 -> "
            + settings.curve
            + " curve"
            + (f" -> JPEG q{settings.quality}" if settings.format in ("jpg", "jpeg") else ""),
            "note": "synthetic: the photo's own tone curve, clipping and noise are baked into every frame",
            "clipped_fraction_of_source": round(float((brightest_channel(pixels) >= 254.5 / 255).mean()), 6),
            "height": int(pixels.shape[0]),
            "width": int(pixels.shape[1]),
        }
        _render_scene(linear, None, source, scene_dir, settings, "srgb", True, photo.icc, extra)
    except LoopExposeError as exc:
        return SceneResult(str(source), str(scene_dir), "failed", str(exc))
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop a batch; report it in one line
        return SceneResult(str(source), str(scene_dir), "failed", f"{source}: {exc.__class__.__name__}: {exc}")
    return SceneResult(str(source), str(scene_dir), "done")


#: Sensor noise of the synthetic brackets the trainer renders (``prepare srgb --noise``'s defaults).
SYNTHETIC_NOISE = {"full_well": 2000.0, "read_noise": 3.0}


def render_reference_brackets(brackets, folder: str | os.PathLike, evs: list[float], max_side: int = 512) -> Path:
    """Synthetic brackets for training: each bracket's reference frame (the one nearest mid-grey) rendered at
    ``evs`` by :func:`prepare_srgb_scene` (inverse sRGB, x 2^EV, sensor noise, clip, sRGB).

    Real brackets teach the network real cameras' responses; these add exposures whose relation to each other is
    exact, one per training scene (never a validation scene: pass the training brackets only). Sources are
    written to ``folder/sources`` as PNG (long side at most ``max_side``, OpenCV's area filter), scenes to
    ``folder/synth`` (a collection, scene keys ``synth/<collection>_<scene>``); finished scenes are kept, so a
    resumed run renders nothing again.

    Returns:
        The collection folder ``folder/synth``.
    """
    folder = Path(folder)
    sources, scenes = folder / "sources", folder / "synth"
    sources.mkdir(parents=True, exist_ok=True)
    settings = RenderSettings(evs=sorted(float(e) for e in evs), noise=dict(SYNTHETIC_NOISE))
    for bracket in brackets:
        name = re.sub(r"[^A-Za-z0-9]+", "_", f"{bracket.collection}/{bracket.name}")
        source = sources / f"{name}.png"
        if not source.is_file():
            pixels = (read_image(bracket.paths[bracket.reference_index()]).pixels * 255 + 0.5).astype(np.uint8)
            scale = max_side / max(pixels.shape[:2])
            if scale < 1:  # resized as 8-bit, as the shared brackets are
                pixels = cv2.resize(pixels, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            write_image(source, pixels)
        result = prepare_srgb_scene(source, scenes / name, settings)
        if result.status == "failed":
            raise LoopExposeError(f"could not render a synthetic bracket: {result.message}", source)
    return scenes


def scene_names(paths: list[Path]) -> dict[Path, str]:
    """A scene-folder name per input file: its stem, or ``stem_ext`` where two inputs share a stem."""
    stems: dict[str, int] = {}
    for path in paths:
        stems[path.stem] = stems.get(path.stem, 0) + 1
    return {p: p.stem if stems[p.stem] == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}" for p in paths}


def list_raws(folder: str | os.PathLike) -> list[Path]:
    """RAW files directly inside ``folder`` (by suffix, hidden files skipped), sorted; a single file is itself."""
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise LoopExposeError("no such folder", folder)
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in RAW_SUFFIXES and not p.name.startswith(".")
    )


# -------------------------------------------------------------------------------------------------- MSEC

MSEC_EVS = PRESETS["msec"]
_MSEC_INPUT_RE = re.compile(r"^(?P<name>.+?)_(?:(?P<sign>[NP])(?P<value>\d+(?:\.\d+)?)|0)$")
_EXPERT_RE = re.compile(r"expert_?([a-e])", re.IGNORECASE)


@dataclass
class MsecScene:
    """One MSEC image: its input frames (EV -> file) and ground-truth renditions (label -> file)."""

    split: str
    name: str
    inputs: dict[float, Path]
    ground_truth: dict[str, Path]


def _msec_input(stem: str) -> tuple[str, float]:
    match = _MSEC_INPUT_RE.match(stem)
    if not match:
        return stem, 0.0  # some copies name the 0 EV rendition without a suffix
    if match.group("sign") is None:
        return match.group("name"), 0.0
    value = float(match.group("value"))
    return match.group("name"), -value if match.group("sign") == "N" else value


def _gt_label(folder: Path) -> str:
    match = _EXPERT_RE.search(folder.name)
    if match:
        return f"expert_{match.group(1).lower()}"
    return "expert_c"  # MSEC's training/validation GT_IMAGES are the FiveK expert C renditions


def find_msec_scenes(root: str | os.PathLike) -> list[MsecScene]:
    """Group an MSEC download by image: ``root`` (or each split folder under it) holds ``INPUT_IMAGES/`` with
    ``<name>_N1.5.JPG .. <name>_P1.5.JPG`` and ground truth in ``GT_IMAGES/<name>.jpg`` (expert C),
    ``GT_IMAGES/expert_*/`` or ``expert_[a-e]_testing_set/<name>.jpg``.

    Raises:
        LoopExposeError: no ``INPUT_IMAGES`` folder under ``root``.
    """
    root = Path(root)
    if not root.is_dir():
        raise LoopExposeError("no such folder", root)
    input_dirs = sorted(p for p in [root / "INPUT_IMAGES", *root.glob("*/INPUT_IMAGES")] if p.is_dir())
    if not input_dirs:
        raise LoopExposeError("not an MSEC folder (no INPUT_IMAGES/ in it or in its split folders)", root)
    scenes: list[MsecScene] = []
    for input_dir in input_dirs:
        split_dir = input_dir.parent
        split = "" if split_dir == root else split_dir.name
        gt_dirs = [p for p in split_dir.iterdir() if p.is_dir() and (p.name == "GT_IMAGES" or _EXPERT_RE.match(p.name))]
        gt_dirs += [q for p in gt_dirs if p.name == "GT_IMAGES" for q in p.iterdir() if q.is_dir()]
        ground_truth: dict[str, dict[str, Path]] = {}
        for gt_dir in sorted(gt_dirs):
            label = _gt_label(gt_dir)
            for path in gt_dir.iterdir():
                if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                    ground_truth.setdefault(path.stem, {})[label] = path
        groups: dict[str, dict[float, Path]] = {}
        for path in sorted(input_dir.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                name, ev = _msec_input(path.stem)
                groups.setdefault(name, {})[ev] = path
        for name, inputs in sorted(groups.items()):
            scenes.append(MsecScene(split, name, dict(sorted(inputs.items())), ground_truth.get(name, {})))
    return scenes


def _place(source: Path, target: Path, link: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if link == "copy":
        atomic_write_bytes(target, source.read_bytes())
        return
    temp = target.with_name(f".{target.name}.tmp")
    temp.unlink(missing_ok=True)
    if link == "hardlink":
        try:
            os.link(source, temp)
        except OSError:  # another file system, or links not allowed: copy instead
            shutil.copyfile(source, temp)
    elif link == "symlink":
        temp.symlink_to(source.resolve())
    else:
        raise LoopExposeError(f"unknown link mode {link!r} (choose copy, hardlink or symlink)")
    os.replace(temp, target)


def prepare_msec_scene(scene: MsecScene, scene_dir: str | os.PathLike, link: str = "copy") -> SceneResult:
    """Put one MSEC image's five inputs (renamed ``<name>_N1.5 .. _P1.5``) in a scene folder, its ground truth in
    ``ground_truth/<expert>.<ext>`` beside them, and a sidecar naming the evaluation protocols it supports."""
    scene_dir = Path(scene_dir)
    settings = {"link": link}
    if is_complete(scene_dir, settings):
        return SceneResult(scene.name, str(scene_dir), "skipped")
    try:
        _start_scene(scene_dir)
        frames = []
        for ev, path in scene.inputs.items():
            name = frame_name(scene.name, ev, path.suffix)
            _place(path, scene_dir / name, link)
            frames.append({"file": name, "ev": ev, "original": path.name})
        ground_truth = {}
        for label, path in sorted(scene.ground_truth.items()):
            relative = f"ground_truth/{label}{path.suffix}"
            _place(path, scene_dir / relative, link)
            ground_truth[label] = relative
        protocols = (["paired"] if ground_truth else []) + (
            ["bracket-5"] if tuple(scene.inputs) == MSEC_EVS else []
        )
        write_sidecar(
            scene_dir,
            {
                "complete": True,
                "kind": "msec",
                "synthetic": False,
                "source": str(next(iter(scene.inputs.values())).parent),
                "split": scene.split,
                "evs": list(scene.inputs),
                "frames": frames,
                "ground_truth": ground_truth,
                "protocols": protocols,
                "settings": settings,
                "rendering": {"note": "MSEC inputs are renditions of FiveK RAWs at -1.5..+1.5 EV (Afifi et al. 2021)"},
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
    except LoopExposeError as exc:
        return SceneResult(scene.name, str(scene_dir), "failed", str(exc))
    except OSError as exc:
        return SceneResult(scene.name, str(scene_dir), "failed", f"{scene_dir}: {exc.__class__.__name__}: {exc}")
    return SceneResult(scene.name, str(scene_dir), "done")


def _check_image(image: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(image).__name__}")
    if image.dim() < 3 or image.shape[-3] != 3:
        raise ValueError(f"expected shape (*, 3, H, W), got {tuple(image.shape)}")
