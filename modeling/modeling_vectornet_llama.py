"""VectorNet + frozen LLM block (Pang et al., ICLR 2024, motion forecasting), as transformers models.

Data flow: polylines of vectors (agent histories, lane centerlines) -> per-polyline subgraph (PointNet-style: shared
MLP per vector, concatenated with the polyline's max-pool, a few times, then a max-pool: one token per polyline) ->
global self-attention over polyline tokens -> FrozenLMBlock over the polyline tokens -> LayerNorm -> the target
agent's token (polyline 0) -> K trajectories and K mode logits.

Padded polylines (polyline_mask 0) and padded vectors (vector_mask 0) never reach a valid token: vectors are left out
of the max-pools, polylines are masked as attention keys in the global layers and in the frozen block.

Transformers has no VectorNet, so the trunk is written here; `AutoModelForMotionForecasting` is defined here too, so
that a saved folder brings its own entry point. Hub-portable: imports only torch/transformers and sibling modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, ModelOutput
from transformers.utils import can_return_tuple

from .configuration_vectornet_llama import VectorNetLlamaConfig
from .frozenlm_block import FrozenLMBlock, FrozenLMPreTrainedModel

# Presets: VectorNet's paper sizes (64-wide subgraph, 3 subgraph layers, one global layer) and a tiny one for tests.
VECTORNET_PRESETS = {
    "vectornet-base": dict(hidden_size=64, num_subgraph_layers=3, num_global_layers=1, num_attention_heads=4,
                           intermediate_size=256),
    "vectornet-tiny": dict(hidden_size=32, num_subgraph_layers=2, num_global_layers=1, num_attention_heads=2,
                           intermediate_size=64),
}


@dataclass
class MotionForecastingOutput(ModelOutput):
    """loss (when labels are given), trajectories (B, K, T, 2), mode_logits (B, K), last_hidden_state (B, P, D),
    hidden_states (subgraph tokens, each global layer, the frozen block)."""

    loss: torch.Tensor | None = None
    trajectories: torch.Tensor | None = None
    mode_logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


def masked_max(values: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Max over `dim` of the entries whose mask is 1; 0 where no entry is valid (a fully padded polyline)."""
    filled = values.masked_fill(~mask.unsqueeze(-1), float("-inf"))
    pooled = filled.amax(dim=dim)
    return pooled.masked_fill(~mask.any(dim=dim).unsqueeze(-1), 0.0)


def winner_takes_all(trajectories: torch.Tensor, targets: torch.Tensor, best_mode_by: str):
    """(B, K, T, 2), (B, T, 2) -> (index of the winner mode (B,), its per-step errors (B, T)).

    The winner is the mode with the smallest average (ade) or final (fde) displacement error.
    """
    errors = (trajectories - targets[:, None]).norm(dim=-1)  # (B, K, T)
    score = errors.mean(-1) if best_mode_by == "ade" else errors[..., -1]  # (B, K)
    best = score.argmin(dim=-1)  # (B,)
    return best, errors[torch.arange(len(best), device=best.device), best]


# -- trunk ----------------------------------------------------------------------------------------------------
class VectorNetLlamaSubgraphLayer(nn.Module):
    """One PointNet-style layer: per-vector Linear -> LayerNorm -> ReLU (width D/2), then concat with its polyline's
    max over valid vectors (width D). Vectors interact only through the max, so order within a polyline is free."""

    def __init__(self, in_size: int, config: VectorNetLlamaConfig):
        super().__init__()
        half = config.hidden_size // 2
        self.linear = nn.Linear(in_size, half)
        self.norm = nn.LayerNorm(half, eps=config.layer_norm_eps)

    def forward(self, vectors: torch.Tensor, vector_mask: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm(self.linear(vectors)))  # (B, P, V, D/2)
        pooled = masked_max(x, vector_mask, dim=2)  # (B, P, D/2)
        return torch.cat([x, pooled.unsqueeze(2).expand_as(x)], dim=-1)  # (B, P, V, D)


