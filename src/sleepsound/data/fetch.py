"""Fetch the gated DreamCatcher audio from the Hugging Face Hub: pinned, verified, extracted.

:func:`fetch_dreamcatcher` downloads ``data/{split}.tar.gz`` at a pinned revision, checks each
archive against the size and sha256 the hub reports, extracts it safely and all-or-nothing into
``out_dir/{split}/{label}/*.wav`` (the audio-folder layout the rest of the pipeline reads) and
records what it fetched in ``out_dir/sleepsound_source.json``. A per-split completion marker
makes a second call a no-op that touches no network.

Downloads resume across runs. The bytes of ``data/{split}.tar.gz`` go to
``out_dir/.downloads/data/{split}.tar.gz.incomplete`` (with a small ``.json`` sidecar naming the
size and sha256 it is meant to end up with). A later call that finds it asks the hub for the rest
(``Range: bytes=<size>-``) and appends; a server that answers with the whole file (200) or refuses
the range (416) makes it start again from zero. Only a complete file that matches the hub's size
and sha256 is renamed to ``{split}.tar.gz``; a mismatch deletes it and raises
:class:`IntegrityError`. An OS file lock (``out_dir/.downloads/.lock``) lets one process at a
time fetch into ``out_dir``.

The hub is ``HF_ENDPOINT`` (read at call time) or https://huggingface.co. The token comes from the
``token`` argument, else ``HF_TOKEN``, else the login cache of ``hf auth login``; it is never
printed, logged or written, and is scrubbed from every error message this module raises.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from tarfile import TarInfo

from filelock import FileLock
from filelock import Timeout as LockTimeout
from huggingface_hub import HfApi, constants, get_token, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers, close_session, get_session, hf_raise_for_status
from huggingface_hub.utils import httpx as hub_http  # httpx2 under huggingface_hub 2.x
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from sleepsound import __version__
from sleepsound.atomic import atomic_write
from sleepsound.data.archive import MemberCheck, safe_extract_tar
from sleepsound.data.provenance import SOURCE_FILE
from sleepsound.taxonomy import LABELS

logger = logging.getLogger(__name__)

DREAMCATCHER_REPO = "THU-PI-Sensing/DreamCatcher"
DREAMCATCHER_REVISION = "56226e293f6d6252d441d7403360280f3b912949"
SPLITS: tuple[str, ...] = ("train", "validation", "test")
REPO_TYPE = "dataset"

DATASET_PAGE = f"https://huggingface.co/datasets/{DREAMCATCHER_REPO}"
TOKENS_PAGE = "https://huggingface.co/settings/tokens"
FETCH_COMMAND = "sleepsound fetch dreamcatcher"

DOWNLOADS_DIR = ".downloads"
INCOMPLETE_SUFFIX = ".incomplete"
DEFAULT_RETRIES = 5

_HASH_CHUNK = 1 << 20
_FSYNC_EVERY = 64 << 20  # bytes written between fsyncs of the .incomplete file
_BACKOFF_SECONDS = 1.0  # wait before the first retry; doubled for each further failure
_BACKOFF_MAX_SECONDS = 30.0
_MAX_RESTARTS = 3  # downloads restarted from zero (server ignored or refused a Range) per file
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_PROGRESS_EVERY_SECONDS = 10.0  # how often a download reports itself when stderr is no terminal
_TOKEN_PATTERN = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b")


class FetchError(RuntimeError):
    """The dataset could not be fetched."""


class AccessError(FetchError):
    """The hub refused access: no token, a bad token, or a token without access to the dataset."""


class IntegrityError(FetchError):
    """A downloaded file does not match the size or sha256 the hub reports (it was removed)."""

    def __init__(self, filename: str, expected: str, actual: str) -> None:
        self.filename = filename
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{filename} is corrupt: expected {expected}, got {actual}. "
            f"The bad download was removed; rerun `{FETCH_COMMAND}` to download it again."
        )


@dataclass(frozen=True)
class SplitInfo:
    """What one extracted split came from."""

    sha256: str
    size: int
    n_files: int


@dataclass(frozen=True)
class FetchResult:
    """Outcome of :func:`fetch_dreamcatcher`."""

    out_dir: Path
    repo: str
    revision: str
    splits: dict[str, SplitInfo]
    already_present: bool
    downloaded_bytes: int = 0
    seconds: float = 0.0

    @property
    def n_files(self) -> int:
        """Files extracted across the requested splits."""
        return sum(info.n_files for info in self.splits.values())


@dataclass(frozen=True)
class _Hub:
    """Where and how to reach the dataset. The token is kept out of ``repr``."""

    revision: str
    endpoint: str | None
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class _RemoteFile:
    """Size and digest of a repo file as the hub reports it."""

    path: str
    size: int
    sha256: str | None  # LFS files
    git_oid: str  # sha1 of the git blob; what identifies non-LFS files


def archive_filename(split: str) -> str:
    """Path of a split's audio archive inside the dataset repo."""
    return f"data/{split}.tar.gz"


