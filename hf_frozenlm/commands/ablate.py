"""`hf-frozenlm ablate`: does the frozen block help? The paper's controls, each task's own recipe, several seeds.

    hf-frozenlm ablate --task image-classification          # reproduces results/ for that task (offline)
    hf-frozenlm ablate --task motion-forecasting --jobs 2   # two single-threaded runs side by side
    hf-frozenlm ablate --task video-classification --resume # train only the runs missing from the CSV
    hf-frozenlm ablate --quick                              # one seed, 2 steps per run: checks the pipeline only
    hf-frozenlm ablate --dataset imagefolder:PATH --llm HuggingFaceTB/SmolLM2-360M --out my-results

Every option that `hf-frozenlm train` takes is passed to every run alike (task, dataset, LLM, trunk, recipe); the
study sets --variant, --llm_layers, --llm_trainable, --seed and --output_dir per run and compares the task's primary
metric. All tasks share OUT/ablation_runs.csv (every run, with versions, CPU, precision and the git commit) and
OUT/ablation_curves.csv (validation per epoch); OUT/README.md's generated tables and OUT/ablation*.png are redrawn
from them after each study, and for images OUT/miou.csv (paper section 4) too.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import CommandParser


def build_parser() -> CommandParser:
    from ..analysis.ablation import ARMS, DEFAULT_ARMS, DEFAULT_SEEDS, STUDY_EPOCHS, STUDY_TRAINING_DEFAULTS

    arms = "\n".join(f"  {arm.name:<14} {arm.meaning}" for arm in ARMS)
    defaults = "\n".join(f"  {task:<27} {' '.join(names)}" for task, names in DEFAULT_ARMS.items())
    budget = ", ".join(f"--{k} {v}" for k, v in STUDY_TRAINING_DEFAULTS.items())
    longer = ", ".join(f"{task} {epochs} epochs" for task, epochs in STUDY_EPOCHS.items())
    parser = CommandParser(
        prog="hf-frozenlm ablate", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[0],
        epilog=f"arms:\n{arms}\n\ndefault arms per task:\n{defaults}\n\nEvery other option goes to "
               f"`hf-frozenlm train` for every run (see `hf-frozenlm train --help`); the budget is the task's own "
               f"recipe, except {longer}. Study options on top of it: {budget}.",
    )
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS,
                        help=f"seeds per arm, 0..N-1 (default {DEFAULT_SEEDS})")
    parser.add_argument("--seed_list", type=int, nargs="+", help="explicit seeds instead of 0..N-1")
    parser.add_argument("--arms", nargs="+", choices=[arm.name for arm in ARMS],
                        help="arms to train (default: the task's, listed below); 'none' is needed for the paired "
                             "differences")
    parser.add_argument("--out", default="results",
                        help="folder of the shared CSVs, README.md tables, plots and mIoU (default results)")
    parser.add_argument("--runs_dir", default="runs/ablate",
                        help="parent of the run folders, one sub-folder per task (weights deleted, metrics kept)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs trained side by side, each in its own single-threaded process (default 1: one "
                             "after the other in this process); up to the number of cores")
    parser.add_argument("--quick", action="store_true",
                        help="short mode: seed 0 only (unless --seed_list), 2 steps per run on 64 images (tests the "
                             "pipeline only)")
    parser.add_argument("--no_miou", action="store_true",
                        help="skip the information-filtering part: masked-digits mIoU (image classification) or "
                             "cluttered point clouds (point-cloud classification on its builtin)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs already in OUT/ablation_runs.csv (and the mIoU's) and train only the "
                             "missing ones")
    return parser


def main(argv: list[str]) -> int:
    from ..analysis.ablation import CONTROLLED_OPTIONS, DEFAULT_ARMS, apply_study_defaults, run_study, study_command
    from ..analysis.ablation_report import write_report
    from ..errors import UsageError
    from ..training.arguments import option_given, parse_train_arguments

    parser = build_parser()
    args, train_argv = parser.parse_known_args(argv)
    controlled = [option for option in CONTROLLED_OPTIONS if option_given(train_argv, option)]
    if controlled:
        raise UsageError("the study sets these per run; do not pass them: " + ", ".join(f"--{o}" for o in controlled))
    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: pass 1 or more runs at a time.")
    out, runs_root = Path(args.out), Path(args.runs_dir)
    # Every other option goes to the training runs: parsed and checked now, not after the first runs.
    base = parse_train_arguments(train_argv + ["--output_dir", str(runs_root / "unused")])
    apply_study_defaults(base, train_argv, quick=args.quick)
    arms = args.arms or list(DEFAULT_ARMS.get(base.task.name, ("none", "llm")))
    seeds = args.seed_list or list(range(1 if args.quick else args.seeds))
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO,
                        stream=sys.stdout)
    logging.getLogger("transformers").setLevel(logging.WARNING)
    command = study_command(argv)
    runs_dir = runs_root / base.task.name
    run_study(base, arms, seeds, out, runs_dir, command=command, resume=args.resume, jobs=args.jobs)
    if base.task.name == "image-classification" and not args.no_miou:
        from ..analysis.masked_digits_study import run_masked_digits_study

        run_masked_digits_study(base, seeds, out, runs_root / "masked-digits", command=command, quick=args.quick,
                                resume=args.resume, jobs=args.jobs)
    on_builtin = base.task.dataset_name(base.data) == base.task.builtin
    if base.task.name == "point-cloud-classification" and on_builtin and not args.no_miou:
        from ..analysis.cluttered_points_study import run_cluttered_points_study

        run_cluttered_points_study(base, seeds, out, runs_root / "cluttered-points", command=command,
                                   quick=args.quick, resume=args.resume, jobs=args.jobs)
    written = write_report(out)
    print(f"[ablate] wrote {', '.join(str(path) for path in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
