"""Point-BERT + frozen LLM block (Pang et al., ICLR 2024), as transformers models.

Data flow, as the official point-cloud code: farthest point sampling of G centers -> the k nearest points of each,
relative to their center -> mini-PointNet group encoder (one token per group) -> CLS token + MLP embedding of the
centers' xyz -> transformer blocks (positions added before every block, as Point-BERT) -> FrozenLMBlock -> LayerNorm
-> head MLP over [CLS, max over group tokens].

3D question answering (the SQA3D setting) reuses the same trunk: the scene's group tokens, a bidirectional-LSTM question
encoder and cross-attention fusion, then the frozen block over [scene tokens, question tokens] with the question's
padding mask -> LayerNorm -> [scene CLS, mean of valid question tokens] -> MLP -> answer logits.

Transformers has no Point-BERT, so the trunk is written here: a compact pre-norm transformer on torch's sdpa.

Hub-portable: imports only torch/transformers and sibling modules.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput
from transformers.utils import can_return_tuple

from .configuration_pointbert_llama import PointBertLlamaConfig, PointBertLlamaQAConfig
from .frozenlm_block import FrozenLMBlock, FrozenLMPreTrainedModel
from .frozenlm_stochastic_depth import drop_path, drop_path_rates

# Presets: Point-BERT's fine-tuning trunk (the paper's point-cloud experiments use "pointbert-small") and a tiny one
# sized for the builtin 3D shapes and rooms (256 points in 16 groups of 16).
POINTBERT_PRESETS = {
    "pointbert-small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                            num_groups=64, group_size=32),
    "pointbert-tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                           num_groups=16, group_size=16, group_encoder_hidden_sizes=[32, 64, 128], group_encoder_size=64,
                           position_embedding_size=32, classifier_hidden_size=64, drop_path_rate=0.0),
}


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
    """Point-BERT's init policy, input checks and trunk loop, shared by the classification and the 3D question-answering
    heads (so both start their scene tokenizer the same way)."""

    config_class = PointBertLlamaConfig
    config: PointBertLlamaConfig
    base_model_prefix = "pointbert_llama"
    main_input_name = "point_values"
    input_modalities = ("point_cloud",)
    _no_split_modules = ["PointBertLlamaEmbeddings", "PointBertLlamaLayer", "FrozenLMBlock"]
    trunk_presets = POINTBERT_PRESETS
    trunk_modules = ("embeddings", "layers")

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

    def build_trunk(self, config: PointBertLlamaConfig) -> None:
        """The trunk's modules, under the names `encode_points` reads."""
        self.embeddings = PointBertLlamaEmbeddings(config)
        rates = drop_path_rates(config.drop_path_rate, config.num_hidden_layers)
        self.layers = nn.ModuleList(PointBertLlamaLayer(config, rate) for rate in rates)

    def get_input_embeddings(self):
        return self.embeddings.group_encoder

    def check_point_values(self, point_values: torch.Tensor, point_features: torch.Tensor | None) -> None:
        """Clear errors for clouds the grouping cannot handle (it would otherwise fail deep inside topk or FPS)."""
        config = self.config
        if point_values.ndim != 3 or point_values.shape[-1] != 3:
            raise ValueError(
                f"point_values has shape {tuple(point_values.shape)}; expected (batch, points, 3) xyz coordinates. "
                "Pass extra per-point channels (normals, colours) as point_features."
            )
        if point_values.shape[1] == 0:
            raise ValueError("Empty clouds: point_values holds no points.")
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

    def encode_points(self, point_values, point_features=None, all_hidden_states: list | None = None) -> torch.Tensor:
        """The Point-BERT trunk: clouds (B, N, 3) [+ features (B, N, F)] -> tokens (B, 1 + G, D), [CLS] first.
        Appends each stage's tokens to `all_hidden_states` when given."""
        self.check_point_values(point_values, point_features)
        dtype = self.embeddings.group_projection.weight.dtype
        if point_features is not None:
            point_features = point_features.to(dtype)
        hidden_states, positions, _ = self.embeddings(point_values.to(dtype), point_features)  # (B, 1 + G, D) each
        if all_hidden_states is not None:
            all_hidden_states.append(hidden_states)
        for layer in self.layers:
            # Point-BERT adds the center embeddings before every block, not only the first.
            hidden_states = layer(hidden_states + positions)
            if all_hidden_states is not None:
                all_hidden_states.append(hidden_states)
        return hidden_states


class PointBertLlamaModel(PointBertLlamaPreTrainedModel):
    """Point-BERT trunk + FrozenLMBlock; returns the normalised tokens and [CLS, max over groups] as pooled output."""

    _auto_class = "AutoModel"
    auto_map_entries = {"AutoModel": "PointBertLlamaModel"}

    def __init__(self, config: PointBertLlamaConfig):
        super().__init__(config)
        self.build_trunk(config)
        self.frozen_lm = FrozenLMBlock(config, config.hidden_size)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

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
        all_hidden_states = [] if output_hidden_states else None
        hidden_states = self.frozen_lm(self.encode_points(point_values, point_features, all_hidden_states))
        if output_hidden_states:
            all_hidden_states.append(hidden_states)
        sequence_output = self.layernorm(hidden_states)  # (B, 1 + G, D)
        pooled = torch.cat([sequence_output[:, 0], sequence_output[:, 1:].amax(dim=1)], dim=-1)  # (B, 2D)
        return BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=pooled,
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
        )


