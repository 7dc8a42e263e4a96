"""ViLT + frozen LLM block (Pang et al., ICLR 2024, 2D VQA and retrieval), as transformers models.

Data flow: text embeddings (BERT-style) and image patch embeddings (ViT-style, positions interpolated to each image's
valid size) + modality embeddings -> one stream through the ViLT layers (the fusion) -> FrozenLMBlock over all tokens
with the text + image padding mask -> ViLT's final LayerNorm -> pooler on the first text token ([CLS]) -> task head
(VQA: MLP -> answer logits with soft-score BCE; retrieval: one image-text matching score).

Unlike transformers' ViltModel, every valid patch is kept and padded patches are masked: ViltEmbeddings samples patches
with torch.multinomial (a random order per call), which would make outputs differ from call to call.

Hub-portable: imports only torch/transformers and sibling modules.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers import ViltConfig, ViltModel
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput
from transformers.utils import can_return_tuple

from .configuration_vilt_llama import ViltLlamaConfig, ViltLlamaRetrievalConfig
from .frozenlm_block import FrozenLMBlock, FrozenLMPreTrainedModel

# Presets: ViLT-B/32 (the released checkpoints' trunk) and a tiny one sized for the builtin shapes (48 px images in 16 px
# patches, 512-word vocabulary).
VILT_PRESETS = {
    "vilt-b32": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                     image_size=384, patch_size=32, max_position_embeddings=40, vocab_size=30522),
    "vilt-tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                      image_size=48, patch_size=16, max_position_embeddings=40, vocab_size=512),
}


class ViltLlamaPreTrainedModel(FrozenLMPreTrainedModel):
    config_class = ViltLlamaConfig
    config: ViltLlamaConfig
    base_model_prefix = "vilt_llama"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    _no_split_modules = ["ViltEmbeddings", "ViltLayer", "FrozenLMBlock"]
    trunk_presets = VILT_PRESETS
    trunk_config_class = ViltConfig
    trunk_model_class = ViltModel
    trunk_config_key = "vilt_config"
    trunk_attribute = "vilt"

    def _init_weights(self, module):
        super()._init_weights(module)
        # ViLT's own init (position ids, cls token) lives in ViltPreTrainedModel, which is not our base class.
        if isinstance(module, ViltModel):
            from transformers import initialization as init

            text = module.embeddings.text_embeddings
            init.copy_(text.position_ids, torch.arange(text.position_ids.shape[-1]).expand((1, -1)))
            init.zeros_(text.token_type_ids)
            init.trunc_normal_(module.embeddings.cls_token, std=self.config.initializer_range)
            init.trunc_normal_(module.embeddings.position_embeddings, std=self.config.initializer_range)

    def check_inputs(self, input_ids, attention_mask, pixel_values, pixel_mask):
        """Clear errors for mismatched text, image and mask tensors; returns (attention_mask, pixel_mask)."""
        if input_ids is None or input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, text_length) token ids; got {None if input_ids is None else tuple(input_ids.shape)}.")
        if pixel_values is None or pixel_values.ndim != 4:
            raise ValueError(
                f"pixel_values must be (batch, 3, height, width); got "
                f"{None if pixel_values is None else tuple(pixel_values.shape)}."
            )
        if pixel_values.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"{pixel_values.shape[0]} images but {input_ids.shape[0]} texts: pass one image per text (repeat the "
                "image to ask several questions about it)."
            )
        limit = self.config.vilt_config.max_position_embeddings
        if input_ids.shape[1] > limit:
            raise ValueError(f"The texts have {input_ids.shape[1]} tokens; this model takes at most {limit}.")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has {tuple(input_ids.shape)}."
            )
        if pixel_mask is None:
            pixel_mask = torch.ones(
                (pixel_values.shape[0], *pixel_values.shape[2:]), dtype=torch.long, device=pixel_values.device
            )
        if tuple(pixel_mask.shape) != (pixel_values.shape[0], *pixel_values.shape[2:]):
            raise ValueError(
                f"pixel_mask has shape {tuple(pixel_mask.shape)}; expected (batch, height, width) = "
                f"{(pixel_values.shape[0], *pixel_values.shape[2:])}."
            )
        if not pixel_mask.flatten(1).any(dim=1).all():
            raise ValueError("An image is empty (its pixel_mask is all 0): every example needs a valid image region.")
        if not attention_mask[:, 0].all():
            raise ValueError("A text is empty (its first token is padding): every text needs at least its [CLS] token.")
        return attention_mask, pixel_mask


class ViltLlamaModel(ViltLlamaPreTrainedModel):
    """ViLT trunk + FrozenLMBlock; returns the normalised tokens (text then image) and ViLT's pooled [CLS] output."""

    _auto_class = "AutoModel"
    auto_map_entries = {"AutoModel": "ViltLlamaModel"}
    # The encoder of a saved VQA model (AutoModel on its folder) leaves the answer head out on purpose.
    _keys_to_ignore_on_load_unexpected = [r"^classifier\."]

    def __init__(self, config: ViltLlamaConfig):
        super().__init__(config)
        # ViltModel serves as a container of its parts (embeddings, layers, final LayerNorm, pooler): the frozen block
        # sits between its last layer and its LayerNorm, so its own forward is not called.
        self.vilt = ViltModel(config.vilt_config, add_pooling_layer=True)
        self.frozen_lm = FrozenLMBlock(config, config.vilt_config.hidden_size)
        self.post_init()

    def get_input_embeddings(self):
        return self.vilt.embeddings.text_embeddings.word_embeddings

    def embed_image(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor):
        """(B, 3, H, W), (B, H, W) -> image tokens (B, 1 + h * w, D) with [CLS] and positions, their mask (B, 1 + h * w).

        As ViLT: the position grid is resized to each image's valid (unpadded) patch grid, then zero-padded.
        """
        embeddings = self.vilt.embeddings
        patches = embeddings.patch_embeddings(pixel_values)  # (B, D, h, w)
        batch, width, height_patches, width_patches = patches.shape
        patch_mask = F.interpolate(pixel_mask[:, None].float(), size=(height_patches, width_patches))[:, 0]  # (B, h, w)
        valid_h = patch_mask[:, :, 0].sum(dim=1).long().tolist()
        valid_w = patch_mask[:, 0, :].sum(dim=1).long().tolist()
        if min(valid_h + valid_w) < 1:
            raise ValueError(
                f"An image's valid region (pixel_mask) is smaller than one {self.config.vilt_config.patch_size}-pixel "
                "patch; resize the images so each covers at least one patch."
            )
        grid = self.config.vilt_config.image_size // self.config.vilt_config.patch_size
        spatial = embeddings.position_embeddings[:, 1:].transpose(1, 2).reshape(1, width, grid, grid)
        positions = torch.cat([
            F.pad(
                F.interpolate(spatial, size=(h, w), mode="bilinear", align_corners=True),
                (0, width_patches - w, 0, height_patches - h),
            )
            for h, w in zip(valid_h, valid_w)
        ])  # (B, D, h, w)
        tokens = (patches + positions).flatten(2).transpose(1, 2)  # (B, h * w, D)
        cls = (embeddings.cls_token + embeddings.position_embeddings[:, :1]).expand(batch, -1, -1)
        tokens = torch.cat([cls, tokens], dim=1)  # (B, 1 + h * w, D)
        mask = torch.cat([patch_mask.new_ones(batch, 1), patch_mask.flatten(1)], dim=1).long()
        return tokens, mask

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        attention_mask, pixel_mask = self.check_inputs(input_ids, attention_mask, pixel_values, pixel_mask)
        embeddings = self.vilt.embeddings
        dtype = embeddings.patch_embeddings.projection.weight.dtype
        text = embeddings.text_embeddings(input_ids=input_ids, token_type_ids=token_type_ids)  # (B, L, D)
        text = text + embeddings.token_type_embeddings(torch.zeros_like(input_ids))  # modality 0: text
        image, image_mask = self.embed_image(pixel_values.to(dtype), pixel_mask)  # (B, N, D), (B, N)
        image = embeddings.dropout(image + embeddings.token_type_embeddings(torch.ones_like(image_mask)))  # modality 1
        hidden_states = torch.cat([text, image], dim=1)  # (B, L + N, D)
        mask = torch.cat([attention_mask.long(), image_mask], dim=1)  # (B, L + N)
        # As ViltModel does: the mask in the form its (eager) attention adds to the scores.
        additive = create_bidirectional_mask(config=self.vilt.config, inputs_embeds=hidden_states, attention_mask=mask)
        all_hidden_states = [hidden_states] if output_hidden_states else None
        for layer in self.vilt.encoder.layer:
            hidden_states = layer(hidden_states, additive)[0]
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
        hidden_states = self.frozen_lm(hidden_states, attention_mask=mask)  # (B, L + N, D)
        if output_hidden_states:
            all_hidden_states.append(hidden_states)
        sequence_output = self.vilt.layernorm(hidden_states)
        return BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=self.vilt.pooler(sequence_output),  # tanh(dense(text [CLS]))
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
        )


