"""The malformed-input corpus (``tests/malformed.py``) through every command that reads images: a Markdown table.

Run from the repository root::

    .venv/bin/python bench/reliability_corpus.py            # the table of docs/reliability.md
    .venv/bin/python bench/reliability_corpus.py --cases    # also every file's outcome in `correct`

Each command runs in this process (typer's CliRunner, as the tests do) over the same generated files, in a
temporary folder: ``correct`` and ``prepare srgb`` on a folder of all the files, ``fuse`` and ``scenes`` on one
scene folder per file, ``eval`` on scenes of two good frames plus one file each (every file of the corpus), and
the web app's two handlers on every file as an upload. Counted: files processed, files refused with one line
naming them, files neither (missed), tracebacks (exceptions escaping the command), temporary files left, and the
exit code. The model is a CurveGrid with random heads (what it does to the pixels does not matter here).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import randomised_curvegrid  # noqa: E402
from malformed import corpus, write_corpus  # noqa: E402


def _invoke(args: list[str]):
    from typer.testing import CliRunner

    from loopexpose.cli import app

    result = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    return result, crashed


def _count(lines: list[str], cases, label: str) -> tuple[int, int]:
    refused = sum(1 for c in cases if sum(c.name in line for line in lines if line.startswith(label)) == 1)
    return refused, len([line for line in lines if line.startswith(label)])


def _leftovers(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")) if folder.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", action="store_true", help="also list each file's outcome in `correct`")
    options = parser.parse_args()

    from loopexpose.models import save

    cases = corpus()
    good = [c for c in cases if c.ok]
    bad = [c for c in cases if not c.ok]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = str(save(randomised_curvegrid(), tmp / "random.safetensors"))
        files = tmp / "files"
        write_corpus(files)
        scenes = tmp / "scenes"
        for case in cases:
            write_corpus(scenes / case.name.replace(".", "_"), [case])
        evals = tmp / "eval"
        frames = [c for c in good if c.name in ("plain.jpg", "cmyk.jpg")]
        for case in cases:
            if case.name not in ("plain.jpg", "cmyk.jpg"):
                write_corpus(evals / case.name.replace(".", "_"), [*frames, case])

        runs = {
            "correct": (["correct", str(files), "-o", str(tmp / "out-correct"), "--model", model], tmp / "out-correct",
                        "error:"),
            "fuse": (["fuse", str(scenes), "-o", str(tmp / "out-fuse")], tmp / "out-fuse", "error:"),
            "scenes": (["scenes", str(scenes)], scenes, "error:"),
            "eval": (["eval", str(evals), "-m", "identity", "--max-side", "64", "--no-gallery", "-o",
                      str(tmp / "out-eval")], tmp / "out-eval", "error:"),
            "prepare srgb": (["prepare", "srgb", str(files), "-o", str(tmp / "out-prepare"), "--workers", "1", "--ev",
                              "-1", "0"], tmp / "out-prepare", "failed:"),
        }  # fmt: skip
        outcome = {}
        for name, (args, out, label) in runs.items():
            result, crashed = _invoke(args)
            lines = result.stderr.splitlines()
            refused, error_lines = _count(lines, bad if name != "eval" else [c for c in cases if c not in frames], label)
            outcome[name] = lines
            rows.append((name, len(cases), refused, error_lines, int(crashed), _leftovers(out), result.exit_code))
        rows.append(_web(tmp, cases))

    print(f"{len(cases)} files: {len(good)} valid (processed by every command), {len(bad)} malformed.\n")
    print("| command | files | refused, one line naming the file | error lines | tracebacks | temp files left "
          "| exit code |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")
    if options.cases:
        print("\n| file | `correct` says |\n|---|---|")
        for case in cases:
            said = [line.split(": ", 2)[-1] for line in outcome["correct"] if case.name in line and "error" in line]
            print(f"| `{case.name}` | {said[0] if said else 'corrected'} |")


def _web(tmp: Path, cases) -> tuple:
    import gradio as gr

    from loopexpose.app import WebDemo, handle_correct, handle_fuse

    demo = WebDemo(models={"random": randomised_curvegrid()}, workdir=tmp / "web")
    folder = demo.uploads / "upload"
    write_corpus(folder, cases)
    refused = lines = crashed = 0
    plain = {"path": str(folder / "plain.jpg")}
    for case in cases:
        for handler, uploads in ((handle_correct, {"path": str(folder / case.name)}),
                                 (handle_fuse, [plain, {"path": str(folder / case.name)}])):  # fmt: skip
            try:
                handler(demo, uploads, "random")
            except gr.Error as exc:
                lines += 1
                refused += exc.message.startswith(f"{case.name}: ") and str(demo.workdir) not in exc.message
            except Exception:  # noqa: BLE001 - counted, not raised: this is what the table is for
                crashed += 1
    demo.close()
    return ("web handlers (correct + fuse)", 2 * len(cases), refused, lines, crashed, _leftovers(tmp / "web"), "-")


if __name__ == "__main__":
    main()
