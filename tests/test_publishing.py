"""Publishing: the pushed folder loads without hf_frozenlm, its card parses and its snippets run, uploads send exactly
that folder, slim checkpoints re-extract (and verify) their LLM layers, and bad inputs fail before any upload."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from hf_frozenlm import LLMChecksumError, LLMSourceNotFoundError, ViTLlamaForImageClassification
from hf_frozenlm.errors import PublishError
from hf_frozenlm.hub.push import push_space, push_to_hub
from hf_frozenlm.modeling.frozenlm_loading import LLM_PATH_ENV
from hf_frozenlm.tasks.image_classification import image_processor_for

REPO_ID = "someone/vit-llama-digits"
METRICS = {"test": {"accuracy": 0.8125, "top5_accuracy": 0.9875, "loss": 0.61}, "validation": {"accuracy": 0.79}}


def make_run_dir(model, folder: Path) -> Path:
    """What `hf-frozenlm train` leaves behind, minus the curves: the saved model, its processor and metrics.json."""
    model.save_pretrained(folder)
    image_processor_for(model.config).save_pretrained(folder)
    (folder / "metrics.json").write_text(json.dumps(METRICS))
    (folder / "run_config.json").write_text(json.dumps({"command": "hf-frozenlm train", "data": {"dataset": "digits"}}))
    return folder


def folder_digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*")) if path.is_file()
    }


@pytest.fixture(scope="module")
def published(tiny_digits_model, tmp_path_factory):
    """A run folder, and the full and slim dry-run folders pushed from it."""
    root = tmp_path_factory.mktemp("publish")
    model = tiny_digits_model(id2label={i: f"digit {i}" for i in range(10)}).eval()
    run_dir = make_run_dir(model, root / "run")
    full = push_to_hub(run_dir, REPO_ID, dry_run_dir=root / "full")
    slim = push_to_hub(run_dir, REPO_ID, frozen_weights=False, dry_run_dir=root / "slim")
    return model, run_dir, full, slim


EXPECTED_FILES = sorted([
    "README.md", "config.json", "model.safetensors", "preprocessor_config.json", "metrics.json", "run_config.json",
    "configuration_frozenlm.py", "configuration_vit_llama.py", "frozenlm_auto.py", "frozenlm_block.py",
    "frozenlm_hub_ranges.py", "frozenlm_loading.py", "frozenlm_stochastic_depth.py",
    "modeling_vit_llama.py",
])


def test_dry_run_writes_the_complete_folder(published):
    _, _, full, slim = published
    for result in (full, slim):
        assert result.files == EXPECTED_FILES == sorted(p.name for p in result.folder.iterdir())
        config = json.loads((result.folder / "config.json").read_text())
        assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForImageClassification"}
    with safe_open(str(full.folder / "model.safetensors"), framework="pt") as handle:
        assert any(".frozen_lm.layers." in key for key in handle.keys())
    with safe_open(str(slim.folder / "model.safetensors"), framework="pt") as handle:
        assert not any(".frozen_lm.layers." in key for key in handle.keys())
        assert "vit_llama.frozen_lm.proj_in.weight" in handle.keys()  # the trained adapters stay
    slim_config = json.loads((slim.folder / "config.json").read_text())
    assert slim_config["llm_weights_in_checkpoint"] is False and slim_config["llm_source"]["sha256"]
    assert (slim.folder / "model.safetensors").stat().st_size < (full.folder / "model.safetensors").stat().st_size / 2


def test_card_parses_back_with_the_metadata(published):
    model, _, full, slim = published
    card = ModelCard.load(full.folder / "README.md")
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "image-classification"
    assert {"custom_code", "hf_frozenlm", "arxiv:2310.12973"} <= set(data.tags)
    assert data.base_model == ["HuggingFaceTB/SmolLM2-135M-Instruct"]  # the model the smollm2-135m GGUF quantizes
    assert "accuracy" in data.metrics
    results = {(r.dataset_split, r.metric_type): r.metric_value for r in data.eval_results}
    assert results == {("test", "accuracy"): 0.8125, ("test", "top5_accuracy"): 0.9875, ("validation", "accuracy"): 0.79}
    assert {r.task_type for r in data.eval_results} == {"image-classification"}
    sha256 = model.config.llm_source["sha256"]
    assert sha256 in card.text and "@inproceedings{pang2024frozen" in card.text and "## Limitations" in card.text
    assert "Slim checkpoint" not in card.text
    slim_card = ModelCard.load(slim.folder / "README.md")
    assert "Slim checkpoint" in slim_card.text and "HF_FROZENLM_LLM_PATH" in slim_card.text


FRESH_PROCESS_SCRIPT = textwrap.dedent(
    """
    import os, re, sys
    sys.modules["hf_frozenlm"] = None  # hf_frozenlm must not be importable: only the published code may run
    import torch
    from PIL import Image
    from transformers import AutoModel, AutoModelForImageClassification, pipeline
    full, slim, repo_id, pixels_path, out_path = sys.argv[1:6]
    pixels = torch.load(pixels_path)
    classifier = AutoModelForImageClassification.from_pretrained(full, trust_remote_code=True).eval()
    encoder = AutoModel.from_pretrained(full, trust_remote_code=True).eval()
    slim_classifier = AutoModelForImageClassification.from_pretrained(slim, trust_remote_code=True).eval()
    with torch.no_grad():
        result = {"logits": classifier(pixels).logits, "pooled": encoder(pixels).pooler_output,
                  "slim_logits": slim_classifier(pixels).logits,
                  "modules": [type(m).__module__ for m in (classifier, encoder, slim_classifier)]}
    image = Image.new("RGB", (16, 16), "white")
    result["scores"] = pipeline("image-classification", model=full, trust_remote_code=True, top_k=10)(image)
    # The card's snippets, as written, with the repo id pointing at the published folder.
    text = open(os.path.join(full, "README.md"), encoding="utf-8").read()
    snippets = re.findall(r"```python\\n(.*?)```", text, re.S)
    for snippet in snippets:
        exec(compile(snippet.replace(repr(repo_id)[1:-1], full), "<card snippet>", "exec"), {"__name__": "__main__"})
    result["snippets"] = len(snippets)
    torch.save(result, out_path)
    """
)


def test_published_folder_loads_without_hf_frozenlm_and_snippets_run(published, tmp_path):
    model, _, full, slim = published
    pixels = torch.randn(2, 3, 16, 16)
    torch.save(pixels, tmp_path / "pixels.pt")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    env.pop(LLM_PATH_ENV, None)
    completed = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_SCRIPT, str(full.folder), str(slim.folder), REPO_ID,
         str(tmp_path / "pixels.pt"), str(tmp_path / "out.pt")],
        env=env, cwd=tmp_path, capture_output=True, text=True,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = torch.load(tmp_path / "out.pt")
    assert all(module.startswith("transformers_modules.") for module in result["modules"])
    assert result["snippets"] == 1
    assert "digit " in completed.stdout  # the Auto snippet printed a label name
    with torch.no_grad():
        assert torch.equal(result["logits"], model(pixels).logits)
        assert torch.equal(result["slim_logits"], model(pixels).logits)
        assert torch.equal(result["pooled"], model.vit_llama(pixels).pooler_output)
        processor = image_processor_for(model.config)
        from PIL import Image

        probabilities = model(**processor(Image.new("RGB", (16, 16), "white"), return_tensors="pt")).logits.softmax(-1)[0]
    for entry in result["scores"]:
        assert abs(entry["score"] - probabilities[int(entry["label"].split()[-1])].item()) < 1e-6


class RecordingApi:
    """Stands in for HfApi: records each call, and what upload_folder would send (names and bytes)."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def add_space_variable(self, repo_id, key, value, **kwargs):
        self.calls.append(("add_space_variable", repo_id, {"key": key, "value": value}))

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        self.calls.append(("upload_folder", repo_id, {**kwargs, "files": folder_digest(Path(folder_path))}))


