"""README.md and docs/ stay true: every `hf-frozenlm` command they show parses with that command's own parser, the
README's own commands run (training ones on a short budget appended to them), the numbers they quote are the
committed results, links resolve, and the README stays short."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def documented_commands(page: Path) -> list[str]:
    """`hf-frozenlm ...` lines of the page's bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), re.S):
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            line = line.split("  #")[0].split(" # ")[0].strip()
            if line.startswith("hf-frozenlm ") and "$" not in line and "[" not in line:
                commands.append(line)
    return commands


ALL = [(page.name, command) for page in PAGES for command in documented_commands(page)]


def test_the_pages_show_commands():
    assert len(ALL) > 30 and {name for name, _ in ALL} >= {"README.md", "training.md", "tasks.md", "publishing.md"}


@pytest.mark.parametrize("page, command", ALL, ids=[f"{p}:{c[:60]}" for p, c in ALL])
def test_every_documented_command_parses(page, command, tmp_path):
    from hf_frozenlm.cli import COMMANDS

    argv = shlex.split(command)[1:]
    name, options = argv[0], argv[1:]
    assert name in COMMANDS, f"{page}: unknown command {name!r}"
    if name == "train":
        from hf_frozenlm.training import parse_train_arguments

        parse_train_arguments(options)
    elif name == "evaluate":
        from transformers import HfArgumentParser

        from hf_frozenlm.commands.evaluate import EvaluateArguments
        from hf_frozenlm.training.arguments import DataArguments

        HfArgumentParser((EvaluateArguments, DataArguments)).parse_args_into_dataclasses(args=options)
    elif name == "predict":
        from hf_frozenlm.commands.predict import build_parser

        known, unknown = build_parser().parse_known_args(options)
        assert all(option.startswith("--") for option in unknown if option.startswith("-"))  # the task's own options
    elif name == "ablate":
        from hf_frozenlm.commands.ablate import build_parser

        build_parser().parse_known_args(options)
    else:
        module = __import__(COMMANDS[name][0], fromlist=["build_parser"])
        if hasattr(module, "build_parser"):
            module.build_parser().parse_args(options)


README_TRAIN = [c for p, c in ALL if p == "README.md" and c.startswith("hf-frozenlm train")]


@pytest.mark.parametrize("command", README_TRAIN)
def test_the_readmes_training_commands_run_as_written(command, tmp_path):
    """As written, with a short budget and a scratch folder appended (argparse keeps the last value)."""
    from hf_frozenlm.cli import main

    argv = shlex.split(command)[1:] + ["--max_steps", "2", "--max_train_samples", "16", "--max_eval_samples", "8",
                                        "--eval_strategy", "no", "--save_strategy", "no", "--output_dir",
                                        str(tmp_path / "run")]
    assert main(argv) == 0
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_links_resolve():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_the_readme_is_short_and_quotes_the_committed_results():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    table = (ROOT / "results" / "builtin_tasks.md").read_text(encoding="utf-8")
    block = readme.split("<!-- builtin-tasks:", 1)[1].split("-->", 1)[1].split("<!-- end builtin-tasks -->")[0]
    assert block.strip() == table.strip()
    from hf_frozenlm.tasks import TASK_NAMES

    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in table.splitlines()[2:]]
    # Every task, on both precision paths (machines without bf16 units train in fp32).
    assert sorted((row[0], row[-1]) for row in rows) == sorted(
        (name, precision) for name in TASK_NAMES for precision in ("fp32", "bf16 autocast"))
