"""The one Trainer of every task: the paper's optimizer policy, an evaluation collator, optional batch mixing, the
"frozen stays frozen" check, and checkpoints that resume every weight.

- Weight decay (0.05 in the recipe) skips biases, norms, position and CLS embeddings (`no_weight_decay()` of the
  model), and the optimizer is checked to hold exactly the trainable parameters: the frozen block never reaches it.
- `FrozenWeightsCallback` hashes the LLM layers when training starts and again when it ends (and at every save);
  any change is an error, unless the block is meant to train (`llm_trainable`).
- Evaluation batches go through the task's deterministic collator (no augmentation).
- Recipes add layer-wise learning-rate decay and a learning-rate scale of the block's linears
  (`learning_rates.py`), and repeated augmentation as the training sampler (`data/repeated_augmentation.py`).
- Resuming loads a checkpoint through the model's own `from_pretrained`, which reads transformers' legacy weight
  names (ViT checkpoints store `vit.encoder.layer.0...`), and requires every weight to be restored.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback

from ..errors import FrozenLMError

logger = logging.getLogger(__name__)


class FrozenWeightsChangedError(FrozenLMError, AssertionError):
    """The frozen LLM layers changed during training: the run is not what it claims to be."""


def unwrap(model):
    """The hf_frozenlm model inside a PeftModel (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


# PEFT wraps trained modules and renames their parameters; these parts are removed to compare with the base model.
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
        raise FrozenWeightsChangedError(
            f"Optimizer parameters differ from the trainable ones: {len(in_optimizer - trainable)} frozen in the "
            f"optimizer, {len(trainable - in_optimizer)} trainable left out."
        )


def frozen_layers_sha256(model) -> str | None:
    """sha256 of the LLM layers' own weights (adapters left out), or None when the block has none or trains."""
    from ..modeling.frozenlm_loading import layer_states_sha256

    base = unwrap(model)
    if base.config.variant not in ("llm", "random-llm") or base.config.llm_trainable:
        return None
    return layer_states_sha256(base.frozen_block().llm_layer_states())


class FrozenWeightsCallback(TrainerCallback):
    """Fails the run if the frozen LLM layers change (checked at every save and at the end of training)."""

    def __init__(self):
        self.reference = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.reference = frozen_layers_sha256(model)

    def check(self, model, when: str) -> None:
        if self.reference is None:
            return
        now = frozen_layers_sha256(model)
        if now != self.reference:
            raise FrozenWeightsChangedError(
                f"The frozen LLM layers changed during training ({when}: sha256 {now[:16]}... != "
                f"{self.reference[:16]}...). Something made them trainable or wrote into them."
            )

    def on_save(self, args, state, control, model=None, **kwargs):
        self.check(model, f"step {state.global_step}")

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.check(model, "end of training")


class EpochCallback(TrainerCallback):
    """Keeps the training collators' `ExampleRandomness.epoch` at the epoch being trained (resumed runs included:
    Trainer restores `state.epoch` from the checkpoint before the resumed epoch begins)."""

    def __init__(self, randomness):
        self.randomness = randomness

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.randomness.epoch = int(math.floor((state.epoch or 0) + 1e-6))


class FrozenLMTrainer(Trainer):
    """Trainer with the paper's optimizer policy, an evaluation collator, optional mixing and faithful resumes.

    eval_data_collator: collates evaluation and test batches (the training collator may augment).
    mixer: a batch mixer (mixup / cutmix) for class labels; the loss then uses label-smoothed soft targets.
    randomness: the training collator's ExampleRandomness, whose epoch this Trainer keeps current.
    layer_decay, block_linear_lr_scale: learning-rate scales by trunk depth and for the block's linears.
    repeated_augmentation: repeats of each training example per sampler epoch (0: Trainer's own sampler).
    """

    def __init__(self, *args, eval_data_collator=None, mixer=None, randomness=None, layer_decay=None,
                 block_linear_lr_scale=1.0, repeated_augmentation=0, **kwargs):
        callbacks = list(kwargs.pop("callbacks", None) or [])
        if not any(isinstance(callback, FrozenWeightsCallback) for callback in callbacks):
            callbacks.append(FrozenWeightsCallback())
        if randomness is not None:
            callbacks.append(EpochCallback(randomness))
        super().__init__(*args, callbacks=callbacks, **kwargs)
        self.eval_data_collator = eval_data_collator
        self.mixer = mixer
        self.layer_decay = layer_decay
        self.block_linear_lr_scale = block_linear_lr_scale
        self.repeated_augmentation = repeated_augmentation
        if mixer is not None:
            # compute_loss below returns a per-batch mean; Trainer divides it by the accumulation steps.
            self.loss_is_scaled_for_ga = False

    # -- optimizer policy -------------------------------------------------------------------------------------
    def get_decay_parameter_names(self, model) -> list[str]:
        no_decay = unwrap(self.model).no_weight_decay()
        return [name for name, _ in model.named_parameters() if canonical_name(name) not in no_decay]

    def create_optimizer(self, model=None):
        super().create_optimizer(model)
        scaled = any("lr_scale" in group for group in self.optimizer.param_groups)
        if (self.layer_decay is not None or self.block_linear_lr_scale != 1.0) and not scaled:
            from .learning_rates import learning_rate_scales, split_param_groups_by_scale

            named = [(canonical_name(name), parameter) for name, parameter in self.model.named_parameters()]
            scales = learning_rate_scales([name for name, parameter in named if parameter.requires_grad],
                                          self.layer_decay, self.block_linear_lr_scale)
            self.optimizer = split_param_groups_by_scale(self.optimizer, named, scales)
        check_optimizer_params(self.optimizer, self.model)
        return self.optimizer

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.repeated_augmentation or dataset is None or not hasattr(dataset, "__len__"):
            return super()._get_train_sampler(train_dataset)
        from ..data.repeated_augmentation import RepeatedAugmentationDataset, RepeatedAugmentationSampler

        if not isinstance(dataset, RepeatedAugmentationDataset):
            raise TypeError("Repeated augmentation samples a RepeatedAugmentationDataset (its copies need ids of their "
                            "own); wrap the training split in one.")
        return RepeatedAugmentationSampler(len(dataset.base), num_replicas=max(1, self.args.world_size),
                                           batch_size=self.args.train_batch_size, repeats=self.repeated_augmentation,
                                           seed=self.args.seed)

    # -- batches ----------------------------------------------------------------------------------------------
    def _get_dataloader(self, dataset, description, batch_size, sampler_fn=None, is_training=False,
                        dataloader_key=None):
        if is_training or self.eval_data_collator is None:
            return super()._get_dataloader(dataset, description, batch_size, sampler_fn, is_training, dataloader_key)
        training_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return super()._get_dataloader(dataset, description, batch_size, sampler_fn, is_training, dataloader_key)
        finally:
            self.data_collator = training_collator

    # -- loss ---------------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training and self.label_smoother is not None:
            # Evaluation reports the model's own loss (plain cross-entropy, as timm validates and as `hf-frozenlm
            # evaluate` reports it): label smoothing is a training regulariser, not part of the measured loss.
            smoother, self.label_smoother = self.label_smoother, None
            try:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            finally:
                self.label_smoother = smoother
        if self.mixer is None or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        num_classes = unwrap(self.model).config.num_labels
        smoothing = self.args.label_smoothing_factor
        # Label smoothing as in timm: the true class gets 1 - eps + eps / C, the others eps / C.
        targets = F.one_hot(labels, num_classes).float() * (1 - smoothing) + smoothing / num_classes
        name = unwrap(self.model).main_input_name
        inputs[name], targets = self.mixer(inputs[name], targets)
        outputs = model(**inputs)
        loss = torch.sum(-targets * F.log_softmax(outputs.logits.float(), dim=-1), dim=-1).mean()
        return (loss, outputs) if return_outputs else loss

    # -- multi-view evaluation -----------------------------------------------------------------------------------
    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Batches with `num_views` (video test views stacked in the batch) score each example by the mean of its
        views' softmax, as VideoMAE's test merges its views; logits become the log of that mean, the loss its NLL."""
        if "num_views" not in inputs:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        inputs = self._prepare_inputs(dict(inputs))
        counts, labels = inputs.pop("num_views"), inputs.pop("labels", None)
        with torch.no_grad(), self.compute_loss_context_manager():
            logits = model(**inputs).logits
        probabilities = torch.stack([part.mean(0) for part in
                                     torch.split(logits.float().softmax(-1), counts.tolist())])
        log_probabilities = probabilities.clamp_min(torch.finfo(torch.float32).tiny).log()
        loss = F.nll_loss(log_probabilities, labels) if labels is not None else None
        return (loss, None, None) if prediction_loss_only else (loss, log_probabilities, labels)

    # -- checkpoints ------------------------------------------------------------------------------------------
    def _save(self, output_dir=None, state_dict=None):
        """Trainer pickles its arguments (hub_token included) into every checkpoint's training_args.bin: blank the
        secret fields, and redact secrets inside other strings (a URL with credentials), while it does."""
        from ..redaction import is_secret_name, redact_text

        originals = {}
        for name, value in vars(self.args).items():
            if value and is_secret_name(name):
                originals[name], cleaned = value, None
            elif isinstance(value, str) and (cleaned := redact_text(value)) != value:
                originals[name] = value
            else:
                continue
            setattr(self.args, name, cleaned)
        try:
            return super()._save(output_dir, state_dict)
        finally:
            for name, value in originals.items():
                setattr(self.args, name, value)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        model = model if model is not None else self.model
        if not self._load_full_checkpoint(resume_from_checkpoint, model):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_full_checkpoint(self, folder: str, model) -> bool:
        """Load a plain (non-adapter) checkpoint through the model class's from_pretrained, strictly.

        Trainer's own loader matches names as they are in memory, while save_pretrained writes transformers'
        legacy names for some trunks (ViT): it would warn about missing keys and go on with a fresh trunk.
        """
        if hasattr(model, "peft_config") or not os.path.isfile(os.path.join(folder, "model.safetensors")):
            return False
        base = unwrap(model)
        reloaded = type(base).from_pretrained(folder)
        state = reloaded.state_dict()
        expected = base.state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            from ..errors import RunFolderError

            raise RunFolderError(
                f"The checkpoint {folder} does not hold this model's weights (missing {missing[:5]}, unexpected "
                f"{unexpected[:5]}): it was written by another model or options. Resume with the options of that run."
            )
        base.load_state_dict(state, strict=True)
        logger.info("Resumed every weight (%d tensors) from %s.", len(state), folder)
        return True

    def _load_best_model(self):
        if not self._load_full_checkpoint(self.state.best_model_checkpoint, self.model):
            super()._load_best_model()


class MixupCutmix:
    """Mixup or CutMix (one, chosen at random when both are on) of a batch of images with the batch reversed.

    Draws from numpy's global generator, which Trainer saves in every checkpoint.
    """

    def __init__(self, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0):
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha

    def __call__(self, pixel_values: torch.Tensor, targets: torch.Tensor):
        choices = [kind for kind, alpha in (("mixup", self.mixup_alpha), ("cutmix", self.cutmix_alpha)) if alpha > 0]
        if not choices:
            return pixel_values, targets
        kind = choices[np.random.randint(len(choices))]
        alpha = self.mixup_alpha if kind == "mixup" else self.cutmix_alpha
        lam = float(np.random.beta(alpha, alpha))
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
