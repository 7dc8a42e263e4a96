"""`hf-frozenlm ablate`: does the frozen block help? The paper's controls, one shared recipe, several seeds, any task.

    hf-frozenlm ablate                         # digits + SmolLM2-135M, 8 arms x 5 seeds, results/ (offline)
    hf-frozenlm ablate --seeds 3 --out results/
    hf-frozenlm ablate --quick                 # one seed, 2 steps per run: checks the pipeline, not the method
    hf-frozenlm ablate --task motion-forecasting --seeds 3 --out results/motion
    hf-frozenlm ablate --dataset imagefolder:PATH --llm HuggingFaceTB/SmolLM2-360M --num_train_epochs 20

Every option that `hf-frozenlm train` takes is passed to every run alike (task, dataset, LLM, trunk, recipe); the
study sets --variant, --llm_layers, --llm_trainable, --seed and --output_dir per run and compares the task's primary
metric. Writes ablation_runs.csv (every run, with versions and the git commit), ablation.md (mean ± std, paired
difference against the plain trunk, paired test), ablation.png, and for images miou.csv (paper section 4).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import CommandParser


def build_parser() -> CommandParser:
    from ..analysis.ablation import ARMS, STUDY_TRAINING_DEFAULTS

    arms = "\n".join(f"  {arm.name:<14} {arm.meaning}" for arm in ARMS)
    budget = ", ".join(f"--{k} {v}" for k, v in STUDY_TRAINING_DEFAULTS.items())
    parser = CommandParser(
        prog="hf-frozenlm ablate", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[0],
        epilog=f"arms:\n{arms}\n\nEvery other option goes to `hf-frozenlm train` for every run (see "
               f"`hf-frozenlm train --help`). Study defaults on top of the training ones: {budget}.",
    )
    parser.add_argument("--seeds", type=int, default=5, help="seeds per arm, 0..N-1 (default 5)")
    parser.add_argument("--seed_list", type=int, nargs="+", help="explicit seeds instead of 0..N-1")
    parser.add_argument("--arms", nargs="+", default=[arm.name for arm in ARMS], choices=[arm.name for arm in ARMS],
                        help="arms to train (default: all); 'none' is needed for the paired differences")
    parser.add_argument("--out", default="results", help="folder for the CSV, table, plot and mIoU (default results)")
    parser.add_argument("--runs_dir", default="runs/ablate",
                        help="folder for the individual run folders (weights are deleted, metrics kept)")
    parser.add_argument("--quick", action="store_true",
                        help="short mode: one seed, 2 steps per run on 64 images (tests the pipeline only)")
    parser.add_argument("--no_miou", action="store_true", help="skip the masked-digits mIoU part")
    parser.add_argument("--miou_epochs", type=float, default=10, help="epochs of the two mIoU models (default 10)")
    parser.add_argument("--miou_train_images", type=int, default=3000,
                        help="masked-digits images generated for the mIoU models (split 70/10/20 by train)")
    parser.add_argument("--miou_images", type=int, default=256, help="held-out masked-digits images scored")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs already in OUT/ablation_runs.csv and train only the missing ones")
    return parser


def main(argv: list[str]) -> int:
    from ..analysis.ablation import CONTROLLED_OPTIONS, apply_study_defaults, run_study, study_command
    from ..errors import UsageError
    from ..training.arguments import option_given, parse_train_arguments

    parser = build_parser()
    args, train_argv = parser.parse_known_args(argv)
    controlled = [option for option in CONTROLLED_OPTIONS if option_given(train_argv, option)]
    if controlled:
        raise UsageError("the study sets these per run; do not pass them: " + ", ".join(f"--{o}" for o in controlled))
    # Every other option goes to the training runs: parsed and checked now, not after the first runs.
    base = parse_train_arguments(train_argv + ["--output_dir", str(Path(args.runs_dir) / "unused")])
    base.argv = list(train_argv)
    apply_study_defaults(base, train_argv, quick=args.quick)
    seeds = args.seed_list or list(range(1 if args.quick else args.seeds))
    if args.quick:
        seeds = seeds[:1]
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO,
                        stream=sys.stdout)
    logging.getLogger("transformers").setLevel(logging.WARNING)
    written = run_study(base, args.arms, seeds, Path(args.out), Path(args.runs_dir), command=study_command(argv),
                        quick=args.quick, miou=not args.no_miou, resume=args.resume,
                        miou_train_images=args.miou_train_images, miou_eval_images=args.miou_images,
                        miou_epochs=args.miou_epochs)
    print(f"[ablate] wrote {args.out}/ablation_runs.csv, ablation.md, ablation.png"
          + (", miou.csv" if written["miou"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
