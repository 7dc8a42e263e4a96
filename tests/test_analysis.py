"""Analysis (paper section 4): activation measures, pseudo-mask IoU, read-only hooks, the analyze command."""

import copy
import csv
import math

import numpy as np
import pytest
import torch

from hf_frozenlm.analysis.maps import (
    STAGES,
    TokenRecorder,
    attention_maps,
    minmax_per_image,
    pixel_activations,
    pseudo_mask_iou,
    token_activations,
    token_frequency,
    token_grid,
    token_magnitude,
)
from hf_frozenlm.data.masked_digits import load_masked_digits, masked_digits_arrays


# -- the measures against hand computations -----------------------------------------------------------------
def test_magnitude_is_distance_to_the_mean_token():
    tokens = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [2.0, 3.0]]])  # mean token (2, 1)
    expected = torch.tensor([[math.sqrt(2), math.sqrt(2), 2.0]])  # |(-1,-1)|, |(1,-1)|, |(0,2)|
    torch.testing.assert_close(token_magnitude(tokens), expected)


def _phase_by_hand(vector):
    """Angles of the DFT X_k = sum_n x_n exp(-2 pi i k n / C), written out."""
    size = len(vector)
    angles = []
    for k in range(size):
        real = sum(x * math.cos(2 * math.pi * k * n / size) for n, x in enumerate(vector))
        imag = -sum(x * math.sin(2 * math.pi * k * n / size) for n, x in enumerate(vector))
        angles.append(math.atan2(imag, real))
    return angles


def test_frequency_is_distance_to_the_mean_phase():
    tokens = [[1.0, 2.0, 0.5, -1.0], [0.0, 1.0, -2.0, 3.0], [2.0, -1.0, 1.0, 0.25]]
    phases = [_phase_by_hand(t) for t in tokens]
    mean = [sum(column) / len(phases) for column in zip(*phases)]
    expected = [math.sqrt(sum((p - m) ** 2 for p, m in zip(phase, mean))) for phase in phases]
    torch.testing.assert_close(token_frequency(torch.tensor([tokens])), torch.tensor([expected]), atol=1e-5, rtol=1e-5)


def test_constant_features_give_zero_maps_not_nan():
    constant = torch.full((2, 5, 4), 3.0)
    for measure in (token_magnitude, token_frequency):
        scaled = minmax_per_image(measure(constant))
        assert not torch.isnan(scaled).any()
        assert torch.equal(scaled, torch.zeros(2, 5))
    assert torch.equal(minmax_per_image(torch.full((1, 3, 3), 7.0)), torch.zeros(1, 3, 3))


def test_minmax_scales_each_image_on_its_own():
    maps = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[-4.0, -4.0], [0.0, -2.0]]])
    expected = torch.tensor([[[0.0, 0.5], [0.25, 1.0]], [[0.0, 0.0], [1.0, 0.5]]])
    torch.testing.assert_close(minmax_per_image(maps), expected)


def test_pixel_reference_marks_the_odd_patch():
    pixels = torch.zeros(1, 3, 8, 8)
    pixels[0, :, 2:4, 6:8] = 1.0  # the patch at grid row 1, column 3
    maps = pixel_activations(pixels, (4, 4))
    expected = torch.zeros(1, 4, 4)
    expected[0, 1, 3] = 1.0
    assert torch.equal(maps["magnitude"], expected)
    assert torch.equal(pixel_activations(torch.ones(1, 3, 8, 8), (4, 4))["frequency"], torch.zeros(1, 4, 4))


# -- the paper's IoU protocol -------------------------------------------------------------------------------
def _blob_masks():
    masks = np.zeros((2, 16, 16), dtype=bool)  # at twice the 8x8 grid: each token covers 2x2 pixels
    masks[0, 4:10, 2:8] = True
    masks[1, 0:4, 10:16] = True
    return masks


def test_iou_is_one_for_maps_equal_to_the_mask():
    grid = torch.from_numpy(_blob_masks()[:, ::2, ::2].astype(np.float32))
    result = pseudo_mask_iou(grid, _blob_masks())
    assert np.allclose(result.per_image, 1.0) and result.mean == pytest.approx(1.0)


def test_inverted_maps_score_zero():
    # map = 1 - mask: every threshold selects exactly the background, which shares no token with the object.
    grid = torch.from_numpy(1.0 - _blob_masks()[:, ::2, ::2].astype(np.float32))
    result = pseudo_mask_iou(grid, _blob_masks())
    assert np.array_equal(result.per_image, [0.0, 0.0]) and result.mean == 0.0


