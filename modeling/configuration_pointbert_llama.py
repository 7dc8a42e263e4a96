"""PointBertLlamaConfig: a Point-BERT trunk followed by the frozen LLM block (Hub-portable)."""

from __future__ import annotations

from transformers import AutoConfig
from transformers.configuration_utils import SubConfigSpec

from .configuration_frozenlm import FrozenLMConfig


class PointBertLlamaConfig(FrozenLMConfig):
    r"""Point-BERT's transformer trunk (no transformers class exists for it, so its fields live here) plus the
    frozen-block fields of `FrozenLMConfig` (`llm_config`, `llm_layers`, `variant`, `llm_dtype`, ...).

    hidden_size, num_hidden_layers, num_attention_heads, intermediate_size: the transformer trunk.
    num_groups: G, the number of farthest-point-sampled centers, each one token.
    group_size: k, the nearest points gathered around each center.
    point_feature_size: extra per-point channels (normals, colours, ...) given as `point_features`; 0 for xyz only.
    group_encoder_hidden_sizes: the mini-PointNet's two stages, as Point-BERT (128 -> 256, then 512 -> out).
    group_encoder_size: width of each group's max-pooled feature before it is projected to hidden_size.
    position_embedding_size: hidden width of the MLP that embeds the centers' xyz.
    classifier_hidden_size, classifier_dropout: the head MLP over [CLS, max-pool].
    drop_path_rate: stochastic depth over the trunk's blocks, increasing linearly with depth.

    Example:
    ```python
    >>> from transformers import LlamaConfig
    >>> config = PointBertLlamaConfig(hidden_size=384, num_groups=64, group_size=32, llm_config=LlamaConfig())
    ```
    """

    model_type = "pointbert_llama"
    sub_configs_defaults = {
        "llm_config": SubConfigSpec(config_class=AutoConfig, model_type="llama", optional=True),
    }

    hidden_size: int = 384
    num_hidden_layers: int = 12
    num_attention_heads: int = 6
    intermediate_size: int = 1536
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = False
    attention_dropout: float = 0.0
    hidden_dropout: float = 0.0
    drop_path_rate: float = 0.1
    num_groups: int = 64
    group_size: int = 32
    point_feature_size: int = 0
    group_encoder_hidden_sizes: list[int] | None = None
    group_encoder_size: int = 256
    position_embedding_size: int = 128
    classifier_hidden_size: int = 256
    classifier_dropout: float = 0.5

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.group_encoder_hidden_sizes is None:
            self.group_encoder_hidden_sizes = [128, 256, 512]
        self.group_encoder_hidden_sizes = [int(size) for size in self.group_encoder_hidden_sizes]
        if len(self.group_encoder_hidden_sizes) != 3:
            raise ValueError(
                f"group_encoder_hidden_sizes={self.group_encoder_hidden_sizes} must hold three widths: the first "
                "stage's two (Point-BERT: 128, 256) and the second stage's hidden one (512)."
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}."
            )
        if self.num_groups < 1 or self.group_size < 1:
            raise ValueError(f"num_groups={self.num_groups} and group_size={self.group_size} must be positive.")
        if self.point_feature_size < 0:
            raise ValueError(f"point_feature_size={self.point_feature_size} must be 0 (xyz only) or more.")

    @property
    def min_points(self) -> int:
        """Fewest points a cloud needs: G distinct centers and k distinct neighbours each."""
        return max(self.num_groups, self.group_size)


class PointBertLlamaQAConfig(PointBertLlamaConfig):
    r"""Every `PointBertLlamaConfig` field (the Point-BERT trunk and the frozen block) plus the question side.
    `id2label` / `num_labels` are the answer vocabulary.

    question_vocab_size: token ids of the question tokenizer (saved beside the model).
    max_question_length: the longest question in tokens.
    question_num_layers: layers of the bidirectional LSTM question encoder (SQA3D encodes text with an LSTM).
    num_fusion_layers: rounds of cross-attention (questions attend to the scene, the scene attends to the question).
    """

    model_type = "pointbert_llama_qa"

    question_vocab_size: int = 512
    max_question_length: int = 32
    question_num_layers: int = 1
    num_fusion_layers: int = 1

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.hidden_size % 2:
            raise ValueError(f"hidden_size={self.hidden_size} must be even: the question LSTM runs both directions.")
        if self.question_vocab_size < 1 or self.max_question_length < 1:
            raise ValueError("question_vocab_size and max_question_length must be positive.")
