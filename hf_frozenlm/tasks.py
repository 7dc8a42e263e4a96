"""`hf-frozenlm train --task ...` for the heads beyond images: one registry entry per task says which model class,
which datasets, which collators and which processor; `run_task` is the shared Trainer loop around them.

Image classification keeps its own path in `commands/train.py` (transforms, mixup, LoRA, model card); the tasks here
reuse its options (`--vision` names the trunk, `--image_size`, `--patch_size`, `--vision_layers`, `--llm`,
`--llm_layers`, `--variant`, `--llm_dtype`, `--llm_trainable`, `--dataset`, every TrainingArguments option).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Callable

logger = logging.getLogger("hf_frozenlm.train")

IMAGE_TASK = "image-classification"


@dataclass(frozen=True)
class TaskSpec:
    """What one task needs from the training loop."""

    model_class: Callable  # a FrozenLMPreTrainedModel head with `from_parts`
    default_trunk: str  # used when --vision is left at the image default
    builtin: str  # the offline dataset used when --dataset is left at the image default
    builtin_trunk: dict  # trunk_kwargs that size the default trunk for the builtin set
    load_data: Callable  # (dataset, seed) -> DatasetDict with train/validation/test and a ClassLabel `label`
    collators: Callable  # (model, dataset_name, seed) -> (train collator, eval collator, processor or None)


def _load_video(dataset: str, seed: int):
    from .data import DataError
    from .data_video import moving_shapes_dataset, video_folder_dataset

    if dataset == "moving-shapes":
        return moving_shapes_dataset(seed=seed)
    if dataset.startswith("videofolder:"):
        return video_folder_dataset(dataset.split(":", 1)[1], seed=seed).with_format("numpy")
    raise DataError(f"--dataset {dataset!r}: video-classification takes moving-shapes or videofolder:PATH.")


def _video_collators(model, dataset: str, seed: int):
    from .data_video import VideoCollator, video_image_processor

    vision = model.config.vision_config
    size = vision.image_size if isinstance(vision.image_size, int) else vision.image_size[0]
    processor = video_image_processor(size)
    return (VideoCollator(processor, vision.num_frames, train=True, seed=seed),
            VideoCollator(processor, vision.num_frames), processor)


def _load_points(dataset: str, seed: int):
    from .data import DataError
    from .data_points import h5_point_dataset, point_folder_dataset, shapes3d_dataset

    if dataset == "shapes3d":
        return shapes3d_dataset(seed=seed)
    if dataset.startswith("pointfolder:"):
        return point_folder_dataset(dataset.split(":", 1)[1], seed=seed)
    if dataset.startswith("h5:"):
        return h5_point_dataset(dataset.split(":", 1)[1], seed=seed)
    raise DataError(f"--dataset {dataset!r}: point-cloud-classification takes shapes3d, pointfolder:PATH or h5:PATH.")


def _point_collators(model, dataset: str, seed: int):
    from .data_points import PointCloudCollator

    # The builtin shapes train at 256 points (its tiny trunk groups 16 x 16); real data at Point-BERT's 1024.
    num_points = 256 if dataset == "shapes3d" else 1024
    return PointCloudCollator(num_points, train=True, seed=seed), PointCloudCollator(num_points), None


def _tasks() -> dict[str, TaskSpec]:
    from . import PointBertLlamaForPointCloudClassification, VideoMAELlamaForVideoClassification

    return {
        "video-classification": TaskSpec(
            VideoMAELlamaForVideoClassification, "videomae-small", "moving-shapes",
            dict(hidden_size=64, num_attention_heads=4, intermediate_size=128, num_hidden_layers=2, image_size=32,
                 patch_size=8, num_frames=8),
            _load_video, _video_collators,
        ),
        "point-cloud-classification": TaskSpec(
            PointBertLlamaForPointCloudClassification, "pointbert-small", "shapes3d",
            dict(hidden_size=64, num_attention_heads=4, intermediate_size=128, num_hidden_layers=2, num_groups=16,
                 group_size=16, group_encoder_hidden_sizes=[32, 64, 128], group_encoder_size=64,
                 position_embedding_size=32, classifier_hidden_size=64, drop_path_rate=0.0),
            _load_points, _point_collators,
        ),
    }


TASK_NAMES = (IMAGE_TASK, "video-classification", "point-cloud-classification",
              # Heads whose labels are not classes (trajectories, soft answers, matching pairs): tasks_heads.py.
              "motion-forecasting", "visual-question-answering", "image-text-retrieval", "3d-question-answering")


def build_task_model(spec: TaskSpec, model_args, id2label: dict[int, str], builtin: bool):
    from .modeling import VIT_PRESETS

    trunk = spec.default_trunk if model_args.vision in VIT_PRESETS else model_args.vision
    trunk_kwargs = dict(spec.builtin_trunk) if builtin and trunk == spec.default_trunk else {}
    for key, value in (("image_size", model_args.image_size), ("patch_size", model_args.patch_size),
                       ("num_hidden_layers", model_args.vision_layers)):
        if value is not None:
            trunk_kwargs[key] = value
    llm = None if model_args.variant == "none" else model_args.llm
    return spec.model_class.from_parts(
        trunk, llm, llm_layers=model_args.llm_layers, variant=model_args.variant, trunk_kwargs=trunk_kwargs or None,
        id2label=id2label, label2id={v: k for k, v in id2label.items()}, llm_dtype=model_args.llm_dtype,
        llm_trainable=model_args.llm_trainable,
    )


def _task_trainer_class():
    from transformers import Trainer

    from .training import FrozenLMTrainer

    class TaskTrainer(FrozenLMTrainer):
        """FrozenLMTrainer's optimizer policy with Trainer's own loss (label smoothing included): its mixup/cutmix
        loss is written for `pixel_values` images."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    return TaskTrainer


