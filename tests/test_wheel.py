"""``pip install .`` builds a wheel that carries the Hydra configs: installed into a fresh virtual environment (no
editable link to this checkout), ``python -m tcurseg.train --help`` works from another directory and reads the
packaged ``tcurseg/conf``.

The new environment is isolated (no system site-packages) and sees the wheel's dependencies through a ``.pth`` file
that lists this interpreter's import path without the checkout: the same packages whether pytest runs in the system
Python, a venv or a conda env (``venv.create(system_site_packages=True)`` would give the *base* interpreter's
site-packages, which inside a venv lack the dependencies)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list, cwd: Path) -> str:
    # PYTHONPATH would put its folders (the checkout, say) before the wheel; the .pth file carries what it adds
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd[:4]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def import_path_without_checkout() -> list[str]:
    """The folders this interpreter imports from (site-packages of a venv, conda env, user site, ``.pth`` entries),
    without the checkout and its subfolders, so that ``tcurseg`` can only come from the wheel."""
    folders = []
    for entry in sys.path:
        path = Path(entry or ".").resolve()
        if path.is_dir() and not path.is_relative_to(REPO) and str(path) not in folders:
            folders.append(str(path))
    return folders


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
    env = tmp_path / "venv"
    venv.create(env, system_site_packages=False, with_pip=False)
    python = env / "bin" / "python"
    site_packages = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path)
                         .strip())
    assert site_packages.is_relative_to(env) and site_packages != Path(sysconfig.get_path("purelib"))
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel], tmp_path)
    # after the install, so that pip sees an empty environment (not this interpreter's editable tcurseg)
    (site_packages / "outer_interpreter.pth").write_text("".join(f"{p}\n" for p in import_path_without_checkout()))

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run([python, "-c", "import tcurseg.paths as p; print(p.__file__); print(p.conf_dir())"], elsewhere)
    module, conf = (Path(line) for line in where.split())
    assert module.is_relative_to(site_packages) and conf == module.parent / "conf"
    assert (conf / "method" / "tcurlora.yaml").is_file() and (conf / "experiment" / "demo.yaml").is_file()
    text = _run([python, "-m", "tcurseg.train", "--help"], elsewhere)
    assert "+experiment=NAME" in text and "tcurlora" in text and "demo" in text
