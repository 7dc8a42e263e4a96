"""Shared fixtures. Tests run offline on CPU with one thread (small ops ran far slower with two here)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import copy  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def smollm2_last_layer():
    """(llm_config, [state_dict], provenance) of SmolLM2-135M's last layer, read once per session."""
    from hf_frozenlm import load_llm_layers

    return load_llm_layers("smollm2-135m", [-1])


@pytest.fixture(scope="session")
def tiny_digits_model(smollm2_last_layer):
    """A small ViT (16 px, patch 2, 2 layers) + SmolLM2's last layer, 10 labels. Build a fresh copy per test."""
    from hf_frozenlm import ViTLlamaForImageClassification

    llm_config, layer_states, provenance = smollm2_last_layer

    def build(**kwargs):
        # from_parts with the config (no weights read), then the session's layer: same model as
        # from_parts("vit-tiny", "smollm2-135m", ...) without re-reading the GGUF file per test.
        torch.manual_seed(0)
        options = dict(num_labels=10, trunk_kwargs=dict(image_size=16, patch_size=2, num_hidden_layers=2))
        options.update(kwargs)
        model = ViTLlamaForImageClassification.from_parts("vit-tiny", copy.deepcopy(llm_config), **options)
        model.vit_llama.frozen_lm.load_llm_layer_states(layer_states)
        model.config.llm_source = dict(provenance)
        return model

    return build
