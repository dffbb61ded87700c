"""Where the Hydra configs are: the repository's top-level ``conf/`` (what users edit) in a source checkout or an
editable install, or the copy a wheel ships inside the package (``tcurseg/conf``, see ``setup.py``)."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def conf_dir() -> Path:
    """The config directory: ``tcurseg/conf`` when the package ships one (a wheel install), else ``<repo>/conf``."""
    packaged = _PACKAGE / "conf"
    return packaged if packaged.is_dir() else _PACKAGE.parent / "conf"
