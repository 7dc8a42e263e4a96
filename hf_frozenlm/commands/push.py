"""`hf-frozenlm push`: publish a trained run to the Hugging Face Hub as one commit.

    hf-frozenlm push runs/digits your-name/vit-llama-digits
    hf-frozenlm push runs/digits your-name/vit-llama-digits --no-frozen-weights --revision slim
    hf-frozenlm push runs/digits your-name/vit-llama-digits --dry-run publish/   # writes the folder, uploads nothing

The token comes from HF_TOKEN or `hf auth login`, as everywhere in huggingface_hub.
"""

from __future__ import annotations

import sys

from . import CommandParser


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="hf-frozenlm push",
        description="Upload a trained run of any task (weights, config with auto_map, modeling code, processor and a "
        "model card with its evaluation results) to a Hub model repo, loadable with trust_remote_code=True.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run folder (save_pretrained output + its processor)")
    parser.add_argument("repo_id", metavar="REPO_ID", help="Hub model repo, e.g. your-name/vit-llama-digits")
    parser.add_argument(
        "--private", action="store_true", help="create the repo private (an existing repo keeps its visibility)"
    )
    parser.add_argument("--revision", help="branch to commit to (created from main if missing)")
    parser.add_argument("--commit-message", help="commit message (default: 'Upload <name> (hf_frozenlm)')")
    parser.add_argument(
        "--no-frozen-weights", dest="frozen_weights", action="store_false",
        help="slim checkpoint: leave the frozen LLM layers out; loading re-extracts them from the recorded LLM source "
        "and checks their sha256",
    )
    parser.add_argument("--dry-run", metavar="OUT_DIR", help="write exactly the folder that would be uploaded to "
                        "OUT_DIR (new or empty) and upload nothing")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from ..hub.push import push_to_hub

    result = push_to_hub(
        args.run_dir, args.repo_id, private=args.private, revision=args.revision,
        commit_message=args.commit_message, frozen_weights=args.frozen_weights, dry_run_dir=args.dry_run,
    )
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if result.folder is not None:
        print(f"Dry run: wrote {len(result.files)} files to {result.folder} (nothing uploaded):")
    else:
        where = f" (revision {result.revision})" if result.revision else ""
        print(f"Uploaded {len(result.files)} files to https://huggingface.co/{result.repo_id}{where}: "
              f"{result.commit_url or 'done'}")
    for name in result.files:
        print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
