"""Point-BERT + frozen LLM block (Pang et al., ICLR 2024), as transformers models.

Data flow, as the official point-cloud code: farthest point sampling of G centers -> the k nearest points of each,
relative to their center -> mini-PointNet group encoder (one token per group) -> CLS token + MLP embedding of the
centers' xyz -> transformer blocks (positions added before every block, as Point-BERT) -> FrozenLMBlock -> LayerNorm
-> head MLP over [CLS, max over group tokens].

Transformers has no Point-BERT, so the trunk is written here: a compact pre-norm transformer on torch's sdpa.
`AutoModelForPointCloudClassification` is defined here too, so that a saved folder brings its own entry point.

Hub-portable: imports only torch/transformers and sibling modules.
"""

from __future__ import annotations

import importlib
import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, ModelOutput
from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping
from transformers.utils import can_return_tuple

from .configuration_pointbert_llama import PointBertLlamaConfig
from .frozenlm_block import FrozenLMBlock, FrozenLMPreTrainedModel

# Presets: Point-BERT's fine-tuning trunk (the paper's point-cloud experiments use "pointbert-small").
POINTBERT_PRESETS = {
    "pointbert-small": dict(
        hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536, num_groups=64,
        group_size=32,
    ),
}


@dataclass
class PointCloudClassifierOutput(ModelOutput):
    """loss (when labels are given), logits (B, num_labels), hidden_states (embeddings, each block, the frozen block)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


# -- grouping: farthest point sampling and k nearest neighbours -------------------------------------------------
def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, M, 3), (B, N, 3) -> (B, M, N) exact squared distances (cdist's matmul shortcut rounds ties differently)."""
    return (a[:, :, None, :] - b[:, None, :, :]).square().sum(-1)


def farthest_point_sample(points: torch.Tensor, num_samples: int) -> torch.Tensor:
    """(B, N, 3) -> (B, G) indices of G points, each the farthest from those already chosen.

    The first point is the one farthest from the cloud's centroid rather than index 0, so the chosen centers do not
    depend on the order of the input points (and are reproducible without a random start).
    """
    batch = torch.arange(points.shape[0], device=points.device)
    centroid = points.mean(dim=1, keepdim=True)  # (B, 1, 3)
    current = squared_distances(centroid, points)[:, 0].argmax(dim=1)  # (B,)
    nearest = torch.full(points.shape[:2], float("inf"), dtype=points.dtype, device=points.device)  # (B, N)
    chosen = []
    for _ in range(num_samples):
        chosen.append(current)
        step = (points - points[batch, current][:, None, :]).square().sum(-1)  # (B, N)
        nearest = torch.minimum(nearest, step)
        current = nearest.argmax(dim=1)
    return torch.stack(chosen, dim=1)


