"""Hand a fine-tuned model to plain MONAI: its adapter merged into the weights, no tcurseg module inside.

    python -m tcurseg.export run=outputs/<date>/<run> out=bundle_dir                 # a MONAI bundle
    python -m tcurseg.export run=outputs/<date>/<run> out=weights.pt format=state_dict

A bundle holds ``configs/metadata.json``, ``configs/inference.json`` (the same transforms, spacing, sliding window
and label values as ``tcurseg.evaluate``) and ``models/model.pt`` (the merged MONAI network's state dict); run it with
MONAI's own runner: ``python -m monai.bundle run --config_file bundle_dir/configs/inference.json
--bundle_root bundle_dir --dataset_dir <folder of images>``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from tcurseg.cli import user_errors
from tcurseg.paths import conf_dir

log = logging.getLogger("tcurseg.export")

AXCODES = "RAS"
META_SCHEMA = ("https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
               "meta_schema_20220324.json")


def plain_network(model: Any, run_cfg: DictConfig) -> Any:
    """The MONAI network of ``run_cfg`` holding the weights of ``model`` with its adapter merged (W0 + dW). Keys of
    wrapped layers (HF peft's ``...base_layer.weight``) map back to the plain layer's."""
    from tcurseg.engine.inference import merged_for_inference
    from tcurseg.engine.trainer import model_config
    from tcurseg.models import build_network

    merged_model = merged_for_inference(model)
    # the merged weights themselves (a merged model refuses state_dict(): it would hold dW twice for tcurseg)
    merged = {**dict(merged_model.named_parameters()), **dict(merged_model.named_buffers())}
    plain = build_network(model_config(run_cfg))
    state = {}
    for key in plain.state_dict():
        parent, _, leaf = key.rpartition(".")
        wrapped = f"{parent}.base_layer.{leaf}" if parent else f"base_layer.{leaf}"
        state[key] = merged[key] if key in merged else merged[wrapped]
    plain.load_state_dict({k: v.detach() for k, v in state.items()})
    return plain.eval()


def network_definition(model_cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(MONAI class path, keyword arguments) that rebuild the network of a model config without tcurseg."""
    from tcurseg.models.swin_unetr import swin_unetr_kwargs
    from tcurseg.models.unetr import unetr_kwargs

    name = str(model_cfg.get("name", "unetr"))
    if name == "unetr":
        return "monai.networks.nets.UNETR", unetr_kwargs(model_cfg)
    if name == "swin_unetr":
        return "monai.networks.nets.SwinUNETR", swin_unetr_kwargs(model_cfg)
    raise ValueError(f"model.name={name}: no bundle export for this network")


def _transforms(data: Mapping) -> list[dict]:
    steps: list[dict] = [
        {"_target_": "LoadImaged", "keys": "image", "image_only": True},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": AXCODES,
         "labels": [["L", "R"], ["P", "A"], ["I", "S"]]},
    ]
    if data.get("spacing"):
        steps += [{"_target_": "Spacingd", "keys": "image", "pixdim": [float(v) for v in data["spacing"]],
                   "mode": "bilinear"},
                  {"_target_": "CropForegroundd", "keys": "image", "source_key": "image", "allow_smaller": True}]
    steps += [{"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True, "channel_wise": True},
              {"_target_": "EnsureTyped", "keys": "image"}]
    return steps


def _keep_components(data: dict, values: list[int], run_cfg: DictConfig) -> list[dict]:
    """The run's ``eval.keep_components`` as MONAI ``KeepLargestConnectedComponentd`` transforms on the class indices
    of ``values`` (the label value of each class)."""
    from tcurseg.engine.evaluator import inference_options

    keep = inference_options({}, run_cfg)["keep_components"]
    return [{"_target_": "KeepLargestConnectedComponentd", "keys": "pred", "is_onehot": False, "independent": False,
             "applied_labels": [values.index(v) for v in data["regions"][region] if v in values],
             "num_components": count, "connectivity": 3}
            for region, count in keep.items()]


def inference_config(run_cfg: DictConfig, sw_batch_size: int = 4) -> dict:
    """A MONAI bundle inference config equivalent to ``tcurseg.predict``: the evaluation transforms, a sliding window
    of the training roi, softmax, the inverse transforms onto each scan's grid, argmax, the run's
    ``eval.keep_components``, the original label values. A run's ``eval.mirror_axes`` is not carried over (MONAI's
    bundle inferer does not mirror): the bundle predicts without test-time mirroring."""
    from tcurseg.data.transforms import class_values
    from tcurseg.engine.trainer import model_config

    data = OmegaConf.to_container(run_cfg.data, resolve=True)
    target, kwargs = network_definition(model_config(run_cfg))
    roi = [int(v) for v in run_cfg.model.img_size]
    values = class_values(data)
    return {
        "imports": ["$import glob", "$import os", "$import numpy"],
        "bundle_root": ".",
        "dataset_dir": "images",
        "output_dir": "$@bundle_root + '/eval'",
        "datalist": "$list(sorted(glob.glob(os.path.join(@dataset_dir, '*.nii*'))))",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "network_def": {"_target_": target, **kwargs},
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": _transforms(data)},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]",
                    "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": roi, "sw_batch_size": sw_batch_size,
                    "overlap": float(run_cfg.eval.overlap)},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
             "nearest_interp": False, "to_tensor": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            *_keep_components(data, values, run_cfg),
            {"_target_": "MapLabelValued", "keys": "pred", "orig_labels": list(range(len(values))),
             "target_labels": values},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
             "output_dtype": "$numpy.uint8", "resample": False, "separate_folder": False, "print_log": False},
        ]},
        "handlers": [{"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                      "load_dict": {"model": "@network"}, "map_location": "@device"}],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "val_handlers": "@handlers", "amp": False},
        "run": ["$@evaluator.run()"],
    }


def metadata(run_cfg: DictConfig, source: Path) -> dict:
    """The bundle's ``metadata.json``: versions, what the network takes and gives, where it came from."""
    import monai
    import torch

    from tcurseg import __version__
    from tcurseg.data.transforms import class_values

    roi = [int(v) for v in run_cfg.model.img_size]
    labels = {str(c): v for c, v in enumerate(class_values(run_cfg.data))}
    channels = int(run_cfg.data.in_channels)
    return {
        "schema": META_SCHEMA,
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported by tcurseg {__version__}"},
        "monai_version": monai.__version__, "pytorch_version": torch.__version__.split("+")[0],
        "name": f"{run_cfg.data.name} {run_cfg.method.name}",
        "task": f"segmentation of {', '.join(run_cfg.data.regions)}",
        "description": f"MONAI {run_cfg.model.name} fine-tuned with {run_cfg.method.name} (adapter merged) by tcurseg",
        "authors": "tcurseg", "copyright": "see the training data's licence",
        "source": str(source.resolve()),
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "modality": "MR", "num_channels": channels,
                                 "spatial_shape": roi, "dtype": "float32", "value_range": [], "is_patch_data": True,
                                 "channel_def": {str(i): f"channel {i}" for i in range(channels)}}},
            "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": len(labels),
                                 "spatial_shape": roi, "dtype": "float32", "value_range": [0, 1],
                                 "is_patch_data": True, "channel_def": labels}},
        },
    }


