"""Ships the top-level ``conf/`` (the Hydra configs users edit) inside the wheel as ``tcurseg/conf``; an editable
install reads ``conf/`` in place (``tcurseg.paths.conf_dir``). Everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithConf(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            shutil.copytree(Path(__file__).resolve().parent / "conf", Path(self.build_lib) / "tcurseg" / "conf",
                            dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithConf})
