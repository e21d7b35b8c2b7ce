"""LoopExpose training: the nested loop, top to bottom in the paper's order.

Upper level: a single-exposure-correction network (:mod:`.network`) maps every frame of a bracket to a
well-exposed image. Lower level: the bracket's pseudo-label (:mod:`.labels`) is the Mertens fusion of its
frames. During warm-up the label is the fusion of the input frames; after warm-up the network's own corrected
frames (no gradient) are fed back into the fusion (with the inputs, by default), so labels improve as the
network improves. Every frame of a bracket is supervised by its bracket's label (L1, SSIM), the Luminance
Ranking Loss orders the per-frame luminance features by exposure and cross-exposure consistency asks every
frame for the same result (:mod:`.losses`).

    configure -> data -> model -> for epoch: (warm-up | feedback) steps -> validate -> log -> checkpoint

The same loop runs on N processes under ``torchrun`` (see :mod:`loopexpose.distributed` and docs/training.md):
each rank trains on its slice of every global batch, DistributedDataParallel averages the gradients, rank 0
alone prints, logs and writes checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from safetensors.torch import load_file

from torch.utils.data import DataLoader

from loopexpose import distributed, fusion, runstate, synth
from loopexpose.baselines import mean_luma
from loopexpose.config import Rule, check_config, check_dataclass
from loopexpose.errors import LoopExposeError
from loopexpose.data import (
    BracketDataset, BucketBatchSampler, ValidationSet, collate_brackets, scan_brackets, scene_key, split_scenes,
)  # fmt: skip
from loopexpose.evaluate import WINDOW, select_window
from loopexpose.exposure import expose_to_level
from loopexpose.io import atomic_write_bytes
from loopexpose.metrics import highlight_chroma_added, psnr
from loopexpose.losses import l1_loss, ssim_loss
from loopexpose.methods.loopexpose.labels import pseudo_label
from loopexpose.methods.loopexpose.losses import cross_exposure_consistency_loss, luminance_ranking_loss
from loopexpose.models import architectures, create, load, save as save_model
from loopexpose.paths import data_root

DEFAULTS: dict = {
    "method": "loopexpose",
    "seed": 0,
    "out_dir": "runs/default",
    "data": {
        "roots": ["brackets"],
        "max_side": 384,
        "crop": 192,
        "crop_scale": [0.6, 1.0],
        "window": [3, 5],
        "val_fraction": 0.1,
        "val_scenes": [],
        "val_max_side": 384,
        "synthetic_evs": [-2.0, -1.0, 0.0, 1.0, 2.0],
    },
    "model": {"arch": "curvegrid", "config": {}},
    "train": {
        "warmup_epochs": 15,
        "feedback_epochs": 35,
        "brackets_per_step": 4,
        "lr": 2e-3,
        "lr_min": 1e-4,
        "lr_warmup_steps": 50,
        "weight_decay": 1e-4,
        "grad_clip": 1.0,
    },
    "loss": {
        "l1": 1.0,
        "ssim": 0.5,
        "ranking": 0.1,
        "consistency": 0.5,
        "ranking_margin": 0.1,
        "ranking_reduction": "mean",
        "perceptual": 0.0,
        "perceptual_weights": "",
    },
    "fusion": {"preset": "opencv", "feedback": "corrected+inputs"},
    # speed settings used on CUDA only; CPU runs ignore them (float32, in-process loading, bit-for-bit repeatable)
    "cuda": {"amp": True, "channels_last": True, "compile": False, "workers": 4},
}
"""The trainer's config: every key's default, and so its schema (:mod:`loopexpose.config`: each key takes its
default's type)."""

WEIGHT = Rule(minimum=0)
RULES: dict[str, Rule] = {
    "method": Rule(choices=("loopexpose", "semantic")),
    "out_dir": Rule(nonempty=True),
    "data.roots": Rule(nonempty=True),
    "data.max_side": Rule(minimum=0),  # 0 keeps full size
    "data.crop": Rule(minimum=8),  # the fusion pyramid and the network's strides need a few pixels
    "data.crop_scale": Rule(length=2, minimum=0, maximum=1, above=True),
    "data.window": Rule(length=2, minimum=1),
    "data.val_fraction": Rule(minimum=0, maximum=1, below=True),
    "data.val_scenes": Rule(type=list[str]),
    "data.val_max_side": Rule(minimum=0),
    "data.synthetic_evs": Rule(type=list[float]),
    "train.warmup_epochs": Rule(minimum=0),
    "train.feedback_epochs": Rule(minimum=0),
    "train.brackets_per_step": Rule(minimum=1),
    "train.lr": Rule(minimum=0, above=True),
    "train.lr_min": Rule(minimum=0),
    "train.lr_warmup_steps": Rule(minimum=0),
    "train.weight_decay": Rule(minimum=0),
    "train.grad_clip": Rule(minimum=0, above=True),
    "loss.l1": WEIGHT,
    "loss.ssim": WEIGHT,
    "loss.ranking": WEIGHT,
    "loss.consistency": WEIGHT,
    "loss.perceptual": WEIGHT,
    "loss.ranking_margin": Rule(minimum=0),
    "loss.ranking_reduction": Rule(choices=("mean", "sum")),
    "fusion.feedback": Rule(choices=("corrected+inputs", "corrected")),
    "cuda.workers": Rule(minimum=0),
}
"""Rules of :data:`DEFAULTS` keys beyond their types (``fusion.preset``'s choices and ``model.arch``'s come from
the fusion module and the model registry)."""


def check_train_config(config: dict, path: object | None = None, out_dir: str | os.PathLike | None = None) -> dict:
    """A checked copy of a LoopExpose trainer config (floats given as integers become floats).

    Args:
        config: the merged config (:func:`loopexpose.train.load_config`, or a dict built in code).
        path: the config file, named in errors.
        out_dir: the run folder actually used, when it overrides ``config["out_dir"]``.
    Raises:
        LoopExposeError: the first problem found, one line naming the key.
    """
    rules = {**RULES, "fusion.preset": Rule(choices=tuple(fusion.PRESETS))}
    rules["model.arch"] = Rule(choices=tuple(sorted(architectures())))
    config = check_config(config, DEFAULTS, rules, path, free=("model.config",))
    data, train = config["data"], config["train"]
    for key in ("window", "crop_scale"):
        low, high = data[key]
        if low > high:
            raise LoopExposeError(f"config key data.{key} must be [low, high] with low <= high, got {data[key]}", path)
    if train["warmup_epochs"] + train["feedback_epochs"] < 1:
        raise LoopExposeError("config key train warmup_epochs + feedback_epochs must be at least 1 (nothing to "
                              "train, no checkpoint)", path)  # fmt: skip
    _, config_class = architectures()[config["model"]["arch"]]
    config["model"]["config"] = check_dataclass(config["model"].get("config"), config_class, "model.config", path)
    out = Path(out_dir if out_dir is not None else config["out_dir"])
    for folder in (out, *out.parents):
        if folder.exists() and not folder.is_dir():
            raise LoopExposeError(f"config key out_dir {str(out)!r} cannot be a run folder: {str(folder)!r} is a "
                                  "file", path)  # fmt: skip
    return config


# ------------------------------------------------------------------------------------------------- data


def resolve_roots(roots: list[str]) -> list[Path]:
    """Config roots: absolute paths, paths that exist from the current folder, else under the data root."""
    return [Path(r) if Path(r).is_absolute() or Path(r).exists() else data_root() / r for r in roots]


# ----------------------------------------------------------------------------------------------- helpers


def learning_rate(step: int, total: int, cfg: dict) -> float:
    """Linear warm-up then cosine decay from ``lr`` to ``lr_min``."""
    if step < cfg["lr_warmup_steps"]:
        return cfg["lr"] * (step + 1) / cfg["lr_warmup_steps"]
    progress = min(1.0, (step - cfg["lr_warmup_steps"]) / max(1, total - cfg["lr_warmup_steps"]))
    return cfg["lr_min"] + 0.5 * (cfg["lr"] - cfg["lr_min"]) * (1 + math.cos(math.pi * progress))


@dataclass
class Validation:
    """Held-back scenes scored after every epoch with the bracket-5 protocol: the 5 frames around the one
    nearest mid-grey. Scores: PSNR of corrected non-reference frames to the reference frame; PSNR of corrected
    frames to their label (the input frames' fusion: how well the network learned what it is taught, on scenes
    it never saw), overall and per offset from the reference, and overall at the label's level
    (``val_psnr_label_level``: each corrected frame first exposed to the label's mean luma,
    :func:`loopexpose.exposure.expose_to_level`; most of the plain gap is the overall level, which one frame does
    not determine, ``bench/label_gap.py``); cross-exposure consistency (mean pairwise PSNR of corrected frames);
    and the highlight chroma added (:func:`loopexpose.metrics.highlight_chroma_added`)."""

    brackets: list[torch.Tensor]  # each (<= 5, 3, H, W) float, darkest first
    references: list[int]
    names: list[str] = field(default_factory=list)

    @classmethod
    def from_set(cls, validation: ValidationSet) -> "Validation":
        brackets, references, names = [], [], []
        for item in validation:
            start, reference = select_window(item.mean_luma)  # the evaluation protocol's own window
            brackets.append(item.frames[start : start + WINDOW])
            references.append(reference - start)
            names.append(item.scene)
        return cls(brackets, references, names)

    @torch.no_grad()
    def score(self, model, preset: str) -> dict[str, float]:
        model.eval()
        to_ref, to_label, at_level, consistency, chroma = [], [], [], [], []
        by_offset: dict[int, list[float]] = {}
        device = next(model.parameters()).device
        for frames, ref in zip(self.brackets, self.references):
            frames = frames.to(device)
            corrected = torch.cat([model(f[None])["output"] for f in frames])
            label = fusion.fuse(frames, preset=preset).clamp(0, 1)
            n = len(corrected)
            to_ref += [float(psnr(corrected[i], frames[ref])) for i in range(n) if i != ref]
            leveled = expose_to_level(corrected, mean_luma(label[None]).flatten().expand(n))
            at_level += psnr(leveled, label.expand_as(leveled)).tolist()
            for i in range(n):
                to_label.append(float(psnr(corrected[i], label)))
                by_offset.setdefault(i - ref, []).append(to_label[-1])
            consistency += [float(psnr(corrected[i], corrected[j])) for i in range(n) for j in range(i + 1, n)]
            added = highlight_chroma_added(corrected, frames)
            chroma += added[~added.isnan()].tolist()
        model.train()
        scores = {
            "val_psnr_ref": float(np.mean(to_ref)),
            "val_psnr_label": float(np.mean(to_label)),
            "val_psnr_label_level": float(np.mean(at_level)),
            "val_consistency": float(np.mean(consistency)),
            "val_chroma_added": float(np.mean(chroma)) if chroma else 0.0,
        }
        scores.update({f"val_psnr_label_{o:+d}": float(np.mean(v)) for o, v in sorted(by_offset.items()) if -2 <= o <= 2})
        return scores


# ------------------------------------------------------------------------------------------------- the loop


def run(config: dict, device: str = "cpu", resume: bool = False, out_dir: Path | None = None, quiet: bool = False) -> Path:
    """Train from a config dict (:func:`loopexpose.train.load_config`, or built in code: it is checked whole
    here); returns the best checkpoint's path."""
    config = check_train_config(config, out_dir=out_dir)  # the whole config, before any data is read
    dcfg, tcfg, lcfg, fcfg = config["data"], config["train"], config["loss"], config["fusion"]
    ccfg = config.get("cuda", DEFAULTS["cuda"])  # speed settings, used on CUDA only
    ctx = distributed.setup(device)  # under torchrun: join the process group, one device per rank
    device, cuda = ctx.device, ctx.device.type == "cuda"
    console = Console(quiet=quiet or not ctx.is_main)  # rank 0 alone prints, logs and writes checkpoints
    out = Path(out_dir or config["out_dir"])
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config["seed"])  # the same initial weights on every rank

    # --- data: every bracket decoded once, resized, kept in memory as uint8
    brackets = scan_brackets(resolve_roots(dcfg["roots"]), min_frames=2)
    train_brackets, val_brackets = split_scenes(brackets, dcfg["val_fraction"], dcfg["val_scenes"] or None)
    if dcfg["synthetic_evs"]:  # one more bracket per training scene, rendered from its reference frame
        folder = out / "synthetic"
        if ctx.is_main:
            synth.render_reference_brackets(train_brackets, folder, dcfg["synthetic_evs"])
        distributed.barrier(ctx)
        synthetic = scan_brackets(folder / "synth", min_frames=2)
        train_brackets = sorted(train_brackets + synthetic, key=scene_key)
        console.print(f"synthetic: {len(synthetic)} brackets at EV {dcfg['synthetic_evs']} in {folder}")
    dataset = BracketDataset(
        train_brackets,
        k_range=tuple(dcfg["window"]),
        crop=dcfg["crop"],
        max_side=dcfg["max_side"],
        seed=config["seed"],
        around_reference=True,
        crop_scale=tuple(dcfg["crop_scale"]),
    )
    # global batches of equal k, the same on every rank (seeded by (seed, epoch)); each rank takes its slice
    sampler = BucketBatchSampler(dataset, tcfg["brackets_per_step"], shuffle=True, drop_last=True)
    _check_every_epoch_has_a_step(sampler, tcfg, len(train_brackets))
    dataset.preload()
    shard = distributed.ShardedBatchSampler(sampler, ctx.rank, ctx.world_size)
    workers = ccfg["workers"] if cuda else 0  # workers fork after preload() and share the decoded frames
    loader = DataLoader(
        dataset, batch_sampler=shard, collate_fn=collate_brackets,
        num_workers=workers, pin_memory=cuda, persistent_workers=workers > 0,
    )  # fmt: skip
    validation = None
    if val_brackets and ctx.is_main:
        validation = Validation.from_set(ValidationSet(val_brackets, max_side=dcfg["val_max_side"]))
    console.print(f"data: {len(train_brackets)} training and {len(val_brackets)} validation brackets")
    if ctx.distributed:
        console.print(f"{ctx.world_size} ranks, {tcfg['brackets_per_step'] // ctx.world_size} brackets each per step")

    perceptual = None  # the optional ST-LPIPS term (loopexpose.perceptual), frozen
    if lcfg["perceptual"] > 0:
        from loopexpose.perceptual import load_stlpips

        perceptual = load_stlpips(lcfg["perceptual_weights"] or None, device)
        console.print("perceptual loss: ST-LPIPS VGG from " + str(lcfg["perceptual_weights"] or "stlpips-pytorch"))

    # --- model and optimiser
    channels_last = cuda and ccfg["channels_last"]
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    model = create(config["model"]["arch"], config["model"].get("config")).to(device, memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tcfg["lr"], weight_decay=tcfg["weight_decay"])
    epochs = tcfg["warmup_epochs"] + tcfg["feedback_epochs"]
    sampler.set_epoch(0)
    steps_per_epoch = len(sampler)  # about len(train) / brackets_per_step; varies slightly with the k buckets
    total_steps = epochs * steps_per_epoch
    start_epoch, best, history = 0, -math.inf, []
    if resume:
        start_epoch, best, history, note = _resume(out, model, optimizer, device, config, ctx.is_main)
        console.print(note)
    distributed.assert_same_start(start_epoch, ctx, out)  # a multi-node resume needs out/ on shared storage
    console.print(f"model: {model.arch}, {sum(p.numel() for p in model.parameters()):,} parameters; {epochs} epochs x {steps_per_epoch} steps on {device}")
    # CUDA speed: mixed precision for the network (bf16, or fp16 with loss scaling), TF32, optional compile
    amp_dtype = distributed.autocast_dtype(device, ccfg["amp"])
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    net = torch.compile(model) if cuda and ccfg["compile"] else model
    net = distributed.wrap(net, ctx)  # DDP with several ranks: averages gradients in backward()

    started = time.time()
    for epoch in range(start_epoch, epochs):
        feedback = epoch >= tcfg["warmup_epochs"]  # the nested loop: warm-up, then self-reinforcing feedback
        # per-rank, per-epoch stream for any randomness inside a step: a resumed epoch draws what it drew before
        torch.manual_seed(int(np.random.SeedSequence([config["seed"], ctx.rank, epoch]).generate_state(1)[0]))
        sampler.set_epoch(epoch)
        sums: dict[str, torch.Tensor] = {}
        model.train()
        with Progress(
            TextColumn(f"epoch {epoch + 1}/{epochs} {'feedback' if feedback else 'warm-up'}"),
            BarColumn(), TextColumn("{task.fields[losses]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, transient=True,
        ) as progress:  # fmt: skip
            task = progress.add_task("train", total=len(sampler), losses="")
            for step, batch in enumerate(loader):
                global_step = min(epoch * steps_per_epoch + step, total_steps - 1)
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(global_step, total_steps, tcfg)
                frames = batch["frames"].to(device, non_blocking=True)  # (B, k, 3, crop, crop), darkest first
                b = frames.shape[0]

                flat = frames.flatten(0, 1)
                with torch.autocast(device.type, amp_dtype, enabled=amp_dtype is not None):
                    result = net(flat.contiguous(memory_format=torch.channels_last) if channels_last else flat)
                corrected = result["output"].float().reshape(frames.shape)  # upper level: every frame on its own
                # lower level, on this rank's device, one batched float32 fusion for the rank's brackets
                label = pseudo_label(frames, fcfg["preset"], corrected.detach() if feedback else None, fcfg["feedback"])
                target = label[:, None].expand_as(corrected)
                terms = {
                    "l1": l1_loss(corrected, target),
                    "ssim": ssim_loss(corrected, target),
                    "ranking": luminance_ranking_loss(
                        result["luminance"].float().view(b, -1), lcfg["ranking_margin"], lcfg["ranking_reduction"]
                    ),
                    "consistency": cross_exposure_consistency_loss(corrected),
                }
                if perceptual is not None:
                    terms["perceptual"] = perceptual(corrected.flatten(0, 1), target.flatten(0, 1)).mean()
                loss = sum(lcfg[name] * value for name, value in terms.items())
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()  # with DDP the gradients arrive averaged over ranks
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg["grad_clip"])
                scaler.step(optimizer)
                scaler.update()

                for name, value in {"loss": loss, **terms}.items():
                    sums[name] = sums.get(name, 0.0) + value.detach().double()  # no GPU sync per step
                if step % 10 == 0:  # refreshing the text syncs with the GPU
                    progress.update(task, losses=" ".join(f"{n} {float(v) / (step + 1):.4f}" for n, v in sums.items()))
                progress.update(task, advance=1)

        row = {"epoch": epoch + 1, "stage": "feedback" if feedback else "warmup", "lr": optimizer.param_groups[0]["lr"]}
        row.update(distributed.average({name: float(value) / (step + 1) for name, value in sums.items()}, ctx))
        if validation is not None:
            row.update(validation.score(model, fcfg["preset"]))
        row["steps"] = step + 1
        row["seconds"] = round(time.time() - started, 1)
        history.append(row)
        # The best checkpoint fits its labels best on scenes it never trained on (no reference frame used).
        score = row.get("val_psnr_label", -row["loss"])
        is_best = score > best
        best = max(best, score)
        if ctx.is_main:
            _save(out, model, optimizer, config, row, history, best, is_best)
        console.print(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()) + (" *" if is_best else ""))
    digests = distributed.assert_in_sync(model, ctx)  # DDP must leave every rank with the same weights
    if ctx.distributed:
        console.print(f"weights identical on all {ctx.world_size} ranks (digest {digests[0]:016x})")
    if ctx.is_main:
        plot_curves(history, out / "curves.png")
        if validation is not None:
            validation_grid(load(out / "best.safetensors", device=device), validation, out / "validation.png")
    console.print(f"done in {time.time() - started:.0f} s; best checkpoint {out / 'best.safetensors'}")
    distributed.teardown(ctx)
    return out / "best.safetensors"


