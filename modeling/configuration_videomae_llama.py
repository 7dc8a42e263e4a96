"""VideoMAELlamaConfig: a VideoMAE trunk followed by the frozen LLM block (Hub-portable)."""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .configuration_frozenlm import FrozenLMConfig


class VideoMAELlamaConfig(FrozenLMConfig):
    r"""Composite config: `vision_config` (a transformers VideoMAEConfig: frames, tubelet, image and patch size,
    width, depth) plus the frozen-block fields of `FrozenLMConfig` (`llm_config`, `llm_layers`, `variant`,
    `llm_dtype`, `llm_final_norm`, `llm_trainable`, `llm_source`), and `drop_path_rate`: stochastic depth over the
    VideoMAE blocks (linear in depth; VideoMAE fine-tunes with 0.1; 0 by default; `frozenlm_stochastic_depth.py`).

    Example:
    ```python
    >>> from transformers import LlamaConfig, VideoMAEConfig
    >>> config = VideoMAELlamaConfig(vision_config=VideoMAEConfig(hidden_size=384), llm_config=LlamaConfig())
    ```
    """

    model_type = "videomae_llama"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="videomae"),
        "llm_config": SubConfigSpec(config_class=AutoConfig, model_type="llama", optional=True),
    }

    vision_config: dict | PreTrainedConfig | None = None
    drop_path_rate: float = 0.0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.vision_config.model_type != "videomae":
            raise ValueError(
                f"vision_config has model_type {self.vision_config.model_type!r}; VideoMAELlamaConfig needs a "
                "VideoMAEConfig."
            )
        if self.vision_config.num_frames % self.vision_config.tubelet_size:
            raise ValueError(
                f"num_frames={self.vision_config.num_frames} is not a multiple of tubelet_size="
                f"{self.vision_config.tubelet_size}: every tubelet token needs whole frames."
            )

    @property
    def num_frames(self) -> int:
        """Frames per clip; `pipeline("video-classification")` reads it from the top-level config."""
        return self.vision_config.num_frames
