"""The Trainer loop of the motion, VQA, retrieval and 3D-QA heads (what `hf-frozenlm train --task ...` runs)."""

import json

import pytest
import torch
from transformers import AutoConfig, TrainingArguments

from hf_frozenlm import tasks_heads
from hf_frozenlm.data import DataArguments
from hf_frozenlm.training import ModelArguments

EXPECTED_METRICS = {
    "motion-forecasting": ("test_minADE", "test_minFDE", "test_miss_rate"),
    "visual-question-answering": ("test_soft_accuracy",),
    "image-text-retrieval": ("test_i2t_R@1", "test_t2i_R@10"),
    "3d-question-answering": ("test_exact_match",),
}


@pytest.mark.parametrize("task", tasks_heads.HEAD_TASKS)
def test_run_head_task_trains_scores_and_saves(task, tmp_path, monkeypatch):
    # A few builtin examples and two steps: this checks the wiring, the builtin scores are in the head tests.
    monkeypatch.setattr(tasks_heads, "BUILTIN_SIZES", dict.fromkeys(tasks_heads.BUILTIN_SIZES, 30))
    llm = tmp_path / "llm"
    from heads_helpers import tiny_llama
    from transformers import LlamaForCausalLM

    LlamaForCausalLM(tiny_llama()).save_pretrained(llm)  # a tiny safetensors LLM: its last layer is the block
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=4, per_device_eval_batch_size=16,
        use_cpu=True, report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True,
    )
    torch.manual_seed(0)
    metrics = tasks_heads.run_head_task(task, ModelArguments(llm=str(llm), variant="llm"), DataArguments(), args)
    for name in EXPECTED_METRICS[task]:
        assert name in metrics["test"], (name, metrics["test"])
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["task"] == task and saved["dataset"] == tasks_heads.HEAD_TASK_SETUPS[task][0]
    assert AutoConfig.from_pretrained(tmp_path / "run").llm_source["kind"] == "hf"


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(SystemExit, match="motion-forecasting takes road-scenes"):
        tasks_heads._motion(ModelArguments(variant="none"), "digits-of-pi", 0)


def test_hf_frozenlm_train_dispatches_the_head_tasks(tmp_path, monkeypatch):
    from transformers import LlamaForCausalLM

    from heads_helpers import tiny_llama
    from hf_frozenlm.commands.train import main

    monkeypatch.setattr(tasks_heads, "BUILTIN_SIZES", dict.fromkeys(tasks_heads.BUILTIN_SIZES, 30))
    LlamaForCausalLM(tiny_llama()).save_pretrained(tmp_path / "llm")
    output = tmp_path / "run"
    assert main(["--task", "3d-question-answering", "--llm", str(tmp_path / "llm"), "--max_steps", "2",
                 "--per_device_train_batch_size", "4", "--output_dir", str(output), "--report_to", "none"]) == 0
    assert json.loads((output / "metrics.json").read_text())["task"] == "3d-question-answering"
    assert (output / "tokenizer.json").is_file()  # the question tokenizer travels with the model
