"""The DeepSeek-V3 model: config, MLA, DeepSeekMoE, MTP, HF-compatible checkpoints."""

from .checkpoint import CheckpointError
from .config import ConfigError, DeepSeekV3Config, list_presets
from .params import ModelStats, format_stats, model_stats
from .transformer import CausalLMOutput, DeepSeekV3ForCausalLM

__all__ = ["CausalLMOutput", "CheckpointError", "ConfigError", "DeepSeekV3Config", "DeepSeekV3ForCausalLM",
           "ModelStats", "format_stats", "list_presets", "model_stats"]
