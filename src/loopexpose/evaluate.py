"""Evaluation protocols, the methods they compare, and their reports.

Protocols:

* ``bracket-5`` (:func:`evaluate_bracket5`, SeqMSEC-like, real brackets without ground truth): per scene, the
  frames are ordered by exposure, the *reference* is the frame whose mean luma is nearest mid-grey (118/255),
  and the *input* is the 5 consecutive frames around it (about -2..+2 EV), the window shifted to stay inside the
  bracket (scenes with fewer frames use them all). Exposure correctors (SEC) are scored by PSNR/SSIM of each
  corrected non-reference frame against the reference, cross-exposure consistency of the 5 corrected frames,
  and MEF-SSIM of each corrected frame against the 5-frame stack; fusion methods (MEF) by MEF-SSIM of the fused
  image against the stack.
* ``paired`` (:func:`evaluate_paired`, datasets with ground truth such as MSEC or SICE laid out as ``input/`` +
  ``gt/``): PSNR, SSIM and CIEDE2000 of each corrected input against its ground truth, per input EV.

Methods (:func:`build_methods`) by name: ``identity``, ``gain``, ``gamma``, ``autolevels``, ``clahe`` (SEC
baselines), ``mertens-cv2`` (OpenCV), ``mertens`` / ``mertens:<preset>`` (ours), and ``model:<spec>`` (a bundled
name or a ``.safetensors`` file), which adds three fusions of its corrected frames: ``loopmef:<spec>``, the
LoopExpose MEF result (:func:`loopexpose.fusion.loop_fuse`: tone from corrected and input frames, detail from the
inputs), ``loopmef-plain:<spec>`` (Mertens of corrected and input frames: the rule of the training labels) and
``loopmef-corrected:<spec>`` (Mertens of the corrected frames alone). ``mertens-detail`` is ``loop_fuse`` of the
inputs alone, to separate what the fusion rule adds from what the corrected frames add.

Everything is deterministic: scenes are sorted, nothing is random, and reports carry no timestamps.
"""

from __future__ import annotations

import csv
import html
import io as _io
import json
import math
import os
import re
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from loopexpose import baselines, metrics
from loopexpose.errors import LoopExposeError
from loopexpose.brackets import Bracket, ev_from_filename, list_images, load_bracket, order_bracket
from loopexpose.io import REFERENCE_LUMA, atomic_write_bytes, read_image, to_tensor, write_image

__all__ = [
    "WINDOW",
    "BASELINES",
    "DEFAULT_METHODS",
    "Method",
    "EvalResults",
    "build_methods",
    "select_window",
    "load_window",
    "evaluate_bracket5",
    "find_pairs",
    "evaluate_paired",
    "write_report",
]

WINDOW = 5
#: SEC baselines: simple, training-free, and strong on some metrics; reports flag them.
BASELINES = ("identity", "gain", "gamma", "autolevels", "clahe")
#: What ``loopexpose eval`` runs without ``--methods``: every baseline and fusion, and the bundled model (with its
#: LoopExpose MEF rows), so that the report answers "how does the model compare".
DEFAULT_METHODS = (
    "identity", "gain", "gamma", "autolevels", "clahe", "mertens-cv2", "mertens", "mertens:mertens", "model:default",
)  # fmt: skip

SEC, MEF = "sec", "mef"


# ------------------------------------------------------------------------------------------------ methods


@dataclass
class Method:
    """One method under evaluation.

    Attributes:
        name: as given on the command line (``gain``, ``model:default``, ``loopmef:default``).
        kind: ``"sec"`` (``run`` maps ``(N, 3, H, W)`` frames to ``(N, 3, H, W)``, each frame corrected on its own)
            or ``"mef"`` (``run`` maps ``(N, 3, H, W)`` frames to one ``(3, H, W)`` image; with a ``source``, it
            maps ``(frames, corrected frames)`` to one image).
        run: the function, inputs and outputs in ``[0, 1]``.
        description: one line for reports.
        baseline: a simple training-free method (reports point out where these win).
        source: for a LoopExpose MEF, the SEC method whose corrected frames it fuses.
    """

    name: str
    kind: str
    run: Callable[..., torch.Tensor]
    description: str = ""
    baseline: bool = False
    source: str | None = None


def _model_runner(spec: str, device: str) -> Callable[[torch.Tensor], torch.Tensor]:
    from loopexpose.models import load

    model = load(spec, device)

    def run(frames: torch.Tensor) -> torch.Tensor:
        return model.correct(frames).clamp(0, 1)

    return run


def _fuser(preset: str) -> Callable[[torch.Tensor], torch.Tensor]:
    from loopexpose.fusion import fuse

    def run(frames: torch.Tensor) -> torch.Tensor:
        return fuse(frames, preset=preset).clamp(0, 1)

    return run


