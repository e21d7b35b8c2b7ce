"""Peer comparison: UEC (Cui et al., "Unsupervised Exposure Correction", ECCV 2024) beside ``gain`` and
``model:default`` on the validation scenes, ``bracket-5`` protocol (:func:`loopexpose.evaluate.evaluate_bracket5`).

Run from the repository root, with a local checkout of the authors' code (github.com/BeyondHeaven/uec_code,
non-commercial research licence: it is run from its own folder as a peer, never copied or bundled here), and
``../shared/data`` or ``$LOOPEXPOSE_DATA``::

    .venv/bin/python bench/uec_peer.py --uec-code ../uec_code -o reports/uec_peer
    .venv/bin/python bench/uec_peer.py --uec-code ../uec_code \\
        --checkpoint ../uec_code/checkpoints/radiometry/latest_net_G.pth --reference ref.jpg -o reports/uec_radiometry
    UEC_CODE=../uec_code .venv/bin/python bench/uec_peer.py

Without a checkout (no ``--uec-code``, no ``$UEC_CODE``) it prints ``skipped: no UEC checkout`` and exits 0. It
needs torch only: UEC's network (``models/uec/networks.py``) is imported from the checkout at run time; the
torchvision parts of that code (data loaders, options) are not used.

What UEC does to one frame, as the authors' ``test.py`` (``models/uec_model.py``, ``forward``): three passes of
``img = netG(img, reference)``. Each pass predicts one scalar from encoder statistics of the image and of a fixed
well-exposed *reference photo* (the same photo for every input), and blends a learned per-pixel colour map
(1x1 convolutions) with the image by that scalar. Here every frame is corrected on its own, at the evaluation
size (long side 512); the network resizes its encoder input to 256 rows itself. The reference is resized to
256 x 256, as the authors' test loader does. Their test reference, ``a0001-jmac_DSC1459.jpg`` from the MSEC
ground truth, is not in their repository; without ``--reference`` the stand-in is scikit-image's ``astronaut``
photo (mean luma 0.45, near the protocol's mid-grey 118/255). Default checkpoint: the authors' model trained on
Afifi's exposure-errors (MSEC) data, ``checkpoints/exposure-errors/latest_net_G.pth`` in the checkout.

Scenes: ``scan_brackets(<data root>/brackets, min_frames=2)``, validation part of ``split_scenes(..., 0.1)``
(the split of training and of the README's results); ``--split train`` scores the other 109 scenes instead
(unseen by UEC, but ``default`` trained on them: a check on how far the validation scenes' ranking carries). Prints the summary (PSNR and SSIM against the reference
frame, consistency, MEF-SSIM, PSNR against the Mertens label, highlight chroma added with its 90th percentile
over frames) and PSNR / SSIM by input offset, and writes the usual report (``report.md``, ``report.json``, CSVs,
plots) under ``-o``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from loopexpose import evaluate
from loopexpose.data import scan_brackets, split_scenes
from loopexpose.paths import data_root

EXPOSURE_ERRORS = Path("checkpoints") / "exposure-errors" / "latest_net_G.pth"
REFERENCE_SIZE = 256  # the authors' --load_size: their test loader resizes the reference to 256 x 256
PASSES = 3  # UECModel.forward applies the network three times at test time
SUMMARY_METRICS = ("psnr", "ssim", "consistency", "mef_ssim", "psnr_label", "chroma_added")


def import_uec_network(code: Path) -> type[torch.nn.Module]:
    """``UECNetwork`` from ``<code>/models/uec/networks.py``, imported by its own package path.

    The checkout's top-level packages have generic names (``models``, ``data``, ``util``), so its folder is on
    ``sys.path`` only for this import, and a ``models`` package from anywhere else is refused.
    """
    code = code.resolve()
    loaded = sys.modules.get("models")
    if loaded is not None and not Path(getattr(loaded, "__file__", "") or "").resolve().is_relative_to(code):
        raise RuntimeError(f"a different 'models' package is already imported ({loaded.__file__})")
    sys.path.insert(0, str(code))
    try:
        from models.uec.networks import UECNetwork  # the UEC checkout, not loopexpose.models
    finally:
        sys.path.remove(str(code))
    source = Path(sys.modules[UECNetwork.__module__].__file__).resolve()
    if not source.is_relative_to(code):
        raise RuntimeError(f"UECNetwork came from {source}, not from {code}")
    return UECNetwork


def load_uec(code: Path, checkpoint: Path, device: str = "cpu") -> torch.nn.Module:
    """The UEC network with a checkpoint's weights (a plain state dict; every key must match)."""
    network = import_uec_network(code)()
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    network.load_state_dict(state, strict=True)
    return network.to(device).eval()


