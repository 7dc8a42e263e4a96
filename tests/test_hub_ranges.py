"""Loading layers from a Hub repo by HTTP byte ranges, against a real HTTP server on 127.0.0.1 that speaks the part
of the Hub's API huggingface_hub uses (tests/local_hub.py): only the layer's bytes travel, the tensors equal the
local loader's, the layer cache serves later and offline loads, and each server fault gives a clear error or a safe,
announced fallback. A slim checkpoint reloaded as remote code, without hf_frozenlm, fetches only its layer."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from local_hub import LocalHub

from hf_frozenlm.modeling.frozenlm_hub_ranges import LAYER_CACHE_FOLDER, HubTransferError, gguf_header_reader
from hf_frozenlm.modeling.frozenlm_loading import load_llm_config, load_llm_layers, smollm2_gguf_path

from heads_helpers import save_tiny_llama

REPO, GGUF_REPO = "tiny/llama", "tiny/smol-gguf"


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    """A 4-layer tiny LLaMA in ~60 kB shards (a layer spans several shards), a single-file copy, and a repo with the
    real SmolLM2 GGUF (linked, not copied: only its header and one layer are ever served)."""
    root = tmp_path_factory.mktemp("repos")
    sharded = Path(save_tiny_llama(root / "sharded", hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                   vocab_size=256))
    from transformers import LlamaForCausalLM

    LlamaForCausalLM.from_pretrained(sharded).save_pretrained(root / "single")  # one model.safetensors
    LlamaForCausalLM.from_pretrained(sharded).save_pretrained(sharded, max_shard_size="60KB")
    (sharded / "model.safetensors").unlink(missing_ok=True)
    (root / "gguf").mkdir()
    os.symlink(smollm2_gguf_path(), root / "gguf" / "smol.gguf")
    (root / "truncated").mkdir()
    with open(smollm2_gguf_path(), "rb") as source:  # ends inside its header (the tokenizer's merges)
        (root / "truncated" / "smol.gguf").write_bytes(source.read(1_000_000))
    return {REPO: sharded, "tiny/single": root / "single", GGUF_REPO: root / "gguf",
            "tiny/truncated": root / "truncated"}


@pytest.fixture
def hub(repos, tmp_path, monkeypatch):
    """The server, with this process's huggingface_hub pointed at it and its cache in tmp_path."""
    with LocalHub(dict(repos)) as server:
        server.patch_endpoint(monkeypatch)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        yield server


def layer_bytes(states) -> int:
    return sum(t.numel() * t.element_size() for state in states for t in state.values())


def data_requests(hub, suffix):
    """The range GETs of a weights file beyond its header (safetensors: after the two header reads)."""
    return [r for r in hub.requests if r.method == "GET" and r.path.endswith(suffix) and r.range
            and not r.range.startswith("bytes=0-") and not r.range.startswith("bytes=8-")]


def assert_same(states, reference):
    assert [sorted(s) for s in states] == [sorted(s) for s in reference]
    for state, expected in zip(states, reference):
        for name, tensor in expected.items():
            assert state[name].dtype == tensor.dtype and torch.equal(state[name], tensor), name


# -- safetensors ------------------------------------------------------------------------------------------
def test_sharded_layers_fetch_only_their_bytes_and_the_cache_serves_them_again(hub, repos):
    _, reference, local = load_llm_layers(repos[REPO], [1, -1])
    config, states, provenance = load_llm_layers(REPO, [1, -1])
    assert config.num_hidden_layers == 4 and provenance["layers"] == [1, 3] and provenance["source"] == REPO
    assert_same(states, reference)
    assert provenance["sha256"] == local["sha256"]
    # Only ranges: no shard came whole, and the data ranges hold the two layers' bytes and nothing else.
    gets = [r for r in hub.requests if r.method == "GET" and r.path.endswith(".safetensors")]
    assert gets and all(r.status == 206 for r in gets)
    data = sum(r.body_bytes for r in data_requests(hub, ".safetensors"))
    assert layer_bytes(reference) <= data <= 1.05 * layer_bytes(reference)
    headers = sum(r.body_bytes for r in gets) - data
    assert headers < 0.05 * sum(p.stat().st_size for p in repos[REPO].glob("*.safetensors"))
    # One request per shard piece (a layer's tensors in one shard are fetched together).
    assert len(data_requests(hub, ".safetensors")) == len({r.path for r in data_requests(hub, ".safetensors")})
    # The cache: one small safetensors file per layer under the repo's cache folder, keyed by commit.
    commit = hub.commits[REPO]
    layer_cache = Path(constants.HF_HUB_CACHE) / "models--tiny--llama" / LAYER_CACHE_FOLDER / commit
    cached = sorted(layer_cache.rglob("*.safetensors"))
    assert [p.name for p in cached] == ["layer-00001.safetensors", "layer-00003.safetensors"]
    hub.reset_counts()
    _, again, provenance_again = load_llm_layers(REPO, [1, -1])
    assert_same(again, reference) and provenance_again["sha256"] == local["sha256"]
    assert not [r for r in hub.requests if "/resolve/" in r.path]  # only the branch was resolved to its commit


