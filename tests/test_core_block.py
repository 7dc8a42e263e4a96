"""FrozenLMBlock: parity with an independent reference, bidirectionality, padding, architectures, variants."""

import copy

import pytest
import torch
from transformers import AutoConfig

from hf_frozenlm import FrozenLMBlock, ViTLlamaConfig

BACKENDS = ["eager", "sdpa"]

# Tiny random configs, one per supported architecture.
TINY_LLMS = {
    "llama": dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=3),
    "mistral": dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=3),
    "qwen2": dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=3),
    "qwen3": dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=3, head_dim=8),
    "opt": dict(hidden_size=32, ffn_dim=64, num_attention_heads=4, num_hidden_layers=3, word_embed_proj_dim=32),
    "gpt2": dict(n_embd=32, n_head=4, n_layer=3),
}


def tiny_block(model_type, backend, trunk_width=24, llm_layers=(-1,), **config_kwargs):
    torch.manual_seed(0)
    llm_config = AutoConfig.for_model(model_type, **TINY_LLMS[model_type])
    config = ViTLlamaConfig(llm_config=llm_config, llm_layers=list(llm_layers), **config_kwargs)
    config._attn_implementation = backend  # the block hands the model's backend to its LLM layers
    block = FrozenLMBlock(config, trunk_width)
    # Random but non-trivial weights everywhere (norm weights too), so any asymmetry would show.
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.2 + (1.0 if parameter.ndim == 1 else 0.0))
    return block.eval()


def rms_norm(x, weight, eps):
    x32 = x.float()
    return x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps) * weight


