"""The Space's tab per task: seven models trained by `hf-frozenlm train --task T` (a few steps, a tiny LLaMA as the
frozen layer) served by one app on 127.0.0.1; every tab answers its shipped example over HTTP as the task contract's
`predict` does, refuses a bad input (and each input kind's limit) with a message, runs from the assembled Space
folder where hf_frozenlm cannot be imported, and is driven in headless Chromium (pick the example, run, see the
answer; a screenshot per tab in test-artifacts/).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from heads_helpers import save_tiny_llama
from motion_helpers import write_argoverse_csv, write_lanes
from space_helpers import headless_chromium, needs_browser, served_locally

gr = pytest.importorskip("gradio")
pytest.importorskip("plotly")
from gradio_client import handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from hf_frozenlm.cli import main  # noqa: E402
from hf_frozenlm.spaces import app, demo_motion, demo_points, demo_video, demo_vilt  # noqa: E402
from hf_frozenlm.tasks import TASK_NAMES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "spaces" / "examples"
ARTIFACTS = ROOT / "test-artifacts"
QUICK = ["--max_steps", "2", "--max_train_samples", "16", "--max_eval_samples", "8", "--eval_strategy", "no",
         "--save_strategy", "no", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8",
         "--disable_tqdm", "true", "--report_to", "none"]


@pytest.fixture(scope="module")
def task_models(tmp_path_factory) -> dict[str, str]:
    """Task name -> a model folder written by `hf-frozenlm train --task T` (builtin data and trunk, tiny LLaMA).

    HF_FROZENLM_DEMO_MODELS=DIR serves DIR/<task> instead (e.g. runs/builtin from benchmarks/builtin_tasks.py: the
    builtin recipes with SmolLM2's last layer), which is how docs/demo_tabs.png shows trained models' answers.
    """
    trained = os.environ.get("HF_FROZENLM_DEMO_MODELS")
    if trained:
        return {task: str(Path(trained) / task) for task in TASK_NAMES}
    root = tmp_path_factory.mktemp("demo-task-models")
    llm = save_tiny_llama(root / "tiny-llama", seed=5)
    folders = {}
    for task in TASK_NAMES:
        folders[task] = str(root / task)
        assert main(["train", "--task", task, "--llm", llm, "--output_dir", folders[task], *QUICK]) == 0
    return folders


@pytest.fixture(scope="module")
def served(task_models):
    """(url, client, demo): one app with a tab per task."""
    with served_locally(app.build_demo([task_models[task] for task in TASK_NAMES])) as served:
        yield served


def example(task: str, pattern: str) -> str:
    return sorted(str(path) for path in (EXAMPLES / task).glob(pattern))[0]


def options_of(task: str) -> dict:
    return json.loads((EXAMPLES / task / "options.json").read_text(encoding="utf-8"))


# task -> (the tab's API name, its example's arguments as the handler takes them, the example file, and the predict
# options the task contract needs for the same input)
def example_call(task: str):
    if task == "image-classification":
        path = str(EXAMPLES / "digit_3.png")
        return "/predict", [path], path, []
    if task in ("video-classification", "point-cloud-classification"):
        path = example(task, {"video-classification": "*.webm", "point-cloud-classification": "*.npy"}[task])
        return "/" + app.API_NAMES[task], [path], path, []
    if task == "motion-forecasting":  # no lanes file: a scene JSON carries its own lanes
        path = example(task, "scene_*.json")
        return "/predict_motion", [path, None], path, []
    if task == "visual-question-answering":
        path, question = example(task, "*.png"), options_of(task)["question"][0]
        return "/predict_vqa", [path, question], path, ["--question", question]
    if task == "image-text-retrieval":
        path, texts = example(task, "*.png"), options_of(task)["texts"]
        return "/predict_retrieval", [path, "\n".join(texts)], path, ["--texts", *texts]
    path, question = example(task, "*.npz"), options_of(task)["question"][0]
    return "/predict_qa3d", [path, question], path, ["--question", question]


def over_http(api_name: str, arguments: list) -> list:
    """Handler arguments as gradio_client sends them: files uploaded."""
    return [handle_file(a) if isinstance(a, str) and os.path.isfile(a) else a for a in arguments]


def contract_prediction(folder: str, path: str, extra: list[str]) -> dict:
    """What `hf-frozenlm predict` says for the same input: the task contract's own reading and prediction."""
    from hf_frozenlm.training.loading import load_trained_model

    task, model, processor = load_trained_model(folder)
    parser = argparse.ArgumentParser()
    task.add_predict_arguments(parser)
    options = parser.parse_args(extra)
    options.inputs = [path]
    return task.predict(model, processor, task.read_inputs([path], options), options)[0]


@pytest.mark.parametrize("task", TASK_NAMES)
def test_each_tab_answers_its_example_as_predict_does(served, task_models, task):
    _, client, _ = served
    api_name, arguments, path, extra = example_call(task)
    result = client.predict(*over_http(api_name, arguments), api_name=api_name)
    reference = contract_prediction(task_models[task], path, extra)
    if task == "motion-forecasting":
        plot, modes, status = result
        with Image_open(plot) as image:
            assert image.size[0] >= 400  # the scene plot
        probabilities = [c["confidence"] for c in modes["confidences"]]
        assert probabilities == pytest.approx([f["probability"] for f in reference["forecasts"]], abs=1e-5)
        metrics = reference["future_metrics"]  # the evaluate metric module's Argoverse minADE / minFDE
        assert f"minADE **{metrics['minADE']:.2f} m**, minFDE **{metrics['minFDE']:.2f} m**" in status
        return
    labels, status = result[0], next(out for out in result if isinstance(out, str))  # the image tab adds baselines
    expected = reference["predictions"]
    if task == "image-text-retrieval":  # every caption, ranked
        assert [c["label"] for c in labels["confidences"]] == [p["text"] for p in expected]
        assert [c["confidence"] for c in labels["confidences"]] == pytest.approx([p["score"] for p in expected],
                                                                                abs=1e-4)
        assert status.startswith(f"Best caption **{expected[0]['text']}**")
        return
    assert [c["label"] for c in labels["confidences"]] == [str(p["label"]) for p in expected]
    assert [c["confidence"] for c in labels["confidences"]] == pytest.approx([p["score"] for p in expected], abs=1e-4)
    assert f"**{expected[0]['label']}**" in status
    if task in ("video-classification", "visual-question-answering", "image-classification"):
        tiles = result[1]  # token maps over the frames / image, at the trunk's output and after the block
        captions = [tile["caption"] for tile in tiles]
        assert any("after block" in caption for caption in captions) and any("trunk" in c for c in captions)
    if task in ("point-cloud-classification", "3d-question-answering"):
        figure = json.loads(result[1]["plot"])  # the plotly 3D view, one point per model input point
        scatter = figure["data"][0]
        assert scatter["type"] == "scatter3d" and len(scatter["x"]) == len(scatter["marker"]["color"]) > 0


def test_motion_tab_reads_an_argoverse_csv_with_its_lanes_as_predict_does(served, task_models, tmp_path):
    """An uploaded Argoverse CSV, with a lanes file and without (no map then, as `predict` without --lanes), gives
    the forecast the task contract gives for the same files: probabilities and minADE / minFDE."""
    _, client, _ = served
    csv, lanes = str(write_argoverse_csv(tmp_path / "sequence.csv")), str(write_lanes(tmp_path / "lanes.json"))
    answers = []
    for lanes_file, extra in ((lanes, ["--lanes", lanes]), (None, [])):
        plot, modes, status = client.predict(*over_http("/predict_motion", [csv, lanes_file]),
                                             api_name="/predict_motion")
        reference = contract_prediction(task_models["motion-forecasting"], csv, extra)
        probabilities = [c["confidence"] for c in modes["confidences"]]
        assert probabilities == pytest.approx([f["probability"] for f in reference["forecasts"]], abs=1e-5)
        metrics = reference["future_metrics"]
        assert f"minADE **{metrics['minADE']:.2f} m**, minFDE **{metrics['minFDE']:.2f} m**" in status
        assert ("No lanes file: forecast without a map" in status) == (lanes_file is None)
        answers.append(probabilities)
    assert answers[0] != pytest.approx(answers[1], abs=1e-5)  # the lanes reached the model


def Image_open(value):  # noqa: N802 - a gradio Image output is a path (or a dict with one)
    from PIL import Image

    return Image.open(value if isinstance(value, str) else value["path"])


def test_retrieval_ranks_images_for_a_caption(served):
    _, client, _ = served
    texts = options_of("image-text-retrieval")["texts"]
    paths = sorted(str(p) for p in (EXAMPLES / "image-text-retrieval").glob("*.png"))
    gallery, status = client.predict(texts[0], [handle_file(p) for p in paths], api_name="/predict_retrieval_images")
    assert len(gallery) == len(paths) and status.startswith("Best image: match")
    scores = [float(item["caption"].split("match ")[1]) for item in gallery]
    assert scores == sorted(scores, reverse=True)


def _write(path: Path, content) -> str:
    if isinstance(content, np.ndarray):
        np.save(path, content)
    else:
        path.write_text(content)
    return str(path)


@pytest.mark.parametrize("case", ["video not a video", "video too long", "video frames too large", "cloud wrong shape", "cloud too many points",
                                  "scene not json", "scene too large", "csv missing columns", "csv not a number",
                                  "csv lanes of another city", "lanes too large", "vqa empty question",
                                  "vqa long question",
                                  "retrieval too many captions", "qa3d empty question", "qa3d no colours"])
def test_bad_inputs_give_a_message_on_every_tab(served, tmp_path, monkeypatch, case):
    _, client, _ = served
    video = example("video-classification", "*.webm")
    cloud = example("point-cloud-classification", "*.npy")
    scene = example("motion-forecasting", "scene_*.json")
    vqa_image = example("visual-question-answering", "*.png")
    qa3d_scene = example("3d-question-answering", "*.npz")
    if case == "video not a video":
        call = "/predict_video", [_write(tmp_path / "clip.mp4", "not a video")]
        message = "is not a video this demo can read"
    elif case == "video too long":  # the server runs in this process: the limit is lowered for the test
        monkeypatch.setattr(demo_video, "MAX_VIDEO_FRAMES", 4)
        call, message = ("/predict_video", [video]), "the demo takes up to 4. Please trim it"
    elif case == "video frames too large":  # refused on the stream header, before any frame is decoded
        monkeypatch.setattr(demo_video, "MAX_FRAME_PIXELS", 100)
        call, message = ("/predict_video", [video]), "is 32x32 per frame; the demo takes up to"
    elif case == "cloud wrong shape":
        call = "/predict_points", [(_write(tmp_path / "flat.npy", np.zeros((10, 2), np.float32)))]
        message = "expected (points, 3 or more)"
    elif case == "cloud too many points":
        monkeypatch.setattr(demo_points, "MAX_POINTS", 100)
        call, message = ("/predict_points", [(cloud)]), "the demo takes up to 100. Please subsample it"
    elif case == "scene not json":
        call = "/predict_motion", [_write(tmp_path / "scene.json", "{not json"), None]
        message = "is not a scene JSON file"
    elif case == "scene too large":
        monkeypatch.setattr(demo_motion, "MAX_SCENE_BYTES", 1000)
        call, message = ("/predict_motion", [scene, None]), "Keep the lanes near the agent"
    elif case == "csv missing columns":
        call = "/predict_motion", [_write(tmp_path / "track.csv", "TIMESTAMP,X,Y\n0,1,2\n"), None]
        message = "track.csv: missing Argoverse columns ['CITY_NAME', 'OBJECT_TYPE', 'TRACK_ID']"
    elif case == "csv not a number":
        text = write_argoverse_csv(tmp_path / "track.csv").read_text().replace(",100.0,200.0,", ",100.0,north,", 1)
        call, message = ("/predict_motion", [_write(tmp_path / "track.csv", text), None]), "line 2: Y is 'north'"
    elif case == "csv lanes of another city":
        lanes = _write(tmp_path / "lanes.json", json.dumps({"MIA": [[[0.0, 0.0], [1.0, 0.0]]]}))
        call = "/predict_motion", [str(write_argoverse_csv(tmp_path / "track.csv")), lanes]
        message = "track.csv: no lane centerlines for city 'PIT' (the lanes file has ['MIA'])"
    elif case == "lanes too large":
        lanes = _write(tmp_path / "lanes.json", json.dumps({"PIT": [[[0.0, 0.0], [1.0, 0.0]]] * 120_000}))
        call = "/predict_motion", [str(write_argoverse_csv(tmp_path / "track.csv")), lanes]
        message = "That lanes file is 3.1 MB; the demo takes up to 2 MB per file"
    elif case == "vqa empty question":
        call, message = ("/predict_vqa", [(vqa_image), "   "]), "The question is empty"
    elif case == "vqa long question":
        call, message = ("/predict_vqa", [(vqa_image), "why " * 60]), "Please shorten it"
    elif case == "retrieval too many captions":
        captions = "\n".join(f"caption {i}" for i in range(demo_vilt.MAX_CANDIDATES + 1))
        call = "/predict_retrieval", [(vqa_image), captions]
        message = f"the demo ranks up to {demo_vilt.MAX_CANDIDATES}"
    elif case == "qa3d empty question":
        call, message = ("/predict_qa3d", [(qa3d_scene), ""]), "The question is empty"
    else:  # xyz only, for a model that reads colours too: the folder's own processor says so
        call = "/predict_qa3d", [(cloud), "how many balls are there?"]
        message = "expected (points, 6)"
    with pytest.raises(AppError) as error:
        client.predict(*over_http(call[0], call[1]), api_name=call[0])
    assert message in str(error.value)
    assert "Traceback" not in str(error.value) and "\n" not in str(error.value)


def test_the_shipped_examples_are_what_the_builtins_write(tmp_path):
    """spaces/examples/<task>/ is `write_task_examples` output: the builtins' first test examples, as files."""
    from hf_frozenlm.hub.space import EXAMPLE_TASKS, write_task_examples

    written = write_task_examples(tmp_path)
    shipped = sorted(p.relative_to(EXAMPLES) for task in EXAMPLE_TASKS for p in (EXAMPLES / task).iterdir())
    assert sorted(p.relative_to(tmp_path) for p in written) == shipped
    readers = {".webm": demo_video.decode_frames, ".npy": demo_points.read_cloud, ".npz": demo_points.read_cloud,
               ".png": lambda path: np.asarray(Image_open(path)),
               ".json": lambda path: json.loads(Path(path).read_text(encoding="utf-8"))}
    for name in shipped:  # equal content (clips: lossless VP9, so equal decoded frames)
        fresh, committed = (readers[name.suffix](str(folder / name)) for folder in (tmp_path, EXAMPLES))
        assert np.array_equal(fresh, committed) if isinstance(fresh, np.ndarray) else fresh == committed, name
    total = sum(p.stat().st_size for p in EXAMPLES.rglob("*") if p.is_file())
    assert total < 1_000_000  # the examples stay small


def test_every_input_kind_has_one_limit():
    assert set(app.limits()) == {"image", "video", "point cloud", "question", "scene", "text", "candidates"}


def test_token_layouts_agree_with_the_task_contract(task_models):
    """The Space's portable token layout (from the config alone; the tasks' token grids are built on it) gives the task
    contract's token grid, and the Space's maps (its own hooks) are `hf_frozenlm.analysis`'s (the TokenRecorder's) for
    the same stages, for every trunk with a grid."""
    from hf_frozenlm.analysis import token_activations_all
    from hf_frozenlm.analysis.frozenlm_maps import run_with_maps
    from hf_frozenlm.training.loading import load_trained_model

    inputs = {
        "image-classification": lambda processor: {"pixel_values": torch.randn(2, 3, 8, 8)},
        "video-classification": lambda processor: {"pixel_values": torch.randn(2, 8, 3, 32, 32)},
        "point-cloud-classification": lambda processor: dict(processor(np.random.default_rng(0).normal(
            size=(300, 3)).astype("float32"), return_tensors="pt")),
        "3d-question-answering": lambda processor: dict(processor(np.random.default_rng(0).normal(
            size=(300, 6)).astype("float32"), ["how many balls are there?"], return_tensors="pt")),
        "visual-question-answering": lambda processor: dict(processor(
            images=[np.zeros((32, 32, 3), np.uint8)], text=["what color is it?"], return_tensors="pt")),
    }
    for task_name, make in inputs.items():
        task, model, processor = load_trained_model(task_models[task_name])
        batch = make(processor)
        grid = task.token_grid(model, batch)
        outputs, maps, layout = run_with_maps(model, batch)
        assert layout.grid_shape == tuple(grid.grid_shape), task_name
        if layout.num_prefix_tokens is not None:
            assert layout.num_prefix_tokens == grid.num_prefix_tokens, task_name
        if grid.positions is not None:
            torch.testing.assert_close(layout.positions, grid.positions)
        reference = token_activations_all(model, batch, stages=("trunk", "llm_out"))
        for kind in ("magnitude", "frequency"):
            torch.testing.assert_close(maps[kind]["trunk"], reference[kind]["trunk"], msg=task_name)
            torch.testing.assert_close(maps[kind]["block"], reference[kind]["llm_out"], msg=task_name)


def test_one_model_gets_its_interface_and_several_of_a_task_get_numbered_tabs(task_models):
    one = app.build_demo(task_models["point-cloud-classification"])
    assert one.served_tasks == [("point-cloud-classification", "predict_points")]
    assert not any(isinstance(block, gr.Tab) for block in one.blocks.values())  # no tabs for one model
    folder = task_models["point-cloud-classification"]
    two = app.build_demo(f"{folder}, {folder}")  # MODEL_ID's comma-separated form
    assert two.served_tasks == [("point-cloud-classification", "predict_points"),
                                ("point-cloud-classification", "predict_points_2")]


def test_demo_refuses_a_baseline_that_is_not_an_image_classifier(task_models, capsys):
    folder = task_models["point-cloud-classification"]
    assert main(["demo", "--model", task_models["image-classification"], "--baseline", folder]) == 2
    assert "a baseline is shown beside an image classifier" in capsys.readouterr().err


def test_push_space_lists_every_model_and_the_folder_runs_every_tab_without_hf_frozenlm(task_models, tmp_path):
    from hf_frozenlm.hub.push import push_space

    dry = push_space("someone/frozenlm-demo", ["someone/digits", "someone/shapes3d"], dry_run_dir=tmp_path / "space")
    assert dry.space_variables == {"MODEL_ID": "someone/digits,someone/shapes3d"}
    front = (tmp_path / "space" / "README.md").read_text(encoding="utf-8").split("---", 2)[1]
    assert re.search(r"models:\n  - someone/digits\n  - someone/shapes3d\n", front)
    for task in TASK_NAMES[1:]:
        assert any(name.startswith(f"examples/{task}/") for name in dry.files), task
    script = (
        "import json, sys; sys.modules['hf_frozenlm'] = None\n"  # any import of the package fails
        "import app\n"
        "case = json.load(open(sys.argv[1]))\n"
        "demo = app.build_demo(case['models'])\n"
        "handlers = {f.api_name: f.fn for f in demo.fns.values() if f.api_name}\n"
        "for (task, api_name), arguments in zip(demo.served_tasks, case['calls']):\n"
        "    out = handlers[api_name](*arguments)\n"
        "    print(api_name, next(o for o in out if isinstance(o, str)).split(' in ')[0])\n"
        "print('predict_motion', handlers['predict_motion'](*case['argoverse'])[2])\n"  # the vendored CSV reader
    )
    case = tmp_path / "case.json"
    argoverse = [str(write_argoverse_csv(tmp_path / "sequence.csv")), str(write_lanes(tmp_path / "lanes.json"))]
    case.write_text(json.dumps({"models": [task_models[t] for t in TASK_NAMES],
                                "calls": [example_call(task)[1] for task in TASK_NAMES], "argoverse": argoverse}))
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    result = subprocess.run([sys.executable, "-c", script, str(case)], cwd=tmp_path / "space", env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    answered = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("predict")]
    assert answered == ["predict", "predict_video", "predict_points", "predict_motion", "predict_vqa",
                        "predict_retrieval", "predict_qa3d", "predict_motion"]
    assert "forecasts in" in result.stdout.splitlines()[-1] and "minADE" in result.stdout.splitlines()[-1]


# tab title -> (its API name, text the status shows once the answer arrived)
BROWSER_TABS = {
    "Image classification": ("predict", "Predicted"),
    "Video": ("predict_video", "Predicted"),
    "Point clouds": ("predict_points", "Predicted"),
    "Motion forecasting": ("predict_motion", "forecasts in"),
    "Visual question answering": ("predict_vqa", "Answer"),
    "Image-text retrieval": ("predict_retrieval", "Best caption"),
    "3D question answering": ("predict_qa3d", "Answer"),
}


@needs_browser
def test_browser_runs_every_tabs_example_and_shows_the_answer(served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, _, _ = served
    ARTIFACTS.mkdir(exist_ok=True)
    with headless_chromium(1400, 1250) as driver:
        driver.get(url)
        wait = WebDriverWait(driver, 60)
        for title, (api_name, answer) in BROWSER_TABS.items():
            tab = wait.until(lambda d: next((b for b in d.find_elements(By.CSS_SELECTOR, "button[role=tab]")
                                             if b.text == title), False))
            tab.click()
            examples_id = "examples" if api_name == "predict" else f"{api_name}-examples"
            first = wait.until(lambda d: d.find_elements(
                By.CSS_SELECTOR, f"#{examples_id} button.gallery-item, #{examples_id} tbody tr") or False)[0]
            first.click()
            run_id = "classify" if api_name == "predict" else f"{api_name}-run"
            status_id = "status" if api_name == "predict" else f"{api_name}-status"
            time.sleep(0.5)  # the example's value reaches the input component
            wait.until(ec.element_to_be_clickable((By.ID, run_id))).click()
            wait.until(ec.text_to_be_present_in_element((By.ID, status_id), answer))
            time.sleep(0.7)  # let images and the 3D view finish painting before the screenshot
            driver.save_screenshot(str(ARTIFACTS / f"demo_{api_name}.png"))
            assert (ARTIFACTS / f"demo_{api_name}.png").stat().st_size > 10_000
    montage([ARTIFACTS / f"demo_{api_name}.png" for api_name, _ in BROWSER_TABS.values()], ARTIFACTS / "demo_tabs.png")


def montage(paths: list[Path], out: Path, columns: int = 2, width: int = 630) -> None:
    """The tab screenshots two to a row, each scaled to `width` pixels (docs/demo_tabs.png is this file)."""
    from PIL import Image

    tiles = [Image.open(path).convert("RGB") for path in paths]
    tiles = [tile.resize((width, round(tile.height * width / tile.width))) for tile in tiles]
    height = max(tile.height for tile in tiles)
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * width, rows * height), "white")
    for index, tile in enumerate(tiles):
        sheet.paste(tile, ((index % columns) * width, (index // columns) * height))
    sheet.quantize(256).save(out, optimize=True)  # a 256-colour palette: a third of the bytes, for the docs
