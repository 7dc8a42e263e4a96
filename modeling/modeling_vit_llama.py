"""ViT + frozen LLM block (Pang et al., ICLR 2024), as transformers models.

Data flow, as the official code: patch embedding + CLS + positions -> ViT blocks -> FrozenLMBlock
(proj_in -> LLM layer(s) -> unit RMSNorm -> proj_out) -> the ViT's final LayerNorm -> CLS token -> classifier.

Hub-portable: imports only torch/transformers and sibling modules.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import ViTConfig, ViTModel
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.utils import can_return_tuple

from .configuration_vit_llama import ViTLlamaConfig
from .frozenlm_block import FrozenLMBlock, FrozenLMPreTrainedModel
from .frozenlm_stochastic_depth import add_stochastic_depth

# Presets (timm/DeiT sizes): depth 12, MLP ratio 4, patch 16, 224 px; resize with trunk_kwargs.
_VIT_COMMON = dict(num_hidden_layers=12, image_size=224, patch_size=16, qkv_bias=True, hidden_dropout_prob=0.0,
                   attention_probs_dropout_prob=0.0, layer_norm_eps=1e-6)
VIT_PRESETS = {
    "vit-tiny": dict(_VIT_COMMON, hidden_size=192, num_attention_heads=3, intermediate_size=768),
    "vit-small": dict(_VIT_COMMON, hidden_size=384, num_attention_heads=6, intermediate_size=1536),
    "vit-base": dict(_VIT_COMMON, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
}


class ViTLlamaPreTrainedModel(FrozenLMPreTrainedModel):
    config_class = ViTLlamaConfig
    config: ViTLlamaConfig
    base_model_prefix = "vit_llama"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["ViTEmbeddings", "ViTLayer", "FrozenLMBlock"]
    trunk_presets = VIT_PRESETS
    trunk_config_class = ViTConfig
    trunk_model_class = ViTModel
    trunk_config_key = "vision_config"
    trunk_attribute = "vit"


class ViTLlamaModel(ViTLlamaPreTrainedModel):
    """ViT trunk + FrozenLMBlock; returns the normalised tokens and the CLS token as pooled output."""

    _auto_class = "AutoModel"
    auto_map_entries = {"AutoModel": "ViTLlamaModel"}

    def __init__(self, config: ViTLlamaConfig):
        super().__init__(config)
        # ViTModel is used as a container of its parts: the frozen block sits between its last layer and its
        # final LayerNorm, so its own forward (which fuses the two) is not called.
        self.vit = ViTModel(config.vision_config, add_pooling_layer=False)
        # transformers' ViTLayer ends both residual branches with the same dropout: drop path goes there.
        add_stochastic_depth(self.vit.layers, config.drop_path_rate, branch_dropouts=("dropout",))
        self.frozen_lm = FrozenLMBlock(config, config.vision_config.hidden_size)
        self.post_init()

    def get_input_embeddings(self):
        return self.vit.embeddings.patch_embeddings

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        expected_dtype = self.vit.embeddings.patch_embeddings.projection.weight.dtype
        hidden_states = self.vit.embeddings(
            pixel_values.to(expected_dtype), interpolate_pos_encoding=interpolate_pos_encoding
        )  # (B, 1 + N, D)
        all_hidden_states = [hidden_states] if output_hidden_states else None
        for layer in self.vit.layers:
            hidden_states = layer(hidden_states, None)
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
        hidden_states = self.frozen_lm(hidden_states)  # (B, 1 + N, D)
        if output_hidden_states:
            all_hidden_states.append(hidden_states)
        sequence_output = self.vit.layernorm(hidden_states)
        return BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=sequence_output[:, 0],
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
        )


class ViTLlamaForImageClassification(ViTLlamaPreTrainedModel):
    """ViTLlamaModel + a linear classifier on the CLS token (single-, multi-label or regression loss)."""

    _auto_class = "AutoModelForImageClassification"
    auto_map_entries = {
        "AutoModel": "ViTLlamaModel",
        "AutoModelForImageClassification": "ViTLlamaForImageClassification",
    }

    def __init__(self, config: ViTLlamaConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vit_llama = ViTLlamaModel(config)
        self.classifier = self.make_classifier(config.num_labels)
        self.post_init()

    def make_classifier(self, num_labels: int) -> nn.Module:
        return nn.Linear(self.config.vision_config.hidden_size, num_labels) if num_labels > 0 else nn.Identity()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput:
        outputs = self.vit_llama(
            pixel_values, output_hidden_states=output_hidden_states, interpolate_pos_encoding=interpolate_pos_encoding
        )
        logits = self.classifier(outputs.pooler_output)
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config, **kwargs)
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)
