"""Benchmark: the Space's latency per image, maps included, on this CPU.

Two measurements per thread count, each the median and p90 over the example digits and a sketch:
  in-process  open/frame the image + processor + one forward with the map hooks + the four overlay tiles
              (demo_image.LoadedModel.classify, what the event handler runs);
  HTTP        a gradio_client call to the app served on 127.0.0.1: the above plus uploading the file, the
              queue and encoding the tiles; "+ tiles" also downloads the four tiles, which the client does
              one after another (a browser fetches them in parallel).
A third row, "gradio floor", is the HTTP time of a no-op app (image in, fixed label out) on the same machine:
the part of the HTTP time that is gradio and its client rather than this app.

The model: --model DIR, else the default training run (runs/digits-vit-tiny-llm) when it exists, else an
untrained model of the default run's architecture (latency depends on shapes, not on trained weights).

    python benchmarks/bench_demo_latency.py [--model DIR] [--threads 1 2] [--repeats 30]

Per tab (`--task T`, or `--task all`): the median and p90 of the tab's event handler (what a click runs: reading the
input, the processor, one forward with the map hooks, and the tiles, 3D view or plot) over the tab's shipped
examples, on one thread. The model is `--model DIR`, else one trained here by `hf-frozenlm train --task T` with the
task's builtin defaults (trunk, data, SmolLM2's last layer) for only `--train_steps` steps: latency depends on
shapes, not on accuracy. Results go to results/demo_latency.csv.

    python benchmarks/bench_demo_latency.py --task all [--repeats 30] [--train_steps 2]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from bench_common import machine_line, markdown_table, median, percentile, set_threads

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parents[1]


def default_architecture_model(folder: Path) -> str:
    """An untrained model shaped like the default training run's (digits trunk + SmolLM2's last layer)."""
    from hf_frozenlm import ViTLlamaForImageClassification
    from hf_frozenlm.tasks.image_classification import TASK, image_processor_for

    model = ViTLlamaForImageClassification.from_parts(
        "vit-tiny", "smollm2-135m", num_labels=10, trunk_kwargs=dict(TASK.builtin_trunk_kwargs),
        id2label={i: str(i) for i in range(10)}, label2id={str(i): i for i in range(10)},
    )
    model.save_pretrained(folder)
    image_processor_for(model.config).save_pretrained(folder)
    return str(folder)


# Per tab: its target (ms) from the issue that asked for the tabs, and the arguments of its examples' handler calls.
TAB_TARGETS_MS = {"image-classification": 300, "video-classification": 1000, "point-cloud-classification": 300,
                  "motion-forecasting": 1000, "visual-question-answering": 300, "image-text-retrieval": 300,
                  "3d-question-answering": 300}


def tab_example_calls(task: str) -> list[list]:
    """The handler arguments of each of the tab's shipped examples (questions and captions from options.json)."""
    import json

    folder = ROOT / "spaces" / "examples" / task
    if task == "image-classification":
        return [[str(path)] for path in sorted((ROOT / "spaces" / "examples").glob("*.png"))]
    options = json.loads((folder / "options.json").read_text(encoding="utf-8"))
    files = sorted(str(path) for path in folder.iterdir() if path.name != "options.json")
    if "question" in options:
        return [[path, options["question"][index % len(options["question"])]] for index, path in enumerate(files)]
    if "texts" in options:
        return [[path, "\n".join(options["texts"])] for path in files]
    if task == "motion-forecasting":  # scene JSON files: no lanes file beside them
        return [[path, None] for path in files]
    return [[path] for path in files]


def trained_builtin_model(task: str, steps: int, folder: Path) -> str:
    """`hf-frozenlm train --task T` with the task's builtin defaults, cut to `steps` steps."""
    from hf_frozenlm.cli import main as cli

    argv = ["train", "--task", task, "--output_dir", str(folder), "--max_steps", str(steps), "--eval_strategy", "no",
            "--save_strategy", "no", "--disable_tqdm", "true", "--report_to", "none"]
    if cli(argv) != 0:
        raise SystemExit(f"training the {task} model failed")
    return str(folder)


