"""The training recipe, through transformers' Trainer: model building, the optimizer policy, mixup/cutmix, LoRA.

The paper trains everything except the frozen LLM block with the DeiT recipe: AdamW, cosine schedule with
warm-up, weight decay 0.05 that skips biases, norms, position and CLS embeddings, label smoothing, mixup/cutmix.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Trainer

logger = logging.getLogger(__name__)

# The main job's trunk: 8x8 digits seen as 16 patches of 2x2 pixels (+ CLS). Larger images or patches
# measured no better on digits and cost more; see README.md (Training).
DIGITS_TRUNK = dict(image_size=8, patch_size=2, num_hidden_layers=2)


@dataclass
class ModelArguments:
    """What to build: the ViT trunk, the LLM block and how much of it trains."""

    vision: str = field(
        default="vit-tiny",
        metadata={"help": "ViT preset (vit-tiny, vit-small, vit-base), a ViT/DeiT checkpoint (Hub id or folder), or "
                  "a saved hf_frozenlm model folder to fine-tune."},
    )
    image_size: int | None = field(default=None, metadata={"help": "Resize the preset to this image size."})
    patch_size: int | None = field(default=None, metadata={"help": "Patch size of the preset."})
    vision_layers: int | None = field(default=None, metadata={"help": "Number of ViT layers of the preset."})
    llm: str = field(
        default="smollm2-135m",
        metadata={"help": "LLM source: smollm2-135m (offline GGUF), an HF Hub id or folder, a .gguf file or a "
                  "Meta-format folder."},
    )
    llm_layers: list[int] = field(
        default_factory=lambda: [-1], metadata={"help": "LLM layer indices, negative from the end (e.g. -2 -1)."}
    )
    variant: str = field(
        default="llm",
        metadata={"help": "llm (frozen LLM block), mlp (the paper's control), random-llm, none (plain ViT).",
                  "choices": ["llm", "mlp", "random-llm", "none"]},
    )
    llm_dtype: str = field(
        default="float32",
        metadata={"help": "dtype the LLM layers are stored and computed in.",
                  "choices": ["float32", "bfloat16", "float16"]},
    )
    llm_trainable: bool = field(default=False, metadata={"help": "Fine-tune the LLM block (the paper's ablation)."})
    freeze_vision: bool = field(
        default=False,
        metadata={"help": "Train only the two linear layers around the block and the head; the trunk stays as loaded."},
    )
    lora_r: int = field(default=0, metadata={"help": "LoRA rank on the LLM block through peft (0: no LoRA)."})
    lora_alpha: float | None = field(default=None, metadata={"help": "LoRA alpha (default: 2 * lora_r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target: str | None = field(
        default=None,
        metadata={"help": "Regex (full match) of module names that get LoRA; default: the block's attention "
                  "projections."},
    )
    mixup: float = field(default=0.0, metadata={"help": "Mixup Beta(alpha, alpha) parameter; 0 disables."})
    cutmix: float = field(default=0.0, metadata={"help": "CutMix Beta(alpha, alpha) parameter; 0 disables."})


@dataclass
class RunArguments:
    """Run-folder options that TrainingArguments no longer carries."""

    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Write into an existing, non-empty --output_dir (refused otherwise)."}
    )
    cpu_threads: int | None = field(
        default=None,
        metadata={"help": "torch threads per process when training on CPU (default: OMP_NUM_THREADS if set, else 1)."},
    )
    task: str = field(
        default="image-classification",
        metadata={"help": "image-classification (ViT), video-classification (VideoMAE; --dataset moving-shapes or "
                  "videofolder:PATH) or point-cloud-classification (Point-BERT; --dataset shapes3d, pointfolder:PATH "
                  "or h5:PATH), motion-forecasting (VectorNet; road-scenes or argoverse:TRAIN,VAL[,LANES]), "
                  "visual-question-answering (ViLT; shapes-vqa or vqav2:Q,A,IMAGES), image-text-retrieval (ViLT; "
                  "shapes-captions or flickr30k:JSON,IMAGES) or 3d-question-answering (Point-BERT; rooms-qa). See "
                  "hf_frozenlm/tasks.py and tasks_heads.py.",
                  "choices": ["image-classification", "video-classification", "point-cloud-classification",
                              "motion-forecasting", "visual-question-answering", "image-text-retrieval",
                              "3d-question-answering"]},
    )


# -- model ------------------------------------------------------------------------------------------------
def is_saved_frozenlm_model(path: str) -> bool:
    import json

    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        return False
    with open(config_file, encoding="utf-8") as handle:
        return json.load(handle).get("model_type") == "vit_llama"


def build_model(model_args: ModelArguments, id2label: dict[int, str], dataset_name: str = ""):
    """A ViTLlamaForImageClassification for these labels: from parts, or a saved model with a new head if needed."""
    from . import ViTLlamaForImageClassification

    label2id = {label: index for index, label in id2label.items()}
    if os.path.isdir(model_args.vision) and is_saved_frozenlm_model(model_args.vision):
        model = ViTLlamaForImageClassification.from_pretrained(model_args.vision)
        if dict(model.config.id2label) != id2label:
            logger.info("New label set (%d classes): replacing the classifier of %s.", len(id2label), model_args.vision)
            model.reset_classifier(len(id2label), id2label)
        return model
    trunk_kwargs = {}
    defaults = DIGITS_TRUNK if dataset_name == "digits" else {}
    for key, value in (("image_size", model_args.image_size), ("patch_size", model_args.patch_size),
                       ("num_hidden_layers", model_args.vision_layers)):
        value = value if value is not None else defaults.get(key)
        if value is not None:
            trunk_kwargs[key] = value
    llm = None if model_args.variant == "none" else model_args.llm
    return ViTLlamaForImageClassification.from_parts(
        model_args.vision, llm, llm_layers=model_args.llm_layers, variant=model_args.variant,
        trunk_kwargs=trunk_kwargs or None, num_labels=len(id2label), id2label=id2label, label2id=label2id,
        llm_dtype=model_args.llm_dtype, llm_trainable=model_args.llm_trainable,
    )


def freeze_trunk(model) -> None:
    """`--freeze-vision`: only the block's linear layers (and the MLP control) and the classifier train."""
    for name, parameter in model.named_parameters():
        trainable = ".frozen_lm." in f".{name}" or name.startswith("classifier.")
        if not trainable:
            parameter.requires_grad_(False)
    model.enforce_llm_policy()


