"""`hf-frozenlm predict --model RUN INPUT...`: run a trained model of any task on input files (text, or --json).

    hf-frozenlm predict --model runs/digits sketch.png --top_k 3
    hf-frozenlm predict --model runs/moving-shapes clip.mp4
    hf-frozenlm predict --model runs/shapes3d cloud.ply
    hf-frozenlm predict --model runs/road-scenes scene.json --output_dir plots/      # + a PNG of each forecast
    hf-frozenlm predict --model runs/shapes-vqa image.png --question "what color is the circle?"
    hf-frozenlm predict --model runs/shapes-captions image.png --texts "a red square" "two blue circles"
    hf-frozenlm predict --model runs/rooms-qa room.npz --question "how many balls are there?"

The task is read from the saved config; what INPUT is and the extra options depend on it (`--model RUN --help`).
"""

from __future__ import annotations

import argparse
import json
import sys

from . import CommandParser


def build_parser(task=None) -> argparse.ArgumentParser:
    parser = CommandParser(prog="hf-frozenlm predict", description=__doc__.split("\n\n")[0],
                                     epilog=f"INPUT for {task.name}: {task.input_help}" if task else None)
    parser.add_argument("--model", required=True, help="a folder written by `hf-frozenlm train` or `merge`")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="input files (what they are depends on the task)")
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of text")
    parser.add_argument("--output_dir", "--output-dir", help="where to write files some tasks draw (motion: PNGs)")
    if task is not None:
        task.add_predict_arguments(parser)
    return parser


def main(argv: list[str]) -> int:
    from ..training.loading import load_trained_model, task_of_folder

    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--model")
    model_dir = peek.parse_known_args(argv)[0].model
    task = task_of_folder(model_dir) if model_dir else None
    options = build_parser(task).parse_args(argv)
    task.check_predict_options(options)
    task, model, processor = load_trained_model(options.model)
    inputs = task.read_inputs(options.inputs, options)
    results = task.predict(model, processor, inputs, options)
    written = task.write_prediction_files(results, inputs, options)
    if options.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            print(task.format_prediction(result))
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