def test_best_threshold_is_chosen_per_image():
    mask = np.zeros((1, 4, 4), dtype=bool)
    mask[0, :2, :2] = True  # 4 object tokens
    values = np.full((1, 4, 4), 0.05, dtype=np.float32)
    values[0, :2, :2] = [[0.95, 0.85], [0.65, 0.55]]
    values[0, 3, 3] = 0.45  # a background token that only the low thresholds admit
    result = pseudo_mask_iou(values, mask)
    # t <= 0.4: 4/5; t = 0.5: 4/4 (best, and the lowest of the ties); t = 0.6: 3/4; t = 0.9: 1/4.
    assert result.per_image[0] == pytest.approx(1.0)
    assert result.best_threshold[0] == pytest.approx(0.5)
    only_high = pseudo_mask_iou(values, mask, thresholds=(0.1, 0.6, 0.9))
    assert only_high.per_image[0] == pytest.approx(0.8)  # 4/5 at 0.1 beats 3/4 at 0.6
    assert only_high.best_threshold[0] == pytest.approx(0.1)


def test_images_whose_mask_misses_the_grid_are_not_scored():
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, :4, :4] = True
    masks[1, 0, 0] = True  # one pixel: under half of its 2x2 token, so no token is object
    maps = np.zeros((2, 4, 4), dtype=np.float32)
    maps[:, :2, :2] = 1.0
    result = pseudo_mask_iou(maps, masks)
    assert result.per_image[0] == 1.0 and np.isnan(result.per_image[1]) and np.isnan(result.best_threshold[1])
    assert result.scored == 1 and result.mean == 1.0


def test_iou_matches_a_brute_force_search():
    rng = np.random.default_rng(0)
    maps = rng.uniform(0, 1, (5, 8, 8)).astype(np.float32)
    masks = rng.uniform(0, 1, (5, 8, 8)) > 0.6
    thresholds = [0.1 * i for i in range(1, 10)]
    best = []
    for value, mask in zip(maps, masks):
        scores = [((value > t) & mask).sum() / ((value > t) | mask).sum() for t in np.float32(thresholds)]
        best.append(max(scores))
    result = pseudo_mask_iou(maps, masks)
    np.testing.assert_allclose(result.per_image, best, rtol=1e-6)
    assert result.mean == pytest.approx(np.mean(best))


# -- on a model ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pixels():
    return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))


TINY_TRUNK = dict(image_size=16, patch_size=2, num_hidden_layers=2)


def build_variant(variant, llm_config):
    """The tiny digits model's shape for the MLP control or the plain trunk (no LLM weights to load)."""
    from hf_frozenlm import ViTLlamaForImageClassification

    torch.manual_seed(0)
    llm = copy.deepcopy(llm_config) if variant == "mlp" else None
    return ViTLlamaForImageClassification.from_parts("vit-tiny", llm, variant=variant, num_labels=10,
                                                     trunk_kwargs=TINY_TRUNK)


@pytest.mark.parametrize("variant, stages", [("llm", STAGES), ("mlp", ("trunk", "llm_in", "llm_out")), ("none", ("trunk",))])
def test_maps_cover_the_grid_in_unit_range(tiny_digits_model, smollm2_last_layer, pixels, variant, stages):
    model = tiny_digits_model() if variant == "llm" else build_variant(variant, smollm2_last_layer[0])
    for kind in ("magnitude", "frequency"):
        maps = token_activations(model, pixels, kind=kind)
        assert tuple(maps) == stages
        for stage_maps in maps.values():
            assert stage_maps.shape == (3, 8, 8)
            flat = stage_maps.flatten(1)
            assert torch.equal(flat.min(1).values, torch.zeros(3)) and torch.equal(flat.max(1).values, torch.ones(3))
    attention = attention_maps(model, pixels)
    assert set(attention) == ({"trunk", "llm"} if variant == "llm" else {"trunk"})
    assert all(a.shape == (3, 8, 8) and 0 <= a.min() and a.max() <= 1 for a in attention.values())


def test_hooks_change_neither_outputs_nor_gradients(tiny_digits_model, pixels):
    model = tiny_digits_model()
    model.train()
    labels = torch.tensor([1, 2, 3])

    def step(recording):
        model.zero_grad(set_to_none=True)
        if recording:
            with TokenRecorder(token_grid(model, pixels)) as recorder:
                output = model(pixels, labels=labels)
        else:
            recorder, output = None, model(pixels, labels=labels)
        output.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return output.logits.detach(), grads, recorder

    logits, grads, _ = step(False)
    hooked_logits, hooked_grads, recorder = step(True)
    assert torch.equal(logits, hooked_logits)
    assert grads.keys() == hooked_grads.keys() and len(grads) > 0
    assert all(torch.equal(grads[name], hooked_grads[name]) for name in grads)
    assert set(recorder.tokens) == set(STAGES) and not any(t.requires_grad for t in recorder.tokens.values())
    # Hooks are gone: a later forward records nothing new.
    recorder.tokens.clear()
    model(pixels)
    assert recorder.tokens == {}


