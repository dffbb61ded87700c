import os

import pytest
import torch
from e2e_support import TrainedRun, make_trained_run
from filelock import FileLock

torch.set_num_threads(1)

# The files that run the real entry points in subprocesses take most of the suite's time; under pytest-xdist
# (`-n auto --dist loadfile`, the README's command) they are handed out first, so that the short files fill the
# workers around them instead of one long file starting last.
LONG_FILES = ("test_e2e_stages.py", "test_e2e.py", "test_e2e_flows.py", "test_e2e_demo.py", "test_preemption.py", "test_ddp.py",
              "test_gpu_check.py", "test_gpu_path.py", "test_ddp_methods.py", "test_export.py", "test_converters.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """The one tiny trained run of the end-to-end tests (``e2e_support.make_trained_run``). Under pytest-xdist the
    workers share it: it lives in the session's common temporary folder, and the first worker to ask trains it while
    the others wait on a file lock, then find it made."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    root = base / "trained_run"
    root.mkdir(exist_ok=True)
    with FileLock(str(root / ".lock")):
        return make_trained_run(root)