def load_reference(path: Path | None, device: str = "cpu") -> tuple[torch.Tensor, str]:
    """``((1, 3, 256, 256) in [0, 1], description)``: the reference photo, resized as the authors' loader does
    (``ToTensor`` then ``Resize((256, 256))``, bilinear with antialiasing)."""
    if path is None:
        from skimage import data

        pixels, text = data.astronaut().astype(np.float32) / 255.0, "scikit-image astronaut (stand-in)"
    else:
        from loopexpose.io import read_image

        pixels, text = read_image(path).pixels, path.name
    image = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1)[None]
    image = F.interpolate(image, size=(REFERENCE_SIZE, REFERENCE_SIZE), mode="bilinear", antialias=True)
    return image.clamp(0, 1).to(device), text


def uec_runner(network: torch.nn.Module, reference: torch.Tensor, passes: int = PASSES) -> Callable:
    """``run(frames (N, 3, H, W)) -> (N, 3, H, W)``, all in [0, 1]: each frame alone through ``passes`` passes
    of ``network(image, reference)``, as ``UECModel.forward`` at test time."""

    def run(frames: torch.Tensor) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for frame in frames.to(reference.device):
                image = frame[None]
                for _ in range(passes):
                    image = network(image, reference)[0]
                out.append(image[0])
        return torch.stack(out).clamp(0, 1).to(frames.device)

    return run


def print_tables(results: evaluate.EvalResults) -> None:
    summary = results.summary()
    chroma = results.frame_percentiles("chroma_added", 90)
    names = [m["name"] for m in results.methods]
    width = max(len(n) for n in names) + 2
    print(f"\n{len(results.scenes)} scenes, means over scenes (chroma+ frames: mean and p90 over frames)")
    print("method".ljust(width) + "  PSNR   SSIM  consist  MEF-SSIM  PSNR-label  chroma+  frames mean / p90")
    for name in names:
        s = {metric: summary[name].get(metric, np.nan) for metric in SUMMARY_METRICS}
        mean, p90, _ = chroma.get(name, (np.nan, np.nan, 0))
        print(f"{name:{width}s}{s['psnr']:6.2f} {s['ssim']:6.4f} {s['consistency']:7.2f} {s['mef_ssim']:9.4f}"
              f" {s['psnr_label']:11.2f} {s['chroma_added']:8.2f} {mean:11.2f} / {p90:.2f}")  # fmt: skip
    for metric, digits in (("psnr", 2), ("ssim", 4)):
        curves = results.by_offset(metric)
        offsets = sorted({o for c in curves.values() for o in c})
        print(f"\n{metric.upper()} by input offset (frames from the reference)")
        print("method".ljust(width) + "".join(f"{o:+9d}" for o in offsets))
        for name in names:
            print(f"{name:{width}s}" + "".join(f"{curves[name].get(o, np.nan):9.{digits}f}" for o in offsets))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uec-code", type=Path, default=os.environ.get("UEC_CODE") or None,
                        help="UEC checkout (default: $UEC_CODE)")  # fmt: skip
    parser.add_argument("--checkpoint", type=Path, help=f"UEC weights (default: <checkout>/{EXPOSURE_ERRORS})")
    parser.add_argument("--reference", type=Path, help="well-exposed reference photo (default: scikit-image astronaut)")
    parser.add_argument("--passes", type=int, default=PASSES)
    parser.add_argument("--model", default="default", help="our model beside UEC (bundled name or .safetensors)")
    parser.add_argument("--max-side", type=int, default=512)
    parser.add_argument("--split", choices=("val", "train"), default="val", help="scenes to score (default: val)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("-o", "--out", type=Path, default=Path("reports/uec_peer"))
    args = parser.parse_args()

    if args.uec_code is None or not (args.uec_code / "models" / "uec" / "networks.py").is_file():
        where = f" at {args.uec_code}" if args.uec_code is not None else " (give --uec-code PATH or set UEC_CODE)"
        print(f"skipped: no UEC checkout{where}")
        return 0
    brackets_root = data_root() / "brackets"
    if not brackets_root.is_dir():
        print(f"skipped: no brackets at {brackets_root} (set LOOPEXPOSE_DATA)")
        return 0
    checkpoint = args.checkpoint or args.uec_code / EXPOSURE_ERRORS
    for path in (checkpoint, args.reference):
        if path is not None and not path.is_file():
            parser.error(f"not a file: {path}")
    torch.set_num_threads(args.threads)

    reference, reference_text = load_reference(args.reference)
    uec = evaluate.Method(
        name="uec",
        kind="sec",
        run=uec_runner(load_uec(args.uec_code, checkpoint), reference, args.passes),
        description=f"UEC (Cui et al. 2024), peer: weights {checkpoint.parent.name}/{checkpoint.name}, "
        f"reference {reference_text}, {args.passes} passes",
    )
    methods = [uec, *evaluate.build_methods(["gain", f"model:{args.model}"], model_fusion=False)]
    train, val = split_scenes(scan_brackets(brackets_root, min_frames=2), 0.1)
    results = evaluate.evaluate_bracket5(
        val if args.split == "val" else train, methods, max_side=args.max_side, progress=lambda key: print(f"  {key}", file=sys.stderr, flush=True)
    )
    report = evaluate.write_report(results, args.out, command=shlex.join(["python", *sys.argv]))
    print_tables(results)
    print(f"\nreport: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
