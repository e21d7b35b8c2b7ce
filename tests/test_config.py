"""Trainer configs, checkpoint metadata and devices are checked before anything runs: one-line
``LoopExposeError``s naming the key and what was wrong (issue 16, item 5)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import synthetic_bracket
from loopexpose import train
from loopexpose.methods.loopexpose import train as loopexpose_train
from loopexpose.errors import LoopExposeError
from loopexpose.io import write_image
from loopexpose.models import create, load, save
from loopexpose.methods.semantic.train import DEFAULTS as SEMANTIC_DEFAULTS
from loopexpose.methods.semantic.train import RULES as SEMANTIC_RULES
from loopexpose.methods.semantic.train import merged_config


def _load(tmp_path, text: str) -> dict:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return train.load_config(path)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[train]\nwarmup_epochs = "ten"', "config key train.warmup_epochs must be an integer, got the string 'ten'"),
        ('[train]\nlr = "0.01"', "config key train.lr must be a number, got the string '0.01'"),
        ("[train]\nbrackets_per_step = 2.5", "train.brackets_per_step must be an integer, got the number 2.5"),
        ("seed = true", "config key seed must be an integer, got the boolean True"),
        ("data = 5", "config key data must be a table, got the integer 5"),
        ('[data]\nroots = "x"', "config key data.roots must be a list, got the string 'x'"),
        ("[data]\nroots = [1]", r"config key data.roots\[0\] must be a string, got the integer 1"),
        ("[data]\nroots = []", "config key data.roots must not be empty"),
        ('method = "foo"', "config key method must be one of 'loopexpose', 'semantic'; got 'foo'"),
        ('[fusion]\nfeedback = "nope"', "config key fusion.feedback must be one of 'corrected\\+inputs', 'corrected'"),
        ('[fusion]\npreset = "nope"', "config key fusion.preset must be one of"),
        ('[loss]\nranking_reduction = "max"', "loss.ranking_reduction must be one of 'mean', 'sum'"),
        ("[train]\nwarmup_epochs = 0\nfeedback_epochs = 0", "warmup_epochs \\+ feedback_epochs must be at least 1"),
        ("[train]\nfeedback_epochs = -1", "config key train.feedback_epochs must be >= 0, got -1"),
        ("[train]\nlr = 0", "config key train.lr must be > 0, got 0"),
        ("[data]\nwindow = [5, 3]", r"config key data.window must be \[low, high\] with low <= high, got \[5, 3\]"),
        ("[data]\nwindow = [3, 4, 5]", "config key data.window must hold 2 values, got 3"),
        ("[data]\ncrop = 0", "config key data.crop must be >= 8, got 0"),
        ("[data]\ncrop_scale = [0, 1]", r"config key data.crop_scale must be > 0, got 0"),
        ("[data]\nval_fraction = 1.0", "config key data.val_fraction must be < 1, got 1.0"),
        ('[model]\narch = "unet"', "config key model.arch must be one of 'curvegrid'"),
        ('[model.config]\nthumb = "big"', "config key model.config.thumb must be an integer, got the string 'big'"),
        ("[model.config]\nthumbs = 3", "unknown config key 'model.config.thumbs'"),
        ("[model]\nconfig = 3", "config key model.config must be a table"),
        ("[cuda]\namp = 1", "config key cuda.amp must be true or false, got the integer 1"),
    ],
)
def test_bad_values_are_one_line_naming_the_key(tmp_path, toml, message):
    with pytest.raises(LoopExposeError, match=message) as error:
        _load(tmp_path, toml)
    assert "\n" not in str(error.value) and str(tmp_path / "config.toml") in str(error.value)


def test_good_values_pass_and_integers_become_floats(tmp_path):
    config = _load(tmp_path, "[train]\nlr = 1\n[data]\ncrop_scale = [1, 1]\n")
    assert config["train"]["lr"] == 1.0 and isinstance(config["train"]["lr"], float)
    assert config["data"]["crop_scale"] == [1.0, 1.0]
    assert train.load_config("configs/default.toml") == train.load_config(None)
    assert train.load_config("configs/semantic.toml")["method"] == "semantic"


def test_out_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "taken").write_text("")
    with pytest.raises(LoopExposeError, match="config key out_dir .* is a file"):
        train.load_config(None, {"out_dir": str(tmp_path / "taken" / "run")})
    with pytest.raises(LoopExposeError, match="config key out_dir .* is a file"):
        train.run(train.load_config(None), out_dir=tmp_path / "taken", quiet=True)


def test_run_checks_a_dict_config_before_reading_any_data(tmp_path, monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("data was read before the config was checked")

    monkeypatch.setattr(loopexpose_train, "scan_brackets", no_data)
    config = train.load_config(None, {"out_dir": str(tmp_path / "run")})
    config["fusion"]["feedback"] = "nope"
    with pytest.raises(LoopExposeError, match="fusion.feedback"):
        train.run(config, quiet=True)
    config = train.load_config(None, {"out_dir": str(tmp_path / "run")})
    config["train"]["lr"] = "fast"
    with pytest.raises(LoopExposeError, match="train.lr must be a number"):
        train.run(config, quiet=True)


def test_brackets_per_step_larger_than_the_training_set_is_a_clear_error(tmp_path, monkeypatch):
    from test_train_faults import _config  # the tiny run's settings

    root = tmp_path / "brackets"
    base = synthetic_bracket(3, 24, 32).permute(0, 2, 3, 1).numpy()
    for scene in range(3):
        for frame, ev in zip(np.roll(base, 5 * scene, axis=2), ("EV-2", "EV+0", "EV+2")):
            write_image(root / "tiny" / f"s{scene}" / f"{ev}.png", frame)
    monkeypatch.setattr(loopexpose_train.BracketDataset, "preload",
                        lambda self: pytest.fail("decoded before the check"))  # fmt: skip
    for per_step, message in ((5, "brackets_per_step = 5 is more than the 3 training brackets"),
                              (3, "brackets_per_step = 3: epoch 1 has no step")):  # fmt: skip
        config = _config(root, tmp_path / "run", brackets_per_step=per_step)
        config["data"]["val_scenes"] = []
        config["data"]["val_fraction"] = 0.0
        config["data"]["window"] = [2, 3]
        with pytest.raises(LoopExposeError, match=message):
            train.run(config, quiet=True)


def test_every_rule_names_a_real_key():
    """Rules must follow the defaults: a renamed key would otherwise lose its checks silently."""

    def keys(table: dict, prefix: str = "") -> set[str]:
        out = set()
        for key, value in table.items():
            out.add(prefix + key)
            if isinstance(value, dict):
                out |= keys(value, f"{prefix}{key}.")
        return out

    assert set(loopexpose_train.RULES) <= keys(loopexpose_train.DEFAULTS)
    assert set(SEMANTIC_RULES) <= keys(SEMANTIC_DEFAULTS)


def test_a_key_added_to_the_defaults_is_checked_with_no_other_edit(monkeypatch):
    monkeypatch.setitem(loopexpose_train.DEFAULTS["loss"], "exposure", 0.25)
    assert train.load_config(None, {"loss": {"exposure": 1}})["loss"]["exposure"] == 1.0
    with pytest.raises(LoopExposeError, match="config key loss.exposure must be a number, got the string 'high'"):
        train.load_config(None, {"loss": {"exposure": "high"}})


def test_semantic_config_refuses_wrong_types():
    assert merged_config({"train": {"steps": 5}})["train"]["steps"] == 5
    with pytest.raises(LoopExposeError, match="config key train.steps must be an integer, got the string '5'"):
        merged_config({"train": {"steps": "5"}})
    with pytest.raises(LoopExposeError, match="config key data.collections must be a list"):
        merged_config({"data": {"collections": "hdrps"}})
    with pytest.raises(LoopExposeError, match="config key data must be a table"):
        merged_config({"data": 3})


# ------------------------------------------------------------------------------ checkpoints and devices


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ([1, 2], "checkpoint metadata must be a JSON object, got a list"),
        ({"model": ["curvegrid"]}, "checkpoint metadata has no model.arch"),
        ({"model": {"arch": 3}}, "checkpoint metadata has no model.arch"),
        ({"model": {"arch": "unet"}}, "unknown architecture 'unet'"),
        ({"model": {"arch": "curvegrid", "config": [16]}}, "settings must be a table"),
        ({"model": {"arch": "curvegrid", "config": {"thumb": "128"}}}, "model.config.thumb must be an integer"),
        ({"model": {"arch": "curvegrid", "config": {"thumb": 32, "width": 4}}}, "weights do not fit curvegrid"),
    ],
)
def test_bad_checkpoint_metadata_is_one_line(tmp_path, metadata, message):
    path = save(create("curvegrid", {"thumb": 32}), tmp_path / "m.safetensors")
    (tmp_path / "m.json").write_text(json.dumps(metadata))
    with pytest.raises(LoopExposeError, match=message) as error:
        load(path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(("device", "message"), [("tpu", "unknown device 'tpu'"), ("gpu:0", "unknown device"),
                                                 ("xpu", "torch sees no xpu device")])  # fmt: skip
def test_unknown_or_absent_devices_are_one_line(device, message):
    with pytest.raises(LoopExposeError, match=message):
        load("default", device=device)
