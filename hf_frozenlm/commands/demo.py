"""`hf-frozenlm demo`: the Space's Gradio app on this machine.

    hf-frozenlm demo                                  # the default training run (runs/digits-vit-tiny-llm)
    hf-frozenlm demo --model runs/x --baseline runs/y --port 7861

The app is spaces/app.py itself (installed as hf_frozenlm.spaces.app), so what runs here is what the Space runs.
"""

from __future__ import annotations

import argparse
import os
import sys


def default_run_dir() -> str:
    """The folder `hf-frozenlm train` writes with its default options."""
    from .train import build_parser, default_output_dir

    model_args, data_args, *_ = build_parser().parse_args_into_dataclasses(args=[])
    return default_output_dir(model_args, data_args)


def is_model_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json"))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hf-frozenlm demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a saved model folder or Hub id (default: the default training run's folder)")
    parser.add_argument("--baseline", help="a second model shown beside it, e.g. the plain trunk (variant none)")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 to serve your network)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    args = parser.parse_args(argv)

    model = args.model
    if model is None:
        model = default_run_dir()
        if not is_model_dir(model):
            print(
                f"hf-frozenlm demo: no trained model in {model!r} (the default training run's folder).\n"
                "Train one with `make train` (or `hf-frozenlm train`), or pass --model DIR with a saved model.",
                file=sys.stderr,
            )
            return 1
    for option, path in (("--model", model), ("--baseline", args.baseline)):
        # A path-like value that is not a folder is a typo far more often than a Hub id.
        if path and (os.path.sep in path.rstrip(os.path.sep) or path.startswith(".")) and not os.path.isdir(path):
            print(f"hf-frozenlm demo: {option} {path!r}: no such folder.", file=sys.stderr)
            return 1
        if path and os.path.isdir(path) and not is_model_dir(path):
            print(f"hf-frozenlm demo: {option} {path!r} has no config.json: it is not a saved model folder.",
                  file=sys.stderr)
            return 1

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from hf_frozenlm.spaces import app

    app.configure_torch()
    demo = app.build_demo(model, args.baseline)
    print(f"hf-frozenlm demo: serving {model}" + (f" beside {args.baseline}" if args.baseline else ""))
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **app.LAUNCH_OPTIONS)
    return 0
