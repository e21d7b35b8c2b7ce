"""The web demo (``loopexpose serve``): correct one photo, or order, correct and fuse a bracket, in a browser.

Two layers, so the logic is testable without a browser or even without Gradio:

* :class:`WebDemo` holds the models, the limits and a private working folder, and does the work:
  :meth:`WebDemo.correct` and :meth:`WebDemo.fuse` take server-side upload paths and return plain arrays,
  text and the path of a full-resolution result file.
* :func:`build_app` wraps it in a Gradio ``Blocks`` with two tabs (*Correct*, *Fuse*), and :func:`serve` runs
  it on loopback.

Safety: uploads are only ever read from the demo's private folder (Gradio's upload cache is pointed inside it),
checked for size and pixel count before decoding, and copied under sanitised names into a fresh scene folder
before ordering (so no name or path chosen by a user reaches the file system). Results older than an hour are
purged, and the whole folder is removed when the server stops. Gradio's analytics are switched off and no
share link is ever made.

Errors: the Gradio handlers (:func:`handle_correct`, :func:`handle_fuse`) show a user's mistake (a broken file,
a photo too large) as one message naming the file by its base name, never a server path, and log it as one line;
Gradio's own image preprocessing (which would open the upload with Pillow and fail with a server path and a
traceback) is bypassed. Only a bug (any other exception) leaves a traceback, in the server log alone.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import torch

from loopexpose.errors import LoopExposeError
from loopexpose.io import INPUT_SUFFIXES
from loopexpose.io import estimate_exposure as io_estimate_exposure

log = logging.getLogger("loopexpose.app")

# Long side of the images sent to the browser (as PNG: lossy previews would misrepresent the result); the
# downloads stay full resolution.
PREVIEW_SIDE = 1280
_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._()+-]+")


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server.

    Attributes:
        max_upload_mb: largest accepted file, in MB (10**6 bytes).
        max_megapixels: largest accepted photo, in millions of pixels (width x height).
        max_frames: most frames in one bracket.
        keep_seconds: results and uploads older than this are deleted.
    """

    max_upload_mb: float = 50.0
    max_megapixels: float = 40.0
    max_frames: int = 9
    keep_seconds: float = 3600.0


@dataclass(frozen=True)
class Exposure:
    """Estimated exposure of an image: mean Rec. 601 luma in [0, 1] and stops of linear light from mid-grey."""

    mean_luma: float
    ev: float

    def __str__(self) -> str:
        return f"mean luma {self.mean_luma:.3f} ({self.ev:+.2f} EV vs mid-grey)"


def estimate_exposure(pixels: np.ndarray | torch.Tensor) -> Exposure:
    """Mean luma and stops from mid-grey of an image (:func:`loopexpose.io.estimate_exposure`, as ``loopexpose
    correct --json`` reports them).

    Args:
        pixels: ``(H, W, 3)`` array (uint8, uint16 or float in [0, 1]) or ``(3, H, W)`` tensor in [0, 1].

    >>> estimate_exposure(np.full((2, 2, 3), 118, np.uint8)).ev
    0.0
    """
    if isinstance(pixels, torch.Tensor):
        pixels = pixels.detach().cpu().float().permute(1, 2, 0).numpy()
    return Exposure(*io_estimate_exposure(pixels))


def safe_name(name: str, default_suffix: str = ".png") -> str:
    """A file name made only of ``A-Za-z0-9._()+-`` (EV tags such as ``_N1.5`` or ``(m2)`` survive), at most
    80 characters, never hidden, never a path.

    >>> safe_name("../../etc/My photo_N1.jpg")
    'My_photo_N1.jpg'
    """
    base = Path(str(name).replace("\\", "/")).name
    stem, suffix = Path(base).stem, Path(base).suffix.lower()
    stem = _SAFE_CHARS.sub("_", stem).strip("._") or "image"
    if suffix not in INPUT_SUFFIXES:
        suffix = default_suffix
    return stem[:80] + suffix


def _preview(pixels: np.ndarray | torch.Tensor, side: int = PREVIEW_SIDE) -> np.ndarray:
    """``(H, W, 3)`` uint8 for the browser, long side at most ``side`` (area filter)."""
    if isinstance(pixels, torch.Tensor):
        pixels = pixels.detach().cpu().float().clamp(0, 1).permute(1, 2, 0).numpy()
    if max(pixels.shape[:2]) > side:
        scale = side / max(pixels.shape[:2])
        size = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    return (np.clip(pixels, 0, 1) * 255 + 0.5).astype(np.uint8)


