"""`hf-frozenlm train/evaluate/predict/merge` for image classification end to end on tiny settings, offline on CPU
(the other tasks go through the same loop: tests/test_cli_tasks.py).

The CLI runs in-process (train.main) where possible: importing transformers and reading the GGUF layer
dominate a few-step run, and only the remote-code and torchrun checks need a fresh process.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from hf_frozenlm.commands import evaluate as evaluate_command
from hf_frozenlm.commands import merge as merge_command
from hf_frozenlm.commands import predict as predict_command
from hf_frozenlm.commands import train
from test_data import write_imagefolder

# A few steps on a small slice: the default job's code path, at a fraction of its cost.
SHORT = ["--max_steps", "3", "--max_train_samples", "128", "--max_eval_samples", "40", "--logging_steps", "1",
         "--per_device_train_batch_size", "32", "--eval_strategy", "no", "--save_strategy", "no"]
# A smaller trunk than the default's: 8 px in 4 px patches, one ViT layer.
TINY_TRUNK = ["--image_size", "8", "--patch_size", "4", "--vision_layers", "1"]


def llm_tensors(path):
    return {k: v for k, v in load_file(os.path.join(path, "model.safetensors")).items() if ".frozen_lm.layers." in k}


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("default") / "run"
    assert train.main(["--output_dir", str(run), *SHORT]) == 0
    return run


def test_default_run_writes_a_complete_run_folder(default_run, smollm2_last_layer):
    files = set(os.listdir(default_run))
    for name in ("model.safetensors", "config.json", "modeling_vit_llama.py", "frozenlm_block.py",
                 "preprocessor_config.json", "README.md", "metrics.json", "training_curves.png", "run_config.json",
                 "reproduce.sh"):
        assert name in files, name
    config = json.loads((default_run / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageClassification"] == "modeling_vit_llama.ViTLlamaForImageClassification"
    assert config["vision_config"]["image_size"] == 8 and config["llm_layers"] == [-1]
    metrics = json.loads((default_run / "metrics.json").read_text())
    assert set(metrics) == {"task", "dataset", "primary_metric", "train", "validation", "test"}
    assert metrics["task"] == "image-classification" and metrics["primary_metric"] == "accuracy"
    assert 0 <= metrics["test"]["accuracy"] <= 1 and "top5_accuracy" in metrics["test"]
    card = (default_run / "README.md").read_text()
    assert "model-index" in card and "trust_remote_code=True" in card and "smollm2-135m" in card
    assert "value: " in card.split("model-index")[1]  # the test metrics are in the metadata
    run_config = json.loads((default_run / "run_config.json").read_text())
    assert run_config["command"].startswith("hf-frozenlm train --output_dir")
    assert run_config["training"]["lr_scheduler_type"] == "cosine" and run_config["model"]["variant"] == "llm"
    assert (default_run / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    # The frozen LLM layer is bit-identical to the GGUF's after training.
    _, (layer_state,), _ = smollm2_last_layer
    saved = llm_tensors(default_run)
    assert len(saved) == len(layer_state)
    for name, tensor in layer_state.items():
        assert torch.equal(saved[f"vit_llama.frozen_lm.layers.0.{name}"], tensor.float()), name


def test_output_folder_is_never_silently_overwritten(default_run):
    from hf_frozenlm.errors import UsageError

    with pytest.raises(UsageError, match="exists and is not empty.*--overwrite_output_dir"):
        train.main(["--output_dir", str(default_run), *SHORT])


def test_evaluate_and_predict_commands(default_run, tmp_path, capsys):
    assert evaluate_command.main(["--model", str(default_run), "--dataset", "digits", "--max_eval_samples", "30",
                                  "--output", str(tmp_path / "eval.json")]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["split"] == "test" and result["num_examples"] == 30 and 0 <= result["accuracy"] <= 1
    assert "accuracy:" in capsys.readouterr().out
    image = tmp_path / "sketch.png"
    Image.new("RGBA", (40, 40), (0, 0, 0, 0)).save(image)  # a transparent canvas: read as white paper
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (30, 20), (200, 180, 160)).save(photo)
    assert predict_command.main(["--model", str(default_run), str(image), str(photo), "--top_k", "3", "--json"]) == 0
    prediction, _ = json.loads(capsys.readouterr().out)
    assert prediction["input"] == str(image) and len(prediction["predictions"]) == 3
    assert {p["label"] for p in prediction["predictions"]} <= {str(d) for d in range(10)}


def test_optimizer_holds_exactly_the_trainable_params_and_the_decay_policy(tiny_digits_model, tmp_path):
    from transformers import TrainingArguments

    from hf_frozenlm.training import FrozenLMTrainer
    from hf_frozenlm.training.trainer import check_optimizer_params

    model = tiny_digits_model()
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", weight_decay=0.05)
    trainer = FrozenLMTrainer(model=model, args=args)
    optimizer = trainer.create_optimizer()
    check_optimizer_params(optimizer, model)
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = ({names[id(p)] for p in g["params"]} for g in optimizer.param_groups)
    assert optimizer.param_groups[0]["weight_decay"] == 0.05 and optimizer.param_groups[1]["weight_decay"] == 0.0
    assert not any(".frozen_lm.layers." in n for n in decay | no_decay)
    assert "vit_llama.vit.embeddings.position_embeddings" in no_decay and "vit_llama.vit.embeddings.cls_token" in no_decay
    assert "classifier.bias" in no_decay and "classifier.weight" in decay
    assert "vit_llama.frozen_lm.proj_in.weight" in decay
    assert all(n.endswith("bias") or "norm" in n or "embeddings" in n for n in no_decay)

    frozen_trunk = tiny_digits_model()
    frozen_trunk.freeze_trunk()
    trainable = {n for n, p in frozen_trunk.named_parameters() if p.requires_grad}
    assert trainable == {"vit_llama.frozen_lm.proj_in.weight", "vit_llama.frozen_lm.proj_out.weight",
                         "classifier.weight", "classifier.bias"}
    trainer = FrozenLMTrainer(model=frozen_trunk, args=args)
    check_optimizer_params(trainer.create_optimizer(), frozen_trunk)


def run_fresh_python(code: str, tmp_path) -> str:
    """Run `code` in a new interpreter where hf_frozenlm cannot be imported (only remote code is available)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    prelude = "import sys; sys.modules['hf_frozenlm'] = None\n"
    result = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_imagefolder_run_loads_as_remote_code_without_the_package(tmp_path, caplog):
    from transformers import AutoModelForImageClassification

    data = write_imagefolder(tmp_path / "pets", corrupt=1)
    run = tmp_path / "run"
    with caplog.at_level("WARNING"):
        assert train.main(["--dataset", f"imagefolder:{data}", "--output_dir", str(run), *SHORT, *TINY_TRUNK,
                           "--validation_fraction", "0.2", "--test_fraction", "0.2"]) == 0
    assert "Skipped 1 unreadable image(s)" in caplog.text
    config = json.loads((run / "config.json").read_text())
    assert config["id2label"] == {"0": "cat", "1": "dog", "2": "fox"}
    image = tmp_path / "probe.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(image)

    model = AutoModelForImageClassification.from_pretrained(run).eval()
    from transformers import AutoImageProcessor

    pixel_values = AutoImageProcessor.from_pretrained(run)(Image.open(image), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = model(pixel_values=pixel_values).logits[0].tolist()
    out = run_fresh_python(f"""
        import json, torch
        from PIL import Image
        from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline
        try:
            import hf_frozenlm
            raise SystemExit("hf_frozenlm must not be importable here")
        except ImportError:
            pass
        model = AutoModelForImageClassification.from_pretrained({str(run)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        processor = AutoImageProcessor.from_pretrained({str(run)!r})
        with torch.no_grad():
            logits = model(**processor(Image.open({str(image)!r}), return_tensors="pt")).logits[0].tolist()
        top = pipeline("image-classification", model={str(run)!r}, trust_remote_code=True)({str(image)!r}, top_k=1)
        print(json.dumps(dict(logits=logits, top=top[0]["label"])))
    """, tmp_path)
    result = json.loads(out.strip().splitlines()[-1])
    assert np.allclose(result["logits"], expected, atol=1e-5)
    assert result["top"] == config["id2label"][str(int(np.argmax(expected)))]


def test_lora_adapters_save_load_and_merge(tmp_path, tiny_digits_model):
    from peft import PeftModel

    from hf_frozenlm import ViTLlamaForImageClassification
    from hf_frozenlm.training import ModelArguments, load_trained_model
    from hf_frozenlm.training.lora import apply_lora

    # In process: LoRA on the block's attention only; adapters + modules_to_save round-trip exactly.
    model = apply_lora(tiny_digits_model(), ModelArguments(lora_r=4))
    lora_targets = {n.rsplit(".lora_A", 1)[0] for n, _ in model.named_parameters() if ".lora_A." in n}
    assert lora_targets and all(".frozen_lm.layers.0.self_attn." in n for n in lora_targets)
    model.train()  # .train() re-applies the freezing policy: adapters must stay trainable
    assert all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)
    assert not any(p.requires_grad for n, p in model.named_parameters()
                   if ".frozen_lm.layers." in n and "lora_" not in n)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02)  # B starts at zero; make the adapter matter
    model.eval()
    pixel_values = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = model(pixel_values=pixel_values).logits
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(tiny_digits_model(), tmp_path / "adapter").eval()
    with torch.no_grad():
        assert torch.equal(reloaded(pixel_values=pixel_values).logits, expected)

    # Through the CLI: adapters beside a saved base; merge gives a plain model with the same logits.
    run = tmp_path / "lora_run"
    assert train.main(["--output_dir", str(run), "--lora_r", "4", "--mixup", "0.8", "--cutmix", "1.0",
                       *SHORT, *TINY_TRUNK]) == 0
    assert (run / "adapter_config.json").is_file() and (run / "base" / "model.safetensors").is_file()
    assert json.loads((run / "adapter_config.json").read_text())["base_model_name_or_path"] == "base"
    _, peft_model, processor = load_trained_model(str(run))
    pixel_values = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = peft_model(pixel_values=pixel_values).logits
    assert merge_command.main(["--adapter", str(run), "--output_dir", str(tmp_path / "merged")]) == 0
    state = load_file(tmp_path / "merged" / "model.safetensors")
    assert not any("lora" in k or "modules_to_save" in k or "base_layer" in k for k in state)
    merged = ViTLlamaForImageClassification.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        assert torch.allclose(merged(pixel_values=pixel_values).logits, expected, atol=1e-5)
    assert json.loads((tmp_path / "merged" / "config.json").read_text())["llm_source"]["lora_merged"]["r"] == 4