def _save(out: Path, model, optimizer, config: dict, row: dict, history: list[dict], best: float, is_best: bool) -> None:
    """Commit the epoch's state (:mod:`loopexpose.runstate`: one atomic rename), then write the run's outputs."""
    previous = runstate.read_info(out) if not is_best else None
    best_epoch = row["epoch"] if is_best else (previous or {}).get("best_epoch", 0)
    info = {"epoch": row["epoch"], "best_score": best, "best_epoch": best_epoch, "history": history}
    runstate.save_state(out, model, optimizer, info)
    _write_outputs(out, model, config, history, best, write_best=is_best)


def _write_outputs(out: Path, model, config: dict, history: list[dict], best: float, write_best: bool) -> None:
    """``last`` (and ``best``) checkpoints and ``log.jsonl``/``log.csv``: what a run shows, all derived from the
    committed state, so a resume rewrites whatever a kill left unwritten."""
    row = history[-1]
    meta = {"epoch": row["epoch"], "metrics": row, "train_config": config, "best_score": best}
    save_model(model, out / "last.safetensors", **meta)
    if write_best:
        save_model(model, out / "best.safetensors", **meta)
    atomic_write_bytes(out / "log.jsonl", "".join(json.dumps(r) + "\n" for r in history).encode())
    keys = list(dict.fromkeys(k for r in history for k in r))
    lines = [",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in history]
    atomic_write_bytes(out / "log.csv", ("\n".join(lines) + "\n").encode())


def _resume(out: Path, model, optimizer, device, config: dict, is_main: bool) -> tuple[int, float, list[dict], str]:
    """``(epoch, best score, log rows, what was done)`` from the run folder's committed state.

    Whatever instant the last run died at, the state file is whole (the previous epoch's or the last one's):
    outputs it had not yet written are rewritten from it, temp files it left are removed. Without a state file
    a run from before it (``last.safetensors`` + ``optimizer.safetensors``) resumes if its files agree.
    """
    state_file = out / runstate.STATE_FILE
    if not state_file.is_file():
        if (out / "last.safetensors").is_file():
            return _resume_legacy(out, model, optimizer, device)
        return 0, -math.inf, [], f"nothing to resume in {out}: starting at epoch 1"
    info = runstate.load_state(out, model, optimizer, device)
    epoch, best, history = info["epoch"], info["best_score"], info["history"]
    done = []
    if is_main:
        removed = runstate.remove_stale_temp_files(out)
        if removed:
            done.append(f"removed {len(removed)} unfinished temp file(s)")
        best_written = _checkpoint_epoch(out / "best.json") == info["best_epoch"]
        _write_outputs(out, model, config, history, best, write_best=info["best_epoch"] == epoch and not best_written)
        if not best_written and info["best_epoch"] == epoch:
            done.append("rewrote best.safetensors")
    note = f"resumed from {state_file} after epoch {epoch} (model, optimizer and log of that epoch)"
    return epoch, best, history, note + (f"; {', '.join(done)}" if done else "")


def _checkpoint_epoch(meta_file: Path) -> int | None:
    try:
        return json.loads(meta_file.read_text()).get("epoch")
    except (OSError, ValueError, AttributeError):
        return None


def _resume_legacy(out: Path, model, optimizer, device) -> tuple[int, float, list[dict], str]:
    missing = [name for name in ("optimizer.safetensors", "log.jsonl") if not (out / name).is_file()]
    trained = load(out / "last.safetensors", device=device)
    history = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line] if not missing else []
    epoch = trained.metadata.get("epoch")
    if missing or len(history) != epoch:
        problem = f"{', '.join(missing)} missing" if missing else f"log.jsonl has {len(history)} epochs, last.json {epoch}"
        raise LoopExposeError(f"cannot resume: the run's files disagree ({problem}; a kill between two writes of an "
                              "older loopexpose); start the run again without --resume", out)  # fmt: skip
    model.load_state_dict(trained.state_dict())
    runstate.load_optimizer(optimizer, load_file(str(out / "optimizer.safetensors")), device)
    note = f"resumed from {out / 'last.safetensors'} and optimizer.safetensors (older layout) after epoch {epoch}"
    return epoch, trained.metadata["best_score"], history, note