def test_push_sends_exactly_the_dry_run_folder(published, tmp_path, monkeypatch):
    _, run_dir, full, _ = published
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    run_before = folder_digest(run_dir)
    api = RecordingApi()
    result = push_to_hub(run_dir, REPO_ID, private=True, revision="v1", commit_message="First model", api=api)
    assert [call[:2] for call in api.calls] == [
        ("create_repo", REPO_ID), ("create_branch", REPO_ID), ("upload_folder", REPO_ID)
    ]
    assert api.calls[0][2] == {"repo_type": "model", "private": True, "exist_ok": True}
    assert api.calls[1][2] == {"branch": "v1", "repo_type": "model", "exist_ok": True}
    upload = api.calls[2][2]
    assert {k: upload[k] for k in ("repo_type", "revision", "commit_message")} == {
        "repo_type": "model", "revision": "v1", "commit_message": "First model"
    }
    # Byte for byte the folder that --dry-run wrote.
    assert upload["files"] == folder_digest(full.folder)
    assert result.files == EXPECTED_FILES and result.folder is None
    # Nothing left behind: the staging folder is gone, the run and the working directory are untouched.
    assert not any((tmp_path / "tmp").iterdir()) and not any((tmp_path / "cwd").iterdir())
    assert folder_digest(run_dir) == run_before


