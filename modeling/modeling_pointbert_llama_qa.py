"""Point-BERT + frozen LLM block for 3D question answering (Pang et al., ICLR 2024, the SQA3D setting), as a
transformers model.

Data flow: scene points -> the Point-BERT tokenizer of the point-cloud head (farthest point sampling, k nearest
neighbours, mini-PointNet: one token per group, plus [CLS]) -> Point-BERT blocks; question token ids -> embedding ->
bidirectional LSTM (SQA3D's text encoder) -> cross-attention fusion (question attends to scene, scene attends to
question) -> FrozenLMBlock over [scene tokens, question tokens] with the question's padding mask -> LayerNorm ->
[scene CLS, mean of valid question tokens] -> MLP -> answer logits. Metric: exact match of the top answer (EM@1).

Hub-portable: imports only torch/transformers and sibling modules.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping
from transformers.utils import can_return_tuple

from .configuration_pointbert_llama_qa import PointBertLlamaQAConfig
from .frozenlm_block import FrozenLMBlock, FrozenLMPreTrainedModel
from .modeling_pointbert_llama import POINTBERT_PRESETS, PointBertLlamaEmbeddings, PointBertLlamaLayer


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


class PointBertLlamaQAPreTrainedModel(FrozenLMPreTrainedModel):
    config_class = PointBertLlamaQAConfig
    config: PointBertLlamaQAConfig
    base_model_prefix = "pointbert_llama_qa"
    main_input_name = "point_values"
    input_modalities = ("point_cloud", "text")
    _no_split_modules = ["PointBertLlamaEmbeddings", "PointBertLlamaLayer", "FrozenLMBlock"]
    _auto_class = "AutoModelForQuestionAnswering3D"
    auto_map_entries = {"AutoModelForQuestionAnswering3D": "PointBertLlamaForQuestionAnswering"}

    def _init_weights(self, module):
        super()._init_weights(module)
        from transformers import initialization as init

        if isinstance(module, PointBertLlamaEmbeddings):
            init.trunc_normal_(module.cls_token, std=self.config.initializer_range)
            init.trunc_normal_(module.cls_position, std=self.config.initializer_range)
        if isinstance(module, nn.MultiheadAttention):
            init.xavier_uniform_(module.in_proj_weight)
            init.zeros_(module.in_proj_bias)
        if isinstance(module, nn.LSTM):
            for name, parameter in module.named_parameters():
                (init.zeros_ if "bias" in name else init.xavier_uniform_)(parameter)

    trunk_config_key = ""

    @classmethod
    def resolve_trunk(cls, points, **points_kwargs):
        """points: a Point-BERT preset name or a dict of trunk fields. Returns (fields, None)."""
        if isinstance(points, dict):
            return {**points, **points_kwargs}, None
        if isinstance(points, str) and points in POINTBERT_PRESETS:
            return {**POINTBERT_PRESETS[points], **points_kwargs}, None
        raise ValueError(f"points={points!r} is not a preset ({', '.join(POINTBERT_PRESETS)}) or a dict of trunk fields.")


class PointBertLlamaForQuestionAnswering(PointBertLlamaQAPreTrainedModel):
    """Scene points + a question -> answer logits (labels (B,) answer ids: cross-entropy)."""

    def __init__(self, config: PointBertLlamaQAConfig):
        super().__init__(config)
        self.embeddings = PointBertLlamaEmbeddings(config)
        rates = torch.linspace(0, config.drop_path_rate, config.num_hidden_layers).tolist()
        self.layers = nn.ModuleList(PointBertLlamaLayer(config, rate) for rate in rates)
        self.question_encoder = PointBertLlamaQuestionEncoder(config)
        self.fusion = nn.ModuleList(PointBertLlamaFusionLayer(config) for _ in range(config.num_fusion_layers))
        self.frozen_lm = FrozenLMBlock(config, config.hidden_size)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.classifier = nn.Sequential(
            nn.Linear(2 * config.hidden_size, config.classifier_hidden_size), nn.ReLU(),
            nn.Dropout(config.classifier_dropout), nn.Linear(config.classifier_hidden_size, config.num_labels),
        )
        self.post_init()

    @classmethod
    def from_parts(cls, points="pointbert-small", llm=None, llm_layers=(-1,), variant="llm", **kwargs):
        """Build from a Point-BERT trunk (preset or dict; `trunk_kwargs` resize it) and an LLM source; `id2label` is
        the answer vocabulary and `question_vocab_size` the question tokenizer's size."""
        return cls.build_from_parts(points, llm, llm_layers=llm_layers, variant=variant, **kwargs)

    def check_inputs(self, point_values, input_ids, attention_mask, point_features):
        config = self.config
        if point_values.ndim != 3 or point_values.shape[-1] != 3:
            raise ValueError(f"point_values has shape {tuple(point_values.shape)}; expected (batch, points, 3).")
        if point_values.shape[1] == 0:
            raise ValueError("Empty scene: point_values holds no points.")
        if point_values.shape[1] < config.min_points:
            raise ValueError(
                f"The scenes have {point_values.shape[1]} points; this model needs at least {config.min_points} "
                f"({config.num_groups} groups of {config.group_size} points). Resample the scenes to more points."
            )
        if not torch.isfinite(point_values).all():
            raise ValueError("point_values contains NaN or infinite coordinates.")
        expected_features = (*point_values.shape[:2], config.point_feature_size)
        if config.point_feature_size and (point_features is None or tuple(point_features.shape) != expected_features):
            raise ValueError(
                f"point_features must be {expected_features} (config.point_feature_size); got "
                f"{None if point_features is None else tuple(point_features.shape)}."
            )
        if input_ids.ndim != 2 or input_ids.shape[0] != point_values.shape[0]:
            raise ValueError(
                f"input_ids has shape {tuple(input_ids.shape)}; expected ({point_values.shape[0]}, question_length): "
                "one question per scene."
            )
        if input_ids.shape[1] > config.max_question_length:
            raise ValueError(f"Questions of {input_ids.shape[1]} tokens; this model takes at most {config.max_question_length}.")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has {tuple(input_ids.shape)}.")
        attention_mask = attention_mask.to(torch.bool)
        if not attention_mask.any(dim=1).all():
            raise ValueError("A question is empty (its attention_mask is all 0).")
        return attention_mask

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
        question_mask = self.check_inputs(point_values, input_ids, attention_mask, point_features)
        dtype = self.embeddings.group_projection.weight.dtype
        if point_features is not None:
            point_features = point_features.to(dtype)
        scene, positions, _ = self.embeddings(point_values.to(dtype), point_features)  # (B, 1 + G, D) each
        for layer in self.layers:
            scene = layer(scene + positions)  # Point-BERT adds the center embeddings before every block
        question = self.question_encoder(input_ids, question_mask)  # (B, L, D)
        for layer in self.fusion:
            scene, question = layer(scene, question, question_mask)
        tokens = torch.cat([scene, question], dim=1)  # (B, 1 + G + L, D)
        mask = torch.cat([question_mask.new_ones(scene.shape[:2]), question_mask], dim=1)
        fused = self.layernorm(self.frozen_lm(tokens, attention_mask=mask.long()))
        question_out = fused[:, scene.shape[1]:]
        weights = question_mask.unsqueeze(-1).to(fused.dtype)
        question_mean = (question_out * weights).sum(1) / weights.sum(1)  # (B, D)
        logits = self.classifier(torch.cat([fused[:, 0], question_mean], dim=-1))  # (B, num_labels)
        loss = None
        if labels is not None:
            if labels.shape != logits.shape[:1]:
                raise ValueError(f"labels has shape {tuple(labels.shape)}; expected ({logits.shape[0]},) answer ids.")
            if ((labels < 0) | (labels >= logits.shape[1])).any():
                raise ValueError(f"labels holds answer ids outside 0..{logits.shape[1] - 1} (the answer vocabulary).")
            loss = F.cross_entropy(logits, labels)
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=(tokens, fused) if output_hidden_states else None
        )


class AutoModelForQuestionAnswering3D(_BaseAutoModelClass):
    """Auto class for question answering over 3D scenes, which transformers does not define.

    Importing hf_frozenlm registers PointBertLlamaQAConfig here; a saved folder names this class in its auto_map.
    """

    _model_mapping = _LazyAutoMapping(OrderedDict(), OrderedDict())
