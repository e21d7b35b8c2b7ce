"""The web demo: its handlers (no browser, no Gradio needed) and, end to end, the app in headless Chromium.

The browser tests start the app on loopback in this process and drive Debian's Chromium with Playwright. They
skip with a reason when Gradio, Playwright or /usr/bin/chromium is missing; ``.ci/run`` installs all three.
Set ``LOOPEXPOSE_SCREENSHOT_DIR=docs`` to (re)write the README screenshots from ``test_screenshots``.
"""

from __future__ import annotations

import io as _io
import os
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from loopexpose import fusion
from loopexpose.app import Limits, WebDemo, estimate_exposure, safe_name
from loopexpose.cli.demo import render_bracket
from loopexpose.errors import LoopExposeError
from loopexpose.io import read_image, to_numpy, write_image
from loopexpose.models import bundled
from conftest import camera_motion, shaken_bracket
from conftest import randomised_curvegrid as randomised

# Gradio's queue uses pandas options that pandas 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]




class Identity:
    """A stand-in model that changes nothing (so fusion results can be checked exactly)."""

    def correct(self, image):
        return image


@pytest.fixture()
def demo(tmp_path):
    app = WebDemo(models={"random": randomised(), "identity": Identity()}, workdir=tmp_path / "web")
    yield app
    app.close()


def upload(demo: WebDemo, pixels: np.ndarray, name: str, bits: int = 8) -> str:
    """Put an image where Gradio would: a sub-folder of the demo's upload cache."""
    folder = demo.uploads / f"u{len(list(demo.uploads.iterdir()))}"
    folder.mkdir()
    return str(write_image(folder / name, pixels, bits=bits))


def quantised(frames: torch.Tensor) -> torch.Tensor:
    """What 8-bit files of ``frames`` hold."""
    return torch.floor(frames * 255 + 0.5) / 255


def dark_photo() -> np.ndarray:
    return to_numpy(render_bracket("coffee", (-2.0,))[0])


