"""`hf-frozenlm train`: train a model of any task with transformers' Trainer.

    hf-frozenlm train                                       # the main job: digits + SmolLM2-135M's last layer
    hf-frozenlm train --task motion-forecasting            # any task, on its offline builtin by default
    hf-frozenlm train --task image-classification --dataset imagefolder:PATH --trunk vit-small

Every TrainingArguments option is accepted as transformers spells it; `--task T --help` shows T's defaults.
"""

from __future__ import annotations

import logging
import sys


def main(argv: list[str]) -> int:
    from ..redaction import install_log_redaction, secret_values
    from ..training.arguments import parse_train_arguments
    from ..training.loop import train_task

    if "-h" in argv or "--help" in argv:
        return print_help(argv)
    arguments = parse_train_arguments(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO,
                        stream=sys.stdout)
    install_log_redaction(secret_values(argv))
    if not arguments.training.should_log:
        logging.getLogger("hf_frozenlm").setLevel(logging.WARNING)
    train_task(arguments)
    return 0


def print_help(argv: list[str]) -> int:
    import argparse

    from ..tasks import TASKS
    from ..training.arguments import build_train_parser

    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--task", default="image-classification")
    task = TASKS.get(peek.parse_known_args(argv)[0].task) or TASKS["image-classification"]
    parser = build_train_parser(task.name)
    parser.description = (__doc__.split("\n\n")[0] + "\n\ntasks (--task), each with its builtin dataset:\n" + "\n".join(
        f"  {t.name:<28} {t.summary} --dataset: {t.dataset_help}" for t in TASKS.values()))
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.print_help()
    return 0
