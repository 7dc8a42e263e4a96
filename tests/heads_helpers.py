"""Helpers shared by the task tests: tiny LLMs (in memory and as checkpoint folders), training through the real loop
with its precision recorded, freezing checks, remote-code loads."""

import os
import subprocess
import sys
import textwrap

import torch
from transformers import LlamaConfig


def tiny_llama(**overrides) -> LlamaConfig:
    """A 2-layer random LLaMA small enough for CPU tests (the block takes its last layer by default)."""
    fields = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
                  num_hidden_layers=2, vocab_size=16)
    fields.update(overrides)
    return LlamaConfig(**fields)


def save_tiny_llama(folder, seed: int = 0, **overrides) -> str:
    """A random tiny LLaMA saved as an HF checkpoint folder, which `--llm FOLDER` reads as it reads SmolLM2."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    LlamaForCausalLM(tiny_llama(**overrides)).save_pretrained(folder)
    return str(folder)


def train_recording_autocast(argv: list[str]) -> tuple[dict, list[bool]]:
    """`train_task(parse_train_arguments(argv))`: its metrics, and for every training forward of the frozen block
    whether it ran under bf16 autocast (what Trainer really did, not only what the flag says)."""
    from hf_frozenlm.modeling import FrozenLMBlock
    from hf_frozenlm.training import parse_train_arguments, train_task

    autocast = []

    def record(module, _args):
        # The block runs inside the model's forward, where accelerate's autocast (if any) is entered.
        if isinstance(module, FrozenLMBlock) and module.training:
            autocast.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)

    arguments = parse_train_arguments(argv)
    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        metrics = train_task(arguments)
    finally:
        handle.remove()
        torch.set_num_threads(1)  # train_task sets the process's thread count; keep the other tests on one
    return metrics, autocast


def builtin_runs(tmp_path_factory, task_name: str, llm_folder: str, options: list[str]):
    """A function precision -> (run folder, metrics, whether every training forward ran under bf16 autocast) of
    `task_name`'s builtin recipe through the real loop with `options`; each precision trained once per module."""
    cache = {}

    def run(precision):
        if precision not in cache:
            folder = tmp_path_factory.mktemp(f"{task_name}-{precision}") / "run"
            metrics, autocast = train_recording_autocast(["--task", task_name, "--precision", precision, "--llm",
                                                          llm_folder, "--output_dir", str(folder), *options])
            cache[precision] = folder, metrics, bool(autocast) and all(autocast)
        return cache[precision]

    return run

def llm_tensors(model):
    return {name: p.detach().clone() for name, p in model.named_parameters() if "frozen_lm.layers." in name}


def assert_llm_frozen(model):
    names = [name for name, p in model.named_parameters() if "frozen_lm.layers." in name]
    assert names, "the model has no LLM layers"
    assert not any(p.requires_grad for name, p in model.named_parameters() if name in names)
    assert any(p.requires_grad for name, p in model.named_parameters() if "proj_in" in name)


def train_steps(model, batches, lr=1e-2):
    """A few optimiser steps over every trainable parameter; returns the model in eval mode."""
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    for batch in batches:
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


REMOTE_PREAMBLE = textwrap.dedent(
    """
    import sys
    sys.modules["hf_frozenlm"] = None  # hf_frozenlm must not be importable: only the saved code may run
    import torch
    from transformers import AutoConfig, AutoModel
    from transformers.dynamic_module_utils import get_class_from_dynamic_module
    folder, inputs_path, out_path = sys.argv[1:4]
    inputs = torch.load(inputs_path)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)

    def head_class(auto_name):
        # An Auto class transformers does not define: resolve the class its auto_map names, from the saved code.
        return get_class_from_dynamic_module(config.auto_map[auto_name], folder)
    """
)


def run_remote(script: str, folder, inputs: dict, tmp_path) -> dict:
    """Run REMOTE_PREAMBLE + `script` in a fresh offline process; the script saves a dict to `out_path`."""
    torch.save(inputs, tmp_path / "inputs.pt")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    subprocess.run(
        [sys.executable, "-c", REMOTE_PREAMBLE + textwrap.dedent(script), str(folder), str(tmp_path / "inputs.pt"),
         str(tmp_path / "out.pt")],
        check=True, env=env, cwd=tmp_path,
    )
    return torch.load(tmp_path / "out.pt")


def stop_after_first_checkpoint(monkeypatch, train) -> None:
    """Run `train()` until it has saved its first checkpoint, then stop it there (KeyboardInterrupt), as a run
    interrupted mid-training would be; later runs save normally again."""
    import pytest

    from hf_frozenlm.training.trainer import FrozenLMTrainer

    original_save = FrozenLMTrainer._save_checkpoint

    def save_then_stop(self, *args, **kwargs):
        original_save(self, *args, **kwargs)
        raise KeyboardInterrupt("stopped right after the first checkpoint")

    monkeypatch.setattr(FrozenLMTrainer, "_save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train()
    monkeypatch.setattr(FrozenLMTrainer, "_save_checkpoint", original_save)
