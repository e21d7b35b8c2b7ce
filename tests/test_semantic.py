"""Semantic-aware model: shapes, scan forms, regions, pseudo-labels, CLIP path with a tiny local model, training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import synthetic_bracket
from loopexpose.models import create, load, save
from loopexpose.methods.semantic.losses import region_consistency_loss, segmentation_agreement
from loopexpose.methods.semantic.labels import pseudo_label
from loopexpose.methods.semantic.recogniser import ExposureRecogniser, bracket_region_labels, train_recogniser
from loopexpose.methods.semantic.regions import superpixel_regions
from loopexpose.methods.semantic.scan import selective_scan_parallel, selective_scan_sequential


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = create("semantic", {"work_side": 48, "width": 8})
    torch.nn.init.normal_(net.head.weight, std=0.05)  # not the identity, so outputs depend on the network
    return net.eval()


@pytest.mark.parametrize("size", [(37, 53), (5, 7), (64, 31), (1, 9)])
def test_shapes_for_odd_sizes(model, size):
    x = torch.rand(2, 3, *size)
    out = model(x)
    assert out["output"].shape == x.shape
    assert out["output"].min() >= 0 and out["output"].max() <= 1
    assert out["masks"].shape[1] == model.config.regions and out["masks"].shape[-2:] == out["alpha"].shape[-2:]
    assert torch.allclose(out["masks"].sum(1), torch.ones(1))


def test_identity_at_initialisation():
    x = torch.rand(1, 3, 20, 30)
    assert torch.allclose(create("semantic", {"work_side": 32, "width": 8})(x)["output"], x, atol=1e-6)


def test_large_input_is_corrected_through_a_thumbnail(model):
    x = torch.rand(1, 3, 97, 131)
    out = model(x)
    assert max(out["alpha"].shape[-2:]) == 48 and out["output"].shape == x.shape


@pytest.mark.parametrize("length", [1, 7, 64, 100])
def test_scan_parallel_matches_sequential(length):
    g = torch.Generator().manual_seed(length)
    u, delta = torch.randn(2, length, 5, generator=g), torch.rand(2, length, 5, generator=g) * 2
    A = -torch.rand(5, 3, generator=g) * 3
    B, C = torch.randn(2, length, 3, generator=g), torch.randn(2, length, 3, generator=g)
    D = torch.randn(5, generator=g)
    u.requires_grad_(True)
    fast = selective_scan_parallel(u, delta, A, B, C, D)
    slow = selective_scan_sequential(u, delta, A, B, C, D)
    assert torch.allclose(fast, slow, atol=1e-4, rtol=1e-4)
    (grad_fast,) = torch.autograd.grad(fast.square().sum(), u)
    (grad_slow,) = torch.autograd.grad(slow.square().sum(), u)
    assert torch.allclose(grad_fast, grad_slow, atol=1e-3, rtol=1e-3)


def test_superpixel_masks_are_one_hot_and_ordered_by_brightness():
    x = torch.zeros(1, 3, 30, 40)
    x[..., :, 20:] = 0.9  # bright right half
    masks = superpixel_regions(x, regions=4)
    assert masks.shape == (1, 4, 30, 40) and torch.equal(masks.sum(1), torch.ones(1, 30, 40))
    present = [k for k in range(4) if masks[0, k].sum() > 0]
    assert masks[0, present[-1], :, :20].sum() == 0 and masks[0, present[-1]].sum() > 0  # brightest: right half
    assert masks[0, present[0], :, 20:].sum() == 0  # darkest first: left half
    assert segmentation_agreement(masks, masks).item() == pytest.approx(1.0)


def test_bracket_labels_follow_exposure_order():
    bracket = synthetic_bracket(5, 24, 32)
    masks = torch.ones(1, 24, 32)
    frame_labels, region_labels = bracket_region_labels(bracket, masks, margin=0)
    assert frame_labels[0] == 0 and frame_labels[-1] == 2 and (frame_labels == 1).sum() == 1
    assert torch.equal(region_labels[:, 0], frame_labels)


class LumaOracle(torch.nn.Module):
    """A recogniser that knows the answer: p(well) peaks at mid-grey, under below, over above."""

    def _logits(self, mean):
        return torch.stack([(0.45 - mean) * 20, -((mean - 0.45).abs()) * 20 + 1, (mean - 0.45) * 20], -1)

    def region_logits(self, x, masks):
        luma = x.mean(1)
        return self._logits(torch.einsum("bkhw,bhw->bk", masks, luma) / masks.sum((-2, -1)).clamp(min=1))

    def global_logits(self, x):
        return self._logits(x.mean((1, 2, 3)))


def _dark_and_bright():
    bracket = synthetic_bracket(5, 32, 48)
    return bracket[:1], bracket[-1:]


def test_pseudo_label_moves_dark_brighter_and_bright_darker_with_an_oracle():
    dark, bright = _dark_and_bright()
    for frame, sign in ((dark, 1), (bright, -1)):
        masks = superpixel_regions(frame, 4)
        target, gamma = pseudo_label(frame, masks, LumaOracle())
        assert sign * (target.mean() - frame.mean()) > 0.05
        assert target.shape == frame.shape and 0 <= target.min() and target.max() <= 1


def test_pseudo_label_with_the_trained_cnn_recogniser():
    torch.manual_seed(0)
    frames, masks, frame_labels, region_labels = [], [], [], []
    for h, w in ((32, 48), (40, 40)):
        bracket = synthetic_bracket(7, h, w)[:, :, :32, :32]
        m = superpixel_regions(bracket[3:4], 4)[0]
        f, r = bracket_region_labels(bracket, m, margin=0)
        frames.append(bracket), masks.append(m.expand(7, -1, -1, -1)), frame_labels.append(f), region_labels.append(r)
    recogniser = ExposureRecogniser(width=8)
    losses = train_recogniser(recogniser, torch.cat(frames), torch.cat(masks), torch.cat(frame_labels),
                              torch.cat(region_labels), steps=80, batch=8, lr=5e-3)  # fmt: skip
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    dark, bright = _dark_and_bright()
    for frame, sign in ((dark, 1), (bright, -1)):
        target, _ = pseudo_label(frame, superpixel_regions(frame, 4), recogniser)
        assert sign * (target.mean() - frame.mean()) > 0.02


def test_region_consistency_penalises_swapped_regions():
    x = torch.zeros(1, 3, 8, 8)
    x[..., 4:] = 0.8
    x = x + torch.rand(1, 1, 8, 8) * 0.1
    masks = superpixel_regions(x, 2)
    assert region_consistency_loss(x, x, masks) < 1e-3
    assert region_consistency_loss(1 - x, x, masks) > 0.5


def _tiny_clip_folder(path):
    transformers = pytest.importorskip("transformers")
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz-"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in letters:
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"), pad_token="<|endoftext|>")
    config = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 32, "eos_token_id": 1, "bos_token_id": 0,
                     "pad_token_id": 1},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=8,
    )  # fmt: skip
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    del transformers
    return path


def test_clip_path_runs_with_a_tiny_local_model(tmp_path):
    from loopexpose.methods.semantic.losses import prompt_alignment_loss
    from loopexpose.methods.semantic.recogniser import load_clip

    recogniser = load_clip(_tiny_clip_folder(tmp_path))
    x = torch.rand(2, 3, 24, 36)
    masks = superpixel_regions(x, 3)
    assert recogniser.global_logits(x).shape == (2, 3)
    assert recogniser.region_logits(x, masks).shape == (2, 3, 3)
    target, _ = pseudo_label(x, masks, recogniser, gammas=(0.5, 1.0, 2.0))
    assert target.shape == x.shape
    loss = prompt_alignment_loss(x, masks, recogniser)
    loss.backward()
    assert recogniser.adapter.weight.grad is not None and recogniser.adapter.weight.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in recogniser.clip.parameters())


def test_load_clip_errors_clearly(tmp_path):
    from loopexpose.errors import LoopExposeError
    from loopexpose.methods.semantic.recogniser import load_clip

    with pytest.raises(LoopExposeError, match="not found"):
        load_clip(tmp_path / "missing")


def test_save_load_and_correct_numpy(model, tmp_path):
    path = save(model, tmp_path / "sem.safetensors", step=1)
    again = load(path)
    x = torch.rand(1, 3, 21, 30)
    assert torch.allclose(again(x)["output"], model(x)["output"], atol=1e-6)
    photo = (np.random.default_rng(0).random((21, 30, 3)) * 255).astype(np.uint8)
    out = again.correct(photo)
    assert out.shape == photo.shape and out.dtype == np.uint8


def _write_brackets(root, scenes=3):
    from loopexpose.io import write_image

    for s in range(scenes):
        for i, frame in enumerate(synthetic_bracket(3, 40, 56, seed=s)):
            write_image(root / f"scene{s}" / f"frame_{i}.png", frame.permute(1, 2, 0).numpy() * (0.9 + 0.05 * s), bits=8)


def test_training_scenes_are_read_decoding_every_frame_once(tmp_path, frame_reads):
    from loopexpose.brackets import load_bracket, order_bracket
    from loopexpose.io import write_image
    from loopexpose.methods.semantic.train import DEFAULTS, load_scenes

    _write_brackets(tmp_path / "data", scenes=2)
    write_image(tmp_path / "data" / "single" / "frame.png", np.full((40, 56, 3), 0.5, np.float32))  # left out
    expected = [load_bracket(order_bracket(tmp_path / "data" / f"scene{s}"), max_side=40) for s in range(2)]
    frame_reads.decoded.clear(), frame_reads.measured.clear()
    scenes = load_scenes({**DEFAULTS["data"], "root": str(tmp_path / "data"), "max_side": 40})
    assert [key for key, _ in scenes] == ["data/scene0", "data/scene1"]
    assert all(torch.equal(frames, want) for (_, frames), want in zip(scenes, expected))
    assert frame_reads.measured == [] and len(frame_reads.decoded) == 7  # 2 x 3 frames and the single one


def test_semantic_config_refuses_unknown_keys():
    from loopexpose.errors import LoopExposeError
    from loopexpose.methods.semantic.train import merged_config

    cfg = merged_config({"method": "semantic", "pseudo": {"region_weight": 0.5}, "model": {"width": 8}})
    assert cfg["pseudo"] == {"temperature": 0.3, "region_weight": 0.5} and cfg["model"] == {"width": 8}
    with pytest.raises(LoopExposeError, match=r"train\.'stpes'"):
        merged_config({"train": {"stpes": 3}})
    with pytest.raises(LoopExposeError, match="'pseudo_labels'"):
        merged_config({"pseudo_labels": {}})


def test_training_run_writes_loadable_checkpoints_and_resumes(tmp_path):
    from loopexpose.methods.semantic.train import run

    _write_brackets(tmp_path / "data")
    config = {
        "data": {"root": str(tmp_path / "data"), "max_side": 40, "crop": 32, "val_fraction": 0.34},
        "model": {"work_side": 32, "width": 8},
        "recogniser": {"steps": 4, "batch": 4},
        "train": {"steps": 3, "batch": 2, "eval_every": 3, "log_every": 1},
    }
    best = run(config, "cpu", False, tmp_path / "run")
    assert best.is_file() and load(best).arch == "semantic"
    events = [json.loads(line)["event"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert {"components", "data", "recogniser", "train", "eval", "done"} <= set(events)
    config["train"]["steps"] = 5
    run(config, "cpu", True, tmp_path / "run")
    assert load(tmp_path / "run" / "last.safetensors").metadata["step"] == 5


# ------------------------------------------------- FastSAM through ultralytics (a stand-in module: see below)
# ultralytics needs torchvision, whose PyPI wheels pull a CUDA build of torch, so it is not a test dependency.
# These tests put a small stand-in for ``ultralytics.FastSAM`` in ``sys.modules``: it records how it is called
# and returns fixed masks in ultralytics' result layout (``results[0].masks.data``, (N, H, W) floats), which
# exercises everything of ours around the real call.


class _FakeFastSAM:
    calls: list = []

    def __init__(self, path: str) -> None:
        import os

        if path.endswith("evil.pt"):
            raise TypeError("references types outside the supported checkpoint format")  # as ultralytics does
        assert os.path.isabs(path) and os.environ["ULTRALYTICS_SAFE_LOAD"] == "1" and os.environ["YOLO_OFFLINE"] == "1"
        self.path = path

    def __call__(self, image, imgsz, retina_masks, verbose, device):
        from types import SimpleNamespace

        _FakeFastSAM.calls.append({"shape": image.shape, "dtype": image.dtype, "imgsz": imgsz, "device": device,
                                   "retina_masks": retina_masks, "blue_first": float(image[..., 0].mean())})  # fmt: skip
        h, w = image.shape[:2]
        big = torch.zeros(h, w)
        big[:, : w // 2] = 1  # left half
        small = torch.zeros(h, w)
        small[: h // 2, : w // 4] = 1  # top-left quarter of the left half: wins where both cover
        return [SimpleNamespace(masks=SimpleNamespace(data=torch.stack([small, big])))]


@pytest.fixture()
def fake_ultralytics(monkeypatch, tmp_path):
    import sys
    from types import ModuleType

    for name in ("ULTRALYTICS_SAFE_LOAD", "YOLO_OFFLINE"):  # set by the loader; restored after the test
        monkeypatch.setenv(name, "0")

    module, nn, tasks = ModuleType("ultralytics"), ModuleType("ultralytics.nn"), ModuleType("ultralytics.nn.tasks")
    module.FastSAM, module.nn, nn.tasks, tasks.SAFE_LOAD = _FakeFastSAM, nn, tasks, False
    for name, value in (("ultralytics", module), ("ultralytics.nn", nn), ("ultralytics.nn.tasks", tasks)):
        monkeypatch.setitem(sys.modules, name, value)
    _FakeFastSAM.calls = []
    weights = tmp_path / "FastSAM-s.pt"
    weights.write_bytes(b"stand-in")
    return weights


def test_fastsam_masks_are_painted_largest_first_and_ordered(fake_ultralytics, monkeypatch):
    import sys

    from loopexpose.methods.semantic.regions import FastSAMRegions

    monkeypatch.chdir(fake_ultralytics.parent)
    regions = FastSAMRegions(fake_ultralytics.name, regions=4, imgsz=128)  # a bare name is made absolute
    images = torch.zeros(2, 3, 16, 24)
    images[:, 2] = 0.8  # blue: the stand-in sees BGR uint8, blue first
    images[:, :, :, 12:] += 0.1  # the right half (no mask) is the brightest region
    masks = regions(images)
    assert masks.shape == (2, 4, 16, 24)
    assert torch.equal(masks.sum(1), torch.ones(2, 16, 24))  # one-hot
    labels = masks.argmax(1)[0]
    quarter, rest_of_left, right = labels[0, 0].item(), labels[12, 0].item(), labels[0, 20].item()
    assert len({quarter, rest_of_left, right}) == 3  # the small mask kept its own region inside the big one
    assert masks[0, 3].sum() == 0 and right == 2  # darkest first: the bright right half is the last region used
    call = _FakeFastSAM.calls[0]
    assert call["shape"] == (16, 24, 3) and call["dtype"] == np.uint8 and call["imgsz"] == 128
    assert call["retina_masks"] and call["blue_first"] > 200
    assert sys.modules["ultralytics.nn.tasks"].SAFE_LOAD  # weights-only loading even if imported before


def test_fastsam_errors_are_clear(tmp_path, monkeypatch):
    import sys

    from loopexpose.errors import LoopExposeError
    from loopexpose.methods.semantic.regions import FastSAMRegions

    with pytest.raises(LoopExposeError, match=r"missing\.pt: segmenter weights not found"):
        FastSAMRegions(tmp_path / "missing.pt")
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # not installed
    with pytest.raises(LoopExposeError, match=r"pip install 'loopexpose\[semantic\]'"):
        FastSAMRegions(weights)


def test_fastsam_load_failures_name_the_file(fake_ultralytics):
    from loopexpose.errors import LoopExposeError
    from loopexpose.methods.semantic.regions import FastSAMRegions

    evil = fake_ultralytics.with_name("evil.pt")
    evil.write_bytes(b"x")
    with pytest.raises(LoopExposeError, match=r"evil\.pt: cannot load FastSAM weights \(TypeError: references types"):
        FastSAMRegions(evil)


def test_fastsam_with_real_ultralytics(tmp_path, monkeypatch):
    """The real thing, where ultralytics can be imported (it cannot in this project's CI: see docs/models.md): a
    tiny random YOLOv8-seg, saved as an ultralytics checkpoint, loads through the restricted loader and gives
    masks; a checkpoint holding anything else is refused."""
    pytest.importorskip("ultralytics", reason="ultralytics is not installed (it needs torchvision)")
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("ULTRALYTICS_SAFE_LOAD", "1")
    from ultralytics.nn.tasks import SegmentationModel

    from loopexpose.errors import LoopExposeError
    from loopexpose.methods.semantic.regions import FastSAMRegions

    torch.manual_seed(0)
    net = SegmentationModel("yolov8n-seg.yaml", nc=1, verbose=False)
    net.task, net.args = "segment", {"task": "segment", "imgsz": 640}
    torch.save({"model": net.half(), "train_args": {}, "date": None}, tmp_path / "tiny.pt")
    masks = FastSAMRegions(tmp_path / "tiny.pt", regions=8, imgsz=128)(torch.rand(2, 3, 50, 70))
    assert masks.shape == (2, 8, 50, 70) and torch.equal(masks.sum(1), torch.ones(2, 50, 70))
    torch.save({"model": print}, tmp_path / "evil.pt")  # a pickle naming an arbitrary callable
    with pytest.raises(LoopExposeError, match=r"evil\.pt: cannot load FastSAM weights"):
        FastSAMRegions(tmp_path / "evil.pt")


def test_correct_cli_uses_fastsam_masks_with_the_semantic_model(fake_ultralytics, model, tmp_path):
    from typer.testing import CliRunner

    from loopexpose.cli import app
    from loopexpose.io import read_image, write_image

    checkpoint = save(model, tmp_path / "semantic.safetensors")
    photo = write_image(tmp_path / "in" / "photo.png", synthetic_bracket(3, 40, 56)[0].permute(1, 2, 0).numpy())
    runner = CliRunner()
    args = ["correct", str(photo), "--model", str(checkpoint), "--device", "cpu"]
    with_fastsam = runner.invoke(app, [*args, "-o", str(tmp_path / "a"), "--segmenter-weights", str(fake_ultralytics)])
    built_in = runner.invoke(app, [*args, "-o", str(tmp_path / "b")])
    assert with_fastsam.exit_code == 0 and built_in.exit_code == 0, with_fastsam.output + built_in.output
    assert "regions: FastSAM (local weights)" in with_fastsam.output and _FakeFastSAM.calls
    assert "regions: slic superpixels" in built_in.output
    a = read_image(tmp_path / "a" / "photo_loopexpose.png").pixels
    b = read_image(tmp_path / "b" / "photo_loopexpose.png").pixels
    assert not np.array_equal(a, b)  # the masks changed the correction
    wrong = runner.invoke(app, ["correct", str(photo), "-o", str(tmp_path / "c"), "--model", "default",
                                "--segmenter-weights", str(fake_ultralytics)])  # fmt: skip
    assert "is for the semantic model" in str(wrong.exception)


def test_training_with_fastsam_and_clip_flags(fake_ultralytics, tmp_path):
    from typer.testing import CliRunner

    from loopexpose.cli import app

    _write_brackets(tmp_path / "data")
    config = tmp_path / "semantic.toml"
    config.write_text(
        'method = "semantic"\n'
        f'out_dir = "{tmp_path / "run"}"\n'
        f'[data]\nroot = "{tmp_path / "data"}"\nmax_side = 40\ncrop = 32\nval_fraction = 0.34\n'
        "[model]\nwork_side = 32\nwidth = 8\n"
        "[recogniser]\nsteps = 2\nbatch = 4\n"
        "[train]\nsteps = 2\nbatch = 2\neval_every = 2\nlog_every = 1\n"
    )
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--config", str(config), "--segmenter-weights", str(fake_ultralytics)])
    assert result.exit_code == 0, result.output
    components = next(json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
                      if json.loads(line)["event"] == "components")  # fmt: skip
    assert components["regions"] == "FastSAM (local weights)" and _FakeFastSAM.calls
    missing = runner.invoke(app, ["train", "--config", str(config), "--clip-weights", str(tmp_path / "nope")])
    assert "nope: clip weights not found" in str(missing.exception)
    plain = runner.invoke(app, ["train", "--config", "configs/default.toml", "--segmenter-weights",
                                str(fake_ultralytics)])  # fmt: skip
    assert "are for the semantic model" in str(plain.exception)


@pytest.mark.parametrize("kind", ["mixed", "dark", "bright"])
def test_cpu_path_matches_forward_in_tiles(model, kind):
    rng = np.random.default_rng(1)
    photo = rng.random((75, 101, 3)).astype(np.float32)
    photo = {"mixed": photo, "dark": photo**3 * 0.3, "bright": 0.6 + 0.4 * photo}[kind]
    with torch.no_grad():
        ref = model(torch.from_numpy(photo).permute(2, 0, 1)[None])["output"][0].permute(1, 2, 0).numpy()
    fast = model.correct_array(photo, tile_rows=16)  # several tiles, the last one short
    assert fast.dtype == np.float32 and np.abs(fast - ref).max() < 1e-4
    photo8 = (photo * 255 + 0.5).astype(np.uint8)
    with torch.no_grad():
        ref8 = model(torch.from_numpy(photo8).permute(2, 0, 1)[None] / 255.0)["output"][0].permute(1, 2, 0).numpy()
    eight = model.correct_array(photo8, tile_rows=16)
    assert eight.dtype == np.uint8 and np.abs(eight / 255 - ref8).max() <= 0.5 / 255 + 1e-4  # the output's rounding


def test_semantic_model_ends_with_the_shared_rules(tinting):
    model = tinting
    from loopexpose.baselines import mean_luma
    from loopexpose.metrics import highlight_chroma_added

    rng = np.random.default_rng(2)
    dark = torch.from_numpy(rng.random((1, 3, 40, 60)).astype(np.float32)) ** 3 * 0.2
    bright = dark.clone()
    bright[..., :20, :] = torch.tensor([0.88, 0.92, 0.96]).view(1, 3, 1, 1)  # a near-white sky, bright in every channel
    with torch.no_grad():
        ruled, ruled_bright = model(dark)["output"], model(bright)["output"]
        model.train()
        try:
            alone, alone_bright = model(dark)["output"], model(bright)["output"]
        finally:
            model.eval()
    assert mean_luma(ruled).item() > mean_luma(alone).item() + 0.05  # the floor lifts a dark frame
    assert highlight_chroma_added(alone_bright[..., :20, :], bright[..., :20, :]).item() > 0.5  # the network tints
    assert highlight_chroma_added(ruled_bright[..., :20, :], bright[..., :20, :]).item() < 0.05  # the rules do not


@pytest.fixture(scope="module")
def tinting():
    """A semantic network whose curves brighten red and darken blue everywhere: it tints near-white pixels."""
    net = create("semantic", {"work_side": 48, "width": 8})
    with torch.no_grad():
        net.head.bias.copy_(torch.tensor([2.0, 0.0, -2.0] * net.config.iterations))  # tanh: +0.96, 0, -0.96
    return net.eval()
