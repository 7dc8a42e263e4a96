"""The ablation study behind `hf-frozenlm ablate`: the paper's controls (section 3), one recipe, several seeds.

Every run is an ordinary `hf-frozenlm train` call (the same function, the same options); the study only varies
the block (variant, LLM layers, frozen or fine-tuned) and the seed, then collects the run folders' metrics.json
into one CSV, a table of mean +- std with the per-seed paired difference against the plain trunk, a plot, and the
information-filtering mIoU (paper section 4) of "none" vs "llm" trained on the masked-digits builtin.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StudyArm:
    """One row of the study: what changes against the plain trunk."""

    name: str
    variant: str  # ModelArguments.variant
    layers: str  # "last", "first", "middle", "last2" (resolved against the LLM's depth), "" for none
    llm_trainable: bool = False
    meaning: str = ""


# The paper's controls in its order: baseline, frozen block, MLP control, random block, fine-tuned block, then
# the position sweep inside the LLM (the frozen last layer is "llm" itself) and the last two layers together.
ARMS: tuple[StudyArm, ...] = (
    StudyArm("none", "none", "", meaning="plain ViT trunk"),
    StudyArm("llm", "llm", "last", meaning="+ frozen last LLM layer (the method)"),
    StudyArm("mlp", "mlp", "last", meaning="+ MLP control (same linears, GELU + LayerNorm, no LLM)"),
    StudyArm("random-llm", "random-llm", "last", meaning="+ randomly initialised frozen block"),
    StudyArm("llm-finetuned", "llm", "last", llm_trainable=True, meaning="+ last LLM layer, fine-tuned"),
    StudyArm("llm-first", "llm", "first", meaning="+ frozen first LLM layer"),
    StudyArm("llm-middle", "llm", "middle", meaning="+ frozen middle LLM layer"),
    StudyArm("llm-last2", "llm", "last2", meaning="+ frozen last two LLM layers"),
)
ARM_BY_NAME = {arm.name: arm for arm in ARMS}
BASELINE = "none"

# The study's per-run budget, shared by every arm. Shorter than the main job (10 epochs) so that 8 arms x 5 seeds
# fit in an hour on 2 CPU cores; measured figures are in README.md ("Does it work?"). Any of these can be overridden with the
# training option of the same name, which then applies to every arm alike.
STUDY_TRAINING_DEFAULTS = {
    "num_train_epochs": "4",
    # No per-epoch evaluation or checkpoints: the study reads the final validation/test metrics only.
    "eval_strategy": "no",
    "save_strategy": "no",
    "logging_steps": "20",
    "disable_tqdm": "true",  # progress bars would bury the study's log
}
QUICK_TRAINING = {"max_steps": "2", "max_train_samples": "64", "max_eval_samples": "32",
                  "per_device_train_batch_size": "16", "per_device_eval_batch_size": "32", "logging_steps": "1"}

# Options the study sets per run; passing them through would make every arm the same.
CONTROLLED_OPTIONS = ("variant", "llm_layers", "llm_trainable", "seed", "output_dir", "overwrite_output_dir")

CSV_FIELDS = [
    "arm", "variant", "llm_layers", "llm_trainable", "seed", "test_accuracy", "val_accuracy", "test_loss",
    "train_runtime_s", "wall_s", "dataset", "vision", "llm", "budget", "hf_frozenlm", "torch", "transformers",
    "python", "git_commit", "git_dirty", "command", "train_command",
]


# -- options ----------------------------------------------------------------------------------------------
def option_given(argv: list[str], option: str) -> bool:
    spellings = (f"--{option}", f"--{option.replace('_', '-')}")
    return any(arg == s or arg.startswith(s + "=") for arg in argv for s in spellings)


def option_value(argv: list[str], option: str, default=None):
    """The value of `--option VALUE` / `--option=VALUE` in a training argv (last one wins, as argparse does)."""
    spellings = (f"--{option}", f"--{option.replace('_', '-')}")
    value = default
    for index, arg in enumerate(argv):
        for s in spellings:
            if arg == s and index + 1 < len(argv):
                value = argv[index + 1]
            elif arg.startswith(s + "="):
                value = arg.split("=", 1)[1]
    return value


def drop_options(argv: list[str], options) -> list[str]:
    """argv without the named options and their values (the study sets them itself)."""
    spellings = {f"--{o}" for o in options} | {f"--{o.replace('_', '-')}" for o in options}
    kept, skip = [], False
    for arg in argv:
        if skip:
            if arg.startswith("--"):
                skip = False
            else:
                continue
        name = arg.split("=", 1)[0]
        if name in spellings:
            skip = "=" not in arg
            continue
        kept.append(arg)
    return kept


def with_defaults(train_argv: list[str], defaults: dict[str, str]) -> list[str]:
    """train_argv plus every default the user did not pass; a given max_steps also overrides the epoch budget."""
    argv = list(train_argv)
    for option, value in defaults.items():
        if option == "num_train_epochs" and option_given(train_argv, "max_steps"):
            continue
        if not option_given(train_argv, option):
            argv += [f"--{option}", value]
    return argv


def describe_budget(train_argv: list[str]) -> str:
    steps = option_value(train_argv, "max_steps")
    if steps is not None and int(steps) > 0:
        return f"{steps} steps"
    return f"{option_value(train_argv, 'num_train_epochs', '10')} epochs"


def resolve_layers(spec: str, num_layers: int) -> list[int]:
    """Symbolic layer choice -> indices (negative from the end, as --llm_layers takes them)."""
    return {"": [], "last": [-1], "first": [0], "middle": [num_layers // 2], "last2": [-2, -1]}[spec]


def llm_depth(train_argv: list[str]) -> int:
    """Number of layers of the LLM the runs use (reads its config only, no weights)."""
    from .training import ModelArguments

    from . import load_llm_config

    source = option_value(train_argv, "llm", ModelArguments().llm)
    return int(load_llm_config(source).num_hidden_layers)


# -- provenance -------------------------------------------------------------------------------------------
def environment() -> dict[str, str]:
    """Versions and the git commit of the code that produced the numbers."""
    import torch
    import transformers

    from . import __version__

    root = Path(__file__).resolve().parents[1]
    commit, dirty = "unknown", ""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                 capture_output=True, text=True, check=True).stdout.split("\n")
        # Tracked files with uncommitted edits at run time: the commit alone does not pin the code then.
        dirty = ";".join(sorted(line[3:] for line in changed if line.strip()))
    except (OSError, subprocess.CalledProcessError):
        pass
    return dict(hf_frozenlm=__version__, torch=torch.__version__, transformers=transformers.__version__,
                python=platform.python_version(), git_commit=commit, git_dirty=dirty)


# -- one run ----------------------------------------------------------------------------------------------
def train_argv_for(base_argv: list[str], arm: StudyArm, layers: list[int], seed: int, output_dir: str) -> list[str]:
    argv = list(base_argv) + ["--variant", arm.variant, "--seed", str(seed), "--output_dir", output_dir,
                              "--overwrite_output_dir"]
    if layers:
        argv += ["--llm_layers", *map(str, layers)]
    if arm.llm_trainable:
        argv += ["--llm_trainable"]
    return argv


def run_training(train_argv: list[str]) -> dict:
    """One `hf-frozenlm train` call in this process; returns its metrics.json."""
    from .commands import train

    status = train.main(train_argv)
    if status:
        raise RuntimeError(f"hf-frozenlm train {' '.join(train_argv)} exited with {status}")
    with open(os.path.join(option_value(train_argv, "output_dir"), "metrics.json"), encoding="utf-8") as handle:
        return json.load(handle)


def drop_weights(run_dir: str) -> None:
    """Keep a run folder's metrics, config and card; the weights of 40 runs are not worth the disk."""
    for path in Path(run_dir).glob("*.safetensors"):
        path.unlink()


