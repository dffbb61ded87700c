import pytest
import torch

torch.set_num_threads(1)

# The files that run the real entry points in subprocesses take most of the suite's time; under pytest-xdist
# (`-n auto --dist loadfile`, the README's command) they are handed out first, so that the short files fill the
# workers around them instead of one long file starting last.
LONG_FILES = ("test_e2e_stages.py", "test_e2e.py", "test_ddp.py", "test_ddp_methods.py", "test_export.py",
              "test_converters.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))
