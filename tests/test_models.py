import pytest
import torch

from tcurseg.engine.inference import sliding_window_predict
from tcurseg.models import (
    CNN_PRESETS,
    KeyReport,
    build_unetr,
    encoder_prefix,
    load_pretrained,
    resolve_cnn_modules,
    unetr_kwargs,
)

TINY = {
    "in_channels": 1,
    "out_channels": 2,
    "img_size": [32, 32, 32],
    "feature_size": 8,
    "hidden_size": 32,
    "mlp_dim": 64,
    "num_heads": 2,
}


class _Opaque:
    """A non-tensor object that weights_only=True refuses to unpickle."""

    def __init__(self, value: int) -> None:
        self.value = value


def _count(model: torch.nn.Module, prefixes: list[str]) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if any(n.startswith(f"{q}.") for q in prefixes))


def _tiny(seed: int = 0, **over) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_unetr({**TINY, **over})


def test_tiny_forward_shape():
    model = _tiny()
    out = model(torch.randn(1, 1, 32, 32, 32))
    assert out.shape == (1, 2, 32, 32, 32)
    assert len(model.vit.blocks) == 12


def test_unetr_b_presets_on_meta():
    with torch.device("meta"):
        model = build_unetr({"in_channels": 1, "out_channels": 2, "img_size": [96, 96, 96]})
    children = [name for name, _ in model.named_children()]
    assert children[0] == encoder_prefix
    assert sorted(CNN_PRESETS["default"]) == sorted(c for c in children if c != encoder_prefix)
    assert _count(model, CNN_PRESETS["default"]) == 4_443_106
    assert _count(model, CNN_PRESETS["paper"]) == 2_678_528
    assert model.vit.blocks[0].mlp.linear1.weight.shape == (3072, 768)


def test_unetr_defaults_are_monai_unetr_b():
    """Keys a model config leaves out take MONAI's UNETR defaults: UNETR-B (the exported bundle spells them all)."""
    assert unetr_kwargs({"in_channels": 1, "out_channels": 2, "img_size": [96, 96, 96]}) == {
        "in_channels": 1, "out_channels": 2, "img_size": [96, 96, 96], "feature_size": 16, "hidden_size": 768,
        "mlp_dim": 3072, "num_heads": 12, "norm_name": "instance", "res_block": True, "dropout_rate": 0.0,
        "qkv_bias": False, "proj_type": "conv"}


def test_build_unetr_validation():
    with pytest.raises(ValueError, match=r"model.img_size \[40, 32, 32\] must be divisible by the patch size 16"):
        build_unetr({**TINY, "img_size": [40, 32, 32]})
    with pytest.raises(ValueError, match="hidden_size 30 must be divisible by model.num_heads 4"):
        build_unetr({**TINY, "hidden_size": 30, "num_heads": 4})
    with pytest.raises(ValueError, match="3 entries"):
        build_unetr({**TINY, "img_size": [32, 32]})
    with pytest.raises(ValueError, match="model.in_channels"):
        build_unetr({"out_channels": 2, "img_size": [32, 32, 32]})


def test_resolve_cnn_modules():
    assert resolve_cnn_modules("paper") == CNN_PRESETS["paper"]
    assert resolve_cnn_modules(["out"]) == ["out"]
    with pytest.raises(ValueError, match="unknown CNN preset 'nope'"):
        resolve_cnn_modules("nope")


def _same(a: torch.nn.Module, b: torch.nn.Module, skip: tuple[str, ...] = ()) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items() if not k.startswith(skip))


@pytest.mark.parametrize("layout", ["ours", "monai", "authors"])
def test_load_pretrained_formats(tmp_path, layout):
    source = _tiny()
    state = source.state_dict()
    if layout == "ours":
        obj = {"model": state, "epoch": 3}
    elif layout == "monai":
        obj = state
    else:
        obj = {"epoch": 7, "state_dict": {f"module.model.{k}": v for k, v in state.items()}}
        obj["state_dict"]["module.model.lora_A"] = torch.zeros(2)
    path = tmp_path / "pre.pt"
    torch.save(obj, path)
    target = _tiny(seed=1)
    assert not _same(source, target)
    report = load_pretrained(target, path)
    assert _same(source, target)
    assert len(report.loaded) == len(state)
    assert report.missing == [] and report.mismatched == []
    assert report.unexpected == (["lora_A"] if layout == "authors" else [])
    assert report.notes == []


