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

# Presets (timm/DeiT sizes): width, heads. Depth 12, MLP ratio 4, patch 16, 224 px.
VIT_PRESETS = {
    "vit-tiny": dict(hidden_size=192, num_attention_heads=3),
    "vit-small": dict(hidden_size=384, num_attention_heads=6),
    "vit-base": dict(hidden_size=768, num_attention_heads=12),
}


def vit_preset_config(name: str, **overrides) -> ViTConfig:
    """A ViTConfig for a named preset; `overrides` (image_size, patch_size, num_hidden_layers, ...) resize it."""
    if name not in VIT_PRESETS:
        raise ValueError(f"Unknown ViT preset {name!r}; presets: {', '.join(VIT_PRESETS)}.")
    width = VIT_PRESETS[name]["hidden_size"]
    fields = dict(
        num_hidden_layers=12, intermediate_size=4 * width, image_size=224, patch_size=16, qkv_bias=True,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, layer_norm_eps=1e-6,
    )
    fields.update(VIT_PRESETS[name])
    fields.update(overrides)
    return ViTConfig(**fields)


class ViTLlamaPreTrainedModel(FrozenLMPreTrainedModel):
    config_class = ViTLlamaConfig
    config: ViTLlamaConfig
    base_model_prefix = "vit_llama"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["ViTEmbeddings", "ViTLayer", "FrozenLMBlock"]
    _auto_class = "AutoModelForImageClassification"
    auto_map_entries = {
        "AutoModel": "ViTLlamaModel",
        "AutoModelForImageClassification": "ViTLlamaForImageClassification",
    }

    # -- from_parts hooks: how this head resolves and loads its trunk ---------------------------------
    trunk_config_key = "vision_config"

    @classmethod
    def resolve_trunk(cls, vision, **vision_kwargs):
        """vision: a preset name, a ViTConfig, or a Hub id / local dir of a ViT checkpoint.

        Returns (ViTConfig, path to load trunk weights from or None).
        """
        if isinstance(vision, ViTConfig):
            return (ViTConfig(**{**vision.to_dict(), **vision_kwargs}) if vision_kwargs else vision), None
        if isinstance(vision, str) and vision in VIT_PRESETS:
            return vit_preset_config(vision, **vision_kwargs), None
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(vision)
        except OSError as error:
            raise ValueError(
                f"vision={vision!r} is not a preset ({', '.join(VIT_PRESETS)}), a ViTConfig, or a readable ViT "
                f"checkpoint ({error})."
            ) from error
        if config.model_type != "vit":
            raise ValueError(
                f"{vision} is a {config.model_type!r} checkpoint; ViTLlama needs a ViT (or DeiT saved as ViT) trunk."
            )
        if vision_kwargs:
            raise ValueError(f"Cannot resize a pretrained ViT checkpoint ({sorted(vision_kwargs)}).")
        return config, vision

    def load_trunk_weights(self, source) -> None:
        # ViTModel.from_pretrained handles ViT's legacy checkpoint names; its weights are then copied in.
        pretrained = ViTModel.from_pretrained(source, add_pooling_layer=False)
        self.trunk.load_state_dict(pretrained.state_dict())

    @property
    def trunk(self) -> ViTModel:
        return self.base_model.vit


class ViTLlamaModel(ViTLlamaPreTrainedModel):
    """ViT trunk + FrozenLMBlock; returns the normalised tokens and the CLS token as pooled output."""

    _auto_class = "AutoModel"

    def __init__(self, config: ViTLlamaConfig):
        super().__init__(config)
        # ViTModel is used as a container of its parts: the frozen block sits between its last layer and its
        # final LayerNorm, so its own forward (which fuses the two) is not called.
        self.vit = ViTModel(config.vision_config, add_pooling_layer=False)
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

    def __init__(self, config: ViTLlamaConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vit_llama = ViTLlamaModel(config)
        hidden = config.vision_config.hidden_size
        self.classifier = nn.Linear(hidden, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    @classmethod
    def from_parts(cls, vision, llm=None, llm_layers=(-1,), variant="llm", **kwargs):
        """Build from a ViT (preset, ViTConfig, or checkpoint) and an LLM source; see `FrozenLMPreTrainedModel.build_from_parts`."""
        return cls.build_from_parts(vision, llm, llm_layers=llm_layers, variant=variant, **kwargs)

    def reset_classifier(self, num_labels: int, id2label: dict | None = None) -> None:
        """Replace the head for a new label set (e.g. fine-tuning a trained model on other classes)."""
        self.config.num_labels = num_labels
        self.config.id2label = id2label or {i: str(i) for i in range(num_labels)}
        self.config.label2id = {v: k for k, v in self.config.id2label.items()}
        self.num_labels = num_labels
        self.classifier = nn.Linear(self.config.vision_config.hidden_size, num_labels)

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
