"""The paper's frozen LLM block, trunk-agnostic: proj_in -> LLM decoder layer(s) -> unit RMSNorm -> proj_out, and the
base class every task head inherits.

This module is the one place that decides how LLM layers are built (which transformers class per architecture),
how they are frozen, which dtype they are stored and computed in, and what a saved folder carries (weights, code,
`auto_map`, custom pipelines; slim or full). Every task head wraps its trunk around a `FrozenLMBlock` and inherits
`FrozenLMPreTrainedModel`.

Hub-portable: imports only torch/transformers and sibling modules.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.dynamic_module_utils import get_relative_import_files
from transformers.masking_utils import create_bidirectional_mask
from transformers.pytorch_utils import Conv1D

from .configuration_frozenlm import TORCH_DTYPES, FrozenLMConfig, llm_architecture, resolve_layer_indices
from .frozenlm_auto import CUSTOM_AUTO_CLASSES
from .frozenlm_loading import layer_states_sha256, load_llm_config, load_llm_layers, reload_llm_layers


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
            # No PreTrainedModel owns llm_config, so nothing else hands it the model's attention backend. Without
            # one, the layers run eager attention, and the padding mask must be built for eager too.
            llm_config._attn_implementation_internal = config._attn_implementation or "eager"
        self.llm_config = llm_config
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
        for _, parameter in self.llm_named_parameters():
            yield parameter

    def llm_named_parameters(self):
        """(name inside `layers`, parameter) of the LLM's own weights, adapters left out."""
        if not hasattr(self, "layers"):
            return
        adapter_prefixes = tuple(
            f"{name}.{attribute}." if name else f"{attribute}."
            for name, module in self.layers.named_modules()
            for attribute in getattr(module, "adapter_layer_names", ())
        )
        for name, parameter in self.layers.named_parameters():
            if not name.startswith(adapter_prefixes):
                yield name, parameter

    def llm_layer_states(self) -> list[dict[str, torch.Tensor]]:
        """One state dict per LLM layer as the block holds it now (names as in the source checkpoint)."""
        states = [{} for _ in self.layers]
        for name, parameter in self.llm_named_parameters():
            position, local = name.split(".", 1)
            # PEFT keeps the original weight under `base_layer`; the name in the source has no such part.
            states[int(position)][local.replace(".base_layer.", ".")] = parameter.detach()
        return states

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
        """attention_mask: (B, T), 1 for tokens to attend to, 0 for padding; every valid token sees every other."""
        if self.variant == "none":
            return hidden_states
        x = self.proj_in(hidden_states)  # (B, T, D_llm)
        if self.variant == "mlp":
            x = self.mlp(x)
        else:
            x = x.to(self.llm_dtype)
            # The mask in the form the LLM's attention backend takes (additive for eager, boolean for sdpa, ...);
            # None when nothing is padded. Only keys are masked: no causal structure.
            mask = create_bidirectional_mask(self.llm_config, x, attention_mask) if attention_mask is not None else None
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
    """Base of every task head: initialisation, frozen state after loading, building from parts, and saving a folder
    that loads anywhere (`auto_map` for every Auto class, the custom pipeline where transformers has none, slim or
    full weights).

    A head declares:
    - `trunk_presets` (name -> trunk fields) and `resolve_trunk` / `load_trunk_weights` if its trunk has a
      transformers config (ViT, VideoMAE, ViLT);
    - `auto_map_entries`: Auto class name -> this module's class that it loads;
    - `custom_pipeline`: (task, "frozenlm_pipelines.<Class>") for tasks transformers has no pipeline for, loaded
      through `pipeline_auto_class`.
    """

    config: FrozenLMConfig
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    auto_map_entries: dict[str, str] = {}
    custom_pipeline: tuple[str, str] | None = None
    # The Auto class the custom pipeline loads the folder with: AutoModel, unless AutoModel means the encoder alone.
    pipeline_auto_class: str = "AutoModel"

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, Conv1D):  # GPT-2's transposed linear, used by random-llm GPT-2 blocks
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            init.zeros_(module.bias)
        if isinstance(module, FrozenLMBlock) and module.variant != "none":
            init.trunc_normal_(module.proj_in.weight, std=self.config.initializer_range)
            init.trunc_normal_(module.proj_out.weight, std=self.config.initializer_range)

    def frozen_lm_blocks(self) -> list[FrozenLMBlock]:
        return [module for module in self.modules() if isinstance(module, FrozenLMBlock)]

    def frozen_block(self) -> FrozenLMBlock:
        """The model's frozen block (every head has exactly one)."""
        blocks = self.frozen_lm_blocks()
        if len(blocks) != 1:
            raise AttributeError(f"{type(self).__name__} holds {len(blocks)} frozen blocks; expected one.")
        return blocks[0]

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
            if isinstance(module, FrozenLMBlock):
                names += [f"{prefix}.layers.{name}" if prefix else f"layers.{name}"
                          for name, _ in module.llm_named_parameters()]
        return names

    # -- Auto classes -------------------------------------------------------------------------------------
    @classmethod
    def register_for_auto_class(cls, auto_class="AutoModel"):
        """transformers accepts only its own Auto classes here; ours (frozenlm_auto) are valid too. This is what
        lets `AutoModelForPointCloudClassification.from_pretrained(folder, trust_remote_code=True)` work in a
        process where hf_frozenlm is not installed."""
        name = auto_class if isinstance(auto_class, str) else auto_class.__name__
        if name in CUSTOM_AUTO_CLASSES:
            cls._auto_class = name
            return
        super().register_for_auto_class(auto_class)

    @classmethod
    def full_auto_map(cls) -> dict[str, str]:
        """Every Auto entry point a folder saved from this class loads through."""
        config_module = cls.config_class.__module__.rsplit(".", 1)[-1]
        entries = {"AutoConfig": f"{config_module}.{cls.config_class.__name__}"}
        for auto_class, model_cls in cls.auto_map_entries.items():
            entries[auto_class] = f"{cls.__module__.rsplit('.', 1)[-1]}.{model_cls}"
        return entries

    @classmethod
    def custom_pipelines(cls) -> dict:
        """transformers' `custom_pipelines` config entry: `pipeline(task, model=folder, trust_remote_code=True)`
        resolves the pipeline class from the saved `frozenlm_pipelines.py` and loads the model through AutoModel."""
        if cls.custom_pipeline is None:
            return {}
        task, impl = cls.custom_pipeline
        return {task: {"impl": impl, "pt": [cls.pipeline_auto_class], "default": {}, "type": "multimodal"}}

    # -- loading --------------------------------------------------------------------------------------------
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
        block = self.frozen_block()
        if list(self.config.llm_source.get("layers") or []) != list(block.layer_indices):
            raise ValueError(
                f"config.llm_source records layers {self.config.llm_source.get('layers')} but the block holds "
                f"layers {block.layer_indices}: the config is inconsistent."
            )
        _, layer_states = reload_llm_layers(self.config.llm_source, llm_source_path, token=token, cache_dir=cache_dir)
        block.load_llm_layer_states(layer_states)
        # In memory the model is complete again: a plain save_pretrained now writes a full checkpoint.
        self.config.llm_weights_in_checkpoint = True
        return self

    # -- saving -------------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory, *args, frozen_weights: bool = True, **kwargs):
        """transformers' save_pretrained, writing the modeling code, a complete auto_map and any custom pipeline.

        frozen_weights=False writes a slim checkpoint: the source LLM's layers are left out of the weights file
        and `config.llm_source` (source, revision, file, layers, sha256) tells `from_pretrained` where to get them.
        It is refused unless the layers are exactly what that source gives back (see `check_slim_checkpoint_possible`).
        """
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **self.full_auto_map()}
        pipelines = self.custom_pipelines()
        if pipelines:
            self.config.custom_pipelines = pipelines
        names = self.llm_weight_names()
        if frozen_weights or not names:  # nothing to leave out for the mlp / none variants
            result = super().save_pretrained(save_directory, *args, **kwargs)
        else:
            self.check_slim_checkpoint_possible()
            state_dict = kwargs.pop("state_dict", None)
            state_dict = self.state_dict() if state_dict is None else state_dict
            left_out = set(names)
            state_dict = {name: tensor for name, tensor in state_dict.items() if name not in left_out}
            self.config.llm_weights_in_checkpoint = False
            try:
                result = super().save_pretrained(save_directory, *args, state_dict=state_dict, **kwargs)
            finally:
                self.config.llm_weights_in_checkpoint = True
        if pipelines and kwargs.get("is_main_process", True):
            self._save_pipeline_code(save_directory)
        return result

    def _save_pipeline_code(self, save_directory) -> None:
        """Copy the pipeline module (and what it imports relatively) beside the model code, as transformers does for
        the model's own module."""
        module_file = Path(__file__).with_name(self.custom_pipeline[1].split(".")[0] + ".py")
        for path in [module_file, *get_relative_import_files(str(module_file))]:
            shutil.copyfile(path, os.path.join(save_directory, Path(path).name))

    def check_slim_checkpoint_possible(self) -> None:
        """A slim checkpoint is only correct when the LLM layers are exactly what `llm_source` re-extracts: the
        block's tensors are hashed now and compared with the hashes recorded when they were loaded."""
        source = self.config.llm_source or {}
        refuse = "Cannot leave the LLM layers out (frozen_weights=False / --no-frozen-weights): "
        keep = " Save or push with the frozen weights included instead."
        if self.config.variant != "llm" or source.get("kind") not in ("hf", "gguf", "meta"):
            raise ValueError(
                f"{refuse}variant={self.config.variant!r} with llm_source kind {source.get('kind')!r} has no checkpoint "
                f"to re-extract them from (a random-llm block's weights exist only in this model).{keep}"
            )
        if self.config.llm_trainable:
            raise ValueError(
                f"{refuse}llm_trainable=True, so the layers were trained and no longer equal their source.{keep}"
            )
        if source.get("lora_merged"):
            raise ValueError(
                f"{refuse}LoRA adapters were merged into the layers (llm_source['lora_merged']), so they no longer equal "
                f"their source; a slim reload would silently drop the merge.{keep}"
            )
        if not source.get("sha256") or not source.get("source"):
            raise ValueError(
                f"{refuse}config.llm_source lacks the source or sha256 that loading needs to re-extract and verify "
                f"them ({source}).{keep}"
            )
        held = layer_states_sha256(self.frozen_block().llm_layer_states())
        if held not in {source.get("sha256"), source.get("block_sha256")}:
            raise ValueError(
                f"{refuse}the layers this model holds (sha256 {held[:16]}...) are not the ones recorded from "
                f"{source.get('source')!r} (sha256 {source['sha256'][:16]}...): they were changed after loading "
                f"(merged adapters, training, an edit in memory), and a slim reload would silently restore the "
                f"originals.{keep}"
            )

    # -- the trunk: presets, configs and pretrained weights, the same way for every head ----------------------
    trunk_presets: dict[str, dict] = {}  # preset name -> trunk fields (data, one dict per trunk family)
    trunk_config_class: type | None = None  # the trunk's transformers config (ViTConfig, ...); None for our own trunks
    trunk_model_class: type | None = None  # the trunk's transformers model, to read pretrained trunk weights
    trunk_config_key: str = ""  # the sub-config holding the trunk ("" = the trunk's fields are the config's own)
    trunk_attribute: str = ""  # the base model's attribute holding a transformers trunk
    trunk_modules: tuple[str, ...] = ()  # the base model's attributes that make up the trunk (default: trunk_attribute)

    @classmethod
    def resolve_trunk(cls, trunk, **trunk_kwargs):
        """(trunk config or fields, checkpoint to load trunk weights from or None) for a `trunk` argument: a preset
        name (`trunk_kwargs` resize it), a dict of fields, the trunk's transformers config, or a Hub id / folder of a
        pretrained trunk checkpoint."""
        fields_only = cls.trunk_config_class is None
        if isinstance(trunk, str) and trunk in cls.trunk_presets:
            fields = {**cls.trunk_presets[trunk], **trunk_kwargs}
            return (fields if fields_only else cls.adapt_trunk_config(cls.trunk_config_class(**fields))), None
        if isinstance(trunk, dict):
            fields = {**trunk, **trunk_kwargs}
            return (fields if fields_only else cls.adapt_trunk_config(cls.trunk_config_class(**fields))), None
        presets = ", ".join(cls.trunk_presets)
        if fields_only:
            raise ValueError(f"trunk={trunk!r} is not a preset of {cls.__name__} ({presets}) or a dict of trunk fields.")
        if isinstance(trunk, cls.trunk_config_class):
            # A copy: the caller's config is left as it was.
            return cls.adapt_trunk_config(cls.trunk_config_class(**{**trunk.to_dict(), **trunk_kwargs})), None
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(trunk)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"trunk={trunk!r} is not a preset ({presets}), a {cls.trunk_config_class.__name__}, or a readable "
                f"{cls.trunk_config_class.model_type} checkpoint ({error})."
            ) from error
        if not isinstance(config, cls.trunk_config_class):
            raise ValueError(
                f"{trunk} is a {config.model_type!r} checkpoint; {cls.__name__} needs a "
                f"{cls.trunk_config_class.model_type!r} trunk."
            )
        if trunk_kwargs:
            raise ValueError(f"Cannot resize a pretrained trunk checkpoint ({sorted(trunk_kwargs)}); pass a preset.")
        return cls.adapt_trunk_config(config), trunk

    @classmethod
    def adapt_trunk_config(cls, config):
        """What a head changes in its trunk's config (VideoMAE: mean pooling, no final norm). Default: nothing."""
        return config

    @property
    def trunk(self):
        """The transformers trunk module (ViTModel, VideoMAEModel, ViltModel) inside the base model."""
        if not self.trunk_attribute:
            raise AttributeError(f"{type(self).__name__} has no transformers trunk module.")
        return getattr(self.base_model, self.trunk_attribute)

    def freeze_trunk(self) -> None:
        """Keep the trunk as loaded: only the block's two linear layers (or the MLP control) and the task head train."""
        base = self.base_model
        for name in self.trunk_modules or (self.trunk_attribute,):
            for parameter in getattr(base, name).parameters():
                parameter.requires_grad_(False)
        self.enforce_llm_policy()

    def load_trunk_weights(self, source) -> None:
        """Copy a pretrained trunk checkpoint's weights into the trunk (its `from_pretrained` handles legacy names)."""
        if self.trunk_model_class is None:
            raise NotImplementedError(f"{type(self).__name__} has no pretrained trunk checkpoints to load.")
        pretrained = self.trunk_model_class.from_pretrained(source, config=self.trunk.config)
        missing, _ = self.trunk.load_state_dict(pretrained.state_dict(), strict=False)
        if missing:
            raise ValueError(f"The trunk checkpoint {source} lacks weights the trunk needs: {missing[:5]}.")

    @classmethod
    def from_parts(
        cls, trunk, llm=None, llm_layers=(-1,), variant="llm", *, llm_revision=None, trunk_kwargs=None, **config_kwargs
    ):
        """Assemble a model from a trunk and an LLM source, reading only the requested LLM layers.

        trunk: a preset name of this head's trunk (`trunk_presets`), its trunk config or fields, or a checkpoint
            of the trunk (where the trunk has a transformers class); `trunk_kwargs` resize a preset.
        llm: "smollm2-135m", a Hub id or local dir of an HF checkpoint, a `.gguf` file, a Meta-format dir, or a
            transformers config (random init). Not needed for variant="none".
        config_kwargs: num_labels, id2label, label2id, llm_dtype, llm_final_norm, llm_trainable, ...
        """
        llm_layers = [llm_layers] if isinstance(llm_layers, int) and not isinstance(llm_layers, bool) else list(llm_layers)
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
        if "id2label" in config_kwargs and "label2id" not in config_kwargs:
            config_kwargs["label2id"] = {label: index for index, label in dict(config_kwargs["id2label"]).items()}
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
            model.frozen_block().load_llm_layer_states(layer_states)
            model.record_block_hash()
        return model.enforce_llm_policy()

    def record_block_hash(self) -> None:
        """Record the sha256 of the LLM layers as the block stores them (in `llm_dtype`), beside the source's own:
        a slim save later checks that the block still holds exactly these tensors."""
        if self.config.llm_source is not None and self.config.variant == "llm":
            source = dict(self.config.llm_source)
            source["block_sha256"] = layer_states_sha256(self.frozen_block().llm_layer_states())
            self.config.llm_source = source

    # -- the uniform head API (timm-style) ----------------------------------------------------------------
    def reset_classifier(self, num_labels: int, id2label: dict | None = None) -> None:
        """Replace the class head for a new label set (e.g. fine-tuning a trained model on other classes)."""
        if not hasattr(self, "make_classifier"):
            raise TypeError(f"{type(self).__name__} predicts {self.output_kind}, not classes: it has no classifier.")
        id2label = {int(k): str(v) for k, v in (id2label or {i: str(i) for i in range(num_labels)}).items()}
        if len(id2label) != num_labels:
            raise ValueError(f"id2label has {len(id2label)} labels but num_labels is {num_labels}.")
        self.config.num_labels = num_labels
        self.config.id2label = id2label
        self.config.label2id = {v: k for k, v in id2label.items()}
        self.num_labels = num_labels
        self.classifier = self.make_classifier(num_labels)
        self.classifier.apply(self._init_weights)

    output_kind: str = "classes"

    def no_weight_decay(self) -> set[str]:
        """Parameter names that the training recipe keeps out of weight decay (biases, norms, embeddings)."""
        names = set()
        for name, parameter in self.named_parameters():
            if parameter.ndim <= 1 or "position_embeddings" in name or "cls_token" in name or "cls_position" in name:
                names.add(name)
        return names