def test_analysis_restores_mode_backend_and_outputs(tiny_digits_model, pixels):
    model = tiny_digits_model()
    model.train()
    backends = (model.config._attn_implementation, model.config.vision_config._attn_implementation,
                model.config.llm_config._attn_implementation)
    with torch.no_grad():
        before = model(pixels).logits
    token_activations(model, pixels)
    attention_maps(model, pixels)
    assert model.training
    assert (model.config._attn_implementation, model.config.vision_config._attn_implementation,
            model.config.llm_config._attn_implementation) == backends
    assert not any(p.requires_grad for p in model.vit_llama.frozen_lm.llm_own_parameters())
    with torch.no_grad():
        assert torch.equal(model(pixels).logits, before)


def test_a_model_of_no_task_is_refused():
    from transformers import ViTConfig, ViTModel

    vit = ViTModel(ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                             image_size=8, patch_size=4))
    with pytest.raises(TypeError, match="not a model of an hf_frozenlm task"):
        token_grid(vit, torch.zeros(1, 3, 8, 8))


# -- the masked dataset and the command ---------------------------------------------------------------------
def test_masked_digits_are_seeded_and_masks_mark_the_ink():
    images, masks, labels = masked_digits_arrays(num_images=12, image_size=32, seed=3)
    again = masked_digits_arrays(num_images=12, image_size=32, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((images, masks, labels), again))
    assert not np.array_equal(images, masked_digits_arrays(num_images=12, image_size=32, seed=4)[0])
    assert images.shape == (12, 32, 32, 3) and masks.shape == (12, 32, 32)
    coverage = masks.mean(axis=(1, 2))
    assert (coverage > 0.02).all() and (coverage < 0.6).all()
    brightness = images.mean(axis=-1)
    assert all(brightness[i][masks[i]].mean() < brightness[i][~masks[i]].mean() - 40 for i in range(12))
    dataset = load_masked_digits(num_images=4, seed=3)
    assert dataset.column_names == ["image", "mask", "label"]
    assert np.array_equal(np.asarray(dataset[0]["mask"]) > 0, masks[0])


def test_analyze_command_writes_grids_and_tables(tiny_digits_model, tmp_path):
    from PIL import Image

    from hf_frozenlm.cli import main

    from hf_frozenlm.tasks.image_classification import image_processor_for

    model = tiny_digits_model()
    model.save_pretrained(tmp_path / "model")
    baseline = build_variant("none", None)
    baseline.save_pretrained(tmp_path / "baseline")
    for saved in (model, baseline):  # the processor training saves beside the model
        image_processor_for(saved.config).save_pretrained(tmp_path / ("model" if saved is model else "baseline"))

    out = tmp_path / "analysis"
    assert main(["analyze", "--model", str(tmp_path / "model"), "--baseline", str(tmp_path / "baseline"),
                 "--dataset", "masked-digits", "--mask_column", "mask", "--num_images", "8", "--grid_images", "2",
                 "--out", str(out)]) == 0
    for kind in ("magnitude", "frequency"):
        with Image.open(out / f"maps_{kind}.png") as picture:
            assert picture.size[0] > 200
    with open(out / "miou.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_model = {}
    for row in rows:
        by_model.setdefault(row["model"], set()).add((row["stage"], row["kind"]))
        assert 0.0 <= float(row["miou"]) <= 1.0 and 0 < int(row["images"]) <= 8
    assert by_model["baseline (none)"] == {("trunk", "magnitude"), ("trunk", "frequency"), ("trunk_cls", "attention")}
    assert by_model["model (llm)"] == {(s, k) for s in STAGES for k in ("magnitude", "frequency")} | {
        ("trunk_cls", "attention"), ("llm_cls", "attention")}
    assert by_model["random maps (chance)"] == {("uniform noise", "-")}
    assert by_model["input pixels (no model)"] == {("patches", "magnitude"), ("patches", "frequency")}
    assert (out / "miou.md").read_text().startswith("| model | stage | kind | mIoU | images scored |")

    # Plain images: maps only, no table.
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    for i in range(2):
        Image.fromarray(np.full((20, 20, 3), 60 * i, dtype=np.uint8)).save(images_dir / f"{i}.png")
    out_images = tmp_path / "analysis_images"
    assert main(["analyze", "--model", str(tmp_path / "model"), "--images", str(images_dir), "--kinds", "magnitude",
                 "--out", str(out_images)]) == 0
    assert (out_images / "maps_magnitude.png").exists() and not (out_images / "miou.csv").exists()
