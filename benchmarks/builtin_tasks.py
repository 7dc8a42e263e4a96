"""Every task's builtin recipe, run as documented (`hf-frozenlm train --task T`), against a trivial baseline.

    python benchmarks/builtin_tasks.py                      # all seven tasks, fp32 and bf16 -> results/builtin_tasks.*
    python benchmarks/builtin_tasks.py --tasks motion-forecasting --precision fp32

Each run is the training loop with the task's defaults (plus `--precision` and `--output_dir`), on the builtin
dataset, with the default LLM (SmolLM2-135M's last layer). Both precision paths run by default, because machines
differ: where bf16 matmuls have no hardware support `auto` trains in fp32, elsewhere under bf16 autocast. The baseline is the task's own trivial predictor on the
same test split (`Task.baseline`: majority class / answer, constant velocity, chance ranking). The Markdown table is
what README.md shows between its `builtin-tasks` markers; tests/test_docs.py checks that the two agree.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ["task", "dataset", "metric", "greater_is_better", "test", "validation", "baseline", "baseline_score",
          "train_s", "wall_s", "precision", "cpu", "hf_frozenlm", "torch", "transformers", "python", "git_commit",
          "command"]


def run_task(name: str, precision: str, runs_dir: Path) -> dict:
    import torch
    import transformers

    import hf_frozenlm
    from hf_frozenlm.tasks import get_task
    from hf_frozenlm.training import parse_train_arguments, train_task
    from hf_frozenlm.training.precision import cpu_description

    task = get_task(name)
    argv = ["--task", name, "--precision", precision, "--output_dir", str(runs_dir / name), "--overwrite_output_dir",
            "--disable_tqdm", "true"]
    arguments = parse_train_arguments(argv)
    started = time.perf_counter()
    metrics = train_task(arguments)
    wall = time.perf_counter() - started
    baseline_name, baseline = task.baseline(task.load_data(arguments.data))
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    return dict(
        task=name, dataset=metrics["dataset"], metric=task.primary_metric, greater_is_better=task.greater_is_better,
        test=f"{metrics['test'][task.primary_metric]:.4f}",
        validation=f"{metrics['validation'][task.primary_metric]:.4f}",
        baseline=baseline_name, baseline_score=f"{baseline[task.primary_metric]:.4f}",
        train_s=f"{metrics['train']['train_runtime']:.0f}", wall_s=f"{wall:.0f}",
        precision="bf16 autocast" if arguments.training.bf16 else "fp32", cpu=cpu_description(),
        hf_frozenlm=hf_frozenlm.__version__, torch=torch.__version__, transformers=transformers.__version__,
        python=platform.python_version(), git_commit=commit, command="hf-frozenlm train " + " ".join(argv[:4]),
    )


def markdown(rows: list[dict]) -> str:
    lines = ["| task | builtin | metric | test | trivial baseline | validation | training | precision |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for row in rows:
        direction = "higher" if str(row["greater_is_better"]) == "True" else "lower"
        lines.append(f"| {row['task']} | {row['dataset']} | {row['metric']} ({direction} is better) | {row['test']} | "
                     f"{row['baseline_score']} ({row['baseline']}) | {row['validation']} | {row['train_s']} s | "
                     f"{row['precision']} |")
    return "\n".join(lines) + "\n"


def read_rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def main(argv: list[str]) -> int:
    from hf_frozenlm.tasks import TASK_NAMES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASK_NAMES), choices=list(TASK_NAMES))
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["auto", "fp32", "bf16"])
    parser.add_argument("--out", default=str(ROOT / "results"))
    parser.add_argument("--runs_dir", default="runs/builtin")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.out)
    csv_path = out / "builtin_tasks.csv"
    new = [run_task(name, precision, Path(args.runs_dir)) for name in args.tasks for precision in args.precision]
    replaced = {(row["task"], row["precision"]) for row in new}
    kept = [row for row in (read_rows(csv_path) if csv_path.exists() else [])
            if (row["task"], row["precision"]) not in replaced]
    rows = kept + new
    rows.sort(key=lambda row: (list(TASK_NAMES).index(row["task"]), row["precision"] != "fp32"))
    out.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    table = markdown(rows)
    (out / "builtin_tasks.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
