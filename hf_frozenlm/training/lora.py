"""LoRA on the frozen block of any task, through peft, and merging adapters back into a plain model.

The adapters go on the LLM layers' attention projections (or `--lora_target`); everything else that trains without
LoRA (trunk, the two linear layers around the block, the task head) trains fully as peft `modules_to_save`, chosen
from the model's own module tree so that no LLM layer is ever copied into them.
"""

from __future__ import annotations

import torch
from transformers.pytorch_utils import Conv1D

from ..errors import UsageError
from .trainer import unwrap


def default_lora_targets(model) -> list[str]:
    """Full names of the linear projections inside the attention of every LLM layer of the block."""
    block = model.frozen_block()
    attention = block.architecture.attention_module
    block_name = next(name for name, module in model.named_modules() if module is block)
    return sorted(
        name for name, module in model.named_modules()
        if name.startswith(f"{block_name}.layers.") and f".{attention}." in name
        and isinstance(module, (torch.nn.Linear, Conv1D))
    )


def modules_to_save(model) -> list[str]:
    """The smallest set of modules that holds every trainable parameter outside the LLM layers, without any LLM
    layer: what peft must keep training (and save) beside the adapters."""
    llm = {id(p) for block in model.frozen_lm_blocks() for p in block.llm_own_parameters()}
    chosen = []

    def visit(prefix: str, module: torch.nn.Module) -> None:
        parameters = list(module.parameters())
        if not any(id(p) in llm for p in parameters):
            if any(p.requires_grad for p in parameters):
                chosen.append(prefix)
            return
        own = [name for name, p in module.named_parameters(recurse=False) if p.requires_grad]
        if own:
            raise UsageError(f"{type(module).__name__} holds trainable parameters {own} beside LLM layers; LoRA cannot "
                             "keep them training. This is a bug in the model class.")
        for name, child in module.named_children():
            visit(f"{prefix}.{name}" if prefix else name, child)

    visit("", model)
    return chosen


def apply_lora(model, model_args):
    """Wrap with peft LoRA on the block; everything else trainable keeps training (as modules_to_save)."""
    from peft import LoraConfig, get_peft_model

    if model.config.variant not in ("llm", "random-llm"):
        raise UsageError(f"--lora_r needs an LLM block; variant {model.config.variant!r} has none.")
    if model.config.llm_trainable:
        raise UsageError("--lora_r and --llm_trainable both train the LLM block; pick one.")
    lora_config = LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha if model_args.lora_alpha is not None else 2 * model_args.lora_r,
        lora_dropout=model_args.lora_dropout,
        target_modules=model_args.lora_target or default_lora_targets(model),
        modules_to_save=modules_to_save(model),
        # Conv1D (GPT-2) stores weights transposed.
        fan_in_fan_out=model.config.llm_config.model_type == "gpt2",
    )
    peft_model = get_peft_model(model, lora_config)
    unwrap(peft_model).enforce_llm_policy()
    return peft_model


def merge_lora(peft_model):
    """Fold the adapters into the LLM layers: a plain model that loads without peft. Its `llm_source` records the
    merge, since its layers no longer equal the source's (a slim save is then refused)."""
    lora = peft_model.peft_config["default"]
    model = peft_model.merge_and_unload()
    source = dict(model.config.llm_source or {})
    targets = lora.target_modules
    source["lora_merged"] = {"r": lora.r, "lora_alpha": lora.lora_alpha,
                             "target_modules": targets if isinstance(targets, str) else sorted(targets)}
    model.config.llm_source = source
    return model