def run_task(task: str, model_args, data_args, training_args) -> dict:
    """Train, evaluate and save one non-image task; returns the metrics (also written to metrics.json)."""
    import torch

    from .data import DataError
    from .metrics import classification_metrics
    from .training import check_optimizer_params

    TaskTrainer = _task_trainer_class()
    if model_args.mixup or model_args.cutmix or model_args.lora_r or model_args.freeze_vision:
        raise SystemExit(f"hf-frozenlm train --task {task}: --mixup, --cutmix, --lora_r and --freeze_vision are for "
                         "image classification only.")
    from .tasks_heads import HEAD_TASKS, run_head_task

    if task in HEAD_TASKS:
        return run_head_task(task, model_args, data_args, training_args)
    spec = _tasks()[task]
    dataset = spec.builtin if data_args.dataset == "digits" else data_args.dataset
    try:
        splits = spec.load_data(dataset, data_args.split_seed)
    except DataError as error:
        raise SystemExit(f"hf-frozenlm train: {error}") from None
    names = splits["train"].features["label"].names
    id2label = dict(enumerate(names))
    logger.info("Task %s, dataset %s: %s; %d classes", task, dataset,
                ", ".join(f"{k} {len(v)}" for k, v in splits.items()), len(names))
    model = build_task_model(spec, model_args, id2label, builtin=dataset == spec.builtin)
    model.config.problem_type = "single_label_classification"
    train_collator, eval_collator, processor = spec.collators(model, dataset, training_args.seed)
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters()
                     if ".frozen_lm.layers." in n and not p.requires_grad}

    training_args.remove_unused_columns = False  # the collators read the raw `video` / `points` columns
    trainer = TaskTrainer(
        model=model, args=training_args, train_dataset=splits["train"], eval_dataset=splits["validation"],
        data_collator=train_collator, compute_metrics=classification_metrics(len(names)),
    )
    trainer.train()
    check_optimizer_params(trainer.optimizer, model)
    for name, parameter in model.named_parameters():
        if name in frozen_before and not torch.equal(parameter.detach(), frozen_before[name]):
            raise AssertionError(f"The frozen LLM tensor {name} changed during training.")
    # Evaluation batches use the deterministic collator (middle frames / fixed point subsets, no augmentation).
    trainer.data_collator = eval_collator
    metrics = {
        "validation": trainer.evaluate(splits["validation"], metric_key_prefix="eval"),
        "test": trainer.evaluate(splits["test"], metric_key_prefix="test"),
    }
    trainer.save_model(training_args.output_dir)
    if trainer.is_world_process_zero():
        if processor is not None:
            processor.save_pretrained(training_args.output_dir)
        with open(os.path.join(training_args.output_dir, "metrics.json"), "w", encoding="utf-8") as handle:
            json.dump({"task": task, "dataset": dataset, **metrics}, handle, indent=2)
        print(f"\nRun folder: {training_args.output_dir}\ntest accuracy "
              f"{metrics['test'].get('test_accuracy', float('nan')):.4f} "
              f"(validation {metrics['validation'].get('eval_accuracy', float('nan')):.4f})")
    return metrics
