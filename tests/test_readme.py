"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["fixed"].shape == namespace["photo"].shape
    assert namespace["fixed"].mean() > namespace["photo"].mean()  # the dark photo got brighter
    assert namespace["fused"].shape == namespace["loop_mef"].shape == namespace["photo"].shape
    assert "mean level" in capsys.readouterr().out
