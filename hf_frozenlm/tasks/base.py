"""The task contract: everything the commands need to know about one task, in one place.

A task module (one per task, in this package) defines a `Task` subclass and an instance named `TASK`. The commands
never special-case a task: `train` builds the model, data, processor and collators through it; `evaluate` scores
with its metrics; `predict` reads inputs and prints results through it; `push` takes its card fields; `analyze`
finds its token grid; `ablate` reads its primary metric. Adding a task means writing one module here (and, for a new
trunk, its Hub-portable model files in `modeling/`).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from ..errors import DataError, UsageError


@dataclass
class TaskData:
    """One dataset, ready for a task: `splits` is a `datasets.DatasetDict` with train / validation / test; `id2label`
    names the classes (or answers) where the labels are classes; `info` holds what else the model must know about
    the data (e.g. point feature channels)."""

    splits: Any
    name: str
    id2label: dict[int, str] | None = None
    info: dict = field(default_factory=dict)
    skipped: int = 0  # unreadable examples dropped while loading

    @property
    def label2id(self) -> dict[str, int]:
        return {label: index for index, label in (self.id2label or {}).items()}

    def describe(self) -> str:
        sizes = ", ".join(f"{name} {len(split) if hasattr(split, '__len__') else 'streamed'}"
                          for name, split in self.splits.items())
        classes = f", {len(self.id2label)} classes" if self.id2label else ""
        return f"{self.name} ({sizes}{classes})"


@dataclass
class TokenGrid:
    """Where a model's frozen block sees its tokens and how they tile the input (for the paper's section-4 maps).

    grid_shape: (H, W) image patches, (T, H, W) video tubelets, or (G,) for a set (point groups); the grid tokens are
    row-major over it and follow `num_prefix_tokens` tokens (CLS, text) that the maps leave out.
    positions: for a set, where each token sits in the input, (B, G, 2 or 3), to draw its map; None for grids.
    """

    block: torch.nn.Module
    trunk_attention: torch.nn.Module | None
    num_prefix_tokens: int
    grid_shape: tuple[int, ...]
    positions: torch.Tensor | None = None

    @property
    def num_grid_tokens(self) -> int:
        return int(np.prod(self.grid_shape))

    def stages(self) -> tuple[str, ...]:
        """The stages this block has: all five for an LLM block, no LLM internals for the MLP control."""
        if self.block.variant == "none":
            return ("trunk",)
        if self.block.variant == "mlp":
            return ("trunk", "llm_in", "llm_out")
        return ("trunk", "llm_in", "llm_attn", "llm_ffn", "llm_out")

    def grid_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) values over all tokens -> (B, N, ...) over the grid tokens only (prefix tokens dropped)."""
        grid = tokens[:, self.num_prefix_tokens:self.num_prefix_tokens + self.num_grid_tokens]
        if grid.shape[1] != self.num_grid_tokens:
            raise ValueError(
                f"The model produced {tokens.shape[1] - self.num_prefix_tokens} grid tokens after "
                f"{self.num_prefix_tokens} prefix token(s), but the token grid {self.grid_shape} has "
                f"{self.num_grid_tokens}: the grid description does not match this input."
            )
        return grid

    def to_grid(self, values: torch.Tensor) -> torch.Tensor:
        """(B, N) values over the grid tokens -> (B, *grid_shape)."""
        return values.reshape(values.shape[0], *self.grid_shape)


