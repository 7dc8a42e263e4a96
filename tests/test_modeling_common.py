"""The common model tester (as transformers' ModelTesterMixin): every task head, on a tiny config, passes the same
checks. One `HeadSpec` per head says how to build it and what its inputs look like; everything else is shared.

- forward shapes and typed outputs; the loss is a scalar that backpropagates
- the LLM layers are frozen after construction, train(), load_state_dict, save/reload and training steps (and stay
  bit-identical), while the rest trains
- save/reload gives identical outputs; a fresh process without hf_frozenlm loads every folder through every Auto
  class its auto_map names (transformers' own and ours) and gives identical outputs
- a slim save leaves the LLM layers out, reloads them from the recorded source with the sha256 check, and is refused
  when the layers no longer equal that source
- the trunk starts from its own init policy (transformers' trunk class, or the family's other head)
- gradient checkpointing gives the same gradients
- padding does not leak into valid tokens where a head takes masks
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from typing import Callable

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.utils import ModelOutput

import hf_frozenlm  # noqa: F401  (registers the Auto classes)
from hf_frozenlm import (
    PointBertLlamaForPointCloudClassification,
    PointBertLlamaForQuestionAnswering,
    VectorNetLlamaForMotionForecasting,
    VideoMAELlamaForVideoClassification,
    ViltLlamaForImageAndTextRetrieval,
    ViltLlamaForQuestionAnswering,
    ViTLlamaForImageClassification,
)
from hf_frozenlm.modeling import HEAD_MODELS

LLM_FIELDS = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
                  num_hidden_layers=2, vocab_size=16)


@dataclass
class HeadSpec:
    """How to build one head on a tiny config, and a batch of its inputs (with labels)."""

    head: type
    trunk: object
    config: dict
    inputs: Callable[[torch.Generator], dict]  # a batch of 2, labels included
    output_fields: tuple[str, ...]  # what the typed output holds, with their shapes checked by `check`
    check: Callable[[object, dict], None]
    pad: Callable[[dict, torch.Generator], tuple[dict, Callable]] | None = None  # padded inputs, valid-part selector
    trunk_kwargs: dict = field(default_factory=dict)


def _image_inputs(g):
    return {"pixel_values": torch.randn(2, 3, 16, 16, generator=g), "labels": torch.tensor([0, 2])}


def _video_inputs(g):
    return {"pixel_values": torch.randn(2, 2, 3, 16, 16, generator=g), "labels": torch.tensor([1, 0])}


def _points_inputs(g):
    return {"point_values": torch.randn(2, 64, 3, generator=g), "labels": torch.tensor([2, 1])}


def _motion_inputs(g):
    polylines = torch.randn(2, 4, 5, 8, generator=g)
    vector_mask = torch.ones(2, 4, 5, dtype=torch.bool)
    vector_mask[1, 3, 2:] = False  # a shorter polyline
    return {"polylines": polylines, "vector_mask": vector_mask, "polyline_mask": torch.ones(2, 4, dtype=torch.bool),
            "labels": torch.randn(2, 6, 2, generator=g)}


def _motion_pad(batch, g):
    padded = dict(batch)
    extra = torch.randn(2, 2, 5, 8, generator=g) * 50  # two padded polylines of garbage
    padded["polylines"] = torch.cat([batch["polylines"], extra], dim=1)
    padded["vector_mask"] = torch.cat([batch["vector_mask"], torch.zeros(2, 2, 5, dtype=torch.bool)], dim=1)
    padded["polyline_mask"] = torch.cat([batch["polyline_mask"], torch.zeros(2, 2, dtype=torch.bool)], dim=1)
    return padded, lambda output: (output.trajectories, output.mode_logits)


def _vilt_inputs(g, labels):
    input_ids = torch.randint(5, 60, (2, 6), generator=g)
    input_ids[:, 0] = 2  # [CLS]
    return {"input_ids": input_ids, "attention_mask": torch.ones(2, 6, dtype=torch.long),
            "pixel_values": torch.randn(2, 3, 32, 32, generator=g), "pixel_mask": torch.ones(2, 32, 32, dtype=torch.long),
            "labels": labels}


def _vilt_pad(batch, g):
    padded = dict(batch)
    padded["input_ids"] = torch.cat([batch["input_ids"], torch.randint(5, 60, (2, 3), generator=g)], dim=1)
    padded["attention_mask"] = torch.cat([batch["attention_mask"], torch.zeros(2, 3, dtype=torch.long)], dim=1)
    return padded, lambda output: output.logits


def _scene_qa_inputs(g):
    input_ids = torch.randint(5, 60, (2, 5), generator=g)
    return {"point_values": torch.randn(2, 64, 3, generator=g), "point_features": torch.rand(2, 64, 3, generator=g),
            "input_ids": input_ids, "attention_mask": torch.ones(2, 5, dtype=torch.long), "labels": torch.tensor([3, 0])}


def _scene_qa_pad(batch, g):
    padded = dict(batch)
    padded["input_ids"] = torch.cat([batch["input_ids"], torch.randint(5, 60, (2, 4), generator=g)], dim=1)
    padded["attention_mask"] = torch.cat([batch["attention_mask"], torch.zeros(2, 4, dtype=torch.long)], dim=1)
    return padded, lambda output: output.logits


def _logits(classes):
    def check(output, batch):
        assert output.logits.shape == (2, classes)
    return check


def _motion_check(output, batch):
    assert output.trajectories.shape == (2, 3, 6, 2) and output.mode_logits.shape == (2, 3)
    assert output.last_hidden_state.shape[:2] == batch["polylines"].shape[:2]


POINTBERT_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_groups=8,
                      group_size=8, group_encoder_hidden_sizes=[16, 16, 32], group_encoder_size=32,
                      position_embedding_size=16, classifier_hidden_size=32, drop_path_rate=0.0,
                      classifier_dropout=0.0)
LABELS = {i: f"class-{i}" for i in range(4)}

SPECS = {
    "image-classification": HeadSpec(
        ViTLlamaForImageClassification, "vit-tiny", dict(id2label=LABELS), _image_inputs, ("loss", "logits"),
        _logits(4), trunk_kwargs=dict(image_size=16, patch_size=4, num_hidden_layers=2, hidden_size=32,
                                      num_attention_heads=2, intermediate_size=64)),
    "video-classification": HeadSpec(
        VideoMAELlamaForVideoClassification, "videomae-tiny", dict(id2label=LABELS), _video_inputs, ("loss", "logits"),
        _logits(4), trunk_kwargs=dict(image_size=16, patch_size=8, num_frames=2, hidden_size=32)),
    "point-cloud-classification": HeadSpec(
        PointBertLlamaForPointCloudClassification, dict(POINTBERT_TINY), dict(id2label=LABELS), _points_inputs,
        ("loss", "logits"), _logits(4)),
    "motion-forecasting": HeadSpec(
        VectorNetLlamaForMotionForecasting, "vectornet-tiny", dict(num_modes=3, future_steps=6), _motion_inputs,
        ("loss", "trajectories", "mode_logits"), _motion_check, pad=_motion_pad),
    "visual-question-answering": HeadSpec(
        ViltLlamaForQuestionAnswering, "vilt-tiny", dict(id2label=LABELS),
        lambda g: _vilt_inputs(g, torch.rand(2, 4, generator=g)), ("loss", "logits"), _logits(4), pad=_vilt_pad,
        trunk_kwargs=dict(image_size=32, patch_size=16, vocab_size=64, max_position_embeddings=16, hidden_size=32,
                          num_attention_heads=2, intermediate_size=64)),
    "image-text-retrieval": HeadSpec(
        ViltLlamaForImageAndTextRetrieval, "vilt-tiny", {}, lambda g: _vilt_inputs(g, torch.tensor([1.0, 0.0])),
        ("loss", "logits"), _logits(1), pad=_vilt_pad,
        trunk_kwargs=dict(image_size=32, patch_size=16, vocab_size=64, max_position_embeddings=16, hidden_size=32,
                          num_attention_heads=2, intermediate_size=64)),
    "3d-question-answering": HeadSpec(
        PointBertLlamaForQuestionAnswering, dict(POINTBERT_TINY, point_feature_size=3),
        dict(id2label=LABELS, question_vocab_size=64, max_question_length=12), _scene_qa_inputs, ("loss", "logits"),
        _logits(4), pad=_scene_qa_pad),
}
TASKS = list(SPECS)


def test_every_head_has_a_spec():
    assert {spec.head for spec in SPECS.values()} == set(HEAD_MODELS)


@pytest.fixture(scope="module")
def tiny_llm_folder(tmp_path_factory):
    """A 2-layer random LLaMA saved as HF safetensors: a real LLM source for from_parts and slim checkpoints."""
    folder = tmp_path_factory.mktemp("llm") / "tiny-llama"
    torch.manual_seed(7)
    LlamaForCausalLM(LlamaConfig(**LLM_FIELDS)).save_pretrained(folder)
    return folder


def build(task: str, llm=None, **overrides):
    spec = SPECS[task]
    torch.manual_seed(0)
    config = {**spec.config, **overrides}
    return spec.head.from_parts(copy.deepcopy(spec.trunk), llm if llm is not None else LlamaConfig(**LLM_FIELDS),
                                trunk_kwargs=dict(spec.trunk_kwargs) or None, **config)


def batch_of(task: str, seed: int = 0) -> dict:
    return SPECS[task].inputs(torch.Generator().manual_seed(seed))


def without_labels(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "labels"}


def outputs_of(model, batch) -> dict[str, torch.Tensor]:
    """The output tensors of a forward pass (loss excluded), by name."""
    with torch.no_grad():
        output = model(**without_labels(batch))
    return {name: value for name, value in output.items() if isinstance(value, torch.Tensor)}


def assert_same(got: torch.Tensor, expected: torch.Tensor, what=""):
    """Equal up to float rounding: the same weights at another memory address can take another vectorised summation
    order in oneDNN/MKL (seen: 1e-9 on a 32 -> 1 linear after reloading); nothing else may differ."""
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6, msg=lambda m: f"{what}: {m}")


def llm_parameters(model) -> dict[str, torch.Tensor]:
    return {name: p for name, p in model.named_parameters() if ".frozen_lm.layers." in f".{name}"}


def assert_frozen(model):
    llm = llm_parameters(model)
    assert llm and not any(p.requires_grad for p in llm.values())
    assert any(p.requires_grad for name, p in model.named_parameters() if name not in llm)


# -- forward -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_forward_shapes_typed_outputs_and_loss(task):
    spec = SPECS[task]
    model = build(task).eval()
    batch = batch_of(task)
    output = model(**batch)
    assert isinstance(output, ModelOutput) and type(output).__module__.startswith(("transformers.", "hf_frozenlm."))
    assert all(getattr(output, name) is not None for name in spec.output_fields)
    spec.check(output, batch)
    assert output.loss.ndim == 0 and torch.isfinite(output.loss)
    output.loss.backward()
    assert model.frozen_block().proj_in.weight.grad is not None
    assert isinstance(model(**without_labels(batch), return_dict=False), tuple)
    hidden = model(**without_labels(batch), output_hidden_states=True).hidden_states
    assert hidden is not None and len(hidden) >= 2


# -- frozen ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_frozen_after_construction_modes_loading_and_training(task, tmp_path):
    model = build(task)
    assert_frozen(model)
    model.train()
    assert_frozen(model)
    model.load_state_dict(model.state_dict())
    assert_frozen(model)
    before = {name: p.detach().clone() for name, p in llm_parameters(model).items()}
    others = {name: p.detach().clone() for name, p in model.named_parameters() if name not in before}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    for seed in range(2):
        loss = model(**batch_of(task, seed)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(torch.equal(p, before[name]) for name, p in llm_parameters(model).items())
    assert any(not torch.equal(p, others[name]) for name, p in model.named_parameters() if name in others)
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path)
    assert_frozen(reloaded)
    reloaded.train()
    assert_frozen(reloaded)


# -- save / reload / remote code ---------------------------------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_save_reload_identical(task, tmp_path):
    model = build(task).eval()
    batch = batch_of(task)
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path).eval()
    expected, got = outputs_of(model, batch), outputs_of(reloaded, batch)
    assert expected.keys() == got.keys()
    for name in expected:
        assert_same(got[name], expected[name], name)
    config = json.loads((tmp_path / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", *type(model).auto_map_entries}
    if type(model).custom_pipeline:
        assert set(config["custom_pipelines"]) == {type(model).custom_pipeline[0]}
        assert (tmp_path / "frozenlm_pipelines.py").is_file()


REMOTE = textwrap.dedent("""
    import json, sys
    sys.modules["hf_frozenlm"] = None  # only the saved code may run
    import torch, transformers
    from transformers.dynamic_module_utils import get_class_from_dynamic_module
    cases = json.load(open(sys.argv[1]))
    results = {}
    for case in cases:
        folder = case["folder"]
        batch = torch.load(case["batch"])
        config = json.load(open(folder + "/config.json"))
        for auto_name in config["auto_map"]:
            if auto_name == "AutoConfig":
                continue
            auto = getattr(transformers, auto_name, None) or get_class_from_dynamic_module(
                "frozenlm_auto." + auto_name, folder)
            model = auto.from_pretrained(folder, trust_remote_code=True).eval()
            frozen = [not p.requires_grad for n, p in model.named_parameters() if ".frozen_lm.layers." in "." + n]
            with torch.no_grad():
                output = model(**batch)
            results[folder + "|" + auto_name] = {
                "class": type(model).__name__, "module": type(model).__module__, "frozen": all(frozen) and bool(frozen),
                "outputs": {k: v for k, v in output.items() if isinstance(v, torch.Tensor)},
            }
    torch.save(results, sys.argv[2])
