"""`loopexpose demo`, the main job of `make demo`: real pixels in, corrected frames, fusions and a sheet out."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from loopexpose.cli import app
from loopexpose.cli.demo import EVS, render_bracket
from loopexpose.io import read_image


def test_rendered_bracket_brightens_with_ev():
    frames = render_bracket("astronaut")
    means = frames.mean(dim=(1, 2, 3))
    assert frames.shape[0] == len(EVS) and bool((means[1:] > means[:-1]).all())


def test_demo_writes_corrected_frames_fusions_and_comparison(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--photo", "astronaut"])
    assert result.exit_code == 0, result.output
    names = {p.name for p in tmp_path.iterdir()}
    assert {"comparison.png", "fused_inputs_mertens.png", "fused_loopexpose.png"} <= names
    assert not any(name.endswith(".tmp") or name.startswith(".") for name in names)  # nothing half-written
    dark_in = read_image(tmp_path / "input_N2.png").pixels
    dark_out = read_image(tmp_path / "corrected_N2.png").pixels
    bright_in = read_image(tmp_path / "input_P2.png").pixels
    bright_out = read_image(tmp_path / "corrected_P2.png").pixels
    assert dark_out.mean() > dark_in.mean() + 0.1  # the bundled model lifts the -2 EV frame
    assert bright_out.mean() < bright_in.mean()  # and tones down the +2 EV frame
    corrected = [read_image(tmp_path / f"corrected_{t}.png").pixels.mean() for t in ("N2", "N1", "0", "P1", "P2")]
    inputs = [read_image(tmp_path / f"input_{t}.png").pixels.mean() for t in ("N2", "N1", "0", "P1", "P2")]
    assert np.std(corrected) < 0.5 * np.std(inputs)  # corrected frames agree far better than the inputs
    sheet = read_image(tmp_path / "comparison.png").pixels
    assert sheet.shape[0] > 400 and sheet.shape[1] > 1000
