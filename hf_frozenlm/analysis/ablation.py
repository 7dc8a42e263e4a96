"""The ablation study behind `hf-frozenlm ablate`: the paper's controls (section 3), one recipe per task, several
seeds, every task.

Every run is the ordinary training loop (`hf-frozenlm train`) on the task's own recipe; the study only varies the
block (variant, LLM layers, frozen or fine-tuned) and the seed. Runs go in this process (`jobs=1`) or in `jobs`
single-threaded `hf-frozenlm train` processes side by side. Each finished run becomes a row of one CSV shared by all
tasks (metrics, budget, precision, versions, commit, the exact train command) and its validation curve rows of a
second CSV; `ablation_report` turns both into the tables and plots of results/README.md, and `masked_digits_study`
adds the information-filtering part.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from ..errors import FrozenLMError
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
    StudyArm("none", "none", "", meaning="plain trunk"),
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

# What `ablate --task T` trains when --arms is not given: the method against the plain trunk everywhere, the paper's
# two controls (MLP, random block) on image classification and three other tasks, and the position / fine-tuning arms
# on image classification only (the cheapest task). These defaults are what results/ holds.
PAIR_ARMS = ("none", "llm")
CONTROL_ARMS = ("none", "llm", "mlp", "random-llm")
DEFAULT_ARMS: dict[str, tuple[str, ...]] = {
    "image-classification": tuple(arm.name for arm in ARMS),
    "video-classification": CONTROL_ARMS,
    "point-cloud-classification": CONTROL_ARMS,
    "motion-forecasting": PAIR_ARMS,
    "visual-question-answering": PAIR_ARMS,
    "image-text-retrieval": CONTROL_ARMS,
    "3d-question-answering": PAIR_ARMS,
}
DEFAULT_SEEDS = 5

# The study's options on top of each task's own recipe (its epochs, batch size, learning rate are the budget of
# `hf-frozenlm train --task T`, the main job for images), applied unless the user passed the option. Validation
# every epoch gives the curves that show whether the budget let the plain trunk converge; nothing is checkpointed
# and the final weights are scored, as in a plain `train` run.
STUDY_TRAINING_DEFAULTS = {
    "eval_strategy": "epoch",
    "save_strategy": "no",
    "logging_steps": 20,
    "disable_tqdm": "true",  # progress bars would bury the study's log
}
# Where a task's recipe stops while its plain trunk is still improving, the study trains longer (every arm alike), so
# that the comparison is between converged models (results/README.md's budgets table shows none's validation metric
# over the last quarter of each budget). Chosen from the curves of shorter studies, where none still gained 11 %
# minADE over the last quarter of 40 motion epochs, 5 pp over 10 video epochs (flat at 20), 3.7 pp over the point
# clouds' 30 and 2.5 pp over 3D QA's 10. Retrieval's plain trunk sits at ln 2 for several epochs before it starts
# to match; over 10 epochs the decaying learning rate ended most seeds there, over 30 (measured on seeds 0 and 1:
# validation loss 0.69 -> 0.40 and 0.06, flat over the last quarter) it escaped. The study then found motion at 100
# and retrieval at 30 still improving (two retrieval seeds left the plateau late; the plain motion trunk gained 8-16 %
# test minADE from 100 to 200 epochs and still 4-8 % over the last quarter of 200), hence 300 and 60.
STUDY_EPOCHS = {
    "video-classification": 20,
    "point-cloud-classification": 60,
    "motion-forecasting": 300,
    "3d-question-answering": 30,
    "image-text-retrieval": 60,
}
QUICK_TRAINING = {"max_steps": 2, "per_device_train_batch_size": 16, "per_device_eval_batch_size": 32,
                  "logging_steps": 1}
QUICK_DATA = {"max_train_samples": 64, "max_eval_samples": 32}

# Options the study sets per run; passing them through would make every arm the same.
CONTROLLED_OPTIONS = ("variant", "llm_layers", "llm_trainable", "seed", "output_dir", "overwrite_output_dir")

CSV_FIELDS = [
    "task", "arm", "variant", "llm_layers", "llm_trainable", "seed", "metric", "greater_is_better", "test_score",
    "val_score", "test_loss", "test_metrics", "epochs_run", "train_runtime_s", "wall_s", "threads", "precision",
    "dataset", "trunk", "llm", "budget", "hf_frozenlm", "torch", "transformers", "python", "cpu", "git_commit",
    "git_dirty", "command", "train_command",
]
CURVE_FIELDS = ["task", "arm", "seed", "epoch", "metric", "val_score"]


class StudyError(FrozenLMError):
    """Some runs of the study failed; the finished ones are kept (rerun with --resume)."""


def apply_study_defaults(arguments, argv: list[str], quick: bool = False):
    """The study's options (and the quick mode's) on the parsed training arguments, unless `argv` set the option.
    `arguments.argv` becomes the user's options plus the ones applied, so each run's recorded command reproduces it."""
    from ..training.arguments import option_given

    defaults = dict(STUDY_TRAINING_DEFAULTS)
    epochs = STUDY_EPOCHS.get(arguments.task.name)
    if epochs and not quick and not option_given(argv, "max_steps"):
        defaults["num_train_epochs"] = epochs
    defaults.update(QUICK_TRAINING if quick else {})
    applied = []
    for option, value in defaults.items():
        if not option_given(argv, option):
            setattr(arguments.training, option, value if value != "true" else True)
            applied += [f"--{option}", str(value)]
    if quick:
        for option, value in QUICK_DATA.items():
            if not option_given(argv, option):
                setattr(arguments.data, option, value)
                applied += [f"--{option}", str(value)]
    arguments.argv = [*argv, *applied]
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
def environment(outputs: Path | None = None) -> dict[str, str]:
    """Versions, the CPU and the git commit of the code that produced the numbers."""
    import torch
    import transformers

    from .. import __version__
    from ..training.precision import cpu_description

    root = Path(__file__).resolve().parents[2]
    commit, dirty = "unknown", ""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = ";".join(edited_files(root, outputs))
    except (OSError, subprocess.CalledProcessError):
        pass
    return dict(hf_frozenlm=__version__, torch=torch.__version__, transformers=transformers.__version__,
                python=platform.python_version(), cpu=cpu_description(), git_commit=commit, git_dirty=dirty)


def edited_files(root: Path, outputs: Path | None = None) -> list[str]:
    """Tracked files with uncommitted edits (the commit alone does not pin the code then), except those under
    `outputs`: the study's own CSVs and report, rewritten by an earlier task's study, are results, not code."""
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                            text=True, check=True).stdout.split("\n")
    skip = outputs.resolve() if outputs is not None else None
    paths = [(root / line[3:]).resolve() for line in status if line.strip()]
    return sorted(str(path.relative_to(root.resolve())) for path in paths
                  if skip is None or not path.is_relative_to(skip))


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


@dataclass
class PlannedRun:
    """One training run of a study: its arguments and what the CSV row records about it."""

    key: tuple  # what identifies the run in its CSV (arm, seed) or (stage, arm, seed)
    arguments: object  # TrainArguments
    layers: tuple[int, ...] = ()  # the LLM layers the arm resolved to (empty for the plain trunk)

    @property
    def output_dir(self) -> str:
        return self.arguments.training.output_dir

    @property
    def command(self) -> str:
        return "hf-frozenlm train " + shlex.join(redact_argv(self.arguments.argv))


@dataclass
class FinishedRun:
    run: PlannedRun
    metrics: dict
    curve: tuple[str, list[tuple[float, float]]]  # (metric, [(epoch, validation value)])
    wall_s: float
    threads: int


def run_threads(arguments) -> int:
    """The torch threads a run uses (`train`'s rule: --cpu_threads, else OMP_NUM_THREADS, else one)."""
    return int(arguments.run.cpu_threads or os.environ.get("OMP_NUM_THREADS") or 1)


def validation_curve(output_dir: str, metric: str) -> tuple[str, list[tuple[float, float]]]:
    """(metric, [(epoch, validation value)]) from the run's Trainer log (trainer_state.json). Tasks whose metric is
    computed over the whole split only after training (retrieval ranks every image against every text) give their
    validation loss per epoch instead."""
    path = Path(output_dir) / "trainer_state.json"
    if not path.exists():
        return metric, []
    history = json.loads(path.read_text(encoding="utf-8")).get("log_history", [])
    if not any(f"eval_{metric}" in entry for entry in history):
        metric = "loss"
    points = {}
    for entry in history:
        if f"eval_{metric}" in entry:
            # The loop's final evaluation of the same weights repeats the last epoch's entry: one point per epoch.
            points[float(entry["epoch"])] = float(entry[f"eval_{metric}"])
    return metric, sorted(points.items())


def run_in_process(run: PlannedRun) -> FinishedRun:
    from ..training.loop import train_task

    tic = time.perf_counter()
    metrics = train_task(run.arguments)
    wall = time.perf_counter() - tic
    return FinishedRun(run, metrics, validation_curve(run.output_dir, metrics["primary_metric"]), wall,
                       run_threads(run.arguments))


def run_in_subprocess(run: PlannedRun, log_path: Path) -> FinishedRun:
    """`hf-frozenlm train` with the run's exact command line in its own single-threaded process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # The study owns its run folders: a rerun replaces the old one (in this process `arm_arguments` sets the same).
    overwrite = [] if "--overwrite_output_dir" in run.arguments.argv else ["--overwrite_output_dir"]
    command = [sys.executable, "-m", "hf_frozenlm.cli", "train", *run.arguments.argv, *overwrite]
    tic = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        status = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    wall = time.perf_counter() - tic
    metrics_path = Path(run.output_dir) / "metrics.json"
    if status != 0 or not metrics_path.exists():
        raise StudyError(f"run {run.key} failed (exit status {status}); its log: {log_path}")
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    return FinishedRun(run, metrics, validation_curve(run.output_dir, metrics["primary_metric"]), wall, 1)


def execute_runs(runs: list[PlannedRun], jobs: int, logs_dir: Path, on_finished, log=print) -> None:
    """Train every run: in this process one after the other (jobs=1) or in `jobs` single-threaded processes side
    by side. `on_finished(FinishedRun)` is called as each ends (in this thread), so the CSV grows run by run; failed
    runs are reported together at the end, after the others finished."""
    failures = []
    if jobs <= 1:
        for run in runs:
            log(f"[ablate] {run.key}: {run.command}")
            on_finished(run_in_process(run))
        return
    logs_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {}
        for run in runs:
            log_path = logs_dir / (Path(run.output_dir).name + ".log")
            log(f"[ablate] {run.key} queued (log {log_path}): {run.command}")
            futures[pool.submit(run_in_subprocess, run, log_path)] = run
        for future in as_completed(futures):
            try:
                on_finished(future.result())
            except StudyError as error:
                failures.append(str(error))
                log(f"[ablate] {error}")
    if failures:
        raise StudyError(f"{len(failures)} run(s) failed: " + "; ".join(failures)
                         + ". The finished runs are in the CSV; rerun with --resume to train only the missing ones.")


def drop_weights(run_dir: str) -> None:
    """Keep a run folder's metrics, config and card; the weights of hundreds of runs are not worth the disk."""
    for path in Path(run_dir).glob("*.safetensors"):
        path.unlink()


# -- the CSVs ---------------------------------------------------------------------------------------------
def write_csv(rows: list[dict], path, fields: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({field: row.get(field, "") for field in fields})


def read_csv(path) -> list[dict]:
    if not Path(path).exists():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def read_runs_csv(path) -> list[dict]:
    return read_csv(path)


def study_order(rows: list[dict]) -> list[dict]:
    """Rows sorted by task (registry order), arm (study order), seed: the CSV's order whatever order runs ended in."""
    from ..tasks import TASK_NAMES

    arm_rank = {arm.name: index for index, arm in enumerate(ARMS)}
    task_rank = {name: index for index, name in enumerate(TASK_NAMES)}
    return sorted(rows, key=lambda r: (task_rank.get(r["task"], 99), r["task"], arm_rank.get(r["arm"], 99), r["arm"],
                                       int(r["seed"]), float(r.get("epoch") or 0)))


def run_row(finished: FinishedRun, task, arm: StudyArm, layers: list[int], base, trunk: str, command: str,
            env: dict) -> dict:
    metrics, arguments = finished.metrics, finished.run.arguments
    metric = task.primary_metric
    # Every test metric the task reports (minADE, minFDE, miss rate; R@1/5/10; ...), without timing figures.
    test_metrics = {name: round(float(value), 6) for name, value in metrics["test"].items()
                    if isinstance(value, (int, float)) and "runtime" not in name and "per_second" not in name}
    return dict(
        task=task.name, arm=arm.name, variant=arm.variant, llm_layers=" ".join(map(str, layers)),
        llm_trainable=arm.llm_trainable, seed=arguments.training.seed, metric=metric,
        greater_is_better=task.greater_is_better,
        test_score=f"{metrics['test'][metric]:.6f}", val_score=f"{metrics['validation'][metric]:.6f}",
        test_loss=f"{metrics['test']['loss']:.6f}", test_metrics=json.dumps(test_metrics, sort_keys=True),
        epochs_run=f"{metrics['train'].get('epoch', float('nan')):g}",
        train_runtime_s=f"{metrics['train']['train_runtime']:.1f}", wall_s=f"{finished.wall_s:.1f}",
        threads=finished.threads, precision="bf16 autocast" if arguments.training.bf16 else "fp32",
        dataset=metrics.get("dataset", ""), trunk=str(trunk), llm="" if arm.variant == "none" else base.model.llm,
        budget=describe_budget(base.training), command=command, train_command=finished.run.command, **env,
    )


def curve_rows(finished: FinishedRun, task_name: str, arm: str) -> list[dict]:
    seed = finished.run.arguments.training.seed
    metric, points = finished.curve
    return [dict(task=task_name, arm=arm, seed=seed, epoch=f"{epoch:g}", metric=metric, val_score=f"{value:.6f}")
            for epoch, value in points]


# -- the study ----------------------------------------------------------------------------------------------
def parse_study_arguments(argv: list[str], output_dir: str | None = None):
    """TrainArguments from argv, which they keep as their command line (a placeholder output_dir is parsed, not
    recorded: `arm_arguments` adds each run's own)."""
    from ..training.arguments import parse_train_arguments

    arguments = parse_train_arguments([*argv, *(["--output_dir", output_dir] if output_dir else [])])
    arguments.argv = list(argv)
    return arguments


def plan_runs(base, arms: list[str], seeds: list[int], runs_dir: Path, skip: set) -> list[PlannedRun]:
    """Seed-major (an interrupted study still has complete pairs for the seeds it finished), minus `skip`."""
    depth = llm_depth(base.model) if any(ARM_BY_NAME[a].layers == "middle" for a in arms) else 0
    runs = []
    for seed in seeds:
        for name in arms:
            if (name, seed) in skip:
                continue
            arm = ARM_BY_NAME[name]
            layers = resolve_layers(arm.layers, depth) if arm.variant != "none" else []
            output_dir = str(runs_dir / f"{name}-seed{seed}")
            runs.append(PlannedRun((name, seed), arm_arguments(base, arm, layers, seed, output_dir), tuple(layers)))
    return runs


def run_study(base, arms: list[str], seeds: list[int], out: Path, runs_dir: Path, command: str, resume: bool = False,
              jobs: int = 1, log=print) -> dict:
    """Train every arm x seed of one task from the base TrainArguments into OUT/ablation_runs.csv (shared by all
    tasks: the other tasks' rows are kept) and OUT/ablation_curves.csv, the CSVs rewritten after each run. Without
    `resume` this task's rows for these arms and seeds are trained again; with it only the missing ones."""
    task = base.task
    out.mkdir(parents=True, exist_ok=True)
    runs_dir.mkdir(parents=True, exist_ok=True)
    env = environment(outputs=out)
    csv_path, curves_path = out / "ablation_runs.csv", out / "ablation_curves.csv"
    planned = {(name, seed) for name in arms for seed in seeds}

    def replaced(row) -> bool:
        return row["task"] == task.name and (row["arm"], int(row["seed"])) in planned and not resume

    rows = [r for r in read_runs_csv(csv_path) if not replaced(r)]
    curves = [r for r in read_csv(curves_path) if not replaced(r)]
    done = {(r["arm"], int(r["seed"])) for r in rows if r["task"] == task.name}
    trunk, _ = task.trunk(base.model, base.data)
    runs = plan_runs(base, arms, seeds, runs_dir, skip=done if resume else set())
    log(f"[ablate] {task.name}: {len(runs)} run(s) to train, {jobs} at a time"
        + (f", {len(done & planned)} kept from {csv_path}" if resume else ""))

    def finished(result: FinishedRun) -> None:
        name, seed = result.run.key
        arm = ARM_BY_NAME[name]
        rows.append(run_row(result, task, arm, list(result.run.layers), base, trunk, command, env))
        curves.extend(curve_rows(result, task.name, name))
        drop_weights(result.run.output_dir)
        write_csv(study_order(rows), csv_path, CSV_FIELDS)
        write_csv(study_order(curves), curves_path, CURVE_FIELDS)
        log(f"[ablate] {task.name} {name} seed {seed}: test {task.primary_metric} "
            f"{result.metrics['test'][task.primary_metric]:.4f}, {result.wall_s:.0f} s")

    started = time.perf_counter()
    execute_runs(runs, jobs, runs_dir / "logs", finished, log=log)
    return dict(csv=csv_path, curves=curves_path, elapsed_s=time.perf_counter() - started, trained=len(runs))


def study_command(argv: list[str]) -> str:
    """The command line as a user would type it again (secrets redacted)."""
    return ("hf-frozenlm ablate " + shlex.join(redact_argv(argv))).strip()
