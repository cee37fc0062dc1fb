"""A small Hugging Face Hub emulator for tests: a real HTTP server on 127.0.0.1.

It serves one repo at one revision, and answers what ``huggingface_hub`` (2.x, read from its
``file_download.py`` and ``hf_api.py``) and our own downloader send to fetch a dataset file:

* ``POST /api/datasets/{repo}/paths-info/{revision}`` (``HfApi.get_paths_info``): form field
  ``paths`` (repeated); answers ``[{"type": "file", "path", "size", "oid", "lfs": {...}}]``.
* ``HEAD`` and ``GET /datasets/{repo}/resolve/{revision}/{path}``: headers ``X-Repo-Commit``,
  ``ETag`` (quoted sha256 for LFS files, git blob sha1 otherwise), ``X-Linked-Etag``/
  ``X-Linked-Size`` (LFS), ``Content-Length``, ``Accept-Ranges``; a ``Range: bytes=a-[b]`` GET
  gets ``206`` with ``Content-Range`` (``416`` when ``a`` is past the end).
* ``GET /cdn/{path}?X-Amz-Signature=...``: the file with no access check, as a CDN serves a
  signed URL (the target of ``redirect_to``).

Errors carry the hub's ``X-Error-Code``/``X-Error-Message`` headers and a JSON ``{"error": ...}``
body, which is how ``huggingface_hub.utils.hf_raise_for_status`` tells them apart.

Modes (plain attributes, change them between calls):

* ``gated``: ``resolve`` needs a token with access: none -> 401 ``GatedRepo``; a known token
  without access -> 403 ``GatedRepo``. An unknown token gets 401 ``Invalid credentials`` on
  every endpoint, gated or not (as the hub does).
* ``cut_after_bytes=N``: the first GET of each file sends N bytes, then drops the connection.
* ``corrupt``: GETs serve bytes that differ from the advertised sha256 (same length).
* ``ranges``: ``"honor"`` (default), ``"ignore"`` (answer a Range GET with ``200`` and the whole
  file, as some proxies do) or ``"refuse"`` (answer any Range GET with ``416``).
* ``bytes_per_second=N``: send file bodies in small pieces at about N bytes a second (an answer
  keeps the rate it started with).
* ``fail_downloads=[503, None, ...]``: the next file GETs get these error statuses, one each
  (``None``: answered normally).
* ``redirect_to=URL``: resolve GETs (after the access check) are answered ``302`` to
  ``{URL}/cdn/{path}?...`` (another server: the LFS/CDN redirect of the real hub).

Every request is recorded in ``requests`` (method, path, headers) for assertions, and
``bytes_sent`` counts the file-body bytes handed to the network.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import tarfile
import threading
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote

import numpy as np
import soundfile as sf

_RESOLVE = re.compile(r"^/datasets/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_CDN = re.compile(r"^/cdn/(?P<path>.+)$")
_PATHS_INFO = re.compile(r"^/api/datasets/(?P<repo>[^/]+/[^/]+)/paths-info/(?P<rev>[^/]+)$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
_LFS_POINTER_SIZE = 134
_CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


@dataclass(frozen=True)
class Request:
    """One request the server saw."""

    method: str
    path: str
    headers: dict[str, str]

    @property
    def is_download(self) -> bool:
        return self.method == "GET" and ("/resolve/" in self.path or self.path.startswith("/cdn/"))


@dataclass
class FakeHub:
    """One repo at one revision, served over HTTP; use as a context manager."""

    repo: str
    revision: str
    files: dict[str, bytes]
    gated: bool = False
    tokens: dict[str, bool] = field(default_factory=dict)  # token -> has access
    cut_after_bytes: int | None = None
    corrupt: bool = False
    ranges: str = "honor"  # or "ignore", "refuse"
    bytes_per_second: float | None = None
    redirect_to: str | None = None
    fail_downloads: list[int | None] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    bytes_sent: int = 0
    _cut_done: set[str] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def downloads(self, path: str | None = None) -> list[Request]:
        """The file GETs seen so far (optionally only those of ``path``)."""
        return [
            r for r in self.requests if r.is_download and (path is None or r.path.endswith(path))
        ]

    def __enter__(self) -> FakeHub:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        serve = self._server.serve_forever
        threading.Thread(target=serve, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    # --- request handling (called from the handler thread) -------------------------------

    def handle(self, req: _Handler) -> None:
        path = unquote(req.path.split("?", 1)[0])
        headers = {k.lower(): v for k, v in req.headers.items()}
        self.requests.append(Request(req.command, path, headers))
        if (m := _RESOLVE.match(path)) and req.command in ("GET", "HEAD"):
            self._resolve(req, m["repo"], m["rev"], m["path"])
        elif (m := _CDN.match(path)) and req.command == "GET" and m["path"] in self.files:
            self._serve(req, m["path"], {})
        elif (m := _PATHS_INFO.match(path)) and req.command == "POST":
            self._paths_info(req, m["repo"], m["rev"])
        else:
            _send_error(req, 404, "Not found", code=None)

    def _resolve(self, req: _Handler, repo: str, rev: str, path: str) -> None:
        if not self._check_access(req, repo, rev, gate=True):
            return
        if path not in self.files:
            _send_error(req, 404, f"{path} does not exist", "EntryNotFound", self.revision)
            return
        data = self.files[path]
        headers = {"X-Repo-Commit": self.revision, "Accept-Ranges": "bytes"}
        headers.update(_etag_headers(data, lfs=path.endswith(".tar.gz")))
        if req.command == "HEAD":
            _send(req, 200, {**headers, "Content-Length": str(len(data))}, b"")
        elif self.redirect_to is not None:
            location = f"{self.redirect_to}/cdn/{path}?X-Amz-Signature=0123abcd&Expires=1"
            _send(req, 302, {**headers, "Location": location}, b"")
        else:
            self._serve(req, path, headers)

    def _serve(self, req: _Handler, path: str, headers: dict[str, str]) -> None:
        """Send the file (``corrupt``: with flipped bytes), whole or the asked Range of it."""
        with self._lock:
            fail = self.fail_downloads.pop(0) if self.fail_downloads else None
        if fail is not None:
            _send_error(req, fail, f"HTTP {fail} for the test", code=None)
            return
        data = self.files[path]
        body = _corrupted(data) if self.corrupt else data
        status, start, end = 200, 0, len(body)
        range_header = req.headers.get("Range") if self.ranges != "ignore" else None
        if range_header:
            m = _RANGE.match(range_header.strip())
            if m is None or int(m[1]) >= len(body) or self.ranges == "refuse":
                _send(req, 416, {"Content-Range": f"bytes */{len(body)}"}, b"")
                return
            start, end = int(m[1]), int(m[2]) + 1 if m[2] else len(body)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(body)}"
        headers["Content-Length"] = str(end - start)
        part, hang_up = body[start:end], False
        with self._lock:
            if self.cut_after_bytes is not None and path not in self._cut_done:
                self._cut_done.add(path)
                part, hang_up = part[: self.cut_after_bytes], True
        _send(req, status, headers, b"")
        self._send_body(req, part)
        if hang_up:
            _hang_up(req)

    def _send_body(self, req: _Handler, body: bytes) -> None:
        """Write ``body``, throttled to ``bytes_per_second`` when set; count what was written."""
        view, pos, rate = memoryview(body), 0, self.bytes_per_second
        while pos < len(view):
            step = len(view) - pos if rate is None else max(1, min(16384, int(rate / 20)))
            req.wfile.write(view[pos : pos + step])
            pos += step
            with self._lock:
                self.bytes_sent += step
            if rate is not None:
                time.sleep(step / rate)

    def _paths_info(self, req: _Handler, repo: str, rev: str) -> None:
        if not self._check_access(req, repo, rev, gate=False):
            return
        length = int(req.headers.get("Content-Length") or 0)
        form = parse_qs(req.rfile.read(length).decode())
        entries = [
            _path_info(p, self.files[p], lfs=p.endswith(".tar.gz"))
            for p in form.get("paths", [])
            if p in self.files
        ]
        _send_json(req, 200, entries)

    def _check_access(self, req: _Handler, repo: str, rev: str, *, gate: bool) -> bool:
        """Send the hub's error and return False when the request may not proceed."""
        auth = req.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() or None
        if token is not None and token not in self.tokens:
            _send_error(req, 401, "Invalid credentials in Authorization header", code=None)
        elif repo != self.repo:
            _send_error(req, 404, "Repository not found", "RepoNotFound")
        elif gate and self.gated and token is None:
            _send_error(
                req,
                401,
                f"Access to dataset {repo} is restricted. You must have access to it and be "
                "authenticated to access it. Please log in.",
                "GatedRepo",
            )
        elif gate and self.gated and not self.tokens[token]:
            _send_error(
                req,
                403,
                f"Access to dataset {repo} is restricted and you are not in the authorized "
                f"list. Visit https://huggingface.co/datasets/{repo} to ask for access.",
                "GatedRepo",
            )
        elif rev != self.revision:
            _send_error(req, 404, f"Invalid rev id: {rev}", "RevisionNotFound")
        else:
            return True
        return False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub  # set on the per-server subclass

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        try:
            self.hub.handle(self)
        except _CLIENT_GONE:  # the client hung up (or was killed) mid-answer
            self.close_connection = True

    do_HEAD = do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Keep the test output clean."""


def _send(req: _Handler, status: int, headers: Mapping[str, str], body: bytes) -> None:
    req.send_response(status)
    for name, value in headers.items():
        req.send_header(name, value)
    if "Content-Length" not in headers:
        req.send_header("Content-Length", str(len(body)))
    req.end_headers()
    if req.command != "HEAD" and body:
        req.wfile.write(body)


def _send_json(req: _Handler, status: int, payload: object, **headers: str) -> None:
    body = json.dumps(payload).encode()
    _send(req, status, {"Content-Type": "application/json", **headers}, body)


def _send_error(
    req: _Handler, status: int, message: str, code: str | None, commit: str | None = None
) -> None:
    headers = {"X-Error-Message": message}
    if code is not None:
        headers["X-Error-Code"] = code
    if commit is not None:
        headers["X-Repo-Commit"] = commit
    _send_json(req, status, {"error": message}, **headers)


def _hang_up(req: _Handler) -> None:
    """Close the connection now (after sending less than the announced Content-Length)."""
    req.wfile.flush()
    req.close_connection = True
    try:
        req.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _etag_headers(data: bytes, *, lfs: bool) -> dict[str, str]:
    if not lfs:
        return {"ETag": f'"{git_blob_oid(data)}"'}
    sha = hashlib.sha256(data).hexdigest()
    return {"ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data))}


def _path_info(path: str, data: bytes, *, lfs: bool) -> dict[str, object]:
    entry: dict[str, object] = {
        "type": "file",
        "path": path,
        "size": len(data),
        "oid": git_blob_oid(data),
    }
    if lfs:
        sha = hashlib.sha256(data).hexdigest()
        entry["lfs"] = {"oid": sha, "size": len(data), "pointerSize": _LFS_POINTER_SIZE}
    return entry


def _corrupted(data: bytes) -> bytes:
    """Same length, different bytes (a flipped block in the middle)."""
    bad = bytearray(data)
    mid = len(bad) // 2
    for i in range(mid, min(mid + 64, len(bad))):
        bad[i] ^= 0xFF
    return bytes(bad)


def git_blob_oid(data: bytes) -> str:
    """The git blob sha1 the hub uses as ``oid`` of a file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# --- archives ----------------------------------------------------------------------------------


