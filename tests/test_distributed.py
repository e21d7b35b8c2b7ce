"""Distributed training: sharded global batches, DDP helpers, and torchrun runs on 2 CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from loopexpose import distributed, train
from loopexpose.methods.loopexpose import train as loopexpose_train
from loopexpose.data import BracketDataset, BucketBatchSampler, scan_brackets
from loopexpose.errors import LoopExposeError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], cwd, nproc: int = 2, timeout: int = 120) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node nproc`` on the loopback interface, one thread per rank."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
        "--master-addr=127.0.0.1", f"--master-port={_free_port()}", *args,
    ]  # fmt: skip
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def collection(tmp_path):
    """Eight scenes of 3 to 6 frames (48x32 PNG, brighter with the frame index)."""
    root = tmp_path / "col"
    for s in range(8):
        scene = root / f"scene{s}"
        scene.mkdir(parents=True)
        n = 3 + s % 4
        for i in range(n):
            pixels = np.full((32, 48, 3), (i + 1) / (n + 1) * 255, np.uint8)
            Image.fromarray(pixels).save(scene / f"f{i}.png")
    return root


# ------------------------------------------------------------------------------------------ sharded batches


def test_shards_of_every_global_batch_partition_it_with_one_k_per_step(collection):
    dataset = BracketDataset(scan_brackets(collection), k_range=(2, 5), crop=16, max_side=32, seed=1, repeats=4)
    sampler = BucketBatchSampler(dataset, batch_size=4, shuffle=True, drop_last=True)
    shards = [distributed.ShardedBatchSampler(sampler, rank, 2) for rank in range(2)]
    for epoch in (0, 3):
        sampler.set_epoch(epoch)
        global_batches = list(sampler)
        per_rank = [list(shard) for shard in shards]
        assert len(global_batches) > 2 and all(len(p) == len(global_batches) == len(s) for p, s in zip(per_rank, shards))
        for step, batch in enumerate(global_batches):
            halves = [per_rank[0][step], per_rank[1][step]]
            assert halves[0] + halves[1] == batch, "the ranks' slices must be the global batch, in order"
            assert len({dataset.window_length(item) for item in batch}) == 1, "one window length per step"


def test_shard_needs_a_batch_size_that_the_ranks_divide(collection):
    dataset = BracketDataset(scan_brackets(collection), k_range=(2, 3), crop=16, max_side=32)
    with pytest.raises(LoopExposeError, match="multiple of the number of ranks"):
        distributed.ShardedBatchSampler(BucketBatchSampler(dataset, batch_size=3), rank=0, world_size=2)
    with pytest.raises(LoopExposeError, match="cannot be split"):  # an incomplete last batch (no drop_last)
        list(distributed.ShardedBatchSampler([[0, 1], [2]], rank=0, world_size=2))
    with pytest.raises(ValueError, match="rank"):
        distributed.ShardedBatchSampler([[0, 1]], rank=2, world_size=2)


# ------------------------------------------------------------------------------------------ one process


def test_without_torchrun_everything_is_a_single_process(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    context = distributed.setup("cpu")
    assert (context.rank, context.world_size, context.is_main, context.distributed) == (0, 1, True, False)
    assert not torch.distributed.is_initialized()
    model = torch.nn.Linear(3, 2)
    assert distributed.wrap(model, context) is model
    assert distributed.average({"loss": 0.25}, context) == {"loss": 0.25}
    assert distributed.assert_in_sync(model, context) == [distributed.parameter_digest(model)]
    assert distributed.autocast_dtype(torch.device("cpu"), True) is None  # CPU runs stay float32
    distributed.teardown(context)


def test_parameter_digest_sees_a_one_ulp_change():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 1))
    twin = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 1))
    twin.load_state_dict(model.state_dict())
    assert distributed.parameter_digest(model) == distributed.parameter_digest(twin)
    with torch.no_grad():
        twin[1].bias.copy_(torch.nextafter(twin[1].bias, torch.tensor(1.0)))
    assert distributed.parameter_digest(model) != distributed.parameter_digest(twin)


# ------------------------------------------------------------------------------------------ two processes

HELPERS_SCRIPT = """
import json, sys, torch
from loopexpose import distributed
from loopexpose.errors import LoopExposeError

ctx = distributed.setup("cpu")
torch.manual_seed(ctx.rank)  # different initial weights on purpose: DDP must broadcast rank 0's
model = torch.nn.Linear(3, 1)
net = distributed.wrap(model, ctx)
x = torch.full((1, 3), float(ctx.rank + 1))  # rank 0 sees ones, rank 1 twos
net(x).sum().backward()  # d/dw of w.x: the DDP average is (1 + 2) / 2 = 1.5 for every weight
report = {
    "world": ctx.world_size, "backend": torch.distributed.get_backend(),
    "grad": model.weight.grad.flatten().tolist(),
    "mean": distributed.average({"value": float(ctx.rank)}, ctx)["value"],
    "digests": distributed.assert_in_sync(model, ctx),
}
if ctx.rank == 1:
    with torch.no_grad():
        model.bias.add_(1e-3)
