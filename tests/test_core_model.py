"""ViTLlama models: frozen stays frozen, save/reload, Auto classes, remote code in a fresh process, from_parts."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModel, AutoModelForImageClassification, Trainer, TrainingArguments, ViTConfig, ViTModel

from hf_frozenlm import ViTLlamaForImageClassification, ViTLlamaModel


def llm_tensors(model):
    return {name: p.detach().clone() for name, p in model.named_parameters() if ".frozen_lm.layers." in name}


def assert_llm_frozen(model):
    names = [name for name, p in model.named_parameters() if ".frozen_lm.layers." in name]
    assert names, "the model has no LLM layers"
    assert not any(p.requires_grad for name, p in model.named_parameters() if name in names)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert any("proj_in" in n for n in trainable) and any("classifier" in n for n in trainable)


def train_a_few_steps(model, tmp_path, steps=3):
    torch.manual_seed(0)
    data = [{"pixel_values": torch.randn(3, 16, 16), "labels": torch.tensor(i % 10)} for i in range(16)]
    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"), max_steps=steps, per_device_train_batch_size=4, learning_rate=1e-2,
        use_cpu=True, report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data)
    trainer.train()
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in model.parameters() if p.requires_grad}
    return model


def test_frozen_after_from_parts_train_mode_and_load_state_dict(tiny_digits_model):
    model = tiny_digits_model()
    assert_llm_frozen(model)
    model.train()
    assert_llm_frozen(model)
    model.load_state_dict(model.state_dict())
    assert_llm_frozen(model)
    model.load_state_dict(model.state_dict(), assign=True)
    assert_llm_frozen(model)


def test_frozen_weights_are_bit_identical_after_training(tiny_digits_model, tmp_path):
    model = tiny_digits_model()
    before = llm_tensors(model)
    trunk_before = model.vit_llama.vit.embeddings.cls_token.detach().clone()
    train_a_few_steps(model, tmp_path)
    for name, tensor in llm_tensors(model).items():
        assert torch.equal(tensor, before[name]), name
    assert not torch.equal(model.vit_llama.vit.embeddings.cls_token, trunk_before)  # the rest did train
    assert_llm_frozen(model)


def test_llm_trainable_unfreezes_and_trains(tiny_digits_model, tmp_path):
    model = tiny_digits_model(llm_trainable=True)
    assert all(p.requires_grad for p in model.vit_llama.frozen_lm.layers.parameters())
    before = llm_tensors(model)
    train_a_few_steps(model, tmp_path)
    assert any(not torch.equal(tensor, before[name]) for name, tensor in llm_tensors(model).items())


def test_save_reload_identical_logits_and_still_frozen(tiny_digits_model, tmp_path):
    model = tiny_digits_model().eval()
    pixels = torch.randn(3, 3, 16, 16)
    model.save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_vit_llama.ViTLlamaConfig",
        "AutoModel": "modeling_vit_llama.ViTLlamaModel",
        "AutoModelForImageClassification": "modeling_vit_llama.ViTLlamaForImageClassification",
    }
    for name in ("modeling_vit_llama.py", "configuration_vit_llama.py", "frozenlm_block.py",
                 "configuration_frozenlm.py", "frozenlm_loading.py", "frozenlm_hub_ranges.py"):
        assert (tmp_path / "model" / name).is_file(), name
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "model").eval()
    assert type(reloaded) is ViTLlamaForImageClassification
    assert_llm_frozen(reloaded)
    with torch.no_grad():
        assert torch.equal(model(pixels).logits, reloaded(pixels).logits)
    base = AutoModel.from_pretrained(tmp_path / "model").eval()
    assert type(base) is ViTLlamaModel
    with torch.no_grad():
        assert torch.equal(base(pixels).pooler_output, model.vit_llama(pixels).pooler_output)


def test_bf16_block_is_saved_in_bf16_and_reloads_in_bf16(tiny_digits_model, tmp_path):
    from safetensors import safe_open

    model = tiny_digits_model(llm_dtype="bfloat16").eval()
    model.save_pretrained(tmp_path / "model")
    with safe_open(str(tmp_path / "model" / "model.safetensors"), framework="pt") as handle:
        dtypes = {key: handle.get_slice(key).get_dtype() for key in handle.keys()}
    assert {d for k, d in dtypes.items() if ".frozen_lm.layers." in k} == {"BF16"}
    assert dtypes["classifier.weight"] == "F32"
    reloaded = ViTLlamaForImageClassification.from_pretrained(tmp_path / "model").eval()
    assert {p.dtype for p in reloaded.vit_llama.frozen_lm.layers.parameters()} == {torch.bfloat16}
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(pixels).logits, reloaded(pixels).logits)


def test_losses_single_and_multi_label(tiny_digits_model):
    model = tiny_digits_model()
    pixels = torch.randn(2, 3, 16, 16)
    single = model(pixels, labels=torch.tensor([1, 2]))
    assert single.loss.ndim == 0 and single.loss > 0
    multi = tiny_digits_model(problem_type="multi_label_classification")
    out = multi(pixels, labels=torch.zeros(2, 10))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, torch.zeros(2, 10))
    torch.testing.assert_close(out.loss, expected)


def test_hidden_states_include_the_block_output(tiny_digits_model):
    model = tiny_digits_model().eval()
    out = model(torch.randn(1, 3, 16, 16), output_hidden_states=True)
    # embeddings + 2 ViT layers + the frozen block's output
    assert len(out.hidden_states) == 4
    assert out.hidden_states[-1].shape == (1, 65, 192)


def test_peft_wrapping_keeps_llm_frozen(tiny_digits_model):
    from peft import LoraConfig, get_peft_model

    model = tiny_digits_model()
    peft_model = get_peft_model(
        model, LoraConfig(r=4, target_modules=r".*frozen_lm\.layers\.\d+\.self_attn\.(q|v)_proj", modules_to_save=["classifier"])
    )
    base_llm = [p for n, p in peft_model.named_parameters() if ".frozen_lm.layers." in n and "lora_" not in n]
    assert base_llm and not any(p.requires_grad for p in base_llm)
    assert any(p.requires_grad for n, p in peft_model.named_parameters() if "lora_" in n)


def test_variant_none_and_mlp_build_and_run():
    pixels = torch.randn(1, 3, 16, 16)
    small = dict(image_size=16, patch_size=4, num_hidden_layers=1)
    none = ViTLlamaForImageClassification.from_parts("vit-tiny", None, variant="none", num_labels=2, trunk_kwargs=small)
    assert none(pixels).logits.shape == (1, 2) and not hasattr(none.vit_llama.frozen_lm, "proj_in")
    from transformers import LlamaConfig

    llm = LlamaConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2)
    mlp = ViTLlamaForImageClassification.from_parts("vit-tiny", llm, variant="mlp", num_labels=2, trunk_kwargs=small)
    assert mlp(pixels).logits.shape == (1, 2)
    random = ViTLlamaForImageClassification.from_parts("vit-tiny", llm, variant="random-llm", num_labels=2, trunk_kwargs=small)
    assert_llm_frozen(random)
    with pytest.raises(ValueError, match="needs an LLM source"):
        ViTLlamaForImageClassification.from_parts("vit-tiny", None, variant="llm", trunk_kwargs=small)


def test_vision_from_a_vit_checkpoint_loads_its_weights(tmp_path):
    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             image_size=16, patch_size=4), add_pooling_layer=False)
    vit.save_pretrained(tmp_path / "vit")
    from transformers import LlamaConfig

    llm = LlamaConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2)
    model = ViTLlamaForImageClassification.from_parts(str(tmp_path / "vit"), llm, num_labels=3)
    for name, tensor in vit.state_dict().items():
        assert torch.equal(model.vit_llama.vit.state_dict()[name], tensor), name
    with pytest.raises(ValueError, match="not a preset"):
        ViTLlamaForImageClassification.from_parts(str(tmp_path / "nothing-here"), llm)


REMOTE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["hf_frozenlm"] = None  # hf_frozenlm must not be importable: only the saved code may run
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, pipeline
    from PIL import Image
    folder, pixels_path, image_path = sys.argv[1:4]
    pixels = torch.load(pixels_path)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    classifier = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    base = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    frozen = [p.requires_grad for n, p in classifier.named_parameters() if ".frozen_lm.layers." in n]
    with torch.no_grad():
        logits = classifier(pixels).logits
        pooled = base(pixels).pooler_output
    scores = pipeline("image-classification", model=folder, trust_remote_code=True, top_k=10)(Image.open(image_path))
    torch.save({"logits": logits, "pooled": pooled, "scores": scores, "config_class": type(config).__module__,
                "frozen": frozen, "classes": [type(classifier).__module__, type(base).__name__]}, sys.argv[4])
    """
)


