"""Bad input through the real console entry point: one line naming the file, exit code 2, no traceback."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "loopexpose", *args], capture_output=True, text=True, env=env, timeout=120
    )


def _frame(path: Path, level: int) -> None:
    Image.fromarray(np.full((12, 16, 3), level, np.uint8)).save(path)


def _assert_one_line_error(result: subprocess.CompletedProcess, needle: str) -> None:
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 2, output
    assert "Traceback" not in output
    assert len(output.splitlines()) == 1, output
    assert output.startswith("error:") and needle in output, output


def test_missing_path(tmp_path):
    _assert_one_line_error(_run("scenes", str(tmp_path / "no such dir")), str(tmp_path / "no such dir"))


def test_empty_folder(tmp_path):
    result = _run("scenes", str(tmp_path))
    _assert_one_line_error(result, str(tmp_path))
    assert "no images" in result.stderr


@pytest.mark.parametrize(
    ("name", "payload", "problem"),
    [
        ("notes.jpg", b"this is a text file, not a JPEG\n", "not an image"),
        ("cut.jpg", None, "truncated"),
        ("cut.png", None, "truncated or corrupt"),
    ],
)
def test_corrupt_file_in_scene_with_awkward_name(tmp_path, name, payload, problem):
    scene = tmp_path / "Ben&Jerry's [Devil's] (1)"
    scene.mkdir()
    _frame(scene / "a.png", 40)
    if payload is None:  # a real image cut in half
        buffer = io.BytesIO()
        noise = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
        Image.fromarray(noise).save(buffer, format="JPEG" if name.endswith(".jpg") else "PNG")
        payload = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    (scene / name).write_bytes(payload)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = _run("scenes", str(tmp_path))
    _assert_one_line_error(result, str(scene / name))
    assert problem in result.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written, nothing half-written


def test_good_scene_lists_rule(tmp_path):
    scene = tmp_path / "Ben&Jerry's (2)"
    scene.mkdir()
    for name, level in [("x_over.png", 200), ("x_under.png", 30), ("x_normal.png", 110)]:
        _frame(scene / name, level)
    result = _run("scenes", str(tmp_path), "--files")
    assert result.returncode == 0, result.stderr
    assert "Ben&Jerry's (2)" in result.stdout and "filename" in result.stdout
    assert "x_under.png, x_normal.png, x_over.png" in result.stdout
