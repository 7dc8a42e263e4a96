"""The paper's recipes: `--recipe` presets (explicit options win, recorded in run_config.json and the card), stochastic
depth in every trunk (identity at evaluation, the expected survival rate in training, gradients flow, saved with the
model), layer-wise learning-rate decay in the optimizer Trainer really builds, and a `--recipe deit` run that learns
on both precision paths."""

from __future__ import annotations

import json

import pytest
import torch
from heads_helpers import save_tiny_llama, tiny_llama, train_recording_autocast

from hf_frozenlm import ViTLlamaForImageClassification
from hf_frozenlm.errors import UsageError
from hf_frozenlm.modeling.frozenlm_stochastic_depth import DropoutThenDropPath, drop_path_rates
from hf_frozenlm.modeling.modeling_pointbert_llama import PointBertLlamaForPointCloudClassification
from hf_frozenlm.modeling.modeling_videomae_llama import VideoMAELlamaForVideoClassification
from hf_frozenlm.training import parse_train_arguments
from hf_frozenlm.training.learning_rates import learning_rate_scales, trunk_layer_id
from hf_frozenlm.training.trainer import FrozenLMTrainer, canonical_name

TINY_VIT = dict(image_size=16, patch_size=4, num_hidden_layers=4)


def vit(drop_path_rate=0.0, seed=0):
    torch.manual_seed(seed)
    return ViTLlamaForImageClassification.from_parts("vit-tiny", tiny_llama(), variant="random-llm", num_labels=5,
                                                     trunk_kwargs=TINY_VIT, drop_path_rate=drop_path_rate)


# -- recipes -----------------------------------------------------------------------------------------------
def test_deit_recipe_sets_the_papers_values_and_explicit_options_win(tmp_path):
    args = parse_train_arguments(["--recipe", "deit", "--output_dir", str(tmp_path / "a")])
    training, data, model, run = args.training, args.data, args.model, args.run
    assert args.task.name == "image-classification" and run.recipe == "deit"
    assert (training.num_train_epochs, training.learning_rate, training.weight_decay, training.label_smoothing_factor,
            training.max_grad_norm) == (300, 1e-3, 0.05, 0.1, 0.0)
    assert training.lr_scheduler_type == "cosine_with_min_lr" and training.lr_scheduler_kwargs == {"min_lr": 1e-5}
    assert abs(training.warmup_steps - 20 / 300) < 1e-12 and training.per_device_train_batch_size == 128
    assert (model.mixup, model.cutmix, model.drop_path) == (0.8, 1.0, 0.1)
    assert (data.aa, data.reprob, data.repeated_aug, data.scale, data.augment) == \
        ("rand-m9-mstd0.5-inc1", 0.25, True, [0.08, 1.0], "on")
    mine = parse_train_arguments(["--recipe", "deit", "--num_train_epochs", "2", "--mixup", "0", "--aa",
                                  "rand-m5", "--output_dir", str(tmp_path / "b")])
    assert (mine.training.num_train_epochs, mine.model.mixup, mine.data.aa, mine.model.cutmix) == (2, 0, "rand-m5", 1.0)


def test_pointbert_and_videomae_recipes(tmp_path):
    points = parse_train_arguments(["--recipe", "pointbert", "--output_dir", str(tmp_path / "p")])
    assert points.task.name == "point-cloud-classification"
    assert (points.training.learning_rate, points.training.max_grad_norm, points.training.label_smoothing_factor,
            points.training.per_device_train_batch_size, points.run.block_linear_lr_scale, points.model.drop_path) == \
        (5e-4, 10.0, 0.2, 32, 0.5, 0.1)
    base = parse_train_arguments(["--recipe", "videomae", "--trunk", "videomae-base", "--output_dir",
                                  str(tmp_path / "v")])
    small = parse_train_arguments(["--recipe", "videomae", "--trunk", "videomae-small", "--output_dir",
                                   str(tmp_path / "s")])
    assert (base.run.layer_decay, small.run.layer_decay) == (0.75, 0.7)
    assert abs(small.training.warmup_steps - 5 / 40) < 1e-12 and small.training.weight_decay == 0.05
    # VideoMAE's SSv2 scripts: lr x (total batch 384) / 256, 40 / 30 epochs, no clipping, 2 clips x 3 crops at test.
    assert (small.training.learning_rate, base.training.learning_rate) == (1.5e-3, 7.5e-4)
    assert (small.training.num_train_epochs, base.training.num_train_epochs) == (40, 30)
    assert (base.training.per_device_train_batch_size, base.training.max_grad_norm) == (48, 0.0)
    assert small.data.test_views == base.data.test_views == "2x3"
    plain = parse_train_arguments(["--task", "video-classification", "--output_dir", str(tmp_path / "d")])
    assert plain.data.test_views == "1x1"


