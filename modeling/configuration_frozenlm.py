"""Configuration shared by every hf_frozenlm task head: which LLM layers form the frozen block, and how.

Hub-portable: imports only torch/transformers and sibling modules, because `save_pretrained` copies this
file into every saved model folder.
"""

from __future__ import annotations

from transformers import PreTrainedConfig

VARIANTS = ("llm", "mlp", "random-llm", "none")
LLM_DTYPES = ("float32", "bfloat16", "float16")
LLM_SOURCE_KINDS = ("hf", "gguf", "meta", "random")


class FrozenLMConfig(PreTrainedConfig):
    r"""Fields shared by all `<Trunk>LlamaConfig` classes (each adds its trunk's sub-config).

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
        if self.llm_layers is None:
            self.llm_layers = [-1]
        if isinstance(self.llm_layers, int):
            self.llm_layers = [self.llm_layers]
        self.llm_layers = [int(i) for i in self.llm_layers]
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