def default_lora_targets(model) -> list[str]:
    """Full names of the linear projections inside the attention of every LLM layer of the block."""
    from transformers.pytorch_utils import Conv1D

    targets = []
    for block in model.frozen_lm_blocks():
        attention = block.architecture.attention_module
        for name, module in model.named_modules():
            if ".frozen_lm.layers." in name and f".{attention}." in name and isinstance(module, (torch.nn.Linear, Conv1D)):
                targets.append(name)
    return sorted(set(targets))


def apply_lora(model, model_args: ModelArguments):
    """Wrap with peft LoRA on the block; proj_in/proj_out/classifier (and the trunk unless frozen) train fully."""
    from peft import LoraConfig, get_peft_model

    if model.config.variant not in ("llm", "random-llm"):
        raise ValueError(f"--lora_r needs an LLM block; variant {model.config.variant!r} has none.")
    if model.config.llm_trainable:
        raise ValueError("--lora_r and --llm_trainable both train the LLM block; pick one.")
    modules_to_save = ["proj_in", "proj_out", "classifier"]
    if not model_args.freeze_vision:
        modules_to_save.append("vit")  # the ViT trunk (ViTLlamaModel.vit), trained fully as without LoRA
    lora_config = LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha if model_args.lora_alpha is not None else 2 * model_args.lora_r,
        lora_dropout=model_args.lora_dropout,
        target_modules=model_args.lora_target or default_lora_targets(model),
        modules_to_save=modules_to_save,
        # Conv1D (GPT-2) stores weights transposed.
        fan_in_fan_out=model.config.llm_config.model_type == "gpt2",
    )
    peft_model = get_peft_model(model, lora_config)
    peft_model.base_model.model.enforce_llm_policy()
    return peft_model


def unwrap(model):
    """The ViTLlama model inside a PeftModel (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


# -- optimizer policy ---------------------------------------------------------------------------------------
_PEFT_NAME_PARTS = (".modules_to_save.default", ".original_module", ".base_layer")


def canonical_name(name: str) -> str:
    """A parameter name without the wrappers PEFT adds, so it matches the base model's `no_weight_decay()`."""
    if name.startswith("base_model.model."):
        name = name[len("base_model.model."):]
    for part in _PEFT_NAME_PARTS:
        name = name.replace(part, "")
    return name


def check_optimizer_params(optimizer, model) -> None:
    """The optimizer holds exactly the trainable parameters: the frozen block never reaches it."""
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    if in_optimizer != trainable:
        frozen_inside = len(in_optimizer - trainable)
        missing = len(trainable - in_optimizer)
        raise AssertionError(
            f"Optimizer parameters differ from the trainable ones: {frozen_inside} frozen in the optimizer, "
            f"{missing} trainable left out."
        )