def _check_every_epoch_has_a_step(sampler: BucketBatchSampler, tcfg: dict, brackets: int) -> None:
    """Steps take ``brackets_per_step`` brackets of one window length; an epoch without one full step would
    train nothing (and log nothing), so refuse such a schedule before the data is decoded."""
    per_step = tcfg["brackets_per_step"]
    if per_step > brackets:
        raise LoopExposeError(f"train.brackets_per_step = {per_step} is more than the {brackets} training brackets")
    for epoch in range(tcfg["warmup_epochs"] + tcfg["feedback_epochs"]):
        sampler.set_epoch(epoch)
        if len(sampler) == 0:
            raise LoopExposeError(
                f"train.brackets_per_step = {per_step}: epoch {epoch + 1} has no step (its {brackets} training "
                "brackets hold fewer brackets of any one window length); lower it or narrow data.window"
            )


def plot_curves(history: list[dict], path: Path) -> None:
    """Training loss terms and validation PSNRs per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name in ("loss", "l1", "ssim", "ranking", "perceptual"):
        if any(name in r for r in history):
            left.plot(epochs, [r.get(name, np.nan) for r in history], label=name)
    left.set_xlabel("epoch"), left.set_ylabel("training loss"), left.set_yscale("log"), left.legend()
    for name in ("val_psnr_ref", "val_psnr_label", "val_psnr_label_level", "val_consistency"):
        if any(name in r for r in history):
            right.plot(epochs, [r.get(name, np.nan) for r in history], label=name)
    warm = [r["epoch"] for r in history if r["stage"] == "warmup"]
    for axis in (left, right):
        if warm:
            axis.axvline(max(warm) + 0.5, color="grey", linestyle=":", label=None)
    right.set_xlabel("epoch"), right.set_ylabel("PSNR (dB)"), right.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


@torch.no_grad()
def validation_grid(model, validation: Validation, path: Path, scenes: int = 4) -> None:
    """Before/after sheet of the first ``scenes`` validation brackets: the 5 input frames above the model's
    corrections of each, written as a PNG."""
    from loopexpose.io import to_numpy, write_image
    from loopexpose.viz import comparison_sheet

    model.eval()
    device = next(model.parameters()).device
    rows = []
    for index, (frames, ref) in enumerate(zip(validation.brackets[:scenes], validation.references)):
        corrected = torch.cat([model(f[None].to(device))["output"].cpu() for f in frames])
        labels = [f"{i - ref:+d}" + (" (reference)" if i == ref else "") for i in range(len(frames))]
        name = validation.names[index] if validation.names else f"scene {index}"
        rows.append((f"{name}: input frames", [to_numpy(f) for f in frames], labels))
        rows.append((f"{name}: corrected", [to_numpy(f) for f in corrected], labels))
    write_image(path, comparison_sheet(rows, tile_height=140).astype(np.float32) / 255)
