"""Parameter-efficient fine-tuning methods behind one interface (see :mod:`tcurseg.peft.api`)."""

from tcurseg.peft.api import (
    adapter_info,
    adapter_state,
    apply,
    load_adapter,
    load_adapter_state,
    merge,
    parameter_groups,
    read_adapter,
    save_adapter,
    trainable_parameters,
    trainable_report,
    unmerge,
    unwrap,
)
from tcurseg.peft.config import AdapterConfig
from tcurseg.peft.curlora import CURLoRAConfig
from tcurseg.peft.groups import VIT_GROUPS, find_groups
from tcurseg.peft.lorapt import LoRAPTConfig
from tcurseg.peft.matrix import LoRAConfig
from tcurseg.peft.registry import METHODS, parse_config
from tcurseg.peft.tcurlora import TCURLoRAConfig

__all__ = [
    "METHODS",
    "VIT_GROUPS",
    "AdapterConfig",
    "CURLoRAConfig",
    "LoRAConfig",
    "LoRAPTConfig",
    "TCURLoRAConfig",
    "adapter_info",
    "adapter_state",
    "apply",
    "find_groups",
    "load_adapter",
    "load_adapter_state",
    "merge",
    "parameter_groups",
    "parse_config",
    "read_adapter",
    "save_adapter",
    "trainable_parameters",
    "trainable_report",
    "unmerge",
    "unwrap",
]
