"""`hf-frozenlm evaluate --model DIR --dataset ...`: accuracy (and top-5) of a trained model; printed and saved."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass, field

import torch


@dataclass
class EvaluateArguments:
    model: str = field(metadata={"help": "A folder written by `hf-frozenlm train` or `merge`."})
    split: str = field(default="test", metadata={"help": "Which split: train, validation or test."})
    batch_size: int = field(default=256, metadata={"help": "Images per forward pass."})
    output: str | None = field(
        default=None, metadata={"help": "Where to write the metrics JSON (default: DIR/eval_<dataset>_<split>.json)."}
    )


def main(argv: list[str]) -> int:
    from transformers import HfArgumentParser, TrainingArguments

    from ..data import DataArguments, DataError, load_image_classification_data, make_transform
    from ..metrics import classification_metrics
    from ..training import FrozenLMTrainer, load_trained_model, unwrap

    parser = HfArgumentParser((EvaluateArguments, DataArguments), prog="hf-frozenlm evaluate",
                              description=__doc__.split("\n")[0])
    eval_args, data_args = parser.parse_args_into_dataclasses(args=argv)
    try:
        model, processor = load_trained_model(eval_args.model)
        data = load_image_classification_data(data_args)
    except (DataError, ValueError, OSError) as error:
        print(f"hf-frozenlm evaluate: {error}", file=sys.stderr)
        return 2
    if eval_args.split not in data.splits:
        print(f"hf-frozenlm evaluate: no split {eval_args.split!r}; splits: {list(data.splits)}", file=sys.stderr)
        return 2
    config = unwrap(model).config
    split = data.splits[eval_args.split]
    # The dataset's class ids are mapped onto the model's by class name.
    label2id = {str(name): int(index) for name, index in config.label2id.items()}
    unknown = sorted(set(data.id2label.values()) - set(label2id))
    if unknown:
        print(f"hf-frozenlm evaluate: the dataset has classes the model does not know: {unknown[:10]}; the model's "
              f"classes are {sorted(label2id)[:10]}{' ...' if len(label2id) > 10 else ''}.", file=sys.stderr)
        return 2
    mapping = {index: label2id[name] for index, name in data.id2label.items()}
    split = split.map(lambda row: {"label": mapping[row["label"]]}, desc="mapping labels")
    split = split.with_transform(make_transform(processor))

    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch, per_device_eval_batch_size=eval_args.batch_size, report_to="none",
            remove_unused_columns=False, label_names=["labels"], use_cpu=not torch.cuda.is_available(),
        )
        trainer = FrozenLMTrainer(model=model, args=args, compute_metrics=classification_metrics(config.num_labels))
        metrics = trainer.evaluate(split, metric_key_prefix=eval_args.split)
    metrics = {key.removeprefix(f"{eval_args.split}_"): value for key, value in metrics.items()}
    result = {"model": eval_args.model, "dataset": data_args.dataset, "split": eval_args.split,
              "num_examples": len(split), **metrics}
    output = eval_args.output or os.path.join(
        eval_args.model, f"eval_{os.path.basename(data_args.dataset.rstrip('/')).replace(':', '_')}_{eval_args.split}.json"
    )
    with open(output, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    for key in ("accuracy", "top5_accuracy", "loss"):
        if key in metrics:
            print(f"{key}: {metrics[key]:.4f}")
    print(f"({len(split)} images of {data_args.dataset} / {eval_args.split}; saved to {output})")
    return 0