# -- tables -----------------------------------------------------------------------------------------------
def write_runs_csv(rows: list[dict], path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({field: row.get(field, "") for field in CSV_FIELDS})


def read_runs_csv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def paired_test(differences: list[float]) -> tuple[str, float]:
    """(test name, two-sided p) for paired differences: a paired t-test through scipy, else an exact sign test."""
    if len(differences) < 2:
        return "n/a (1 seed)", float("nan")
    try:
        from scipy import stats
    except ImportError:
        stats = None
    if stats is not None:
        if all(d == differences[0] for d in differences):
            # Zero variance: t is undefined; identical non-zero shifts are as significant as n seeds can say.
            return "paired t-test", 1.0 if differences[0] == 0 else float("nan")
        return "paired t-test", float(stats.ttest_1samp(differences, 0.0).pvalue)
    wins = sum(d > 0 for d in differences)
    n = sum(d != 0 for d in differences)
    if n == 0:
        return "sign test", 1.0
    tail = sum(math.comb(n, k) for k in range(0, min(wins, n - wins) + 1)) / 2 ** n
    return "sign test", min(1.0, 2 * tail)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(rows: list[dict]) -> list[dict]:
    """Per arm (in study order): seeds, mean/std of test and validation accuracy, runtime, and the paired
    difference in test accuracy against the plain trunk on the seeds both have."""
    by_arm: dict[str, list[dict]] = {}
    for row in rows:
        by_arm.setdefault(row["arm"], []).append(row)
    order = [arm.name for arm in ARMS if arm.name in by_arm] + sorted(set(by_arm) - set(ARM_BY_NAME))
    baseline = {int(r["seed"]): float(r["test_accuracy"]) for r in by_arm.get(BASELINE, [])}
    summary = []
    for name in order:
        runs = sorted(by_arm[name], key=lambda r: int(r["seed"]))
        test = [float(r["test_accuracy"]) for r in runs]
        val = [float(r["val_accuracy"]) for r in runs]
        entry = dict(arm=name, llm_layers=runs[0]["llm_layers"], seeds=[int(r["seed"]) for r in runs],
                     test=_mean_std(test), val=_mean_std(val),
                     runtime=statistics.fmean(float(r["wall_s"]) for r in runs))
        if name != BASELINE and baseline:
            diffs = [float(r["test_accuracy"]) - baseline[int(r["seed"])] for r in runs if int(r["seed"]) in baseline]
            if diffs:
                entry["diff"] = _mean_std(diffs)
                entry["wins"] = (sum(d > 0 for d in diffs), len(diffs))
                entry["test_name"], entry["p"] = paired_test(diffs)
        summary.append(entry)
    return summary


def _pct(pair: tuple[float, float], signed: bool = False) -> str:
    mean, std = pair
    return f"{100 * mean:+.2f} ± {100 * std:.2f}" if signed else f"{100 * mean:.2f} ± {100 * std:.2f}"


def markdown_table(rows: list[dict]) -> str:
    """The study's table: accuracy in %, mean ± sample std over seeds; Δ is arm minus none on the same seed."""
    summary = summarize(rows)
    lines = ["| arm | LLM layers | seeds | test acc. (%) | val acc. (%) | Δ test vs none (pp) | better/seeds | p | "
             "s/run |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for entry in summary:
        if "diff" in entry:
            p = entry["p"]
            diff, wins = _pct(entry["diff"], signed=True), f"{entry['wins'][0]}/{entry['wins'][1]}"
            p_text = "n/a" if math.isnan(p) else ("< 0.001" if p < 0.0005 else f"{p:.3f}")
        else:
            diff, wins, p_text = "—", "—", "—"
        layers = entry["llm_layers"] or "—"
        lines.append(f"| {entry['arm']} | {layers} | {len(entry['seeds'])} | {_pct(entry['test'])} | "
                     f"{_pct(entry['val'])} | {diff} | {wins} | {p_text} | {entry['runtime']:.0f} |")
    return "\n".join(lines) + "\n"


def test_name_used(rows: list[dict]) -> str:
    names = {entry.get("test_name") for entry in summarize(rows)} - {None}
    return ", ".join(sorted(names)) or "none"


def plot_runs(rows: list[dict], path) -> None:
    """Test accuracy per arm: one dot per seed and the mean ± std as an error bar (no bars: the y axis is cut to
    the data's range, and cut bars would exaggerate differences), with the plain trunk's mean as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(rows)
    fig, axis = plt.subplots(figsize=(1.1 * len(summary) + 2, 4))
    for index, entry in enumerate(summary):
        values = [100 * float(r["test_accuracy"]) for r in rows if r["arm"] == entry["arm"]]
        offsets = [0.25 * (k - (len(values) - 1) / 2) / max(len(values) - 1, 1) for k in range(len(values))]
        axis.plot([index + o for o in offsets], values, "o", color="black", markersize=3, alpha=0.6)
        colour = "tab:gray" if entry["arm"] == BASELINE else "tab:blue"
        axis.errorbar(index + 0.25, 100 * entry["test"][0], yerr=100 * entry["test"][1], fmt="D", color=colour,
                      capsize=4, markersize=6)
    if summary and summary[0]["arm"] == BASELINE:
        axis.axhline(100 * summary[0]["test"][0], color="tab:gray", linestyle="--", linewidth=1, label="none (mean)")
        axis.legend(loc="lower right")
    all_values = [100 * float(r["test_accuracy"]) for r in rows]
    axis.set_ylim(max(0, min(all_values) - 3), min(100, max(all_values) + 2))
    axis.set_xticks(range(len(summary)), [e["arm"] for e in summary], rotation=30, ha="right")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title("test accuracy per arm (dots: seeds; diamond and bar: mean ± std)")
    axis.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- information filtering (paper section 4) ----------------------------------------------------------------
DATA_OPTIONS = ("dataset", "dataset_config", "train_split", "validation_split", "test_split", "image_column",
                "label_column", "max_train_samples", "max_eval_samples", "augment")
GEOMETRY_OPTIONS = ("image_size", "patch_size", "vision_layers")
# Masked digits are seen at their drawn 32 px in 4 px patches: an 8 x 8 token grid, fine enough for masks to mean
# something, with the main job's 2-layer trunk. No flips or crops (train's default outside `digits`): they change
# or cut the digit. (At 16 px with them, 4 epochs left both models at chance; so did this setting at 10 epochs.)
MASKED_TRUNK = ["--image_size", "32", "--patch_size", "4", "--vision_layers", "2", "--augment", "off"]


def write_masked_digits_imagefolder(folder: Path, num_images: int, seed: int) -> None:
    """The masked-digits builtin as class folders of PNGs, so `train` reads it as `imagefolder:`."""
    from .builtin_masked import masked_digits_arrays
    from PIL import Image

    images, _masks, labels = masked_digits_arrays(num_images=num_images, seed=seed)
    for index, (image, label) in enumerate(zip(images, labels)):
        target = folder / str(int(label))
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(target / f"{index:05d}.png")


def miou_study(base_argv: list[str], runs_dir: Path, train_images: int, eval_images: int, quick: bool,
               epochs: float = 10, log=print) -> list[dict]:
    """Train "none" and "llm" (seed 0) on masked digits with the study's recipe, then score the token maps of
    each stage against the exact digit masks of held-out images (pseudo-mask mIoU, paper section 4)."""
    from .analysis import miou_rows
    from .builtin_masked import load_masked_digits
    from .commands.analyze import analyse_model, load_model_and_processor

    folder = runs_dir / "masked-digits-train"
    if folder.exists():
        shutil.rmtree(folder)
    # Training images come from another seed than the scored ones (seed 0, as `analyze` uses).
    write_masked_digits_imagefolder(folder, train_images, seed=1)
    argv = drop_options(base_argv, DATA_OPTIONS)
    vision = option_value(argv, "vision", "vit-tiny")
    if vision in ("vit-tiny", "vit-small", "vit-base"):
        argv = drop_options(argv, GEOMETRY_OPTIONS) + MASKED_TRUNK
    argv += ["--dataset", f"imagefolder:{folder}"]
    if not quick:
        # Textured backgrounds need longer than the digits arms' budget before the maps mean anything (4 epochs
        # left both models at chance, 12-13 %); both models share this budget.
        argv = drop_options(argv, ["num_train_epochs", "max_steps"]) + ["--num_train_epochs", str(epochs)]
    if quick:
        argv += ["--max_train_samples", "64", "--max_eval_samples", "32"]

    held_out = load_masked_digits(num_images=eval_images, seed=0)
    images = [image.convert("RGB") for image in held_out["image"]]
    import numpy as np

    masks = [np.asarray(mask) != 0 for mask in held_out["mask"]]
    rows, pixels_done = [], False
    for name in ("none", "llm"):
        arm = ARM_BY_NAME[name]
        output_dir = str(runs_dir / f"masked-digits-{name}-seed0")
        train_argv = train_argv_for(argv, arm, resolve_layers(arm.layers, 0), 0, output_dir)
        log(f"[ablate] mIoU: training {name} on masked digits")
        metrics = run_training(train_argv)
        model, processor = load_model_and_processor(output_dir)
        activations, attention, pixels = analyse_model(model, processor, images, batch_size=64,
                                                       kinds=("magnitude", "frequency"))
        if not pixels_done:
            rows += miou_rows("input pixels (no model)", {k: {"patches": v} for k, v in pixels.items()}, {}, masks)
            pixels_done = True
        label = f"{name} (test acc. {100 * metrics['test']['accuracy']:.1f}%)"
        rows += miou_rows(label, activations, attention, masks)
        del model
    shutil.rmtree(folder)
    return rows


def miou_markdown(rows: list[dict]) -> str:
    """mIoU as one row per model x stage with magnitude / frequency / attention columns side by side."""
    table: dict[tuple[str, str], dict[str, float]] = {}
    images = 0
    for row in rows:
        stage = row["stage"]
        kind = row["kind"]
        table.setdefault((row["model"], stage), {})[kind] = float(row["miou"])
        images = int(row["images"])
    lines = [f"| model | stage | magnitude | frequency | CLS attention |", "|---|---|---:|---:|---:|"]
    for (model, stage), scores in table.items():
        cells = [f"{scores[k]:.3f}" if k in scores else "" for k in ("magnitude", "frequency", "attention")]
        lines.append(f"| {model} | {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nmIoU over {images} held-out masked-digits images (8 x 8 token grid).\n"


def write_miou_csv(rows: list[dict], path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["model", "stage", "kind", "miou", "images"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "miou": f"{float(row['miou']):.4f}"})


# -- the study ----------------------------------------------------------------------------------------------
def _commit_note(rows: list[dict], env: dict) -> str:
    run_commits = sorted({r["git_commit"][:12] for r in rows})
    if run_commits == [env["git_commit"][:12]]:
        return f"commit `{env['git_commit'][:12]}`"
    # A --resume: the runs kept from earlier carry their own commit; the rest of this report is from this one.
    return (f"runs at commit(s) {', '.join(f'`{c}`' for c in run_commits)}, this report and the mIoU part at "
            f"commit `{env['git_commit'][:12]}`")


def report_markdown(rows: list[dict], command: str, total_s: float, miou_md: str | None, env: dict) -> str:
    """results/ablation.md: how it was made, the table, the test used, the mIoU table."""
    seeds = sorted({int(r["seed"]) for r in rows})
    first = rows[0]
    llm = next((r["llm"] for r in rows if r["llm"]), "none")
    lines = [
        "# Ablation study (generated by `hf-frozenlm ablate`)",
        "",
        f"Command: `{command}`",
        "",
        f"Dataset `{first['dataset']}`, trunk `{first['vision']}`, LLM `{llm}`, {first['budget']} per run "
        f"(one shared recipe, no per-arm tuning), seeds {', '.join(map(str, seeds))}. "
        f"Total wall time {total_s / 60:.1f} min. hf_frozenlm {env['hf_frozenlm']}, torch {env['torch']}, "
        f"transformers {env['transformers']}, " + _commit_note(rows, env)
        + (f" (uncommitted edits in: {env['git_dirty'].replace(';', ', ')})" if env["git_dirty"] else "") + ".",
        "",
        "<!-- table: generated from ablation_runs.csv by hf_frozenlm.ablation.markdown_table -->",
        markdown_table(rows).rstrip("\n"),
        "<!-- end table -->",
        "",
        f"Accuracy in %, mean ± sample standard deviation over seeds. Δ: the arm's test accuracy minus the plain "
        f"trunk's on the same seed (same split, same seed for initialisation and data order), mean ± std in "
        f"percentage points; better/seeds counts seeds where the arm beat `none`; p: two-sided {test_name_used(rows)} "
        f"of the paired differences against zero. s/run: wall seconds per run including model building and "
        f"evaluation.",
        "",
    ]
    if miou_md:
        lines += ["## Information filtering (paper section 4): pseudo-mask mIoU on masked digits", "",
                  "\"none\" and \"llm\" trained (seed 0) on the masked-digits builtin with the same recipe; each "
                  "stage's token map scored against the exact digit masks, best threshold per image. Higher = the "
                  "map singles out the digit.", "", miou_md]
    return "\n".join(lines)


def run_study(train_argv: list[str], arms: list[str], seeds: list[int], out: Path, runs_dir: Path,
              command: str, quick: bool = False, miou: bool = True, resume: bool = False,
              miou_train_images: int = 3000, miou_eval_images: int = 256, miou_epochs: float = 10,
              log=print) -> dict:
    """Train every arm x seed, write the CSV after each run, then the table, plot and mIoU. Returns the paths."""
    if quick:
        miou_train_images, miou_eval_images = min(miou_train_images, 200), min(miou_eval_images, 32)
    out.mkdir(parents=True, exist_ok=True)
    runs_dir.mkdir(parents=True, exist_ok=True)
    base_argv = with_defaults(train_argv, {**STUDY_TRAINING_DEFAULTS, **(QUICK_TRAINING if quick else {})})
    env = environment()
    needs_llm = any(ARM_BY_NAME[a].layers in ("middle",) for a in arms)
    depth = llm_depth(base_argv) if needs_llm else 0
    csv_path = out / "ablation_runs.csv"
    rows = read_runs_csv(csv_path) if resume and csv_path.exists() else []
    done = {(r["arm"], int(r["seed"])) for r in rows}
    from .training import ModelArguments

    started = time.perf_counter()
    previous_total = sum(float(r["wall_s"]) for r in rows)
    for seed in seeds:  # seed-major: an interrupted study still has complete pairs for the seeds it finished
        for name in arms:
            if (name, seed) in done:
                continue
            arm = ARM_BY_NAME[name]
            layers = resolve_layers(arm.layers, depth) if arm.variant != "none" else []
            run_dir = str(runs_dir / f"{name}-seed{seed}")
            argv = train_argv_for(base_argv, arm, layers, seed, run_dir)
            log(f"[ablate] {name} seed {seed}: hf-frozenlm train {' '.join(argv)}")
            tic = time.perf_counter()
            metrics = run_training(argv)
            wall = time.perf_counter() - tic
            drop_weights(run_dir)
            rows.append(dict(
                arm=name, variant=arm.variant, llm_layers=" ".join(map(str, layers)),
                llm_trainable=arm.llm_trainable, seed=seed,
                test_accuracy=f"{metrics['test']['accuracy']:.6f}",
                val_accuracy=f"{metrics['validation']['accuracy']:.6f}",
                test_loss=f"{metrics['test']['loss']:.6f}",
                train_runtime_s=f"{metrics['train']['train_runtime']:.1f}", wall_s=f"{wall:.1f}",
                dataset=option_value(base_argv, "dataset", "digits"),
                vision=option_value(base_argv, "vision", ModelArguments().vision),
                llm="" if arm.variant == "none" else option_value(base_argv, "llm", ModelArguments().llm),
                budget=describe_budget(base_argv), command=command,
                train_command="hf-frozenlm train " + " ".join(argv), **env,
            ))
            write_runs_csv(rows, csv_path)
            log(f"[ablate] {name} seed {seed}: test {metrics['test']['accuracy']:.4f}, "
                f"validation {metrics['validation']['accuracy']:.4f}, {wall:.0f} s")
    rows = [r for r in rows if r["arm"] in arms and int(r["seed"]) in seeds]
    write_runs_csv(rows, csv_path)
    plot_runs(rows, out / "ablation.png")
    miou_md = None
    if miou:
        miou_rows_ = miou_study(base_argv, runs_dir, miou_train_images, miou_eval_images, quick, miou_epochs, log=log)
        write_miou_csv(miou_rows_, out / "miou.csv")
        miou_md = miou_markdown(miou_rows_) + (
            f"\nmIoU models: {miou_train_images} generated training images (split 70/10/20 by `train`), "
            f"{'the quick budget' if quick else f'{miou_epochs:g} epochs'}, otherwise the study's recipe.\n")
    total = previous_total + (time.perf_counter() - started) if resume else time.perf_counter() - started
    report = report_markdown(rows, command, total, miou_md, env)
    (out / "ablation.md").write_text(report, encoding="utf-8")
    log(report)
    return dict(csv=csv_path, markdown=out / "ablation.md", plot=out / "ablation.png",
                miou=(out / "miou.csv") if miou else None, total_s=total)


def study_command(argv: list[str]) -> str:
    """The command line as a user would type it again."""
    import shlex

    return ("hf-frozenlm ablate " + shlex.join(argv)).strip()