@dataclass
class CorrectResult:
    """What :meth:`WebDemo.correct` returns: previews (uint8, long side <= 1280), the full-resolution file,
    exposures before and after, seconds taken by the model, and a Markdown report."""

    before: np.ndarray
    after: np.ndarray
    download: Path
    exposure_before: Exposure
    exposure_after: Exposure
    seconds: float
    report: str


@dataclass
class FuseResult:
    """What :meth:`WebDemo.fuse` returns: ``(preview, caption)`` pairs of the frames in exposure order (aligned,
    when asked) and of the corrected frames, the fused preview, the full-resolution fused file, the original names
    in exposure order (of the frames fused), the ordering rule, seconds taken, a Markdown report, and the
    :class:`~loopexpose.brackets.align.Alignment` when the frames were aligned."""

    ordered: list[tuple[np.ndarray, str]]
    corrected: list[tuple[np.ndarray, str]]
    fused: np.ndarray
    download: Path
    names: list[str]
    rule: str
    seconds: float
    report: str
    alignment: Any = None


@dataclass
class WebDemo:
    """Models, limits and the private working folder behind the web app.

    Args:
        models: display name -> a model with ``.correct(...)`` (see
            :meth:`loopexpose.models.ExposureModel.correct`), or ``None`` to load the bundled weights of that
            name on first use. Default: every bundled model, loaded lazily.
        limits: see :class:`Limits`.
        device: where lazily loaded models run (``"auto"``, ``"cpu"``, ``"cuda"``).
        workdir: the private folder (default: a fresh ``loopexpose-web-*`` temporary folder, mode 0700).
    """

    models: Mapping[str, Any] | None = None
    limits: Limits = field(default_factory=Limits)
    device: str = "cpu"
    workdir: Path | None = None

    def __post_init__(self) -> None:
        if self.models is None:
            from loopexpose.models import bundled

            names = bundled()
            if not names:
                raise LoopExposeError("no bundled model weights found; reinstall loopexpose")
            self.models = {name: None for name in names}
        if not self.models:
            raise LoopExposeError("the web demo needs at least one model")
        self.models = dict(self.models)
        self.workdir = Path(self.workdir or tempfile.mkdtemp(prefix="loopexpose-web-")).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)
        self.uploads = self.workdir / "uploads"  # Gradio's upload cache (GRADIO_TEMP_DIR)
        self.results = self.workdir / "results"
        for folder in (self.uploads, self.results):
            folder.mkdir(exist_ok=True)
        self._lock = threading.Lock()
        self._kept: set[Path] = set()  # Gradio's copies of the examples: they must outlive any purge

    # ------------------------------------------------------------------ models, uploads, housekeeping
    @property
    def model_names(self) -> list[str]:
        return list(self.models)

    def model(self, name: str):
        """The model called ``name`` (loaded on first use)."""
        if name not in self.models:
            raise LoopExposeError(f"unknown model {name!r} (choose one of {', '.join(self.models)})")
        with self._lock:
            if self.models[name] is None:
                from loopexpose.models import load

                self.models[name] = load(name, device=self.device)
            return self.models[name]

    def check_upload(self, path: str | os.PathLike) -> Path:
        """Accept an uploaded file: inside the private folder, an image suffix, within the size and pixel limits.

        Only the header is read here (PIL opens lazily), so an oversized photo is refused before it is decoded.

        Raises:
            LoopExposeError: naming the file's base name and the problem.
        """
        path = Path(path).resolve()
        name = path.name
        if not path.is_relative_to(self.workdir) or not path.is_file():
            raise LoopExposeError("not an uploaded file", name)
        if path.suffix.lower() not in INPUT_SUFFIXES:
            raise LoopExposeError("unsupported file type (use JPEG, PNG, TIFF or camera RAW)", name)
        size_mb = path.stat().st_size / 1e6
        if size_mb > self.limits.max_upload_mb:
            raise LoopExposeError(f"file is {size_mb:.1f} MB; the limit is {self.limits.max_upload_mb:g} MB", name)
        from loopexpose.io import TooLargeError, image_size

        try:
            width, height = image_size(path, name)  # the reader's own header check: float TIFFs too, no warnings
        except TooLargeError:
            raise LoopExposeError(f"image is too large; the limit is {self.limits.max_megapixels:g} MP", name) from None
        megapixels = width * height / 1e6
        if megapixels > self.limits.max_megapixels:
            raise LoopExposeError(
                f"image is {width}x{height} ({megapixels:.1f} MP); the limit is {self.limits.max_megapixels:g} MP",
                name,
            )
        return path

    def keep_current_uploads(self) -> None:
        """Never purge what the upload cache holds now (Gradio caches the example files there at start-up)."""
        self._kept = set(self.uploads.iterdir())

    def _result_folder(self) -> Path:
        self.purge()
        folder = self.results / uuid.uuid4().hex
        folder.mkdir()
        return folder

    def purge(self, now: float | None = None) -> int:
        """Delete results and uploads older than ``limits.keep_seconds``; returns how many were removed."""
        now = time.time() if now is None else now
        removed = 0
        for parent in (self.results, self.uploads):
            for entry in parent.iterdir():
                if entry in self._kept:
                    continue
                try:
                    if now - entry.stat().st_mtime > self.limits.keep_seconds:
                        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
                        removed += 1
                except FileNotFoundError:  # another request purged it first
                    pass
        return removed

    def close(self) -> None:
        """Remove the private folder and everything in it."""
        shutil.rmtree(self.workdir, ignore_errors=True)

    def public_message(self, error: Exception) -> str:
        """An error's message with the private folder's paths cut down to file names (also a path Gradio gave
        before it was resolved, and a bare mention of the folder itself)."""
        text = str(error)
        for root in {str(self.workdir), os.path.abspath(self.workdir), os.path.realpath(self.workdir)}:
            text = re.sub(re.escape(root) + r"(?:/[^\s:'\"]*)*/", "", text)
            text = text.replace(root, "<server>")
        return text

    # ------------------------------------------------------------------ the two jobs
    def correct(self, upload: str | os.PathLike | None, model_name: str) -> CorrectResult:
        """Correct one uploaded photo at full resolution.

        Returns previews of the input and result, their estimated exposures, the seconds the model took, and
        ``<name>_loopexpose.png`` at the input's resolution and bit depth with its EXIF and ICC profile.
        """
        from loopexpose.io import read_image, write_image

        if upload is None:
            raise LoopExposeError("upload a photo first")
        path = self.check_upload(upload)
        model = self.model(model_name)
        photo = read_image(path)
        started = time.perf_counter()
        corrected = model.correct(photo.pixels)
        seconds = time.perf_counter() - started
        before, after = estimate_exposure(photo.pixels), estimate_exposure(corrected)
        out = self._result_folder() / f"{Path(safe_name(path.name)).stem}_loopexpose.png"
        write_image(out, corrected, bits=photo.bit_depth, exif=photo.exif, icc=photo.icc)
        height, width = photo.pixels.shape[:2]
        report = (
            f"**{model_name}** corrected {width}x{height} in **{seconds:.2f} s**\n\n"
            f"| | mean luma | EV vs mid-grey |\n|---|---|---|\n"
            f"| before | {before.mean_luma:.3f} | {before.ev:+.2f} |\n"
            f"| after | {after.mean_luma:.3f} | {after.ev:+.2f} |"
        )
        return CorrectResult(_preview(photo.pixels), _preview(corrected), out, before, after, seconds, report)

    def fuse(
        self, uploads: Sequence[str | os.PathLike] | None, model_name: str, align: bool = False, deghost: bool = False
    ) -> FuseResult:
        """Order an uploaded bracket (2..``max_frames`` frames, any order), correct every frame, and fuse them
        with the inputs (the LoopExpose MEF result, :func:`loopexpose.fusion.loop_fuse`).

        The frames are copied under sanitised names into a fresh scene folder and ordered by
        :func:`loopexpose.brackets.order_bracket` (EXIF, EV tags in the names, else luminance). With ``align`` a
        handheld bracket is registered first (:func:`loopexpose.brackets.align.align_frames`): the result is
        cropped to the region every frame covers, the report gives every frame's motion, and a frame that cannot
        be aligned is left out (the report says so).
        With ``deghost``, what moved between the frames is taken from the frame nearest mid-grey
        (:func:`loopexpose.deghost.remove_ghosts`, after alignment and before correction); the corrected frames are
        then those of the ghost-free frames, the ordered ones stay as uploaded.
        """
        from loopexpose import fusion
        from loopexpose.brackets import read_bracket
        from loopexpose.io import to_numpy, write_image

        uploads = list(uploads or [])
        if not 2 <= len(uploads) <= self.limits.max_frames:
            raise LoopExposeError(f"upload 2 to {self.limits.max_frames} frames of one scene (got {len(uploads)})")
        paths = [self.check_upload(p) for p in uploads]
        model = self.model(model_name)
        out_folder = self._result_folder()
        with tempfile.TemporaryDirectory(dir=self.workdir, prefix="scene-") as scene_dir:
            scene = Path(scene_dir)
            copies = []
            for index, path in enumerate(paths):  # one sub-folder each: names stay as given, duplicates allowed
                target = scene / f"frame{index}" / safe_name(path.name)
                target.parent.mkdir()
                shutil.copyfile(path, target)
                copies.append(target)
            bracket, frames = read_bracket(scene, copies)  # ordered and loaded, each frame decoded once
            names = [p.name for p in bracket.paths]
        evs = bracket.evs if bracket.evs is not None else [None] * len(frames)
        alignment = None
        if align:
            from loopexpose.brackets.align import AlignmentWarning, align_frames

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AlignmentWarning)  # the report lists the frames left out
                alignment = align_frames(frames, names=names)
            frames = alignment.frames
            names, evs = [names[i] for i in alignment.kept], [evs[i] for i in alignment.kept]
        started = time.perf_counter()
        weights, ghosts = None, ""
        if deghost:
            from loopexpose.deghost import remove_ghosts

            clean, weights = remove_ghosts(frames)
            changed = [names[n] for n in range(len(frames)) if not torch.equal(clean[n], frames[n])]
            ghosts = (f"Ghost removal: moving content replaced in {len(changed)} of {len(frames)} frames"
                      f"{' (' + ', '.join(changed) + ')' if changed else ''}.\n\n")  # fmt: skip
        else:
            clean = frames
        corrected = torch.stack([model.correct(frame) for frame in clean]).clamp(0, 1)
        fused = fusion.loop_fuse(clean, corrected, frame_weights=weights).clamp(0, 1)
        seconds = time.perf_counter() - started
        ordered, fixed, rows = [], [], []
        for name, frame, result, ev in zip(names, frames, corrected, evs):
            before, after = estimate_exposure(frame), estimate_exposure(result)
            tag = f"{ev:+g} EV, " if ev is not None else ""
            # round first: "-0.0 EV" reads like a bug
            ordered.append((_preview(frame), f"{name} ({tag}{round(before.ev, 1) + 0.0:+.1f} EV vs grey)"))
            fixed.append((_preview(result), f"{name} corrected ({round(after.ev, 1) + 0.0:+.1f} EV vs grey)"))
            rows.append(
                f"| {name} | {before.mean_luma:.3f} ({before.ev:+.2f}) | {after.mean_luma:.3f} ({after.ev:+.2f}) |"
            )
        out = out_folder / "fused_loopexpose.png"
        write_image(out, to_numpy(fused))
        result = estimate_exposure(fused)
        height, width = frames.shape[-2:]
        report = (
            f"Exposure order (rule: **{bracket.rule}**): {' → '.join(names)}\n\n"
            f"**{model_name}** corrected {len(frames)} frames of {width}x{height} and fused them with the inputs "
            f"in **{seconds:.2f} s**; fused result: {result}\n\n{ghosts}"
            "| frame | before: mean luma (EV) | after: mean luma (EV) |\n|---|---|---|\n" + "\n".join(rows)
        )
        if alignment is not None:
            report += "\n\n" + _motion_report(alignment)
        return FuseResult(ordered, fixed, _preview(fused), out, names, bracket.rule, seconds, report, alignment)

    # ------------------------------------------------------------------ examples
    def render_examples(self) -> tuple[list[Path], list[list[Path]]]:
        """Example inputs rendered from scikit-image photos into the private folder.

        Returns:
            ``(photos, brackets)``: under/over-exposed single photos for *Correct*, and brackets for *Fuse*
            (one with EV tags in its names, given shuffled; one with plain names, ordered by luminance).
        """
        from loopexpose.cli.demo import render_bracket
        from loopexpose.io import to_numpy, write_image

        folder = self.workdir / "examples"
        folder.mkdir(exist_ok=True)

        def render(photo: str, evs: tuple[float, ...], names: Sequence[str]) -> list[Path]:
            frames = render_bracket(photo, evs)
            return [write_image(folder / name, to_numpy(frame)) for frame, name in zip(frames, names)]

        photos = [
            *render("coffee", (-2.0,), ["coffee_dark.png"]),
            *render("astronaut", (-1.5,), ["astronaut_dark.png"]),
            *render("chelsea", (1.5,), ["chelsea_bright.png"]),
        ]
        tagged = render("coffee", (-2.0, 0.0, 2.0), ["coffee_N2.png", "coffee_0.png", "coffee_P2.png"])
        plain = render("rocket", (-2.0, 0.0, 2.0), ["rocket_b.png", "rocket_c.png", "rocket_a.png"])
        return photos, [[tagged[2], tagged[0], tagged[1]], [plain[2], plain[0], plain[1]]]


