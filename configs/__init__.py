"""Typed configs, YAML presets and model cards (YAML, shipped as package data)."""

from configs.loader import ConfigError, apply_overrides, list_presets, load_config, parse_set_args, to_dict
from configs.schema import AgentConfig, DataConfig, JudgeConfig, LLMConfig, VoiceConfig

__all__ = [
    "AgentConfig",
    "ConfigError",
    "DataConfig",
    "JudgeConfig",
    "LLMConfig",
    "VoiceConfig",
    "apply_overrides",
    "list_presets",
    "load_config",
    "parse_set_args",
    "to_dict",
]