class Task:
    """The contract of one task. Class attributes describe it; methods do the task-specific work.

    Subclasses set every attribute without a default and implement the methods that raise NotImplementedError.
    """

    name: ClassVar[str]  # "image-classification": the --task value
    position: ClassVar[int]  # order in listings and the README table
    model_class: ClassVar[type]  # the FrozenLMPreTrainedModel head
    default_trunk: ClassVar[str]  # the trunk preset for real data
    builtin: ClassVar[str]  # the offline dataset `--dataset` defaults to
    builtin_trunk: ClassVar[str]  # the trunk preset sized for the builtin
    builtin_trunk_kwargs: ClassVar[dict] = {}  # how the builtin resizes that preset
    dataset_help: ClassVar[str]  # what --dataset takes
    input_help: ClassVar[str]  # what `predict` reads
    pipeline_tag: ClassVar[str]  # the Hub's pipeline tag (and transformers' or our pipeline task)
    summary: ClassVar[str]  # one line for cards and listings: what the model does
    primary_metric: ClassVar[str]  # the metric that ranks runs (ablate, card headline, best checkpoint)
    greater_is_better: ClassVar[bool] = True
    labels_are_classes: ClassVar[bool] = True  # a saved model's classifier is reset for a new label set
    # Trainer's LabelSmoother indexes log-probabilities by integer class labels: it needs classes and cross-entropy.
    label_smoothing_applies: ClassVar[bool] = True
    supports_mixup: ClassVar[bool] = False  # mixup / cutmix make sense (images)
    # What a user installs to run a saved model of this task with transformers alone (the card's snippet).
    requirements: ClassVar[tuple[str, ...]] = ("torch", "transformers", "numpy", "pillow")
    # TrainingArguments values of this task's builtin recipe, on top of the common ones (the user's options win).
    training_defaults: ClassVar[dict] = {}

    # -- data ---------------------------------------------------------------------------------------------------
    def load_data(self, data_args) -> TaskData:
        """The dataset `data_args.dataset` names (the builtin by default) as a TaskData; DataError when unusable."""
        raise NotImplementedError

    def dataset_name(self, data_args) -> str:
        return data_args.dataset or self.builtin

    def is_builtin(self, data_args) -> bool:
        return self.is_builtin_name(self.dataset_name(data_args))

    def is_builtin_name(self, dataset: str) -> bool:
        # BUILTIN:N (where a task offers it) is the builtin at another size: the same trunk preset suits it.
        return dataset.split(":", 1)[0] == self.builtin

    # -- model ------------------------------------------------------------------------------------------------
    def trunk(self, model_args, data_args) -> tuple[Any, dict]:
        """(trunk argument for `from_parts`, trunk_kwargs): the user's, else the builtin's preset or the default."""
        kwargs = {}
        if model_args.trunk is not None:
            trunk = model_args.trunk
        elif self.is_builtin(data_args):
            trunk, kwargs = self.builtin_trunk, dict(self.builtin_trunk_kwargs)
        else:
            trunk = self.default_trunk
        for key, value in (("image_size", model_args.image_size), ("patch_size", model_args.patch_size),
                           ("num_hidden_layers", model_args.trunk_layers)):
            if value is not None:
                kwargs[key] = value
        kwargs.update(model_args.trunk_overrides())
        known = self.trunk_fields()
        unknown = sorted(key for key in kwargs if key not in known)
        if unknown:
            raise UsageError(
                f"{self.name}'s trunk has no field(s) {unknown} (from --image_size / --patch_size / --trunk_kwargs); "
                f"its fields include {', '.join(sorted(known)[:12])}, ..."
            )
        return trunk, kwargs

    def trunk_fields(self) -> set[str]:
        """Field names a trunk preset of this task can be resized with."""
        model_class = self.model_class
        if model_class.trunk_config_class is not None:
            return set(model_class.trunk_config_class().to_dict())
        return set(model_class.config_class(variant="none").to_dict())

    def model_config_kwargs(self, data: TaskData) -> dict:
        """Config fields the data decides (labels, answer vocabulary, feature channels)."""
        return {"id2label": dict(data.id2label)} if data.id2label else {}

    def build_model(self, model_args, data_args, data: TaskData):
        """A new model from parts, or a saved model of this task to fine-tune (its classifier reset for new labels)."""
        from ..training.loading import is_model_folder

        trunk, trunk_kwargs = self.trunk(model_args, data_args)
        # Stochastic depth is a config value, so it travels with the saved model (and is the identity at evaluation).
        drop_path = getattr(model_args, "drop_path", None)
        drop_path = {"drop_path_rate": drop_path} if drop_path is not None else {}
        if isinstance(trunk, str) and is_model_folder(trunk):
            return self.load_for_finetuning(trunk, data, **drop_path)
        if drop_path and not self.model_class.trunk_config_key:  # a trunk whose fields are the config's own
            trunk_kwargs, drop_path = {**trunk_kwargs, **drop_path}, {}
        llm = None if model_args.variant == "none" else model_args.llm
        return self.model_class.from_parts(
            trunk, llm, llm_layers=model_args.llm_layers, variant=model_args.variant, trunk_kwargs=trunk_kwargs or None,
            llm_dtype=model_args.llm_dtype, llm_trainable=model_args.llm_trainable, **self.model_config_kwargs(data),
            **drop_path,
        )

    def load_for_finetuning(self, folder: str, data: TaskData, **config_overrides):
        """A saved model of this task as the starting point; a new label set replaces its classifier."""
        from ..training.loading import task_of_folder

        task = task_of_folder(folder)
        if task.name != self.name:
            raise UsageError(f"{folder} holds a {task.name} model; --task {self.name} cannot fine-tune it.")
        model = self.model_class.from_pretrained(folder, **config_overrides)
        saved_labels = {int(index): str(label) for index, label in model.config.id2label.items()}
        if self.labels_are_classes and data.id2label and saved_labels != dict(data.id2label):
            model.reset_classifier(len(data.id2label), data.id2label)
        return model

    # -- processing -------------------------------------------------------------------------------------------
    def make_processor(self, model, data: TaskData, model_args=None):
        """The processor saved beside the model (image processor, feature extractor, tokenizer...)."""
        raise NotImplementedError

    def load_processor(self, folder: str):
        """The processor saved in a model folder."""
        raise NotImplementedError

    def collators(self, model, processor, randomness=0, data: TaskData | None = None) -> tuple[Callable, Callable]:
        """(training collator, evaluation collator): examples -> model inputs with labels. `data` (None when only
        evaluating) may carry what augmentation suits it. Training collators draw augmentation only from
        `ExampleRandomness.of(randomness).rng(example)` (hf_frozenlm/data/randomness.py): one generator per seed,
        epoch and example, so a resumed run augments exactly as the uninterrupted one. Evaluation is deterministic."""
        raise NotImplementedError

    def mixer(self, model_args):
        """The batch mixer of the training loss (mixup / cutmix), or None."""
        return None

    # -- metrics ----------------------------------------------------------------------------------------------
    def compute_metrics(self, model, data: TaskData | None = None) -> Callable | None:
        """Trainer's compute_metrics(EvalPrediction) -> {name: float}, or None when `score_split` does the work."""
        raise NotImplementedError

    def preprocess_logits_for_metrics(self) -> Callable | None:
        return None

    def prepare_for_evaluation(self, model, data: TaskData) -> TaskData:
        """The dataset as the trained model sees it (classification maps class names onto the model's ids)."""
        return data

    def score_split(self, model, processor, split) -> dict[str, float]:
        """Metrics that need more than per-batch predictions (e.g. retrieval ranks every image against every text)."""
        return {}

    # -- predict ----------------------------------------------------------------------------------------------
    def add_predict_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Task-specific options of `hf-frozenlm predict` (--question, --texts, --top_k, ...)."""
        parser.add_argument("--top_k", "--top-k", type=int, default=5, help="how many labels per input")

    def check_predict_options(self, options) -> None:
        if getattr(options, "top_k", 1) is not None and getattr(options, "top_k", 1) < 1:
            raise UsageError(f"--top_k {options.top_k}: pass a positive number of labels to show.")

    def read_inputs(self, paths: list[str], options) -> list:
        """The inputs `predict` was given, read from files; DataError naming the file that cannot be read."""
        raise NotImplementedError

    def predict(self, model, processor, inputs: list, options) -> list[dict]:
        """One JSON-serialisable result per input."""
        raise NotImplementedError

    def format_prediction(self, result: dict) -> str:
        """A result as text lines."""
        lines = [str(result["input"])]
        for rank, prediction in enumerate(result["predictions"], 1):
            lines.append(f"  {rank}. {prediction['label']:<24} {prediction['score']:.4f}")
        return "\n".join(lines)

    def write_prediction_files(self, results: list[dict], inputs: list, options) -> list[str]:
        """Files `predict` writes beside its text output (motion: a PNG of each scene). Default: none."""
        return []

    def write_examples(self, data: TaskData, folder: str, count: int = 2) -> tuple[list[str], list[str]]:
        """Write the first `count` test-split examples as the files `predict` reads; returns (paths, extra predict
        options such as ["--question", "..."]). Used by the docs, the Space and the end-to-end tests."""
        os.makedirs(folder, exist_ok=True)
        split = data.splits["test"]
        examples = [split[index] for index in range(min(count, len(split)))]
        paths = [self.write_example(example, os.path.join(folder, self.example_stem(example, index, data)))
                 for index, example in enumerate(examples)]
        return paths, self.example_options(examples)

    def example_stem(self, example: dict, index: int, data: TaskData) -> str:
        """An example file's name without extension: example_<index>_<label> (the label, where there is one, lets a
        reader check the prediction)."""
        if "label" not in example or not data.id2label:
            return f"example_{index}"
        label = str(data.id2label[int(example["label"])]).replace(" ", "-").replace(os.sep, "-")
        return f"example_{index}_{label}"

    def write_example(self, example: dict, stem: str) -> str:
        """Write one example as `stem` plus this task's input extension; returns the path."""
        raise NotImplementedError

    def example_options(self, examples: list[dict]) -> list[str]:
        """Predict options the written examples need beside their files (e.g. their questions)."""
        return []

    # -- publishing -------------------------------------------------------------------------------------------
    def usage_snippet(self, repo_id: str, config) -> str:
        """Python that loads the published model with transformers alone and runs it on a made-up input."""
        raise NotImplementedError

    def baseline(self, data: TaskData) -> tuple[str, dict[str, float]]:
        """(name, metrics) of a trivial predictor on the test split: the score a model must beat to have learned."""
        raise NotImplementedError

    def card_metrics(self, metrics: dict) -> dict[str, float]:
        """The metrics worth a card's model-index, for one split (default: every number but losses and timings)."""
        skip = ("loss", "runtime", "per_second", "epoch", "steps", "preparation_time", "flos")
        return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not any(s in k for s in skip)}

    # -- analysis ---------------------------------------------------------------------------------------------
    def token_grid(self, model, inputs: dict) -> TokenGrid:
        """How this task's tokens tile its inputs, for the token-activation maps."""
        raise UsageError(f"{self.name} models have no token grid for the activation maps (their tokens are "
                         "neither image patches, video tubelets nor point groups).")

    def analysis_examples(self, data: TaskData, count: int) -> list:
        """A few held-out examples of the dataset for `analyze` (test split)."""
        split = data.splits["test"]
        return [split[i] for i in range(min(count, len(split)))]

    # -- helpers shared by the task modules -------------------------------------------------------------------
    @staticmethod
    def read_json(path: str):
        try:
            with open(path, encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DataError(f"Cannot read {path} as JSON ({error}).") from error

    @staticmethod
    def require_file(path: str) -> str:
        if not os.path.isfile(path):
            raise DataError(f"{path}: no such file.")
        return path


class ClassificationTask(Task):
    """What every task whose labels are classes shares: accuracy and top-5 (scikit-learn), top-k predictions."""

    def compute_metrics(self, model, data: TaskData | None = None) -> Callable:
        from ..metrics import classification_metrics

        return classification_metrics(model.config.num_labels)

    def prepare_for_evaluation(self, model, data: TaskData) -> TaskData:
        """The dataset's class ids mapped onto the model's by class name (a folder may order classes differently)."""
        label2id = {str(name): int(index) for name, index in model.config.label2id.items()}
        if not data.id2label:
            return data
        unknown = sorted(set(map(str, data.id2label.values())) - set(label2id))
        if unknown:
            raise DataError(
                f"The dataset has classes the model does not know: {unknown[:10]}; the model's classes are "
                f"{sorted(label2id)[:10]}{' ...' if len(label2id) > 10 else ''}."
            )
        mapping = {index: label2id[str(name)] for index, name in data.id2label.items()}
        if all(source == target for source, target in mapping.items()):
            return data
        import datasets

        splits = datasets.DatasetDict({
            name: split.map(lambda row: {"label": mapping[int(row["label"])]}, desc="mapping labels")
            for name, split in data.splits.items()
        })
        return TaskData(splits, data.name, dict(model.config.id2label), data.info, data.skipped)

    def baseline(self, data: TaskData) -> tuple[str, dict[str, float]]:
        """Always the training split's most frequent class."""
        from collections import Counter

        majority = Counter(int(label) for label in data.splits["train"]["label"]).most_common(1)[0][0]
        test = [int(label) for label in data.splits["test"]["label"]]
        return "majority class", {self.primary_metric: sum(label == majority for label in test) / len(test)}

    def top_labels(self, logits: torch.Tensor, id2label: dict, top_k: int) -> list[list[dict]]:
        """Per row of (B, C) logits: the top-k {label, score} by softmax probability."""
        probabilities = logits.float().softmax(-1)
        top = probabilities.topk(min(top_k, probabilities.shape[-1]), dim=-1)
        return [[{"label": id2label[int(i)], "score": round(float(s), 6)} for s, i in zip(scores, indices)]
                for scores, indices in zip(top.values, top.indices)]