try:
    distributed.assert_in_sync(model, ctx)
    report["caught"] = False
except LoopExposeError as exc:
    report["caught"] = "different weights" in str(exc)
distributed.assert_same_start(3, ctx, "run")
try:
    distributed.assert_same_start(ctx.rank, ctx, "run")  # rank 1 found another checkpoint than rank 0
    report["caught_start"] = False
except LoopExposeError as exc:
    report["caught_start"] = "different epochs [0, 1]" in str(exc)
open(sys.argv[1] + f"/rank{ctx.rank}.json", "w").write(json.dumps(report))
distributed.teardown(ctx)
"""


@pytest.mark.slow
def test_helpers_on_two_gloo_processes(tmp_path):
    (tmp_path / "helpers.py").write_text(HELPERS_SCRIPT)
    result = _torchrun([str(tmp_path / "helpers.py"), str(tmp_path)], cwd=tmp_path, timeout=90)
    if result.returncode != 0 and "terminate called without an active exception" in result.stderr:
        # gloo now and then aborts a rank while its threads shut down (seen once in 3 full runs, never alone);
        # the run is repeated once and must then pass whole
        result = _torchrun([str(tmp_path / "helpers.py"), str(tmp_path)], cwd=tmp_path, timeout=90)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for report in reports:
        assert report["world"] == 2 and report["backend"] == "gloo"
        assert report["grad"] == pytest.approx([1.5, 1.5, 1.5])
        assert report["mean"] == pytest.approx(0.5)
        assert len(report["digests"]) == 2 and len(set(report["digests"])) == 1
        assert report["caught"], "a rank with different weights must be reported"
        assert report["caught_start"], "ranks resuming at different epochs must be reported"


# ------------------------------------------------------------------------------------------ real training

TINY_CONFIG = """
seed = 0
[data]
roots = [{root!r}]
max_side = 96
crop = 48
window = [3, 3]                       # every merianos2016 scene has 3 frames: 4 brackets, 2 steps of 2
val_scenes = ["merianos2016/Flowers"]
val_max_side = 64
[model.config]
thumb = 32
grid = 8
width = 8
[train]
warmup_epochs = 1
feedback_epochs = 1                   # both stages of the nested loop
brackets_per_step = 2                 # the global batch: 2 on one rank, 1 + 1 on two
lr_warmup_steps = 1
"""


def _weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "last.safetensors"))


def _log(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def _assert_same_training(one, two) -> None:
    a, b = _weights(one), _weights(two)
    assert a.keys() == b.keys()
    # Same steps on the same brackets; only float summation order differs (batched vs all-reduced gradients),
    # which Adam's first steps can amplify to a few 1e-5 (the learning rate is 2e-3). The luminance head learns
    # from the ranking hinge alone, and a pair sitting at the margin can switch the hinge on in one run and off in
    # the other: one Adam step more or less, about 1e-3.
    for name in a:
        atol = 2e-3 if name.startswith("luminance_head.") else 5e-4
        torch.testing.assert_close(b[name], a[name], atol=atol, rtol=0, msg=lambda m: f"{name}: {m}")
    log_one, log_two = _log(one), _log(two)
    assert [r["epoch"] for r in log_one] == [r["epoch"] for r in log_two] == [1, 2]
    for r1, r2 in zip(log_one, log_two):
        for key in ("loss", "l1", "ssim", "ranking", "lr", "val_psnr_ref"):
            assert r2[key] == pytest.approx(r1[key], rel=1e-4), key


@pytest.mark.slow
def test_torchrun_two_ranks_match_one_rank_and_resume_across_world_sizes(brackets_root, tmp_path, monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    config_path = tmp_path / "tiny.toml"
    config_path.write_text(TINY_CONFIG.format(root=str(brackets_root / "merianos2016")))
    config = train.load_config(config_path)

    # one rank, in this process: the reference
    train.run(config, "cpu", out_dir=tmp_path / "one", quiet=True)

    # two ranks under torchrun: identical weights on both (checked in-run), and the one-rank result
    result = _torchrun(["-m", "loopexpose", "train", "-c", str(config_path), "-o", str(tmp_path / "two")], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "weights identical on all 2 ranks" in result.stdout
    assert result.stdout.count("best checkpoint:") == 1, "only rank 0 prints"
    _assert_same_training(tmp_path / "one", tmp_path / "two")

    # stop a one-rank run after its first epoch, then resume it on two ranks
    save = loopexpose_train._save

    def save_then_stop(out, *args):
        save(out, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(loopexpose_train, "_save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train.run(config, "cpu", out_dir=tmp_path / "resumed", quiet=True)
    monkeypatch.undo()
    assert [r["epoch"] for r in _log(tmp_path / "resumed")] == [1]
    args = ["-m", "loopexpose", "train", "-c", str(config_path), "-o", str(tmp_path / "resumed"), "--resume"]
    result = _torchrun(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    said = " ".join(result.stdout.split())  # rich wraps long lines
    assert "resumed from" in said and "after epoch 1" in said
    _assert_same_training(tmp_path / "one", tmp_path / "resumed")
