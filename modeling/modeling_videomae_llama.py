"""VideoMAE + frozen LLM block (Pang et al., ICLR 2024), as transformers models.

Data flow, as the official video code: tubelet embedding + fixed sin-cos positions -> VideoMAE blocks ->
FrozenLMBlock (proj_in -> LLM layer(s) -> unit RMSNorm -> proj_out) -> mean over tokens -> fc_norm -> linear.

Hub-portable: imports only torch/transformers and sibling modules.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import VideoMAEConfig, VideoMAEModel
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.utils import can_return_tuple

from .configuration_videomae_llama import VideoMAELlamaConfig
from .frozenlm_block import FrozenLMBlock, FrozenLMPreTrainedModel
from .frozenlm_stochastic_depth import add_stochastic_depth

# Presets: VideoMAE's fine-tuning sizes (depth 12, MLP ratio 4, 16 frames, tubelet 2, patch 16, 224 px) and a tiny
# one sized for the builtin moving-shapes clips (8 frames of 32 px).
_VIDEOMAE_COMMON = dict(num_hidden_layers=12, image_size=224, patch_size=16, num_frames=16, tubelet_size=2,
                        qkv_bias=True, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, layer_norm_eps=1e-6,
                        use_mean_pooling=True)
VIDEOMAE_PRESETS = {
    "videomae-small": dict(_VIDEOMAE_COMMON, hidden_size=384, num_attention_heads=6, intermediate_size=1536),
    "videomae-base": dict(_VIDEOMAE_COMMON, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
    "videomae-tiny": dict(_VIDEOMAE_COMMON, hidden_size=64, num_attention_heads=4, intermediate_size=128,
                          num_hidden_layers=2, image_size=32, patch_size=8, num_frames=8),
}


class VideoMAELlamaPreTrainedModel(FrozenLMPreTrainedModel):
    config_class = VideoMAELlamaConfig
    config: VideoMAELlamaConfig
    base_model_prefix = "videomae_llama"
    main_input_name = "pixel_values"
    input_modalities = ("video",)
    _no_split_modules = ["VideoMAEEmbeddings", "VideoMAELayer", "FrozenLMBlock"]
    trunk_presets = VIDEOMAE_PRESETS
    trunk_config_class = VideoMAEConfig
    trunk_model_class = VideoMAEModel
    trunk_config_key = "vision_config"
    trunk_attribute = "videomae"

    @classmethod
    def adapt_trunk_config(cls, config: VideoMAEConfig) -> VideoMAEConfig:
        # The head mean-pools and applies its own fc_norm (VideoMAE fine-tuning), so the trunk carries no final norm;
        # a pre-training checkpoint's final norm and decoder are left out, as in VideoMAE fine-tuning.
        config.use_mean_pooling = True
        return config

    def check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        """A clear error for clips the trunk cannot embed (its own errors name neither the frames nor the fix)."""
        vision = self.config.vision_config
        size = vision.image_size if isinstance(vision.image_size, (list, tuple)) else (vision.image_size,) * 2
        expected = (vision.num_frames, vision.num_channels, *size)
        if pixel_values.ndim != 5 or tuple(pixel_values.shape[1:]) != tuple(expected):
            raise ValueError(
                f"pixel_values has shape {tuple(pixel_values.shape)}; this model takes clips of shape (batch, frames, "
                f"channels, height, width) = (B, {', '.join(map(str, expected))}). Sample {vision.num_frames} frames "
                f"per clip and resize them to {size[0]}x{size[1]} (the model's video processor does both)."
            )


class VideoMAELlamaModel(VideoMAELlamaPreTrainedModel):
    """VideoMAE trunk + FrozenLMBlock; returns the tokens and their normalised mean as pooled output."""

    _auto_class = "AutoModel"
    auto_map_entries = {"AutoModel": "VideoMAELlamaModel"}

    def __init__(self, config: VideoMAELlamaConfig):
        super().__init__(config)
        # VideoMAEModel is used as a container of its parts: the frozen block sits after its last layer.
        self.videomae = VideoMAEModel(config.vision_config)
        add_stochastic_depth(self.videomae.encoder.layer, config.drop_path_rate,
                             branch_dropouts=("attention.output.dropout", "output.dropout"))
        hidden = config.vision_config.hidden_size
        self.frozen_lm = FrozenLMBlock(config, hidden)
        # VideoMAE fine-tuning's pooling: the mean token, then fc_norm (PyTorch's default eps, as VideoMAE's).
        self.fc_norm = nn.LayerNorm(hidden)
        self.post_init()

    def get_input_embeddings(self):
        return self.videomae.embeddings.patch_embeddings

    @can_return_tuple
    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None, **kwargs
    ) -> BaseModelOutputWithPooling:
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        self.check_pixel_values(pixel_values)
        expected_dtype = self.videomae.embeddings.patch_embeddings.projection.weight.dtype
        hidden_states = self.videomae.embeddings(pixel_values.to(expected_dtype), None)  # (B, T/t * H/p * W/p, D)
        all_hidden_states = [hidden_states] if output_hidden_states else None
        for layer in self.videomae.encoder.layer:
            hidden_states = layer(hidden_states)
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
        hidden_states = self.frozen_lm(hidden_states)  # (B, N, D)
        if output_hidden_states:
            all_hidden_states.append(hidden_states)
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states,
            pooler_output=self.fc_norm(hidden_states.mean(dim=1)),  # (B, D)
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
        )


class VideoMAELlamaForVideoClassification(VideoMAELlamaPreTrainedModel):
    """VideoMAELlamaModel + a linear classifier on the pooled clip (single-, multi-label or regression loss).

    The LLM layer defaults to the LLM's last, as the paper's text and the image and point-cloud code; the official
    video code used layer 15 of LLaMA-7B's 32 (`from_parts(..., llm_layers=[15])` reproduces it).
    """

    _auto_class = "AutoModelForVideoClassification"
    auto_map_entries = {
        "AutoModel": "VideoMAELlamaModel",
        "AutoModelForVideoClassification": "VideoMAELlamaForVideoClassification",
    }

    def __init__(self, config: VideoMAELlamaConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.videomae_llama = VideoMAELlamaModel(config)
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
        **kwargs,
    ) -> ImageClassifierOutput:
        outputs = self.videomae_llama(pixel_values, output_hidden_states=output_hidden_states)
        logits = self.classifier(outputs.pooler_output)
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config, **kwargs)
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)