def export(cfg: DictConfig) -> Path:
    """Write the bundle (or the state dict) of ``cfg.run``'s ``cfg.checkpoint`` weights to ``cfg.out``."""
    from tcurseg.engine.checkpoint import save_atomic
    from tcurseg.engine.trainer import load_run_model, run_model_file

    source = run_model_file(cfg.run, cfg.checkpoint)
    model, run_cfg = load_run_model(source)
    plain = plain_network(model, run_cfg)
    out = Path(cfg.out)
    if cfg.format == "state_dict":
        save_atomic(plain.state_dict(), out)
    elif cfg.format == "bundle":
        save_atomic(plain.state_dict(), out / "models" / "model.pt")
        (out / "configs").mkdir(parents=True, exist_ok=True)
        (out / "configs" / "inference.json").write_text(json.dumps(inference_config(run_cfg), indent=1) + "\n")
        (out / "configs" / "metadata.json").write_text(json.dumps(metadata(run_cfg, source), indent=1) + "\n")
        from tcurseg.engine.evaluator import inference_options

        mirror = inference_options({}, run_cfg)["mirror_axes"]
        if mirror:
            log.info("the run's evaluation mirrors along axes %s; the bundle predicts without mirroring (MONAI's "
                     "bundle inferers do not mirror): tcurseg.predict eval.mirror_axes=[] gives its predictions",
                     mirror)
    else:
        raise ValueError(f"format={cfg.format}: use bundle or state_dict")
    log.info("exported %s (%s, adapter merged) to %s", source, run_cfg.method.name, out)
    return out


@hydra.main(version_base=None, config_path=str(conf_dir()), config_name="export")
def main(cfg: DictConfig) -> None:
    with user_errors():
        export(cfg)


if __name__ == "__main__":
    main()
