"""The one training loop of every task: data -> model -> Trainer -> metrics -> the run folder.

`train_task(arguments)` is what `hf-frozenlm train` and `hf-frozenlm ablate` run. Everything task-specific comes
from the task object (data, model, processor, collators, metrics); everything else is the same for all seven
tasks: the optimizer policy, the frozen-weights check, LoRA, resuming, the evaluation of train / validation / test,
and the run folder (`run_folder.write_run_folder`).
"""

from __future__ import annotations

import logging
import os
import tempfile

import torch

from ..data.randomness import ExampleRandomness, with_example_ids
from ..data.splits import truncate_splits
from ..errors import UsageError
from .arguments import TrainArguments
from .checkpoints import resolve_resume
from .trainer import FrozenLMTrainer, check_optimizer_params, unwrap

logger = logging.getLogger("hf_frozenlm.train")

TRAIN_METRICS_MAX_SAMPLES = 5000  # train-split metrics are measured on at most this many examples


def check_output_dir(output_dir: str, overwrite: bool, resuming: bool) -> None:
    """Refuse to write into a non-empty folder unless told to (or resuming a run in it)."""
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite and not resuming:
        raise UsageError(
            f"The output folder {output_dir!r} exists and is not empty. Pass --output_dir with a new folder, "
            "--overwrite_output_dir to write into it, or --resume_from_checkpoint last to continue it."
        )


def configure_threads(arguments: TrainArguments) -> None:
    if arguments.training.use_cpu or not torch.cuda.is_available():
        # One thread by default: the small models' matmuls gain nothing from more, and on a shared CPU extra threads
        # spin against other processes (measured on 2 busy cores: 1.5 s/step with 1 thread, 12 s with 2).
        torch.set_num_threads(arguments.run.cpu_threads or int(os.environ.get("OMP_NUM_THREADS") or 1))


def strip_prefix(metrics: dict, prefix: str) -> dict:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in metrics.items()}


def evaluate_split(trainer, task, model, processor, split, prefix: str) -> dict:
    """Trainer's evaluation of one split (loss + the task's batch metrics) plus the task's whole-split metrics."""
    metrics = strip_prefix(trainer.evaluate(split, metric_key_prefix=prefix), f"{prefix}_")
    metrics.update(task.score_split(unwrap(model), processor, split))
    return metrics


