"""Training of the semantic-aware model, top to bottom (nanoGPT style).

1. configure (a plain dict from TOML) and seed;
2. data: every frame of every bracket, downscaled; region masks per scene; free exposure labels per frame and
   region from the bracket order;
3. stage 1, the exposure-situation recogniser: our CNN (default), or a CLIP adapter when ``clip_weights`` is set;
4. pseudo-labels: the recogniser picks a tailored gamma per region of every training frame;
5. stage 2, the network: random crops, loss = L1 to the pseudo-label + region consistency + prompt alignment
   + curve smoothness; evaluate on held-out scenes; checkpoint (safetensors via ``loopexpose.models.save``),
   one JSON line per log event.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from loopexpose.config import Rule, check_config
from loopexpose.data import is_validation_scene
from loopexpose.errors import LoopExposeError
from loopexpose.models import create, load, save
from loopexpose.methods.semantic.losses import (
    prompt_alignment_loss,
    region_consistency_loss,
    segmentation_agreement,
    smoothness_loss,
)
from loopexpose.methods.semantic.labels import pseudo_label
from loopexpose.methods.semantic.recogniser import bracket_region_labels, load_clip, train_recogniser
from loopexpose.methods.semantic.regions import FastSAMRegions

DEFAULTS = {
    "seed": 0,
    "data": {"root": "", "collections": [], "max_side": 160, "crop": 96, "val_fraction": 0.1, "max_scenes": 0},
    "model": {},
    "recogniser": {"steps": 400, "batch": 16, "lr": 2e-3},
    "guidance": {"clip_weights": "", "clip_arch": "ViT-B-32", "segmenter_weights": ""},
    "pseudo": {"temperature": 0.3, "region_weight": 0.3},
    "train": {"steps": 1500, "batch": 4, "lr": 1e-3, "eval_every": 250, "log_every": 25},
    "loss": {"pseudo": 1.0, "region": 0.2, "prompt": 0.05, "smooth": 0.1},
}


RULES = {
    "data.collections": Rule(type=list[str]),
    "data.max_side": Rule(minimum=16),
    "data.crop": Rule(minimum=8),
    "data.val_fraction": Rule(minimum=0, maximum=1, above=True, below=True),
    "data.max_scenes": Rule(minimum=0),
    "recogniser.steps": Rule(minimum=0),
    "recogniser.batch": Rule(minimum=1),
    "train.steps": Rule(minimum=1),
    "train.batch": Rule(minimum=1),
    "train.eval_every": Rule(minimum=1),
    "train.log_every": Rule(minimum=1),
}
"""Rules beyond the types of :data:`DEFAULTS` (see :mod:`loopexpose.config`)."""


def merged_config(config: dict) -> dict:
    """DEFAULTS overridden section by section by ``config``, then checked (:func:`loopexpose.config.check_config`:
    every key of its default's type, :data:`RULES`); unknown keys are an error (a typo must not pass silently).
    ``model`` is free-form here (the semantic architecture's settings dataclass checks it)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    for key, value in config.items():
        if key in ("method", "out_dir"):  # read by the caller
            continue
        if key not in out:
            raise LoopExposeError(f"unknown config key {key!r} for the semantic trainer")
        if isinstance(value, dict) and isinstance(out[key], dict):
            unknown = sorted(set(value) - set(out[key])) if key != "model" else []
            if unknown:
                raise LoopExposeError(f"unknown config key {key}.{unknown[0]!r} for the semantic trainer")
            out[key].update(value)
        else:
            out[key] = value
    return check_config(out, DEFAULTS, RULES, free=("model",))


def load_scenes(cfg: dict) -> list[tuple[str, torch.Tensor]]:
    """``("collection/scene", bracket)`` pairs, each bracket ``(N, 3, H, W)`` darkest first, downscaled to
    ``max_side``, from the configured collections."""
    from loopexpose.brackets import find_scenes, read_bracket
    from loopexpose.paths import data_root

    root = Path(cfg["root"]) if cfg["root"] else data_root() / "brackets"
    if not root.is_dir():
        raise LoopExposeError("bracket folder not found (set data.root or LOOPEXPOSE_DATA)", root)
    folders = [root / c for c in cfg["collections"]] if cfg["collections"] else [root]
    scenes = [s for folder in folders for s in find_scenes(folder)]
    if cfg["max_scenes"]:
        scenes = scenes[: cfg["max_scenes"]]
    brackets = []
    for scene in scenes:
        bracket, frames = read_bracket(scene, max_side=cfg["max_side"])  # each frame decoded once
        if len(bracket.paths) >= 2:
            brackets.append((f"{bracket.collection}/{bracket.name}", frames))
    if len(brackets) < 2:
        raise LoopExposeError("need at least 2 brackets with 2 or more frames to train", root)
    return brackets


def build_region_provider(model, guidance: dict):
    """FastSAM when ``segmenter_weights`` names a file, else the model's built-in superpixels."""
    if guidance["segmenter_weights"]:
        model.use_segmenter(FastSAMRegions(guidance["segmenter_weights"], regions=model.config.regions),
                            "FastSAM (local weights)")  # fmt: skip
    return model.regions, model.regions_name


def random_crop(tensors: list[torch.Tensor], size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """The same random ``size x size`` window (and mirror) of every ``(C, H, W)`` tensor (whole when smaller)."""
    h, w = tensors[0].shape[-2:]
    top = int(torch.randint(0, max(1, h - size + 1), (), generator=generator))
    left = int(torch.randint(0, max(1, w - size + 1), (), generator=generator))
    flip = bool(torch.rand((), generator=generator) < 0.5)
    out = [t[..., top : top + size, left : left + size] for t in tensors]
    return [t.flip(-1) for t in out] if flip else out


def run(config: dict, device: str = "cpu", resume: bool = False, out_dir: Path = Path("runs/semantic")) -> Path:
    """Train the semantic-aware model; returns the path of the best checkpoint (``out_dir/best.safetensors``)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    cfg = merged_config(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = int(cfg["seed"])
    random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    log_file = open(out_dir / "log.jsonl", "a" if resume else "w")  # noqa: SIM115 - closed at the end

    def log(event: str, **fields) -> None:
        log_file.write(json.dumps({"event": event, "time": round(time.time(), 3), **fields}) + "\n")
        log_file.flush()

    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TextColumn("{task.fields[info]}"), TimeRemainingColumn())  # fmt: skip

    # ---------------------------------------------------------------- model and components
    last_path, best_path = out_dir / "last.safetensors", out_dir / "best.safetensors"
    start_step, best_val = 0, float("inf")
    if resume and last_path.is_file():
        model = load(last_path, device).train()
        start_step = int(model.metadata.get("step", 0))
        best_val = float(model.metadata.get("best_val", best_val))
    else:
        model = create("semantic", cfg["model"]).to(device)
    guidance = cfg["guidance"]
    regions_of, region_name = build_region_provider(model, guidance)
    if guidance["clip_weights"]:
        recogniser = load_clip(guidance["clip_weights"], guidance["clip_arch"], device)
        recogniser_name = "CLIP (local weights) + adapter fine-tuned on bracket labels"
    else:
        recogniser = model.recogniser
        recogniser_name = "CNN exposure recogniser trained on bracket labels (offline stand-in for CLIP)"
    components = {"regions": region_name, "recogniser": recogniser_name, "scan": _scan_name(device)}
    print("semantic training components:", json.dumps(components, indent=1))
    log("components", **components, config=cfg)

    # ---------------------------------------------------------------- data, masks, free labels
    # the same stable split by scene as the LoopExpose trainer, so both models hold back the same scenes
    scenes = load_scenes(cfg["data"])
    val_ids = {i for i, (key, _) in enumerate(scenes) if is_validation_scene(key, cfg["data"]["val_fraction"])}
    if not val_ids or len(val_ids) == len(scenes):
        raise LoopExposeError(f"data.val_fraction {cfg['data']['val_fraction']} leaves no training or no validation scene")
    brackets = [bracket for _, bracket in scenes]
    frames, masks, frame_labels, region_labels, is_val = [], [], [], [], []
    for i, bracket in enumerate(brackets):
        middle = bracket[len(bracket) // 2 : len(bracket) // 2 + 1].to(device)
        scene_masks = regions_of(middle)[0].cpu()
        f_lab, r_lab = bracket_region_labels(bracket, scene_masks)
        for j in range(len(bracket)):
            frames.append(bracket[j])
            masks.append(scene_masks)
            frame_labels.append(f_lab[j])
            region_labels.append(r_lab[j])
            is_val.append(i in val_ids)
    log("data", scenes=len(brackets), frames=len(frames), val_scenes=len(val_ids))

    # ---------------------------------------------------------------- stage 1: exposure recogniser
    rec_cfg = cfg["recogniser"]
    if start_step == 0 and rec_cfg["steps"] > 0:
        train_idx = [i for i, v in enumerate(is_val) if not v]
        sizes = {tuple(frames[i].shape[-2:]) for i in train_idx}
        with progress:
            task = progress.add_task("recogniser", total=rec_cfg["steps"], info="")
            # frames differ in size: train on fixed-size crops so they batch
            crop = min(cfg["data"]["max_side"], min(min(s) for s in sizes))
            crops = [random_crop([frames[i], masks[i]], crop, generator) for i in train_idx]
            x = torch.stack([c[0] for c in crops]).to(device)
            m = torch.stack([c[1] for c in crops]).to(device)
            fl = torch.stack([frame_labels[i] for i in train_idx]).to(device)
            rl = torch.stack([region_labels[i] for i in train_idx]).to(device)
            losses = train_recogniser(recogniser, x, m, fl, rl, rec_cfg["steps"], rec_cfg["batch"], rec_cfg["lr"], seed,
                                      progress=lambda s, l: progress.update(task, advance=1, info=f"loss {l:.3f}"))  # fmt: skip
        accuracy = _recogniser_accuracy(recogniser, frames, masks, frame_labels, is_val, device)
        log("recogniser", final_loss=float(np.mean(losses[-20:])), val_frame_accuracy=accuracy)
        print(f"recogniser: val frame accuracy {accuracy:.3f}")
    recogniser.eval()
    for p in recogniser.parameters():
        p.requires_grad_(False)

    # ---------------------------------------------------------------- pseudo-labels
    targets = []
    with progress:
        task = progress.add_task("pseudo-labels", total=len(frames), info="")
        for frame, mask in zip(frames, masks):
            target, _ = pseudo_label(frame[None].to(device), mask[None].to(device), recogniser, **cfg["pseudo"])
            targets.append(target[0].cpu())
            progress.update(task, advance=1)

    # ---------------------------------------------------------------- stage 2: the network
    tc, lw = cfg["train"], cfg["loss"]
    optimizer = torch.optim.AdamW([p for n, p in model.named_parameters() if not n.startswith("recogniser.")], lr=tc["lr"], weight_decay=1e-4)
    train_idx = [i for i, v in enumerate(is_val) if not v]
    val_idx = [i for i, v in enumerate(is_val) if v]
    crop = cfg["data"]["crop"]

    def losses_of(x, target, out):
        parts = {
            "pseudo": F.l1_loss(out["output"], target),
            "region": region_consistency_loss(out["output"], x, F.interpolate(out["masks"], size=x.shape[-2:], mode="nearest")),
            "prompt": prompt_alignment_loss(out["output"], out["masks"], recogniser),
            "smooth": smoothness_loss(out["alpha"]),
        }
        return sum(lw[k] * v for k, v in parts.items()), parts

    def evaluate() -> dict:
        model.eval()
        totals, agreement = [], []
        with torch.no_grad():
            for i in val_idx:
                x, target = frames[i][None].to(device), targets[i][None].to(device)
                out = model(x)
                totals.append(losses_of(x, target, out)[0].item())
                agreement.append(segmentation_agreement(model.regions(model.thumbnail(out["output"])), out["masks"]).item())
        model.train()
        return {"val_loss": float(np.mean(totals)), "val_segmentation_agreement": float(np.mean(agreement))}

    model.train()
    step = start_step
    t0 = time.time()
    with progress:
        task = progress.add_task("semantic", total=tc["steps"], completed=start_step, info="")
        while step < tc["steps"]:
            pick = torch.randint(0, len(train_idx), (tc["batch"],), generator=generator).tolist()
            pairs = [random_crop([frames[train_idx[p]], targets[train_idx[p]]], crop, generator) for p in pick]
            size = (min(p[0].shape[-2] for p in pairs), min(p[0].shape[-1] for p in pairs))
            x = torch.stack([p[0][..., : size[0], : size[1]] for p in pairs]).to(device)
            target = torch.stack([p[1][..., : size[0], : size[1]] for p in pairs]).to(device)
            lr = tc["lr"] * 0.5 * (1 + np.cos(np.pi * step / tc["steps"]))  # cosine decay
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, parts = losses_of(x, target, model(x))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            progress.update(task, advance=1, info=f"loss {loss.item():.4f}")
            if step % tc["log_every"] == 0:
                log("train", step=step, lr=lr, loss=loss.item(), **{k: v.item() for k, v in parts.items()},
                    seconds=round(time.time() - t0, 1))  # fmt: skip
            if step % tc["eval_every"] == 0 or step == tc["steps"]:
                metrics = evaluate()
                log("eval", step=step, **metrics)
                meta = {"step": step, "components": components, "train_config": cfg, **metrics}
                if metrics["val_loss"] < best_val:
                    best_val = metrics["val_loss"]
                    save(model, best_path, **meta, best_val=best_val)
                save(model, last_path, **meta, best_val=best_val)
    log("done", step=step, best_val=best_val, seconds=round(time.time() - t0, 1))
    log_file.close()
    return best_path if best_path.is_file() else last_path


def _scan_name(device: str) -> str:
    from loopexpose.methods.semantic.scan import cuda_kernel_available

    if str(device).startswith("cuda") and cuda_kernel_available():
        return "mamba-ssm CUDA selective scan"
    return "pure-PyTorch parallel selective scan"


@torch.no_grad()
def _recogniser_accuracy(recogniser, frames, masks, labels, is_val, device) -> float:
    recogniser.eval()
    hits = total = 0
    for frame, mask, label, val in zip(frames, masks, labels, is_val):
        if val and label >= 0:
            pred = recogniser.global_logits(frame[None].to(device)).argmax(-1).item()
            hits, total = hits + int(pred == label), total + 1
    return hits / max(total, 1)
