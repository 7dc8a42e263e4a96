"""`hf-frozenlm evaluate --model RUN`: the task's metrics of a trained model on a dataset split; printed and saved.

The task is read from the saved config; the dataset defaults to the one the run was trained on (with its split
seed, so `--split test` is the run's own test split).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field


@dataclass
class EvaluateArguments:
    model: str = field(metadata={"help": "A folder written by `hf-frozenlm train` or `merge` (or save_pretrained)."})
    split: str = field(default="test", metadata={"help": "Which split: train, validation or test."})
    batch_size: int = field(default=256, metadata={"help": "Examples per forward pass."})
    output: str | None = field(
        default=None, metadata={"help": "Where to write the metrics JSON (default: MODEL/eval_<dataset>_<split>.json)."}
    )


def main(argv: list[str]) -> int:
    from transformers import HfArgumentParser

    from ..data.splits import truncate_splits
    from ..errors import UsageError
    from ..training.arguments import DataArguments
    from ..training.loading import load_trained_model, recorded_data_arguments
    from ..training.loop import evaluate_model

    parser = HfArgumentParser((EvaluateArguments, DataArguments), prog="hf-frozenlm evaluate",
                              description=__doc__.split("\n\n")[0])
    eval_args, data_args = parser.parse_args_into_dataclasses(args=argv)
    if eval_args.batch_size < 1:
        raise UsageError(f"--batch_size {eval_args.batch_size}: pass 1 or more.")
    task, model, processor = load_trained_model(eval_args.model)
    data_args = recorded_data_arguments(eval_args.model, data_args, argv)
    data = task.load_data(data_args)
    data.splits = truncate_splits(data.splits, data_args.max_train_samples, data_args.max_eval_samples)
    data = task.prepare_for_evaluation(model, data)
    if eval_args.split not in data.splits:
        raise UsageError(f"--split {eval_args.split!r}: the dataset has splits {list(data.splits)}.")
    split = data.splits[eval_args.split]
    metrics = evaluate_model(task, model, processor, split, eval_args.batch_size, prefix=eval_args.split, data=data)
    result = {"model": eval_args.model, "task": task.name, "dataset": data.name, "split": eval_args.split,
              "num_examples": len(split), **metrics}
    if "test_views" in data.info:
        result["test_views"] = data.info["test_views"]
    dataset_tag = os.path.basename(data.name.rstrip("/")).replace(":", "_").replace(",", "_")
    output = eval_args.output or os.path.join(eval_args.model, f"eval_{dataset_tag}_{eval_args.split}.json")
    with open(output, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    shown = {"loss": metrics["loss"], **task.card_metrics(metrics)} if "loss" in metrics else task.card_metrics(metrics)
    for key, value in shown.items():
        print(f"{key}: {value:.4f}")
    print(f"({len(split)} examples of {data.name} / {eval_args.split}; {task.name}; saved to {output})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
