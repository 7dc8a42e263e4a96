"""`hf-frozenlm <command> ...` and `python -m hf_frozenlm <command> ...`.

Each command lives in `hf_frozenlm/commands/<name>.py` and exposes `main(argv: list[str]) -> int`. This is the one
place where the library's named errors become a one-line message and exit status 2 (anything else keeps its
traceback: it is a bug).
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("hf_frozenlm.commands.train", "train a model of any task (no arguments: the main job, digits + SmolLM2)"),
    "evaluate": ("hf_frozenlm.commands.evaluate", "the task's metrics of a trained model on a dataset split"),
    "predict": ("hf_frozenlm.commands.predict", "run a trained model on input files (images, videos, clouds, scenes)"),
    "merge": ("hf_frozenlm.commands.merge", "fold LoRA adapters into a plain model that loads without peft"),
    "analyze": ("hf_frozenlm.commands.analyze", "token activation maps, CLS attention and mask mIoU (paper section 4)"),
    "demo": ("hf_frozenlm.commands.demo", "the Gradio Space app locally: labels and token activation maps"),
    "push": ("hf_frozenlm.commands.push", "publish a run to the Hub (card, remote code; --no-frozen-weights: slim)"),
    "push-space": ("hf_frozenlm.commands.push_space", "upload the Gradio demo as a Space showing a published model"),
    "ablate": ("hf_frozenlm.commands.ablate", "the paper's controls x seeds under one recipe: CSV, table, paired test"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: hf-frozenlm <command> [options]\n\ncommands:")
        for name, (_, help_text) in COMMANDS.items():
            print(f"  {name:<12} {help_text}")
        print("\n`hf-frozenlm <command> --help` for a command's options.")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"hf-frozenlm: unknown command {name!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from .errors import user_errors

    module = importlib.import_module(COMMANDS[name][0])
    try:
        return module.main(rest) or 0
    except user_errors() as error:
        from .redaction import redact_text, secret_values

        message = redact_text(str(error), secret_values(rest))
        print(f"hf-frozenlm {name}: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hf-frozenlm {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
