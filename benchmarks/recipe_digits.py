"""`--recipe deit` against the builtin recipe on the real digits scans, at the same number of steps, on CPU.

Runs of 30 epochs (batch 64, learning rate 1e-3, 600 steps), differing only in the recipe's regularisation:
  builtin      the image task's defaults (label smoothing 0.1; no crops: they change a digit's class)
  deit         --recipe deit with the budget above: RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25, repeated
               augmentation x3, drop path 0.1, mixup 0.8 / CutMix 1.0, crops (area 0.08-1) and flips, min-lr cosine
  deit-nocrop  the same without crops and flips (--augment off), which misread 8x8 digits
  deit-1gpu    deit-nocrop without repeated augmentation and batch mixing (--repeated_aug false --mixup 0
               --cutmix 0): what is left of the recipe for one process and a small model
Validation accuracy is logged every epoch; writes results/recipe_deit_digits.{csv,md,png} (and .json, from which
a later `--runs` adds to the earlier ones).

Run:  python benchmarks/recipe_digits.py      (~11 min on 2 busy cores; the runs in parallel)
      python benchmarks/recipe_digits.py --runs deit-1gpu
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(__file__), "..")
BUDGET = ["--num_train_epochs", "30", "--per_device_train_batch_size", "64", "--learning_rate", "1e-3",
          "--eval_strategy", "epoch", "--save_strategy", "no", "--logging_steps", "20", "--disable_tqdm", "true",
          "--precision", "fp32", "--seed", "42"]
RUNS = {
    "builtin": [],
    "deit": ["--recipe", "deit"],
    "deit-nocrop": ["--recipe", "deit", "--augment", "off"],
    "deit-1gpu": ["--recipe", "deit", "--augment", "off", "--repeated_aug", "false", "--mixup", "0", "--cutmix", "0"],
    "deit-no-randaugment": ["--recipe", "deit", "--augment", "off", "--aa", ""],
    "deit-no-mixing": ["--recipe", "deit", "--augment", "off", "--mixup", "0", "--cutmix", "0"],
}


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    chosen = parser.parse_args().runs
    results = os.path.join(ROOT, "results")
    store = os.path.join(results, "recipe_deit_digits.json")
    earlier = {}
    if os.path.isfile(store):
        with open(store) as handle:
            earlier = json.load(handle)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as scratch:
        processes = {name: subprocess.Popen([sys.executable, "-m", "hf_frozenlm", "train", "--output_dir",
                                             os.path.join(scratch, name), *BUDGET, *extra], env=env, cwd=ROOT,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                     for name, extra in RUNS.items() if name in chosen}
        curves, finals = {}, {}
        for name, process in processes.items():
            _, errors = process.communicate()
            if process.returncode:
                raise SystemExit(f"{name} failed:\n{errors[-3000:]}")
            folder = os.path.join(scratch, name)
            with open(os.path.join(folder, "trainer_state.json")) as handle:
                history = json.load(handle)["log_history"]
            with open(os.path.join(folder, "metrics.json")) as handle:
                metrics = json.load(handle)
            curves[name] = [(entry["step"], entry["eval_accuracy"]) for entry in history if "eval_accuracy" in entry]
            finals[name] = (metrics["validation"]["accuracy"], metrics["test"]["accuracy"],
                            metrics["train"]["train_runtime"])
    merged = {name: earlier[name] for name in RUNS if name in earlier and name not in chosen}
    merged.update({name: {"curve": curves[name], "final": finals[name]} for name in curves})
    merged = {name: merged[name] for name in RUNS if name in merged}
    with open(store, "w") as handle:
        json.dump(merged, handle, indent=1)
    curves = {name: [tuple(point) for point in run["curve"]] for name, run in merged.items()}
    finals = {name: tuple(run["final"]) for name, run in merged.items()}
    with open(os.path.join(results, "recipe_deit_digits.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["run", "step", "validation_accuracy"])
        for name, points in curves.items():
            writer.writerows((name, step, f"{accuracy:.4f}") for step, accuracy in points)
    lines = ["| run | steps | validation accuracy | test accuracy | training time |", "|---|---|---|---|---|"]
    for name, (validation, test, runtime) in finals.items():
        lines.append(f"| {name} | {curves[name][-1][0]} | {validation:.4f} | {test:.4f} | {runtime:.0f} s |")
    table = "\n".join(lines)
    with open(os.path.join(results, "recipe_deit_digits.md"), "w") as handle:
        handle.write(f"Command: `python benchmarks/recipe_digits.py` (digits, 30 epochs, batch 64, lr 1e-3, fp32)\n\n"
                     f"{table}\n")
    print(table)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(7, 4))
    for name, points in curves.items():
        axis.plot(*zip(*points), "o-", markersize=3, label=name)
    axis.set_xlabel("step")
    axis.set_ylabel("validation accuracy")
    axis.set_title("digits, 600 steps: builtin recipe vs --recipe deit")
    axis.grid(alpha=0.3)
    axis.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(results, "recipe_deit_digits.png"), dpi=100)


if __name__ == "__main__":
    main()