class ViltLlamaForQuestionAnswering(ViltLlamaPreTrainedModel):
    """ViltLlamaModel + ViLT's VQA head: pooled -> Linear(D, 2D) -> LayerNorm -> GELU -> answer logits.

    labels (B, num_labels): soft answer scores (VQAv2: min(1, humans who gave the answer / 3)); the loss is ViLT's
    binary cross-entropy over answers, multiplied by the number of answers.
    """

    _auto_class = "AutoModelForVisualQuestionAnswering"
    auto_map_entries = {
        "AutoModel": "ViltLlamaModel",
        "AutoModelForVisualQuestionAnswering": "ViltLlamaForQuestionAnswering",
    }
    output_kind = "soft answer scores"
    # transformers 5 removed its visual-question-answering pipeline; the folder ships its own.
    custom_pipeline = ("visual-question-answering", "frozenlm_pipelines.VisualQuestionAnsweringPipeline")
    pipeline_auto_class = "AutoModelForVisualQuestionAnswering"  # AutoModel loads the encoder alone here

    def __init__(self, config: ViltLlamaConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vilt_llama = ViltLlamaModel(config)
        self.classifier = self.make_classifier(config.num_labels)
        self.post_init()

    def make_classifier(self, num_labels: int) -> nn.Module:
        hidden = self.config.vilt_config.hidden_size
        return nn.Sequential(
            nn.Linear(hidden, 2 * hidden), nn.LayerNorm(2 * hidden), nn.GELU(), nn.Linear(2 * hidden, num_labels)
        )

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        outputs = self.vilt_llama(
            input_ids, attention_mask, token_type_ids, pixel_values, pixel_mask, output_hidden_states=output_hidden_states
        )
        logits = self.classifier(outputs.pooler_output)  # (B, num_labels)
        loss = None
        if labels is not None:
            if tuple(labels.shape) != tuple(logits.shape):
                raise ValueError(
                    f"labels has shape {tuple(labels.shape)}; VQA labels are soft scores over the answer vocabulary, "
                    f"shape {tuple(logits.shape)} (batch, num_labels)."
                )
            # In float32: under bf16 autocast the logits are bf16, which would round the 1/3 and 2/3 soft scores.
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float()) * labels.shape[1]
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


