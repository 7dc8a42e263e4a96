"""Configuration shared by every hf_frozenlm task head, and the registry of LLM families a block can come from.

This is the leaf of the Hub-portable modules: `frozenlm_loading.py` (which reads LLM layers) and
`frozenlm_block.py` (which runs them) both import from here and not from each other. It imports only
torch/transformers, because `save_pretrained` copies it into every saved model folder.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
from transformers import PreTrainedConfig

VARIANTS = ("llm", "mlp", "random-llm", "none")
LLM_DTYPES = ("float32", "bfloat16", "float16")
LLM_SOURCE_KINDS = ("hf", "gguf", "meta", "random")
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# -- the LLM families a frozen block can be taken from -------------------------------------------------------
@dataclass(frozen=True)
class LLMArchitecture:
    """How to build and call one decoder layer of a transformers LLM family."""

    module: str  # transformers.models.<module>.modeling_<module>
    layer_class: str
    rotary: bool  # the layer expects `position_embeddings=(cos, sin)`
    attention_module: str  # submodule whose output is the attention branch (before the residual add)
    ffn_module: str  # submodule whose output is the FFN branch (before the residual add)

    def layer_cls(self):
        module = importlib.import_module(f"transformers.models.{self.module}.modeling_{self.module}")
        return getattr(module, self.layer_class)


LLM_ARCHITECTURES = {
    "llama": LLMArchitecture("llama", "LlamaDecoderLayer", True, "self_attn", "mlp"),
    "mistral": LLMArchitecture("mistral", "MistralDecoderLayer", True, "self_attn", "mlp"),
    "qwen2": LLMArchitecture("qwen2", "Qwen2DecoderLayer", True, "self_attn", "mlp"),
    "qwen3": LLMArchitecture("qwen3", "Qwen3DecoderLayer", True, "self_attn", "mlp"),
    "opt": LLMArchitecture("opt", "OPTDecoderLayer", False, "self_attn", "fc2"),
    "gpt2": LLMArchitecture("gpt2", "GPT2Block", False, "attn", "mlp"),
}


def llm_architecture(model_type: str) -> LLMArchitecture:
    """The registry entry for `model_type`, or an error listing what is supported."""
    if model_type not in LLM_ARCHITECTURES:
        raise ValueError(
            f"Unsupported LLM architecture {model_type!r}. Supported architectures: "
            f"{', '.join(sorted(LLM_ARCHITECTURES))}. Use a checkpoint of one of these families."
        )
    return LLM_ARCHITECTURES[model_type]


def check_layer_indices(llm_layers) -> list[int]:
    """`llm_layers` as a list of ints; bools, floats and strings are refused rather than silently converted."""
    if isinstance(llm_layers, int) and not isinstance(llm_layers, bool):
        llm_layers = [llm_layers]
    indices = []
    for index in llm_layers:
        # bool is an int in Python: [True] would silently mean layer 1.
        if isinstance(index, bool) or not isinstance(index, int):
            raise ValueError(
                f"llm_layers={list(llm_layers)!r}: {index!r} is not a layer index. Pass integers, negative from the "
                "end, e.g. [-1] for the last layer or [-2, -1] for the last two."
            )
        indices.append(index)
    return indices


def resolve_layer_indices(llm_layers, num_hidden_layers: int) -> list[int]:
    """Map possibly negative layer indices to absolute ones; out-of-range and repeated layers are errors."""
    resolved = []
    for index in check_layer_indices(llm_layers):
        absolute = index + num_hidden_layers if index < 0 else index
        if not 0 <= absolute < num_hidden_layers:
            raise IndexError(
                f"LLM layer index {index} is out of range for a {num_hidden_layers}-layer LLM; valid indices are "
                f"0..{num_hidden_layers - 1} or -{num_hidden_layers}..-1."
            )
        resolved.append(absolute)
    repeated = sorted({i for i in resolved if resolved.count(i) > 1})
    if repeated:
        raise ValueError(
            f"llm_layers={list(llm_layers)} names layer(s) {repeated} of the {num_hidden_layers}-layer LLM more than "
            "once (negative indices count from the end). Name each layer once, e.g. [-2, -1] for the last two."
        )
    return resolved


class FrozenLMConfig(PreTrainedConfig):
    r"""Fields shared by all `<Trunk>LlamaConfig` classes (each adds its trunk's fields or sub-config).

    llm_config: the source LLM's own config (LlamaConfig, Qwen2Config, OPTConfig, ...); sets the block's shapes.
    llm_layers: indices of the source LLM's layers, applied in order; negative counts from the end.
    variant: "llm" (the paper), "mlp" (control: the same two linears with GELU + LayerNorm between),
        "random-llm" (same architecture, random init, frozen) or "none" (the plain trunk).
    llm_dtype: dtype the LLM layers are stored and computed in.
    llm_final_norm: apply the official code's weight-1 RMSNorm after the LLM layers.
    llm_trainable: unfreeze the LLM layers (the paper's fine-tuned ablation). The only way to unfreeze.
    llm_source: provenance of the LLM weights: kind (hf/gguf/meta/random), source, revision, file, layers, sha256.
    llm_weights_in_checkpoint: False in a slim checkpoint (`save_pretrained(..., frozen_weights=False)`): the
        weights file leaves the LLM layers out and `from_pretrained` re-extracts them from `llm_source`.
    """

    llm_config: dict | PreTrainedConfig | None = None
    llm_layers: list[int] | None = None
    variant: str = "llm"
    llm_dtype: str = "float32"
    llm_final_norm: bool = True
    llm_trainable: bool = False
    llm_source: dict | None = None
    llm_weights_in_checkpoint: bool = True
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.llm_layers = check_layer_indices([-1] if self.llm_layers is None else self.llm_layers)
        if self.variant not in VARIANTS:
            raise ValueError(f"variant={self.variant!r} is not one of {VARIANTS}.")
        if self.llm_dtype not in LLM_DTYPES:
            raise ValueError(
                f"llm_dtype={self.llm_dtype!r} is not one of {LLM_DTYPES}; pass the dtype name as a string."
            )
        if self.variant in ("llm", "random-llm") and not self.llm_layers:
            raise ValueError("llm_layers is empty: pass at least one LLM layer index, e.g. [-1] for the last one.")
        if self.llm_source is not None:
            kind = self.llm_source.get("kind")
            if kind not in LLM_SOURCE_KINDS:
                raise ValueError(f"llm_source['kind']={kind!r} is not one of {LLM_SOURCE_KINDS}.")
        if self.variant != "none" and self.llm_config is None:
            raise ValueError(
                f"variant={self.variant!r} needs llm_config (the source LLM's config); pass one, "
                "or build the model with `from_parts(..., llm=...)`."
            )
        depth = getattr(self.llm_config, "num_hidden_layers", None)
        if depth is not None and self.variant in ("llm", "random-llm"):
            resolve_layer_indices(self.llm_layers, depth)  # a clear error now, not when the block is built
