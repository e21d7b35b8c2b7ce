"""The bad-input contract in every command that reads images, over one corpus of malformed files.

The contract (README): bad input never gives a traceback; one line names the file and the problem; the batch goes
on; the exit code says whether anything failed; nothing is half-written and no temporary file is left. The corpus
(``malformed.py``) is generated here: zero-byte, truncated at several offsets, wrong extension, a decompression-bomb
header, CMYK, 16-bit, float and signed TIFFs, palette, animated, 1x1, 4000x2, odd names with quotes, brackets and
unicode. Commands run in this process (CliRunner), except where the console entry point itself is under test.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import randomised_curvegrid
from loopexpose.cli import app
from loopexpose.errors import LoopExposeError
from loopexpose.io import MAX_PIXELS_ENV
from malformed import Case, corpus, photo, png_header_only, write_corpus

CASES = corpus()
GOOD = [c for c in CASES if c.ok]
BAD = [c for c in CASES if not c.ok]
DECODER_NOISE = ("Corrupt JPEG", "premature end", "libpng", "Warning", "Traceback", "DecompressionBomb")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from loopexpose.models import save

    return str(save(randomised_curvegrid(), tmp_path_factory.mktemp("model") / "random.safetensors"))


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "400"})  # wide: table cells are not folded
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback: the contract is broken
    return result


def error_lines(text: str, label: str = "error:") -> list[str]:
    return [line for line in text.splitlines() if line.startswith(label)]


def assert_one_line_per_bad(lines: list[str], bad: list[Case], label: str = "error:") -> None:
    """Exactly one line per bad case, naming it (and its problem when the case says which)."""
    assert len(lines) == len(bad), "\n".join(lines)
    for case in bad:
        named = [line for line in lines if case.name in line]
        assert len(named) == 1, (case.name, lines)
        assert case.error in named[0], (case.error, named[0])


def assert_no_temp_files(folder: Path) -> None:
    leftovers = [p for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert not leftovers, leftovers


def test_corpus_is_what_it_claims(tmp_path):
    from loopexpose.io import read_image

    write_corpus(tmp_path)
    assert len(CASES) == len({c.name for c in CASES}) and len(BAD) >= 20 and len(GOOD) >= 15
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK" and Image.open(tmp_path / "palette.png").mode == "P"
    assert getattr(Image.open(tmp_path / "animated.png"), "n_frames", 1) == 3
    assert read_image(tmp_path / "float16.tif").pixels == pytest.approx(read_image(tmp_path / "rgb16.png").pixels, abs=1e-3)


# ------------------------------------------------------------------------------------------------ correct

def test_correct_over_the_corpus(model_path, tmp_path, capfd, recwarn):
    inputs = tmp_path / "in"
    write_corpus(inputs)
    out = tmp_path / "out"
    result = invoke("correct", str(inputs), "-o", str(out), "--model", model_path, "--json")
    assert result.exit_code == 2
    assert_one_line_per_bad(error_lines(result.stderr), BAD)
    summary = json.loads(result.stdout)
    assert (summary["ok"], summary["failed"]) == (len(GOOD), len(BAD))
    written = {p.name for p in out.iterdir()}
    assert written == {f"{Path(c.name).stem}_loopexpose{Path(c.name).suffix}" for c in GOOD}
    assert_no_temp_files(out)
    stray = capfd.readouterr().err  # what C decoders would print on the real stderr
    assert not any(noise in stray for noise in DECODER_NOISE), stray
    assert not [w for w in recwarn if "PIL" in w.filename or "tifffile" in w.filename or "loopexpose" in w.filename]


def test_max_pixels_is_configurable_and_refuses_in_one_line(model_path, tmp_path, recwarn):
    (tmp_path / "small.png").write_bytes(_png(photo(24, 32)))
    (tmp_path / "bomb.png").write_bytes(png_header_only(20000, 20000))
    (tmp_path / "medium_format.png").write_bytes(png_header_only(12000, 12000))  # 144 MP: under the default
    out = tmp_path / "out"
    result = invoke("correct", str(tmp_path / "small.png"), "-o", str(out), "--model", model_path, "--max-pixels", "700")
    assert result.exit_code == 2
    (line,) = error_lines(result.stderr)
    assert "small.png: image is 32x24 (0.0 MP); the limit is 0.0 MP" in line and "--max-pixels" in line
    os.environ.pop(MAX_PIXELS_ENV)  # the option holds for the process (and its workers): back to the default
    result = invoke("correct", str(tmp_path / "bomb.png"), str(tmp_path / "medium_format.png"), str(tmp_path / "small.png"),
                    "-o", str(out), "--model", model_path)  # fmt: skip
    assert result.exit_code == 2 and (out / "small_loopexpose.png").is_file()
    bomb, medium = error_lines(result.stderr)
    assert "bomb.png: image is 400.0 MP; the limit is 179.0 MP" in bomb
    assert "medium_format.png" in medium and "limit" not in medium  # read (and found damaged), not refused
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
    result = invoke("scenes", str(tmp_path), "--max-pixels", "0")  # no limit: the bomb header is read as damaged
    assert "limit" not in result.stderr and "bomb.png" in result.stderr
    with pytest.raises(LoopExposeError, match="must be >= 0"):
        invoke("scenes", str(tmp_path), "--max-pixels", "-1")


def _png(pixels: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------ fuse and scenes

def _one_scene_per_case(root: Path) -> None:
    for case in CASES:
        write_corpus(root / case.name.replace(".", "_"), [case])


def test_fuse_over_the_corpus(tmp_path, capfd):
    _one_scene_per_case(tmp_path / "scenes")
    out = tmp_path / "out"
    result = invoke("fuse", str(tmp_path / "scenes"), "-o", str(out))
    assert result.exit_code == 2
    assert_one_line_per_bad(error_lines(result.stderr), BAD)
    assert {p.name for p in out.iterdir()} == {c.name.replace(".", "_") + ".png" for c in GOOD}
    assert f"fused {len(GOOD)} scene(s)" in result.stderr and f"{len(BAD)} failed" in result.stderr
    assert_no_temp_files(out)
    assert not any(noise in capfd.readouterr().err for noise in DECODER_NOISE)


def test_scenes_over_the_corpus(tmp_path):
    _one_scene_per_case(tmp_path / "scenes")
    result = invoke("scenes", str(tmp_path / "scenes"), "--files")
    assert result.exit_code == 2
    # `scenes` reads headers and thumbnails only: a JPEG damaged inside its pixel data is caught by the commands
    # that decode it in full (correct, fuse, eval, prepare), not here.
    bad = [c for c in BAD if c.name != "jpeg_cut_eoi.jpg"]
    assert_one_line_per_bad(error_lines(result.stderr), bad)
    assert f"{len(CASES) - len(bad)} scene(s)" in result.stdout
    assert "[red]x[oops] [raw].png" in result.stdout  # listed as named, not eaten as markup


# ------------------------------------------------------------------------------------------- fuse contract

@pytest.fixture()
def three_scenes(tmp_path):
    root = tmp_path / "scenes"
    for name in ("a", "b [1]", "c"):
        (root / name).mkdir(parents=True)
        for index, seed in enumerate((0, 1)):
            Image.fromarray((photo(16, 20, seed) * (0.4 + index)).clip(0, 255).astype(np.uint8)).save(
                root / name / f"f{index}.png"
            )
    return root


def test_fuse_missing_and_empty_scenes_do_not_stop_the_others(three_scenes, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    result = invoke("fuse", str(three_scenes / "a"), str(tmp_path / "missing"), str(empty), str(three_scenes / "c"),
                    "-o", str(out))  # fmt: skip
    assert result.exit_code == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 2 and "missing: no such folder" in lines[0] and "empty: no images" in lines[1]
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]


def test_fuse_output_problems_are_per_scene_or_one_line(three_scenes, tmp_path, monkeypatch):
    import loopexpose.io as io

    out = tmp_path / "out"
    (out / "b [1].png").mkdir(parents=True)  # a folder where one output goes
    result = invoke("fuse", str(three_scenes), "-o", str(out))
    assert result.exit_code == 2
    (line,) = error_lines(result.stderr)
    assert "b [1]" in line and "is a folder" in line
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b [1].png", "c.png"]

    as_file = tmp_path / "file.png"
    as_file.write_bytes(b"x")
    with pytest.raises(LoopExposeError, match="output folder is a file"):  # one line and exit 2 from main()
        invoke("fuse", str(three_scenes), "-o", str(as_file))

    real_fdopen = os.fdopen

    def full_disk(fd, *args, **kwargs):  # the temp file opens, then every write fails as on a full disk
        handle = real_fdopen(fd, *args, **kwargs)

        def write(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        handle.write = write
        return handle

    for name, fault in (("full", full_disk), ("read-only", None)):
        target = tmp_path / f"out-{name}"
        target.mkdir()
        with monkeypatch.context() as patch:
            if fault is not None:
                patch.setattr(io, "os", SimpleNamespace(**{**vars(os), "fdopen": fault}))
            else:  # as root, chmod does not stop writes: refuse the temp file as a read-only folder would
                denied = _raise(PermissionError(errno.EACCES, os.strerror(errno.EACCES)))
                patch.setattr(io, "tempfile", SimpleNamespace(**{**vars(tempfile), "mkstemp": denied}))
            result = invoke("fuse", str(three_scenes), "-o", str(target))
        assert result.exit_code == 2, name
        lines = error_lines(result.stderr)
        assert len(lines) == 3 and all(("No space left" if fault else "Permission denied") in x for x in lines), lines
        assert list(target.iterdir()) == [], name  # nothing half-written, no temp file left


def _raise(exc: Exception):
    def fail(*args, **kwargs):
        raise exc

    return fail


def test_fuse_never_writes_over_a_frame(three_scenes):
    scene = three_scenes / "a"
    Image.fromarray(photo(16, 20)).save(scene / "a.png")
    result = invoke("fuse", str(scene), "-o", str(scene))
    assert result.exit_code == 2 and "would overwrite a frame" in result.stderr


# ------------------------------------------------------------------------------------------------- eval

def test_eval_leaves_out_bad_scenes_only(tmp_path):
    root = tmp_path / "collection"
    good = [c for c in GOOD if c.name in ("plain.jpg", "cmyk.jpg", "rgb16.png", "palette.png", "float32.tif")]
    write_corpus(root / "formats", good)
    write_corpus(root / "odd [names]", [c for c in GOOD if c.name.startswith(("it's", "[red]", "ünï"))])
    bad = [c for c in BAD if c.name in ("empty.png", "bomb.png", "int16.tif", "jpeg_cut_eoi.jpg", "cut60.png")]
    for case in bad:
        write_corpus(root / f"bad {case.name}", [good[0], good[1], case])
    out = tmp_path / "report"
    result = invoke("eval", str(root), "-m", "identity", "--max-side", "64", "--no-gallery", "-o", str(out))
    assert result.exit_code == 2
    assert_one_line_per_bad(error_lines(result.stderr), bad)
    report = json.loads((out / "report.json").read_text())
    assert sorted(s["scene"] for s in report["scenes"]) == ["collection/formats", "collection/odd [names]"]


def test_eval_default_methods_include_the_model():
    from loopexpose.evaluate import DEFAULT_METHODS, build_methods

    assert "model:default" in DEFAULT_METHODS
    assert "model:default" in [m.name for m in build_methods(DEFAULT_METHODS)]


# ---------------------------------------------------------------------------------------------- prepare

def test_prepare_srgb_over_the_corpus(tmp_path):
    write_corpus(tmp_path / "photos")
    out = tmp_path / "out"
    result = invoke("prepare", "srgb", str(tmp_path / "photos"), "-o", str(out), "--workers", "1", "--ev", "-1", "0")
    assert result.exit_code == 1  # prepare's documented failure code
    assert_one_line_per_bad(error_lines(result.stderr, "failed:"), BAD, "failed:")
    assert f"{len(GOOD)} scene(s) written" in result.stderr
    assert_no_temp_files(out)


# ---------------------------------------------------------------------------------------------- web app

@pytest.fixture()
def web(tmp_path):
    from loopexpose.app import WebDemo

    demo = WebDemo(models={"random": randomised_curvegrid()}, workdir=tmp_path / "web")
    yield demo
    demo.close()


def test_web_handlers_over_the_corpus(web, caplog):
    gr = pytest.importorskip("gradio")
    from loopexpose.app import handle_correct, handle_fuse

    folder = web.uploads / "0123abcd"  # where Gradio puts an upload
    write_corpus(folder)
    good_frame = {"path": str(folder / "plain.jpg"), "orig_name": "plain.jpg"}
    for case in CASES:
        payload = {"path": str(folder / case.name), "orig_name": case.name}  # Gradio's FileData, unprocessed
        caplog.clear()
        if case.ok:
            (before, after), report, _ = handle_correct(web, payload, "random")
            assert before.shape == after.shape and "corrected" in report
            continue
        for handler, args in ((handle_correct, (payload,)), (handle_fuse, ([good_frame, payload],))):
            with pytest.raises(gr.Error) as info:
                handler(web, *args, "random")
            message = info.value.message
            expected = "too large" if case.name == "bomb.png" else case.error
            assert message.startswith(f"{case.name}: ") and expected in message, message
            assert str(web.workdir) not in message and "/tmp" not in message and not info.value.print_exception
        records = [r for r in caplog.records if r.name == "loopexpose.app"]
        assert len(records) == 2 and all(r.exc_info is None and "\n" not in r.getMessage() for r in records)


def test_web_bug_is_logged_with_traceback_but_shown_without_paths(web, caplog):
    gr = pytest.importorskip("gradio")
    from loopexpose.app import handle_correct

    class Broken:
        def correct(self, image):
            raise RuntimeError(f"boom in {web.workdir}/secret")

    web.models["broken"] = Broken()
    Image.fromarray(photo()).save(web.uploads / "ok.png")
    with pytest.raises(gr.Error) as info:
        handle_correct(web, str(web.uploads / "ok.png"), "broken")
    assert "internal error" in info.value.message and str(web.workdir) not in info.value.message
    assert any(r.exc_info is not None for r in caplog.records if r.name == "loopexpose.app")


def test_serve_refuses_a_busy_port_in_one_line():
    from loopexpose.cli.serve import check_port

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(LoopExposeError, match=f"port {port} on 127.0.0.1 is in use; choose another with --port"):
            check_port("127.0.0.1", port)
    with pytest.raises(LoopExposeError, match="--port must be 1..65535"):
        check_port("127.0.0.1", 70000)


# ------------------------------------------------------------------------------ the console entry point

def _entry(*args: str, **kwargs) -> subprocess.Popen:
    """The command line in a child process that starts as from a terminal: Ctrl-C (SIGINT) at its default even
    when the suite itself runs with SIGINT ignored (a background job of a non-interactive shell, ``make test &``):
    an ignored signal is inherited across exec, and Python then keeps ignoring it."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONWARNINGS": ""}
    return subprocess.Popen([sys.executable, "-m", "loopexpose", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, preexec_fn=_default_interrupt, **kwargs)  # fmt: skip


def _default_interrupt() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_markup_in_errors_is_printed_verbatim(tmp_path):
    from io import StringIO

    from rich.console import Console

    from loopexpose.cli.app import print_error

    buffer = StringIO()
    print_error("rawpy is missing: pip install 'loopexpose[raw]'", Console(file=buffer, width=200))
    assert buffer.getvalue() == "error: rawpy is missing: pip install 'loopexpose[raw]'\n"
    process = _entry("correct", str(tmp_path / "x.jpg"), "-o", str(tmp_path / "out"), "--model", "[/oops] [bold]")
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 2 and "Traceback" not in stderr
    assert stderr.strip() == "error: unknown model '[/oops] [bold]': not a bundled name (default, semantic) nor a " \
                             ".safetensors file"


def test_help_and_scenes_never_import_torch(tmp_path):
    Image.fromarray(photo()).save(tmp_path / "a.png")
    probe = (
        "import sys\nfrom loopexpose.cli import main\nsys.argv = ['loopexpose', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO TORCH', file=sys.stderr)\n"
    )
    for args in (["--help"], ["correct", "--help"], ["fuse", "--help"], ["prepare", "srgb", "--help"],
                 ["scenes", str(tmp_path)]):  # fmt: skip
        result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60)
        assert result.stderr.strip().endswith("NO TORCH"), (args, result.stderr[-500:])
        assert "Usage" in result.stdout or "luminance" in result.stdout or "single" in result.stdout, args


