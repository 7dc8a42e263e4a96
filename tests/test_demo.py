"""The Gradio Space (spaces/app.py): served on 127.0.0.1 and called over HTTP, driven in headless Chromium,
assembled into a folder that runs without hf_frozenlm, and its README front matter.

One small model (16 px, patch 2, 2 ViT layers + SmolLM2's last layer) and a plain-trunk baseline are saved
to a temp folder; the app is launched once for the module.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from space_helpers import headless_chromium, needs_browser, served_locally
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "spaces"
EXAMPLE = SPACE / "examples" / "digit_3.png"
ARTIFACTS = ROOT / "test-artifacts"

gr = pytest.importorskip("gradio")
from gradio_client import handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from hf_frozenlm.spaces import app, demo_image  # noqa: E402


def _save(model, folder: Path) -> str:
    from hf_frozenlm.tasks.image_classification import image_processor_for

    model.config.id2label = {i: str(i) for i in range(10)}
    model.config.label2id = {str(i): i for i in range(10)}
    model.save_pretrained(folder)
    image_processor_for(model.config).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, tiny_digits_model):
    """(frozen-LLM model folder, plain-trunk baseline folder)."""
    from hf_frozenlm import ViTLlamaForImageClassification

    root = tmp_path_factory.mktemp("space-models")
    torch.manual_seed(1)
    baseline = ViTLlamaForImageClassification.from_parts(
        "vit-tiny", None, variant="none", num_labels=10,
        trunk_kwargs=dict(image_size=16, patch_size=2, num_hidden_layers=2),
    )
    return _save(tiny_digits_model(), root / "model"), _save(baseline, root / "baseline")


@pytest.fixture(scope="module")
def served(model_dirs):
    """(url, gradio_client.Client, demo) of the app serving the model with its baseline."""
    with served_locally(app.build_demo(*model_dirs)) as served:
        yield served


def _sketch(tmp_path, draw=True) -> dict:
    """A Sketchpad value as the browser sends it: a transparent RGBA canvas, with a black '7' if `draw`."""
    canvas = np.zeros((400, 400, 4), np.uint8)
    if draw:
        canvas[60:80, 100:300] = (0, 0, 0, 255)  # the bar
        for row in range(80, 340):  # the stem, slanting left as it goes down
            col = 300 - (row - 80) * 150 // 260
            canvas[row, col - 10 : col + 10] = (0, 0, 0, 255)
    path = tmp_path / ("sketch.png" if draw else "empty.png")
    Image.fromarray(canvas, mode="RGBA").save(path)
    return {"background": None, "layers": [], "composite": handle_file(str(path))}


def _check_prediction(result, with_baseline=True):
    labels, tiles, status, base_labels, base_tiles = result
    assert len(labels["confidences"]) == 5
    assert {c["label"] for c in labels["confidences"]} <= {str(i) for i in range(10)}
    assert labels["label"] == labels["confidences"][0]["label"]
    assert status.startswith(f"Predicted **{labels['label']}**")
    # magnitude and frequency, at the trunk's output and after the frozen block, as images
    assert [tile["caption"] for tile in tiles] == [
        "magnitude · trunk output", "frequency · trunk output",
        "magnitude · after block", "frequency · after block",
    ]
    for tile in tiles:
        with Image.open(tile["image"]) as image:
            assert image.size == (demo_image.OVERLAY_SIDE, demo_image.OVERLAY_SIDE)
    if with_baseline:  # the plain trunk has no block: its trunk maps only
        assert len(base_labels["confidences"]) == 5
        assert [tile["caption"] for tile in base_tiles] == ["magnitude · trunk output", "frequency · trunk output"]
    return labels


def test_example_image_gives_labels_and_maps(served, model_dirs):
    _, client, _ = served
    labels = _check_prediction(client.predict(handle_file(str(EXAMPLE)), api_name="/predict"))
    # The served label is the model's own prediction for the example, through its own processor.
    reference = demo_image.LoadedModel.load(model_dirs[0])
    expected, _ = reference.classify(demo_image.open_upload(str(EXAMPLE)))
    assert labels["label"] == next(iter(expected))


def test_sketch_gives_labels_and_maps(served, tmp_path):
    _, client, _ = served
    _check_prediction(client.predict(_sketch(tmp_path), api_name="/predict_sketch"))


def test_grey_rgba_and_huge_images_give_the_rgb_result(served, tmp_path):
    _, client, _ = served
    digit = Image.open(EXAMPLE).convert("L")
    reference = client.predict(handle_file(str(EXAMPLE)), api_name="/predict")[0]

    rgba = Image.new("RGBA", digit.size, (0, 0, 0, 0))  # ink on a transparent sheet: reads as ink on white
    rgba.putalpha(Image.eval(digit, lambda value: 255 - value))
    huge = digit.resize((6000, 6000), Image.Resampling.NEAREST)  # 36 Mpx: shrunk before the model sees it
    for name, image in (("grey.png", digit), ("rgba.png", rgba), ("huge.png", huge)):
        image.save(tmp_path / name)
        labels = _check_prediction(client.predict(handle_file(str(tmp_path / name)), api_name="/predict"))
        assert labels["label"] == reference["label"], name


def test_a_small_thin_sketch_is_framed_and_inked_like_a_scan():
    canvas = np.zeros((600, 600, 4), np.uint8)
    canvas[40:160, 500:504] = (0, 0, 0, 255)  # a short, thin "1" in a corner of a large canvas
    image = demo_image.sketch_to_image({"composite": canvas})
    assert image.size == (demo_image.SKETCH_SIDE, demo_image.SKETCH_SIDE) and image.mode == "RGB"
    ink = np.asarray(image.convert("L")) < 128
    rows, cols = np.nonzero(ink)
    assert rows.max() - rows.min() + 1 >= 0.75 * demo_image.SKETCH_SIDE  # fills the box's height, like the scans
    assert abs((cols.min() + cols.max()) / 2 - demo_image.SKETCH_SIDE / 2) <= 2  # centred
    assert cols.max() - cols.min() + 1 >= 6  # a 4 px line on 600 px became a stroke the 8 px model can see


@pytest.mark.parametrize("case, message", [
    ("no image", "No image yet"),
    ("empty sketch", "The sketch is empty"),
    ("blank sketch", "The sketch is empty"),
    ("text file", "is not an image this demo can read"),
    ("truncated png", "is not an image this demo can read"),
    ("too many pixels", "Please downscale it first"),
])
def test_bad_inputs_give_a_message(served, tmp_path, case, message):
    _, client, _ = served
    if case == "no image":
        call = (None, "/predict")
    elif case == "empty sketch":
        call = ({"background": None, "layers": [], "composite": None}, "/predict_sketch")
    elif case == "blank sketch":
        call = (_sketch(tmp_path, draw=False), "/predict_sketch")
    elif case == "text file":
        (tmp_path / "notes.txt").write_text("not a picture")
        call = (handle_file(str(tmp_path / "notes.txt")), "/predict")
    elif case == "truncated png":
        (tmp_path / "cut.png").write_bytes(EXAMPLE.read_bytes()[:60])
        call = (handle_file(str(tmp_path / "cut.png")), "/predict")
    else:  # 100 Mpx, stored as 1-bit so the file and the test stay small
        Image.new("1", (10_000, 10_000), 1).save(tmp_path / "wide.png")
        call = (handle_file(str(tmp_path / "wide.png")), "/predict")
    with pytest.raises(AppError) as error:
        client.predict(call[0], api_name=call[1])
    assert message in str(error.value)
    assert "Traceback" not in str(error.value)


def test_requests_queue_one_at_a_time(served):
    _, _, demo = served
    handlers = [fn for fn in demo.fns.values() if fn.api_name in ("predict", "predict_sketch")]
    assert len(handlers) == 2
    # Both buttons share one slot: a second request waits in the queue instead of competing for the CPU.
    assert {(fn.concurrency_limit, fn.concurrency_id) for fn in handlers} == {(1, "model")}
    assert demo._queue.max_size == 32


def test_maps_match_the_analysis_module(tiny_digits_model):
    """The Space's standalone maps are the paper's maps as hf_frozenlm.analysis computes them."""
    from hf_frozenlm.analysis import token_activations_all
    from hf_frozenlm.analysis.frozenlm_maps import predict_with_maps

    model = tiny_digits_model().eval()
    pixel_values = torch.randn(2, 3, 16, 16)
    logits, maps = predict_with_maps(model, pixel_values)
    reference = token_activations_all(model, pixel_values, stages=("trunk", "llm_out"))
    with torch.no_grad():
        torch.testing.assert_close(logits, model(pixel_values).logits)
    for kind in ("magnitude", "frequency"):
        torch.testing.assert_close(maps[kind]["trunk"], reference[kind]["trunk"])
        torch.testing.assert_close(maps[kind]["block"], reference[kind]["llm_out"])
        assert maps[kind]["block"].shape == (2, 8, 8)


def test_the_example_digits_are_real_scans_rendered_as_training_sees_them(tmp_path):
    """The Space's example PNGs are what `write_digit_examples` renders from scikit-learn's digits: real scans, not
    drawings, in the training data's dark-ink-on-white form."""
    from hf_frozenlm.hub.space import EXAMPLE_DIGITS, write_digit_examples

    committed = Path(app.__file__).resolve().parent / "examples"
    for path in write_digit_examples(tmp_path):
        with Image.open(path) as fresh, Image.open(committed / path.name) as shipped:
            assert np.array_equal(np.asarray(fresh), np.asarray(shipped)), path.name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"digit_{d}.png" for d in EXAMPLE_DIGITS)