def knn_indices(centers: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """(B, G, 3), (B, N, 3) -> (B, G, k) indices of each center's k nearest points, nearest first."""
    return squared_distances(centers, points).topk(k, dim=-1, largest=False, sorted=True).indices


def gather_points(values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """(B, N, C) gathered at (B, ...) indices -> (B, ..., C)."""
    batch = torch.arange(values.shape[0], device=values.device).view(-1, *([1] * (indices.ndim - 1)))
    return values[batch, indices]


# -- trunk ----------------------------------------------------------------------------------------------------
class PointBertLlamaGroupEncoder(nn.Module):
    """Point-BERT's mini-PointNet: (B, G, k, C) groups -> (B, G, group_encoder_size), invariant to order within a group.

    Shared per-point MLP -> max over the group -> concatenated back to every point -> second MLP -> max. Linear layers
    on the last axis equal Point-BERT's kernel-1 Conv1d.
    """

    def __init__(self, config: PointBertLlamaConfig):
        super().__init__()
        first, second, hidden = config.group_encoder_hidden_sizes
        in_channels = 3 + config.point_feature_size
        # BatchNorm, as Point-BERT: a per-point LayerNorm after the first linear would keep only the direction of
        # each relative xyz (a linear map of 3 numbers, rescaled) and lose the distances.
        self.first_fc1 = nn.Linear(in_channels, first)
        self.first_norm = nn.BatchNorm1d(first)
        self.first_fc2 = nn.Linear(first, second)
        self.second_fc1 = nn.Linear(2 * second, hidden)
        self.second_norm = nn.BatchNorm1d(hidden)
        self.second_fc2 = nn.Linear(hidden, config.group_encoder_size)
        for linear in (self.first_fc1, self.first_fc2, self.second_fc1, self.second_fc2):
            linear.torch_default_init = True  # see PointBertLlamaPreTrainedModel._init_weights

    @staticmethod
    def _norm_relu(norm: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
        return F.relu(norm(x.flatten(0, -2)).view_as(x))  # statistics over all points of all groups, as Point-BERT

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        x = self.first_fc2(self._norm_relu(self.first_norm, self.first_fc1(groups)))  # (B, G, k, second)
        pooled = x.amax(dim=2, keepdim=True).expand_as(x)  # (B, G, k, second)
        x = torch.cat([pooled, x], dim=-1)  # (B, G, k, 2 * second)
        x = self.second_fc2(self._norm_relu(self.second_norm, self.second_fc1(x)))  # (B, G, k, out)
        return x.amax(dim=2)  # (B, G, out)


class PointBertLlamaEmbeddings(nn.Module):
    """Point cloud -> (tokens (B, 1 + G, D), positions (B, 1 + G, D), centers (B, G, 3))."""

    def __init__(self, config: PointBertLlamaConfig):
        super().__init__()
        self.num_groups = config.num_groups
        self.group_size = config.group_size
        self.point_feature_size = config.point_feature_size
        self.group_encoder = PointBertLlamaGroupEncoder(config)
        self.group_projection = nn.Linear(config.group_encoder_size, config.hidden_size)
        self.position_embeddings = nn.Sequential(
            nn.Linear(3, config.position_embedding_size), nn.GELU(),
            nn.Linear(config.position_embedding_size, config.hidden_size),
        )
        for linear in (self.group_projection, self.position_embeddings[0], self.position_embeddings[2]):
            linear.torch_default_init = True  # see PointBertLlamaPreTrainedModel._init_weights
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.cls_position = nn.Parameter(torch.zeros(1, 1, config.hidden_size))

    def group(self, point_values: torch.Tensor, point_features: torch.Tensor | None = None):
        """(B, N, 3) [+ (B, N, F)] -> groups (B, G, k, 3 + F) relative to their centers, centers (B, G, 3)."""
        center_indices = farthest_point_sample(point_values, self.num_groups)  # (B, G)
        centers = gather_points(point_values, center_indices)  # (B, G, 3)
        neighbours = knn_indices(centers, point_values, self.group_size)  # (B, G, k)
        groups = gather_points(point_values, neighbours) - centers[:, :, None, :]  # (B, G, k, 3)
        if point_features is not None:
            groups = torch.cat([groups, gather_points(point_features, neighbours)], dim=-1)  # (B, G, k, 3 + F)
        return groups, centers

    def forward(self, point_values: torch.Tensor, point_features: torch.Tensor | None = None):
        groups, centers = self.group(point_values, point_features)
        tokens = self.group_projection(self.group_encoder(groups))  # (B, G, D)
        positions = self.position_embeddings(centers)  # (B, G, D)
        batch = point_values.shape[0]
        tokens = torch.cat([self.cls_token.expand(batch, -1, -1), tokens], dim=1)  # (B, 1 + G, D)
        positions = torch.cat([self.cls_position.expand(batch, -1, -1), positions], dim=1)  # (B, 1 + G, D)
        return tokens, positions, centers


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop a residual branch for whole samples, rescaling the kept ones."""
    if rate == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - rate)
    return x * keep / (1.0 - rate)


class PointBertLlamaAttention(nn.Module):
    def __init__(self, config: PointBertLlamaConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.attention_dropout = config.attention_dropout

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch, tokens, 3, self.num_heads, width // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, T, D / H)
        dropout = self.attention_dropout if self.training else 0.0
        # Bidirectional: every token sees every other (point groups have no order).
        attended = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout, is_causal=False)
        return self.proj(attended.transpose(1, 2).reshape(batch, tokens, width))


class PointBertLlamaLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x)), each branch with stochastic depth.
    (GradientCheckpointingLayer: `gradient_checkpointing_enable()` recomputes it in the backward pass.)"""

    def __init__(self, config: PointBertLlamaConfig, drop_path_rate: float):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = PointBertLlamaAttention(config)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.drop_path_rate = drop_path_rate

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        attended = self.dropout(self.attention(self.layernorm_before(hidden_states)))
        hidden_states = hidden_states + drop_path(attended, self.drop_path_rate, self.training)
        mlp = self.dropout(self.fc2(self.dropout(self.activation(self.fc1(self.layernorm_after(hidden_states))))))
        return hidden_states + drop_path(mlp, self.drop_path_rate, self.training)


# -- models ---------------------------------------------------------------------------------------------------
class PointBertLlamaPreTrainedModel(FrozenLMPreTrainedModel):
    config_class = PointBertLlamaConfig
    config: PointBertLlamaConfig
    base_model_prefix = "pointbert_llama"
    main_input_name = "point_values"
    input_modalities = ("point_cloud",)
    _no_split_modules = ["PointBertLlamaEmbeddings", "PointBertLlamaLayer", "FrozenLMBlock"]
    _auto_class = "AutoModelForPointCloudClassification"
    auto_map_entries = {
        "AutoModel": "PointBertLlamaModel",
        "AutoModelForPointCloudClassification": "PointBertLlamaForPointCloudClassification",
    }

    def _init_weights(self, module):
        if getattr(module, "torch_default_init", False):
            # PyTorch's default init (Point-BERT's Conv1d), not std 0.02, for the layers fed by raw coordinates: a group's
            # relative coordinates are ~0.05, so std-0.02 weights give pre-BatchNorm activations of variance ~1e-5, the
            # running variance (which starts at 1) takes thousands of steps to catch up, and evaluation-mode outputs are
            # wrong until then; the centers' MLP and the token projection likewise start with too little signal.
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            bound = 1 / math.sqrt(module.in_features)
            init.uniform_(module.bias, -bound, bound)
            return
        super()._init_weights(module)
        if isinstance(module, PointBertLlamaEmbeddings):
            init.trunc_normal_(module.cls_token, std=self.config.initializer_range)
            init.trunc_normal_(module.cls_position, std=self.config.initializer_range)

    # -- from_parts hooks: the trunk's fields are this config's own (no sub-config), so resolving gives a dict ------
    trunk_config_key = ""

    @classmethod
    def resolve_trunk(cls, points, **points_kwargs):
        """points: a preset name or a dict of PointBertLlamaConfig trunk fields. Returns (fields, None)."""
        if isinstance(points, dict):
            return {**points, **points_kwargs}, None
        if isinstance(points, str) and points in POINTBERT_PRESETS:
            return {**POINTBERT_PRESETS[points], **points_kwargs}, None
        raise ValueError(
            f"points={points!r} is not a preset ({', '.join(POINTBERT_PRESETS)}) or a dict of trunk fields "
            "(hidden_size, num_hidden_layers, num_attention_heads, num_groups, group_size, ...)."
        )

    def check_point_values(self, point_values: torch.Tensor, point_features: torch.Tensor | None) -> None:
        """Clear errors for clouds the grouping cannot handle (it would otherwise fail deep inside topk or FPS)."""
        config = self.config
        if point_values.ndim != 3 or point_values.shape[-1] != 3:
            raise ValueError(
                f"point_values has shape {tuple(point_values.shape)}; expected (batch, points, 3) xyz coordinates. "
                "Pass extra per-point channels (normals, colours) as point_features."
            )
        if point_values.shape[1] < config.min_points:
            raise ValueError(
                f"The clouds have {point_values.shape[1]} points; this model needs at least {config.min_points} "
                f"({config.num_groups} groups of {config.group_size} points). Resample the clouds to more points."
            )
        if not torch.isfinite(point_values).all():
            raise ValueError("point_values contains NaN or infinite coordinates; drop or repair those points first.")
        expected = config.point_feature_size
        if expected and point_features is None:
            raise ValueError(f"This model takes {expected} point_features per point; none were given.")
        if point_features is not None:
            if point_features.shape != (*point_values.shape[:2], expected):
                raise ValueError(
                    f"point_features has shape {tuple(point_features.shape)}; expected "
                    f"{(*point_values.shape[:2], expected)} (config.point_feature_size={expected})."
                )
            if not torch.isfinite(point_features).all():
                raise ValueError("point_features contains NaN or infinite values.")


class PointBertLlamaModel(PointBertLlamaPreTrainedModel):
    """Point-BERT trunk + FrozenLMBlock; returns the normalised tokens and [CLS, max over groups] as pooled output."""

    _auto_class = "AutoModel"

    def __init__(self, config: PointBertLlamaConfig):
        super().__init__(config)
        self.embeddings = PointBertLlamaEmbeddings(config)
        rates = torch.linspace(0, config.drop_path_rate, config.num_hidden_layers).tolist()
        self.layers = nn.ModuleList(PointBertLlamaLayer(config, rate) for rate in rates)
        self.frozen_lm = FrozenLMBlock(config, config.hidden_size)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.group_encoder

    @can_return_tuple
    def forward(
        self,
        point_values: torch.Tensor,
        point_features: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        self.check_point_values(point_values, point_features)
        dtype = self.embeddings.group_projection.weight.dtype
        if point_features is not None:
            point_features = point_features.to(dtype)
        hidden_states, positions, _ = self.embeddings(point_values.to(dtype), point_features)  # (B, 1 + G, D) each
        all_hidden_states = [hidden_states] if output_hidden_states else None
        for layer in self.layers:
            # Point-BERT adds the center embeddings before every block, not only the first.
            hidden_states = layer(hidden_states + positions)
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
        hidden_states = self.frozen_lm(hidden_states)  # (B, 1 + G, D)
        if output_hidden_states:
            all_hidden_states.append(hidden_states)
        sequence_output = self.layernorm(hidden_states)
        pooled = torch.cat([sequence_output[:, 0], sequence_output[:, 1:].amax(dim=1)], dim=-1)  # (B, 2D)
        return BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=pooled,
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
        )


class PointBertLlamaForPointCloudClassification(PointBertLlamaPreTrainedModel):
    """PointBertLlamaModel + Point-BERT's head: [CLS, max-pool] -> 256 -> ReLU -> dropout 0.5 -> classes."""

    def __init__(self, config: PointBertLlamaConfig):
        super().__init__(config)
        # No "For<Task>" loss entry exists for point clouds; the loss is the same as for images and sequences.
        self.loss_type = "ForSequenceClassification"
        self.num_labels = config.num_labels
        self.pointbert_llama = PointBertLlamaModel(config)
        self.classifier = self._make_classifier(config.num_labels)
        self.post_init()

    def _make_classifier(self, num_labels: int) -> nn.Module:
        if num_labels <= 0:
            return nn.Identity()
        return nn.Sequential(
            nn.Linear(2 * self.config.hidden_size, self.config.classifier_hidden_size),
            nn.ReLU(),
            nn.Dropout(self.config.classifier_dropout),
            nn.Linear(self.config.classifier_hidden_size, num_labels),
        )

    @classmethod
    def from_parts(cls, points="pointbert-small", llm=None, llm_layers=(-1,), variant="llm", **kwargs):
        """Build from a Point-BERT trunk (preset name or dict of trunk fields; `trunk_kwargs` resize it) and an LLM
        source; see `FrozenLMPreTrainedModel.build_from_parts`."""
        return cls.build_from_parts(points, llm, llm_layers=llm_layers, variant=variant, **kwargs)

    def reset_classifier(self, num_labels: int, id2label: dict | None = None) -> None:
        """Replace the head for a new label set (e.g. fine-tuning a trained model on other classes)."""
        self.config.num_labels = num_labels
        self.config.id2label = id2label or {i: str(i) for i in range(num_labels)}
        self.config.label2id = {v: k for k, v in self.config.id2label.items()}
        self.num_labels = num_labels
        self.classifier = self._make_classifier(num_labels)

    @can_return_tuple
    def forward(
        self,
        point_values: torch.Tensor,
        point_features: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> PointCloudClassifierOutput:
        outputs = self.pointbert_llama(point_values, point_features, output_hidden_states=output_hidden_states)
        logits = self.classifier(outputs.pooler_output)
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config, **kwargs)
        return PointCloudClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


class AutoModelForPointCloudClassification(_BaseAutoModelClass):
    """Auto class for point-cloud classification, which transformers does not define.

    Importing hf_frozenlm registers PointBertLlamaConfig here; a saved folder names this class in its auto_map, so
    `AutoModelForPointCloudClassification.from_pretrained(folder, trust_remote_code=True)` also works without it.
    """

    _model_mapping = _LazyAutoMapping(OrderedDict(), OrderedDict())


# transformers accepts only Auto classes found in `transformers.models.auto` (`register_for_auto_class` checks, and the
# trust_remote_code path of `from_pretrained` calls it); make this one findable there, once, under its own name.
_auto_module = importlib.import_module("transformers.models.auto")
if not hasattr(_auto_module, AutoModelForPointCloudClassification.__name__):
    setattr(_auto_module, AutoModelForPointCloudClassification.__name__, AutoModelForPointCloudClassification)