class FrozenLMTrainer(Trainer):
    """Trainer with the paper's optimizer policy and mixup/cutmix with label smoothing on soft targets."""

    # compute_loss below returns a per-batch mean; Trainer divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha

    def get_decay_parameter_names(self, model) -> list[str]:
        no_decay = unwrap(self.model).no_weight_decay()
        return [name for name, _ in model.named_parameters() if canonical_name(name) not in no_decay]

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        check_optimizer_params(self.optimizer, self.model)
        return optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        pixel_values, labels = inputs["pixel_values"], inputs["labels"]
        num_classes = unwrap(self.model).config.num_labels
        smoothing = self.args.label_smoothing_factor
        # Label smoothing as in timm: the true class gets 1 - eps + eps / C, the others eps / C.
        targets = F.one_hot(labels, num_classes).float() * (1 - smoothing) + smoothing / num_classes
        pixel_values, targets = self.mix(pixel_values, targets)
        outputs = model(pixel_values=pixel_values)
        logits = outputs.logits.float()
        loss = torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()
        return (loss, outputs) if return_outputs else loss

    def mix(self, pixel_values: torch.Tensor, targets: torch.Tensor):
        """Mixup or CutMix (one, chosen at random when both are on) with the batch reversed as partner."""
        choices = [kind for kind, alpha in (("mixup", self.mixup_alpha), ("cutmix", self.cutmix_alpha)) if alpha > 0]
        if not choices:
            return pixel_values, targets
        kind = choices[np.random.randint(len(choices))]
        lam = float(np.random.beta(self.mixup_alpha if kind == "mixup" else self.cutmix_alpha,
                                   self.mixup_alpha if kind == "mixup" else self.cutmix_alpha))
        partner = pixel_values.flip(0)
        if kind == "mixup":
            pixel_values = lam * pixel_values + (1 - lam) * partner
        else:
            height, width = pixel_values.shape[-2:]
            cut_h, cut_w = int(height * (1 - lam) ** 0.5), int(width * (1 - lam) ** 0.5)
            cy, cx = np.random.randint(height), np.random.randint(width)
            top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
            left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
            pixel_values = pixel_values.clone()
            pixel_values[..., top:bottom, left:right] = partner[..., top:bottom, left:right]
            # The label weight is the area actually kept after clipping the box.
            lam = 1 - (bottom - top) * (right - left) / (height * width)
        return pixel_values, lam * targets + (1 - lam) * targets.flip(0)


# -- run folder ------------------------------------------------------------------------------------------
def plot_training_curves(log_history: list[dict], path: str) -> None:
    """Train/validation loss and validation accuracy against the step, as a PNG (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = [e for e in log_history if "eval_loss" in e]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        ax_loss.plot(*zip(*train), label="train loss")
    if evals:
        ax_loss.plot([e["step"] for e in evals], [e["eval_loss"] for e in evals], "o-", label="validation loss")
        if any("eval_accuracy" in e for e in evals):
            ax_acc.plot([e["step"] for e in evals if "eval_accuracy" in e],
                        [e["eval_accuracy"] for e in evals if "eval_accuracy" in e], "o-", label="validation accuracy")
            ax_acc.set_ylim(0, 1)
    for axis, title in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        axis.set_xlabel("step")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- loading what `train` wrote ---------------------------------------------------------------------------------
def resolve_adapter_base(adapter_dir: str) -> str:
    """The base model folder of a LoRA run folder (its adapter_config's reference, relative to the folder)."""
    import json

    with open(os.path.join(adapter_dir, "adapter_config.json"), encoding="utf-8") as handle:
        base = json.load(handle).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{adapter_dir}/adapter_config.json names no base model (base_model_name_or_path).")
    local = os.path.join(adapter_dir, base)
    return local if not os.path.isabs(base) and os.path.isdir(local) else base


def load_trained_model(path: str):
    """(model, image processor) from a run folder: a plain model, or LoRA adapters on their base."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    if not os.path.isdir(path):
        raise ValueError(f"{path!r} is not a folder written by `hf-frozenlm train` or `merge`.")
    processor = AutoImageProcessor.from_pretrained(path)
    if os.path.isfile(os.path.join(path, "adapter_config.json")):
        from peft import PeftModel

        base = AutoModelForImageClassification.from_pretrained(resolve_adapter_base(path), trust_remote_code=True)
        model = PeftModel.from_pretrained(base, path)
    else:
        model = AutoModelForImageClassification.from_pretrained(path, trust_remote_code=True)
    return model.eval(), processor
