"""How much of the gap to the label is exposure level: the bundled ``default`` model's PSNR to its bracket's label
(the Mertens fusion of the window's input frames, OpenCV's weights, as training and ``psnr_label`` in
``loopexpose eval`` use), by offset from the reference frame, for

* ``network``: the network alone (train mode: no exposure floor, no exposure blend),
* ``shipped``: the network with the exposure rules, as ``loopexpose.load("default")`` corrects,
* ``network, exact level`` and ``shipped, exact level``: the same results re-exposed, by one gain in linear
  light, to the mean luma of the label (:func:`loopexpose.exposure.expose_to_level`). A yardstick, not a method:
  the label is not available to a corrector. What remains is the gap in tone, colour and detail at the right level;

and the mean absolute level error, ``|log2(mean luma of result / mean luma of label)|``, of the shipped result;
``all`` is every frame of the windows. The same table against the reference frame (offset 0 left out; "exact
level" is then the reference's) follows, and last the reference frame itself against the label: its PSNR and level
error say how far the label's level is from a well-exposed photo of the scene, which no single frame can know
(the label's level depends on the bracket's other frames).

Run from the repository root with ``../shared/data`` (or ``$LOOPEXPOSE_DATA``)::

    .venv/bin/python bench/label_gap.py

Scenes: the 13 validation scenes of ``split_scenes(scan_brackets(<data>/brackets, min_frames=2), 0.1)`` and the 109
of the training split (which the network trained on: read that row as its fit), each scene's ``bracket-5`` window
at long side 512 (:func:`loopexpose.evaluate.load_window`). About 5 minutes on a 2-core CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import loopexpose  # noqa: E402
from exposure_floor import split_brackets  # noqa: E402
from loopexpose.baselines import mean_luma  # noqa: E402
from loopexpose.exposure import expose_to_level  # noqa: E402
from loopexpose.evaluate import load_window  # noqa: E402
from loopexpose.fusion import fuse  # noqa: E402
from loopexpose.metrics import psnr  # noqa: E402

OFFSETS = (-2, -1, 0, 1, 2)
COLUMNS = ("network", "shipped", "network, exact level", "shipped, exact level", "level error (EV)")


def scene_rows(model, frames: torch.Tensor, target: torch.Tensor, offsets: list[int]) -> dict[int, list[float]]:
    """Per frame of one window (``frames`` ``(N, 3, H, W)``, ``target`` ``(3, H, W)`` the label or the reference):
    the :data:`COLUMNS` values, keyed by offset."""
    with torch.no_grad():
        model.train()
        network = model(frames)["output"]
        model.eval()
        shipped = model(frames)["output"]
        level = mean_luma(target[None]).flatten().expand(len(frames))
        results = (network, shipped, expose_to_level(network, level), expose_to_level(shipped, level))
    error = (mean_luma(shipped).flatten() / level).log2().abs()
    return {
        offset: [psnr(result[i], target).item() for result in results] + [error[i].item()]
        for i, offset in enumerate(offsets)
    }


def main() -> None:
    torch.set_num_threads(2)
    if (split := split_brackets()) is None:
        return
    train, val = split
    model = loopexpose.load("default")
    for name, brackets in (("validation (13 scenes)", val), ("training split (109, seen in training)", train)):
        to_label: dict[int, list[list[float]]] = {}
        to_reference: dict[int, list[list[float]]] = {}
        reference_to_label = []
        for bracket in brackets:
            frames, start, reference = load_window(bracket, 512)
            ref = reference - start
            offsets = [i - ref for i in range(len(frames))]
            label = fuse(frames, preset="opencv").clamp(0, 1)
            level = (mean_luma(frames[ref][None]) / mean_luma(label[None])).log2().abs().item()
            reference_to_label.append((psnr(frames[ref], label).item(), level))
            for offset, row in scene_rows(model, frames, label, offsets).items():
                to_label.setdefault(offset, []).append(row)
            for offset, row in scene_rows(model, frames, frames[ref], offsets).items():
                if offset:
                    to_reference.setdefault(offset, []).append(row)
        for target, table in (("label", to_label), ("reference frame", to_reference)):
            print(f"\n{name}: PSNR (dB) to the {target}, by offset (frames)")
            print(f"{'':24}" + "".join(f"{o:>+8d}" for o in OFFSETS) + f"{'all':>8}")
            for c, column in enumerate(COLUMNS):
                cells = [np.mean([row[c] for row in table[o]]) if o in table else np.nan for o in OFFSETS]
                every = np.mean([row[c] for rows in table.values() for row in rows])
                print(f"{column:24}" + "".join(f"{v:8.2f}" for v in cells) + f"{every:8.2f}")
        psnr_label, level = np.mean(reference_to_label, 0)
        print(f"the reference frame itself to the label: {psnr_label:.2f} dB, level error {level:.2f} EV")


if __name__ == "__main__":
    main()
