"""The ablation study behind `hf-frozenlm ablate`: the paper's controls (section 3), one recipe, several seeds, for
any task.

Every run is the ordinary training loop (`train_task`) on the same `TrainArguments`; the study only varies the block
(variant, LLM layers, frozen or fine-tuned) and the seed, then collects the runs' metrics into one CSV, a table of
mean +- std of the task's primary metric with the per-seed paired difference against the plain trunk, a plot, and
(for image classification) the information-filtering mIoU (paper section 4) of "none" vs "llm" trained on the
masked-digits builtin.
"""

from __future__ import annotations

import csv
import math
import platform
import shlex
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..redaction import redact_argv


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

# The study's per-run budget, shared by every arm: TrainingArguments values applied unless the user passed the option.
# Shorter than the main job (10 epochs) so that 8 arms x 5 seeds fit in an hour on 2 CPU cores; measured figures are in
# docs/analysis.md and results/.
STUDY_TRAINING_DEFAULTS = {
    "num_train_epochs": 4,
    # No per-epoch evaluation or checkpoints: the study reads the final validation/test metrics only.
    "eval_strategy": "no",
    "save_strategy": "no",
    "logging_steps": 20,
    "disable_tqdm": True,  # progress bars would bury the study's log
}
QUICK_TRAINING = {"max_steps": 2, "per_device_train_batch_size": 16, "per_device_eval_batch_size": 32, "logging_steps": 1}
QUICK_DATA = {"max_train_samples": 64, "max_eval_samples": 32}

# Options the study sets per run; passing them through would make every arm the same.
CONTROLLED_OPTIONS = ("variant", "llm_layers", "llm_trainable", "seed", "output_dir", "overwrite_output_dir")

CSV_FIELDS = [
    "arm", "variant", "llm_layers", "llm_trainable", "seed", "metric", "test_score", "val_score", "test_loss",
    "train_runtime_s", "wall_s", "task", "dataset", "trunk", "llm", "budget", "hf_frozenlm", "torch", "transformers",
    "python", "git_commit", "git_dirty", "command", "train_command",
]


def apply_study_defaults(arguments, argv: list[str], quick: bool = False):
    """The study's budget (and the quick mode's) on the parsed training arguments, unless `argv` set the option."""
    from ..training.arguments import option_given

    defaults = {**STUDY_TRAINING_DEFAULTS, **(QUICK_TRAINING if quick else {})}
    if option_given(argv, "max_steps"):
        defaults.pop("num_train_epochs", None)  # a given step budget also replaces the epoch budget
    for option, value in defaults.items():
        if not option_given(argv, option):
            setattr(arguments.training, option, value)
    if quick:
        for option, value in QUICK_DATA.items():
            if not option_given(argv, option):
                setattr(arguments.data, option, value)
    return arguments


def describe_budget(training) -> str:
    if training.max_steps and training.max_steps > 0:
        return f"{training.max_steps} steps"
    return f"{training.num_train_epochs:g} epochs"