def test_single_file_checkpoint_and_config_only(hub, repos):
    _, reference, local = load_llm_layers(repos["tiny/single"], [0])
    _, states, provenance = load_llm_layers("tiny/single", [0])
    assert_same(states, reference) and provenance["sha256"] == local["sha256"]
    data = sum(r.body_bytes for r in data_requests(hub, "model.safetensors"))
    assert data <= 1.05 * layer_bytes(reference)
    hub.reset_counts()
    config = load_llm_config("tiny/single")
    assert config.hidden_size == 64 and not [r for r in hub.requests if r.path.endswith(".safetensors")]


def test_corrupt_cached_layer_is_fetched_again(hub, repos):
    load_llm_layers(REPO, [-1])
    layer_cache = Path(constants.HF_HUB_CACHE) / "models--tiny--llama" / LAYER_CACHE_FOLDER
    cached = next(layer_cache.rglob("layer-*.safetensors"))
    data = bytearray(cached.read_bytes())
    data[-10] ^= 0xFF  # one flipped byte in the tensor data
    cached.write_bytes(bytes(data))
    hub.reset_counts()
    with pytest.warns(UserWarning, match="does not match its recorded sha256"):
        _, states, _ = load_llm_layers(REPO, [-1])
    assert_same(states, load_llm_layers(repos[REPO], [-1])[1])
    assert data_requests(hub, ".safetensors")


def test_offline_a_cached_layer_loads_and_an_uncached_one_is_a_clear_error(hub, repos, monkeypatch):
    from hf_frozenlm.modeling.frozenlm_loading import LLMSourceNotFoundError

    load_llm_layers(REPO, [-1])
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub.reset_counts()
    _, states, _ = load_llm_layers(REPO, [-1])
    assert_same(states, load_llm_layers(repos[REPO], [-1])[1])
    with pytest.raises(LLMSourceNotFoundError, match="offline, or not cached"):
        load_llm_layers(REPO, [0])
    assert hub.requests == []


# -- server faults ----------------------------------------------------------------------------------------
def test_server_that_ignores_range_falls_back_to_whole_shards_with_a_warning(hub, repos):
    hub.faults.ignore_range = True
    with pytest.warns(UserWarning, match="does not honour HTTP Range requests"):
        _, states, _ = load_llm_layers(REPO, [-1])
    assert_same(states, load_llm_layers(repos[REPO], [-1])[1])


def test_wrong_length_range_answer_is_an_error(hub):
    hub.faults.short_range = True
    with pytest.raises(HubTransferError, match="with a body of"):
        load_llm_layers(REPO, [-1])
    assert not list(Path(constants.HF_HUB_CACHE).rglob("layer-*.safetensors"))  # nothing half-right was cached


def test_changed_etag_between_header_and_data_is_an_error(hub):
    hub.faults.change_etag_after = 2  # the two header reads of each shard; its data then comes with another ETag
    with pytest.raises(HubTransferError, match="changed on the server between reading its header and its data"):
        load_llm_layers(REPO, [-1])
    assert not list(Path(constants.HF_HUB_CACHE).rglob("layer-*.safetensors"))


def test_dropped_transfers_resume_where_they_stopped(hub, repos):
    _, reference, _ = load_llm_layers(repos[REPO], [-1])
    hub.faults.drop_after_bytes, hub.faults.drop_times = 5000, 3
    _, states, _ = load_llm_layers(REPO, [-1])
    assert_same(states, reference)
    resumed = [r for r in data_requests(hub, ".safetensors") if r.body_bytes == 5000]
    assert resumed  # some data requests were cut short ...
    # ... and resumed after the bytes that had arrived: none was sent twice.
    assert sum(r.body_bytes for r in data_requests(hub, ".safetensors")) <= 1.05 * layer_bytes(reference)


def test_a_transfer_that_keeps_dropping_is_an_error(hub):
    hub.faults.drop_after_bytes, hub.faults.drop_times = 0, 1000
    with pytest.raises(HubTransferError, match="the transfer stopped 4 times"):
        load_llm_layers(REPO, [-1])