def _motion_report(alignment) -> str:
    """Markdown: the reference, the crop, and every frame's estimated motion (or why it was left out)."""
    x, y, width, height = alignment.crop
    rows = []
    for motion in alignment.motions:
        if motion.model == "reference":
            rows.append(f"| {motion.name} | reference | | | |")
        elif not motion.aligned:
            rows.append(f"| {motion.name} | **left out**: {motion.problem} | | | {motion.correlation:.3f} |")
        else:
            model = f"{motion.model} via {motion.via}" if motion.via else motion.model
            rows.append(f"| {motion.name} | {model} | {motion.dx:+.2f}, {motion.dy:+.2f} | "
                        f"{motion.rotation:+.2f} | {motion.correlation:.3f} |")  # fmt: skip
    return (
        f"Aligned to **{alignment.motions[alignment.reference].name}**, cropped to {width}x{height} at ({x}, {y}):\n\n"
        "| frame | motion | shift dx, dy (px) | rotation (deg) | correlation |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
    )


# ---------------------------------------------------------------------------------------------- Gradio

def _gradio():
    """Import Gradio with its analytics off (before the import, as Gradio reads the variable then)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio
    except ImportError:
        raise LoopExposeError("the web demo needs Gradio: pip install 'loopexpose[web]'") from None
    return gradio


def upload_path(upload: Any) -> str | None:
    """The server-side path of an upload as Gradio hands it over: a path, or (with preprocessing off) its
    ``FileData`` payload, as a dict or an object with ``.path``."""
    if upload is None or isinstance(upload, (str, os.PathLike)):
        return upload
    if isinstance(upload, Mapping):
        return upload.get("path")
    return getattr(upload, "path", None)


def _run(demo: WebDemo, job, *args):
    """``job(*args)`` with errors turned into what the browser shows: a user's mistake becomes ``gr.Error``
    with a path-free message and one line in the server log; a bug is logged with its traceback and shown as
    an internal error, also without paths."""
    gr = _gradio()
    try:
        return job(*args)
    except LoopExposeError as exc:
        message = demo.public_message(exc)
        log.warning("refused: %s", message)
        raise gr.Error(message, print_exception=False) from None
    except Exception:  # noqa: BLE001 - a bug: the log keeps the details, the browser gets no server paths
        log.exception("internal error")
        raise gr.Error("internal error (the server log has the details)", print_exception=False) from None


def handle_correct(demo: WebDemo, upload: Any, model_name: str):
    """The *Correct* button: ``((before, after), report, download button)``; errors as :func:`_run` says."""
    gr = _gradio()
    result = _run(demo, demo.correct, upload_path(upload), model_name)
    return (result.before, result.after), result.report, gr.DownloadButton(value=str(result.download), visible=True)


def handle_fuse(demo: WebDemo, uploads: Any, model_name: str, align: bool = False, deghost: bool = False):
    """The *Fuse* button: ``(ordered, corrected, fused, report, download button)``; errors as :func:`_run`."""
    gr = _gradio()
    paths = None if uploads is None else [upload_path(u) for u in uploads]
    result = _run(demo, demo.fuse, paths, model_name, bool(align), bool(deghost))
    download = gr.DownloadButton(value=str(result.download), visible=True)
    return result.ordered, result.corrected, result.fused, result.report, download


def build_app(demo: WebDemo):
    """The Gradio ``Blocks`` of the demo (tabs *Correct* and *Fuse*, examples preloaded)."""
    # Uploads land in the demo's private folder; Gradio reads this when Blocks and its server are created.
    os.environ["GRADIO_TEMP_DIR"] = str(demo.uploads)
    gr = _gradio()
    photos, brackets = demo.render_examples()
    names = demo.model_names

    def run_correct(upload, model_name):
        return handle_correct(demo, upload, model_name)

    def run_fuse(uploads, model_name, align, deghost):
        return handle_fuse(demo, uploads, model_name, align, deghost)

    limits = demo.limits
    with gr.Blocks(title="LoopExpose", analytics_enabled=False) as blocks:
        gr.Markdown(
            "## LoopExpose: exposure correction and fusion\n"
            f"Runs locally. Limits: {limits.max_upload_mb:g} MB and {limits.max_megapixels:g} MP per photo, "
            f"{limits.max_frames} frames per bracket. Uploads are deleted after an hour or when the server stops."
        )
        with gr.Tab("Correct", id="correct"):
            with gr.Row():
                with gr.Column(scale=2):
                    photo = gr.Image(
                        type="filepath", image_mode=None, sources=["upload"], label="Photo (JPEG, PNG or TIFF)",
                        elem_id="correct-input", height=320,
                    )
                    model = gr.Dropdown(names, value=names[0], label="Model", elem_id="correct-model")
                    button = gr.Button("Correct", variant="primary", elem_id="correct-button")
                    gr.Examples(
                        [[str(p)] for p in photos], inputs=[photo], elem_id="correct-examples",
                        label="Examples (scikit-image photos rendered under- and over-exposed)",
                    )
                with gr.Column(scale=3):
                    slider = gr.ImageSlider(
                        label="Before / after", type="numpy", format="png", elem_id="correct-slider", height=420
                    )
                    report = gr.Markdown(elem_id="correct-report")
                    download = gr.DownloadButton("Download full resolution", visible=False, elem_id="correct-download")
            # preprocess=False: Gradio would open the upload with Pillow first and fail, for a broken file, with a
            # server path and a traceback; the handler reads the file itself (and the dropdown value is plain).
            button.click(run_correct, [photo, model], [slider, report, download], concurrency_limit=1,
                         preprocess=False)  # fmt: skip
        with gr.Tab("Fuse", id="fuse"):
            with gr.Row():
                with gr.Column(scale=2):
                    files = gr.File(
                        file_count="multiple", file_types=sorted(INPUT_SUFFIXES), type="filepath",
                        label="Bracket: 2 or more photos of one scene, in any order", elem_id="fuse-input",
                    )
                    fuse_model = gr.Dropdown(names, value=names[0], label="Model", elem_id="fuse-model")
                    fuse_align = gr.Checkbox(
                        value=False, label="Align frames", elem_id="fuse-align",
                        info="For handheld brackets: register every frame to the one nearest mid-grey, crop the borders",
                    )
                    fuse_deghost = gr.Checkbox(
                        False, label="Remove ghosts", elem_id="fuse-deghost",
                        info="Things that moved between the shots come from one frame instead of showing through",
                    )
                    fuse_button = gr.Button("Fuse", variant="primary", elem_id="fuse-button")
                    gr.Examples(
                        [[[str(p) for p in bracket]] for bracket in brackets], inputs=[files], elem_id="fuse-examples",
                        label="Example brackets (-2, 0, +2 EV, given shuffled)",
                        example_labels=["coffee: EV tags in the names", "rocket: plain names, ordered by luminance"],
                    )
                with gr.Column(scale=3):
                    fused = gr.Image(
                        label="Fused result", type="numpy", format="png", interactive=False, elem_id="fuse-result",
                        height=360,
                    )
                    fuse_report = gr.Markdown(elem_id="fuse-report")
                    fuse_download = gr.DownloadButton("Download fused result", visible=False, elem_id="fuse-download")
            gallery = dict(columns=5, height="auto", object_fit="contain", format="png")
            ordered = gr.Gallery(label="Frames in exposure order", elem_id="fuse-ordered", **gallery)
            corrected = gr.Gallery(label="Corrected frames", elem_id="fuse-corrected", **gallery)
            fuse_button.click(
                run_fuse, [files, fuse_model, fuse_align, fuse_deghost],
                [ordered, corrected, fused, fuse_report, fuse_download],
                concurrency_limit=1,
            )
    demo.keep_current_uploads()
    return blocks


def _theme(gr):
    """The default theme with system fonts: the stock one fetches Google Fonts, and the demo stays offline."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def launch(demo: WebDemo, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Build and start the app; returns the Gradio ``Blocks`` (already serving when ``block`` is False).

    Never makes a share link; binds to ``host`` (loopback unless told otherwise).
    """
    gr = _gradio()
    blocks = build_app(demo)
    blocks.queue(default_concurrency_limit=1)
    blocks.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=not block,
        max_file_size=int(demo.limits.max_upload_mb * 1e6),
        show_error=True,
        quiet=True,
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        theme=_theme(gr),
    )
    return blocks
