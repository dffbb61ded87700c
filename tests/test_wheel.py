"""``pip install .`` builds a wheel that carries the Hydra configs: installed into a fresh virtual environment (no
editable link to this checkout), ``python -m tcurseg.train --help`` works from another directory and reads the
packaged ``tcurseg/conf``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list, cwd: Path) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd[:4]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_wheel_ships_conf_and_runs_help_from_another_directory(tmp_path):
    source = tmp_path / "source"  # a copy, so that the build leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for name in ("conf", "tcurseg"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist",
          source], tmp_path)
    wheel = next((tmp_path / "dist").glob("tcurseg-*.whl"))
    # the wheel's dependencies come from this interpreter's site-packages; tcurseg itself only from the wheel
    venv.create(tmp_path / "venv", system_site_packages=True, with_pip=False)
    python = tmp_path / "venv" / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel], tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run([python, "-c", "import tcurseg.paths as p; print(p.__file__); print(p.conf_dir())"], elsewhere)
    module, conf = (Path(line) for line in where.split())
    assert module.is_relative_to(tmp_path / "venv") and conf == module.parent / "conf"
    assert (conf / "method" / "tcurlora.yaml").is_file() and (conf / "experiment" / "demo.yaml").is_file()
    text = _run([python, "-m", "tcurseg.train", "--help"], elsewhere)
    assert "+experiment=NAME" in text and "tcurlora" in text and "demo" in text
