"""One interface for every method: apply, trainable_report, merge/unmerge, adapter_state/load_adapter_state and the
adapter file (safetensors tensors + JSON config + a hash of the frozen base weights, checked on load)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tcurseg.peft.registry import get_method, parse_config

ADAPTER_ATTR = "tcurseg_adapter"
FORMAT_VERSION = 1


@dataclass
class AdapterInfo:
    """What :func:`apply` did to a model, kept on the model as ``model.tcurseg_adapter``."""

    method: str
    config: dict
    base_hash: str | None
    new_buffers: list[str] = field(default_factory=list)
    new_parameters: list[str] = field(default_factory=list)
    merged: bool = False


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel / DataParallel wrapper."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def adapter_info(model: nn.Module) -> AdapterInfo:
    info = getattr(unwrap(model), ADAPTER_ATTR, None)
    if info is None:
        raise ValueError("model has no adapter: call tcurseg.peft.apply(model, cfg) first")
    return info


def _plain(cfg: Mapping) -> dict:
    from omegaconf import OmegaConf

    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return json.loads(json.dumps(dict(cfg)))


def _tensor_digest(t: torch.Tensor) -> bytes | None:
    if t.is_meta:
        return None
    data = t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()
    return hashlib.sha256(data).digest()


def _under(name: str, prefixes: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def apply(model: nn.Module, cfg: Mapping) -> nn.Module:
    """Add the method's trainable parts to ``model`` in place and freeze the rest; returns the model.

    cfg: ``name`` (one of the registry) and the options of that method's typed config
    (:func:`tcurseg.peft.parse_config`, e.g. :class:`tcurseg.peft.TCURLoRAConfig`): ``groups`` (group specs, default the
    ViT ones), ``trainable_modules`` (module-name prefixes that stay trainable, e.g. the UNETR CNN path), ``rank`` and
    the method's own (``selection``, ``seed``, ``alpha``). The adapter records ``cfg`` with ``groups`` and
    ``trainable_modules`` filled in."""
    if hasattr(model, ADAPTER_ATTR):
        raise ValueError(f"model already has a {getattr(model, ADAPTER_ATTR).method} adapter")
    config = _plain(cfg)
    method, options = get_method(config["name"]), parse_config(config)
    config = {**config, "groups": options.groups, "trainable_modules": options.trainable_modules}
    names_before = {id(p): n for n, p in model.named_parameters()}
    digests = {id(p): _tensor_digest(p) for p in model.parameters()}
    keys_before = set(model.state_dict().keys())

    model.requires_grad_(False)
    method.inject(model, options)
    for name, module in model.named_modules():
        if _under(name, options.trainable_modules):
            module.requires_grad_(True)

    frozen = sorted((names_before[id(p)], digests[id(p)]) for p in model.parameters()
                    if not p.requires_grad and id(p) in digests)
    base_hash = None
    if all(d is not None for _, d in frozen):
        h = hashlib.sha256()
        for name, digest in frozen:
            h.update(name.encode() + digest)
        base_hash = h.hexdigest()
    param_names = {n for n, _ in model.named_parameters()}
    new_buffers = sorted(k for k in model.state_dict() if k not in keys_before and k not in param_names)
    new_parameters = sorted(n for n, p in model.named_parameters() if id(p) not in names_before)
    if method.after_load is not None:
        model.register_load_state_dict_post_hook(lambda module, incompatible: method.after_load(module))
    model.register_forward_pre_hook(_refuse_training_while_merged)
    model.register_state_dict_pre_hook(_refuse_state_while_merged)
    model.register_load_state_dict_pre_hook(_refuse_load_while_merged)
    setattr(model, ADAPTER_ATTR, AdapterInfo(config["name"], config, base_hash, new_buffers, new_parameters))
    return model


def _merged(module: nn.Module) -> bool:
    info = getattr(module, ADAPTER_ATTR, None)
    return info is not None and info.merged and bool(info.new_parameters)


def _refuse_training_while_merged(module: nn.Module, args: tuple) -> None:
    """Merged, the adapter parameters are outside the graph: a training forward would leave them untouched."""
    if _merged(module) and module.training and torch.is_grad_enabled():
        raise ValueError("the adapter is merged into the weights: unmerge() before training")


def _refuse_state_while_merged(module: nn.Module, prefix: str, keep_vars: bool) -> None:
    """A merged state holds dW twice (in the weights and in the adapter): loading it into an adapted model would
    apply the update twice."""
    if _merged(module):
        raise ValueError("the adapter is merged into the weights: unmerge() before taking a state dict")


def _refuse_load_while_merged(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    if _merged(module):
        raise ValueError("the adapter is merged into the weights: unmerge() before loading a state dict")


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters an optimizer must update: exactly those with requires_grad."""
    return [p for p in model.parameters() if p.requires_grad]


def parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The trainable parameters split for the optimiser: ``adapter`` (parameters the method added: LoRA factors,
    tCURLoRA cores, DoRA magnitudes, ...) and ``base`` (trainable weights of the original network: the CNN path, or
    every weight for ``full``). Empty groups are kept, so callers can index both."""
    model = unwrap(model)
    added = set(adapter_info(model).new_parameters)
    groups: dict[str, list[nn.Parameter]] = {"adapter": [], "base": []}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups["adapter" if name in added else "base"].append(p)
    return groups


def trainable_report(model: nn.Module) -> dict:
    """Parameter counts: ``adapter`` (trainable, outside ``trainable_modules``: the encoder side), ``decoder``
    (trainable, inside ``trainable_modules``), ``trainable`` (their sum) and ``total``."""
    model = unwrap(model)
    info = adapter_info(model)
    decoder = adapter = total = 0
    for name, p in model.named_parameters():
        total += p.numel()
        if p.requires_grad:
            if _under(name, info.config["trainable_modules"]):
                decoder += p.numel()
            else:
                adapter += p.numel()
    return {"method": info.method, "adapter": adapter, "decoder": decoder, "trainable": adapter + decoder,
            "total": total}


def merge(model: nn.Module) -> None:
    """Fold the adapter update into the base weights (W0 += dW); outputs stay the same."""
    model = unwrap(model)
    info = adapter_info(model)
    hook = get_method(info.method).merge
    if hook is not None and not info.merged:
        hook(model)
    if not info.merged:  # merged, the adapter takes no part in the forward pass: it must not train
        for name, p in model.named_parameters():
            if name in info.new_parameters:
                p.requires_grad_(False)
    info.merged = True


def unmerge(model: nn.Module) -> None:
    """Undo :func:`merge` (W0 -= dW)."""
    model = unwrap(model)
    info = adapter_info(model)
    hook = get_method(info.method).unmerge
    if hook is not None and info.merged:
        hook(model)
    if info.merged:
        for name, p in model.named_parameters():
            if name in info.new_parameters:
                p.requires_grad_(True)
    info.merged = False


def _state_keys(model: nn.Module, info: AdapterInfo) -> list[str]:
    params = dict(model.named_parameters())
    keys = {n for n, p in params.items() if p.requires_grad}
    owners = {name for name, m in model.named_modules() if any(p.requires_grad for p in m.parameters(recurse=False))}
    for name in model.state_dict():
        if name not in params and (name in info.new_buffers or name.rpartition(".")[0] in owners):
            keys.add(name)
    return sorted(keys)


def adapter_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata): every trainable parameter (adapter and decoder), the buffers the method records (e.g. the
    CUR indices) and those of trainable modules; metadata = method config + base hash."""
    model = unwrap(model)
    info = adapter_info(model)
    if info.merged:
        raise ValueError("unmerge the model before taking its adapter state")
    state = model.state_dict()
    tensors = {k: state[k].detach().cpu().contiguous() for k in _state_keys(model, info)}
    meta = {"format": FORMAT_VERSION, "method": info.method, "config": info.config, "base_hash": info.base_hash}
    return tensors, meta


def load_adapter_state(model: nn.Module, tensors: Mapping[str, torch.Tensor], metadata: Mapping,
                       source: str = "adapter state") -> None:
    """Load what :func:`adapter_state` returned into a model prepared with :func:`apply` and the same config."""
    model = unwrap(model)
    info = adapter_info(model)
    if metadata["method"] != info.method:
        raise ValueError(f"{source} is for method {metadata['method']!r}, the model has {info.method!r}")
    if metadata["base_hash"] and info.base_hash and metadata["base_hash"] != info.base_hash:
        raise ValueError(f"{source} was trained on a different base model: base weight hash "
                         f"{metadata['base_hash'][:12]} != {info.base_hash[:12]} of this model")
    expected = set(_state_keys(model, info))
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise ValueError(f"{source} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    was_merged = info.merged
    if was_merged:
        unmerge(model)
    model.load_state_dict(dict(tensors), strict=False)
    if was_merged:
        merge(model)


def save_adapter(model: nn.Module, path: str | Path) -> Path:
    """Write the adapter file: safetensors tensors with the JSON metadata under the key ``tcurseg``."""
    from safetensors.torch import save_file

    tensors, meta = adapter_state(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"tcurseg": json.dumps(meta)})
    tmp.replace(path)
    return path


def read_adapter(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of an adapter file; a clear error for a missing or foreign file."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"adapter file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = (f.metadata() or {}).get("tcurseg")
        tensors = load_file(str(path))
    except Exception as err:
        raise ValueError(f"{path}: not a readable safetensors adapter file ({err})") from err
    if meta is None:
        raise ValueError(f"{path}: safetensors file without tcurseg metadata (not a tcurseg adapter)")
    return tensors, json.loads(meta)


def load_adapter(model: nn.Module, path: str | Path) -> nn.Module:
    """Apply the method recorded in an adapter file to a base model and load its tensors (base hash checked)."""
    tensors, meta = read_adapter(path)
    apply(model, meta["config"])
    load_adapter_state(model, tensors, meta, source=str(path))
    return model