# -- GGUF -------------------------------------------------------------------------------------------------
def test_gguf_layer_from_the_hub_equals_the_local_file(hub, smollm2_last_layer):
    local_config, reference, local = smollm2_last_layer
    config, states, provenance = load_llm_layers(f"hf://{GGUF_REPO}/smol.gguf", [-1])
    assert provenance["sha256"] == local["sha256"] and provenance["file"] == "smol.gguf"
    assert_same(states, reference)
    assert config.to_dict() == local_config.to_dict()
    header = gguf_header_reader(smollm2_gguf_path())
    wanted = sum(t.n_bytes for t in header.tensors if t.name.startswith("blk.29."))
    data = sum(r.body_bytes for r in data_requests(hub, ".gguf"))
    assert wanted <= data <= 1.05 * wanted
    served = sum(r.body_bytes for r in hub.requests if r.path.endswith(".gguf"))
    assert served < 0.06 * Path(smollm2_gguf_path()).stat().st_size  # header (~2 MB) + one Q4_1 layer of 98 MB
    hub.reset_counts()  # the `gguf_file=` form reads the same cache entry; the config needs no request at all
    assert load_llm_layers(GGUF_REPO, [-1], gguf_file="smol.gguf")[2]["sha256"] == local["sha256"]
    assert load_llm_config(f"hf://{GGUF_REPO}/smol.gguf").num_hidden_layers == 30
    assert not [r for r in hub.requests if "/resolve/" in r.path]


def test_truncated_gguf_on_the_hub_is_a_clear_error(hub):
    from hf_frozenlm.modeling.frozenlm_loading import LLMCheckpointError

    with pytest.raises(LLMCheckpointError, match="looks truncated or corrupt"):
        load_llm_layers("hf://tiny/truncated/smol.gguf", [-1])


# -- fresh processes: HF_ENDPOINT, offline reuse, a slim checkpoint as remote code ------------------------------
SLIM_RELOAD = textwrap.dedent(
    """
    import sys
    sys.modules["hf_frozenlm"] = None  # only the saved model's own code may run
    import torch
    from transformers import AutoModelForImageClassification
    folder, pixels_path, out_path = sys.argv[1:4]
    model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    with torch.no_grad():
        torch.save({"logits": model(torch.load(pixels_path)).logits, "module": type(model).__module__}, out_path)
    """
)


def test_slim_checkpoint_reloads_from_the_hub_then_offline_as_remote_code(hub, repos, tmp_path):
    from hf_frozenlm import ViTLlamaForImageClassification

    torch.manual_seed(0)
    model = ViTLlamaForImageClassification.from_parts(
        "vit-tiny", REPO, num_labels=3, trunk_kwargs=dict(image_size=16, patch_size=4, num_hidden_layers=1)
    ).eval()
    assert model.config.llm_source["source"] == REPO
    model.save_pretrained(tmp_path / "slim", frozen_weights=False)
    assert (tmp_path / "slim" / "frozenlm_hub_ranges.py").is_file()  # carried with the remote code
    pixels = torch.randn(2, 3, 16, 16)
    torch.save(pixels, tmp_path / "pixels.pt")
    with torch.no_grad():
        expected = model(pixels).logits
    _, reference, _ = load_llm_layers(repos[REPO], [-1])

    def reload(offline: bool, name: str):
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "1" if offline else "0",
               "HF_HUB_CACHE": str(tmp_path / "fresh-cache"), "HF_MODULES_CACHE": str(tmp_path / "modules")}
        env.pop("HF_FROZENLM_LLM_PATH", None)
        arguments = [str(tmp_path / "slim"), str(tmp_path / "pixels.pt"), str(tmp_path / name)]
        completed = subprocess.run([sys.executable, "-c", SLIM_RELOAD, *arguments], env=env, cwd=tmp_path,
                                   capture_output=True, text=True)
        assert completed.returncode == 0, completed.stderr[-3000:]
        result = torch.load(tmp_path / name)
        assert result["module"].startswith("transformers_modules.")
        assert torch.equal(result["logits"], expected)

    hub.reset_counts()
    reload(offline=False, name="online.pt")  # a fresh cache: the layer comes by ranges, through HF_ENDPOINT
    gets = [r for r in hub.requests if r.method == "GET" and r.path.endswith(".safetensors")]
    assert gets and all(r.status == 206 for r in gets)
    assert sum(r.body_bytes for r in data_requests(hub, ".safetensors")) <= 1.05 * layer_bytes(reference)
    hub.reset_counts()
    reload(offline=True, name="offline.pt")  # HF_HUB_OFFLINE=1: the same cache, no request at all
    assert hub.requests == []
    assert next((tmp_path / "fresh-cache").rglob(f"{LAYER_CACHE_FOLDER}/refs/main")).read_text() == hub.commits[REPO]