def _opencv_mertens(frames: torch.Tensor) -> torch.Tensor:
    import cv2

    merge = cv2.createMergeMertens()
    # OpenCV scales every input by 1/255 whatever its type, so float frames go in as [0, 255]. They go in as
    # RGB: its only channel-order-dependent step is its luma, taken with COLOR_RGB2GRAY (Rec. 601 on RGB).
    stack = [np.ascontiguousarray(f.permute(1, 2, 0).cpu().float().numpy() * 255) for f in frames]
    fused = merge.process(stack)
    return torch.from_numpy(np.ascontiguousarray(fused)).permute(2, 0, 1).clamp(0, 1).to(frames.device)


def build_methods(
    names: Sequence[str], device: str = "cpu", fusion_preset: str = "opencv", model_fusion: bool = True
) -> list[Method]:
    """Methods from their names (see the module docstring); ``model:<spec>`` loads the model once.

    Args:
        names: method names, in the order reports show them.
        device: where models run (``cpu``, ``cuda``, ``auto``).
        fusion_preset: Mertens preset (``opencv`` or ``mertens``) of ``mertens``, ``loopmef-plain`` and
            ``loopmef-corrected`` (``loopmef`` is :func:`~loopexpose.fusion.loop_fuse`, with the paper's weights).
        model_fusion: add ``loopmef:<spec>``, ``loopmef-plain:<spec>`` and ``loopmef-corrected:<spec>`` for each
            model.

    Raises:
        LoopExposeError: an unknown name, or a model that cannot be loaded.
    """
    from loopexpose.fusion import PRESETS, loop_fuse

    if fusion_preset not in PRESETS:
        raise LoopExposeError(f"unknown fusion preset {fusion_preset!r} (known: {', '.join(PRESETS)})")
    simple = {
        "identity": (lambda x: x, "input frames unchanged"),
        "gain": (baselines.gain_to_mid_grey, "one gain per frame to mean luma 118/255"),
        "gamma": (baselines.gamma_to_mid_grey, "one gamma per frame to mean luma 118/255"),
        "autolevels": (baselines.auto_levels, "1-99% luma stretch, then gamma to mid-grey"),
        "clahe": (baselines.clahe, "OpenCV CLAHE on CIELAB L (clip 2, 8x8 tiles)"),
    }
    methods: list[Method] = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        if name in simple:
            function, text = simple[name]
            methods.append(Method(name, SEC, function, text, baseline=True))
        elif name == "mertens-detail":
            methods.append(Method(name, MEF, loop_fuse, "loop_fuse of the inputs alone (no corrected frames)"))
        elif name == "mertens-cv2":
            methods.append(Method(name, MEF, _opencv_mertens, "cv2.createMergeMertens() on the 5 inputs"))
        elif name == "mertens" or name.startswith("mertens:"):
            preset = name.partition(":")[2] or fusion_preset
            if preset not in PRESETS:
                raise LoopExposeError(f"unknown fusion preset in {name!r} (known: {', '.join(PRESETS)})")
            methods.append(Method(name, MEF, _fuser(preset), f"our Mertens fusion, preset {preset!r}"))
        elif name.startswith("model:"):
            spec = name.partition(":")[2]
            if not spec:
                raise LoopExposeError("model: needs a bundled name or a .safetensors path (model:default)")
            methods.append(Method(name, SEC, _model_runner(spec, device), f"correction model {spec}"))
            if model_fusion:
                fuse = _fuser(fusion_preset)
                methods += [
                    Method(f"loopmef:{spec}", MEF, loop_fuse, f"LoopExpose MEF: loop_fuse of the inputs and {spec}'s "
                           "corrected frames", source=name),
                    Method(f"loopmef-plain:{spec}", MEF, lambda x, c: fuse(torch.cat([c, x])), f"Mertens "
                           f"({fusion_preset}) of {spec}'s corrected frames and the inputs", source=name),
                    Method(f"loopmef-corrected:{spec}", MEF, lambda x, c: fuse(c), f"Mertens ({fusion_preset}) of "
                           f"{spec}'s corrected frames alone", source=name),
                ]  # fmt: skip
        else:
            known = ", ".join([*simple, "mertens-cv2", "mertens", "mertens:<preset>", "mertens-detail", "model:<spec>"])
            raise LoopExposeError(f"unknown method {name!r} (known: {known})")
    seen = set()
    for method in methods:
        if method.name in seen:
            raise LoopExposeError(f"method {method.name!r} given twice")
        seen.add(method.name)
    return methods


# ------------------------------------------------------------------------------------------------ results