""")


def test_every_folder_loads_through_its_auto_classes_in_a_fresh_process(tmp_path):
    """One fresh process (hf_frozenlm unimportable) loads all seven heads' folders through every Auto class their
    auto_map names, including ours for the tasks transformers has none for; outputs equal the in-process ones."""
    import transformers

    from hf_frozenlm.modeling import CUSTOM_AUTO_CLASSES

    cases, expected = [], {}
    for task in TASKS:
        folder = tmp_path / task
        model = build(task).eval()
        model.save_pretrained(folder)
        batch = without_labels(batch_of(task))
        torch.save(batch, tmp_path / f"{task}.pt")
        cases.append({"folder": str(folder), "batch": str(tmp_path / f"{task}.pt")})
        for auto_name in type(model).auto_map_entries:
            auto = getattr(transformers, auto_name, None) or CUSTOM_AUTO_CLASSES[auto_name]
            local = auto.from_pretrained(folder).eval()  # the classes hf_frozenlm registered in this process
            expected[f"{folder}|{auto_name}"] = (type(local).__name__, outputs_of(local, batch))
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    subprocess.run([sys.executable, "-c", REMOTE, str(tmp_path / "cases.json"), str(tmp_path / "out.pt")],
                   check=True, env=env, cwd=tmp_path)
    results = torch.load(tmp_path / "out.pt")
    assert set(results) == set(expected)
    for key, (class_name, outputs) in expected.items():
        result = results[key]
        assert result["class"] == class_name and result["module"].startswith("transformers_modules"), key
        assert result["frozen"], key
        assert result["outputs"].keys() == outputs.keys(), key
        for name, tensor in outputs.items():
            assert_same(result["outputs"][name], tensor, f"{key} {name}")


# -- slim checkpoints ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_slim_save_reloads_verified_layers_and_refuses_changed_ones(task, tiny_llm_folder, tmp_path):
    from safetensors.torch import load_file

    model = build(task, llm=str(tiny_llm_folder)).eval()
    batch = batch_of(task)
    model.save_pretrained(tmp_path / "slim", frozen_weights=False)
    assert not any(".frozen_lm.layers." in key for key in load_file(tmp_path / "slim" / "model.safetensors"))
    reloaded = type(model).from_pretrained(tmp_path / "slim").eval()
    expected, got = outputs_of(model, batch), outputs_of(reloaded, batch)
    for name in expected:
        assert_same(got[name], expected[name], name)
    # The layers edited in memory no longer equal the recorded source: a slim save would silently drop the edit.
    with torch.no_grad():
        next(iter(llm_parameters(model).values()))[0, 0] += 1.0
    with pytest.raises(ValueError, match="not the ones recorded"):
        model.save_pretrained(tmp_path / "refused", frozen_weights=False)


# -- init policy -----------------------------------------------------------------------------------------------
def _trunk_reference(model):
    """The trunk's parameters as its own init policy makes them: transformers' trunk class alone, or (our own trunks)
    the family's plain base model built from the same config."""
    base = model.base_model
    torch.manual_seed(1)
    if model.trunk_model_class is not None:
        trunk = model.trunk
        reference = model.trunk_model_class(trunk.config, **({"add_pooling_layer": False}
                                                             if trunk.config.model_type == "vit" else {}))
        return dict(trunk.named_parameters()), dict(reference.named_parameters())
    family = {"PointBertLlamaQAConfig": "PointBertLlamaModel"}.get(type(model.config).__name__, type(base).__name__)
    reference_cls = getattr(sys.modules[type(model).__module__], family)
    reference = reference_cls(reference_cls.config_class(**model.config.to_dict()))
    names = model.trunk_modules
    pick = lambda module: {f"{n}.{k}": p for n in names for k, p in getattr(module, n).named_parameters()}  # noqa: E731
    return pick(base), pick(reference)