def measure_tabs(tasks: list[str], model: str | None, repeats: int, steps: int) -> int:
    """Handler median and p90 per tab, on one thread; prints a table and writes results/demo_latency.csv."""
    import csv

    from hf_frozenlm.spaces import app

    set_threads(1)
    print(machine_line())
    rows = []
    for task in tasks:
        folder = model or trained_builtin_model(task, steps, Path(tempfile.mkdtemp()) / task)
        demo = app.build_demo(folder)
        (served_task, api_name), = demo.served_tasks
        handler = next(fn.fn for fn in demo.fns.values() if fn.api_name == api_name)
        calls = tab_example_calls(served_task)
        for arguments in calls:  # warm-up: first calls pay for lazy initialisation
            handler(*arguments)
        times = []
        for index in range(repeats):
            start = time.perf_counter()
            handler(*calls[index % len(calls)])
            times.append((time.perf_counter() - start) * 1000)
        target = TAB_TARGETS_MS[served_task]
        rows.append([served_task, round(median(times), 1), round(percentile(times, 90), 1), target,
                     "yes" if percentile(times, 90) < target else "no"])
        print(f"{served_task}: median {median(times):.1f} ms, p90 {percentile(times, 90):.1f} ms", flush=True)
    header = ["tab", "handler median ms", "p90 ms", "target ms", "p90 under target"]
    print(markdown_table(header, rows))
    out = ROOT / "results" / "demo_latency.csv"
    previous = {}
    if out.is_file():  # one row per tab: measuring some tabs keeps the others' rows
        with open(out, newline="", encoding="utf-8") as handle:
            previous = {row[0]: row for row in list(csv.reader(handle))[1:]}
    previous.update({row[0]: [str(value) for value in row] for row in rows})
    order = list(TAB_TARGETS_MS)
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(sorted(previous.values(), key=lambda row: order.index(row[0])))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per input kind and thread count")
    parser.add_argument("--task", help="measure this tab's handler (a task name, or 'all' for every tab)")
    parser.add_argument("--train_steps", type=int, default=2, help="training steps of the model made per --task")
    args = parser.parse_args()
    if args.task:
        tasks = list(TAB_TARGETS_MS) if args.task == "all" else [args.task]
        unknown = sorted(set(tasks) - set(TAB_TARGETS_MS))
        if unknown:
            parser.error(f"--task {unknown[0]}: one of {', '.join(TAB_TARGETS_MS)} or all")
        return measure_tabs(tasks, args.model, args.repeats, args.train_steps)

    from gradio_client import Client, handle_file
    from PIL import Image

    from hf_frozenlm.commands.demo import default_run_dir
    from hf_frozenlm.spaces import app, demo_image

    model_dir, what = args.model, "given"
    if model_dir is None:
        model_dir = str(ROOT / default_run_dir())
        what = "default training run"
        if not os.path.isfile(os.path.join(model_dir, "config.json")):
            model_dir = default_architecture_model(Path(tempfile.mkdtemp()) / "model")
            what = "untrained, default run's architecture"
    examples = sorted((ROOT / "spaces" / "examples").glob("*.png"))
    sketch_path = Path(tempfile.mkdtemp()) / "sketch.png"
    canvas = Image.new("RGBA", (600, 600), (0, 0, 0, 0))
    canvas.paste((0, 0, 0, 255), (280, 80, 320, 520))  # a "1" drawn on a large canvas
    canvas.save(sketch_path)

    loaded = demo_image.LoadedModel.load(model_dir)
    demo = app.build_demo(model_dir)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **app.LAUNCH_OPTIONS)
    client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
    fetching_client = Client(f"http://127.0.0.1:{port}/", verbose=False)

    print(machine_line())
    print(f"model: {model_dir} ({what}); {loaded.description}")
    rows = []
    for threads in args.threads:
        set_threads(threads)
        for path in examples[:2]:  # warm-up: first calls pay for lazy initialisation
            loaded.classify(demo_image.open_upload(str(path)))
            client.predict(handle_file(str(path)), api_name="/predict")
        for label, prepare, call in (
            ("example digit", lambda i: demo_image.open_upload(str(examples[i % len(examples)])),
             lambda c, i: c.predict(handle_file(str(examples[i % len(examples)])), api_name="/predict")),
            ("sketch 600x600", lambda i: demo_image.sketch_to_image({"composite": str(sketch_path)}),
             lambda c, i: c.predict({"background": None, "layers": [], "composite": handle_file(str(sketch_path))},
                                    api_name="/predict_sketch")),
        ):
            in_process, http, http_tiles = [], [], []
            for i in range(args.repeats):
                start = time.perf_counter()
                loaded.classify(prepare(i))
                in_process.append((time.perf_counter() - start) * 1000)
            for times, each_client in ((http, client), (http_tiles, fetching_client)):
                for i in range(args.repeats):
                    start = time.perf_counter()
                    call(each_client, i)
                    times.append((time.perf_counter() - start) * 1000)
            rows.append([threads, label, median(in_process), percentile(in_process, 90), median(http),
                         percentile(http, 90), median(http_tiles)])
    demo.close()

    import gradio as gr

    with gr.Blocks() as floor:
        image, label = gr.Image(type="filepath"), gr.Label()
        gr.Button().click(lambda _path: {"0": 1.0}, image, label, api_name="predict")
    floor.queue(default_concurrency_limit=1)
    floor.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    floor_client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    times = []
    for i in range(args.repeats + 2):
        start = time.perf_counter()
        floor_client.predict(handle_file(str(examples[i % len(examples)])), api_name="/predict")
        times.append((time.perf_counter() - start) * 1000)
    floor.close()
    rows.append(["-", "gradio floor (no-op app)", None, None, median(times[2:]), percentile(times[2:], 90), None])
    print(markdown_table(["threads", "input", "in-process median ms", "p90 ms", "HTTP median ms", "p90 ms",
                          "HTTP + tiles median ms"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