@dataclass
class EvalResults:
    """What a protocol measured.

    Attributes:
        protocol: ``"bracket-5"`` or ``"paired"``.
        methods: ``[{"name", "kind", "description", "baseline"}]`` in report order.
        scenes: one dict per scene (key, frames used, reference index, ordering rule).
        scene_rows: one dict per (scene, method): the scene-level metrics.
        frame_rows: one dict per (scene, method, frame) for SEC methods: per-frame metrics and the frame's
            offset from the reference (``offset``, frames) and its EV difference when known (``ev``).
    """

    protocol: str
    methods: list[dict] = field(default_factory=list)
    scenes: list[dict] = field(default_factory=list)
    scene_rows: list[dict] = field(default_factory=list)
    frame_rows: list[dict] = field(default_factory=list)

    def metric_names(self) -> list[str]:
        names: list[str] = []
        for row in self.scene_rows:
            for key, value in row.items():
                if key not in {"scene", "method", "kind"} and isinstance(value, float) and key not in names:
                    names.append(key)
        return names

    def collections(self) -> list[str]:
        """Collections (the ``collection`` of ``collection/scene`` keys) of a ``bracket-5`` run, sorted."""
        if self.protocol != "bracket-5":
            return []
        return sorted({s["scene"].split("/")[0] for s in self.scenes})

    def summary(self, collection: str | None = None) -> dict[str, dict[str, float]]:
        """``{method: {metric: mean over scenes}}`` (metrics a method has no value for are left out), over all
        scenes or those of one collection."""
        out: dict[str, dict[str, float]] = {}
        for method in self.methods:
            rows = [r for r in self.scene_rows if r["method"] == method["name"]
                    and (collection is None or r["scene"].split("/")[0] == collection)]  # fmt: skip
            means = {}
            for metric in self.metric_names():
                values = [r[metric] for r in rows if isinstance(r.get(metric), float) and math.isfinite(r[metric])]
                if values:
                    means[metric] = float(np.mean(values))
            out[method["name"]] = means
        return out

    def by_offset(self, metric: str) -> dict[str, dict[int, float]]:
        """``{method: {offset: mean}}`` of a per-frame metric (offset = frames from the reference / input EV)."""
        groups: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for row in self.frame_rows:
            value = row.get(metric)
            if isinstance(value, float) and math.isfinite(value):
                groups[row["method"]][row["offset"]].append(value)
        return {m: {o: float(np.mean(v)) for o, v in sorted(d.items())} for m, d in groups.items()}

    def frame_percentiles(self, metric: str, percentile: float) -> dict[str, tuple[float, float, int]]:
        """``{method: (mean, percentile, count)}`` of a per-frame metric over all frames that have a value."""
        values: dict[str, list[float]] = defaultdict(list)
        for row in self.frame_rows:
            value = row.get(metric)
            if isinstance(value, float) and math.isfinite(value):
                values[row["method"]].append(value)
        return {m: (float(np.mean(v)), float(np.percentile(v, percentile)), len(v)) for m, v in values.items()}

    def to_dict(self) -> dict:
        return {
            "protocol": self.protocol,
            "methods": self.methods,
            "summary": _rounded(self.summary()),
            "chroma_added_frames": _rounded({m: {"mean": mean, "p90": p90, "frames": n}
                                             for m, (mean, p90, n) in self.frame_percentiles("chroma_added", 90).items()}),
            "summary_by_collection": {c: _rounded(self.summary(c)) for c in self.collections()},
            "scenes": self.scenes,
            "scene_rows": _rounded(self.scene_rows),
        }


def _rounded(value, digits: int = 5):
    if isinstance(value, float):
        return round(value, digits) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v, digits) for v in value]
    return value


# ---------------------------------------------------------------------------------------------- bracket-5


