"""README.md: at most 8 KB, and its "Use tCURLoRA on your own network" snippet runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from tcurseg import peft

README = Path(__file__).resolve().parents[1] / "README.md"
HEADING = "## Use tCURLoRA on your own network"
MAX_BYTES = 8192


def snippet() -> str:
    """The first ```python block after the snippet's heading, with no other heading in between."""
    text = README.read_text(encoding="utf-8")
    assert HEADING in text, f"README.md has no heading {HEADING!r}"
    block = re.search(r"^```python\n(.*?)^```", text.split(HEADING, 1)[1], flags=re.S | re.M)
    assert block, f"no ```python block under {HEADING!r}"
    before = text.split(HEADING, 1)[1][: block.start()]
    assert not re.search(r"^#{1,6} ", before, flags=re.M), f"the first ```python block is not under {HEADING!r}"
    return block.group(1)


def test_readme_at_most_8_kb():
    size = len(README.read_bytes())
    assert size <= MAX_BYTES, f"README.md is {size} bytes, the limit is {MAX_BYTES}"


def test_snippet_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the snippet writes adapter.safetensors into the working directory
    torch.manual_seed(0)
    namespace: dict = {"__name__": "readme_snippet"}
    exec(compile(snippet(), str(README), "exec"), namespace)  # raises if merged and unmerged outputs differ

    net, loaded, x, out = (namespace[k] for k in ("net", "loaded", "x", "out"))
    tensors, meta = peft.read_adapter(tmp_path / "adapter.safetensors")
    assert meta["method"] == "tcurlora" and meta["base_hash"]
    cores = [v for k, v in tensors.items() if ".dU." in k]
    assert cores and all(v.abs().max().item() > 0 for v in cores), "the training step left the cores at zero"

    with torch.no_grad():
        assert (loaded(x) - out).abs().max().item() < 1e-5
        peft.unmerge(net)
        assert (net(x) - out).abs().max().item() < 1e-5
    assert peft.trainable_report(loaded) == peft.trainable_report(net)
    assert peft.trainable_report(loaded)["adapter"] > 0
    trained, _ = peft.adapter_state(net)
    reloaded, _ = peft.adapter_state(loaded)
    assert trained.keys() == reloaded.keys()
    for key, value in trained.items():
        torch.testing.assert_close(reloaded[key], value, rtol=0, atol=0, msg=key)
