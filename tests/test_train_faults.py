"""The trainer under faults: killed at random points of an epoch and of checkpoint writing, then resumed, a run
ends with the same weights, bit for bit, as one never interrupted; and bad configs fail before any data is read,
in one line naming the key.

The runs are tiny (7 synthetic 3-frame brackets of 48 x 64, a 3 k-parameter CurveGrid, 3 epochs of 2-3 steps).
A kill is a ``BaseException`` raised from inside the trainer at the N-th *event*: a training step (the
pseudo-label of a batch), or a file commit (``os.replace``), raised just before it (the temp file is written
but not renamed) or just after it (the file is in place but what follows is not).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import synthetic_bracket
from loopexpose import train
from loopexpose.methods.loopexpose import train as loopexpose_train
from loopexpose.errors import LoopExposeError
from loopexpose.io import write_image
from loopexpose.models import load
from loopexpose.runstate import STATE_FILE

TINY_MODEL = {"arch": "curvegrid", "config": {"thumb": 16, "width": 4, "grid": 4, "bins": 4, "knots": 8}}


class Killed(BaseException):
    """Stands for SIGKILL: nothing catches it, nothing after it runs."""


@pytest.fixture(scope="module")
def brackets(tmp_path_factory) -> Path:
    """``ROOT/tiny/sI/EV±k.png``: 7 scenes of 3 frames (the photo shifted per scene), darkest first by name."""
    root = tmp_path_factory.mktemp("brackets")
    base = synthetic_bracket(3, 48, 64).permute(0, 2, 3, 1).numpy()
    for scene in range(7):
        folder = root / "tiny" / f"s{scene}"
        folder.mkdir(parents=True)
        for frame, ev in zip(np.roll(base, 9 * scene, axis=2), ("EV-2", "EV+0", "EV+2")):
            write_image(folder / f"{ev}.png", frame)
    return root


def _config(brackets: Path, out: Path, **train_settings) -> dict:
    return train.load_config(None, {
        "out_dir": str(out),
        "data": {"roots": [str(brackets / "tiny")], "max_side": 48, "crop": 32, "window": [2, 3],
                 "val_scenes": ["tiny/s0"], "val_max_side": 48, "synthetic_evs": []},
        "model": TINY_MODEL,
        "train": {"warmup_epochs": 1, "feedback_epochs": 2, "brackets_per_step": 2, "lr_warmup_steps": 2,
                  **train_settings},
    })  # fmt: skip


class Faults:
    """Counts the trainer's events (steps, and file commits before and after) and kills it at the N-th."""

    def __init__(self, monkeypatch) -> None:
        self.count, self.kill_at, self.events = 0, None, []
        pseudo_label, replace = loopexpose_train.pseudo_label, os.replace

        def step(*args, **kwargs):
            self.event("step")
            return pseudo_label(*args, **kwargs)

        def commit(source, target, *args, **kwargs):
            self.event(f"before {Path(target).name}")
            replace(source, target, *args, **kwargs)
            self.event(f"after {Path(target).name}")

        monkeypatch.setattr(loopexpose_train, "pseudo_label", step)
        monkeypatch.setattr(os, "replace", commit)

    def event(self, what: str) -> None:
        self.count += 1
        self.events.append(what)
        if self.count == self.kill_at:
            raise Killed(f"killed at event {self.count}")

    def arm(self, kill_at: int | None) -> None:
        self.count, self.kill_at, self.events = 0, kill_at, []


def _committed_epoch(run: Path) -> int:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(run / STATE_FILE), "pt") as handle:
            return json.loads(handle.metadata()["loopexpose_state"])["epoch"]
    except (OSError, SafetensorError):
        return 0


def _weights(run: Path, name: str = "last") -> dict[str, torch.Tensor]:
    return load(run / f"{name}.safetensors").state_dict()