def select_window(mean_luma: Sequence[float], size: int = WINDOW, target: float = REFERENCE_LUMA) -> tuple[int, int]:
    """``(start, reference)``: the reference frame is the one whose mean luma is nearest ``target``; the window
    ``start .. start + size - 1`` is centred on it and shifted to stay inside the bracket.

    Args:
        mean_luma: mean luma of each frame, darkest first, in ``[0, 1]``.
        size: frames in the window (all frames when the bracket is shorter).

    Example:
        >>> select_window([0.05, 0.1, 0.2, 0.35, 0.46, 0.6, 0.8, 0.9, 0.95])
        (2, 4)
        >>> select_window([0.3, 0.45, 0.6, 0.8, 0.9, 0.95])
        (0, 1)
    """
    count = len(mean_luma)
    reference = int(np.argmin([abs(v - target) for v in mean_luma]))
    size = min(size, count)
    start = min(max(reference - size // 2, 0), count - size)
    return start, reference


_WINDOW_CACHE: OrderedDict = OrderedDict()
#: Windows kept decoded between calls (uint8, so 40 windows of 5 frames at 512 px are about 100 MB).
WINDOW_CACHE_SIZE = 40


def load_window(bracket: Bracket, max_side: int = 512, size: int = WINDOW) -> tuple[torch.Tensor, int, int]:
    """The evaluation window of a bracket: ``(frames (k, 3, H, W) in [0, 1], start, reference)``.

    ``reference`` indexes the whole bracket; ``reference - start`` indexes ``frames``. Decoded windows are
    cached (as 8-bit, the depth of the source data) keyed by scene folder, file times and ``max_side``, so
    repeated evaluations (every training epoch) read the files once.
    """
    start, reference = select_window(bracket.mean_luma, size)
    paths = bracket.paths[start : start + min(size, len(bracket))]
    key = (str(bracket.scene), tuple((str(p), p.stat().st_mtime_ns) for p in paths), max_side)
    if key in _WINDOW_CACHE:
        _WINDOW_CACHE.move_to_end(key)
        return _WINDOW_CACHE[key].float() / 255.0, start, reference
    window = Bracket(bracket.scene, list(paths), None, bracket.rule, bracket.mean_luma[start : start + len(paths)])
    frames = load_bracket(window, max_side=max_side)
    _WINDOW_CACHE[key] = (frames * 255.0).round().to(torch.uint8)
    while len(_WINDOW_CACHE) > WINDOW_CACHE_SIZE:
        _WINDOW_CACHE.popitem(last=False)
    return _WINDOW_CACHE[key].float() / 255.0, start, reference


def _scene_key(bracket: Bracket) -> str:
    return f"{bracket.collection}/{bracket.name}"


SceneCallback = Callable[[str, torch.Tensor, int, dict[str, torch.Tensor]], None]


def evaluate_bracket5(
    scenes: Sequence[Bracket | str | os.PathLike],
    methods: Sequence[Method],
    max_side: int = 512,
    on_scene: SceneCallback | None = None,
    progress: Callable[[str], None] | None = None,
    mef_ssim_frames: bool = True,
    label_preset: str = "opencv",
    on_error: Callable[[LoopExposeError], None] | None = None,
) -> EvalResults:
    """The ``bracket-5`` protocol (see the module docstring) over some scenes; pure apart from the file reads.

    Args:
        scenes: :class:`~loopexpose.brackets.Bracket` objects or scene folders (ordered with ``order_bracket``).
            Scenes of one frame are skipped.
        methods: from :func:`build_methods`.
        max_side: frames are downscaled (area filter) so the long side is at most this (0: full size).
        on_scene: called per scene with ``(scene key, inputs (k, 3, H, W), reference index in inputs,
            {method: output})`` (SEC outputs ``(k, 3, H, W)``, MEF ``(3, H, W)``), e.g. to write a gallery.
        progress: called with each scene key before it is evaluated.
        mef_ssim_frames: also score every corrected frame with MEF-SSIM (the slowest metric; training
            validation may turn it off).
        label_preset: fusion preset of the *label*, the Mertens fusion of the input frames that LoopExpose
            trains towards (``psnr_label``).
        on_error: if given, a scene whose frames cannot be read, or are too small for MEF-SSIM, is passed to it
            as the error and left out (the others go on); otherwise the error is raised.

    Returns:
        :class:`EvalResults` with ``psnr``, ``ssim``, ``consistency``, ``mef_ssim``, ``psnr_label``,
        ``chroma_added`` and ``region_ev`` per SEC scene row (``psnr``, ``ssim`` and ``region_ev`` averaged over
        non-reference frames, the others over all frames; ``region_ev`` is
        :func:`loopexpose.metrics.region_exposure_error` against the reference frame over its superpixels
        (:func:`loopexpose.metrics.reference_regions`); ``chroma_added`` is
        :func:`loopexpose.metrics.highlight_chroma_added` of each corrected
        frame against its input, over frames that have bright pixels, NaN when none has) and ``mef_ssim`` per MEF
        row. Frame rows carry the same per frame.
    """
    from loopexpose.fusion import fuse

    brackets = [s if isinstance(s, Bracket) else order_bracket(s) for s in scenes]
    brackets = sorted((b for b in brackets if len(b) >= 2), key=_scene_key)
    results = EvalResults(
        "bracket-5",
        methods=[{"name": m.name, "kind": m.kind, "description": m.description, "baseline": m.baseline} for m in methods],
    )
    for bracket in brackets:
        key = _scene_key(bracket)
        if progress is not None:
            progress(key)
        try:
            frames, start, reference = load_window(bracket, max_side)
        except LoopExposeError as exc:
            if on_error is None:
                raise
            on_error(exc)
            continue
        ref = reference - start
        target = frames[ref]
        label = fuse(frames, preset=label_preset).clamp(0, 1)
        evs = bracket.evs
        scene_info = {
            "scene": key,
            "frames": len(bracket),
            "window": [start, start + len(frames) - 1],
            "reference": reference,
            "reference_file": bracket.paths[reference].name,
            "reference_luma": round(float(bracket.mean_luma[reference]), 4),
            "rule": bracket.rule,
            "size": list(frames.shape[-2:]),
        }
        outputs: dict[str, torch.Tensor] = {}
        for method in sorted(methods, key=lambda m: m.kind != SEC):  # SEC first: LoopExpose MEF fuses their output
            with torch.no_grad():
                args = (frames,) if method.source is None else (frames, outputs[method.source])
                outputs[method.name] = method.run(*args).clamp(0, 1).to(frames.device, frames.dtype)
        # MEF-SSIM of every output image against this stack in one call: the stack's part is computed once.
        scored = [m for m in methods if m.kind == MEF or mef_ssim_frames]
        if scored:
            images = torch.cat([outputs[m.name].reshape(-1, *frames.shape[-3:]) for m in scored])
            try:
                mef_values = iter(metrics.mef_ssim(frames, images).tolist())
            except ValueError as exc:  # too small for 3 scales of 11x11 windows
                error = LoopExposeError(f"{exc} (raise --max-side)", bracket.scene)
                if on_error is None:
                    raise error from None
                on_error(error)
                continue
            mef = {m.name: [next(mef_values) for _ in range(outputs[m.name].reshape(-1, 3, *frames.shape[-2:]).shape[0])]
                   for m in scored}  # fmt: skip
        results.scenes.append(scene_info)  # after the checks above: a scene left out leaves no rows
        regions = metrics.reference_regions(target)  # superpixels of the reference frame, for region_ev
        for method in methods:
            out = outputs[method.name]
            row: dict = {"scene": key, "method": method.name, "kind": method.kind}
            if method.kind == SEC:
                others = [i for i in range(len(frames)) if i != ref]
                frame_psnr = metrics.psnr(out, target.expand_as(out))
                frame_ssim = metrics.ssim(out, target.expand_as(out))
                frame_mef = mef.get(method.name) if scored else None
                frame_label = metrics.psnr(out, label.expand_as(out))
                frame_chroma = metrics.highlight_chroma_added(out, frames)
                frame_region = metrics.region_exposure_error(out, target, regions)
                for i in range(len(frames)):
                    results.frame_rows.append({
                        "scene": key,
                        "method": method.name,
                        "frame": start + i,
                        "offset": i - ref,
                        "ev": round(evs[start + i] - evs[reference], 3) if evs else None,
                        "psnr": float(frame_psnr[i]) if i != ref else None,
                        "ssim": float(frame_ssim[i]) if i != ref else None,
                        "mef_ssim": frame_mef[i] if frame_mef else None,
                        "psnr_label": float(frame_label[i]),
                        "chroma_added": float(frame_chroma[i]) if not frame_chroma[i].isnan() else None,
                        "region_ev": float(frame_region[i]) if i != ref and not frame_region[i].isnan() else None,
                    })  # fmt: skip
                row["psnr"] = float(frame_psnr[others].mean())
                row["ssim"] = float(frame_ssim[others].mean())
                row["consistency"] = float(metrics.consistency(out))
                if frame_mef:
                    row["mef_ssim"] = float(np.mean(frame_mef))
                row["psnr_label"] = float(frame_label.mean())
                row["chroma_added"] = float(frame_chroma.nanmean())  # NaN (left out of means) when nothing is bright
                row["region_ev"] = float(frame_region[others].nanmean())
            else:
                row["mef_ssim"] = float(mef[method.name][0])
            results.scene_rows.append(row)
        if on_scene is not None:
            on_scene(key, frames, ref, outputs)
    return results


# ------------------------------------------------------------------------------------------------- paired

_EV_SUFFIX = re.compile(r"(_[NP]\d+(?:\.\d+)?|_0)$")


@dataclass
class Pair:
    """An input photo, its ground truth, and the input's EV offset (``None`` when the name does not say)."""

    input: Path
    target: Path
    ev: float | None
    key: str


def find_pairs(root: str | os.PathLike, input_dir: str = "input", gt_dir: str = "gt") -> list[Pair]:
    """Pair each image of ``root/input_dir`` with its ground truth in ``root/gt_dir``.

    Matching: MSEC-style names (``a0001-jmac_DSC1459_N1.5.JPG`` -> ``a0001-jmac_DSC1459.*``, EV from the tag), or
    SICE-style subfolders (``input/<scene>/<k>.jpg`` -> ``gt/<scene>.*``), or identical stems.

    Raises:
        LoopExposeError: a folder is missing, or an input has no ground truth.
    """
    root = Path(root)
    inputs, targets = root / input_dir, root / gt_dir
    for folder in (inputs, targets):
        if not folder.is_dir():
            raise LoopExposeError(f"expected a folder named {folder.name!r} (paired layout: input/ and gt/)", folder)
    by_stem = {p.stem.lower(): p for p in list_images(targets)}
    for sub in sorted(p for p in targets.iterdir() if p.is_dir()):  # gt/<scene>/<one image>
        images = list_images(sub)
        if len(images) == 1:
            by_stem.setdefault(sub.name.lower(), images[0])
    pairs: list[Pair] = []
    candidates = [(p, None) for p in list_images(inputs)]
    candidates += [(p, sub.name) for sub in sorted(q for q in inputs.iterdir() if q.is_dir()) for p in list_images(sub)]
    for path, scene in candidates:
        stem = _EV_SUFFIX.sub("", path.stem) if scene is None else scene
        target = by_stem.get(stem.lower()) or by_stem.get(path.stem.lower())
        if target is None:
            raise LoopExposeError(f"no ground truth named {stem}.* in {targets}", path)
        pairs.append(Pair(path, target, ev_from_filename(path.name), f"{stem}/{path.name}"))
    if not pairs:
        raise LoopExposeError("no input images", inputs)
    return sorted(pairs, key=lambda p: p.key)


def _load(path: Path, max_side: int) -> torch.Tensor:
    import cv2

    pixels = read_image(path).pixels
    if max_side and max(pixels.shape[:2]) > max_side:
        scale = max_side / max(pixels.shape[:2])
        size = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    return to_tensor(pixels)


def evaluate_paired(
    pairs: Sequence[Pair],
    methods: Sequence[Method],
    max_side: int = 512,
    on_scene: SceneCallback | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvalResults:
    """The ``paired`` protocol: PSNR, SSIM and CIEDE2000 of each corrected input against its ground truth, and
    ST-LPIPS (:func:`loopexpose.metrics.stlpips`) when its weights are installed.

    Only SEC methods apply (a fusion method needs a bracket); others are rejected. ``offset`` in the frame rows
    is the input's EV (rounded to the nearest 0.5; 0 when unknown).

    Raises:
        LoopExposeError: a fusion method was asked for, or a ground truth's size differs from its input's.
    """
    fusion = [m.name for m in methods if m.kind != SEC]
    if fusion:
        raise LoopExposeError(f"the paired protocol scores single images; drop fusion methods: {', '.join(fusion)}")
    from loopexpose.perceptual import MIN_SIDE, package_weights

    perceptual = package_weights() is not None
    results = EvalResults(
        "paired",
        methods=[{"name": m.name, "kind": m.kind, "description": m.description, "baseline": m.baseline} for m in methods],
    )
    for pair in pairs:
        if progress is not None:
            progress(pair.key)
        image, target = _load(pair.input, max_side), _load(pair.target, max_side)
        if image.shape != target.shape:
            import torch.nn.functional as F

            aspect = (image.shape[-1] / image.shape[-2]) / (target.shape[-1] / target.shape[-2])
            if abs(aspect - 1) > 0.02:
                raise LoopExposeError(f"ground truth {pair.target.name} has a different aspect ratio", pair.input)
            target = F.interpolate(target[None], size=image.shape[-2:], mode="area")[0]
        results.scenes.append({"scene": pair.key, "input": pair.input.name, "gt": pair.target.name, "ev": pair.ev})
        outputs = {}
        for method in methods:
            with torch.no_grad():
                out = method.run(image[None]).clamp(0, 1)[0]
            outputs[method.name] = out[None]
            row = {
                "scene": pair.key,
                "method": method.name,
                "kind": SEC,
                "psnr": float(metrics.psnr(out, target)),
                "ssim": float(metrics.ssim(out, target)),
                "ciede2000": float(metrics.ciede2000(out, target)),
            }
            if perceptual and min(out.shape[-2:]) >= MIN_SIDE:
                row["stlpips"] = float(metrics.stlpips(out, target))
            results.scene_rows.append(row)
            offset = round(pair.ev * 2) / 2 if pair.ev is not None else 0.0
            results.frame_rows.append({**row, "frame": 0, "offset": offset, "ev": pair.ev})
        if on_scene is not None:
            on_scene(pair.key, image[None], 0, outputs)
    return results


# ------------------------------------------------------------------------------------------------- report

METRIC_LABELS = {
    "psnr": "PSNR (dB) vs reference",
    "ssim": "SSIM vs reference",
    "consistency": "consistency (dB)",
    "mef_ssim": "MEF-SSIM vs stack",
    "ciede2000": "CIEDE2000",
    "stlpips": "ST-LPIPS",
    "psnr_label": "PSNR (dB) vs label",
    "chroma_added": "highlight chroma added",
    "region_ev": "region exposure error (EV)",
}
LOWER_IS_BETTER = {"ciede2000", "stlpips", "chroma_added", "region_ev"}
#: Per-frame metrics with a table by input EV in reports (those a protocol measured).
OFFSET_METRICS = ("psnr", "ssim", "mef_ssim", "psnr_label", "chroma_added", "region_ev", "ciede2000", "stlpips")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


class Gallery:
    """Writes, per scene, a strip of the inputs and one strip (or image) per method, as small JPEGs, for the
    HTML gallery; use it as ``on_scene``."""

    def __init__(self, outdir: Path, thumb_side: int = 192) -> None:
        self.dir = Path(outdir) / "gallery"
        self.thumb_side = thumb_side
        self.entries: list[tuple[str, int, dict[str, str]]] = []

    def _strip(self, images: torch.Tensor) -> np.ndarray:
        import cv2

        tiles = []
        for image in images.reshape(-1, *images.shape[-3:]):
            pixels = image.permute(1, 2, 0).cpu().float().numpy()
            scale = self.thumb_side / max(pixels.shape[:2])
            if scale < 1:
                size = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
                pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
            tiles.append(pixels)
            tiles.append(np.ones((pixels.shape[0], 4, 3), np.float32))
        return np.concatenate(tiles[:-1], axis=1)

    def __call__(self, key: str, inputs: torch.Tensor, reference: int, outputs: dict[str, torch.Tensor]) -> None:
        folder = self.dir / f"{len(self.entries):03d}_{_slug(key)}"
        files = {"inputs": "inputs.jpg", "reference": "reference.jpg"}
        write_image(folder / files["inputs"], self._strip(inputs), quality=85)
        write_image(folder / files["reference"], self._strip(inputs[reference]), quality=85)
        for name, out in outputs.items():
            files[name] = f"{_slug(name)}.jpg"
            write_image(folder / files[name], self._strip(out), quality=85)
        self.entries.append((key, len(self.entries), {k: f"{folder.name}/{v}" for k, v in files.items()}))

    def write_html(self, title: str) -> Path:
        parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
                 "<style>body{font-family:sans-serif}img{max-width:100%}td{vertical-align:top;padding:4px}</style>",
                 f"<h1>{html.escape(title)}</h1>",
                 "<p>Per scene: the input frames (darkest first), the reference frame, and each method's output "
                 "(SEC: the corrected input frames; MEF: the fused image).</p>"]  # fmt: skip
        for key, _, files in self.entries:
            parts.append(f"<h2>{html.escape(key)}</h2><table>")
            for name, file in files.items():
                parts.append(f"<tr><td><b>{html.escape(name)}</b></td><td><img loading='lazy' "
                             f"src='{html.escape(file)}'></td></tr>")  # fmt: skip
            parts.append("</table>")
        path = self.dir / "index.html"
        atomic_write_bytes(path, "\n".join(parts).encode("utf-8"))
        return path


def _fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if metric in {"psnr", "consistency", "ciede2000", "psnr_label", "chroma_added", "region_ev"} else f"{value:.4f}"


def summary_table(results: EvalResults, collection: str | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary (methods x metrics, means over scenes); best values in bold."""
    summary = results.summary(collection)
    metric_names = results.metric_names()
    best = {}
    for metric in metric_names:
        values = {m: s[metric] for m, s in summary.items() if metric in s}
        if values and metric != "consistency":  # identity-like outputs make consistency trivially high
            pick = min if metric in LOWER_IS_BETTER else max
            best[metric] = pick(values.values())
    header = ["method", "kind", *[METRIC_LABELS.get(m, m) for m in metric_names]]
    rows = []
    for method in results.methods:
        name = method["name"] + (" (baseline)" if method["baseline"] else "")
        cells = [name, method["kind"].upper()]
        for metric in metric_names:
            value = summary[method["name"]].get(metric)
            text = _fmt(value, metric)
            if value is not None and metric in best and np.isclose(value, best[metric]):
                text = f"**{text}**"
            cells.append(text)
        rows.append(cells)
    return header, rows


def baseline_findings(results: EvalResults) -> list[str]:
    """Sentences saying, per metric, whether the best simple baseline (other than identity) beats the best
    other correction (SEC) method, or by how much it loses."""
    summary = results.summary()
    kinds = {m["name"]: m for m in results.methods}
    lines = []
    for metric in results.metric_names():
        if metric == "consistency":
            continue
        sign = -1 if metric in LOWER_IS_BETTER else 1
        scored = {m: s[metric] for m, s in summary.items() if metric in s}
        simple = {m: v for m, v in scored.items() if kinds[m]["baseline"] and m != "identity"}
        # Compare like with like: baselines correct frames, so they face the other SEC methods (models); on
        # MEF-SSIM a fused image is a different thing from a corrected frame.
        others = {m: v for m, v in scored.items() if not kinds[m]["baseline"] and kinds[m]["kind"] == SEC}
        if not simple:
            continue
        best_simple = max(simple, key=lambda m: sign * simple[m])
        label = METRIC_LABELS.get(metric, metric)
        if not others:
            lines.append(f"{label}: the best simple baseline is `{best_simple}` ({_fmt(simple[best_simple], metric)}).")
            continue
        best_other = max(others, key=lambda m: sign * others[m])
        gap = sign * (others[best_other] - simple[best_simple])
        if gap <= 0:
            lines.append(f"{label}: the simple baseline `{best_simple}` ({_fmt(simple[best_simple], metric)}) is at "
                         f"least as good as every other method (best: `{best_other}`, "
                         f"{_fmt(others[best_other], metric)}).")  # fmt: skip
        else:
            lines.append(f"{label}: `{best_other}` ({_fmt(others[best_other], metric)}) beats the best simple "
                         f"baseline `{best_simple}` ({_fmt(simple[best_simple], metric)}) by "
                         f"{_fmt(gap, metric)}.")  # fmt: skip
    return lines


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _plots(results: EvalResults, outdir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    summary = results.summary()
    for metric in results.metric_names():
        names = [m["name"] for m in results.methods if metric in summary[m["name"]]]
        if not names:
            continue
        fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(names) + 1.5), 3.2))
        colours = ["#999999" if any(m["name"] == n and m["baseline"] for m in results.methods) else "#1f77b4"
                   for n in names]  # fmt: skip
        ax.bar(range(len(names)), [summary[n][metric] for n in names], color=colours)
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.set_title(f"{METRIC_LABELS.get(metric, metric)} (grey: simple baselines)", fontsize=9)
        fig.tight_layout()
        files.append(_save_figure(fig, outdir / "plots" / f"bar_{metric}.png"))
        plt.close(fig)
    for metric in OFFSET_METRICS:
        curves = results.by_offset(metric)
        if not curves:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for method in results.methods:
            curve = curves.get(method["name"])
            if curve:
                ax.plot(list(curve), list(curve.values()), marker="o", label=method["name"],
                        linestyle="--" if method["baseline"] else "-")  # fmt: skip
        ax.set_xlabel("input EV (frames from the reference)" if results.protocol == "bracket-5" else "input EV")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.legend(fontsize=7)
        fig.tight_layout()
        files.append(_save_figure(fig, outdir / "plots" / f"{metric}_vs_ev.png"))
        plt.close(fig)
    return files


def _save_figure(fig, path: Path) -> str:
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})  # no version stamp: deterministic
    atomic_write_bytes(path, buffer.getvalue())
    return str(path.relative_to(path.parent.parent))


def write_report(results: EvalResults, outdir: str | os.PathLike, command: str = "", gallery: Gallery | None = None) -> Path:
    """Write ``report.md``, ``report.json``, ``per_scene.csv``, ``per_frame.csv``, ``plots/*.png`` and, with a
    gallery, ``gallery/index.html`` under ``outdir``; returns the Markdown report's path."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    plots = _plots(results, outdir)
    header, rows = summary_table(results)
    md = [f"# Evaluation: {results.protocol}", ""]
    if command:
        md += ["Command:", "", "```", command, "```", ""]
    md += [f"{len(results.scenes)} scenes. Means over scenes; best value per column in bold (consistency is not "
           "ranked: a method that ignores its input scores high).", "", _markdown_table(header, rows), ""]  # fmt: skip
    collections = results.collections()
    if len(collections) > 1:
        for collection in collections:
            count = sum(s["scene"].split("/")[0] == collection for s in results.scenes)
            md += [f"`{collection}` ({count} scenes):", "", _markdown_table(*summary_table(results, collection)), ""]
    findings = baseline_findings(results)
    if findings:
        md += ["Simple baselines:", ""] + [f"- {line}" for line in findings] + [""]
    chroma = results.frame_percentiles("chroma_added", 90)
    if chroma:
        md += [f"{METRIC_LABELS['chroma_added']} (CIELAB chroma added to pixels bright in every input channel, "
               "per frame; frames without such pixels left out):", ""]
        rows = [[m, _fmt(mean, "chroma_added"), _fmt(p90, "chroma_added"), str(n)] for m, (mean, p90, n) in chroma.items()]
        md += [_markdown_table(["method", "mean over frames", "90th percentile", "frames"], rows), ""]
    for metric in OFFSET_METRICS:
        curves = results.by_offset(metric)
        if not curves:
            continue
        offsets = sorted({o for c in curves.values() for o in c})
        md += [f"{METRIC_LABELS.get(metric, metric)} by input EV (frames from the reference):", ""]
        table_rows = [[m, *[_fmt(curves[m].get(o), metric) for o in offsets]] for m in curves]
        md += [_markdown_table(["method", *[f"{o:+g}" for o in offsets]], table_rows), ""]
    md += ["Methods:", ""] + [f"- `{m['name']}` ({m['kind'].upper()}): {m['description']}" for m in results.methods]
    md += ["", "Plots: " + ", ".join(f"[{Path(p).name}]({p})" for p in plots)]
    if gallery is not None:
        gallery.write_html(f"loopexpose eval: {results.protocol}")
        md += ["", "Gallery: [gallery/index.html](gallery/index.html)"]
    report = outdir / "report.md"
    atomic_write_bytes(report, ("\n".join(md) + "\n").encode("utf-8"))
    payload = {"command": command, **results.to_dict()}
    atomic_write_bytes(outdir / "report.json", (json.dumps(payload, indent=1, sort_keys=False) + "\n").encode())
    _write_csv(outdir / "per_scene.csv", results.scene_rows)
    _write_csv(outdir / "per_frame.csv", results.frame_rows)
    return report


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else ("" if v is None else v)) for k, v in row.items()})
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))
