"""Fetch only a few layers' bytes of a checkpoint on the Hub, with HTTP byte ranges, and cache them per layer.

A safetensors shard or a GGUF file starts with a header that gives every tensor's byte span; `RemoteFile` reads
that header and then only the requested tensors' spans (neighbouring spans merged into one request) through
huggingface_hub's HTTP session: the user's token, `HF_ENDPOINT`, and the revision pinned to one commit. Every
response is checked (206 with the asked `Content-Range` and length, one `ETag` for all of a file's ranges), a
dropped transfer resumes where it stopped, and a server that ignores `Range` is reported so the caller can fall
back to downloading the file. What was fetched is kept as a small safetensors file in the Hugging Face cache
(`<repo's cache folder>/frozenlm-layers/<commit>/<file set>/layer-NNNNN.safetensors`, removed with the repo by
`hf cache delete`), with a record of where its bytes came from and their sha256; later loads, offline ones
included, read it.

Hub-portable (slim checkpoints reloaded as remote code use it): imports torch, safetensors, huggingface_hub and the
standard library; numpy and gguf only when a GGUF file is read.
"""

from __future__ import annotations

import json
import os
import re
import struct
import tempfile
import time
import warnings
from pathlib import Path

import torch

from .frozenlm_loading import LLMCheckpointError, LLMSourceNotFoundError, layer_states_sha256