@pytest.mark.parametrize("options, message", [
    (["--task", "video-classification", "--recipe", "deit"], "recipe of image-classification"),
    (["--recipe", "imagenet"], "not a recipe"),
    (["--aa", "autoaugment"], "--aa"),
    (["--reprob", "1.5"], "--reprob"),
    (["--drop_path", "1.0"], "--drop_path"),
    (["--task", "visual-question-answering", "--drop_path", "0.1"], "no stochastic depth"),
    (["--task", "video-classification", "--aa", "rand-m9"], "augment images"),
    (["--streaming"], "--max_steps"),
    (["--layer_decay", "0"], "--layer_decay"),
    (["--scale", "0.5"], "--scale"),
    (["--test_views", "2x3"], "averages views of videos"),
])
def test_bad_recipe_options_are_refused_with_the_fix(options, message, tmp_path):
    with pytest.raises(UsageError, match=message):
        parse_train_arguments([*options, "--output_dir", str(tmp_path / "x")])


# -- stochastic depth --------------------------------------------------------------------------------------
def test_drop_path_is_the_identity_at_eval_and_follows_the_linear_schedule():
    plain, dropping = vit(0.0), vit(0.3)
    dropping.load_state_dict(plain.state_dict())
    rates = [module.drop_path_rate for module in dropping.modules() if isinstance(module, DropoutThenDropPath)]
    assert rates == pytest.approx([0.1, 0.2, 0.3])  # layer 0 has rate 0: a plain dropout
    assert drop_path_rates(0.3, 4) == pytest.approx([0.0, 0.1, 0.2, 0.3])
    pixels = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(plain.eval()(pixels).logits, dropping.eval()(pixels).logits)
        torch.manual_seed(1)
        trained = dropping.train()(pixels).logits
    assert not torch.equal(trained, plain(pixels).logits)


def test_drop_path_keeps_samples_at_the_survival_rate_and_passes_gradients():
    layer = DropoutThenDropPath(0.0, 0.3).train()
    torch.manual_seed(0)
    out = layer(torch.ones(20000, 4, 8))
    kept = out[:, 0, 0] != 0
    assert abs(float(kept.float().mean()) - 0.7) < 0.015  # per sample: binomial sd 0.003
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / 0.7))  # kept samples rescaled, whole samples
    assert abs(float(out.mean()) - 1.0) < 0.03  # the expectation is unchanged
    model = vit(0.5).train()
    model(torch.randn(4, 3, 16, 16)).logits.square().sum().backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad and "layers.3." in name and "fc2.weight" in name:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0


def test_drop_path_travels_with_every_trunk_that_had_none(tmp_path):
    model = vit(0.2)
    model.save_pretrained(tmp_path / "vit")
    reloaded = ViTLlamaForImageClassification.from_pretrained(tmp_path / "vit")
    assert reloaded.config.drop_path_rate == 0.2
    assert [m.drop_path_rate for m in reloaded.modules() if isinstance(m, DropoutThenDropPath)] == \
        pytest.approx([0.2 / 3, 0.4 / 3, 0.2])
    video = VideoMAELlamaForVideoClassification.from_parts("videomae-tiny", tiny_llama(), variant="random-llm",
                                                           num_labels=3, drop_path_rate=0.1)
    # VideoMAE's two residual branches end in their own dropouts: both carry drop path in the last layer.
    last = video.videomae_llama.videomae.encoder.layer[-1]
    assert last.attention.output.dropout.drop_path_rate == last.output.dropout.drop_path_rate == pytest.approx(0.1)
    clip = torch.randn(2, 8, 3, 32, 32)
    with torch.no_grad():
        plain = VideoMAELlamaForVideoClassification(video.config.__class__(**{**video.config.to_dict(),
                                                                                "drop_path_rate": 0.0}))
        plain.load_state_dict(video.state_dict())
        assert torch.equal(plain.eval()(clip).logits, video.eval()(clip).logits)
    points = PointBertLlamaForPointCloudClassification.from_parts("pointbert-tiny", tiny_llama(), variant="random-llm",
                                                                  num_labels=3, trunk_kwargs={"drop_path_rate": 0.3})
    assert [layer.drop_path_rate for layer in points.pointbert_llama.layers][-1] == pytest.approx(0.3)


def test_drop_path_option_reaches_every_trunk_through_the_task(llm_folder, tmp_path):
    """--drop_path becomes the config's drop_path_rate, whether the trunk is a sub-config (ViT, VideoMAE) or the
    config's own fields (Point-BERT)."""
    from hf_frozenlm.tasks.base import TaskData

    data = TaskData(splits=None, name="x", id2label={0: "a", 1: "b"})
    for task, trunk in (("image-classification", "vit-tiny"), ("video-classification", "videomae-tiny"),
                        ("point-cloud-classification", "pointbert-tiny")):
        args = parse_train_arguments(["--task", task, "--trunk", trunk, "--llm", llm_folder, "--variant", "random-llm",
                                      "--drop_path", "0.25", "--output_dir", str(tmp_path / task)])
        model = args.task.build_model(args.model, args.data, data)
        assert model.config.drop_path_rate == 0.25, task