def wav_bytes(seed: int, seconds: float = 0.25, sample_rate: int = 16_000) -> bytes:
    """A short stereo 16-bit WAV of seeded noise."""
    rng = np.random.default_rng(seed)
    audio = (0.1 * rng.standard_normal((int(seconds * sample_rate), 2))).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, audio, sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def split_clips(
    split: str, labels: Iterable[str] = ("quiet", "breathe", "snore"), per_label: int = 2
) -> dict[str, bytes]:
    """``{"<split>/<label>/<file>.wav": wav bytes}`` for a small split."""
    clips = {}
    for label in labels:
        for i in range(per_label):
            seed = zlib.crc32(f"{split}/{label}/{i}".encode())
            clips[f"{split}/{label}/{split}_{label}_{i:03d}.wav"] = wav_bytes(seed)
    return clips


def tar_gz(members: Mapping[str, bytes], extra: Iterable[tarfile.TarInfo] = ()) -> bytes:
    """Pack files (with their parent folders as directory entries) plus raw ``extra`` headers."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        dirs = sorted({str(parent) for name in members for parent in Path(name).parents})
        for d in (d for d in dirs if d != "."):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return buf.getvalue()


def tar_entry(
    name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", size: int = 0
) -> tarfile.TarInfo:
    """A raw tar header, for building hostile archives."""
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, size
    return info
