"""Evaluation protocols, methods and reports, on small synthetic scenes (and two real ones when present)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import synthetic_bracket
from loopexpose import evaluate as ev
from loopexpose.errors import LoopExposeError
from loopexpose.brackets import order_bracket
from loopexpose.io import to_numpy, write_image


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Two scenes of 7 frames (-2..+2 EV, 72x96 PNG) in a collection folder."""
    root = tmp_path_factory.mktemp("brackets") / "synthetic"
    for index, size in enumerate([(72, 96), (64, 88)]):
        frames = synthetic_bracket(7, *size, seed=index)
        for k, frame in enumerate(frames):
            write_image(root / f"scene {index}" / f"f{k:02d}.png", to_numpy(frame))
    return root


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from loopexpose.models import create, save

    torch.manual_seed(0)
    return save(create("curvegrid"), tmp_path_factory.mktemp("model") / "untrained.safetensors")


def test_select_window_centres_on_mid_grey_and_stays_inside():
    assert ev.select_window([0.1, 0.2, 0.3, 0.46, 0.6, 0.7, 0.8]) == (1, 3)
    assert ev.select_window([0.46, 0.6, 0.7, 0.8, 0.9, 0.95]) == (0, 0)
    assert ev.select_window([0.05, 0.1, 0.2, 0.3, 0.4, 0.47]) == (1, 5)
    assert ev.select_window([0.2, 0.5, 0.9]) == (0, 1)


def test_build_methods_names_and_errors(model_path):
    methods = ev.build_methods(["identity", "gain", "mertens-cv2", "mertens:mertens", f"model:{model_path}"])
    names = [m.name for m in methods]
    assert names[-4:] == [f"model:{model_path}", *(f"loopmef{kind}:{model_path}" for kind in ("", "-plain", "-corrected"))]
    assert methods[0].baseline and not methods[2].baseline
    with pytest.raises(LoopExposeError, match="unknown method"):
        ev.build_methods(["nope"])
    with pytest.raises(LoopExposeError, match="unknown fusion preset"):
        ev.build_methods(["mertens:foo"])
    with pytest.raises(LoopExposeError, match="twice"):
        ev.build_methods(["gain", "gain"])


def test_opencv_mertens_matches_ours():
    bracket = synthetic_bracket(3, 40, 56)
    ours = ev.build_methods(["mertens:opencv"])[0].run(bracket)
    theirs = ev.build_methods(["mertens-cv2"])[0].run(bracket)
    assert (ours - theirs).abs().max() < 0.01


def test_bracket5_protocol(scenes, model_path):
    methods = ev.build_methods(["identity", "gain", "mertens", "mertens-detail", f"model:{model_path}"])
    seen = []
    results = ev.evaluate_bracket5(sorted(scenes.iterdir()),
                                   methods, max_side=64, on_scene=lambda key, *rest: seen.append(key))
    assert [s["scene"] for s in results.scenes] == ["synthetic/scene 0", "synthetic/scene 1"] == seen
    assert all(s["window"][1] - s["window"][0] == 4 for s in results.scenes)
    summary = results.summary()
    assert {"psnr", "ssim", "consistency", "mef_ssim", "psnr_label"} <= set(summary["identity"])
    assert set(summary["mertens"]) == {"mef_ssim"}
    # the untrained CurveGrid applies its exposure prior (each frame's median to mid-grey in linear light):
    # nearer the reference and more alike than the inputs; its LoopExpose MEF keeps the inputs' detail
    model = summary[f"model:{model_path}"]
    assert model["psnr"] > summary["identity"]["psnr"] + 2 and model["consistency"] > summary["identity"]["consistency"] + 2
    assert summary[f"loopmef:{model_path}"]["mef_ssim"] == pytest.approx(summary["mertens-detail"]["mef_ssim"], abs=0.03)
    # gain brings the frames nearer the mid-grey reference than doing nothing
    assert summary["gain"]["psnr"] > summary["identity"]["psnr"]
    assert summary["mertens"]["mef_ssim"] > 0.8
    offsets = {r["offset"] for r in results.frame_rows if r["method"] == "identity"}
    assert len(offsets) == 5 and 0 in offsets
    reference_rows = [r for r in results.frame_rows if r["offset"] == 0]
    assert all(r["psnr"] is None for r in reference_rows)
    # the label gap: the fusion of the inputs, scored against every frame, the reference included
    assert all(isinstance(r["psnr_label"], float) for r in results.frame_rows if r["method"] == "gain")
    by_offset = results.by_offset("psnr_label")["identity"]
    assert set(by_offset) == offsets and by_offset[-2] < by_offset[0]  # the darkest input is far from the label
    # identity adds no chroma anywhere; frames without bright pixels have no value (None), not 0
    chroma = [r["chroma_added"] for r in results.frame_rows if r["method"] == "identity"]
    assert all(c is None or c == pytest.approx(0, abs=1e-4) for c in chroma) and any(c is not None for c in chroma)