def test_remote_code_load_in_a_fresh_process(tiny_digits_model, tmp_path):
    from PIL import Image
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    model = tiny_digits_model(id2label={i: f"digit {i}" for i in range(10)}).eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    processor = ViTImageProcessorPil(size={"height": 16, "width": 16})
    processor.save_pretrained(folder)
    image = Image.fromarray((torch.rand(16, 16, 3) * 255).to(torch.uint8).numpy())
    image.save(tmp_path / "image.png")
    pixels = torch.randn(2, 3, 16, 16)
    torch.save(pixels, tmp_path / "pixels.pt")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(folder), str(tmp_path / "pixels.pt"), str(tmp_path / "image.png"),
         str(tmp_path / "out.pt")],
        check=True, env=env, cwd=tmp_path,
    )
    result = torch.load(tmp_path / "out.pt")
    assert result["config_class"].startswith("transformers_modules.")  # remote code, not our package
    assert result["classes"][0].startswith("transformers_modules.") and result["classes"][1] == "ViTLlamaModel"
    assert result["frozen"] and not any(result["frozen"])
    with torch.no_grad():
        assert torch.equal(result["logits"], model(pixels).logits)
        assert torch.equal(result["pooled"], model.vit_llama(pixels).pooler_output)
        local_pixels = processor(image, return_tensors="pt")["pixel_values"]
        probabilities = model(local_pixels).logits.softmax(-1)[0]
    for entry in result["scores"]:
        label = int(entry["label"].split()[-1])
        assert abs(entry["score"] - probabilities[label].item()) < 1e-6
