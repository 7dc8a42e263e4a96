"""ViTLlamaConfig: a ViT trunk followed by the frozen LLM block (Hub-portable)."""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .configuration_frozenlm import FrozenLMConfig


class ViTLlamaConfig(FrozenLMConfig):
    r"""Composite config: `vision_config` (a transformers ViTConfig) plus the frozen-block fields of
    `FrozenLMConfig` (`llm_config`, `llm_layers`, `variant`, `llm_dtype`, `llm_final_norm`, `llm_trainable`,
    `llm_source`), and `drop_path_rate`: stochastic depth over the ViT blocks (linear in depth, DeiT's 0.1 for ViT-S;
    0 by default; `frozenlm_stochastic_depth.py`).

    Example:
    ```python
    >>> from transformers import LlamaConfig, ViTConfig
    >>> config = ViTLlamaConfig(vision_config=ViTConfig(hidden_size=192), llm_config=LlamaConfig(), llm_layers=[-1])
    ```
    """

    model_type = "vit_llama"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="vit"),
        "llm_config": SubConfigSpec(config_class=AutoConfig, model_type="llama", optional=True),
    }

    vision_config: dict | PreTrainedConfig | None = None
    drop_path_rate: float = 0.0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.vision_config.model_type != "vit":
            raise ValueError(
                f"vision_config has model_type {self.vision_config.model_type!r}; ViTLlamaConfig needs a ViTConfig "
                "(ViT and DeiT checkpoints saved in ViT format)."
            )
