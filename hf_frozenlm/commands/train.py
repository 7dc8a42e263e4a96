"""`hf-frozenlm train`: train a ViT + frozen LLM block classifier with transformers' Trainer.

With no arguments it runs the main job offline: the builtin handwritten digits, a small ViT sized for 8x8
images, SmolLM2-135M's last layer. Every TrainingArguments option is accepted as transformers spells it.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from dataclasses import asdict

import torch

logger = logging.getLogger("hf_frozenlm.train")

# The main job's recipe (overridable by the matching TrainingArguments option). Measured on 2 CPU cores:
# see README.md (Training).
MAIN_JOB_DEFAULTS = dict(
    num_train_epochs=10,
    per_device_train_batch_size=64,
    per_device_eval_batch_size=256,
    learning_rate=1e-3,
    weight_decay=0.05,
    lr_scheduler_type="cosine",
    warmup_steps=0.1,  # < 1: a fraction of the total steps
    label_smoothing_factor=0.1,
    eval_strategy="epoch",
    save_strategy="epoch",
    save_total_limit=1,
    logging_steps=10,
    report_to="none",
    remove_unused_columns=False,  # set_transform needs the raw image column
    label_names=["labels"],
    ddp_find_unused_parameters=False,  # every trainable parameter is used; the frozen ones are not registered
    dataloader_num_workers=0,
    seed=42,
)

TRAIN_METRICS_MAX_SAMPLES = 5000  # train-split metrics are measured on at most this many images


def build_parser():
    from transformers import HfArgumentParser, TrainingArguments

    from ..data import DataArguments
    from ..training import ModelArguments, RunArguments

    parser = HfArgumentParser((ModelArguments, DataArguments, RunArguments, TrainingArguments),
                              prog="hf-frozenlm train", description=__doc__.split("\n\n")[0])
    cpu_only = not torch.cuda.is_available()
    # bf16 autocast where the hardware has bf16 matmuls (GPUs; CPUs with AMX or AVX512-BF16, several times faster
    # than fp32 there); fp32 elsewhere, where emulated bf16 would be slower.
    bf16 = torch.cuda.is_bf16_supported() if not cpu_only else _cpu_has_bf16_matmul()
    parser.set_defaults(**MAIN_JOB_DEFAULTS, use_cpu=cpu_only, bf16=bf16)
    return parser


def _cpu_has_bf16_matmul() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = set(next((line for line in handle if line.startswith("flags")), "").split())
    except OSError:
        return False
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def default_output_dir(model_args, data_args) -> str:
    dataset = data_args.dataset.replace("imagefolder:", "").rstrip("/").split("/")[-1] or "dataset"
    vision = os.path.basename(model_args.vision.rstrip("/"))
    suffix = f"-lora{model_args.lora_r}" if model_args.lora_r else ""
    return os.path.join("runs", f"{dataset}-{vision}-{model_args.variant}{suffix}")


def _given(argv: list[str], option: str) -> bool:
    spellings = (f"--{option}", f"--{option.replace('_', '-')}")
    return any(arg == s or arg.startswith(s + "=") for arg in argv for s in spellings)


def check_output_dir(output_dir: str, overwrite: bool, resuming: bool) -> None:
    """Refuse to write into a non-empty folder unless told to (or resuming a run in it)."""
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite and not resuming:
        raise SystemExit(
            f"hf-frozenlm train: the output folder {output_dir!r} exists and is not empty. Pass --output_dir "
            "with a new folder, --overwrite_output_dir to write into it, or --resume_from_checkpoint to continue it."
        )


def main(argv: list[str]) -> int:
    from transformers import set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from ..data import DataError, load_image_classification_data, make_transform, use_augmentation
    from ..metrics import classification_metrics
    from ..processing import image_processor_for
    from ..training import (FrozenLMTrainer, apply_lora, build_model, check_optimizer_params, freeze_trunk,
                            is_saved_frozenlm_model)

    parser = build_parser()
    model_args, data_args, run_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO,
                        stream=sys.stdout)
    if not training_args.should_log:
        logging.getLogger("hf_frozenlm").setLevel(logging.WARNING)
        logger.setLevel(logging.WARNING)
    if not _given(argv, "output_dir"):
        training_args.output_dir = default_output_dir(model_args, data_args)
        if run_args.task != "image-classification":
            training_args.output_dir = os.path.join("runs", run_args.task)
    output_dir = training_args.output_dir

    resume = training_args.resume_from_checkpoint
    if resume in ("last", "True", "true"):
        resume = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if resume is None:
            raise SystemExit(f"hf-frozenlm train: no checkpoint-* folder in {output_dir!r} to resume from.")
    check_output_dir(output_dir, run_args.overwrite_output_dir, resuming=resume is not None)
    # Every rank checks before any rank writes.
    with training_args.main_process_first(desc="checking the output folder"):
        pass

    if training_args.use_cpu or not torch.cuda.is_available():
        # One thread by default: the main job's matmuls are too small to gain from more, and on a shared CPU extra
        # threads spin against other processes (measured on 2 busy cores: 1.5 s/step with 1 thread, 12 s with 2).
        threads = run_args.cpu_threads or int(os.environ.get("OMP_NUM_THREADS") or 1)
        torch.set_num_threads(threads)
    set_seed(training_args.seed)
    if run_args.task != "image-classification":
        from ..tasks import run_task

        run_task(run_args.task, model_args, data_args, training_args)
        return 0
    try:
        with training_args.main_process_first(desc="loading the dataset"):
            data = load_image_classification_data(data_args)
    except DataError as error:
        raise SystemExit(f"hf-frozenlm train: {error}") from None
    logger.info("Dataset %s: %s; %d classes%s", data.name,
                ", ".join(f"{k} {len(v)}" for k, v in data.splits.items()), data.num_labels,
                f"; {data.skipped_images} unreadable image(s) skipped" if data.skipped_images else "")

    model = build_model(model_args, data.id2label, data_args.dataset)
    model.config.problem_type = "single_label_classification"
    if model_args.freeze_vision:
        if model_args.vision in ("vit-tiny", "vit-small", "vit-base"):
            logger.warning("--freeze-vision with a preset keeps a randomly initialised trunk frozen; pass a "
                           "pretrained ViT checkpoint or a trained hf_frozenlm model as --vision.")
        freeze_trunk(model)
    processor = image_processor_for(model.config, source=model_args.vision)

    base_reference = None
    if model_args.lora_r:
        # The adapters need their base: a trained model folder used as is, otherwise the freshly built model
        # (frozen LLM layers, untrained rest), saved once beside the adapters.
        unchanged_base = os.path.isdir(model_args.vision) and is_saved_frozenlm_model(model_args.vision) and \
            model.config.num_labels == len(data.id2label) and not model_args.freeze_vision
        if unchanged_base:
            base_reference = os.path.abspath(model_args.vision)
        else:
            base_reference = os.path.join(output_dir, "base")
            if training_args.process_index == 0 and resume is None:
                model.save_pretrained(base_reference)
                processor.save_pretrained(base_reference)
        model = apply_lora(model, model_args)
        model.peft_config["default"].base_model_name_or_path = (
            "base" if base_reference == os.path.join(output_dir, "base") else base_reference
        )
        if training_args.should_log:
            model.print_trainable_parameters()

    frozen_before = {name: p.detach().clone() for name, p in model.named_parameters()
                     if ".frozen_lm.layers." in name and not p.requires_grad}

    augment = None
    if use_augmentation(data_args):
        from ..data import RandomResizedCropFlip

        augment = RandomResizedCropFlip(size=processor.size["height"])
    train_dataset = data.splits["train"].with_transform(make_transform(processor, augment))
    eval_transform = make_transform(processor)
    validation = data.splits["validation"].with_transform(eval_transform)
    test = data.splits["test"].with_transform(eval_transform)

    trainer = FrozenLMTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=validation,
        processing_class=processor,
        compute_metrics=classification_metrics(data.num_labels),
        mixup_alpha=model_args.mixup,
        cutmix_alpha=model_args.cutmix,
    )
    train_result = trainer.train(resume_from_checkpoint=resume)
    check_optimizer_params(trainer.optimizer, model)
    for name, parameter in model.named_parameters():
        if name in frozen_before and not torch.equal(parameter.detach(), frozen_before[name]):
            raise AssertionError(f"The frozen LLM tensor {name} changed during training.")

    train_eval = data.splits["train"]
    train_eval = train_eval.select(range(min(len(train_eval), TRAIN_METRICS_MAX_SAMPLES))).with_transform(eval_transform)
    metrics = {
        "train": {**_strip(trainer.evaluate(train_eval, metric_key_prefix="train_eval"), "train_eval_"),
                  **{k: v for k, v in train_result.metrics.items()}},
        "validation": _strip(trainer.evaluate(validation, metric_key_prefix="eval"), "eval_"),
        "test": _strip(trainer.evaluate(test, metric_key_prefix="test"), "test_"),
    }
    trainer.save_model(output_dir)  # every rank calls it (FSDP/DeepSpeed gather); only rank 0 writes
    if trainer.is_world_process_zero():
        write_run_folder(output_dir, trainer, model, processor, data, metrics, argv,
                         dict(model=asdict(model_args), data=asdict(data_args), run=asdict(run_args),
                              training=training_args.to_dict()),
                         base_reference)
        print(f"\nRun folder: {output_dir}\n"
              f"test accuracy {metrics['test'].get('accuracy', float('nan')):.4f} "
              f"(validation {metrics['validation'].get('accuracy', float('nan')):.4f}), "
              f"{metrics['train'].get('train_runtime', float('nan')):.0f} s of training")
    return 0


def _strip(metrics: dict, prefix: str) -> dict:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in metrics.items()}


def write_run_folder(output_dir, trainer, model, processor, data, metrics, argv, resolved, base_reference) -> None:
    """Everything beside the weights: processor, card, metrics.json, curves, the command and config to reproduce."""
    import transformers

    from .. import __version__
    from ..model_card import build_model_card
    from ..training import plot_training_curves, unwrap

    os.makedirs(output_dir, exist_ok=True)
    processor.save_pretrained(output_dir)
    with open(os.path.join(output_dir, "metrics.json"), "w", encoding="utf-8") as handle:
        json.dump(metrics, handle, indent=2)
    trainer.save_state()
    plot_training_curves(trainer.state.log_history, os.path.join(output_dir, "training_curves.png"))

    world = trainer.args.world_size
    launcher = f"torchrun --nproc_per_node {world} -m hf_frozenlm train" if world > 1 else "hf-frozenlm train"
    command = " ".join([launcher, shlex.join(argv)]).strip()
    resolved = dict(
        command=command, argv=argv, world_size=world, **resolved,
        versions=dict(hf_frozenlm=__version__, transformers=transformers.__version__, torch=torch.__version__),
    )
    with open(os.path.join(output_dir, "run_config.json"), "w", encoding="utf-8") as handle:
        json.dump(resolved, handle, indent=2, default=str)
    with open(os.path.join(output_dir, "reproduce.sh"), "w", encoding="utf-8") as handle:
        handle.write("#!/bin/sh\n# The command that made this folder; the resolved configuration is in run_config.json.\n"
                     f"HF_HUB_OFFLINE=1 {command}\n")

    config = unwrap(model).config
    args = trainer.args
    summary = {
        "dataset": f"{data.name} ({', '.join(f'{k} {len(v)}' for k, v in data.splits.items())} images, "
                   f"{data.num_labels} classes)",
        "epochs": args.num_train_epochs if args.max_steps <= 0 else f"{args.max_steps} steps",
        "optimizer": f"AdamW, lr {args.learning_rate}, weight decay {args.weight_decay} (none on biases, norms, "
                     f"position and CLS embeddings), {getattr(args.lr_scheduler_type, 'value', args.lr_scheduler_type)} "
                     f"schedule, warm-up {args.warmup_steps}{' of the steps' if 0 < args.warmup_steps < 1 else ' steps'}",
        "batch size": f"{args.per_device_train_batch_size} x {world} process(es)",
        "label smoothing": args.label_smoothing_factor,
        "precision": "bf16 autocast" if args.bf16 else ("fp16 autocast" if args.fp16 else "fp32"),
    }
    extra = ""
    if base_reference is not None:
        extra = (
            "## LoRA adapters\n\nThis folder holds peft LoRA adapters on the frozen block (with the trained "
            f"trunk, projections and head as `modules_to_save`); their base model is `{base_reference}`. "
            "Fold them into a plain model that loads without peft:\n\n"
            f"```bash\nhf-frozenlm merge --adapter {output_dir} --output_dir {output_dir}-merged\n```\n"
        )
    card = build_model_card(
        config, metrics=metrics, dataset_name=data.name, model_name=os.path.basename(os.path.abspath(output_dir)),
        command=command, training_summary=summary, extra_sections=extra,
    )
    card.save(os.path.join(output_dir, "README.md"))
