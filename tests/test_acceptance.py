"""The bundled default model against the baselines on the held-back validation scenes (the LoopExpose issue's
acceptance criteria), with the ``bracket-5`` protocol and the same split as training."""

from __future__ import annotations

import pytest

from loopexpose import evaluate
from loopexpose.data import scan_brackets, split_scenes
from loopexpose.train import DEFAULTS

pytestmark = [pytest.mark.data, pytest.mark.slow]


@pytest.fixture(scope="module")
def summary(brackets_root):
    _, val = split_scenes(scan_brackets(brackets_root, min_frames=2), DEFAULTS["data"]["val_fraction"])
    assert len(val) >= 10, "the validation split should hold about a tenth of the shared scenes"
    methods = evaluate.build_methods(["identity", "gain", "gamma", "mertens", "mertens:mertens", "model:default"])
    return evaluate.evaluate_bracket5(val, methods).summary()


def test_default_model_beats_the_mid_grey_gain_on_every_metric(summary):
    model, gain = summary["model:default"], summary["gain"]
    for metric in ("psnr", "ssim", "consistency", "mef_ssim"):
        assert model[metric] > gain[metric], metric
    assert model["psnr"] > gain["psnr"] + 1.5  # dB: not a tie within validation noise


def test_corrected_frames_agree_far_better_than_the_inputs(summary):
    assert summary["model:default"]["consistency"] > summary["identity"]["consistency"] + 6  # dB


def test_loopexpose_mef_beats_plain_mertens(summary):
    ours = summary["loopmef:default"]["mef_ssim"]
    assert ours > summary["mertens"]["mef_ssim"]  # the cv2.createMergeMertens() weights
    assert ours > summary["mertens:mertens"]["mef_ssim"]  # the paper's weights
