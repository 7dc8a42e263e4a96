"""The paper's frozen LLM block, trunk-agnostic: proj_in -> LLM decoder layer(s) -> unit RMSNorm -> proj_out.

This module is the one place that decides how LLM layers are built (which transformers class per
architecture), how they are frozen, and which dtype they are stored and computed in. Every task head
wraps its trunk around a `FrozenLMBlock` and inherits `FrozenLMPreTrainedModel`.

Hub-portable: imports only torch/transformers and sibling modules.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.pytorch_utils import Conv1D

from .configuration_frozenlm import FrozenLMConfig


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

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def llm_architecture(model_type: str) -> LLMArchitecture:
    """The registry entry for `model_type`, or an error listing what is supported."""
    if model_type not in LLM_ARCHITECTURES:
        raise ValueError(
            f"Unsupported LLM architecture {model_type!r}. Supported architectures: "
            f"{', '.join(sorted(LLM_ARCHITECTURES))}. Use a checkpoint of one of these families."
        )
    return LLM_ARCHITECTURES[model_type]


def resolve_layer_indices(llm_layers, num_hidden_layers: int) -> list[int]:
    """Map possibly negative layer indices to absolute ones, with a clear error when out of range."""
    resolved = []
    for index in llm_layers:
        absolute = index + num_hidden_layers if index < 0 else index
        if not 0 <= absolute < num_hidden_layers:
            raise IndexError(
                f"LLM layer index {index} is out of range for a {num_hidden_layers}-layer LLM; valid indices are "
                f"0..{num_hidden_layers - 1} or -{num_hidden_layers}..-1."
            )
        resolved.append(absolute)
    return resolved


def padding_mask_to_additive(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, T) 1-keep/0-pad mask -> additive (B, 1, 1, T) mask, or None when nothing is padded.

    Only keys are masked: every query attends to all valid tokens (no causal structure).
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    keep = attention_mask[:, None, None, :].to(torch.bool)
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)


class FrozenLMBlock(nn.Module):
    """(B, T, D_trunk) -> (B, T, D_trunk) through frozen LLM decoder layers, bidirectional and position-free."""

    def __init__(self, config: FrozenLMConfig, trunk_hidden_size: int):
        super().__init__()
        self.variant = config.variant
        self.llm_trainable = config.llm_trainable
        self.llm_dtype = TORCH_DTYPES[config.llm_dtype]
        if self.variant == "none":
            return
        llm_config = config.llm_config
        if llm_config._attn_implementation is None:
            # No PreTrainedModel owns llm_config, so nothing else hands it the model's attention backend.
            llm_config._attn_implementation_internal = config._attn_implementation
        width = llm_config.hidden_size
        self.proj_in = nn.Linear(trunk_hidden_size, width, bias=False)
        if self.variant == "mlp":
            # The paper's MLP control: the same two trainable linears, GELU + LayerNorm between, no LLM.
            self.mlp = nn.Sequential(nn.GELU(), nn.LayerNorm(width))
        else:
            self.architecture = llm_architecture(llm_config.model_type)
            self.layer_indices = resolve_layer_indices(config.llm_layers, llm_config.num_hidden_layers)
            layer_cls = self.architecture.layer_cls()
            # The original index is kept: some families (GPT-2) scale attention by it.
            self.layers = nn.ModuleList(layer_cls(llm_config, layer_idx=i) for i in self.layer_indices)
            for module in self.layers.modules():
                if hasattr(module, "is_causal"):
                    # sdpa/flash treat `attention_mask=None` as causal unless told otherwise.
                    module.is_causal = False
            # The official code's RMSNorm after the block: its weight is never loaded, so it is the identity scale.
            self.norm = nn.RMSNorm(width, eps=1e-6, elementwise_affine=False) if config.llm_final_norm else None
            self.head_dim = getattr(llm_config, "head_dim", None) or width // llm_config.num_attention_heads
        self.proj_out = nn.Linear(width, trunk_hidden_size, bias=False)
        self.enforce_llm_policy()
        self.register_load_state_dict_post_hook(lambda module, _: module.enforce_llm_policy())

    # -- the one place that freezes and casts the LLM layers -------------------------------------------
    def llm_parameters(self):
        """Parameters that belong to the source LLM (frozen unless `llm_trainable`)."""
        return self.layers.parameters() if hasattr(self, "layers") else iter(())

    def enforce_llm_policy(self) -> None:
        """LLM layers live in `llm_dtype` and require no grad unless `llm_trainable`.

        Called after construction, after any state-dict load and after `from_pretrained` (which rebuilds
        parameters with requires_grad=True and may cast them to the model's default dtype).
        """
        if not hasattr(self, "layers"):
            return
        for parameter in self.llm_own_parameters():
            if parameter.dtype != self.llm_dtype:
                parameter.data = parameter.data.to(self.llm_dtype)
            parameter.requires_grad_(self.llm_trainable)
        for buffer in self.layers.buffers():
            if buffer.is_floating_point() and buffer.dtype != self.llm_dtype:
                buffer.data = buffer.data.to(self.llm_dtype)

    def llm_own_parameters(self):
        """The LLM's own weights, without adapters that PEFT injects into the layers (LoRA's lora_A/lora_B, ...):
        those must stay trainable and in their own dtype, or every `.train()` would freeze them again."""
        adapter_prefixes = tuple(
            f"{name}.{attribute}." if name else f"{attribute}."
            for name, module in self.layers.named_modules()
            for attribute in getattr(module, "adapter_layer_names", ())
        )
        for name, parameter in self.layers.named_parameters():
            if not name.startswith(adapter_prefixes):
                yield parameter

    def train(self, mode: bool = True):
        super().train(mode)
        self.enforce_llm_policy()
        return self

    def load_llm_layer_states(self, layer_states: list[dict[str, torch.Tensor]]) -> None:
        """Copy one state dict per LLM layer (HF names, e.g. `self_attn.q_proj.weight`) into the block."""
        if len(layer_states) != len(self.layers):
            raise ValueError(f"Got {len(layer_states)} layer state dicts for a block of {len(self.layers)} layers.")
        for position, (layer, state) in enumerate(zip(self.layers, layer_states)):
            expected = layer.state_dict()
            missing = sorted(set(expected) - set(state))
            unexpected = sorted(set(state) - set(expected))
            if missing or unexpected:
                raise ValueError(
                    f"LLM layer {self.layer_indices[position]}: the state dict does not match "
                    f"{type(layer).__name__} (missing {missing}, unexpected {unexpected}). The checkpoint is "
                    "probably a different architecture than llm_config describes."
                )
            for name, tensor in state.items():
                if tuple(tensor.shape) != tuple(expected[name].shape):
                    raise ValueError(
                        f"LLM layer {self.layer_indices[position]}: {name} has shape {tuple(tensor.shape)} but the "
                        f"block expects {tuple(expected[name].shape)}: the weights come from an LLM of another "
                        "width than llm_config. Build the block from the same checkpoint's config."
                    )
            with torch.no_grad():
                for name, parameter in layer.state_dict(keep_vars=True).items():
                    parameter.copy_(state[name].to(parameter.dtype))
        self.enforce_llm_policy()

    # -- forward ---------------------------------------------------------------------------------------
    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.variant == "none":
            return hidden_states
        x = self.proj_in(hidden_states)  # (B, T, D_llm)
        if self.variant == "mlp":
            x = self.mlp(x)
        else:
            x = x.to(self.llm_dtype)
            mask = padding_mask_to_additive(attention_mask, self.llm_dtype)
            kwargs = {}
            if self.architecture.rotary:
                # cos = 1, sin = 0 turns rotary position embedding into the identity: the trunk has its own positions.
                ones = torch.ones(1, 1, self.head_dim, dtype=self.llm_dtype, device=x.device)
                kwargs["position_embeddings"] = (ones, torch.zeros_like(ones))
            for layer in self.layers:
                x = layer(x, attention_mask=mask, **kwargs)
                if isinstance(x, tuple):
                    x = x[0]
            # The official code casts the block output to float32 before its final norm.
            x = x.float()
            if self.norm is not None:
                x = self.norm(x)
        x = self.proj_out(x.to(self.proj_out.weight.dtype))
        return x.to(hidden_states.dtype)


class FrozenLMPreTrainedModel(PreTrainedModel):
    """Base of every task head: initialisation, frozen state after loading, and a complete `auto_map`."""

    config: FrozenLMConfig
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    # Every head records all Auto classes it can be loaded through (filled by subclasses).
    auto_map_entries: dict[str, str] = {}

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, Conv1D):  # GPT-2's transposed linear, used by random-llm GPT-2 blocks
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            init.zeros_(module.bias)
        if isinstance(module, FrozenLMBlock) and module.variant != "none":
            init.trunc_normal_(module.proj_in.weight, std=self.config.initializer_range)
            init.trunc_normal_(module.proj_out.weight, std=self.config.initializer_range)

    def frozen_lm_blocks(self):
        return [module for module in self.modules() if isinstance(module, FrozenLMBlock)]

    def enforce_llm_policy(self):
        for block in self.frozen_lm_blocks():
            block.enforce_llm_policy()
        return self

    def post_init(self):
        if not getattr(self.config, "llm_weights_in_checkpoint", True):
            # A slim checkpoint leaves the LLM layers out on purpose (from_pretrained re-extracts them): their
            # absence is not worth a missing-keys warning. Exact names, so any other missing weight still warns.
            left_out = {re.escape(name) + "$" for name in self.llm_weight_names()}
            self._keys_to_ignore_on_load_missing = {*(self._keys_to_ignore_on_load_missing or ()), *left_out}
        super().post_init()

    def llm_weight_names(self) -> list[str]:
        """State-dict names of the source LLM's own weights (not adapters added to its layers)."""
        names = []
        for prefix, module in self.named_modules():
            if isinstance(module, FrozenLMBlock) and hasattr(module, "layers"):
                own = {id(parameter) for parameter in module.llm_own_parameters()}
                names += [
                    f"{prefix}.layers.{name}" if prefix else f"layers.{name}"
                    for name, parameter in module.layers.named_parameters()
                    if id(parameter) in own
                ]
        return names

    @classmethod
    def from_pretrained(cls, *args, llm_source_path=None, **kwargs):
        """transformers' from_pretrained, plus: a slim checkpoint's LLM layers are re-extracted from its recorded
        `llm_source` (or `llm_source_path` / $HF_FROZENLM_LLM_PATH, a local copy) and checked against its sha256."""
        model = super().from_pretrained(*args, **kwargs)
        if not model.config.llm_weights_in_checkpoint:
            model.load_llm_weights_from_source(
                llm_source_path, token=kwargs.get("token"), cache_dir=kwargs.get("cache_dir")
            )
        # from_pretrained re-creates parameters with requires_grad=True. Its closing eval() already re-freezes them
        # through FrozenLMBlock.train; this explicit call keeps that true if transformers stops calling eval().
        model.enforce_llm_policy()
        return model

    def load_llm_weights_from_source(self, llm_source_path=None, token=None, cache_dir=None):
        """Fill the LLM layers from `config.llm_source` (what a slim checkpoint needs after loading)."""
        from .frozenlm_loading import reload_llm_layers

        blocks = [block for block in self.frozen_lm_blocks() if hasattr(block, "layers")]
        for block in blocks:
            if list(self.config.llm_source.get("layers") or []) != list(block.layer_indices):
                raise ValueError(
                    f"config.llm_source records layers {self.config.llm_source.get('layers')} but the block holds "
                    f"layers {block.layer_indices}: the config is inconsistent."
                )
        _, layer_states = reload_llm_layers(self.config.llm_source, llm_source_path, token=token, cache_dir=cache_dir)
        for block in blocks:
            block.load_llm_layer_states(layer_states)
        # In memory the model is complete again: a plain save_pretrained now writes a full checkpoint.
        self.config.llm_weights_in_checkpoint = True
        return self

    def save_pretrained(self, save_directory, *args, frozen_weights: bool = True, **kwargs):
        """transformers' save_pretrained, writing the modeling code and a complete auto_map.

        frozen_weights=False writes a slim checkpoint: the source LLM's layers are left out of the weights file
        and `config.llm_source` (source, revision, file, layers, sha256) tells `from_pretrained` where to get them.
        """
        # Write the modeling code and every Auto entry point, so the folder loads with trust_remote_code anywhere.
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **self.full_auto_map()}
        names = self.llm_weight_names()
        if frozen_weights or not names:  # nothing to leave out for the mlp / none variants
            return super().save_pretrained(save_directory, *args, **kwargs)
        self.check_slim_checkpoint_possible()
        state_dict = kwargs.pop("state_dict", None)
        state_dict = self.state_dict() if state_dict is None else state_dict
        left_out = set(names)
        state_dict = {name: tensor for name, tensor in state_dict.items() if name not in left_out}
        self.config.llm_weights_in_checkpoint = False
        try:
            return super().save_pretrained(save_directory, *args, state_dict=state_dict, **kwargs)
        finally:
            self.config.llm_weights_in_checkpoint = True

    def check_slim_checkpoint_possible(self) -> None:
        """A slim checkpoint is only correct when the LLM layers are exactly what `llm_source` can re-extract."""
        source = self.config.llm_source or {}
        if self.config.variant != "llm" or source.get("kind") not in ("hf", "gguf", "meta"):
            raise ValueError(
                f"Cannot leave the LLM layers out (frozen_weights=False): variant={self.config.variant!r} with "
                f"llm_source kind {source.get('kind')!r} has no checkpoint to re-extract them from (a random-llm "
                "block's weights exist only in this model). Save with frozen_weights=True."
            )
        if self.config.llm_trainable:
            raise ValueError(
                "Cannot leave the LLM layers out (frozen_weights=False): llm_trainable=True, so the layers were "
                "trained and no longer equal their source. Save with frozen_weights=True."
            )
        if not source.get("sha256") or not source.get("source"):
            raise ValueError(
                "Cannot leave the LLM layers out (frozen_weights=False): config.llm_source lacks the source or sha256 "
                f"that loading needs to re-extract and verify them ({source}). Save with frozen_weights=True."
            )

    @classmethod
    def full_auto_map(cls) -> dict[str, str]:
        config_module = cls.config_class.__module__.rsplit(".", 1)[-1]
        entries = {"AutoConfig": f"{config_module}.{cls.config_class.__name__}"}
        for auto_class, model_cls in cls.auto_map_entries.items():
            entries[auto_class] = f"{cls.__module__.rsplit('.', 1)[-1]}.{model_cls}"
        return entries

    # -- from_parts: the same assembly for every head ---------------------------------------------------
    trunk_config_key: str = ""

    @classmethod
    def resolve_trunk(cls, trunk, **trunk_kwargs):
        """(trunk config, weights source or None) for this head's trunk argument. Overridden by each head."""
        raise NotImplementedError

    def load_trunk_weights(self, source) -> None:
        raise NotImplementedError

    @classmethod
    def build_from_parts(
        cls, trunk, llm, llm_layers=(-1,), variant="llm", *, llm_revision=None, trunk_kwargs=None, **config_kwargs
    ):
        """Assemble a model from a trunk and an LLM source, reading only the requested LLM layers.

        llm: "smollm2-135m", a Hub id or local dir of an HF checkpoint, a `.gguf` file, a Meta-format dir, or a
            transformers config (random init). Not needed for variant="none".
        config_kwargs: num_labels, id2label, label2id, llm_dtype, llm_final_norm, llm_trainable, ...
        """
        from .frozenlm_loading import load_llm_config, load_llm_layers

        llm_layers = [llm_layers] if isinstance(llm_layers, int) else list(llm_layers)
        llm_config, layer_states, llm_source = None, None, None
        if isinstance(llm, PreTrainedConfig):
            llm_config, llm_source = llm, {"kind": "random", "source": None, "layers": llm_layers}
        elif llm is not None and variant == "llm":
            llm_config, layer_states, llm_source = load_llm_layers(llm, llm_layers, revision=llm_revision)
        elif llm is not None and variant != "none":
            # mlp and random-llm only need the LLM's shapes.
            llm_config = load_llm_config(llm, revision=llm_revision)
            llm_source = {"kind": "random", "source": str(llm), "layers": llm_layers}
        elif variant != "none":
            raise ValueError(f"variant={variant!r} needs an LLM source (llm=...); only variant='none' works without.")
        trunk_config, trunk_weights = cls.resolve_trunk(trunk, **(trunk_kwargs or {}))
        if "id2label" in config_kwargs and "num_labels" not in config_kwargs:
            config_kwargs["num_labels"] = len(config_kwargs["id2label"])
        # A trunk described by a sub-config goes under its key; a trunk whose fields are the config's own (no key,
        # e.g. Point-BERT, which has no transformers config class) is spread into the config.
        trunk_fields = {cls.trunk_config_key: trunk_config} if cls.trunk_config_key else dict(trunk_config)
        config = cls.config_class(
            **trunk_fields,
            llm_config=llm_config,
            llm_layers=llm_layers,
            variant=variant,
            llm_source=llm_source,
            **config_kwargs,
        )
        model = cls(config)
        if trunk_weights is not None:
            model.load_trunk_weights(trunk_weights)
        if layer_states is not None:
            model.frozen_lm_blocks()[0].load_llm_layer_states(layer_states)
        return model.enforce_llm_policy()

    def no_weight_decay(self) -> set[str]:
        """Parameter names that the training recipe keeps out of weight decay (biases, norms, embeddings)."""
        names = set()
        for name, parameter in self.named_parameters():
            if parameter.ndim <= 1 or "position_embeddings" in name or "cls_token" in name:
                names.add(name)
        return names