def reference_llama_block(x, proj_in, layer, proj_out, num_heads, num_kv_heads, eps):
    """The paper's block written out by hand: RMSNorm -> bidirectional attention without rotary (fp32 softmax)
    -> residual -> RMSNorm -> SwiGLU -> residual -> unit RMSNorm, between the two bias-free linears."""
    s = layer
    h = x @ proj_in.T
    batch, tokens, width = h.shape
    head_dim = s["self_attn.q_proj.weight"].shape[0] // num_heads
    a = rms_norm(h, s["input_layernorm.weight"], eps)
    q = (a @ s["self_attn.q_proj.weight"].T).view(batch, tokens, num_heads, head_dim).transpose(1, 2)
    k = (a @ s["self_attn.k_proj.weight"].T).view(batch, tokens, num_kv_heads, head_dim).transpose(1, 2)
    v = (a @ s["self_attn.v_proj.weight"].T).view(batch, tokens, num_kv_heads, head_dim).transpose(1, 2)
    k = k.repeat_interleave(num_heads // num_kv_heads, dim=1)
    v = v.repeat_interleave(num_heads // num_kv_heads, dim=1)
    scores = (q @ k.transpose(-1, -2)) / head_dim**0.5
    attention = torch.softmax(scores.float(), dim=-1) @ v
    h = h + attention.transpose(1, 2).reshape(batch, tokens, -1) @ s["self_attn.o_proj.weight"].T
    m = rms_norm(h, s["post_attention_layernorm.weight"], eps)
    gate = m @ s["mlp.gate_proj.weight"].T
    h = h + (torch.nn.functional.silu(gate) * (m @ s["mlp.up_proj.weight"].T)) @ s["mlp.down_proj.weight"].T
    h = rms_norm(h, 1.0, 1e-6)
    return h @ proj_out.T


@pytest.mark.parametrize("backend", BACKENDS)
def test_parity_with_reference_on_smollm2_last_layer(backend, smollm2_last_layer):
    llm_config, layer_states, _ = smollm2_last_layer
    llm_config = copy.deepcopy(llm_config)
    llm_config._attn_implementation = backend
    config = ViTLlamaConfig(llm_config=llm_config, llm_layers=[-1])
    torch.manual_seed(0)
    block = FrozenLMBlock(config, 192).eval()
    torch.nn.init.normal_(block.proj_in.weight, std=0.05)
    torch.nn.init.normal_(block.proj_out.weight, std=0.05)
    block.load_llm_layer_states(layer_states)
    x = torch.randn(2, 17, 192)
    with torch.no_grad():
        ours = block(x)
        reference = reference_llama_block(
            x, block.proj_in.weight, layer_states[0], block.proj_out.weight,
            llm_config.num_attention_heads, llm_config.num_key_value_heads, llm_config.rms_norm_eps,
        )
    scale = reference.abs().max()
    assert (ours - reference).abs().max() / scale < 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model_type", sorted(TINY_LLMS))
def test_permuting_tokens_permutes_output(model_type, backend):
    block = tiny_block(model_type, backend)
    x = torch.randn(2, 9, 24)
    permutation = torch.randperm(9)
    with torch.no_grad():
        out = block(x)
        out_permuted = block(x[:, permutation])
    torch.testing.assert_close(out_permuted, out[:, permutation], rtol=1e-5, atol=1e-5)
    # Not trivially equivariant: the output depends on the other tokens (attention is doing something).
    with torch.no_grad():
        alone = block(x[:, :1])
    assert not torch.allclose(alone, out[:, :1], atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model_type", sorted(TINY_LLMS))
def test_padding_does_not_change_valid_tokens(model_type, backend):
    block = tiny_block(model_type, backend)
    x = torch.randn(2, 6, 24)
    padded = torch.cat([x, torch.randn(2, 4, 24) * 10], dim=1)
    mask = torch.cat([torch.ones(2, 6), torch.zeros(2, 4)], dim=1).long()
    with torch.no_grad():
        unpadded_out = block(x)
        padded_out = block(padded, attention_mask=mask)
    torch.testing.assert_close(padded_out[:, :6], unpadded_out, rtol=1e-5, atol=1e-5)


def test_backends_agree(smollm2_last_layer):
    outputs = {}
    for backend in BACKENDS:
        block = tiny_block("llama", backend, llm_layers=(0, 2))
        with torch.no_grad():
            outputs[backend] = block(torch.ones(1, 5, 24).cumsum(1) / 5)
    torch.testing.assert_close(outputs["eager"], outputs["sdpa"], rtol=1e-5, atol=1e-5)


def test_several_layers_apply_in_order():
    block = tiny_block("llama", "eager", llm_layers=(2, 0))
    assert [layer.self_attn.layer_idx for layer in block.layers] == [2, 0]
    assert block.layer_indices == [2, 0]


def test_unsupported_architecture_lists_supported():
    llm_config = AutoConfig.for_model("bert", hidden_size=32, num_attention_heads=4, num_hidden_layers=2)
    with pytest.raises(ValueError, match=r"Unsupported LLM architecture 'bert'.*gpt2.*llama.*mistral.*opt.*qwen2"):
        FrozenLMBlock(ViTLlamaConfig(llm_config=llm_config), 16)


def test_layer_index_out_of_range_names_valid_range():
    llm_config = AutoConfig.for_model("llama", **TINY_LLMS["llama"])
    with pytest.raises(IndexError, match=r"index 7 is out of range for a 3-layer LLM; valid indices are 0..2 or -3..-1"):
        FrozenLMBlock(ViTLlamaConfig(llm_config=llm_config, llm_layers=[7]), 16)


def test_wrong_width_state_dict_is_rejected():
    block = tiny_block("llama", "eager")
    other = tiny_block("llama", "eager")
    state = {name: torch.cat([t, t], dim=-1) if t.ndim == 2 else t for name, t in other.layers[0].state_dict().items()}
    with pytest.raises(ValueError, match="another width than llm_config"):
        block.load_llm_layer_states([state])


def test_variants_have_the_documented_parts():
    for variant, expected in {
        "llm": {"proj_in", "layers", "norm", "proj_out"},
        "random-llm": {"proj_in", "layers", "norm", "proj_out"},
        "mlp": {"proj_in", "mlp", "proj_out"},
        "none": set(),
    }.items():
        block = tiny_block("llama", "eager", variant=variant)
        assert {name for name, _ in block.named_children()} == expected, variant
    x = torch.randn(1, 4, 24)
    assert torch.equal(tiny_block("llama", "eager", variant="none")(x), x)


@pytest.mark.parametrize("llm_dtype", ["bfloat16", "float16"])
def test_llm_dtype_stores_layers_and_returns_trunk_dtype(llm_dtype):
    block = tiny_block("llama", "sdpa", llm_dtype=llm_dtype)
    assert {p.dtype for p in block.layers.parameters()} == {getattr(torch, llm_dtype)}
    assert block.proj_in.weight.dtype == torch.float32
    x = torch.randn(2, 5, 24)
    out = block(x)
    assert out.dtype == torch.float32
    reference = tiny_block("llama", "sdpa")
    with torch.no_grad():
        expected = reference(x)
    assert (out - expected).abs().max() / expected.abs().max() < 5e-2


@pytest.mark.parametrize("layers, message", [
    ([-1, -1], r"names layer\(s\) \[2\] .* more than once"),
    ([2, -1], r"names layer\(s\) \[2\] .* more than once"),
    ([True], "True is not a layer index"),
    ([1.5], "1.5 is not a layer index"),
])
def test_repeated_or_non_integer_layer_indices_are_refused(layers, message):
    # Before: [-1, -1] and [2, -1] (the same layer of a 3-layer LLM) were applied twice silently, and [True] meant
    # layer 1.
    llm_config = AutoConfig.for_model("llama", **TINY_LLMS["llama"])
    with pytest.raises(ValueError, match=message):
        ViTLlamaConfig(llm_config=llm_config, llm_layers=layers)


def test_bad_config_values_are_named():
    llm_config = AutoConfig.for_model("llama", **TINY_LLMS["llama"])
    with pytest.raises(ValueError, match="variant='lora' is not one of"):
        ViTLlamaConfig(llm_config=llm_config, variant="lora")
    with pytest.raises(ValueError, match="llm_dtype='fp8' is not one of"):
        ViTLlamaConfig(llm_config=llm_config, llm_dtype="fp8")
    with pytest.raises(ValueError, match="needs llm_config"):
        ViTLlamaConfig(variant="llm")