def test_report_is_written_and_deterministic(scenes, tmp_path):
    methods = ev.build_methods(["identity", "gain", "mertens-cv2"])
    outputs = []
    for run in ("a", "b"):
        out = tmp_path / run
        gallery = ev.Gallery(out)
        results = ev.evaluate_bracket5(sorted(scenes.iterdir()), methods, max_side=64, on_scene=gallery)
        ev.write_report(results, out, command="loopexpose eval x", gallery=gallery)
        outputs.append({p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()})
    assert outputs[0] == outputs[1]
    files = {str(p) for p in outputs[0]}
    assert {"report.md", "report.json", "per_scene.csv", "per_frame.csv", "plots/bar_psnr.png",
            "plots/psnr_vs_ev.png", "gallery/index.html"} <= files  # fmt: skip
    report = outputs[0][next(p for p in outputs[0] if str(p) == "report.md")].decode()
    assert "| gain (baseline) | SEC |" in report and "Simple baselines" in report
    payload = json.loads(outputs[0][next(p for p in outputs[0] if str(p) == "report.json")])
    assert payload["summary"]["gain"]["psnr"] > payload["summary"]["identity"]["psnr"]
    assert payload["chroma_added_frames"]["identity"]["p90"] == pytest.approx(0, abs=1e-4)
    assert "highlight chroma added" in report and "PSNR (dB) vs label by input EV" in report
    assert not any(p.name.endswith(".tmp") for p in outputs[0])


def test_window_cache_returns_same_frames(scenes):
    bracket = order_bracket(scenes / "scene 0")
    first, start, reference = ev.load_window(bracket, 64)
    again, *_ = ev.load_window(bracket, 64)
    assert torch.equal(first, again) and first.shape[0] == 5 and start <= reference < start + 5


def test_paired_protocol(tmp_path):
    frames = synthetic_bracket(5, 48, 64)
    for ev_tag, frame in zip(["N1.5", "N1", "0", "P1", "P1.5"], frames):
        write_image(tmp_path / "input" / f"a0001_{ev_tag}.png", to_numpy(frame))
    write_image(tmp_path / "gt" / "a0001.png", to_numpy(frames[2]))
    pairs = ev.find_pairs(tmp_path)
    assert [p.ev for p in pairs] == sorted(p.ev for p in pairs) or len(pairs) == 5
    results = ev.evaluate_paired(pairs, ev.build_methods(["identity", "gain"]), max_side=0)
    rows = {(r["method"], r["offset"]): r for r in results.frame_rows}
    assert rows[("identity", 0.0)]["psnr"] == 100.0 and rows[("identity", 0.0)]["ciede2000"] == 0.0
    assert rows[("identity", -1.5)]["psnr"] < rows[("identity", -1.0)]["psnr"]
    from loopexpose.perceptual import package_weights

    if package_weights() is not None:  # ST-LPIPS rides along when its weights are installed
        assert rows[("identity", 0.0)]["stlpips"] == pytest.approx(0.0, abs=1e-6)
        assert rows[("identity", -1.5)]["stlpips"] > rows[("identity", -1.0)]["stlpips"] > 0
    with pytest.raises(LoopExposeError, match="fusion"):
        ev.evaluate_paired(pairs, ev.build_methods(["mertens"]))
    (tmp_path / "gt" / "a0001.png").unlink()
    with pytest.raises(LoopExposeError, match="no ground truth"):
        ev.find_pairs(tmp_path)


def test_cli_eval(scenes, tmp_path):
    from typer.testing import CliRunner

    from loopexpose.cli import app

    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["eval", str(scenes), "-m", "identity,gain", "-m", "mertens",
                                      "--max-side", "64", "--scenes", "scene 1", "-o", str(out), "--no-gallery"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "gain" in result.output and (out / "report.md").is_file()
    assert json.loads((out / "report.json").read_text())["scenes"][0]["scene"] == "synthetic/scene 1"
    bad = CliRunner().invoke(app, ["eval", str(scenes), "-m", "nope", "-o", str(out)])
    assert isinstance(bad.exception, LoopExposeError)


@pytest.mark.slow
@pytest.mark.data
def test_bracket5_on_real_hdrps(brackets_root):
    scenes = sorted((brackets_root / "hdrps").iterdir())
    scenes = [s for s in scenes if s.is_dir()][:2]
    results = ev.evaluate_bracket5(scenes, ev.build_methods(["identity", "gain", "mertens"]), max_side=256)
    summary = results.summary()
    assert summary["gain"]["psnr"] > summary["identity"]["psnr"]
    fused = {r["scene"]: r["mef_ssim"] for r in results.scene_rows if r["method"] == "mertens"}
    for scene in results.scenes:  # the darkest frame of each window scores below the fusion
        darkest = [r["mef_ssim"] for r in results.frame_rows
                   if r["method"] == "identity" and r["scene"] == scene["scene"] and r["frame"] == scene["window"][0]]  # fmt: skip
        assert fused[scene["scene"]] > darkest[0]


def test_per_collection_summary(scenes, tmp_path):
    results = ev.evaluate_bracket5(sorted(scenes.iterdir()), ev.build_methods(["identity"]), max_side=64)
    results.scenes[1]["scene"] = "other/scene 1"
    for row in results.scene_rows:
        row["scene"] = row["scene"].replace("synthetic/scene 1", "other/scene 1")
    assert results.collections() == ["other", "synthetic"]
    per = [results.summary(c)["identity"]["psnr"] for c in results.collections()]
    assert results.summary()["identity"]["psnr"] == pytest.approx(sum(per) / 2)
    report = ev.write_report(results, tmp_path).read_text()
    assert "`other` (1 scenes)" in report
