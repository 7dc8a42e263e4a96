"""VectorNetLlamaConfig: a VectorNet trunk (polyline subgraphs + global attention) and the frozen LLM block (Hub-portable)."""

from __future__ import annotations

from transformers import AutoConfig
from transformers.configuration_utils import SubConfigSpec

from .configuration_frozenlm import FrozenLMConfig

BEST_MODE_CRITERIA = ("ade", "fde")


class VectorNetLlamaConfig(FrozenLMConfig):
    r"""VectorNet's fields (transformers has no VectorNet, so they live here, as Point-BERT's do) plus the frozen-block
    fields of `FrozenLMConfig` (`llm_config`, `llm_layers`, `variant`, `llm_dtype`, ...).

    vector_feature_size: F, channels of one vector (`MotionSceneFeatureExtractor` writes 8: start xy, end xy,
        one-hot agent / other agent / lane, and the vector's normalised order in its polyline).
    coordinate_scale: multiplies the first four channels (start and end xy, metres) before the subgraph, so that
        coordinates of tens of metres enter near unit scale (trajectories still come out in metres).
    hidden_size: width of the polyline tokens.
    num_subgraph_layers: PointNet-style layers of the per-polyline subgraph (MLP, then concat with the max-pool).
    num_global_layers, num_attention_heads, intermediate_size: the global self-attention over polyline tokens.
    num_modes: K, the trajectories predicted per agent (Argoverse: 6).
    future_steps: T_future points of each trajectory (3 s at 10 Hz: 30).
    best_mode_by: "ade" or "fde": which error picks the winner mode for the winner-takes-all loss.
    classification_loss_weight: weight of the mode cross-entropy beside the winner's smooth-L1 regression.
    miss_threshold: metres; a forecast misses when its best final-point error exceeds it (Argoverse: 2.0).
    """

    model_type = "vectornet_llama"
    sub_configs_defaults = {
        "llm_config": SubConfigSpec(config_class=AutoConfig, model_type="llama", optional=True),
    }

    vector_feature_size: int = 8
    coordinate_scale: float = 0.1
    hidden_size: int = 64
    num_subgraph_layers: int = 3
    num_global_layers: int = 1
    num_attention_heads: int = 4
    intermediate_size: int = 256
    layer_norm_eps: float = 1e-5
    num_modes: int = 6
    future_steps: int = 30
    best_mode_by: str = "ade"
    classification_loss_weight: float = 1.0
    miss_threshold: float = 2.0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.best_mode_by not in BEST_MODE_CRITERIA:
            raise ValueError(f"best_mode_by={self.best_mode_by!r} is not one of {BEST_MODE_CRITERIA}.")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}."
            )
        for name in ("vector_feature_size", "num_subgraph_layers", "num_modes", "future_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1.")
