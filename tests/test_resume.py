"""Resuming: a run stopped mid-training continues from its newest complete checkpoint with every weight restored,
and ends where the uninterrupted run ends.

Before: checkpoints store the ViT trunk under transformers' legacy names (`vit.encoder.layer.0...`) while Trainer's
resume loads by in-memory names (`vit.layers.0...`): it warned about missing keys and went on with a fresh trunk
while the optimizer state and step count resumed. And `--resume_from_checkpoint last` picked the newest checkpoint
even when a kill had cut its save short.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from heads_helpers import save_tiny_llama, stop_after_first_checkpoint

from hf_frozenlm.tasks import TASK_NAMES
from hf_frozenlm.training import parse_train_arguments, train_task
from hf_frozenlm.training.checkpoints import latest_complete_checkpoint
from hf_frozenlm.training.trainer import FrozenLMTrainer, unwrap

STEPS = ["--max_steps", "6", "--save_strategy", "steps", "--save_steps", "3", "--save_total_limit", "3",
         "--eval_strategy", "no", "--logging_steps", "1", "--per_device_train_batch_size", "8",
         "--per_device_eval_batch_size", "32", "--max_train_samples", "64", "--max_eval_samples", "24",
         "--disable_tqdm", "true", "--precision", "fp32"]


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("llm") / "tiny-llama", seed=3)


def run(task: str, output_dir, llm: str, *extra: str) -> dict:
    torch.set_num_threads(1)
    return train_task(parse_train_arguments(["--task", task, "--llm", llm, "--output_dir", str(output_dir), *STEPS,
                                             *extra]))


def numbers(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, float) and not any(
        s in k for s in ("runtime", "per_second", "preparation_time"))}


@pytest.mark.parametrize("task", TASK_NAMES)
def test_a_stopped_run_resumes_every_weight_and_ends_as_the_uninterrupted_one(task, tiny_llm, tmp_path, monkeypatch):
    uninterrupted = run(task, tmp_path / "whole", tiny_llm)
    stop_after_first_checkpoint(monkeypatch, lambda: run(task, tmp_path / "stopped", tiny_llm))
    checkpoint = tmp_path / "stopped" / "checkpoint-3"
    assert checkpoint.is_dir() and not (tmp_path / "stopped" / "metrics.json").exists()

    restored = {}
    original_load = FrozenLMTrainer._load_from_checkpoint

    def load_and_record(self, folder, model=None):
        original_load(self, folder, model)
        restored.update({k: v.detach().clone() for k, v in unwrap(self.model).state_dict().items()})

    monkeypatch.setattr(FrozenLMTrainer, "_load_from_checkpoint", load_and_record)
    resumed = run(task, tmp_path / "stopped", tiny_llm, "--resume_from_checkpoint", "last")

    # Before its first resumed step the model held exactly the checkpoint's weights, every one of them.
    from hf_frozenlm.tasks import get_task

    saved = get_task(task).model_class.from_pretrained(checkpoint).state_dict()
    assert restored.keys() == saved.keys()
    for name, tensor in saved.items():
        assert torch.equal(restored[name], tensor), name
    state = json.loads((tmp_path / "stopped" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    # And it ended where the uninterrupted run ended.
    for split in ("validation", "test"):
        expected, got = numbers(uninterrupted[split]), numbers(resumed[split])
        assert expected.keys() == got.keys()
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, rel=1e-4, abs=1e-5), (split, name)


def test_last_skips_a_checkpoint_whose_save_was_cut_short(tiny_llm, tmp_path, caplog):
    """A run killed (SIGKILL) while training leaves its checkpoints; a save cut short leaves a newer, incomplete one.
    `--resume_from_checkpoint last` takes the newest complete checkpoint and says which it skipped."""
    output = tmp_path / "killed"
    # A run far longer than the test waits: it is killed mid-training, right after its first complete checkpoint.
    command = [sys.executable, "-m", "hf_frozenlm", "train", "--llm", tiny_llm, "--output_dir", str(output),
               *[arg if arg != "6" else "100000" for arg in STEPS]]
    command[command.index("--save_steps") + 1] = "2"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and process.poll() is None and not any(
                (p / "trainer_state.json").is_file() for p in output.glob("checkpoint-*")):
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read()[-3000:]  # still training when killed
        assert any((p / "trainer_state.json").is_file() for p in output.glob("checkpoint-*")), "no checkpoint saved"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    def complete(folder):
        try:
            json.loads((folder / "trainer_state.json").read_text())
            return (folder / "optimizer.pt").is_file()
        except (OSError, ValueError):
            return False

    steps = sorted(int(p.name.split("-")[1]) for p in output.glob("checkpoint-*"))
    newest = max(step for step in steps if complete(output / f"checkpoint-{step}"))
    cut_short = output / f"checkpoint-{steps[-1] + 2}"  # what a kill during `save_model` leaves: weights, no state
    cut_short.mkdir()
    (cut_short / "model.safetensors").write_bytes(b"partial")
    with caplog.at_level("WARNING"):
        chosen = latest_complete_checkpoint(str(output))
    assert chosen == str(output / f"checkpoint-{newest}")
    assert f"Skipping {cut_short}" in caplog.text
    metrics = run("image-classification", output, tiny_llm, "--resume_from_checkpoint", "last",
                  "--max_steps", str(newest + 2))
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == newest + 2 and 0 <= metrics["test"]["accuracy"] <= 1


def test_a_lora_run_resumes_and_its_folder_evaluates_as_its_metrics_say(tiny_llm, tmp_path, monkeypatch, capsys):
    """Two features together: a LoRA run (adapter checkpoints, Trainer's own loader) stopped after its step-3
    checkpoint resumes to the uninterrupted run's end, and `evaluate` on the resumed folder gives its metrics.json."""
    from hf_frozenlm.cli import main

    lora = ("--lora_r", "4")  # with the default label smoothing 0.1: the loss is measured without it both ways
    uninterrupted = run("image-classification", tmp_path / "whole", tiny_llm, *lora)
    original_save = FrozenLMTrainer._save_checkpoint

    def save_then_stop(self, *args, **kwargs):
        original_save(self, *args, **kwargs)
        raise KeyboardInterrupt("stopped right after the step-3 checkpoint")

    monkeypatch.setattr(FrozenLMTrainer, "_save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run("image-classification", tmp_path / "stopped", tiny_llm, *lora)
    monkeypatch.setattr(FrozenLMTrainer, "_save_checkpoint", original_save)
    assert (tmp_path / "stopped" / "checkpoint-3" / "adapter_model.safetensors").is_file()
    resumed = run("image-classification", tmp_path / "stopped", tiny_llm, *lora, "--resume_from_checkpoint", "last")
    for split in ("validation", "test"):
        expected, got = numbers(uninterrupted[split]), numbers(resumed[split])
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, rel=1e-4, abs=1e-5), (split, name)

    output = tmp_path / "eval.json"
    # The run tested on its first 24 test examples (--max_eval_samples); evaluate takes the whole split unless told.
    assert main(["evaluate", "--model", str(tmp_path / "stopped"), "--split", "test", "--max_eval_samples", "24",
                 "--output", str(output)]) == 0
    evaluated = json.loads(output.read_text())
    assert evaluated["num_examples"] == 24
    assert evaluated["accuracy"] == pytest.approx(resumed["test"]["accuracy"], abs=1e-6)
    assert evaluated["loss"] == pytest.approx(resumed["test"]["loss"], rel=1e-4)
