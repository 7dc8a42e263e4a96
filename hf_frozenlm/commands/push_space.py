"""`hf-frozenlm push-space`: upload the Gradio demo in `spaces/` as a Space that shows a published model.

    hf-frozenlm push-space your-name/vit-llama-demo --model your-name/vit-llama-digits
    hf-frozenlm push-space your-name/vit-llama-demo --model your-name/vit-llama-digits --dry-run space/
    hf-frozenlm push-space your-name/frozenlm-demo --model your-name/digits --model your-name/shapes3d  # a tab each

The Space gets the variable MODEL_ID=<model>[,<model>...] and lists the models under `models:` in its card (the
app reads either). The package modules the app imports (frozenlm_maps.py, frozenlm_motion_plot.py) are copied
beside app.py and its tab modules.
"""

from __future__ import annotations

import sys

from . import CommandParser


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="hf-frozenlm push-space", description="Upload the Gradio app in spaces/ as a Hub Space pointing at a model."
    )
    parser.add_argument("repo_id", metavar="REPO_ID", help="Hub Space repo, e.g. your-name/vit-llama-demo")
    parser.add_argument("--model", required=True, action="append", metavar="MODEL_REPO_ID",
                        help="a Hub model the Space shows (of any task); repeat it for a tab per model")
    parser.add_argument("--private", action="store_true", help="create the Space private")
    parser.add_argument("--commit-message", help="commit message")
    parser.add_argument("--dry-run", metavar="OUT_DIR", help="write exactly the folder that would be uploaded to "
                        "OUT_DIR (new or empty) and upload nothing")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from ..hub.push import push_space

    result = push_space(args.repo_id, args.model, private=args.private, dry_run_dir=args.dry_run,
                        commit_message=args.commit_message)
    variables = ", ".join(f"{key}={value}" for key, value in result.space_variables.items())
    if result.folder is not None:
        print(f"Dry run: wrote {len(result.files)} files to {result.folder}; would set Space variables {variables} "
              "(nothing uploaded):")
    else:
        print(f"Uploaded {len(result.files)} files to https://huggingface.co/spaces/{result.repo_id}; set {variables}:")
    for name in result.files:
        print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