def resolve_layers(spec: str, num_layers: int) -> list[int]:
    """Symbolic layer choice -> indices (negative from the end, as --llm_layers takes them)."""
    return {"": [], "last": [-1], "first": [0], "middle": [num_layers // 2], "last2": [-2, -1]}[spec]


def llm_depth(model_args) -> int:
    """Number of layers of the LLM the runs use (reads its config only, no weights)."""
    from ..modeling import load_llm_config

    return int(load_llm_config(model_args.llm).num_hidden_layers)


# -- provenance -------------------------------------------------------------------------------------------
def environment() -> dict[str, str]:
    """Versions and the git commit of the code that produced the numbers."""
    import torch
    import transformers

    from .. import __version__

    root = Path(__file__).resolve().parents[2]
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
def arm_arguments(base, arm: StudyArm, layers: list[int], seed: int, output_dir: str):
    """The base TrainArguments with this arm's block, this seed and its own run folder."""
    import copy
    from dataclasses import replace

    arguments = copy.deepcopy(base)
    arguments.model = replace(arguments.model, variant=arm.variant, llm_trainable=arm.llm_trainable,
                              llm_layers=list(layers) or arguments.model.llm_layers)
    arguments.run = replace(arguments.run, overwrite_output_dir=True)
    arguments.training.seed = seed
    arguments.training.output_dir = output_dir
    arguments.argv = [*arguments.argv, "--variant", arm.variant, "--seed", str(seed), "--output_dir", output_dir,
                      *(["--llm_layers", *map(str, layers)] if layers else []),
                      *(["--llm_trainable"] if arm.llm_trainable else [])]
    return arguments


def run_training(arguments) -> dict:
    """One run of the training loop in this process; returns its metrics."""
    from ..training.loop import train_task

    return train_task(arguments)


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
    """The study's rows; files written before the study became task-generic (test_accuracy / val_accuracy columns)
    are read as metric "accuracy"."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        if "test_score" not in row and "test_accuracy" in row:
            row.update(metric="accuracy", test_score=row.pop("test_accuracy"), val_score=row.pop("val_accuracy"),
                       task="image-classification", trunk=row.pop("vision", ""))
    return rows


def metric_of(rows: list[dict]) -> tuple[str, bool]:
    """(the study's metric, whether higher is better), from its rows' task."""
    from ..tasks import TASKS

    metric = rows[0]["metric"] if rows else "accuracy"
    task = TASKS.get(rows[0].get("task", "image-classification")) if rows else None
    return metric, task.greater_is_better if task is not None and task.primary_metric == metric else True


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
    """Per arm (in study order): seeds, mean/std of the test and validation score, runtime, and the paired difference
    of the test score against the plain trunk on the seeds both have ("wins" count improvements: higher or lower, as
    the metric says)."""
    _, greater_is_better = metric_of(rows)
    by_arm: dict[str, list[dict]] = {}
    for row in rows:
        by_arm.setdefault(row["arm"], []).append(row)
    order = [arm.name for arm in ARMS if arm.name in by_arm] + sorted(set(by_arm) - set(ARM_BY_NAME))
    baseline = {int(r["seed"]): float(r["test_score"]) for r in by_arm.get(BASELINE, [])}
    summary = []
    for name in order:
        runs = sorted(by_arm[name], key=lambda r: int(r["seed"]))
        test = [float(r["test_score"]) for r in runs]
        val = [float(r["val_score"]) for r in runs]
        entry = dict(arm=name, llm_layers=runs[0]["llm_layers"], seeds=[int(r["seed"]) for r in runs],
                     test=_mean_std(test), val=_mean_std(val),
                     runtime=statistics.fmean(float(r["wall_s"]) for r in runs))
        if name != BASELINE and baseline:
            diffs = [float(r["test_score"]) - baseline[int(r["seed"])] for r in runs if int(r["seed"]) in baseline]
            if diffs:
                entry["diff"] = _mean_std(diffs)
                entry["wins"] = (sum((d > 0) if greater_is_better else (d < 0) for d in diffs), len(diffs))
                entry["test_name"], entry["p"] = paired_test(diffs)
        summary.append(entry)
    return summary


def _format(pair: tuple[float, float], percent: bool, signed: bool = False) -> str:
    mean, std = pair
    scale, digits = (100, 2) if percent else (1, 3)
    return f"{scale * mean:{'+' if signed else ''}.{digits}f} ± {scale * std:.{digits}f}"


def _is_fraction(metric: str) -> bool:
    """Accuracy-like metrics in [0, 1] are shown in percent (and differences in percentage points)."""
    return any(part in metric for part in ("accuracy", "exact_match", "R@", "miss_rate"))


def markdown_table(rows: list[dict]) -> str:
    """The study's table: the metric (in % for accuracies), mean ± sample std over seeds; Δ is arm minus none on the
    same seed."""
    metric, greater_is_better = metric_of(rows)
    percent = _is_fraction(metric)
    if metric == "accuracy":
        names = ("test acc. (%)", "val acc. (%)", "Δ test vs none (pp)")
    else:
        unit = " (%)" if percent else ""
        names = (f"test {metric}{unit}", f"val {metric}{unit}", f"Δ test vs none{' (pp)' if percent else ''}")
    lines = [f"| arm | LLM layers | seeds | {names[0]} | {names[1]} | {names[2]} | better/seeds | p | s/run |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for entry in summarize(rows):
        if "diff" in entry:
            p = entry["p"]
            diff, wins = _format(entry["diff"], percent, signed=True), f"{entry['wins'][0]}/{entry['wins'][1]}"
            p_text = "n/a" if math.isnan(p) else ("< 0.001" if p < 0.0005 else f"{p:.3f}")
        else:
            diff, wins, p_text = "—", "—", "—"
        layers = entry["llm_layers"] or "—"
        lines.append(f"| {entry['arm']} | {layers} | {len(entry['seeds'])} | {_format(entry['test'], percent)} | "
                     f"{_format(entry['val'], percent)} | {diff} | {wins} | {p_text} | {entry['runtime']:.0f} |")
    if not greater_is_better:
        lines.append("")
        lines.append(f"Lower {metric} is better; better/seeds counts seeds where the arm's {metric} is below none's.")
    return "\n".join(lines) + "\n"


def test_name_used(rows: list[dict]) -> str:
    names = {entry.get("test_name") for entry in summarize(rows)} - {None}
    return ", ".join(sorted(names)) or "none"


def plot_runs(rows: list[dict], path) -> None:
    """The test score per arm: one dot per seed and the mean ± std as an error bar (no bars: the y axis is cut to
    the data's range, and cut bars would exaggerate differences), with the plain trunk's mean as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric, greater_is_better = metric_of(rows)
    scale = 100 if _is_fraction(metric) else 1
    summary = summarize(rows)
    fig, axis = plt.subplots(figsize=(1.1 * len(summary) + 2, 4))
    for index, entry in enumerate(summary):
        values = [scale * float(r["test_score"]) for r in rows if r["arm"] == entry["arm"]]
        offsets = [0.25 * (k - (len(values) - 1) / 2) / max(len(values) - 1, 1) for k in range(len(values))]
        axis.plot([index + o for o in offsets], values, "o", color="black", markersize=3, alpha=0.6)
        colour = "tab:gray" if entry["arm"] == BASELINE else "tab:blue"
        axis.errorbar(index + 0.25, scale * entry["test"][0], yerr=scale * entry["test"][1], fmt="D", color=colour,
                      capsize=4, markersize=6)
    if summary and summary[0]["arm"] == BASELINE:
        axis.axhline(scale * summary[0]["test"][0], color="tab:gray", linestyle="--", linewidth=1, label="none (mean)")
        axis.legend(loc="lower right" if greater_is_better else "upper right")
    all_values = [scale * float(r["test_score"]) for r in rows]
    margin = 0.05 * (max(all_values) - min(all_values) or max(abs(max(all_values)), 1e-3))
    low, high = min(all_values) - 3 * margin, max(all_values) + 2 * margin
    axis.set_ylim(max(0, low) if scale == 100 else low, min(100, high) if scale == 100 else high)
    axis.set_xticks(range(len(summary)), [e["arm"] for e in summary], rotation=30, ha="right")
    label = f"test {metric}{' (%)' if scale == 100 else ''}"
    axis.set_ylabel(label)
    axis.set_title(f"{label} per arm ({'higher' if greater_is_better else 'lower'} is better; dots: seeds; diamond "
                   "and bar: mean ± std)", fontsize=9)
    axis.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- information filtering (paper section 4) ----------------------------------------------------------------
# Masked digits are seen at their drawn 32 px in 4 px patches: an 8 x 8 token grid, fine enough for masks to mean
# something, with the main job's 2-layer trunk. No flips or crops (train's default outside `digits`): they change
# or cut the digit. (At 16 px with them, 4 epochs left both models at chance; so did this setting at 10 epochs.)
MASKED_TRUNK = dict(image_size=32, patch_size=4, trunk_layers=2)


def write_masked_digits_imagefolder(folder: Path, num_images: int, seed: int) -> None:
    """The masked-digits builtin as class folders of PNGs, so `train` reads it as `imagefolder:`."""
    from ..data.masked_digits import masked_digits_arrays
    from PIL import Image

    images, _masks, labels = masked_digits_arrays(num_images=num_images, seed=seed)
    for index, (image, label) in enumerate(zip(images, labels)):
        target = folder / str(int(label))
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(target / f"{index:05d}.png")


def miou_study(base, runs_dir: Path, train_images: int, eval_images: int, quick: bool, epochs: float = 10,
               log=print) -> list[dict]:
    """Train "none" and "llm" (seed 0) on masked digits with the study's recipe, then score the token maps of
    each stage against the exact digit masks of held-out images (pseudo-mask mIoU, paper section 4)."""
    import copy
    from dataclasses import replace

    import numpy as np

    from ..data.masked_digits import load_masked_digits
    from ..training.loading import load_trained_model
    from .maps import miou_rows
    from .report import analyse_model

    folder = runs_dir / "masked-digits-train"
    if folder.exists():
        shutil.rmtree(folder)
    # Training images come from another seed than the scored ones (seed 0, as `analyze` uses).
    write_masked_digits_imagefolder(folder, train_images, seed=1)
    base = copy.deepcopy(base)
    base.data = replace(base.data, dataset=f"imagefolder:{folder}", augment="off")
    if base.model.trunk in (None, "vit-tiny", "vit-small", "vit-base"):
        base.model = replace(base.model, **MASKED_TRUNK)
    if not quick:
        # Textured backgrounds need longer than the digits arms' budget before the maps mean anything (4 epochs
        # left both models at chance, 12-13 %); both models share this budget.
        base.training.num_train_epochs, base.training.max_steps = epochs, -1
    base.argv = [*base.argv, "--dataset", f"imagefolder:{folder}", "--augment", "off"]

    held_out = load_masked_digits(num_images=eval_images, seed=0)
    examples = [{"image": image.convert("RGB")} for image in held_out["image"]]
    masks = [np.asarray(mask) != 0 for mask in held_out["mask"]]
    rows, pixels_done = [], False
    for name in ("none", "llm"):
        arm = ARM_BY_NAME[name]
        output_dir = str(runs_dir / f"masked-digits-{name}-seed0")
        log(f"[ablate] mIoU: training {name} on masked digits")
        metrics = run_training(arm_arguments(base, arm, resolve_layers(arm.layers, 0), 0, output_dir))
        task, model, processor = load_trained_model(output_dir)
        activations, attention, pixels, _ = analyse_model(task, model, processor, examples, batch_size=64,
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
    lines = ["| model | stage | magnitude | frequency | CLS attention |", "|---|---|---:|---:|---:|"]
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
    metric, greater_is_better = metric_of(rows)
    llm = next((r["llm"] for r in rows if r["llm"]), "none")
    unit = "in %, " if _is_fraction(metric) else ""
    lines = [
        "# Ablation study (generated by `hf-frozenlm ablate`)",
        "",
        f"Command: `{command}`",
        "",
        f"Task `{first.get('task', 'image-classification')}`, dataset `{first['dataset']}`, trunk `{first['trunk']}`, "
        f"LLM `{llm}`, {first['budget']} per run (one shared recipe, no per-arm tuning), seeds "
        f"{', '.join(map(str, seeds))}. Total wall time {total_s / 60:.1f} min. hf_frozenlm {env['hf_frozenlm']}, "
        f"torch {env['torch']}, transformers {env['transformers']}, " + _commit_note(rows, env)
        + (f" (uncommitted edits in: {env['git_dirty'].replace(';', ', ')})" if env["git_dirty"] else "") + ".",
        "",
        "<!-- table: generated from ablation_runs.csv by hf_frozenlm.analysis.ablation.markdown_table -->",
        markdown_table(rows).rstrip("\n"),
        "<!-- end table -->",
        "",
        f"{'Accuracy' if metric == 'accuracy' else metric} {unit}mean ± sample standard deviation over seeds "
        f"({'higher' if greater_is_better else 'lower'} is better). Δ: the arm's test score minus the plain trunk's on "
        f"the same seed (same split, same seed for initialisation and data order), mean ± std"
        f"{' in percentage points' if _is_fraction(metric) else ''}; better/seeds counts seeds where the arm beat "
        f"`none`; p: two-sided {test_name_used(rows)} of the paired differences against zero. s/run: wall seconds per "
        "run including model building and evaluation.",
        "",
    ]
    if miou_md:
        lines += ["## Information filtering (paper section 4): pseudo-mask mIoU on masked digits", "",
                  "\"none\" and \"llm\" trained (seed 0) on the masked-digits builtin with the same recipe; each "
                  "stage's token map scored against the exact digit masks, best threshold per image. Higher = the "
                  "map singles out the digit.", "", miou_md]
    return "\n".join(lines)


def run_study(base, arms: list[str], seeds: list[int], out: Path, runs_dir: Path, command: str, quick: bool = False,
              miou: bool = True, resume: bool = False, miou_train_images: int = 3000, miou_eval_images: int = 256,
              miou_epochs: float = 10, log=print) -> dict:
    """Train every arm x seed from the base TrainArguments, write the CSV after each run, then the table, plot and
    (image classification only) the mIoU part. Returns the paths written."""
    task = base.task
    miou = miou and task.name == "image-classification"
    if quick:
        miou_train_images, miou_eval_images = min(miou_train_images, 200), min(miou_eval_images, 32)
    out.mkdir(parents=True, exist_ok=True)
    runs_dir.mkdir(parents=True, exist_ok=True)
    env = environment()
    depth = llm_depth(base.model) if any(ARM_BY_NAME[a].layers == "middle" for a in arms) else 0
    csv_path = out / "ablation_runs.csv"
    rows = read_runs_csv(csv_path) if resume and csv_path.exists() else []
    done = {(r["arm"], int(r["seed"])) for r in rows}
    trunk, _ = task.trunk(base.model, base.data)
    metric = task.primary_metric

    started = time.perf_counter()
    previous_total = sum(float(r["wall_s"]) for r in rows)
    for seed in seeds:  # seed-major: an interrupted study still has complete pairs for the seeds it finished
        for name in arms:
            if (name, seed) in done:
                continue
            arm = ARM_BY_NAME[name]
            layers = resolve_layers(arm.layers, depth) if arm.variant != "none" else []
            arguments = arm_arguments(base, arm, layers, seed, str(runs_dir / f"{name}-seed{seed}"))
            train_command = "hf-frozenlm train " + shlex.join(redact_argv(arguments.argv))
            log(f"[ablate] {name} seed {seed}: {train_command}")
            tic = time.perf_counter()
            metrics = run_training(arguments)
            wall = time.perf_counter() - tic
            drop_weights(arguments.training.output_dir)
            rows.append(dict(
                arm=name, variant=arm.variant, llm_layers=" ".join(map(str, layers)),
                llm_trainable=arm.llm_trainable, seed=seed, metric=metric,
                test_score=f"{metrics['test'][metric]:.6f}", val_score=f"{metrics['validation'][metric]:.6f}",
                test_loss=f"{metrics['test']['loss']:.6f}",
                train_runtime_s=f"{metrics['train']['train_runtime']:.1f}", wall_s=f"{wall:.1f}",
                task=task.name, dataset=task.dataset_name(base.data), trunk=str(trunk),
                llm="" if arm.variant == "none" else base.model.llm,
                budget=describe_budget(base.training), command=command, train_command=train_command, **env,
            ))
            write_runs_csv(rows, csv_path)
            log(f"[ablate] {name} seed {seed}: test {metric} {metrics['test'][metric]:.4f}, "
                f"validation {metrics['validation'][metric]:.4f}, {wall:.0f} s")
    rows = [r for r in rows if r["arm"] in arms and int(r["seed"]) in seeds]
    write_runs_csv(rows, csv_path)
    plot_runs(rows, out / "ablation.png")
    miou_md = None
    if miou:
        miou_rows_ = miou_study(base, runs_dir, miou_train_images, miou_eval_images, quick, miou_epochs, log=log)
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
    """The command line as a user would type it again (secrets redacted)."""
    return ("hf-frozenlm ablate " + shlex.join(redact_argv(argv))).strip()
