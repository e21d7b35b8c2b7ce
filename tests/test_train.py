"""The LoopExpose trainer: config handling, pseudo-labels of the nested loop, and a short real training run."""

from __future__ import annotations

import json

import kornia
import pytest
import torch

from conftest import randomised_curvegrid, synthetic_bracket
from loopexpose.errors import LoopExposeError
from loopexpose.models import create, load
from loopexpose.methods.loopexpose.labels import pseudo_label
from loopexpose.methods.loopexpose.train import learning_rate
from loopexpose.train import load_config, run


def test_config_defaults_and_unknown_keys(tmp_path):
    config = load_config("configs/default.toml")
    assert config["fusion"]["preset"] == "opencv" and config["model"]["arch"] == "curvegrid"
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nwarmup_epoch = 3\n")
    with pytest.raises(LoopExposeError, match="unknown config key train.'warmup_epoch'"):
        load_config(bad)
    with pytest.raises(LoopExposeError, match="no such config file"):
        load_config(tmp_path / "missing.toml")


def test_learning_rate_warms_up_then_decays():
    cfg = {"lr": 1e-3, "lr_min": 1e-5, "lr_warmup_steps": 10}
    rates = [learning_rate(step, 100, cfg) for step in range(100)]
    assert rates[0] < rates[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert learning_rate(100, 100, cfg) == pytest.approx(1e-5)


def test_pseudo_labels_change_after_warmup():
    frames = synthetic_bracket(3, 48, 64)[None]  # (1, 3, 3, H, W)
    warmup = pseudo_label(frames, "opencv")
    with torch.no_grad():
        corrected = randomised_curvegrid()(frames[0])["output"][None]
    feedback = pseudo_label(frames, "opencv", corrected, "corrected+inputs")
    only_corrected = pseudo_label(frames, "opencv", corrected, "corrected")
    assert warmup.shape == feedback.shape == (1, 3, 48, 64)
    assert (feedback - warmup).abs().mean() > 1e-3
    assert (only_corrected - feedback).abs().mean() > 1e-3
    # an identity network feeds back the inputs themselves: the label is unchanged
    assert torch.allclose(pseudo_label(frames, "opencv", frames.clone(), "corrected"), warmup, atol=1e-6)
    with pytest.raises(LoopExposeError, match="fusion.feedback"):
        pseudo_label(frames, "opencv", corrected, "inputs+corrected")


@pytest.mark.slow
def test_validation_scores_the_label_gap_at_the_labels_level_too():
    """A result that is the label exposed a quarter brighter scores low to the label, and high at its level (the
    level-free score sees tone, colour and detail; what clipped in the brighter result is lost)."""
    from loopexpose import fusion
    from loopexpose.methods.loopexpose.train import Validation

    bracket = synthetic_bracket(3)
    label = fusion.fuse(bracket, preset="opencv").clamp(0, 1)

    class Brighter(torch.nn.Module):  # every frame corrected to the label, 1.25x in linear light
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            brighter = kornia.color.rgb_to_linear_rgb(label[None]) * 1.25
            return {"output": kornia.color.linear_rgb_to_rgb(brighter.clamp(0, 1))}

    scores = Validation([bracket], [1]).score(Brighter(), "opencv")
    assert scores["val_psnr_label"] < 25
    assert scores["val_psnr_label_level"] > 45


def test_short_training_run_learns(data_root, tmp_path):
    overrides = {
        "out_dir": str(tmp_path / "run"),
        "data": {"roots": [str(data_root / "brackets/hdrps")], "max_side": 160, "crop": 96, "val_max_side": 160,
                 "val_scenes": ["hdrps/Delicate Arch", "hdrps/Willy Desk", "hdrps/Canadian Falls"]},
        "train": {"warmup_epochs": 2, "feedback_epochs": 2, "lr_warmup_steps": 5},
    }  # fmt: skip
    best = run(load_config(None, overrides), quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["warmup", "warmup", "feedback", "feedback"]
    # one synthetic bracket per training scene, rendered from its reference frame (26 = 29 scenes - 3 held back)
    assert len([p for p in (tmp_path / "run/synthetic/synth").iterdir() if p.is_dir()]) == 26
    # against the untrained network (its exposure prior alone)
    from loopexpose.data import ValidationSet, scan_brackets, split_scenes
    from loopexpose.methods.loopexpose.train import Validation

    _, val = split_scenes(scan_brackets(data_root / "brackets/hdrps"), val_scenes=overrides["data"]["val_scenes"])
    before = Validation.from_set(ValidationSet(val, max_side=160)).score(create("curvegrid"), "opencv")
    after = rows[-1]
    # The prior alone is already a gain to mid-grey in linear light, so 4 short epochs at 160 px move little: they
    # must lower the training loss and bring the corrected frames nearer their labels. Day scenes: on night scenes
    # the exposure floor (a fixed rule of the model in eval mode, not trained) lifts dark frames away from their
    # dark labels whatever the network learned.
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert after["val_psnr_label"] > before["val_psnr_label"] + 0.1
    assert after["val_chroma_added"] < 0.5
    for name in ("best", "last"):
        assert (tmp_path / f"run/{name}.safetensors").is_file() and (tmp_path / f"run/{name}.json").is_file()
    assert (tmp_path / "run/curves.png").is_file() and (tmp_path / "run/validation.png").is_file()
    assert load(best).metadata["train_config"]["train"]["warmup_epochs"] == 2


@pytest.mark.slow
def test_resume_continues_to_the_same_weights(data_root, tmp_path):
    def config(epochs: int, out: str) -> dict:
        return load_config(None, {
            "out_dir": str(tmp_path / out),
            "data": {"roots": [str(data_root / "brackets/merianos2016")], "max_side": 96, "crop": 64, "synthetic_evs": [],
                     "val_scenes": ["merianos2016/Flowers"], "val_max_side": 96},
            "train": {"warmup_epochs": 1, "feedback_epochs": epochs - 1, "brackets_per_step": 2},
        })  # fmt: skip

    run(config(2, "straight"), quiet=True)
    first = config(2, "resumed")
    first["train"]["feedback_epochs"] = 0  # stop after epoch 1, then resume with the full schedule
    run(first, quiet=True)
    run(config(2, "resumed"), resume=True, quiet=True)
    straight = load(tmp_path / "straight/last.safetensors").state_dict()
    resumed = load(tmp_path / "resumed/last.safetensors").state_dict()
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.allclose(straight[key], resumed[key], atol=1e-5), key
