"""hf_frozenlm: frozen LLM transformer blocks as visual encoder layers (Pang et al., ICLR 2024), for transformers.

Importing the package registers every model with the Auto classes.
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from .modeling import (
    LLM_ARCHITECTURES,
    VIT_PRESETS,
    FrozenLMBlock,
    FrozenLMConfig,
    LLMCheckpointError,
    LLMChecksumError,
    LLMSourceNotFoundError,
    ViTLlamaConfig,
    ViTLlamaForImageClassification,
    ViTLlamaModel,
    load_llm_config,
    load_llm_layers,
)

__version__ = "0.1.0"

AutoConfig.register(ViTLlamaConfig.model_type, ViTLlamaConfig, exist_ok=True)
AutoModel.register(ViTLlamaConfig, ViTLlamaModel, exist_ok=True)
AutoModelForImageClassification.register(ViTLlamaConfig, ViTLlamaForImageClassification, exist_ok=True)

__all__ = [
    "LLM_ARCHITECTURES",
    "VIT_PRESETS",
    "FrozenLMBlock",
    "FrozenLMConfig",
    "LLMCheckpointError",
    "LLMChecksumError",
    "LLMSourceNotFoundError",
    "ViTLlamaConfig",
    "ViTLlamaForImageClassification",
    "ViTLlamaModel",
    "load_llm_config",
    "load_llm_layers",
]