def _log(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def _assert_same_run(a: Path, b: Path) -> None:
    for name in ("last", "best"):
        first, second = _weights(a, name), _weights(b, name)
        assert first.keys() == second.keys()
        for key in first:
            assert torch.equal(first[key], second[key]), f"{name}: {key}"
    assert _log(a) == _log(b)


def test_kills_anywhere_in_epochs_and_writes_resume_to_the_same_weights(brackets, tmp_path, monkeypatch, capsys):
    faults = Faults(monkeypatch)
    train.run(_config(brackets, tmp_path / "straight"), quiet=True)
    events = faults.count
    rng = random.Random(16)
    config = _config(brackets, tmp_path / "killed")
    outcomes = []
    while len(outcomes) < 5:  # each attempt dies at a random event of its first half (so most do die)
        faults.arm(rng.randrange(1, events // 2))
        try:
            train.run(config, resume=True, quiet=True)
        except Killed:
            outcomes.append((faults.count, faults.events[-1], _committed_epoch(tmp_path / "killed")))
        else:
            break
    # a writer killed while writing leaves its temp file behind: resume removes it
    (tmp_path / "killed" / f".{STATE_FILE}.dead.tmp").write_bytes(b"half a file")
    faults.arm(None)
    capsys.readouterr()
    train.run(config, resume=True)
    said = " ".join(capsys.readouterr().out.split())  # rich wraps lines
    assert "resumed from" in said and "removed 1 unfinished temp file" in said, said
    assert not list((tmp_path / "killed").glob(".*.tmp"))
    _assert_same_run(tmp_path / "straight", tmp_path / "killed")
    print(f"{events} events per run; kills at (event, what, epoch committed): {outcomes}")


def test_every_commit_of_an_epoch_end_is_a_safe_place_to_die(brackets, tmp_path, monkeypatch):
    """Kill at chosen events of the first epoch's end (before and after the commit of the state, between the
    weights and the JSON of ``last``, before ``best.json``, between the two logs), each time in a fresh run
    folder, and resume: each ends like the uninterrupted run."""
    faults = Faults(monkeypatch)
    train.run(_config(brackets, tmp_path / "straight", feedback_epochs=1), quiet=True)
    first = faults.events.index(f"before {STATE_FILE}")
    last = faults.events.index("after log.csv")
    assert "before optimizer.safetensors" not in faults.events
    epoch_end = range(first + 1, last + 2)  # event numbers count from 1
    assert len(epoch_end) == 14, faults.events[first : last + 1]  # state, last and best pairs, log.jsonl, log.csv
    for kill_at in (epoch_end[i] for i in (0, 1, 3, 8, 11)):
        out = tmp_path / f"killed-{kill_at}"
        faults.arm(kill_at)
        with pytest.raises(Killed):
            train.run(_config(brackets, out, feedback_epochs=1), quiet=True)
        faults.arm(None)
        train.run(_config(brackets, out, feedback_epochs=1), resume=True, quiet=True)
        _assert_same_run(tmp_path / "straight", out)


@pytest.mark.slow
def test_sigkill_of_a_real_process_resumes_to_the_same_weights(brackets, tmp_path):
    """The same with the operating system's SIGKILL of a training process, twice, each time a random fraction of
    a second after it committed an epoch (so during that epoch's writes or the next epoch's steps)."""
    # 6 epochs after the warm-up: on a busy CPU the poller below may notice a commit late, and the run must not
    # have finished by then
    config = _config(brackets, tmp_path / "straight", feedback_epochs=6)
    train.run(config, quiet=True)
    config_file = tmp_path / "tiny.json"
    config_file.write_text(json.dumps(_config(brackets, tmp_path / "killed", feedback_epochs=6)))
    script = "import json, sys, torch; from loopexpose import train; torch.set_num_threads(2); " \
             "train.run(json.load(open(sys.argv[1])), resume=True, quiet=True)"  # fmt: skip
    rng = random.Random(9)
    for _ in range(2):
        before = _committed_epoch(tmp_path / "killed")
        process = subprocess.Popen([sys.executable, "-c", script, str(config_file)])
        try:
            deadline = time.monotonic() + 600  # a busy shared CPU can make a tiny epoch slow
            while process.poll() is None and _committed_epoch(tmp_path / "killed") == before:
                assert time.monotonic() < deadline, "no epoch committed in 10 minutes"
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 0.4))
        finally:
            process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert subprocess.run([sys.executable, "-c", script, str(config_file)], timeout=300).returncode == 0
    _assert_same_run(tmp_path / "straight", tmp_path / "killed")


# --------------------------------------------------------------------------------------- resume's own errors


def test_resume_of_an_older_run_with_a_missing_optimizer_is_one_clear_line(brackets, tmp_path):
    out = tmp_path / "old"
    train.run(_config(brackets, out, feedback_epochs=0), quiet=True)
    (out / STATE_FILE).unlink()  # the layout before the state file: last + optimizer + log
    with pytest.raises(LoopExposeError, match="optimizer.safetensors missing.*without --resume"):
        train.run(_config(brackets, out), resume=True, quiet=True)


def test_resume_with_nothing_to_resume_says_so(brackets, tmp_path, capsys):
    train.run(_config(brackets, tmp_path / "fresh", warmup_epochs=1, feedback_epochs=0), resume=True)
    assert "nothing to resume" in capsys.readouterr().out