def test_space_readme_front_matter():
    text = (SPACE / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---", 2)[1])
    assert meta["sdk"] == "gradio"
    assert meta["sdk_version"] == gr.__version__ == "6.31.0"
    setup_py = (ROOT / "setup.py").read_text(encoding="utf-8")
    assert f'"gradio=={meta["sdk_version"]}"' in setup_py  # the version the package pins
    assert (SPACE / meta["app_file"]).is_file()
    for key in ("title", "emoji", "colorFrom", "colorTo", "python_version", "license", "models"):
        assert meta.get(key), key
    requirements = (SPACE / "requirements.txt").read_text(encoding="utf-8").splitlines()
    pins = [line for line in requirements if line and not line.startswith("#")]
    assert all("==" in line for line in pins), pins
    assert not any(line.startswith("gradio") for line in pins)  # the SDK version installs gradio


def test_assembled_space_runs_without_hf_frozenlm(tmp_path, model_dirs):
    """The upload folder alone (plus pip packages) serves the model: hf_frozenlm cannot be imported there."""
    from hf_frozenlm.hub.space import assemble_space

    folder = tmp_path / "space"
    files = assemble_space(folder, model_id=model_dirs[0])
    assert sorted(p.name for p in files if p.parent == folder) == [
        "README.md", "app.py", "demo_common.py", "demo_image.py", "demo_motion.py", "demo_points.py", "demo_video.py",
        "demo_vilt.py", "frozenlm_argoverse.py", "frozenlm_maps.py", "frozenlm_motion_plot.py", "requirements.txt"]
    assert not (folder / "__init__.py").exists()
    script = (
        "import sys; sys.modules['hf_frozenlm'] = None\n"  # any import of the package fails
        "import app\n"
        "import demo_common; assert demo_common.run_with_maps.__module__ == 'frozenlm_maps'\n"
        "model_id = app.model_id_from_readme()\n"
        "demo = app.build_demo(model_id)\n"
        "handler = next(f.fn for f in demo.fns.values() if f.api_name == 'predict')\n"
        "labels, tiles, status, *_ = handler('examples/digit_3.png')\n"
        "print(model_id, len(labels), len(tiles))\n"
    )
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    result = subprocess.run([sys.executable, "-c", script], cwd=folder, env=env, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-3:] == [model_dirs[0], "5", "4"]


def test_demo_command_without_a_trained_run_says_how_to_make_one(tmp_path, monkeypatch, capsys):
    from hf_frozenlm.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert "runs/digits-vit-tiny-llm" in err and "make train" in err and "hf-frozenlm train" in err
    assert main(["demo", "--model", str(tmp_path)]) == 2
    assert "not a saved model folder" in capsys.readouterr().err
    assert main(["demo", "--model", "./no/such/folder"]) == 2
    assert "no such folder, and not a Hub model id" in capsys.readouterr().err


def test_demo_takes_a_hub_id_and_reports_the_hubs_answer(tmp_path, monkeypatch, capsys):
    """Before: `--model your-name/vit-llama-digits` was refused as "no such folder". A value with one slash that is
    not a local folder is a Hub id; offline, transformers' offline message reaches the user in one line."""
    from hf_frozenlm.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["demo", "--model", "your-name/vit-llama-digits"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hf-frozenlm demo: cannot load the model:") and "no such folder" not in err
    assert "offline" in err.lower() or "connect" in err.lower()


def _huge_sketch_png(path, side=13_000):
    """A 13000 x 13000 RGBA canvas: under 1 MB as PNG, 676 MB once decoded (4.5 GB in the server before the fix)."""
    import zlib

    import struct

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(4 * side)  # filter byte + transparent pixels
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def test_a_huge_sketch_is_refused_before_it_is_decoded(served, tmp_path):
    import resource

    _, client, _ = served
    path = _huge_sketch_png(tmp_path / "huge.png")
    assert path.stat().st_size < 2_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB; the server runs in this process
    started = time.perf_counter()
    with pytest.raises(AppError) as error:
        client.predict({"background": None, "layers": [], "composite": handle_file(str(path))},
                       api_name="/predict_sketch")
    assert "That drawing is 13000x13000" in str(error.value) and "Please downscale it first" in str(error.value)
    assert time.perf_counter() - started < 10
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 300, f"the server grew by {grown_mb:.0f} MB: the canvas was decoded"


def test_the_status_line_times_the_whole_request():
    """The status reports the request (reading and preparing the input included), not only the model call."""
    status = demo_image.status_line({"7": 0.5}, started=100.0, now=100.25)
    assert status == "Predicted **7** (50%) in 250 ms on CPU, input and maps included."


@needs_browser
def test_browser_submits_an_example_and_shows_the_label(served, model_dirs):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, _, _ = served
    expected, _ = demo_image.LoadedModel.load(model_dirs[0]).classify(demo_image.open_upload(str(EXAMPLE)))
    with headless_chromium() as driver:
        driver.get(url)
        wait = WebDriverWait(driver, 60)
        # The examples are listed in file order (digit_0, 2, 3, ...): the third is digit_3.png.
        thumbnails = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#examples img") or False)
        thumbnails[[Path(img.get_attribute("src")).name for img in thumbnails].index(EXAMPLE.name)].click()
        # the example is in the upload box (an image outside the examples list)
        wait.until(lambda d: any("digit_3" in (img.get_attribute("src") or "") and
                                 not img.find_elements(By.XPATH, "ancestor::*[@id='examples']")
                                 for img in d.find_elements(By.TAG_NAME, "img")))
        wait.until(ec.element_to_be_clickable((By.ID, "classify"))).click()
        best = next(iter(expected))
        wait.until(ec.text_to_be_present_in_element((By.ID, "status"), f"Predicted {best}"))
        # the labels panel shows the same class, and the maps arrived
        wait.until(lambda d: d.find_elements(By.XPATH, "//*[contains(text(), 'magnitude · after block')]"))
        time.sleep(0.5)  # let the gallery images finish painting before the screenshot
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "demo.png"))
        assert (ARTIFACTS / "demo.png").stat().st_size > 10_000