LAYER_CACHE_FOLDER = "frozenlm-layers"
# Spans closer than this are fetched in one request: a layer's tensors sit next to each other (GGUF pads each to 32
# bytes), so this merges them without pulling in other layers' bytes.
MERGE_GAP = 64 * 1024
MAX_TRIES = 4  # per range: the first request, then resumes after a dropped connection
_RETRY_STATUS = (429, 500, 502, 503, 504)  # busy or failing for a moment: ask again
GGUF_FIRST_HEADER_BYTES = 2 << 20  # a GGUF header holds the tokenizer too (a few MB for a 128k vocabulary)
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_SAFETENSORS_DTYPES = {
    "BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64, "I8": torch.int8,
    "U8": torch.uint8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64, "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


class HubTransferError(LLMCheckpointError):
    """The Hub's answers to byte-range requests cannot be trusted to give the right bytes (wrong length, file
    changed between requests, transfer kept failing): nothing was loaded."""


class RangeRequestsUnsupported(Exception):
    """The server answered a Range request with the whole file (200): the caller downloads the file instead."""


# -- commits ----------------------------------------------------------------------------------------------
def resolve_commit(repo_id: str, revision: str | None, token, cache_dir) -> str:
    """The commit sha that `revision` (a branch, tag or sha; default main) of a Hub repo points to now, or, offline
    or when the Hub cannot be reached, the one it pointed to the last time this machine fetched layers from it."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError

    revision = revision or "main"
    if _COMMIT.match(revision):
        return revision
    ref_file = repo_cache_folder(repo_id, cache_dir) / LAYER_CACHE_FOLDER / "refs" / revision.replace("/", "--")
    try:
        commit = HfApi().model_info(repo_id, revision=revision, token=token).sha
    except RepositoryNotFoundError as error:
        raise LLMSourceNotFoundError(
            f"{repo_id!r} is not a Hub repo you can access (and not a local path). Check the id and your token."
        ) from error
    except RevisionNotFoundError as error:
        raise LLMSourceNotFoundError(f"The Hub repo {repo_id} has no revision {revision!r}.") from error
    except (OfflineModeIsEnabled, *_transport_errors()) as error:
        if ref_file.is_file():
            return ref_file.read_text().strip()
        raise LLMSourceNotFoundError(
            f"Cannot fetch {repo_id!r} from the Hub (offline, or not cached): the Hub cannot be reached ({error}) and "
            f"no layers of its revision {revision!r} are cached on this machine. Connect to the network once to fetch "
            "them, or pass a local folder / .gguf file / Meta folder as the LLM source."
        ) from error
    _write_atomically(ref_file, lambda temporary: Path(temporary).write_text(commit))
    return commit


def repo_cache_folder(repo_id: str, cache_dir) -> Path:
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    return Path(cache_dir or constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")


def _transport_errors() -> tuple[type[Exception], ...]:
    """The HTTP client's network errors (huggingface_hub 1.x uses httpx, 2.x its fork httpx2)."""
    try:
        import httpx2 as httpx
    except ImportError:
        import httpx
    return (httpx.TransportError,)


# -- one file, read by ranges -----------------------------------------------------------------------------
class RemoteFile:
    """One file of a Hub repo at one commit, read by byte ranges through huggingface_hub's HTTP session."""

    def __init__(self, repo_id: str, filename: str, commit: str, token=None):
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers

        self.repo_id, self.filename, self.commit = repo_id, filename, commit
        self.url = hf_hub_url(repo_id, filename, revision=commit)
        self._headers = {**build_hf_headers(token=token), "Accept-Encoding": "identity"}
        self.etag: str | None = None  # of the first response; every later one must match it
        self.size: int | None = None
        self.bytes_received = 0

    def __str__(self) -> str:
        return f"{self.repo_id}/{self.filename} (commit {self.commit[:12]})"

    def read(self, start: int, length: int, *, to_end_ok: bool = False) -> bytearray:
        """Bytes [start, start+length) of the file; `to_end_ok`: fewer when the file ends first (header probes)."""
        from huggingface_hub.errors import OfflineModeIsEnabled
        from huggingface_hub.utils import get_session, hf_raise_for_status

        buffer, received, tries = bytearray(length), 0, 0
        while received < length:
            tries += 1
            if tries > MAX_TRIES:
                raise HubTransferError(
                    f"Reading bytes {start}-{start + length - 1} of {self} from {self.url}: the transfer stopped "
                    f"{MAX_TRIES} times ({received} of {length} bytes arrived). The network or the server is "
                    "unreliable right now; try again later."
                )
            first = start + received
            headers = {**self._headers, "Range": f"bytes={first}-{start + length - 1}"}
            try:
                # huggingface_hub's shared client (its proxies, redirects and offline switch); not its backoff
                # wrapper, which cannot resume a body that breaks off after the response started.
                with get_session().stream("GET", self.url, headers=headers) as response:
                    if response.status_code in _RETRY_STATUS and tries < MAX_TRIES:
                        time.sleep(tries)
                        continue
                    if response.status_code >= 400:
                        response.read()
                        hf_raise_for_status(response)
                    if response.status_code == 200:  # the whole file is coming: stop reading it
                        raise RangeRequestsUnsupported(f"{self.url} answered a Range request with the whole file")
                    expected = self._check_response(response, first, start + length - 1, to_end_ok)
                    if to_end_ok and first + expected < start + length:
                        length = first + expected - start  # the file ends there
                        del buffer[length:]
                    for chunk in response.iter_bytes():  # as they arrive: a break keeps what came
                        if received + len(chunk) > length:
                            raise HubTransferError(f"{self.url} sent more bytes than the range it announced.")
                        buffer[received:received + len(chunk)] = chunk
                        received += len(chunk)
                        self.bytes_received += len(chunk)
            except _transport_errors():
                continue  # dropped mid-body: ask again for what is still missing
            except OfflineModeIsEnabled as error:
                raise LLMSourceNotFoundError(
                    f"Cannot fetch {self} from the Hub (offline, or not cached): these tensors are not in the layer "
                    "cache. Connect to the network once to fetch them, or pass a local copy of the LLM."
                ) from error
        return buffer

    def _check_response(self, response, first: int, last: int, to_end_ok: bool) -> int:
        """The announced length of a 206 answer to `bytes=first-last`, after checking it is that range of this file."""
        if response.status_code != 206:
            raise HubTransferError(f"{self.url} answered a Range request with HTTP {response.status_code}, not 206.")
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if not match:
            raise HubTransferError(
                f"{self.url} answered a Range request without a valid Content-Range "
                f"({response.headers.get('Content-Range')!r}); its bytes cannot be placed. Nothing was loaded."
            )
        got_first, got_last = int(match[1]), int(match[2])
        if match[3] != "*":
            size = int(match[3])
            if self.size is not None and size != self.size:
                raise HubTransferError(f"{self} changed size between requests ({self.size} then {size} bytes).")
            self.size = size
        clipped = to_end_ok and self.size is not None and got_last == self.size - 1 and got_last < last
        if got_first != first or (got_last != last and not clipped):
            raise HubTransferError(
                f"{self.url} answered the range bytes={first}-{last} with bytes {got_first}-{got_last}: a wrong "
                "range would give silently wrong tensors, so nothing was loaded. Try again, or download the file."
            )
        announced = response.headers.get("Content-Length")
        if announced is not None and int(announced) != got_last - got_first + 1:
            raise HubTransferError(
                f"{self.url} answered the range bytes={got_first}-{got_last} ({got_last - got_first + 1} bytes) with "
                f"a body of {announced} bytes: the server or a proxy is broken. Nothing was loaded; try again later "
                "or download the file."
            )
        etag = (response.headers.get("ETag") or "").removeprefix("W/").strip('"') or None
        if etag is not None:
            if self.etag is not None and etag != self.etag:
                raise HubTransferError(
                    f"{self} changed on the server between reading its header and its data (ETag {self.etag} then "
                    f"{etag}): the tensor offsets may no longer hold. Nothing was loaded; run again."
                )
            self.etag = etag
        return got_last - got_first + 1

    def read_spans(self, spans: dict[str, tuple[int, int]]) -> dict[str, memoryview]:
        """{name: bytes} for {name: (start, length)}, spans less than MERGE_GAP apart fetched in one request."""
        result = {}
        for begin, length, names in merge_spans(spans):
            block = memoryview(self.read(begin, length))
            for name in names:
                start, size = spans[name]
                result[name] = block[start - begin:start - begin + size]
        return result


def merge_spans(spans: dict[str, tuple[int, int]], max_gap: int = MERGE_GAP) -> list[tuple[int, int, list[str]]]:
    """(start, length, names) of the requests that cover `spans` ({name: (start, length)}), in file order."""
    merged: list[tuple[int, int, list[str]]] = []
    for name, (start, length) in sorted(spans.items(), key=lambda item: item[1][0]):
        if merged and start - (merged[-1][0] + merged[-1][1]) <= max_gap:
            begin, old_length, names = merged[-1]
            merged[-1] = (begin, max(old_length, start + length - begin), names + [name])
        else:
            merged.append((start, length, [name]))
    return merged


# -- safetensors ------------------------------------------------------------------------------------------
def safetensors_header(remote: RemoteFile) -> tuple[int, dict]:
    """(offset of the data, header) of a remote safetensors file, from two small range requests."""
    (header_size,) = struct.unpack("<Q", bytes(remote.read(0, 8)))
    if header_size > 100 * 2**20:
        raise LLMCheckpointError(f"{remote} does not start with a safetensors header ({header_size} byte header).")
    try:
        header = json.loads(bytes(remote.read(8, header_size)))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LLMCheckpointError(f"{remote} has a corrupt safetensors header ({error}).") from error
    return 8 + header_size, header


def safetensors_tensors(remote: RemoteFile, header: tuple[int, dict], keys: list[str]) -> dict[str, torch.Tensor]:
    """The tensors `keys` of a remote safetensors file, reading only their bytes."""
    data_start, entries = header
    spans = {}
    for key in keys:
        begin, end = entries[key]["data_offsets"]
        spans[key] = (data_start + begin, end - begin)
    raw = remote.read_spans(spans)
    tensors = {}
    for key in keys:
        entry = entries[key]
        dtype = _SAFETENSORS_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise LLMCheckpointError(f"{remote}: tensor {key} has dtype {entry['dtype']}, which is not supported.")
        flat = torch.frombuffer(raw[key], dtype=torch.uint8) if len(raw[key]) else torch.empty(0, dtype=torch.uint8)
        if flat.numel() != torch.Size(entry["shape"]).numel() * dtype.itemsize:
            raise LLMCheckpointError(f"{remote}: tensor {key}'s byte span does not match its shape {entry['shape']}.")
        tensors[key] = flat.view(dtype).reshape(entry["shape"])
    return tensors


# -- GGUF -------------------------------------------------------------------------------------------------
def gguf_header_reader(path):
    """A gguf.GGUFReader over a file that holds only a GGUF file's first bytes (its header and tensor index): the
    tensors get their type, shape, byte offset and size, and no data."""
    import gguf
    import numpy as np

    class HeaderOnlyReader(gguf.GGUFReader):
        def _build_tensors(self, start_offs, fields):
            self.tensors = []
            for field in fields:
                _, name, _, dims, raw_type, offset = field.parts
                tensor_type = gguf.GGMLQuantizationType(int(raw_type[0]))
                block_size, type_size = gguf.GGML_QUANT_SIZES[tensor_type]
                elements = int(np.prod(dims))
                self.tensors.append(gguf.ReaderTensor(
                    name=bytes(name).decode("utf-8"), tensor_type=tensor_type, shape=dims, n_elements=elements,
                    n_bytes=elements * type_size // block_size, data_offset=int(start_offs + offset[0]), data=None,
                    field=field,
                ))

    return HeaderOnlyReader(path)


def fetch_gguf_header(remote: RemoteFile, destination: Path):
    """Fetch a remote GGUF file's header into `destination` (growing the prefix until the tensor index fits) and
    return its header-only reader."""
    prefix = bytearray()
    wanted = GGUF_FIRST_HEADER_BYTES
    while True:
        if remote.size is None or len(prefix) < remote.size:
            prefix += remote.read(len(prefix), wanted - len(prefix), to_end_ok=True)
        whole_file = remote.size is not None and len(prefix) >= remote.size
        _write_atomically(destination, lambda temporary: Path(temporary).write_bytes(prefix))
        try:
            reader = gguf_header_reader(destination)
            past_end = whole_file and reader.data_offset > len(prefix)
            problem = "its data would start past its end" if past_end else None
        except Exception as error:  # the parser ran past the prefix (or the file is no GGUF)
            reader, problem = None, f"{type(error).__name__}: {error}"
        if problem and whole_file:
            destination.unlink(missing_ok=True)
            raise LLMCheckpointError(f"Could not read {remote} as GGUF: it looks truncated or corrupt ({problem}).")
        if reader is not None and reader.data_offset <= len(prefix):  # the parse never read past what was fetched
            return reader
        wanted = reader.data_offset if reader is not None else len(prefix) * 4


def gguf_array(raw, tensor_type, dims):
    """The numpy array GGUFReader gives for a tensor, from the tensor's raw bytes (typed for plain float/int types,
    bytes per row for quantized ones), so fetched and local tensors go through the same dequantization."""
    import gguf
    import numpy as np

    shape = tuple(reversed([int(d) for d in dims]))
    plain = {gguf.GGMLQuantizationType.F16: np.float16, gguf.GGMLQuantizationType.F32: np.float32,
             gguf.GGMLQuantizationType.F64: np.float64, gguf.GGMLQuantizationType.I8: np.int8,
             gguf.GGMLQuantizationType.I16: np.int16, gguf.GGMLQuantizationType.I32: np.int32,
             gguf.GGMLQuantizationType.I64: np.int64}
    data = np.frombuffer(raw, dtype=np.uint8)
    if tensor_type in plain:
        return data.view(plain[tensor_type]).reshape(shape)
    return data.reshape(gguf.quant_shape_to_byte_shape(shape, tensor_type))


# -- the layer cache --------------------------------------------------------------------------------------
class LayerCache:
    """Fetched tensors of one file set (a safetensors checkpoint, or one GGUF file) of a repo at one commit, one
    safetensors file per layer, with the record of their origin in its metadata."""

    def __init__(self, repo_id: str, commit: str, file_set: str, cache_dir=None):
        self.folder = repo_cache_folder(repo_id, cache_dir) / LAYER_CACHE_FOLDER / commit / file_set.replace("/", "--")
        self.repo_id, self.commit = repo_id, commit

    def path(self, index: int) -> Path:
        return self.folder / f"layer-{index:05d}.safetensors"

    def load(self, index: int) -> tuple[dict[str, torch.Tensor], dict] | None:
        """(tensors, record) of a cached layer, or None when it is not cached or fails its sha256 (then refetched)."""
        from safetensors import safe_open

        path = self.path(index)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                record = json.loads(handle.metadata()["frozenlm_fetch"])
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except Exception as error:  # truncated or unreadable: fetch again
            warnings.warn(f"Ignoring the unreadable cached layer {path} ({error}); fetching it again.", stacklevel=3)
            return None
        if layer_states_sha256([tensors]) != record.get("sha256"):
            warnings.warn(f"The cached layer {path} does not match its recorded sha256; fetching it again.",
                          stacklevel=3)
            return None
        return tensors, record

    def save(self, index: int, tensors: dict[str, torch.Tensor], record: dict) -> dict:
        from safetensors.torch import save_file

        record = {"repo_id": self.repo_id, "commit": self.commit, "layer": index, **record,
                  "sha256": layer_states_sha256([tensors])}
        contiguous = {key: tensor.contiguous() for key, tensor in tensors.items()}
        metadata = {"frozenlm_fetch": json.dumps(record)}
        _write_atomically(self.path(index), lambda temporary: save_file(contiguous, temporary, metadata=metadata))
        return record


def _write_atomically(path: Path, write) -> None:
    """`write(temporary_path)` beside `path`, then rename: a crash never leaves a half-written cache entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
