"""The pretrained weights people have, each fabricated in its layout: the authors' DataParallel checkpoint, MONAI
research-contributions UNETR (perceptron patch embedding, legacy ``cls_token``), MONAI's self-supervised ``ViTAutoEnc``
(no ``vit.`` prefix, decoder extras), ``backbone.`` prefixes; the encoder count of the key report; an incomplete
encoder refused for an encoder adapter; position embeddings interpolated to another ``img_size``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.networks.nets import ViTAutoEnc

from tcurseg.models import build_unetr, load_pretrained, require_complete_encoder
from tcurseg.models.checkpoint import KeyReport

TINY = {"in_channels": 1, "out_channels": 2, "img_size": [32, 32, 32], "feature_size": 8, "hidden_size": 32,
        "mlp_dim": 64, "num_heads": 2}


def _tiny(seed: int = 0, **over) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_unetr({**TINY, **over})


def _encoder_total(model: torch.nn.Module) -> int:
    return sum(1 for k in model.state_dict() if k.startswith("vit.") and "norm_cross_attn" not in k)


def _same_encoder(a: dict, model: torch.nn.Module) -> bool:
    """Every encoder tensor of ``model`` is in ``a`` (under the model's key) and equal to it: an ``a`` whose keys
    match nothing is not the same encoder."""
    encoder = {k: v for k, v in model.state_dict().items() if k.startswith("vit.") and "norm_cross_attn" not in k}
    assert len(encoder) == _encoder_total(model) > 100
    return all(k in a and torch.equal(a[k], v) for k, v in encoder.items())


def test_same_encoder_needs_every_encoder_tensor():
    source, other = _tiny(), _tiny(seed=1)
    state = source.state_dict()
    assert _same_encoder(state, source) and not _same_encoder(state, other)
    assert not _same_encoder({}, source)  # nothing matched: not the same
    assert not _same_encoder({f"module.{k}": v for k, v in state.items()}, source)  # keys not mapped
    assert not _same_encoder({k: v for k, v in state.items() if "blocks.11." not in k}, source)


def test_authors_dataparallel_checkpoint(tmp_path):
    source = _tiny()
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 300,
                "optim_dict": {"state": {}, "param_groups": []}}, tmp_path / "authors.pth")
    target = _tiny(seed=1)
    report = load_pretrained(target, tmp_path / "authors.pth")
    assert report.encoder_loaded == report.encoder_total == _encoder_total(target) > 100
    assert f"encoder: {report.encoder_total}/{report.encoder_total} tensors" in report.summary()
    assert _same_encoder(source.state_dict(), target)


@pytest.mark.parametrize("prefix", ["backbone.", "model.", "module.backbone."])
def test_prefixed_keys(tmp_path, prefix):
    source = _tiny()
    torch.save({f"{prefix}{k}": v for k, v in source.state_dict().items()}, tmp_path / "w.pt")
    report = load_pretrained(_tiny(seed=1), tmp_path / "w.pt")
    assert report.encoder_loaded == report.encoder_total and report.unexpected == []


def test_research_contributions_unetr_perceptron(tmp_path):
    source = _tiny(proj_type="perceptron")
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state["backbone.vit.patch_embedding.cls_token"] = torch.zeros(1, 1, 32)  # a legacy extra of these files
    assert "module.vit.patch_embedding.patch_embeddings.1.weight" in state
    torch.save({"epoch": 5000, "best_acc": 0.8, "state_dict": state}, tmp_path / "UNETR_model_best_acc.pth")

    target = _tiny(seed=1, proj_type="perceptron")
    report = load_pretrained(target, tmp_path / "UNETR_model_best_acc.pth")
    assert report.encoder_loaded == report.encoder_total
    assert _same_encoder(source.state_dict(), target)
    assert report.unexpected == [] and any("vit.patch_embedding.cls_token" in n for n in report.notes)
    require_complete_encoder(report, "tcurlora")

    # the same file into the default (convolutional) patch embedding: incomplete, with the way out named
    conv = _tiny(seed=1)
    report = load_pretrained(conv, tmp_path / "UNETR_model_best_acc.pth")
    assert report.encoder_loaded == report.encoder_total - 2
    assert any("model.proj_type=perceptron" in n for n in report.notes)
    refusal = r"encoder was loaded in part \(135/137 tensors.*model.proj_type=perceptron"
    with pytest.raises(ValueError, match=refusal) as err:
        require_complete_encoder(report, "tcurlora")
    assert "\n" not in str(err.value)
    require_complete_encoder(report, "full")  # full fine-tuning trains whatever was not loaded


def test_a_report_that_counted_no_encoder_tensor_is_not_complete():
    empty = KeyReport(path="w.pt", encoder_prefix="vit.")
    with pytest.raises(ValueError, match=r"w\.pt: no vit\.\* tensor of the model was counted.*method=tcurlora"):
        require_complete_encoder(empty, "tcurlora")
    require_complete_encoder(empty, "full")  # full fine-tuning freezes nothing


def test_monai_self_supervised_vit_autoenc(tmp_path):
    torch.manual_seed(0)
    ssl = ViTAutoEnc(in_channels=1, img_size=(32, 32, 32), patch_size=(16, 16, 16), hidden_size=32, mlp_dim=64,
                     num_layers=12, num_heads=2)
    state = ssl.state_dict()
    assert any(k.startswith("conv3d_transpose") for k in state) and not any(k.startswith("vit.") for k in state)
    torch.save({"epoch": 10, "state_dict": state}, tmp_path / "ssl_vit.pt")
    target = _tiny(seed=1)
    report = load_pretrained(target, tmp_path / "ssl_vit.pt")
    assert report.encoder_loaded == report.encoder_total
    assert _same_encoder({f"vit.{k}": v for k, v in state.items()}, target)
    assert all(k.startswith("conv3d_transpose") for k in report.unexpected)
    assert report.missing and not any(k.startswith("vit.") and "norm_cross_attn" not in k for k in report.missing)
    require_complete_encoder(report, "lora")


def test_position_embeddings_interpolated_to_another_img_size(tmp_path):
    source = _tiny()  # grid 2 x 2 x 2
    with torch.no_grad():
        source.vit.patch_embedding.position_embeddings.fill_(0.25)
    torch.save(source.state_dict(), tmp_path / "w32.pt")
    target = _tiny(seed=1, img_size=[64, 64, 48])  # grid 4 x 4 x 3
    report = load_pretrained(target, tmp_path / "w32.pt")
    pos = target.vit.patch_embedding.position_embeddings
    assert pos.shape == (1, 48, 32)
    assert torch.allclose(pos, torch.full_like(pos, 0.25))
    assert report.encoder_loaded == report.encoder_total and report.mismatched == []
    assert any("interpolated" in n and "(2, 2, 2) -> (4, 4, 3)" in n for n in report.notes)


def test_same_grid_loads_the_embeddings_unchanged(tmp_path):
    source = _tiny()
    torch.save(source.state_dict(), tmp_path / "w.pt")
    target = _tiny(seed=1)
    report = load_pretrained(target, tmp_path / "w.pt")
    assert not any("interpolated" in n for n in report.notes)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(source.eval()(x), target.eval()(x))


def test_interpolation_is_trilinear_over_the_patch_grid():
    """A field linear along one grid axis stays linear in the interior after doubling the grid."""
    from tcurseg.models.checkpoint import interpolate_position_embeddings

    grid = torch.arange(4.0).reshape(4, 1, 1).expand(4, 2, 2)  # value = index along the first axis
    pos = grid.reshape(1, 16, 1)
    out = interpolate_position_embeddings(pos, (4, 2, 2), (8, 2, 2)).reshape(8, 2, 2)
    assert torch.allclose(out[1:-1, 0, 0], torch.tensor([0.25, 0.75, 1.25, 1.75, 2.25, 2.75]))


def test_training_refuses_an_encoder_adapter_on_an_incomplete_encoder(tmp_path):
    """Through ``build_model``: research-contributions weights into the demo's conv patch embedding are refused for
    tCURLoRA, and load completely once ``model.proj_type=perceptron`` is set."""
    from hydra import compose, initialize_config_dir

    from tcurseg.engine.trainer import build_model, model_config

    def cfg(*overrides: str):
        with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base=None):
            return compose(config_name="config", overrides=["+experiment=demo", f"pretrained={tmp_path}/w.pth",
                                                            *overrides])

    perceptron = cfg("model.proj_type=perceptron")
    torch.save({"state_dict": build_unetr(model_config(perceptron)).state_dict()}, tmp_path / "w.pth")
    refusal = r"encoder was loaded in part .* method=tcurlora .* model.proj_type=perceptron"
    with pytest.raises(ValueError, match=refusal):
        build_model(cfg())
    assert build_model(perceptron).vit.patch_embedding.proj_type == "perceptron"


@pytest.mark.parametrize("head_init", ["random", "zero"])
def test_head_for_other_classes_starts_as_head_init_says(tmp_path, head_init):
    """A pretrained head for 4 classes does not fit the demo's 2: ``head_init=zero`` starts it at zero (softmax 1/2
    everywhere, whatever the seed), ``random`` keeps MONAI's init; the rest of the network is the file's either way,
    and the head trains."""
    from hydra import compose, initialize_config_dir

    from tcurseg.engine.trainer import build_model, model_config

    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base=None):
        cfg = compose(config_name="config", overrides=["+experiment=demo", f"pretrained={tmp_path}/w.pt",
                                                       "method=decoder_only", f"head_init={head_init}"])
    source = build_unetr({**model_config(cfg), "out_channels": 4})
    torch.save(source.state_dict(), tmp_path / "w.pt")
    model = build_model(cfg)
    head = model.out.conv.conv
    assert head.weight.shape[0] == 2 and head.weight.requires_grad
    norm = float(head.weight.norm() + head.bias.norm())
    assert (norm == 0.0) == (head_init == "zero")
    assert torch.equal(model.decoder2.transp_conv.conv.weight, source.decoder2.transp_conv.conv.weight)
