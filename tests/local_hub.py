"""A stand-in for the Hugging Face Hub's file API on 127.0.0.1, for offline tests and benchmarks of Hub downloads.

It serves local folders as model repos and speaks the part of the API that huggingface_hub uses to download files:
model info (`/api/models/{repo}[/revision/{rev}]`, with `sha` and `siblings`), the file tree
(`/api/models/{repo}/tree/{rev}`, for `snapshot_download`) and `/{repo}/resolve/{rev}/{file}` (HEAD and GET, with
`Range`, `ETag`, `X-Repo-Commit`, `Content-Length`). It counts the body bytes it sends per request, can throttle
them to a bandwidth, and has switches for the faults a real server or network shows (see `Faults`). Point
huggingface_hub at it with `HF_ENDPOINT=hub.url` in a fresh process, or `hub.patch_endpoint(monkeypatch)`.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class Faults:
    """What the server does wrong; all off by default."""

    ignore_range: bool = False  # answer a Range request with 200 and the whole file
    short_range: bool = False  # answer 206 for the asked range, but with half its bytes (and that Content-Length)
    change_etag_after: int | None = None  # after this many range GETs of a file, serve it with another ETag
    drop_after_bytes: int | None = None  # close the connection after this many body bytes of a longer range answer
    drop_times: int = 0  # ... for this many of them (then serve normally)
    bandwidth: float | None = None  # bytes per second for all bodies together, one shared link (None: unthrottled)


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    status: int
    body_bytes: int


@dataclass
class LocalHub:
    """Serves {repo_id: folder}; each repo has one commit, a sha1 of its id (stable across runs)."""

    repos: dict[str, Path]
    faults: Faults = field(default_factory=Faults)

    def __post_init__(self):
        self.repos = {repo: Path(folder) for repo, folder in self.repos.items()}
        self.commits = {repo: hashlib.sha1(repo.encode()).hexdigest() for repo in self.repos}
        self._range_gets: dict[str, int] = {}
        self._log: list[Request] = []
        self._in_flight = 0
        self._link_free_at = 0.0  # when the throttled link has sent everything reserved so far
        self._lock = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "LocalHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- what was served ------------------------------------------------------------------------------
    @property
    def requests(self) -> list[Request]:
        """The requests answered so far (waiting for answers still being sent: a client may have all the bytes
        before the server thread logs them)."""
        with self._lock:
            self._lock.wait_for(lambda: self._in_flight == 0, timeout=10)
            return list(self._log)

    def body_bytes(self, method: str = "GET", path_contains: str = "/resolve/") -> int:
        return sum(r.body_bytes for r in self.requests if r.method == method and path_contains in r.path)

    def reset_counts(self) -> None:
        with self._lock:
            self._lock.wait_for(lambda: self._in_flight == 0, timeout=10)
            self._log.clear()

    def _log_request(self, request: Request) -> None:
        with self._lock:
            self._log.append(request)

    def patch_endpoint(self, monkeypatch) -> None:
        """Point this process's huggingface_hub at the server (its URL template is fixed when it is imported)."""
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "ENDPOINT", self.url)
        template = self.url + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    # -- the repos ------------------------------------------------------------------------------------
    def files(self, repo: str) -> list[Path]:
        root = self.repos[repo]
        return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))

    def etag(self, repo: str, relative: str, changed: bool = False) -> str:
        # The Hub's ETag of an LFS file is its sha256; a cheap stand-in keeps huge benchmark files fast to serve.
        stat = (self.repos[repo] / relative).stat()
        tag = hashlib.sha256(f"{repo}/{relative}/{stat.st_size}/{stat.st_mtime_ns}".encode()).hexdigest()
        return f'"{tag[:-4]}beef"' if changed else f'"{tag}"'

    def count_range_get(self, key: str) -> int:
        with self._lock:
            self._range_gets[key] = self._range_gets.get(key, 0) + 1
            return self._range_gets[key]

    def reserve_link(self, size: int) -> float:
        """Reserve the shared link for `size` bytes; returns when they may start (when the bytes reserved before
        them, by any connection, have gone at the link's bandwidth)."""
        with self._lock:
            start = max(time.perf_counter(), self._link_free_at)
            self._link_free_at = start + size / self.faults.bandwidth
            return start

    def take_drop(self, status: int, length: int) -> int | None:
        with self._lock:
            drop_after = self.faults.drop_after_bytes
            if status != 206 or drop_after is None or length <= drop_after or self.faults.drop_times <= 0:
                return None
            self.faults.drop_times -= 1
            return self.faults.drop_after_bytes