# -- slim checkpoints -----------------------------------------------------------------------------------------
@pytest.fixture
def tiny_hf_llm(tmp_path):
    """A 2-layer LLaMA saved as an HF safetensors folder: a local LLM source that a test may copy and tamper with."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=32)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "llm")
    return tmp_path / "llm"


def slim_model_from(llm_dir):
    torch.manual_seed(0)
    return ViTLlamaForImageClassification.from_parts(
        "vit-tiny", str(llm_dir), num_labels=3, trunk_kwargs=dict(image_size=16, patch_size=4, num_hidden_layers=1)
    ).eval()


def test_slim_round_trip_local_source_override_and_env(tiny_hf_llm, tmp_path, monkeypatch, capfd):
    from transformers.utils import logging as hf_logging

    model = slim_model_from(tiny_hf_llm)
    model.save_pretrained(tmp_path / "slim", frozen_weights=False)
    assert model.config.llm_weights_in_checkpoint  # the in-memory model stays complete
    assert not any(".frozen_lm.layers." in key for key in load_file(tmp_path / "slim" / "model.safetensors"))
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = model(pixels).logits
    monkeypatch.delenv(LLM_PATH_ENV, raising=False)
    hf_logging.set_verbosity_warning()
    capfd.readouterr()
    reloaded = ViTLlamaForImageClassification.from_pretrained(tmp_path / "slim").eval()  # the recorded absolute path
    assert "MISSING" not in capfd.readouterr().err  # leaving the layers out is not reported as missing weights
    assert not any(p.requires_grad for p in reloaded.vit_llama.frozen_lm.layers.parameters())
    # The source moved: the recorded path is gone; a keyword or the environment variable points at the copy.
    moved = tmp_path / "llm-copy"
    shutil.move(tiny_hf_llm, moved)
    by_keyword = ViTLlamaForImageClassification.from_pretrained(tmp_path / "slim", llm_source_path=moved).eval()
    monkeypatch.setenv(LLM_PATH_ENV, str(moved))
    by_env = ViTLlamaForImageClassification.from_pretrained(tmp_path / "slim").eval()
    with torch.no_grad():
        for loaded in (reloaded, by_keyword, by_env):
            assert torch.equal(loaded(pixels).logits, expected)
    # Re-saved after loading, the model is a full checkpoint again.
    by_env.save_pretrained(tmp_path / "full")
    assert json.loads((tmp_path / "full" / "config.json").read_text())["llm_weights_in_checkpoint"] is True


def test_slim_checkpoint_with_a_missing_or_tampered_source(tiny_hf_llm, tmp_path, monkeypatch):
    monkeypatch.delenv(LLM_PATH_ENV, raising=False)
    model = slim_model_from(tiny_hf_llm)
    model.save_pretrained(tmp_path / "slim", frozen_weights=False)
    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_hf_llm, tampered)
    weights = load_file(tampered / "model.safetensors")
    weights["model.layers.1.mlp.down_proj.weight"][0, 0] += 1e-3  # one number of the frozen layer
    save_file(weights, tampered / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(LLMChecksumError, match="sha256"):
        ViTLlamaForImageClassification.from_pretrained(tmp_path / "slim", llm_source_path=tampered)
    shutil.rmtree(tiny_hf_llm)
    with pytest.raises(LLMSourceNotFoundError, match=r"slim checkpoint(.|\n)*llm_source_path(.|\n)*HF_FROZENLM_LLM_PATH"):
        ViTLlamaForImageClassification.from_pretrained(tmp_path / "slim")
    with pytest.raises(LLMSourceNotFoundError, match="slim checkpoint"):
        ViTLlamaForImageClassification.from_pretrained(tmp_path / "slim", llm_source_path=tmp_path / "nowhere.gguf")


def test_slim_save_refused_when_the_layers_cannot_be_re_extracted(tiny_hf_llm, tmp_path):
    trained = slim_model_from(tiny_hf_llm)
    trained.config.llm_trainable = True
    with pytest.raises(ValueError, match="llm_trainable"):
        trained.save_pretrained(tmp_path / "a", frozen_weights=False)
    random_block = ViTLlamaForImageClassification.from_parts(
        "vit-tiny", str(tiny_hf_llm), variant="random-llm", num_labels=3,
        trunk_kwargs=dict(image_size=16, patch_size=4, num_hidden_layers=1),
    )
    with pytest.raises(ValueError, match="random-llm"):
        random_block.save_pretrained(tmp_path / "b", frozen_weights=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# -- bad inputs fail before anything is written or sent -------------------------------------------------------
class RefusingApi:
    def __getattr__(self, name):
        raise AssertionError(f"HfApi.{name} was called for an input that should have been refused")


def _not_a_model(root, run_dir):
    (root / "not-a-model").mkdir()
    (root / "not-a-model" / "metrics.json").write_text("{}")
    return root / "not-a-model", REPO_ID


def _other_model_type(root, run_dir):
    from transformers import ViTConfig, ViTModel

    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=16, patch_size=4)).save_pretrained(root / "vit")
    return root / "vit", REPO_ID


def _no_preprocessor(root, run_dir):
    shutil.copytree(run_dir, root / "no-processor")
    (root / "no-processor" / "preprocessor_config.json").unlink()
    return root / "no-processor", REPO_ID


def _lora_adapters(root, run_dir):
    (root / "adapters").mkdir()
    (root / "adapters" / "adapter_config.json").write_text("{}")
    return root / "adapters", REPO_ID


BAD_INPUTS = {
    "missing folder": (lambda root, run_dir: (root / "nowhere", REPO_ID), "does not exist"),
    "not a model": (_not_a_model, "not a saved model"),
    "another model type": (_other_model_type, "not an hf_frozenlm task model"),
    "no preprocessor config": (_no_preprocessor, "preprocessor_config.json"),
    "LoRA adapters only": (_lora_adapters, "hf-frozenlm merge"),
    "invalid repo id": (lambda root, run_dir: (run_dir, "someone/bad name!"), "not a valid Hub model repo id"),
    "too many slashes": (lambda root, run_dir: (run_dir, "a/b/c"), "not a valid Hub model repo id"),
    "swapped arguments": (lambda root, run_dir: (REPO_ID, str(run_dir)), "local path"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_fail_before_any_upload(published, tmp_path, case):
    make, message = BAD_INPUTS[case]
    run_dir, repo_id = make(tmp_path, published[1])
    with pytest.raises(PublishError, match=message):
        push_to_hub(run_dir, repo_id, api=RefusingApi())
    with pytest.raises(PublishError, match=message):
        push_to_hub(run_dir, repo_id, dry_run_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_push_dry_run_and_clear_error(published, tmp_path, capsys):
    from hf_frozenlm.cli import main

    assert main(["push", str(published[1]), REPO_ID, "--dry-run", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == EXPECTED_FILES
    assert "nothing uploaded" in capsys.readouterr().out
    assert main(["push", str(published[1]), REPO_ID, "--dry-run", str(tmp_path / "out")]) == 2  # not empty
    assert "not empty" in capsys.readouterr().err
    assert main(["push", str(tmp_path / "nowhere"), REPO_ID]) == 2
    assert "does not exist" in capsys.readouterr().err


# -- the Space ---------------------------------------------------------------------------------------------
def test_push_space_uploads_the_app_pointing_at_the_model(tmp_path, monkeypatch):
    from huggingface_hub import SpaceCard

    dry = push_space("someone/demo", REPO_ID, dry_run_dir=tmp_path / "out")
    assert {"README.md", "app.py", "requirements.txt", "frozenlm_maps.py"} <= set(dry.files)  # the app runs flat
    assert not any(name.endswith((".pyc", "__init__.py")) for name in dry.files)
    assert dry.space_variables == {"MODEL_ID": REPO_ID}
    card = SpaceCard.load(tmp_path / "out" / "README.md")
    assert card.data.models == [REPO_ID] and card.data.sdk == "gradio"
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    api = RecordingApi()
    push_space("someone/demo", REPO_ID, api=api, commit_message="demo")
    assert [call[0] for call in api.calls] == ["create_repo", "add_space_variable", "upload_folder"]
    assert api.calls[0][2] == {"repo_type": "space", "space_sdk": "gradio", "private": False, "exist_ok": True}
    assert api.calls[1][2] == {"key": "MODEL_ID", "value": REPO_ID}
    upload = api.calls[2][2]
    assert upload["files"] == folder_digest(tmp_path / "out") and upload["commit_message"] == "demo"
    assert upload["repo_type"] == "space"
    assert not any((tmp_path / "tmp").iterdir())
    for repo_id, model_id in (("someone/demo", "bad id!"), ("bad space!", REPO_ID)):
        with pytest.raises(PublishError, match="not a valid Hub"):
            push_space(repo_id, model_id, api=RefusingApi())
