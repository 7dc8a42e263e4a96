"""Shared fixtures. Tests run offline on CPU with one thread (small ops ran far slower with two here)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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

    def build(**kwargs):
        torch.manual_seed(0)
        options = dict(num_labels=10, trunk_kwargs=dict(image_size=16, patch_size=2, num_hidden_layers=2))
        options.update(kwargs)
        return ViTLlamaForImageClassification.from_parts("vit-tiny", "smollm2-135m", **options)

    return build