class VectorNetLlamaSubgraph(nn.Module):
    """(B, P, V, F) vectors -> (B, P, D) one token per polyline."""

    def __init__(self, config: VectorNetLlamaConfig):
        super().__init__()
        sizes = [config.vector_feature_size] + [2 * (config.hidden_size // 2)] * config.num_subgraph_layers
        self.layers = nn.ModuleList(VectorNetLlamaSubgraphLayer(size, config) for size in sizes[:-1])
        self.projection = nn.Linear(sizes[-1], config.hidden_size)

    def forward(self, polylines: torch.Tensor, vector_mask: torch.Tensor) -> torch.Tensor:
        x = polylines
        for layer in self.layers:
            x = layer(x, vector_mask)
        return self.projection(masked_max(x, vector_mask, dim=2))  # (B, P, D)


class VectorNetLlamaGlobalLayer(GradientCheckpointingLayer):
    """Pre-norm self-attention over polyline tokens (padded polylines masked as keys) + MLP.
    (GradientCheckpointingLayer: `gradient_checkpointing_enable()` recomputes it in the backward pass.)"""

    def __init__(self, config: VectorNetLlamaConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.norm_attention = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm_mlp = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, polyline_mask: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = hidden_states.shape
        qkv = self.qkv(self.norm_attention(hidden_states)).view(batch, tokens, 3, self.num_heads, -1)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, P, D / H)
        keep = polyline_mask[:, None, None, :]  # (B, 1, 1, P): True = attend to this key
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=keep)
        hidden_states = hidden_states + self.out(attended.transpose(1, 2).reshape(batch, tokens, width))
        return hidden_states + self.fc2(F.gelu(self.fc1(self.norm_mlp(hidden_states))))


# -- models ---------------------------------------------------------------------------------------------------
class VectorNetLlamaPreTrainedModel(FrozenLMPreTrainedModel):
    config_class = VectorNetLlamaConfig
    config: VectorNetLlamaConfig
    base_model_prefix = "vectornet_llama"
    main_input_name = "polylines"
    _no_split_modules = ["VectorNetLlamaSubgraph", "VectorNetLlamaGlobalLayer", "FrozenLMBlock"]
    trunk_presets = VECTORNET_PRESETS
    trunk_modules = ("subgraph", "layers")
    output_kind = "trajectories"

    def check_polylines(self, polylines, vector_mask, polyline_mask):
        """Validate the inputs and return boolean (vector_mask (B, P, V), polyline_mask (B, P))."""
        if polylines.ndim != 4 or polylines.shape[-1] != self.config.vector_feature_size:
            raise ValueError(
                f"polylines has shape {tuple(polylines.shape)}; expected (batch, polylines, vectors, "
                f"{self.config.vector_feature_size}) (config.vector_feature_size)."
            )
        if vector_mask is None:
            vector_mask = torch.ones(polylines.shape[:3], dtype=torch.bool, device=polylines.device)
        if tuple(vector_mask.shape) != tuple(polylines.shape[:3]):
            raise ValueError(
                f"vector_mask has shape {tuple(vector_mask.shape)} but polylines has {tuple(polylines.shape)}: it must "
                f"be {tuple(polylines.shape[:3])}, one entry per vector (1 valid, 0 padding)."
            )
        vector_mask = vector_mask.to(torch.bool)
        if polyline_mask is None:
            polyline_mask = vector_mask.any(dim=-1)
        if tuple(polyline_mask.shape) != tuple(polylines.shape[:2]):
            raise ValueError(
                f"polyline_mask has shape {tuple(polyline_mask.shape)}; expected {tuple(polylines.shape[:2])} "
                "(batch, polylines)."
            )
        polyline_mask = polyline_mask.to(torch.bool)
        if (polyline_mask & ~vector_mask.any(dim=-1)).any():
            raise ValueError("polyline_mask marks a polyline valid whose vectors are all padding (vector_mask 0).")
        vector_mask = vector_mask & polyline_mask.unsqueeze(-1)
        if polylines.shape[1] == 0 or not polyline_mask[:, 0].all():
            raise ValueError(
                "Empty scene: polyline 0 must be the target agent's history and valid in every sample (a scene "
                "needs at least the agent's own polyline)."
            )
        if not torch.isfinite(polylines.masked_fill(~vector_mask.unsqueeze(-1), 0.0)).all():
            raise ValueError("polylines contains NaN or infinite values in valid vectors.")
        return vector_mask, polyline_mask


class VectorNetLlamaModel(VectorNetLlamaPreTrainedModel):
    """VectorNet trunk + FrozenLMBlock; returns normalised polyline tokens and the target agent's token (pooled)."""

    _auto_class = "AutoModel"
    auto_map_entries = {"AutoModel": "VectorNetLlamaModel"}

    def __init__(self, config: VectorNetLlamaConfig):
        super().__init__(config)
        self.subgraph = VectorNetLlamaSubgraph(config)
        self.layers = nn.ModuleList(VectorNetLlamaGlobalLayer(config) for _ in range(config.num_global_layers))
        self.frozen_lm = FrozenLMBlock(config, config.hidden_size)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.subgraph

    @can_return_tuple
    def forward(
        self,
        polylines: torch.Tensor,
        vector_mask: torch.Tensor | None = None,
        polyline_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        vector_mask, polyline_mask = self.check_polylines(polylines, vector_mask, polyline_mask)
        polylines = polylines.to(self.subgraph.projection.weight.dtype)
        # Metres -> near unit scale: the subgraph's LayerNorms would otherwise wash out how far apart points are.
        scale = torch.ones(polylines.shape[-1], dtype=polylines.dtype, device=polylines.device)
        scale[:4] = self.config.coordinate_scale
        polylines = polylines * scale
        hidden_states = self.subgraph(polylines, vector_mask)  # (B, P, D)
        all_hidden_states = [hidden_states] if output_hidden_states else None
        for layer in self.layers:
            hidden_states = layer(hidden_states, polyline_mask)
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
        hidden_states = self.frozen_lm(hidden_states, attention_mask=polyline_mask.long())  # (B, P, D)
        if output_hidden_states:
            all_hidden_states.append(hidden_states)
        sequence_output = self.layernorm(hidden_states)
        return BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=sequence_output[:, 0],  # the target agent's token
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
        )


class VectorNetLlamaForMotionForecasting(VectorNetLlamaPreTrainedModel):
    """VectorNetLlamaModel + a multi-modal decoder: the agent token -> K trajectories (T x 2) and K mode logits.

    Loss (labels (B, T, 2), the agent's future in the same frame as the inputs): smooth-L1 on the winner mode only
    (winner by `config.best_mode_by`) + `classification_loss_weight` x cross-entropy of the mode logits to the winner.
    """

    # transformers has no Auto class or pipeline for motion forecasting: AutoModel, our own Auto class and the
    # custom pipeline all load this head.
    _auto_class = "AutoModelForMotionForecasting"
    auto_map_entries = {
        "AutoModel": "VectorNetLlamaForMotionForecasting",
        "AutoModelForMotionForecasting": "VectorNetLlamaForMotionForecasting",
    }
    custom_pipeline = ("motion-forecasting", "frozenlm_pipelines.MotionForecastingPipeline")

    def __init__(self, config: VectorNetLlamaConfig):
        super().__init__(config)
        self.vectornet_llama = VectorNetLlamaModel(config)
        width, modes, steps = config.hidden_size, config.num_modes, config.future_steps
        self.trajectory_head = nn.Sequential(
            nn.Linear(width, 2 * width), nn.LayerNorm(2 * width), nn.ReLU(), nn.Linear(2 * width, modes * steps * 2)
        )
        self.mode_head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, modes))
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        polylines: torch.Tensor,
        vector_mask: torch.Tensor | None = None,
        polyline_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> MotionForecastingOutput:
        outputs = self.vectornet_llama(
            polylines, vector_mask, polyline_mask, output_hidden_states=output_hidden_states
        )
        agent = outputs.pooler_output  # (B, D)
        config = self.config
        # The head predicts per-step displacements; their running sum is the trajectory (smooth, and each output
        # has the scale of one step rather than of the whole 3 s). The sum runs in float32: under bf16 autocast a
        # bf16 running sum of 30 steps would be off by decimetres at tens of metres (bf16 keeps 8 bits).
        steps = self.trajectory_head(agent).view(-1, config.num_modes, config.future_steps, 2)
        trajectories = steps.float().cumsum(dim=2)  # (B, K, T, 2)
        mode_logits = self.mode_head(agent).float()  # (B, K)
        loss = None
        if labels is not None:
            if tuple(labels.shape) != (agent.shape[0], config.future_steps, 2):
                raise ValueError(
                    f"labels has shape {tuple(labels.shape)}; expected {(agent.shape[0], config.future_steps, 2)} "
                    "(batch, future_steps, xy) in the frame of the input polylines."
                )
            labels = labels.to(trajectories.dtype)
            best, _ = winner_takes_all(trajectories.detach(), labels, config.best_mode_by)
            winner = trajectories[torch.arange(len(best), device=best.device), best]  # (B, T, 2)
            regression = F.smooth_l1_loss(winner, labels)
            classification = F.cross_entropy(mode_logits, best)
            loss = regression + config.classification_loss_weight * classification
        return MotionForecastingOutput(
            loss=loss,
            trajectories=trajectories,
            mode_logits=mode_logits,
            last_hidden_state=outputs.last_hidden_state,
            hidden_states=outputs.hidden_states,
        )
