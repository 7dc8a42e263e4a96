"""`hf-frozenlm demo`: the Space's Gradio app on this machine, for models of any task (one tab per model).

    hf-frozenlm demo                                  # the default training run (runs/digits-vit-tiny-llm)
    hf-frozenlm demo --model runs/x --baseline runs/y --port 7861
    hf-frozenlm demo --model runs/digits --model runs/moving-shapes --model runs/shapes3d   # a tab each
    hf-frozenlm demo --model your-name/vit-llama-digits   # a Hub model (needs the network, or the local cache)

The app is spaces/app.py itself (installed as hf_frozenlm.spaces.app), so what runs here is what the Space runs.
"""

from __future__ import annotations

import os
import sys

from . import CommandParser


def default_run_dir() -> str:
    """The folder `hf-frozenlm train` writes with its default options."""
    from ..tasks import get_task
    from ..training.arguments import DataArguments, ModelArguments, default_output_dir

    return default_output_dir(get_task("image-classification"), ModelArguments(), DataArguments())


def check_model_argument(option: str, value: str, image_only: bool = False) -> None:
    """A local folder must hold a saved model of an hf_frozenlm task (an image classifier for --baseline); anything
    else must at least be a Hub id."""
    from ..errors import RunFolderError, UsageError
    from ..hub.cards import is_hub_id
    from ..training.loading import task_of_folder

    if os.path.isdir(value):
        if not os.path.isfile(os.path.join(value, "config.json")):
            raise RunFolderError(f"{option} {value!r} has no config.json: it is not a saved model folder.")
        task = task_of_folder(value)
        if image_only and task.name != "image-classification":
            raise UsageError(f"{option} {value!r} holds a {task.name} model; a baseline is shown beside an image "
                             "classifier. Pass it as another --model to give it its own tab.")
    elif not is_hub_id(value):
        raise UsageError(f"{option} {value!r}: no such folder, and not a Hub model id (namespace/name).")


def main(argv: list[str]) -> int:
    from ..errors import RunFolderError

    parser = CommandParser(prog="hf-frozenlm demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", help="a saved model folder or Hub id of any task; repeat it for a "
                        "tab per model (default: the default training run's folder)")
    parser.add_argument("--baseline", help="an image classifier shown beside the first image model, e.g. the plain "
                        "trunk (variant none)")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 to serve your network)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    args = parser.parse_args(argv)

    models = args.model
    if not models:
        models = [default_run_dir()]
        if not os.path.isfile(os.path.join(models[0], "config.json")):
            raise RunFolderError(
                f"no trained model in {models[0]!r} (the default training run's folder). Train one with `make train` "
                "(or `hf-frozenlm train`), or pass --model DIR with a saved model."
            )
    for model in models:
        check_model_argument("--model", model)
    if args.baseline:
        check_model_argument("--baseline", args.baseline, image_only=True)

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from hf_frozenlm.spaces import app

    app.configure_torch()
    try:
        demo = app.build_demo(models, args.baseline)
    except OSError as error:  # a Hub id that cannot be reached (offline, private, misspelt): transformers says which
        raise RunFolderError(f"cannot load the model: {error}") from error
    print(f"hf-frozenlm demo: serving {', '.join(models)}" + (f" beside {args.baseline}" if args.baseline else ""))
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **app.LAUNCH_OPTIONS)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
