"""`hf-frozenlm train --task video-classification | point-cloud-classification`: the task registry end to end
(builtin data, model, collators, Trainer, run folder), a few steps each with the plain trunk to keep it quick."""

import json

import pytest
import torch
from transformers import AutoConfig

from hf_frozenlm.commands.train import main


@pytest.mark.parametrize(
    "task, model_class, saved_files",
    [
        ("video-classification", "VideoMAELlamaForVideoClassification", ["preprocessor_config.json"]),
        ("point-cloud-classification", "PointBertLlamaForPointCloudClassification", []),
    ],
)
def test_train_task_writes_a_loadable_run_folder(task, model_class, saved_files, tmp_path):
    output = tmp_path / "run"
    argv = ["--task", task, "--variant", "none", "--max_steps", "2", "--per_device_train_batch_size", "4",
            "--per_device_eval_batch_size", "64", "--save_strategy", "no", "--eval_strategy", "no",
            "--output_dir", str(output)]
    assert main(argv) == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["task"] == task and 0.0 <= metrics["test"]["test_accuracy"] <= 1.0
    for name in ["config.json", "model.safetensors", *saved_files]:
        assert (output / name).is_file(), name
    config = AutoConfig.from_pretrained(output)
    assert config.architectures == [model_class] and config.num_labels == 6
    torch.set_num_threads(1)  # the command sets the process's thread count; keep the other tests on one thread