def test_torchrun_two_processes_train_and_save_once(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
               "-m", "hf_frozenlm", "train", "--output_dir", str(run), *SHORT, *TINY_TRUNK, "--precision", "fp32"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stdout.count("Run folder:") == 1  # rank 0 alone writes and reports
    run_config = json.loads((run / "run_config.json").read_text())
    assert run_config["world_size"] == 2 and run_config["command"].startswith("torchrun --nproc_per_node 2")
    assert (run / "model.safetensors").is_file() and (run / "README.md").is_file()


# -- what never reaches a file, a log line or an upload -------------------------------------------------------
SECRET = "hf_SECRETtokenABCDEFGHIJKLMNOPQRSTUV"


def test_secrets_never_reach_the_run_folder_the_log_or_a_push(tmp_path, capsys, caplog):
    """Before: --hub_token went into run_config.json (command and argv), reproduce.sh and the model card, and push
    uploaded all three. Now every file the run writes is clean, and push refuses a folder that is not."""
    from hf_frozenlm.cli import main
    from hf_frozenlm.hub.push import push_to_hub
    from hf_frozenlm.errors import PublishError

    run = tmp_path / "run"
    with caplog.at_level("INFO"):
        assert main(["train", "--output_dir", str(run), *SHORT, *TINY_TRUNK, "--hub_token", SECRET,
                     "--run_name", "https://user:p4ssw0rd@tracker.example/x"]) == 0
    written = {path.name: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    leaks = [name for name, content in written.items() if SECRET.encode() in content or b"p4ssw0rd" in content]
    assert not leaks, leaks  # training_args.bin (Trainer's pickle) included
    assert "<redacted>" in (run / "reproduce.sh").read_text()
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err + caplog.text
    assert "p4ssw0rd" not in captured.out + captured.err + caplog.text
    assert push_to_hub(run, "someone/clean", dry_run_dir=tmp_path / "publish").files  # a clean run publishes
    old_run = tmp_path / "old-run"  # a run folder written by an earlier version, with the token in it
    shutil.copytree(run, old_run)
    (old_run / "reproduce.sh").write_text(f"hf-frozenlm train --hub_token {SECRET}\n")
    with pytest.raises(PublishError, match="reproduce.sh:1: an access token"):
        push_to_hub(old_run, "someone/leaky", dry_run_dir=tmp_path / "never")
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("options, message", [
    (["--learning_rate", "-1"], "pass a positive learning rate"),
    (["--num_train_epochs", "-3", "--max_steps", "-1"], "pass a positive number of epochs"),
    (["--output_dir", "FILE"], "is a file, not a folder"),
    (["--mixup", "0.8", "--task", "motion-forecasting"], "--mixup / --cutmix mix images"),
    (["--label_smoothing_factor", "0.1", "--task", "motion-forecasting"], "applies to class labels"),
    (["--llm_layers", "-1", "-1"], "more than once"),
    (["--trunk_kwargs", "{not json"], "is not valid JSON"),
    (["--patch_size", "4", "--task", "motion-forecasting"], "has no field(s) ['patch_size']"),
    (["--lora_r", "4", "--variant", "none"], "--lora_r needs an LLM block"),
    (["--push_to_hub"], "hf-frozenlm push"),
    (["--no_such_option", "1"], "are not used by the HfArgumentParser: ['--no_such_option', '1']"),
])
def test_bad_training_options_get_one_line(tmp_path, capsys, options, message):
    """Before: --learning_rate -1 and an --output_dir that is a file gave tracebacks; --num_train_epochs -3 exited 0
    with an untrained model and a card."""
    from hf_frozenlm.cli import main

    (tmp_path / "FILE").write_text("")
    options = [str(tmp_path / o) if o == "FILE" else o for o in options]
    if "--output_dir" not in options:
        options += ["--output_dir", str(tmp_path / "run")]
    assert main(["train", *options]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("hf-frozenlm train:") and message in error, error
    assert not (tmp_path / "run").exists()