def luma_of(data: bytes) -> float:
    rgb = np.asarray(Image.open(_io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255
    return estimate_exposure(rgb).mean_luma


# ------------------------------------------------------------------------------------------- handlers

def test_estimate_exposure():
    assert estimate_exposure(np.full((4, 4, 3), 118, np.uint8)).ev == 0.0
    # stops of linear light, as `loopexpose correct --json` reports them: half the light is -1
    half_light = (118 / 255) * 2 ** (-1 / 2.2)
    half = estimate_exposure(np.full((4, 4, 3), half_light, np.float32))
    assert half.mean_luma == pytest.approx(half_light, abs=1e-4)
    assert half.ev == pytest.approx(-1.0, abs=1e-3)
    assert estimate_exposure(torch.full((3, 4, 4), (118 / 255) * 2 ** (0.5 / 2.2))).ev == pytest.approx(0.5, abs=1e-3)
    assert estimate_exposure(np.zeros((2, 2, 3), np.uint16)).ev < -12  # black is finite, very negative


@pytest.mark.parametrize(
    "given, expected",
    [
        ("../../etc/passwd", "passwd.png"),
        ("/abs/dir/My photo_N1.5.JPG", "My_photo_N1.5.jpg"),
        ("..\\..\\win\\img2(m2).jpg", "img2(m2).jpg"),
        (".hidden.png", "hidden.png"),
        ("шот.tiff", "image.tiff"),
        ("a" * 300 + ".png", "a" * 80 + ".png"),
    ],
)
def test_safe_name(given, expected):
    assert safe_name(given) == expected


def test_correct_full_resolution_with_metadata_depth(demo):
    photo = dark_photo()
    path = upload(demo, photo, "dark.png", bits=16)
    result = demo.correct(path, "random")
    written = read_image(result.download)
    assert result.download.name == "dark_loopexpose.png"
    assert result.download.is_relative_to(demo.results)
    assert written.pixels.shape == photo.shape and written.bit_depth == 16
    expected = randomised().correct(read_image(path).pixels)
    assert np.abs(written.pixels - expected).max() <= 1 / 65535 + 1e-6
    assert result.before.shape == photo.shape and result.before.dtype == np.uint8
    assert result.exposure_before.mean_luma == pytest.approx(estimate_exposure(photo).mean_luma, abs=1e-3)
    assert result.exposure_after.mean_luma == pytest.approx(estimate_exposure(written.pixels).mean_luma, abs=1e-3)
    assert result.exposure_after != result.exposure_before  # the random model does change the photo
    assert f"{result.exposure_before.ev:+.2f}" in result.report and f"{result.exposure_after.ev:+.2f}" in result.report


def test_correct_preview_is_downscaled_download_is_not(demo):
    big = np.random.default_rng(0).random((700, 1500, 3), dtype=np.float32)
    result = demo.correct(upload(demo, big, "big.png"), "identity")
    assert result.after.shape == (597, 1280, 3)
    assert read_image(result.download).pixels.shape == big.shape


def test_limits_refuse_with_clear_messages(tmp_path):
    demo = WebDemo(models={"identity": Identity()}, limits=Limits(max_upload_mb=0.05, max_megapixels=0.01),
                   workdir=tmp_path / "web")
    with pytest.raises(LoopExposeError, match=r"big\.png: file is 0\.\d MB; the limit is 0\.05 MB"):
        noise = np.random.default_rng(0).random((200, 200, 3), dtype=np.float32)  # incompressible
        demo.correct(upload(demo, noise, "big.png"), "identity")
    with pytest.raises(LoopExposeError, match=r"wide\.png: image is 200x100 \(0\.0 MP\); the limit is 0\.01 MP"):
        demo.correct(upload(demo, np.zeros((100, 200, 3), np.float32), "wide.png"), "identity")
    fake = demo.uploads / "fake.png"
    fake.write_bytes(b"not an image at all")
    with pytest.raises(LoopExposeError, match=r"fake\.png: not an image, or not a JPEG, PNG or TIFF"):
        demo.correct(str(fake), "identity")
    (demo.uploads / "notes.txt").write_text("hello")
    with pytest.raises(LoopExposeError, match=r"notes\.txt: unsupported file type"):
        demo.correct(str(demo.uploads / "notes.txt"), "identity")
    with pytest.raises(LoopExposeError, match="upload a photo first"):
        demo.correct(None, "identity")
    with pytest.raises(LoopExposeError, match="unknown model 'nope'"):
        demo.correct(upload(demo, np.zeros((8, 8, 3), np.float32), "ok.png"), "nope")
    demo.close()


def test_paths_outside_the_private_folder_are_refused(demo, tmp_path):
    outside = write_image(tmp_path / "secret.png", np.zeros((8, 8, 3), np.float32))
    for path in (str(outside), "/etc/passwd", str(demo.uploads / ".." / ".." / "secret.png")):
        with pytest.raises(LoopExposeError, match="not an uploaded file"):
            demo.correct(path, "identity")


def test_fuse_orders_shuffled_bracket_by_luminance(demo):
    frames = render_bracket("rocket", (-2.0, 0.0, 2.0))
    names = ["b.png", "c.png", "a.png"]  # dark, mid, bright: no EV tags, so luminance decides
    shuffled = [2, 0, 1]
    paths = [upload(demo, to_numpy(frames[i]), names[i]) for i in shuffled]
    result = demo.fuse(paths, "identity")
    assert result.rule == "luminance"
    assert result.names == names
    loaded = quantised(frames)
    expected = to_numpy(fusion.loop_fuse(loaded, loaded).clamp(0, 1))  # the identity model "corrects" nothing
    fused = read_image(result.download).pixels
    assert fused.shape == expected.shape
    assert np.abs(fused - expected).max() <= 1 / 255 + 1e-6
    assert len(result.ordered) == len(result.corrected) == 3
    lumas = [estimate_exposure(image).mean_luma for image, _ in result.ordered]
    assert lumas == sorted(lumas)
    assert "b.png → c.png → a.png" in result.report
    assert not list(demo.workdir.glob("scene-*")), "the scene folder of copied uploads is removed"


def test_fuse_decodes_every_uploaded_frame_once(demo, frame_reads):
    frames = render_bracket("rocket", (-2.0, 0.0, 2.0))
    paths = [upload(demo, to_numpy(frame), name) for frame, name in zip(frames, ("b.png", "c.png", "a.png"))]
    result = demo.fuse(paths[::-1], "identity")
    assert result.rule == "luminance" and result.names == ["b.png", "c.png", "a.png"]
    assert sorted(path.name for path in frame_reads.decoded) == ["a.png", "b.png", "c.png"]  # the scene's copies
    assert frame_reads.measured == []  # none decoded a second time to be ordered


def test_fuse_uses_ev_tags_in_names_and_corrects_frames(demo):
    frames = render_bracket("coffee", (-1.0, 0.0, 1.0))
    names = ["x_N1.png", "x_0.png", "x_P1.png"]
    paths = [upload(demo, to_numpy(frames[i]), names[i]) for i in (1, 2, 0)]
    result = demo.fuse(paths, "random")
    assert result.rule == "filename" and result.names == names
    assert "+1 EV" in result.ordered[1][1]
    model = randomised()
    corrected = torch.stack([model.correct(f) for f in quantised(frames)]).clamp(0, 1)
    expected = fusion.loop_fuse(quantised(frames), corrected).clamp(0, 1)
    assert np.abs(read_image(result.download).pixels - to_numpy(expected)).max() <= 1 / 255 + 1e-6


def test_fuse_refuses_bad_brackets(demo):
    one = upload(demo, np.zeros((8, 8, 3), np.float32), "one.png")
    with pytest.raises(LoopExposeError, match=r"upload 2 to 9 frames of one scene \(got 1\)"):
        demo.fuse([one], "identity")
    with pytest.raises(LoopExposeError, match=r"\(got 10\)"):
        demo.fuse([one] * 10, "identity")
    other = upload(demo, np.zeros((8, 32, 3), np.float32), "other.png")
    with pytest.raises(LoopExposeError, match="different aspect ratio") as info:
        demo.fuse([one, other], "identity")
    message = demo.public_message(info.value)
    assert str(demo.workdir) not in message and message.startswith(("other.png: ", "one.png: "))


def test_examples_render_and_cleanup(demo):
    photos, brackets = demo.render_examples()
    assert [p.name for p in photos] == ["coffee_dark.png", "astronaut_dark.png", "chelsea_bright.png"]
    assert estimate_exposure(read_image(photos[0]).pixels).ev < -1
    result = demo.fuse([str(p) for p in brackets[0]], "identity")  # examples are in the private folder
    assert result.rule == "filename" and result.names == ["coffee_N2.png", "coffee_0.png", "coffee_P2.png"]
    assert demo.fuse([str(p) for p in brackets[1]], "identity").rule == "luminance"
    old = demo.results / "old"
    old.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert demo.purge() >= 1 and not old.exists()
    workdir = demo.workdir
    demo.close()
    assert not workdir.exists()


def test_lazy_model_loading(tmp_path):
    from loopexpose.models import save

    checkpoint = save(randomised(), tmp_path / "mine.safetensors")
    demo = WebDemo(models={str(checkpoint): None}, workdir=tmp_path / "web")
    assert demo.models[str(checkpoint)] is None
    model = demo.model(str(checkpoint))
    assert model is demo.model(str(checkpoint)) and model.arch == "curvegrid"
    demo.close()


def test_serve_help_and_loopback_rule():
    from typer.testing import CliRunner

    from loopexpose.cli import app
    from loopexpose.cli.serve import _is_loopback

    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0 and "127.0.0.1" in result.output and "7860" in result.output
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("example.org")


# ------------------------------------------------------------------------------------------- browser

def _needs_browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian's Chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    pytest.importorskip("gradio", reason="the web demo needs Gradio: pip install -e '.[web]'")
    pytest.importorskip("playwright.sync_api", reason="the browser tests need Playwright: pip install playwright")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on loopback with the bundled default model (a random stand-in when no weights are bundled)."""
    _needs_browser()
    from loopexpose.app import launch

    models = {"default": None} if "default" in bundled() else {"random (no bundled weights)": randomised()}
    demo = WebDemo(models=models, workdir=tmp_path_factory.mktemp("web"))
    saved = os.environ.get("GRADIO_TEMP_DIR")
    blocks = launch(demo, host="127.0.0.1", port=_free_port(), block=False)
    yield demo, blocks.local_url
    blocks.close()
    demo.close()
    if saved is None:
        os.environ.pop("GRADIO_TEMP_DIR", None)
    else:
        os.environ["GRADIO_TEMP_DIR"] = saved


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(server, browser):
    """A fresh page on the app that refuses (and records) any request leaving loopback."""
    _, url = server
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.outside = []

    def route(request_route):
        if request_route.request.url.startswith(("http://127.0.0.1", "http://localhost", "data:", "blob:")):
            request_route.continue_()
        else:
            page.outside.append(request_route.request.url)
            request_route.abort()

    page.route("**/*", route)
    page.goto(url)
    page.wait_for_selector("#correct-button")
    yield page
    context.close()


@pytest.mark.slow
def test_server_is_private(server):
    demo, url = server
    examples = {p.name for p in demo.uploads.rglob("*.png")}
    assert {"coffee_dark.png", "rocket_a.png"} <= examples, "Gradio caches the examples in the private folder"
    assert demo.purge(now=time.time() + 10 * 3600) >= 0 and {p.name for p in demo.uploads.rglob("*.png")} >= examples
    assert url.startswith("http://127.0.0.1:")
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    assert Path(os.environ["GRADIO_TEMP_DIR"]) == demo.uploads  # uploads land in the private folder
    assert demo.workdir.stat().st_mode & 0o777 == 0o700


def _loaded_images(page, selector: str, count: int, timeout: float = 60_000) -> list[str]:
    """Wait until ``count`` images under ``selector`` have loaded; return their URLs."""
    page.wait_for_function(
        """([selector, count]) => {
            const images = [...document.querySelectorAll(selector + ' img')];
            return images.length >= count && images.every(i => i.complete && i.naturalWidth > 0);
        }""",
        arg=[selector, count],
        timeout=timeout,
    )
    return page.eval_on_selector_all(selector + " img", "images => images.map(i => i.src)")


def _fuse_in_browser(page, paths, option: str | None = None) -> str:
    """Upload ``paths`` in the Fuse tab, wait until every file is listed, tick ``#fuse-<option>`` if given, fuse,
    and return the URL of the fused image once it has loaded."""
    page.get_by_role("tab", name="Fuse").click()
    page.set_input_files("#fuse-input input[type=file]", [str(p) for p in paths])
    for path in paths:
        page.wait_for_selector(f'#fuse-input td.filename[aria-label="{Path(path).name}"]')
    if option is not None:
        page.check(f"#fuse-{option} input[type=checkbox]")
    page.click("#fuse-button")
    (fused_url,) = _loaded_images(page, "#fuse-result", 1)
    return fused_url


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


@pytest.mark.slow
def test_browser_correct_makes_a_dark_photo_brighter(server, page, tmp_path):
    demo, _ = server
    if "default" not in demo.model_names:
        pytest.skip("no bundled default weights (src/loopexpose/weights/default.safetensors)")
    photo = write_image(tmp_path / "dark_coffee.png", dark_photo())
    before = estimate_exposure(dark_photo()).mean_luma
    page.set_input_files("#correct-input input[type=file]", str(photo))
    page.wait_for_selector("#correct-input img")
    page.click("#correct-button")
    sources = _loaded_images(page, "#correct-slider", 2)
    shown_before, shown_after = (luma_of(_fetch(src)) for src in sources[:2])
    assert shown_before == pytest.approx(before, abs=0.01)
    assert shown_after > before + 0.05, f"result mean luma {shown_after:.3f} vs input {before:.3f}"
    assert "in " in page.inner_text("#correct-report") and "before" in page.inner_text("#correct-report")
    with page.expect_download() as download:
        page.click("#correct-download")
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name == "dark_coffee_loopexpose.png"
    full = read_image(saved).pixels
    assert full.shape == dark_photo().shape and estimate_exposure(full).mean_luma > before + 0.05
    assert page.outside == []


@pytest.mark.slow
def test_browser_fuse_orders_a_shuffled_bracket(server, page, tmp_path):
    demo, _ = server
    frames = render_bracket("rocket", (-2.0, 0.0, 2.0))
    names = ["shot_b.png", "shot_c.png", "shot_a.png"]  # darkest to brightest; no EV tags in the names
    paths = [write_image(tmp_path / name, to_numpy(frame)) for name, frame in zip(names, frames)]
    fused_url = _fuse_in_browser(page, [paths[i] for i in (2, 0, 1)])
    report = page.inner_text("#fuse-report")
    assert "rule: luminance" in report and "shot_b.png → shot_c.png → shot_a.png" in report
    shown = np.asarray(Image.open(_io.BytesIO(_fetch(fused_url))).convert("RGB"), dtype=np.float32) / 255
    model = demo.model(demo.model_names[0])
    loaded = quantised(frames)
    corrected = torch.stack([model.correct(frame) for frame in loaded]).clamp(0, 1)
    expected = to_numpy(fusion.loop_fuse(loaded, corrected).clamp(0, 1))
    assert shown.shape == expected.shape
    assert np.abs(shown - expected).mean() < 0.01
    assert len(_loaded_images(page, "#fuse-ordered", 3)) >= 3 and len(_loaded_images(page, "#fuse-corrected", 3)) >= 3
    assert page.outside == []


@pytest.mark.slow
def test_browser_fuse_aligns_a_handheld_bracket(server, page, tmp_path):
    height, width = 256, 384
    truth = [camera_motion(4.0, -2.0, 0.6, height, width), np.eye(3), camera_motion(-3.0, 5.0, -0.8, height, width)]
    _, shaken = shaken_bracket(truth, (-2.0, 0.0, 2.0), side=480)
    names = ["hand_N2.png", "hand_0.png", "hand_P2.png"]
    paths = [write_image(tmp_path / name, to_numpy(frame)) for name, frame in zip(names, shaken)]
    fused_url = _fuse_in_browser(page, paths, "align")
    page.wait_for_function("() => document.querySelector('#fuse-report').innerText.includes('Aligned to')")
    report = page.inner_text("#fuse-report")
    assert "Aligned to hand_0.png" in report and "hand_N2.png" in report and "+4.0" in report
    shown = Image.open(_io.BytesIO(_fetch(fused_url)))
    assert shown.width < width - 4 and shown.height < height - 4  # cropped to the region all frames cover


def test_browser_fuse_removes_ghosts(server, page, tmp_path):
    from loopexpose.deghost import remove_ghosts
    from test_deghost import MOVING, moving_bracket

    demo, _ = server
    frames, _ = moving_bracket(MOVING)  # a coffee cup walks across an astronaut bracket
    paths = [write_image(tmp_path / f"walker_{n}.png", to_numpy(frame)) for n, frame in enumerate(frames)]
    fused_url = _fuse_in_browser(page, paths, "deghost")
    assert "Ghost removal: moving content replaced in 2 of 3 frames" in page.inner_text("#fuse-report")
    shown = np.asarray(Image.open(_io.BytesIO(_fetch(fused_url))).convert("RGB"), dtype=np.float32) / 255
    model = demo.model(demo.model_names[0])
    clean, weights = remove_ghosts(frames)
    corrected = torch.stack([model.correct(frame) for frame in clean]).clamp(0, 1)
    expected = to_numpy(fusion.loop_fuse(clean, corrected, frame_weights=weights).clamp(0, 1))
    assert np.abs(shown - expected).mean() < 0.01
    assert page.outside == []


@pytest.mark.slow
def test_browser_shows_a_clear_error(page, tmp_path):
    one = write_image(tmp_path / "lonely.png", dark_photo())
    page.get_by_role("tab", name="Fuse").click()
    page.set_input_files("#fuse-input input[type=file]", str(one))
    page.wait_for_selector('#fuse-input td.filename[aria-label="lonely.png"]')
    page.click("#fuse-button")
    toast = page.get_by_text("upload 2 to 9 frames of one scene (got 1)")
    toast.wait_for(timeout=30_000)
    assert "/tmp" not in page.inner_text("body")


@pytest.mark.slow
def test_screenshots(server, page, tmp_path):
    """Both tabs after running an example (README screenshots with LOOPEXPOSE_SCREENSHOT_DIR=docs)."""
    demo, _ = server
    if "default" not in demo.model_names:
        pytest.skip("no bundled default weights: screenshots show the default model")
    out = Path(os.environ.get("LOOPEXPOSE_SCREENSHOT_DIR") or tmp_path)
    page.locator("#correct-examples button, #correct-examples .gallery-item").first.click()
    page.wait_for_selector("#correct-input img")
    page.click("#correct-button")
    _loaded_images(page, "#correct-slider", 2)
    page.screenshot(path=str(out / "screenshot_correct.png"), full_page=True)
    page.get_by_role("tab", name="Fuse").click()
    page.locator("#fuse-examples button, #fuse-examples .gallery-item").last.click()
    page.wait_for_selector('#fuse-input td.filename[aria-label="rocket_c.png"]')
    page.click("#fuse-button")
    _loaded_images(page, "#fuse-result", 1)
    _loaded_images(page, "#fuse-corrected", 3)
    page.screenshot(path=str(out / "screenshot_fuse.png"), full_page=True)
    for name in ("screenshot_correct.png", "screenshot_fuse.png"):
        with Image.open(out / name) as shot:
            assert shot.width == 1280 and shot.height >= 900
    assert page.outside == []