def test_ctrl_c_says_how_far_it_got_and_exits_130(model_path, tmp_path):
    for name in ("a", "b", "d"):
        Image.fromarray(photo(16, 16)).save(tmp_path / f"{name}.png")
    os.mkfifo(tmp_path / "c.png")  # reading it blocks: the batch is deterministically stuck at file 3 of 4
    out = tmp_path / "out"
    files = [str(tmp_path / f"{name}.png") for name in "abcd"]
    process = _entry("correct", *files, "-o", str(out), "--model", model_path, "--json")
    deadline = time.monotonic() + 90
    while not (out / "b_loopexpose.png").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted: 2 of 4 done" in stderr and "Traceback" not in stderr
    statuses = [row["status"] for row in json.loads(stdout)["files"]]
    assert statuses[:2] == ["ok", "ok"] and statuses[3] == "not done"
    assert sorted(p.name for p in out.iterdir()) == ["a_loopexpose.png", "b_loopexpose.png"]


def test_ctrl_c_during_start_up_is_not_a_traceback():
    # Ctrl-C while the command modules are imported (the start-up), made deterministic by an import hook
    probe = (
        "import sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'loopexpose.cli.scenes':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "from loopexpose.cli import main\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", probe, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 130 and result.stderr == "interrupted\n", result.stderr
