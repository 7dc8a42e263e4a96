"""The options of `hf-frozenlm train` (and `ablate`), for every task: what to build, which data, how to run.

`parse_train_arguments(argv)` reads them with transformers' HfArgumentParser (every TrainingArguments option is
accepted as transformers spells it), applies the common recipe and the task's own defaults under the user's
options, and checks them: bad values and options that do not fit the task raise `UsageError` before anything runs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ..errors import UsageError
from .precision import PRECISIONS, default_precision, use_bf16


@dataclass
class ModelArguments:
    """What to build: the trunk, the LLM block and how much of it trains."""

    trunk: str | None = field(
        default=None,
        metadata={"aliases": ["--vision"],
                  "help": "The trunk: a preset of the task's trunk (vit-tiny/small/base, videomae-small/base, "
                  "pointbert-small, vectornet-base, vilt-b32, ...), a pretrained trunk checkpoint (Hub id or folder), "
                  "or a saved hf_frozenlm model folder of the same task to fine-tune. Default: the task's preset "
                  "sized for its builtin dataset, else its full-size preset."},
    )
    image_size: int | None = field(default=None, metadata={"help": "Resize an image/video preset to this size."})
    patch_size: int | None = field(default=None, metadata={"help": "Patch size of an image/video preset."})
    trunk_layers: int | None = field(
        default=None, metadata={"aliases": ["--vision_layers"], "help": "Number of layers of the trunk preset."}
    )
    trunk_kwargs: str | None = field(
        default=None,
        metadata={"help": 'Other trunk fields as JSON, e.g. \'{"num_groups": 32, "group_size": 16}\'.'},
    )
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
        metadata={"help": "llm (frozen LLM block), mlp (the paper's control), random-llm, none (plain trunk).",
                  "choices": ["llm", "mlp", "random-llm", "none"]},
    )
    llm_dtype: str = field(
        default="float32",
        metadata={"help": "dtype the LLM layers are stored and computed in.",
                  "choices": ["float32", "bfloat16", "float16"]},
    )
    llm_trainable: bool = field(default=False, metadata={"help": "Fine-tune the LLM block (the paper's ablation)."})
    freeze_trunk: bool = field(
        default=False,
        metadata={"aliases": ["--freeze_vision", "--freeze-vision"],
                  "help": "Keep the trunk as loaded: train only the block's two linear layers and the task head."},
    )
    lora_r: int = field(default=0, metadata={"help": "LoRA rank on the LLM block through peft (0: no LoRA)."})
    lora_alpha: float | None = field(default=None, metadata={"help": "LoRA alpha (default: 2 * lora_r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target: str | None = field(
        default=None,
        metadata={"help": "Regex (full match) of module names that get LoRA; default: the block's attention "
                  "projections."},
    )
    mixup: float = field(default=0.0, metadata={"help": "Mixup Beta(alpha, alpha) parameter; 0 disables (images)."})
    cutmix: float = field(default=0.0, metadata={"help": "CutMix Beta(alpha, alpha) parameter; 0 disables (images)."})
    drop_path: float | None = field(
        default=None,
        metadata={"help": "Stochastic depth of the trunk's blocks (timm's --drop_path; linear over depth, DeiT: 0.1 "
                  "for ViT-S). Stored in the model's config as drop_path_rate; identity at evaluation. Default: the "
                  "trunk's own (0, Point-BERT 0.1)."},
    )

    def trunk_overrides(self) -> dict:
        """--trunk_kwargs as a dict (UsageError when it is not a JSON object)."""
        if not self.trunk_kwargs:
            return {}
        try:
            value = json.loads(self.trunk_kwargs)
        except json.JSONDecodeError as error:
            raise UsageError(f"--trunk_kwargs {self.trunk_kwargs!r} is not valid JSON ({error}).") from error
        if not isinstance(value, dict):
            raise UsageError(f"--trunk_kwargs must be a JSON object of trunk fields; got {self.trunk_kwargs!r}.")
        return value


@dataclass
class DataArguments:
    """Where the data comes from and how it is split and augmented."""

    dataset: str | None = field(
        default=None,
        metadata={"help": "The task's builtin (default, offline) or its file formats; see `hf-frozenlm train --task T "
                  "--help` and docs/tasks.md. Image classification: digits, imagefolder:PATH or a Hub dataset name."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Config name of a Hub dataset."})
    train_split: str = field(default="train", metadata={"help": "Name of the training split."})
    validation_split: str | None = field(
        default=None, metadata={"help": "Name of the validation split (default: validation/valid/val/dev if present)."}
    )
    test_split: str | None = field(default=None, metadata={"help": "Name of the test split (default: test if present)."})
    image_column: str | None = field(default=None, metadata={"help": "Image column (default: image or img)."})
    label_column: str | None = field(
        default=None, metadata={"help": "Label column (default: label, labels or fine_label)."}
    )
    validation_fraction: float = field(
        default=0.1, metadata={"help": "Fraction of the training split carved out as validation when there is none."}
    )
    test_fraction: float = field(
        default=0.2, metadata={"help": "Fraction of the training split carved out as test when there is none."}
    )
    split_seed: int = field(default=42, metadata={"help": "Seed of the carved splits (independent of --seed)."})
    strict_images: bool = field(
        default=False, metadata={"help": "Fail on unreadable/corrupt image files instead of skipping them."}
    )
    augment: str = field(
        default="auto",
        metadata={"help": "Training augmentation: auto (the task's choice for its data), on, off.",
                  "choices": ["auto", "on", "off"]},
    )
    scale: list[float] | None = field(
        default=None,
        metadata={"help": "Random-resized-crop area range (timm's --scale), e.g. 0.08 1.0 (DeiT). Default: 0.5 1.0."},
    )
    hflip: float | None = field(
        default=None,
        metadata={"help": "Probability of the horizontal flip that comes with the random-resized crop (timm's --hflip). "
                  "Default 0.5; 0 where a mirror image is another class (digits, text), keeping the crops."},
    )
    aa: str | None = field(
        default=None,
        metadata={"help": "RandAugment in timm's format (images), e.g. rand-m9-mstd0.5-inc1 (DeiT); keys m, n, mstd, "
                  "mmax, p, inc. Applies when augmentation is on."},
    )
    reprob: float = field(
        default=0.0, metadata={"help": "Random-erasing probability (images; DeiT: 0.25), per-pixel N(0, 1) values."}
    )
    repeated_aug: bool = field(
        default=False,
        metadata={"help": "Repeated augmentation (DeiT): each sampled image appears --repeated_aug_repeats times per "
                  "epoch, its copies on different processes."},
    )
    repeated_aug_repeats: int = field(default=3, metadata={"help": "Copies per image with --repeated_aug."})
    streaming: bool = field(
        default=False,
        metadata={"help": "Stream a Hub (or local parquet/arrow) dataset instead of downloading it whole (images): "
                  "needs --max_steps; shards are split across processes and workers."},
    )
    shuffle_buffer_size: int = field(
        default=10000, metadata={"help": "With --streaming: examples in the shuffling buffer."}
    )
    draft_decode: bool = field(
        default=True,
        metadata={"help": "Decode training JPEGs at reduced size when they are at least twice the model's input size "
                  "(PIL draft mode: much less decoding work)."},
    )
    test_views: str = field(
        default="1x1",
        metadata={"help": "Video evaluation views CLIPSxCROPS: 2x3 (VideoMAE's test) scores each video by the mean "
                  "softmax of 2 evenly spaced clips x 3 crops (left/centre/right); 1x1 is one central clip."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training split (debugging)."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Truncate the validation and test splits (debugging)."}
    )


@dataclass
class RunArguments:
    """Which task, and run options that TrainingArguments does not carry."""

    task: str = field(
        default="image-classification",
        metadata={"help": "The task; `hf-frozenlm train --help` lists them. Each has an offline builtin dataset."},
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Write into an existing, non-empty --output_dir (refused otherwise)."}
    )
    cpu_threads: int | None = field(
        default=None,
        metadata={"help": "torch threads per process when training on CPU (default: OMP_NUM_THREADS if set, else 1)."},
    )
    recipe: str | None = field(
        default=None,
        metadata={"help": "A paper recipe as defaults (options given still win): deit (image classification), "
                  "pointbert (point clouds), videomae (video); docs/training.md lists their values."},
    )
    layer_decay: float | None = field(
        default=None,
        metadata={"help": "Layer-wise learning-rate decay over the trunk's depth (VideoMAE: 0.7 ViT-S, 0.75 ViT-B)."},
    )
    block_linear_lr_scale: float = field(
        default=1.0, metadata={"help": "Learning-rate factor of the block's two linear layers (Point-BERT code: 0.5)."}
    )
    block_linear_lr: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the block's two linear layers (the Point-BERT paper text: 5e-5); wins over "
                  "--block_linear_lr_scale."},
    )
    precision: str = field(
        default_factory=default_precision,
        metadata={"help": "auto: bf16 autocast where the hardware multiplies bf16 natively (GPU, AMX, AVX512-BF16), "
                  "fp32 elsewhere; fp32 / bf16 force one (also HF_FROZENLM_PRECISION). --bf16/--fp16 win when given.",
                  "choices": list(PRECISIONS)},
    )


# The recipe every task starts from (a task's `training_defaults` and then the user's options override it).
COMMON_TRAINING_DEFAULTS = dict(
    num_train_epochs=10,
    per_device_train_batch_size=64,
    per_device_eval_batch_size=256,
    learning_rate=1e-3,
    weight_decay=0.05,
    lr_scheduler_type="cosine",
    warmup_steps=0.1,  # < 1: a fraction of the total steps
    label_smoothing_factor=0.0,
    eval_strategy="epoch",
    save_strategy="epoch",
    save_total_limit=1,
    logging_steps=10,
    report_to="none",
    remove_unused_columns=False,  # the collators read the raw columns
    label_names=["labels"],
    ddp_find_unused_parameters=False,  # every trainable parameter is used; the frozen ones are not registered
    dataloader_num_workers=0,
    seed=42,
)


@dataclass
class TrainArguments:
    """Everything one training run is made of (what `train_task` takes)."""

    task: object  # hf_frozenlm.tasks.base.Task
    model: ModelArguments
    data: DataArguments
    run: RunArguments
    training: object  # transformers.TrainingArguments
    argv: list[str] = field(default_factory=list)  # the command line as given (for the run folder, redacted there)


def option_given(argv: list[str], option: str) -> bool:
    """Whether `--option` (or `--option-with-dashes`) appears in argv."""
    spellings = (f"--{option}", f"--{option.replace('_', '-')}")
    return any(arg == s or arg.startswith(s + "=") for arg in argv for s in spellings)


def _parser(defaults: dict):
    from transformers import HfArgumentParser, TrainingArguments

    class Parser(HfArgumentParser):
        def error(self, message):  # argparse would exit; the library reports, the CLI decides
            raise UsageError(f"{self.prog}: {message}")

    parser = Parser((ModelArguments, DataArguments, RunArguments, TrainingArguments), prog="hf-frozenlm train")
    parser.set_defaults(**defaults)
    return parser


def build_train_parser(task_name: str = "image-classification", recipe: dict | None = None):
    """The HfArgumentParser of `train` with the common, the task's and a recipe's defaults (for --help and the
    commands)."""
    import torch

    from ..tasks import get_task

    task = get_task(task_name)
    return _parser({**COMMON_TRAINING_DEFAULTS, **task.training_defaults, **(recipe or {}),
                    "use_cpu": not torch.cuda.is_available()})


def parse_train_arguments(argv: list[str]) -> TrainArguments:
    """argv -> TrainArguments with defaults resolved and every option checked (UsageError otherwise)."""
    import argparse

    from ..tasks import TASK_NAMES, get_task

    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--task", default="image-classification")
    peek.add_argument("--precision", default=None)
    peek.add_argument("--use_cpu", "--use-cpu", default=None)
    peek.add_argument("--recipe", default=None)
    peek.add_argument("--trunk", "--vision", default=None)
    peek.add_argument("--dataset", default=None)
    known = peek.parse_known_args(argv)[0]
    task_name = known.task
    if known.recipe and not option_given(argv, "task"):
        from .recipes import get_recipe

        task_name = get_recipe(known.recipe).task  # `--recipe deit` alone means image classification
    if task_name not in TASK_NAMES:
        raise UsageError(f"--task {task_name!r} is not a task; tasks: {', '.join(TASK_NAMES)}.")
    task = get_task(task_name)
    from .recipes import recipe_defaults

    # The trunk the run will build, as Task.trunk picks it (a recipe's values may depend on its size).
    builtin = task.is_builtin_name(known.dataset or task.builtin)
    trunk = known.trunk or (task.builtin_trunk if builtin else task.default_trunk)
    recipe = recipe_defaults(known.recipe, task_name, trunk)
    parse_argv = list(argv) if option_given(argv, "task") or task_name == known.task else [*argv, "--task", task_name]
    if not option_given(argv, "bf16") and not option_given(argv, "fp16"):
        # The precision switch becomes --bf16 before TrainingArguments is built: it decides mixed precision (the
        # autocast Trainer runs under) at construction, so setting .bf16 afterwards would change nothing.
        precision = known.precision or default_precision()
        if precision not in PRECISIONS:
            raise UsageError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}.")
        import torch

        use_cpu = str(known.use_cpu).lower() in ("true", "1", "yes") if known.use_cpu is not None else \
            not torch.cuda.is_available()
        parse_argv += ["--bf16", "true" if use_bf16(precision, use_cpu) else "false"]
    try:
        parser = build_train_parser(task_name, recipe)
        model_args, data_args, run_args, training_args = parser.parse_args_into_dataclasses(args=parse_argv)
    except ValueError as error:  # HfArgumentParser: unknown options; TrainingArguments: values it rejects
        raise UsageError(f"hf-frozenlm train: {error}") from error
    if not option_given(argv, "output_dir"):
        training_args.output_dir = default_output_dir(task, model_args, data_args)
    arguments = TrainArguments(task, model_args, data_args, run_args, training_args, list(argv))
    check_train_arguments(arguments)
    return arguments


def default_output_dir(task, model_args: ModelArguments, data_args: DataArguments) -> str:
    """runs/<dataset>-<trunk>-<variant>[-lora<r>]: the folder a run writes when --output_dir is not given."""
    dataset = task.dataset_name(data_args)
    kind, _, location = dataset.partition(":")
    # "road-scenes:300" (a builtin's size) keeps the builtin's name; "imagefolder:PATH" takes the folder's.
    dataset = kind if kind == task.builtin or not location else location.split(",")[0].rstrip("/").split("/")[-1]
    dataset = dataset or "dataset"
    trunk, _ = task.trunk(model_args, data_args)
    trunk = os.path.basename(str(trunk).rstrip("/")) if isinstance(trunk, str) else "trunk"
    suffix = f"-lora{model_args.lora_r}" if model_args.lora_r else ""
    return os.path.join("runs", f"{dataset}-{trunk}-{model_args.variant}{suffix}")


def check_train_arguments(arguments: TrainArguments) -> None:
    """Refuse option values that would crash later or silently train nothing, with what to pass instead."""
    task, model, run, training = arguments.task, arguments.model, arguments.run, arguments.training
    if training.learning_rate <= 0:
        raise UsageError(f"--learning_rate {training.learning_rate}: pass a positive learning rate, e.g. 1e-3.")
    if training.max_steps <= 0 and training.num_train_epochs <= 0:
        raise UsageError(
            f"--num_train_epochs {training.num_train_epochs}: pass a positive number of epochs (or --max_steps N), "
            "or nothing would be trained."
        )
    for option in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if getattr(training, option) < 1:
            raise UsageError(f"--{option} {getattr(training, option)}: pass 1 or more.")
    if training.weight_decay < 0 or training.warmup_steps < 0:
        raise UsageError("--weight_decay and --warmup_steps must not be negative.")
    if not 0 <= training.label_smoothing_factor < 1:
        raise UsageError(f"--label_smoothing_factor {training.label_smoothing_factor}: pass a value in [0, 1).")
    if training.label_smoothing_factor > 0 and not task.label_smoothing_applies:
        raise UsageError(
            f"--label_smoothing_factor applies to class labels; {task.name} labels are {task.model_class.output_kind}. "
            "Leave it at 0 for this task."
        )
    if (model.mixup or model.cutmix) and not task.supports_mixup:
        raise UsageError(f"--mixup / --cutmix mix images; {task.name} has no images to mix.")
    if model.mixup < 0 or model.cutmix < 0:
        raise UsageError("--mixup and --cutmix take a Beta parameter >= 0 (0 disables).")
    check_recipe_options(task, model, arguments.data, run, training)
    if model.lora_r < 0:
        raise UsageError(f"--lora_r {model.lora_r}: pass a positive rank, or 0 for no LoRA.")
    if model.lora_r and model.variant not in ("llm", "random-llm"):
        raise UsageError(f"--lora_r needs an LLM block; variant {model.variant!r} has none.")
    if model.lora_r and model.llm_trainable:
        raise UsageError("--lora_r and --llm_trainable both train the LLM block; pick one.")
    if run.cpu_threads is not None and run.cpu_threads < 1:
        raise UsageError(f"--cpu_threads {run.cpu_threads}: pass 1 or more.")
    if training.push_to_hub:
        raise UsageError("--push_to_hub: publish a finished run with `hf-frozenlm push RUN_DIR REPO_ID`, which checks "
                         "the folder, writes the model card and keeps secrets out of the upload.")
    output_dir = training.output_dir
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UsageError(f"--output_dir {output_dir!r} is a file, not a folder; pass a folder path.")
    task.trunk(model, arguments.data)  # unknown trunk fields and bad --trunk_kwargs fail now, not mid-run


def check_recipe_options(task, model: ModelArguments, data: DataArguments, run: RunArguments, training) -> None:
    """The recipe options (augmentation, drop path, learning-rate scales, streaming) fit the task and are in range."""
    image_options = [f"--{name}" for name, given in (("aa", data.aa), ("reprob", data.reprob), ("scale", data.scale),
                                                     ("hflip", data.hflip is not None)) if given]
    if image_options and not task.supports_mixup:
        raise UsageError(f"{', '.join(image_options)} augment images of image classification; {task.name} has its "
                         "own augmentation. Leave them out.")
    if data.test_views.strip().lower() != "1x1" and task.name != "video-classification":
        raise UsageError(f"--test_views {data.test_views} averages views of videos (video-classification); "
                         f"{task.name} scores one view per example. Leave it out.")
    if data.aa:
        from ..data.rand_augment import parse_rand_augment

        parse_rand_augment(data.aa)
    if data.hflip is not None and not 0 <= data.hflip <= 1:
        raise UsageError(f"--hflip {data.hflip}: pass a probability in [0, 1] (0: crops without flips).")
    if not 0 <= data.reprob <= 1:
        raise UsageError(f"--reprob {data.reprob}: pass a probability in [0, 1] (DeiT: 0.25).")
    if data.scale is not None and not (len(data.scale) == 2 and 0 < data.scale[0] <= data.scale[1] <= 1):
        raise UsageError(f"--scale {data.scale}: pass two area fractions MIN MAX with 0 < MIN <= MAX <= 1, "
                         "e.g. 0.08 1.0.")
    if data.repeated_aug and data.repeated_aug_repeats < 1:
        raise UsageError(f"--repeated_aug_repeats {data.repeated_aug_repeats}: pass 1 or more (DeiT: 3).")
    if data.repeated_aug and data.streaming:
        raise UsageError("--repeated_aug samples a dataset of known length; a --streaming dataset has none. Drop one.")
    if data.streaming and training.max_steps <= 0:
        raise UsageError("--streaming datasets have no length, so epochs are unknown: pass --max_steps N.")
    if data.streaming and task.name != "image-classification":
        raise UsageError(f"--streaming reads image-classification datasets; {task.name} loads its data whole.")
    if model.drop_path is not None:
        if not 0 <= model.drop_path < 1:
            raise UsageError(f"--drop_path {model.drop_path}: pass a probability in [0, 1), e.g. 0.1.")
        if "drop_path_rate" not in task.model_class.config_class.__dataclass_fields__:
            raise UsageError(f"--drop_path: the {task.name} trunk has no stochastic depth (ViT, VideoMAE and "
                             "Point-BERT trunks have). Leave it out.")
    if run.layer_decay is not None and not 0 < run.layer_decay <= 1:
        raise UsageError(f"--layer_decay {run.layer_decay}: pass a factor in (0, 1], e.g. 0.75.")
    if run.block_linear_lr_scale <= 0 or (run.block_linear_lr is not None and run.block_linear_lr <= 0):
        raise UsageError("--block_linear_lr_scale and --block_linear_lr must be positive.")
    if (run.block_linear_lr is not None or run.block_linear_lr_scale != 1.0) and model.variant == "none":
        raise UsageError("--block_linear_lr(_scale) sets the rate of the block's linears; variant none has no block.")