def marker_path(out_dir: Path, split: str) -> Path:
    """The file whose presence says ``out_dir/{split}`` is complete."""
    return out_dir / f".complete-{split}.json"


def fetch_dreamcatcher(
    out_dir: str | os.PathLike[str],
    revision: str = DREAMCATCHER_REVISION,
    splits: Sequence[str] = SPLITS,
    token: str | None = None,
    progress: bool = True,
    *,
    endpoint: str | None = None,
    keep_archives: bool = False,
    retries: int = DEFAULT_RETRIES,
) -> FetchResult:
    """Download, verify and extract DreamCatcher's audio splits into ``out_dir``.

    Args:
        out_dir: gets ``{split}/{label}/*.wav``, ``sleepsound_source.json`` and the markers.
        revision: the dataset commit to fetch (pinned for the benchmark).
        splits: which of ``train``, ``validation``, ``test``.
        token: a Hugging Face token; default ``HF_TOKEN`` or the ``hf auth login`` cache.
        progress: show download/extraction progress and the closing summary on stderr.
        endpoint: the hub URL; default ``HF_ENDPOINT`` (read now) or https://huggingface.co.
        keep_archives: keep the downloaded ``.tar.gz`` under ``out_dir/.downloads``.
        retries: how many more times to try, resuming, after a network failure or a 408/429/5xx
            answer; the count starts afresh whenever bytes arrive. ``0`` gives up on the first
            failure. What arrived is kept either way, and the next call resumes from it.

    Raises:
        AccessError: no token, a rejected token, or no access to the gated dataset.
        IntegrityError: an archive does not match the hub's size/sha256 (it is removed).
        sleepsound.data.archive.ArchiveError: an archive is corrupt, unsafe or wrongly laid out.
        FetchError: any other hub or network failure (a partial download is kept to resume), or
            another process fetching into ``out_dir`` right now.
    """
    start = time.monotonic()
    wanted = _check_splits(splits)
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = _Reporter(progress)

    done = {s: info for s in wanted if (info := _read_marker(out_dir, s, revision)) is not None}
    todo = [s for s in wanted if s not in done]
    if not todo:
        if not (out_dir / SOURCE_FILE).is_file():
            _write_source(out_dir, revision)
        report.say(f"DreamCatcher {', '.join(wanted)} already present in {out_dir}; nothing to do.")
        return FetchResult(out_dir, DREAMCATCHER_REPO, revision, done, already_present=True)

    hub = _Hub(
        revision=revision,
        endpoint=(endpoint or os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None,
        token=token or get_token(),
    )
    downloaded = 0
    with _exclusive(out_dir), _translate_hub_errors(hub):
        remote = _remote_files(hub, todo)
        for split in todo:
            done[split] = _fetch_split(
                hub, remote[split], split, out_dir, report, keep_archives, retries
            )
            downloaded += done[split].size
        _write_source(out_dir, revision)

    result = FetchResult(
        out_dir,
        DREAMCATCHER_REPO,
        revision,
        {s: done[s] for s in wanted},
        already_present=False,
        downloaded_bytes=downloaded,
        seconds=time.monotonic() - start,
    )
    report.summary(result)
    return result


@contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir/.downloads/.lock``: one fetch at a time writes into ``out_dir``.

    An OS file lock, so a killed process never leaves it stale.
    """
    path = out_dir / DOWNLOADS_DIR / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except LockTimeout:
        raise FetchError(
            f"another process is already fetching DreamCatcher into {out_dir}; "
            f"wait for it to finish, then rerun `{FETCH_COMMAND}` if needed"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _check_splits(splits: str | Iterable[str]) -> tuple[str, ...]:
    """Validate and de-duplicate the requested splits, keeping their order."""
    names = (splits,) if isinstance(splits, str) else tuple(splits)
    unknown = [s for s in names if s not in SPLITS]
    if unknown or not names:
        raise ValueError(f"unknown split(s) {unknown or '(none given)'}; choose from {SPLITS}")
    return tuple(dict.fromkeys(names))


def _fetch_split(
    hub: _Hub,
    remote: _RemoteFile,
    split: str,
    out_dir: Path,
    report: _Reporter,
    keep_archives: bool,
    retries: int,
) -> SplitInfo:
    """Download, verify and extract one split; write its completion marker."""
    archive, sha256 = _download(hub, remote, split, out_dir / DOWNLOADS_DIR, report, retries)
    with report.extracting(split, remote.size) as advance:
        files = safe_extract_tar(
            archive, out_dir, check_member=_layout_check(split), progress=advance, overwrite=True
        )
    info = SplitInfo(sha256=sha256, size=remote.size, n_files=len(files))
    _atomic_write_json(marker_path(out_dir, split), _marker_record(split, hub.revision, info))
    if not keep_archives:
        archive.unlink(missing_ok=True)
    report.say(f"{split}: {info.n_files} files extracted into {out_dir / split}")
    return info


def _remote_files(hub: _Hub, splits: Sequence[str]) -> dict[str, _RemoteFile]:
    """Ask the hub for the size and digest of each split's archive at the revision."""
    wanted = {archive_filename(s): s for s in splits}
    infos = HfApi(endpoint=hub.endpoint, token=hub.token).get_paths_info(
        DREAMCATCHER_REPO, list(wanted), revision=hub.revision, repo_type=REPO_TYPE
    )
    found: dict[str, _RemoteFile] = {}
    for info in infos:
        if info.path in wanted and hasattr(info, "blob_id"):
            lfs = info.lfs
            found[wanted[info.path]] = _RemoteFile(
                path=info.path,
                size=lfs.size if lfs else info.size,
                sha256=lfs.sha256 if lfs else None,
                git_oid=info.blob_id,
            )
    missing = [path for path, split in wanted.items() if split not in found]
    if missing:
        raise FetchError(f"{', '.join(missing)} not found in {DREAMCATCHER_REPO} at {hub.revision}")
    return found


# --- download --------------------------------------------------------------------------------


class _Restart(Exception):
    """The server will not continue the partial download: start it again from zero."""


class _RetryableStatus(Exception):
    """A 408, 429 or 5xx answer: worth trying again after a pause."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")


_TRANSIENT = (
    hub_http.TimeoutException,
    hub_http.NetworkError,
    hub_http.RemoteProtocolError,
    _RetryableStatus,
)


def _download(
    hub: _Hub, remote: _RemoteFile, split: str, downloads: Path, report: _Reporter, retries: int
) -> tuple[Path, str]:
    """Download ``remote`` to ``downloads/<path>``, resuming a partial download; verify it.

    Returns the verified archive and its sha256. Raises :class:`IntegrityError` (and deletes the
    file) when it does not match the hub, :class:`FetchError` when the network keeps failing (the
    partial file is kept for the next call to resume).
    """
    final = downloads / remote.path
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.is_file():  # a kept archive, or a run stopped after the download
        report.say(f"{split}: checking the {remote.path} downloaded before")
        try:
            return final, _verify_download(final, remote)
        except IntegrityError as err:
            report.say(f"{split}: {err.actual} instead of {err.expected}; downloading again")
    partial = _Partial.resume(final, remote)
    have = partial.size()
    mb = f"{remote.size / 1e6:.1f} MB"
    if have:
        report.say(f"{split}: resuming {remote.path} at {have / 1e6:.1f} of {mb}")
    else:
        report.say(f"{split}: downloading {remote.path} ({mb})")
    started = time.monotonic()
    with report.downloading(split, remote.size, have) as progress:
        _transfer(hub, partial, progress, retries)
    got, seconds = remote.size - have, max(time.monotonic() - started, 1e-9)
    report.say(
        f"{split}: downloaded {got / 1e6:.1f} MB in {seconds:.1f} s "
        f"({got / 1e6 / seconds:.1f} MB/s); verifying size and sha256"
    )
    try:
        sha256 = _verify_download(partial.path, remote)
    except IntegrityError:
        partial.discard()
        raise
    os.replace(partial.path, final)
    partial.discard()
    return final, sha256


@dataclass(frozen=True)
class _Partial:
    """``<archive>.incomplete`` and its sidecar, which names the file it is meant to become.

    The sidecar (size and digests of ``remote``) keeps bytes of another version of the file, say
    of another revision, from ever being resumed.
    """

    path: Path
    remote: _RemoteFile

    @classmethod
    def resume(cls, final: Path, remote: _RemoteFile) -> _Partial:
        """The partial download of ``remote`` at ``final``; stale or foreign bytes are deleted."""
        partial = cls(final.with_name(final.name + INCOMPLETE_SUFFIX), remote)
        try:
            meant = json.loads(partial.sidecar.read_text()) == partial.meant
            if meant and partial.path.stat().st_size <= remote.size:
                return partial
        except (OSError, ValueError):
            pass
        partial.discard()
        return partial

    @property
    def sidecar(self) -> Path:
        return self.path.with_name(self.path.name + ".json")

    @property
    def meant(self) -> dict[str, object]:
        r = self.remote
        return {"path": r.path, "size": r.size, "sha256": r.sha256, "git_oid": r.git_oid}

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def create(self) -> None:
        """Start an empty partial file (sidecar first), unless there is one."""
        if not self.path.exists():
            _atomic_write_json(self.sidecar, self.meant)
            self.path.touch()

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self.sidecar.unlink(missing_ok=True)


def _transfer(hub: _Hub, partial: _Partial, progress: Callable[[int], None], retries: int) -> None:
    """Fill ``partial`` up to the remote size, retrying (and resuming) on network failures."""
    remote = partial.remote
    url = hf_hub_url(
        DREAMCATCHER_REPO,
        remote.path,
        repo_type=REPO_TYPE,
        revision=hub.revision,
        endpoint=hub.endpoint,
    )
    headers = build_hf_headers(
        token=hub.token or False, library_name="sleepsound", library_version=__version__
    )
    # Ranges count bytes of the file as stored: ask for it without any content encoding.
    headers["Accept-Encoding"] = "identity"
    failures = restarts = 0
    while (have := partial.size()) < remote.size:
        try:
            _get_rest(url, headers, partial, have, progress)
        except _Restart as why:
            restarts += 1
            if restarts > _MAX_RESTARTS:
                message = f"could not download {remote.path}: {why}"
                raise FetchError(scrub(message, hub.token)) from None
            logger.warning("%s: %s; starting again from zero", remote.path, why)
            partial.discard()
            progress(0)
        except _TRANSIENT as err:
            if isinstance(err, hub_http.ConnectError):
                close_session()  # as huggingface_hub does: drop pooled connections, TLS state
            now = partial.size()
            failures = 1 if now > have else failures + 1
            reason = (
                str(err) if isinstance(err, _RetryableStatus) else f"{type(err).__name__}: {err}"
            )
            reason = scrub(reason, hub.token)
            if failures > retries:
                raise FetchError(
                    f"downloading {remote.path} failed ({reason}). {now / 1e6:.1f} of "
                    f"{remote.size / 1e6:.1f} MB are kept in {partial.path}; check the network "
                    f"and rerun `{FETCH_COMMAND}` to resume"
                ) from None
            wait = min(_BACKOFF_SECONDS * 2 ** (failures - 1), _BACKOFF_MAX_SECONDS)
            logger.warning("%s: %s at byte %d; retrying in %.1f s", remote.path, reason, now, wait)
            time.sleep(wait)


def _get_rest(
    url: str,
    headers: dict[str, str],
    partial: _Partial,
    have: int,
    progress: Callable[[int], None],
) -> None:
    """One GET of the bytes from ``have`` on, written to ``partial`` as they arrive.

    It goes through huggingface_hub's shared httpx client (the same proxies, certificates and
    offline switch as the rest of the library), which follows redirects; httpx drops
    ``Authorization`` when a redirect leaves the hub's origin, so the token never reaches a CDN.
    """
    if have:
        headers = {**headers, "Range": f"bytes={have}-"}
    timeout = constants.HF_HUB_DOWNLOAD_TIMEOUT
    session = get_session()
    with session.stream("GET", url, headers=headers, timeout=timeout, follow_redirects=True) as r:
        status = r.status_code
        if status in _RETRY_STATUS:
            raise _RetryableStatus(status)
        if status == 416:
            raise _Restart(f"the server refused to resume at byte {have} (HTTP 416)")
        if status >= 400:
            r.read()
            hf_raise_for_status(r)
        if status not in (200, 206):
            raise FetchError(f"unexpected answer (HTTP {status}) to GET {partial.remote.path}")
        start = _content_start(r) if status == 206 else 0
        if start not in (0, have):
            raise _Restart(f"the server sent bytes from {start} when asked for {have}")
        if start != have:
            logger.warning("%s: the server ignored the Range; starting again", partial.remote.path)
        partial.create()
        # Unbuffered: a chunk is in the kernel once written, so a killed process keeps it.
        with partial.path.open("r+b", buffering=0) as f:
            f.seek(start)
            f.truncate()
            done = synced = start
            progress(done)
            try:
                for chunk in r.iter_bytes():
                    f.write(chunk)
                    done += len(chunk)
                    progress(done)
                    if done > partial.remote.size:
                        break  # longer than the hub says: the size check rejects it
                    if done - synced >= _FSYNC_EVERY:
                        os.fsync(f.fileno())
                        synced = done
            finally:
                os.fsync(f.fileno())


def _content_start(response: hub_http.Response) -> int:
    """First byte offset of a 206 answer (``Content-Range: bytes a-b/n``); -1 if unreadable."""
    m = re.match(r"\s*bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
    return int(m[1]) if m else -1


def _verify_download(path: Path, remote: _RemoteFile) -> str:
    """Check ``path`` against the hub's size and digest; return its sha256.

    On a mismatch the file is deleted (so a rerun downloads it again) and
    :class:`IntegrityError` is raised.
    """
    size = path.stat().st_size
    if size != remote.size:
        _reject(path, remote, f"{remote.size} bytes", f"{size} bytes")
    sha256, git_oid = _digests(path, size, git=remote.sha256 is None)
    if remote.sha256 is not None and sha256 != remote.sha256:
        _reject(path, remote, f"sha256 {remote.sha256}", f"sha256 {sha256}")
    if remote.sha256 is None and git_oid != remote.git_oid:
        _reject(path, remote, f"git blob {remote.git_oid}", f"git blob {git_oid}")
    return sha256


def _reject(path: Path, remote: _RemoteFile, expected: str, actual: str) -> None:
    path.unlink(missing_ok=True)
    raise IntegrityError(remote.path, expected, actual)


def _digests(path: Path, size: int, *, git: bool) -> tuple[str, str | None]:
    """sha256 of the file, plus its git blob sha1 when ``git`` (how the hub names non-LFS files)."""
    sha256 = hashlib.sha256()
    blob = hashlib.sha1(f"blob {size}\0".encode()) if git else None
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            sha256.update(chunk)
            if blob is not None:
                blob.update(chunk)
    return sha256.hexdigest(), blob.hexdigest() if blob is not None else None


def _layout_check(split: str) -> MemberCheck:
    """Accept only ``{split}/``, ``{split}/{label}/`` and ``{split}/{label}/{file}`` members."""

    def check(path: PurePosixPath, member: TarInfo) -> str | None:
        parts = path.parts
        if parts[0] != split:
            return f"is outside the top-level folder '{split}/'"
        if (member.isfile() and len(parts) != 3) or (member.isdir() and len(parts) > 2):
            return f"does not fit the layout {split}/<label>/<file>"
        if len(parts) > 1 and parts[1] not in LABELS:
            return f"is under '{parts[1]}/', not a DreamCatcher label ({', '.join(LABELS)})"
        return None

    return check


# --- markers and the source record -----------------------------------------------------------


def _marker_record(split: str, revision: str, info: SplitInfo) -> dict[str, object]:
    return {"split": split, "repo": DREAMCATCHER_REPO, "revision": revision, **asdict(info)}


def _read_marker(out_dir: Path, split: str, revision: str) -> SplitInfo | None:
    """The split's record if it was completely fetched at ``revision`` and is still there."""
    try:
        record = json.loads(marker_path(out_dir, split).read_text())
        if (record["repo"], record["revision"]) != (DREAMCATCHER_REPO, revision):
            return None
        info = SplitInfo(str(record["sha256"]), int(record["size"]), int(record["n_files"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if (out_dir / split).is_dir() else None


def _write_source(out_dir: Path, revision: str) -> None:
    """Record every split complete at ``revision`` in ``sleepsound_source.json``."""
    splits = {s: asdict(info) for s in SPLITS if (info := _read_marker(out_dir, s, revision))}
    record = {"kind": "dreamcatcher", "repo": DREAMCATCHER_REPO, "revision": revision}
    _atomic_write_json(out_dir / SOURCE_FILE, {**record, "splits": splits})


def _atomic_write_json(path: Path, data: object) -> None:
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


# --- errors ----------------------------------------------------------------------------------


@contextmanager
def _translate_hub_errors(hub: _Hub) -> Iterator[None]:
    """Turn huggingface_hub errors into short, token-free :class:`FetchError` subclasses.

    The originals are dropped (``from None``): tracebacks show only the scrubbed message.
    """
    try:
        yield
    except RevisionNotFoundError:
        raise FetchError(f"revision {hub.revision} not found in {DREAMCATCHER_REPO}") from None
    except (HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        reason = _access_problem(err, hub.token)
        if reason is not None:
            raise AccessError(_access_message(reason)) from None
        message = scrub(f"could not fetch {DREAMCATCHER_REPO}: {err}", hub.token)
        raise FetchError(message) from None
    except hub_http.TransportError as err:
        where = hub.endpoint or "https://huggingface.co"
        message = scrub(f"could not reach the hub at {where} ({err}); check the network", hub.token)
        raise FetchError(message + f" and rerun `{FETCH_COMMAND}`") from None


def _access_problem(err: BaseException, token: str | None) -> str | None:
    """Why access was refused, or None when ``err`` is not an access problem."""
    http = err if isinstance(err, HfHubHTTPError) else err.__cause__
    if not isinstance(http, HfHubHTTPError):
        return None
    status = http.response.status_code if http.response is not None else None
    if not (isinstance(http, RepositoryNotFoundError) or status in (401, 403)):
        return None
    if token is None:
        return "no Hugging Face token was found (HF_TOKEN is unset and you are not logged in)"
    if isinstance(http, GatedRepoError) or status == 403:
        return "your token has no access to this gated dataset yet"
    if status == 401:
        return "the hub rejected your token (invalid, revoked or expired)"
    return "the hub says the dataset does not exist or is not visible to your token"


def _access_message(reason: str) -> str:
    return (
        f"Cannot download DreamCatcher: {reason}.\n"
        f"  1. Log in at https://huggingface.co and request access at {DATASET_PAGE}\n"
        "     (accept the conditions; approval can take a while).\n"
        f"  2. Create a read token at {TOKENS_PAGE}.\n"
        "  3. Run `hf auth login` (or `huggingface-cli login`), or `export HF_TOKEN=...`.\n"
        f"  4. Rerun `{FETCH_COMMAND}`."
    )


def scrub(text: str, *secrets: str | None) -> str:
    """Replace the given secrets, and anything shaped like a hub token, with ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _TOKEN_PATTERN.sub("***", text)


# --- progress --------------------------------------------------------------------------------


@dataclass
class _Reporter:
    """Progress and status lines on stderr (rich), or silence."""

    enabled: bool
    console: Console = field(init=False)

    def __post_init__(self) -> None:
        self.console = Console(stderr=True, quiet=not self.enabled)

    def say(self, message: str) -> None:
        logger.debug(message)
        self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    @contextmanager
    def downloading(self, split: str, total: int, initial: int) -> Iterator[Callable[[int], None]]:
        """Yield a callback taking the bytes of the file on disk so far.

        A rich bar (bytes, MB/s, time left) on a terminal or in Jupyter; otherwise, so logs of
        unattended runs show progress too, a plain line every ``_PROGRESS_EVERY_SECONDS``.
        """
        if not self.enabled:
            yield lambda done: None
            return
        if self.console.is_terminal or self.console.is_jupyter:
            columns = (TextColumn(f"{split}: downloading"), BarColumn(), DownloadColumn())
            speed = (TransferSpeedColumn(), TimeRemainingColumn())
            with Progress(*columns, *speed, console=self.console) as bar:
                task = bar.add_task("download", total=total, completed=initial)
                last = initial

                def update(done: int) -> None:
                    nonlocal last
                    if done < last:  # restarted from zero: forget the old speed samples
                        bar.reset(task, total=total, completed=done)
                    else:
                        bar.update(task, completed=done)
                    last = done

                yield update
            return
        start = next_line = time.monotonic()
        next_line += _PROGRESS_EVERY_SECONDS
        base = initial

        def line(done: int) -> None:
            nonlocal next_line, start, base
            now = time.monotonic()
            if done < base:  # restarted from zero
                start, base = now, done
            if now < next_line:
                return
            next_line = now + _PROGRESS_EVERY_SECONDS
            rate = (done - base) / 1e6 / max(now - start, 1e-9)
            self.say(
                f"{split}: {done / 1e6:.1f} of {total / 1e6:.1f} MB "
                f"({100 * done / max(total, 1):.0f}%), {rate:.1f} MB/s"
            )

        yield line

    @contextmanager
    def extracting(self, split: str, total: int) -> Iterator[Callable[[int], None] | None]:
        """Yield a callback taking compressed bytes read so far (None when disabled)."""
        if not self.enabled:
            yield None
            return
        columns = (TextColumn(f"{split}: extracting"), BarColumn(), DownloadColumn())
        with Progress(*columns, TransferSpeedColumn(), console=self.console) as bar:
            task = bar.add_task("extract", total=total)
            yield lambda done: bar.update(task, completed=done)

    def summary(self, result: FetchResult) -> None:
        mb = result.downloaded_bytes / 1e6
        seconds = max(result.seconds, 1e-9)
        line = (
            f"DreamCatcher {result.revision[:12]}: {result.n_files} files, {mb:.1f} MB "
            f"in {result.seconds:.1f} s ({mb / seconds:.1f} MB/s) -> {result.out_dir}"
        )
        if self.enabled:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            logger.info(line)