class ViltLlamaForImageAndTextRetrieval(ViltLlamaPreTrainedModel):
    """ViltLlamaModel + ViLT's retrieval head: pooled -> one image-text matching logit (higher: a better match).

    labels (B,): 1 for a matching pair, 0 for a mismatched one; the loss is binary cross-entropy on the logit.
    """

    # Its own config class (the same fields), so that the Auto classes can tell a retrieval folder from a VQA one.
    config_class = ViltLlamaRetrievalConfig
    output_kind = "matching scores"
    # transformers has no Auto class or pipeline for image-text matching: AutoModel, our own Auto class and the custom
    # pipeline all load this head.
    _auto_class = "AutoModelForImageTextRetrieval"
    auto_map_entries = {
        "AutoModel": "ViltLlamaForImageAndTextRetrieval",
        "AutoModelForImageTextRetrieval": "ViltLlamaForImageAndTextRetrieval",
    }
    custom_pipeline = ("image-text-retrieval", "frozenlm_pipelines.ImageTextRetrievalPipeline")

    def __init__(self, config: ViltLlamaRetrievalConfig):
        super().__init__(config)
        self.vilt_llama = ViltLlamaModel(config)
        self.rank_output = nn.Linear(config.vilt_config.hidden_size, 1)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        outputs = self.vilt_llama(
            input_ids, attention_mask, token_type_ids, pixel_values, pixel_mask, output_hidden_states=output_hidden_states
        )
        logits = self.rank_output(outputs.pooler_output)  # (B, 1)
        loss = None
        if labels is not None:
            if labels.shape != logits.shape[:1]:
                raise ValueError(f"labels has shape {tuple(labels.shape)}; expected ({logits.shape[0]},) of 1 (match) / 0.")
            loss = F.binary_cross_entropy_with_logits(logits[:, 0].float(), labels.float())
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)
