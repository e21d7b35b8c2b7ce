"""The package's layout holds: every module imports on its own, shared modules never import a method, and the
methods never import each other, so no import cycle runs between packages (the registry imports the method
networks, and ``loopexpose.train`` the trainers, only when first used)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Imports every module of the package as the first loopexpose module of the process (the loopexpose entries of
# sys.modules are dropped before each, while torch and the rest stay loaded, which keeps this fast), and reports
# the loopexpose modules each import loaded, or the error it raised.
SCRIPT = r"""
import importlib, json, pathlib, sys, traceback
import loopexpose

root = pathlib.Path(loopexpose.__file__).parent
names = sorted(".".join(("loopexpose",) + p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
               for p in root.rglob("*.py") if p.name != "__main__.py")
report = {}
for name in names:
    for key in [k for k in sys.modules if k == "loopexpose" or k.startswith("loopexpose.")]:
        del sys.modules[key]
    try:
        importlib.import_module(name)
    except BaseException:
        report[name] = {"error": traceback.format_exc(limit=-3)}
        continue
    report[name] = {"loaded": sorted(k for k in sys.modules if k.startswith("loopexpose."))}
print(json.dumps(report))
"""

METHODS = "loopexpose.methods."


def _method(module: str) -> str | None:
    """``"loopexpose.methods.semantic.train"`` -> ``"semantic"``; ``None`` outside the method packages."""
    return module[len(METHODS) :].split(".")[0] if module.startswith(METHODS) else None


@pytest.fixture(scope="module")
def imports() -> dict[str, dict]:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_module_imports_first_in_a_fresh_process(imports):
    assert {"loopexpose.models.registry", "loopexpose.methods.loopexpose.train", "loopexpose.methods.semantic.network",
            "loopexpose.train", "loopexpose.cli"} <= set(imports)  # fmt: skip
    failed = {name: report["error"] for name, report in imports.items() if "error" in report}
    assert not failed, "\n".join(f"{name}:\n{error}" for name, error in failed.items())


def test_shared_modules_import_no_method(imports):
    """data, fusion, models (the registry), train (the entry), cli, ...: methods depend on them, never back."""
    leaks = {
        name: [m for m in report["loaded"] if _method(m)]
        for name, report in imports.items()
        if not _method(name) and "loaded" in report
    }
    assert not {name: methods for name, methods in leaks.items() if methods}


def test_methods_import_no_other_method(imports):
    crossings = {
        name: [m for m in report["loaded"] if _method(m) not in (None, _method(name))]
        for name, report in imports.items()
        if _method(name) and "loaded" in report
    }
    assert not {name: others for name, others in crossings.items() if others}


def test_every_method_has_the_same_shape(imports):
    """Each method package has its network, pseudo-labels, losses and training loop in the same four files."""
    methods = {_method(name) for name in imports if _method(name)}
    assert methods == {"loopexpose", "semantic"}
    for method in methods:
        for part in ("network", "labels", "losses", "train"):
            assert f"{METHODS}{method}.{part}" in imports