def test_load_pretrained_head_mismatch(tmp_path):
    source = _tiny(out_channels=4)
    torch.save(source.state_dict(), tmp_path / "brats.pt")
    target = _tiny(seed=1, out_channels=2)
    assert not _same(source, target, skip=("out.",))
    head_before = target.out.conv.conv.weight.clone()
    report = load_pretrained(target, tmp_path / "brats.pt")
    assert report.mismatched == ["out.conv.conv.bias", "out.conv.conv.weight"]
    assert torch.equal(target.out.conv.conv.weight, head_before)
    assert _same(source, target, skip=("out.",))
    text = str(report)
    assert "reinitialised (shape mismatch): 2" in text
    assert "out.conv.conv.weight (4, 8, 1, 1, 1)->(2, 8, 1, 1, 1)" in text


def test_load_pretrained_partial_and_errors(tmp_path):
    source = _tiny()
    partial = {k: v for k, v in source.state_dict().items() if k.startswith("vit.")}
    torch.save(partial, tmp_path / "enc.pt")
    report = load_pretrained(_tiny(), tmp_path / "enc.pt")
    assert report.missing and all(not k.startswith("vit.") for k in report.missing)
    assert f"missing (kept initialisation): {len(report.missing)}" in report.summary()

    with pytest.raises(FileNotFoundError, match="pretrained checkpoint not found: .*nothere.pt"):
        load_pretrained(_tiny(), tmp_path / "nothere.pt")
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt has no tensor matching the model"):
        load_pretrained(_tiny(), tmp_path / "other.pt")


def test_load_pretrained_needing_unpickling_is_refused_unless_trusted(tmp_path):
    source = _tiny()
    torch.save({"state_dict": source.state_dict(), "args": _Opaque(1)}, tmp_path / "old.pth")
    target = _tiny(seed=1)
    with pytest.raises(ValueError, match=r"old\.pth holds objects beyond tensors .* pretrained_trusted=true"):
        load_pretrained(target, tmp_path / "old.pth")
    assert not _same(source, target)
    with pytest.warns(UserWarning, match="weights_only=False"):
        report = load_pretrained(target, tmp_path / "old.pth", trusted=True)
    assert isinstance(report, KeyReport)
    assert len(report.notes) == 1 and "pretrained_trusted" in report.notes[0]
    assert _same(source, target)


def test_sliding_window_predict_odd_volume():
    model = _tiny()
    model.train()
    image = torch.randn(1, 1, 40, 35, 50)
    logits = sliding_window_predict(model, image, roi_size=[32, 32, 32], overlap=0.25)
    assert logits.shape == (1, 2, 40, 35, 50)
    assert logits.dtype == torch.float32 and not logits.requires_grad
    assert model.training
    with pytest.raises(ValueError, match=r"\(B, C, D, H, W\)"):
        sliding_window_predict(model, image[0], roi_size=[32, 32, 32])


def test_sliding_window_predict_mirroring_averages_flipped_predictions():
    model = _tiny()
    image = torch.randn(1, 1, 32, 32, 32)
    plain = sliding_window_predict(model, image, roi_size=[32, 32, 32])
    flipped = sliding_window_predict(model, image.flip(2), roi_size=[32, 32, 32]).flip(2)
    mirrored = sliding_window_predict(model, image, roi_size=[32, 32, 32], mirror_axes=[0])
    assert (plain - flipped).abs().max() > 1e-3  # the network is not symmetric, so mirroring changes the logits
    torch.testing.assert_close(mirrored, (plain + flipped) / 2, rtol=1e-5, atol=1e-5)
    both = sliding_window_predict(model, image, roi_size=[32, 32, 32], mirror_axes=[2, 0])
    flips = [[], [2], [4], [2, 4]]
    expected = sum(sliding_window_predict(model, image.flip(d), roi_size=[32, 32, 32]).flip(d) for d in flips) / 4
    torch.testing.assert_close(both, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"mirror axes are spatial axes 0, 1, 2, got \[3\]"):
        sliding_window_predict(model, image, roi_size=[32, 32, 32], mirror_axes=[3])
