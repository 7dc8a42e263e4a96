"""ViltLlamaConfig: a ViLT trunk (image patches and text tokens in one stream) and the frozen LLM block (Hub-portable)."""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .configuration_frozenlm import FrozenLMConfig


class ViltLlamaConfig(FrozenLMConfig):
    r"""Composite config: `vilt_config` (a transformers ViltConfig) plus the frozen-block fields of `FrozenLMConfig`
    (`llm_config`, `llm_layers`, `variant`, `llm_dtype`, `llm_final_norm`, `llm_trainable`, `llm_source`).
    `id2label` / `num_labels` are the VQA answer vocabulary.

    Example:
    ```python
    >>> from transformers import LlamaConfig, ViltConfig
    >>> config = ViltLlamaConfig(vilt_config=ViltConfig(hidden_size=192), llm_config=LlamaConfig(), llm_layers=[-1])
    ```
    """

    model_type = "vilt_llama"
    sub_configs_defaults = {
        "vilt_config": SubConfigSpec(config_class=AutoConfig, model_type="vilt"),
        "llm_config": SubConfigSpec(config_class=AutoConfig, model_type="llama", optional=True),
    }

    vilt_config: dict | PreTrainedConfig | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.vilt_config.model_type != "vilt":
            raise ValueError(
                f"vilt_config has model_type {self.vilt_config.model_type!r}; ViltLlamaConfig needs a ViltConfig."
            )


class ViltLlamaRetrievalConfig(ViltLlamaConfig):
    r"""`ViltLlamaConfig` for the image-text retrieval head: the same fields under a model type of its own, so that a
    saved retrieval model and a saved VQA model each load through their own Auto classes."""

    model_type = "vilt_llama_retrieval"