def point_bert_classifier(config, num_labels: int) -> nn.Module:
    """Point-BERT's head over the (B, 2D) pooled output: 2D -> hidden -> ReLU -> dropout -> labels."""
    if num_labels <= 0:
        return nn.Identity()
    return nn.Sequential(
        nn.Linear(2 * config.hidden_size, config.classifier_hidden_size),
        nn.ReLU(),
        nn.Dropout(config.classifier_dropout),
        nn.Linear(config.classifier_hidden_size, num_labels),
    )


class PointBertLlamaForPointCloudClassification(PointBertLlamaPreTrainedModel):
    """PointBertLlamaModel + Point-BERT's head: [CLS, max-pool] -> 256 -> ReLU -> dropout 0.5 -> classes."""

    # transformers has no Auto class or pipeline for point clouds: AutoModel, our own Auto class and the custom
    # pipeline all load this head.
    _auto_class = "AutoModelForPointCloudClassification"
    auto_map_entries = {
        "AutoModel": "PointBertLlamaForPointCloudClassification",
        "AutoModelForPointCloudClassification": "PointBertLlamaForPointCloudClassification",
    }
    custom_pipeline = ("point-cloud-classification", "frozenlm_pipelines.PointCloudClassificationPipeline")

    def __init__(self, config: PointBertLlamaConfig):
        super().__init__(config)
        # No "For<Task>" loss entry exists for point clouds; the loss is the same as for images and sequences.
        self.loss_type = "ForSequenceClassification"
        self.num_labels = config.num_labels
        self.pointbert_llama = PointBertLlamaModel(config)
        self.classifier = self.make_classifier(config.num_labels)
        self.post_init()

    def make_classifier(self, num_labels: int) -> nn.Module:
        return point_bert_classifier(self.config, num_labels)

    @can_return_tuple
    def forward(
        self,
        point_values: torch.Tensor,
        point_features: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        outputs = self.pointbert_llama(point_values, point_features, output_hidden_states=output_hidden_states)
        logits = self.classifier(outputs.pooler_output)
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config, **kwargs)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