# transformers' ViLT port starts these at zero and relies on pretrained checkpoints; ViLT's own code draws them from a
# truncated normal (std 0.02), as ViT does, and so do we (a zero CLS token and positions would train from symmetry).
VILT_TASKS = ("visual-question-answering", "image-text-retrieval")
VILT_TIMM_INIT = ("embeddings.position_embeddings", "embeddings.cls_token")


@pytest.mark.parametrize("task", TASKS)
def test_trunk_starts_from_its_own_init_policy(task):
    model = build(task)
    ours, reference = _trunk_reference(model)
    assert ours.keys() == reference.keys()
    for name, parameter in ours.items():
        if parameter.numel() < 64 or (task in VILT_TASKS and name in VILT_TIMM_INIT):
            continue
        ours_std, reference_std = parameter.float().std(), reference[name].float().std()
        if reference_std < 1e-8:  # a constant init (zero biases, unit norms): the same constant
            assert ours_std < 1e-8 and torch.allclose(parameter.mean(), reference[name].mean()), name
        else:
            assert 0.7 < ours_std / reference_std < 1.4, (name, float(ours_std), float(reference_std))


# -- gradient checkpointing --------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_gradient_checkpointing_gives_the_same_gradients(task):
    def gradients(checkpointing):
        model = build(task)
        if checkpointing:
            model.gradient_checkpointing_enable()
        model.train()
        torch.manual_seed(3)
        model(**batch_of(task)).loss.backward()
        return {name: p.grad for name, p in model.named_parameters() if p.requires_grad}

    plain, checkpointed = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-4, atol=1e-6, msg=name)


# -- padding ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", [task for task, spec in SPECS.items() if spec.pad is not None])
def test_padding_does_not_leak_into_valid_tokens(task):
    model = build(task).eval()
    batch = without_labels(batch_of(task))
    padded, select = SPECS[task].pad(batch, torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected, got = select(model(**batch)), select(model(**padded))
    for a, b in zip(expected if isinstance(expected, tuple) else (expected,), got if isinstance(got, tuple) else (got,)):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