# -- layer-wise learning-rate decay ------------------------------------------------------------------------
def test_layer_ids_and_scales_follow_the_trunk_depth():
    names = ["vit_llama.vit.embeddings.cls_token", "vit_llama.vit.layers.0.mlp.fc1.weight",
             "vit_llama.vit.layers.3.mlp.fc1.weight", "vit_llama.frozen_lm.proj_in.weight",
             "vit_llama.frozen_lm.layers.0.mlp.up_proj.weight", "classifier.weight"]
    assert [trunk_layer_id(name, 4) for name in names] == [0, 1, 4, 5, 5, 5]
    scales = learning_rate_scales(names, layer_decay=0.5, block_linear_scale=0.1)
    assert [scales[name] for name in names] == pytest.approx([0.5 ** 5, 0.5 ** 4, 0.5, 0.1, 1.0, 1.0])


def test_trainer_builds_the_scaled_groups_and_keeps_every_trainable_parameter_once(tmp_path):
    from transformers import TrainingArguments

    model = vit()
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-3, weight_decay=0.05, report_to="none",
                             use_cpu=True, lr_scheduler_type="cosine", warmup_steps=2, max_steps=10)
    trainer = FrozenLMTrainer(model=model, args=args, layer_decay=0.75, block_linear_lr_scale=0.5)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    optimizer = trainer.optimizer
    names = {id(p): canonical_name(n) for n, p in model.named_parameters()}
    expected = learning_rate_scales([names[id(p)] for p in model.parameters() if p.requires_grad], 0.75, 0.5)
    seen = []
    no_decay = model.no_weight_decay()
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            name = names[id(parameter)]
            seen.append(name)
            assert group["initial_lr"] == pytest.approx(1e-3 * expected[name])
            assert group["weight_decay"] == (0.0 if name in no_decay else 0.05)
    assert sorted(seen) == sorted(n for n, p in model.named_parameters() if p.requires_grad)
    lrs = {round(group["initial_lr"] / 1e-3, 6) for group in optimizer.param_groups}
    assert 1.0 in lrs and round(0.75 ** 5, 6) in lrs and 0.5 in lrs  # head, patch embedding, the block's linears
    trainer.lr_scheduler.step()
    trainer.lr_scheduler.step()  # end of warm-up: every group at its own peak
    assert all(group["lr"] == pytest.approx(group["initial_lr"]) for group in optimizer.param_groups)


# -- a recipe run ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llm_folder(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("llm") / "tiny-llama", seed=2)


@pytest.fixture(scope="module")
def stripes(tmp_path_factory):
    """An image folder of horizontal vs vertical stripes in random colours (24 px): DeiT's augmentations (crops,
    flips, RandAugment, erasing) keep the class, unlike on 8x8 digits, where they erase it."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("stripes")
    rng = np.random.default_rng(0)
    for name in ("horizontal", "vertical"):
        (root / name).mkdir()
        for index in range(150):
            wave = (np.sin(2 * np.pi * np.arange(24) / rng.integers(3, 6) + rng.uniform(0, 6.3)) > 0).astype(float)
            mask = np.tile(wave[:, None], (1, 24)) if name == "horizontal" else np.tile(wave[None, :], (24, 1))
            pixels = mask[..., None] * rng.integers(0, 256, 3) + (1 - mask[..., None]) * rng.integers(0, 256, 3)
            pixels = np.clip(pixels + rng.normal(0, 10, pixels.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index:03d}.png")
    return str(root)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_deit_recipe_run_learns_and_records_its_recipe(precision, llm_folder, stripes, tmp_path):
    """The recipe as one process of a small model can use it, on a 300-step budget: without batch mixing and repeated
    augmentation, which hold a model this small near chance for hundreds of steps (docs/training.md; the sampler has
    its own tests)."""
    folder = tmp_path / "run"
    metrics, autocast = train_recording_autocast([
        "--recipe", "deit", "--mixup", "0", "--cutmix", "0", "--repeated_aug", "false", "--dataset",
        f"imagefolder:{stripes}", "--llm", llm_folder, "--image_size", "16", "--patch_size", "4", "--trunk_layers", "2", "--precision", precision,
        "--output_dir", str(folder), "--max_steps", "300", "--per_device_train_batch_size", "32", "--eval_strategy",
        "no", "--save_strategy", "no", "--logging_steps", "100", "--disable_tqdm", "true",
    ])
    assert bool(autocast) and all(autocast) == (precision == "bf16")
    assert metrics["test"]["accuracy"] > 0.7  # two classes: chance 0.5
    run_config = json.loads((folder / "run_config.json").read_text())
    assert run_config["run"]["recipe"] == "deit" and run_config["data"]["aa"] == "rand-m9-mstd0.5-inc1"
    card = (folder / "README.md").read_text()
    recipe_line = card.split("Recipe: `deit`")[1].split("\n")[0]
    assert "`reprob` 0.25" in recipe_line and "`mixup` 0.0" in recipe_line  # the resolved values, not the table's
    assert json.loads((folder / "config.json").read_text())["drop_path_rate"] == 0.1