# -- 3D question answering ------------------------------------------------------------------------------------
class PointBertLlamaQuestionEncoder(nn.Module):
    """(B, L) token ids + (B, L) mask -> (B, L, D) per-token states of a bidirectional LSTM; padding never read."""

    def __init__(self, config: PointBertLlamaQAConfig):
        super().__init__()
        self.embeddings = nn.Embedding(config.question_vocab_size, config.hidden_size, padding_idx=0)
        self.lstm = nn.LSTM(
            config.hidden_size, config.hidden_size // 2, num_layers=config.question_num_layers, batch_first=True,
            bidirectional=True,
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        lengths = attention_mask.sum(dim=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embeddings(input_ids), lengths, batch_first=True, enforce_sorted=False
        )
        states, _ = self.lstm(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(states, batch_first=True, total_length=input_ids.shape[1])
        return states  # (B, L, D), zeros at padding


class PointBertLlamaFusionLayer(nn.Module):
    """Cross-attention both ways (pre-norm, residual) followed by an MLP on each stream."""

    def __init__(self, config: PointBertLlamaQAConfig):
        super().__init__()
        width, heads = config.hidden_size, config.num_attention_heads
        self.question_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.scene_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.question_to_scene = nn.MultiheadAttention(width, heads, batch_first=True)
        self.scene_to_question = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.mlp = nn.Sequential(nn.Linear(width, config.intermediate_size), nn.GELU(),
                                 nn.Linear(config.intermediate_size, width))

    def forward(self, scene: torch.Tensor, question: torch.Tensor, question_mask: torch.Tensor):
        scene_in, question_in = self.scene_norm(scene), self.question_norm(question)
        question = question + self.question_to_scene(question_in, scene_in, scene_in, need_weights=False)[0]
        # The scene reads only valid question tokens (key_padding_mask True = ignore).
        scene = scene + self.scene_to_question(
            scene_in, question_in, question_in, key_padding_mask=~question_mask, need_weights=False
        )[0]
        scene = scene + self.mlp(self.mlp_norm(scene))
        question = question + self.mlp(self.mlp_norm(question))
        return scene, question


class PointBertLlamaQAPreTrainedModel(PointBertLlamaPreTrainedModel):
    """Point-BERT's init policy (inherited: the scene tokenizer starts as in the classification head) plus the
    question side's, and the question checks."""

    config_class = PointBertLlamaQAConfig
    config: PointBertLlamaQAConfig
    base_model_prefix = "pointbert_llama_qa"
    input_modalities = ("point_cloud", "text")

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, nn.MultiheadAttention):
            init.xavier_uniform_(module.in_proj_weight)
            init.zeros_(module.in_proj_bias)
        if isinstance(module, nn.LSTM):
            for name, parameter in module.named_parameters():
                (init.zeros_ if "bias" in name else init.xavier_uniform_)(parameter)

    def check_question(self, input_ids, attention_mask, batch_size: int) -> torch.Tensor:
        """Clear errors for questions that do not fit the scenes or the model; returns the boolean mask."""
        if input_ids.ndim != 2 or input_ids.shape[0] != batch_size:
            raise ValueError(
                f"input_ids has shape {tuple(input_ids.shape)}; expected ({batch_size}, question_length): "
                "one question per scene."
            )
        if input_ids.shape[1] > self.config.max_question_length:
            raise ValueError(
                f"Questions of {input_ids.shape[1]} tokens; this model takes at most {self.config.max_question_length}."
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has {tuple(input_ids.shape)}."
            )
        attention_mask = attention_mask.to(torch.bool)
        if not attention_mask.any(dim=1).all():
            raise ValueError("A question is empty (its attention_mask is all 0).")
        return attention_mask


class PointBertLlamaQAModel(PointBertLlamaQAPreTrainedModel):
    """Scene points + a question -> fused tokens [scene (1 + G), question (L)] after the frozen block, normalised;
    pooled output [scene CLS, mean of the valid question tokens] (B, 2D)."""

    _auto_class = "AutoModel"
    auto_map_entries = {"AutoModel": "PointBertLlamaQAModel"}

    def __init__(self, config: PointBertLlamaQAConfig):
        super().__init__(config)
        self.build_trunk(config)
        self.question_encoder = PointBertLlamaQuestionEncoder(config)
        self.fusion = nn.ModuleList(PointBertLlamaFusionLayer(config) for _ in range(config.num_fusion_layers))
        self.frozen_lm = FrozenLMBlock(config, config.hidden_size)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        point_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        point_features: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        question_mask = self.check_question(input_ids, attention_mask, point_values.shape[0])
        all_hidden_states = [] if output_hidden_states else None
        scene = self.encode_points(point_values, point_features, all_hidden_states)  # (B, 1 + G, D)
        question = self.question_encoder(input_ids, question_mask)  # (B, L, D)
        for layer in self.fusion:
            scene, question = layer(scene, question, question_mask)
        tokens = torch.cat([scene, question], dim=1)  # (B, 1 + G + L, D)
        mask = torch.cat([question_mask.new_ones(scene.shape[:2]), question_mask], dim=1)
        fused = self.frozen_lm(tokens, attention_mask=mask.long())
        if output_hidden_states:
            all_hidden_states += [tokens, fused]
        fused = self.layernorm(fused)
        weights = question_mask.unsqueeze(-1).to(fused.dtype)
        question_mean = (fused[:, scene.shape[1]:] * weights).sum(1) / weights.sum(1)  # (B, D)
        return BaseModelOutputWithPooling(
            last_hidden_state=fused,
            pooler_output=torch.cat([fused[:, 0], question_mean], dim=-1),  # (B, 2D)
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
        )


class PointBertLlamaForQuestionAnswering(PointBertLlamaQAPreTrainedModel):
    """PointBertLlamaQAModel + an MLP over the pooled output -> answer logits (labels (B,) answer ids: cross-entropy)."""

    # transformers has no Auto class or pipeline for 3D question answering: AutoModel, our own Auto class and the
    # custom pipeline all load this head.
    _auto_class = "AutoModelForQuestionAnswering3D"
    auto_map_entries = {
        "AutoModel": "PointBertLlamaForQuestionAnswering",
        "AutoModelForQuestionAnswering3D": "PointBertLlamaForQuestionAnswering",
    }
    custom_pipeline = ("3d-question-answering", "frozenlm_pipelines.QuestionAnswering3DPipeline")

    def __init__(self, config: PointBertLlamaQAConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.pointbert_llama_qa = PointBertLlamaQAModel(config)
        self.classifier = self.make_classifier(config.num_labels)
        self.post_init()

    def make_classifier(self, num_labels: int) -> nn.Module:
        return point_bert_classifier(self.config, num_labels)

    @can_return_tuple
    def forward(
        self,
        point_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        point_features: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        outputs = self.pointbert_llama_qa(
            point_values, input_ids, attention_mask, point_features, output_hidden_states=output_hidden_states
        )
        logits = self.classifier(outputs.pooler_output)  # (B, num_labels)
        loss = None
        if labels is not None:
            if labels.shape != logits.shape[:1]:
                raise ValueError(f"labels has shape {tuple(labels.shape)}; expected ({logits.shape[0]},) answer ids.")
            if ((labels < 0) | (labels >= logits.shape[1])).any():
                raise ValueError(f"labels holds answer ids outside 0..{logits.shape[1] - 1} (the answer vocabulary).")
            loss = F.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)