def train_task(arguments: TrainArguments) -> dict:
    """Train, evaluate and save one run; returns its metrics (also in metrics.json of the run folder)."""
    from transformers import set_seed

    from .lora import apply_lora
    from .run_folder import write_run_folder

    task, model_args, data_args, run_args, training_args = (
        arguments.task, arguments.model, arguments.data, arguments.run, arguments.training)
    output_dir = training_args.output_dir
    resume = resolve_resume(training_args.resume_from_checkpoint, output_dir)
    check_output_dir(output_dir, run_args.overwrite_output_dir, resuming=resume is not None)
    training_args.remove_unused_columns = False  # the collators read the raw columns
    training_args.label_names = ["labels"]
    configure_threads(arguments)
    set_seed(training_args.seed)

    with training_args.main_process_first(desc="loading the dataset"):
        data = task.load_data(data_args)
        if not data.info.get("streaming"):  # a stream applies the limits as it is read
            data.splits = truncate_splits(data.splits, data_args.max_train_samples, data_args.max_eval_samples)
    logger.info("Task %s, dataset %s%s", task.name, data.describe(),
                f"; {data.skipped} unreadable example(s) skipped" if data.skipped else "")

    try:
        model = task.build_model(model_args, data_args, data)
    except (ValueError, IndexError) as error:
        # The model code checks configs and parts (layer indices, trunk sizes) and says what is wrong in its
        # message; here those are the user's options.
        raise UsageError(f"Cannot build the {task.name} model from these options: {error}") from error
    if model_args.freeze_trunk:
        trunk, _ = task.trunk(model_args, data_args)
        if isinstance(trunk, str) and trunk in task.model_class.trunk_presets:
            logger.warning("--freeze_trunk with a preset keeps a randomly initialised trunk frozen; pass a pretrained "
                           "trunk checkpoint or a trained hf_frozenlm model as --trunk.")
        model.freeze_trunk()
    processor = task.make_processor(model, data, model_args)

    base_reference = None
    if model_args.lora_r:
        # The adapters need their base: the freshly built model (frozen LLM layers, untrained rest), saved once
        # beside the adapters as `base/`, where `merge` and `evaluate` find it.
        base_reference = os.path.join(output_dir, "base")
        if training_args.process_index == 0 and resume is None:
            model.save_pretrained(base_reference)
            processor.save_pretrained(base_reference)
        model = apply_lora(model, model_args)
        model.peft_config["default"].base_model_name_or_path = "base"
        if training_args.should_log:
            model.print_trainable_parameters()

    if data.info.get("streaming"):
        # Each rank reads its own shards of the stream (accelerate would otherwise read all batches on rank 0 and
        # send them out: one process decoding for every GPU).
        training_args.accelerator_config.dispatch_batches = False
    randomness = ExampleRandomness(training_args.seed)
    data.splits["train"] = with_example_ids(data.splits["train"])
    train_collator, eval_collator = task.collators(unwrap(model), processor, randomness, data)
    train_dataset = data.splits["train"]
    if data_args.repeated_aug:
        from ..data.repeated_augmentation import RepeatedAugmentationDataset

        train_dataset = RepeatedAugmentationDataset(train_dataset, data_args.repeated_aug_repeats)
    trainer = FrozenLMTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=data.splits["validation"],
        data_collator=train_collator,
        eval_data_collator=eval_collator,
        compute_metrics=task.compute_metrics(unwrap(model), data),
        preprocess_logits_for_metrics=task.preprocess_logits_for_metrics(),
        mixer=task.mixer(model_args),
        randomness=randomness,
        layer_decay=run_args.layer_decay,
        block_linear_lr_scale=(run_args.block_linear_lr / training_args.learning_rate
                               if run_args.block_linear_lr is not None else run_args.block_linear_lr_scale),
        repeated_augmentation=data_args.repeated_aug_repeats if data_args.repeated_aug else 0,
    )
    train_result = trainer.train(resume_from_checkpoint=resume)
    check_optimizer_params(trainer.optimizer, model)

    train_split = data.splits["train"]
    if hasattr(train_split, "__len__"):
        train_split = train_split.select(range(min(len(train_split), TRAIN_METRICS_MAX_SAMPLES)))
    else:  # a stream: metrics on its first examples
        from ..data.streaming import first_examples

        train_split = first_examples(train_split, TRAIN_METRICS_MAX_SAMPLES)
    metrics = {
        "task": task.name,
        "dataset": data.name,
        "primary_metric": task.primary_metric,
        "train": {**evaluate_split(trainer, task, model, processor, train_split, "train_eval"),
                  **train_result.metrics},
        "validation": evaluate_split(trainer, task, model, processor, data.splits["validation"], "eval"),
        "test": evaluate_split(trainer, task, model, processor, data.splits["test"], "test"),
    }
    if "test_views" in data.info:  # video: the clips x crops behind the validation and test numbers
        metrics["test_views"] = data.info["test_views"]
    trainer.save_model(output_dir)  # every rank calls it (FSDP/DeepSpeed gather); only rank 0 writes
    if trainer.is_world_process_zero():
        write_run_folder(arguments, trainer, unwrap(model), processor, data, metrics, base_reference)
        headline = metrics["test"].get(task.primary_metric, float("nan"))
        print(f"\nRun folder: {output_dir}\ntest {task.primary_metric} {headline:.4f} "
              f"(validation {metrics['validation'].get(task.primary_metric, float('nan')):.4f}), "
              f"{metrics['train'].get('train_runtime', float('nan')):.0f} s of training")
    return metrics


def evaluate_model(task, model, processor, split, batch_size: int = 256, prefix: str = "test", data=None) -> dict:
    """The task's metrics of a trained model on one split (what `hf-frozenlm evaluate` prints); `data` (its
    TaskData) carries evaluation options such as video test views."""
    from transformers import TrainingArguments

    collator = task.collators(unwrap(model), processor, data=data)[1]
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch, per_device_eval_batch_size=batch_size, report_to="none", remove_unused_columns=False,
            label_names=["labels"], use_cpu=not torch.cuda.is_available(),
        )
        trainer = FrozenLMTrainer(
            model=model, args=args, data_collator=collator, eval_data_collator=collator,
            compute_metrics=task.compute_metrics(unwrap(model)),
            preprocess_logits_for_metrics=task.preprocess_logits_for_metrics(),
        )
        return evaluate_split(trainer, task, model, processor, split, prefix)
