"""Bad inputs get one clear line that names the problem and the fix, and nothing is lost: hostile or broken
checkpoints, odd options, an empty batch, pushing offline, a slim source that cannot be used. Each case here gave a
raw traceback, a misleading message or silence before (docs/failure-modes.md lists what every bad input gets)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from heads_helpers import save_tiny_llama

from hf_frozenlm import LLMCheckpointError, ViTLlamaForImageClassification, load_llm_layers
from hf_frozenlm.cli import main
from hf_frozenlm.errors import DataError, PublishError
from hf_frozenlm.modeling import ProcessorInputError

@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    return Path(save_tiny_llama(tmp_path_factory.mktemp("llm") / "tiny-llama", seed=2))


# -- checkpoints -------------------------------------------------------------------------------------------------
def _meta_folder(folder, params):
    folder.mkdir()
    (folder / "params.json").write_text(json.dumps(params))
    torch.save({"layers.0.attention_norm.weight": torch.ones(32)}, folder / "consolidated.00.pth")
    return folder


def test_meta_params_without_n_heads_is_named(tmp_path):
    # Before: KeyError: 'n_heads'.
    folder = _meta_folder(tmp_path / "meta", {"dim": 32, "n_layers": 2})
    with pytest.raises(LLMCheckpointError, match="lacks n_heads"):
        load_llm_layers(folder, [0])


def test_a_pickle_that_runs_code_is_refused_as_such(tmp_path):
    # Before: reported as "truncated or corrupt", which sends the user to download the same file again.
    class RunsCode:
        def __reduce__(self):
            return (os.system, ("echo never",))

    folder = _meta_folder(tmp_path / "meta", {"dim": 32, "n_layers": 2, "n_heads": 4})
    torch.save({"layers.0.attention_norm.weight": RunsCode()}, folder / "consolidated.00.pth")
    with pytest.raises(LLMCheckpointError, match="not a plain weights file") as error:
        load_llm_layers(folder, [0])
    assert "truncated" not in str(error.value)


def test_gguf_with_zero_heads_is_named(tmp_path):
    # Before: ZeroDivisionError deep inside the config.
    import gguf

    path = tmp_path / "zero-heads.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_embedding_length(32)
    writer.add_feed_forward_length(64)
    writer.add_head_count(0)
    writer.add_head_count_kv(0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(32, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(LLMCheckpointError, match="num_attention_heads=0"):
        load_llm_layers(path, [0])


def test_a_shard_index_pointing_outside_the_checkpoint_is_refused(tiny_llm, tmp_path):
    # Before: the loader opened whatever file the index named.
    folder = tmp_path / "llm"
    shutil.copytree(tiny_llm, folder)
    (tmp_path / "elsewhere.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    weights = {name: "../elsewhere.safetensors" for name in ("model.layers.0.input_layernorm.weight",)}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weights}))
    with pytest.raises(LLMCheckpointError, match="outside the checkpoint folder"):
        load_llm_layers(folder, [0])


def test_a_slim_reload_from_an_invalid_local_copy_says_invalid(tiny_llm, tmp_path):
    # Before: "cannot be reached", which hides that the copy was found but its config.json is broken.
    model = ViTLlamaForImageClassification.from_parts(
        "vit-tiny", str(tiny_llm), num_labels=2, trunk_kwargs=dict(image_size=8, patch_size=4, num_hidden_layers=1))
    model.save_pretrained(tmp_path / "slim", frozen_weights=False)
    broken = tmp_path / "broken-copy"
    shutil.copytree(tiny_llm, broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(LLMCheckpointError, match="not valid JSON.*invalid") as error:
        ViTLlamaForImageClassification.from_pretrained(tmp_path / "slim", llm_source_path=broken)
    assert "cannot be reached" not in str(error.value)


# -- publishing ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tiny_llm, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "run"
    assert main(["train", "--llm", str(tiny_llm), "--output_dir", str(run), "--max_steps", "2",
                 "--max_train_samples", "32", "--max_eval_samples", "16", "--eval_strategy", "no",
                 "--save_strategy", "no", "--image_size", "8", "--patch_size", "4", "--trunk_layers", "1"]) == 0
    return run


def test_push_offline_says_so_in_one_line(run_dir, monkeypatch, capsys):
    # Before: a traceback from huggingface_hub's offline guard, after the folder had been assembled.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(["push", str(run_dir), "someone/model"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("hf-frozenlm push: The Hugging Face Hub is switched off") and "--dry-run" in error


def test_a_slim_push_of_a_machine_local_source_warns(run_dir, tmp_path, capsys):
    # The tiny LLM is a local folder: its absolute path is all the slim checkpoint records.
    assert main(["push", str(run_dir), "someone/model", "--no-frozen-weights", "--dry-run", str(tmp_path / "out")]) == 0
    assert "exists only on this machine" in capsys.readouterr().err


def test_a_slim_push_of_changed_layers_is_refused(run_dir, tmp_path):
    from hf_frozenlm.hub.push import push_to_hub

    edited = tmp_path / "edited"
    shutil.copytree(run_dir, edited)
    model = ViTLlamaForImageClassification.from_pretrained(edited)
    with torch.no_grad():
        model.vit_llama.frozen_lm.layers[0].mlp.down_proj.weight[0, 0] += 1.0  # an edit that keeps llm_source
    model.save_pretrained(edited)
    with pytest.raises(PublishError, match="not the ones recorded"):
        push_to_hub(edited, "someone/model", frozen_weights=False, dry_run_dir=tmp_path / "never")
    assert not (tmp_path / "never").exists()


# -- predict and batches -----------------------------------------------------------------------------------------
def test_predict_top_k_below_one(run_dir, capsys):
    # Before: torch's topk error.
    image = run_dir / "probe.png"
    from PIL import Image

    Image.new("RGB", (8, 8), "white").save(image)
    assert main(["predict", "--model", str(run_dir), str(image), "--top_k", "-1"]) == 2
    assert "--top_k -1: pass a positive number" in capsys.readouterr().err


@pytest.mark.parametrize("task_name", ["image-classification", "video-classification", "point-cloud-classification",
                                       "motion-forecasting", "visual-question-answering", "image-text-retrieval",
                                       "3d-question-answering"])
def test_an_empty_batch_is_named(task_name):
    from hf_frozenlm.tasks import get_task

    task = get_task(task_name)
    for collate in task.collators(_tiny_model_of(task), _processor_of(task)):
        with pytest.raises((DataError, ProcessorInputError), match="(?i)empty|no "):
            collate([])


def _tiny_model_of(task):
    from test_modeling_common import build

    return build(task.name)


def _processor_of(task):
    """The task's processor for its builtin data (what training saves)."""
    from hf_frozenlm.training.arguments import DataArguments

    data = task.load_data(DataArguments(max_train_samples=8, max_eval_samples=8))
    return task.make_processor(_tiny_model_of(task), data)
