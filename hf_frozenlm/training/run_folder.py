"""The run folder, the same for every task.

    model.safetensors, config.json (auto_map, custom pipeline), *.py   the model and its code
    preprocessor_config.json / tokenizer files                          the processor
    README.md                                                          the model card
    metrics.json                                                       train / validation / test metrics
    training_curves.png                                                loss and the primary metric per step
    run_config.json, reproduce.sh                                      the command and every resolved option
    trainer_state.json, checkpoint-*                                   Trainer's log and checkpoints (resume)

Nothing secret is written: the command line and options pass `hf_frozenlm.redaction` first.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import asdict

import torch

from ..redaction import redact_argv, redact_mapping, secret_values


def plot_training_curves(log_history: list[dict], path: str, metric: str = "accuracy",
                         greater_is_better: bool = True) -> None:
    """Train/validation loss and the validation `metric` against the step, as a PNG (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = [e for e in log_history if "eval_loss" in e]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        ax_loss.plot(*zip(*train), label="train loss")
    if evals:
        ax_loss.plot([e["step"] for e in evals], [e["eval_loss"] for e in evals], "o-", label="validation loss")
    key = f"eval_{metric}"
    points = [(e["step"], e[key]) for e in evals if key in e]
    if points:
        ax_metric.plot(*zip(*points), "o-", label=f"validation {metric}")
    ax_metric.set_title(f"{metric} ({'higher' if greater_is_better else 'lower'} is better)")
    ax_loss.set_title("loss")
    for axis in (ax_loss, ax_metric):
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_command(argv: list[str], world_size: int) -> str:
    """The command line that made the run, secrets redacted."""
    launcher = f"torchrun --nproc_per_node {world_size} -m hf_frozenlm train" if world_size > 1 else "hf-frozenlm train"
    return " ".join([launcher, shlex.join(redact_argv(argv))]).strip()


def write_run_folder(arguments, trainer, model, processor, data, metrics: dict, base_reference: str | None) -> None:
    """Everything beside the weights: processor, card, metrics.json, curves, the command and config to reproduce."""
    import transformers

    from .. import __version__
    from ..hub.cards import build_model_card

    output_dir = arguments.training.output_dir
    task = arguments.task
    os.makedirs(output_dir, exist_ok=True)
    processor.save_pretrained(output_dir)
    with open(os.path.join(output_dir, "metrics.json"), "w", encoding="utf-8") as handle:
        json.dump(metrics, handle, indent=2)
    trainer.save_state()
    plot_training_curves(trainer.state.log_history, os.path.join(output_dir, "training_curves.png"),
                         task.primary_metric, task.greater_is_better)

    world = trainer.args.world_size
    command = run_command(arguments.argv, world)
    secrets = secret_values(arguments.argv)
    resolved = redact_mapping(dict(
        command=command, argv=arguments.argv, task=task.name, world_size=world,
        model=asdict(arguments.model), data=asdict(arguments.data), run=asdict(arguments.run),
        training=trainer.args.to_dict(),
        versions=dict(hf_frozenlm=__version__, transformers=transformers.__version__, torch=torch.__version__),
    ), secrets)
    resolved["command"] = command
    resolved["argv"] = redact_argv(arguments.argv)
    with open(os.path.join(output_dir, "run_config.json"), "w", encoding="utf-8") as handle:
        json.dump(resolved, handle, indent=2, default=str)
    with open(os.path.join(output_dir, "reproduce.sh"), "w", encoding="utf-8") as handle:
        handle.write("#!/bin/sh\n# The command that made this folder (secrets redacted); the resolved configuration is "
                     f"in run_config.json.\nHF_HUB_OFFLINE=1 {command}\n")

    card = build_model_card(task, model.config, metrics=metrics, run_config=resolved, dataset=data.name,
                            load_path=output_dir, lora_base=base_reference, curves=True)
    card.save(os.path.join(output_dir, "README.md"))