def _handler_for(hub: LocalHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as huggingface_hub's client expects
        # Send each write at once: with Nagle's algorithm a throttled sender's last segment of every chunk waits for
        # the client's delayed ACK (~40 ms), which caps one connection far below the link's bandwidth.
        disable_nagle_algorithm = True

        def log_message(self, *args):  # quiet: tests read hub.requests instead
            pass

        def do_HEAD(self):
            self._route(head=True)

        def do_GET(self):
            self._route(head=False)

        # -- routing ------------------------------------------------------------------------------------
        def _route(self, head: bool):
            with hub._lock:
                hub._in_flight += 1
            try:
                self._answer(head)
            finally:
                with hub._lock:
                    hub._in_flight -= 1
                    hub._lock.notify_all()

        def _answer(self, head: bool):
            path = unquote(urlsplit(self.path).path)
            api = re.match(
                r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<what>revision|tree)/(?P<rev>[^/]+)(?P<sub>/.*)?)?$", path
            )
            resolve = re.match(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$", path)
            if api:
                return self._api(api["repo"], api["what"] or "revision", api["rev"] or "main", head)
            if resolve:
                return self._resolve(resolve["repo"], resolve["rev"], resolve["file"], head)
            self._error(404, "RepoNotFound", "no such route")

        def _known(self, repo: str, revision: str) -> bool:
            if repo not in hub.repos:
                self._error(404, "RepoNotFound", f"Repository {repo} not found")
                return False
            if revision not in ("main", hub.commits[repo]):
                self._error(404, "RevisionNotFound", f"Revision {revision} not found")
                return False
            return True

        def _api(self, repo: str, what: str, revision: str, head: bool):
            if not self._known(repo, revision):
                return
            root = hub.repos[repo]
            files = [(p.relative_to(root).as_posix(), p.stat().st_size) for p in hub.files(repo)]
            if what == "tree":
                body = [{"type": "file", "path": name, "size": size, "oid": hashlib.sha1(name.encode()).hexdigest()}
                        for name, size in files]
            else:
                body = {"id": repo, "modelId": repo, "sha": hub.commits[repo], "private": False,
                        "siblings": [{"rfilename": name, "size": size} for name, size in files]}
            payload = json.dumps(body).encode()
            self._send(200, {"Content-Type": "application/json", "Content-Length": str(len(payload))},
                       payload, head, None)

        def _resolve(self, repo: str, revision: str, filename: str, head: bool):
            if not self._known(repo, revision):
                return
            path = hub.repos[repo] / filename
            if ".." in Path(filename).parts or not path.is_file():
                return self._error(404, "EntryNotFound", f"{filename} not found", repo=repo)
            size = path.stat().st_size
            wanted = self.headers.get("Range")
            changed = False
            if wanted and not head and hub.faults.change_etag_after is not None:
                changed = hub.count_range_get(f"{repo}/{filename}") > hub.faults.change_etag_after
            headers = {"X-Repo-Commit": hub.commits[repo], "ETag": hub.etag(repo, filename, changed),
                       "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
            match = _RANGE.match(wanted or "")
            if wanted and not hub.faults.ignore_range and not head:
                if not match or int(match[1]) >= size:
                    headers["Content-Range"] = f"bytes */{size}"
                    return self._send(416, {**headers, "Content-Length": "0"}, b"", head, wanted)
                start = int(match[1])
                end = min(int(match[2]) if match[2] else size - 1, size - 1)
                length = end - start + 1
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
                if hub.faults.short_range:
                    length //= 2
                headers["Content-Length"] = str(length)
                return self._send_file(206, headers, path, start, length, wanted)
            headers["Content-Length"] = str(size)
            if head:
                return self._send(200, headers, b"", True, wanted)
            self._send_file(200, headers, path, 0, size, wanted)

        # -- responses ----------------------------------------------------------------------------------
        def _error(self, status: int, code: str, message: str, repo: str | None = None):
            payload = json.dumps({"error": message}).encode()
            headers = {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json",
                       "Content-Length": str(len(payload))}
            if repo:
                headers["X-Repo-Commit"] = hub.commits[repo]
            self._send(status, headers, payload, self.command == "HEAD", self.headers.get("Range"))

        def _send(self, status, headers, payload, head, wanted):
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if not head:
                self.wfile.write(payload)
            hub._log_request(Request(self.command, self.path, wanted, status, 0 if head else len(payload)))

        def _send_file(self, status, headers, path, start, length, wanted):
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            drop_after = hub.take_drop(status, length)
            sent = 0
            chunk = 1 << 20 if hub.faults.bandwidth is None else max(4096, int(hub.faults.bandwidth / 100))
            try:
                with open(path, "rb") as handle:
                    handle.seek(start)
                    while sent < length:
                        size = min(chunk, length - sent)
                        if drop_after is not None:
                            size = min(size, drop_after - sent)
                            if size <= 0:  # the network drops: close the socket mid-body
                                self.close_connection = True
                                self.connection.shutdown(socket.SHUT_RDWR)
                                break
                        data = handle.read(size)
                        if hub.faults.bandwidth:  # throttle: each chunk waits for its turn on the shared link
                            time.sleep(max(0.0, hub.reserve_link(len(data)) - time.perf_counter()))
                        self.wfile.write(data)
                        sent += len(data)
            except (BrokenPipeError, ConnectionResetError):  # the client went away (it saw enough)
                self.close_connection = True
            hub._log_request(Request(self.command, self.path, wanted, status, sent))

    return Handler
