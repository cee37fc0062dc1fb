"""The HDF5 spectrogram cache: one ``{split}.h5`` per split, written safely, validated on read.

Contract (what the data-story notebook and training read):

- datasets ``spectrograms`` float32 ``[N, 64, T]`` (``[N, 2, 64, T]`` for a two-channel cache),
  ``labels`` int64 ``[N]`` (ids into ``classes``), ``n_frames`` int32 ``[N]`` (frames that are not
  padding), ``paths`` (source file, relative to the data folder) and ``checksums`` uint64 ``[N]``
  (one per row, see below);
- attributes ``n_samples``, ``n_mels``, ``max_time``, ``sample_rate``, ``clip_seconds``,
  ``split``, ``classes``, every feature parameter, ``channels``, ``n_channels``, ``fingerprint``
  (of the source files and of the entries that could not be used), ``source`` (provenance JSON),
  ``n_invalid``, ``checksum`` and ``format_version``.

Content integrity: each row's checksum is BLAKE2b-64 over its spectrogram bytes (float32 little
endian, C order), label (int64), n_frames (int32) and path (UTF-8); the ``checksum`` attribute is
``"blake2b64-rows:" + sha256(checksums)``. Both are written at build time.
:func:`verify_cache` reads a file once, in blocks, and raises :class:`CacheError` naming the file
(and the first bad row) when bytes are unreadable, a checksum differs, or a value is not finite;
it returns False for a file that records no checksums (e.g. one written by the reference tool:
its content cannot be verified, the caller decides). ``--skip-existing`` reuses a cache only
when it verifies and, under ``--invalid-audio error``, when it skipped no clip.

Writing goes to ``.{split}.h5.partial`` and is renamed into place only when complete. A killed
run resumes from the partial file: its rows are read back, checked against their checksums and
copied into a fresh file (an unreadable or inconsistent partial file is discarded with a message
and the split rebuilt). One ``preprocess`` at a time writes a cache folder: the lock file
``.preprocess.lock`` in it is held while a split is built; a second run prints that it waits
for the lock and goes on when the first is done. Skipped audio and unusable entries (see
:mod:`sleepsound.data.discover`) are listed with their reason in ``{split}.invalid.csv`` next to
the cache. Files are created with the mode the umask gives (``0o666 & ~umask``).
"""

from __future__ import annotations

import collections
import csv
import hashlib
import io
import itertools
import json
import multiprocessing as mp
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from filelock import FileLock, Timeout
from rich.markup import escape

from sleepsound import __version__
from sleepsound.atomic import atomic_write, default_file_mode
from sleepsound.data.audio import SPLITS, AudioError, Clip, n_channels_out, read_audio
from sleepsound.data.discover import find_clips, shown
from sleepsound.data.provenance import describe_source
from sleepsound.features.logmel import (
    CLIP_SECONDS,
    FEATURE_PARAMS,
    N_FRAMES,
    N_MELS,
    clip_log_mel,
)
from sleepsound.features.reference import is_reference_cache, normalise_attrs
from sleepsound.milestones import reached
from sleepsound.progress import console, progress_bar

FORMAT_VERSION = 2  # 2: per-row checksums
CHUNK_CLIPS = 32  # clips per worker task and per HDF5 append
IN_FLIGHT_PER_WORKER = 2  # chunks submitted ahead per worker (bounds memory)
VERIFY_BLOCK = 256  # rows per read when verifying or copying a cache
INVALID_POLICIES = ("skip", "error")
CHECKSUM_DATASET = "checksums"
CHECKSUM_PREFIX = "blake2b64-rows:"
ROW_DATASETS = ("spectrograms", "labels", "n_frames", "paths", CHECKSUM_DATASET)
INVALID_DATASETS = ("invalid_paths", "invalid_reasons")
LOCK_FILE = ".preprocess.lock"
SHOW_INVALID = 10  # skipped files named on the terminal (all are in invalid.csv)


DATASETS = ("spectrograms", "labels", "n_frames", "paths")  # what our caches hold


class CacheError(ValueError):
    """A cache file that is missing, incomplete or does not match what was asked for."""


@dataclass
class SplitResult:
    split: str
    path: Path
    n_clips: int
    n_invalid: int
    seconds: float
    reused: bool = False
    invalid: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def clips_per_second(self) -> float:
        return (self.n_clips + self.n_invalid) / self.seconds if self.seconds > 0 else 0.0


# ----------------------------------------------------------------------------- fingerprints


def file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def digest_clips(clips: Sequence[Clip]) -> tuple[list[Clip], list[str], list[AudioError]]:
    """(clips whose bytes could be read, their content digests, the others as 'unreadable')."""
    kept, digests, bad = [], [], []
    for clip in clips:
        try:
            digests.append(file_digest(clip.path))
            kept.append(clip)
        except OSError as exc:
            bad.append(AudioError(shown(clip.path), "unreadable", exc.strerror or str(exc)))
    return kept, digests, bad


def fingerprint_clips(
    clips: Sequence[Clip],
    root: Path,
    digests: Sequence[str] | None = None,
    unusable: Sequence[AudioError] = (),
) -> str:
    """sha256 over (relative path, label, content digest) of every clip, in order, then over
    (path, reason) of every entry that could not be used (so a change of either is seen)."""
    h = hashlib.sha256()
    for k, clip in enumerate(clips):
        rel = clip.path.relative_to(root).as_posix()
        digest = digests[k] if digests is not None else file_digest(clip.path)
        h.update(f"{rel}\0{clip.label}\0{digest}\n".encode())
    for err in unusable:
        h.update(f"!{_relative(err.path, root)}\0{err.reason}\n".encode())
    return h.hexdigest()


def expected_attrs(split: str, classes: Sequence[str], channels: str, fingerprint: str) -> dict:
    """The attributes a cache built from these inputs must carry (values compared on reuse)."""
    return {
        **FEATURE_PARAMS,
        "split": split,
        "classes": json.dumps(list(classes)),
        "channels": channels,
        "n_channels": n_channels_out(channels),
        "fingerprint": fingerprint,
        "format_version": FORMAT_VERSION,
    }


def _relative(path: str, root: Path) -> str:
    """A listed path relative to the data folder (as text; names may hold escapes)."""
    prefix = shown(root).rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path


# ----------------------------------------------------------------------------- checksums


def row_checksums(specs: np.ndarray, labels, n_frames, paths: Sequence[str]) -> np.ndarray:
    """uint64 [rows]: BLAKE2b-64 of each row's spectrogram bytes, label, n_frames and path."""
    specs = np.ascontiguousarray(specs, dtype="<f4")
    out = np.empty(len(specs), dtype=np.uint64)
    for i in range(len(specs)):
        h = hashlib.blake2b(specs[i].tobytes(), digest_size=8)
        h.update(int(labels[i]).to_bytes(8, "little", signed=True))
        h.update(int(n_frames[i]).to_bytes(4, "little", signed=True))
        h.update(paths[i].encode())
        out[i] = int.from_bytes(h.digest(), "little")
    return out


def checksum_attr(checksums: np.ndarray) -> str:
    """The file-level ``checksum`` attribute from the per-row checksums."""
    digest = hashlib.sha256(np.ascontiguousarray(checksums, dtype="<u8").tobytes()).hexdigest()
    return f"{CHECKSUM_PREFIX}{digest}"


def _blocks(path: Path, h5: h5py.File, stop: int, block: int) -> Iterator[dict]:
    """Rows [0, stop) in blocks of ``block`` rows, each checked: spectrograms finite and, when
    checksums are recorded, every row matching its checksum. Yields {dataset: values} for the
    row datasets present; raises CacheError naming the file at the first bad row."""
    names = [name for name in ROW_DATASETS if name in h5]
    has_sums = CHECKSUM_DATASET in h5
    for start in range(0, stop, block):
        end = min(stop, start + block)
        try:
            rows = {n: (h5[n].asstr() if n == "paths" else h5[n])[start:end] for n in names}
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise CacheError(f"{path}: rows {start}-{end - 1} are unreadable ({exc})") from exc
        specs = rows["spectrograms"]
        finite = np.isfinite(specs.reshape(len(specs), -1)).all(axis=1)
        if not finite.all():
            row = start + int(np.argmin(finite))
            raise CacheError(f"{path}: row {row}{_name(h5, row)} holds non-finite values")
        if has_sums:
            sums = row_checksums(specs, rows["labels"], rows["n_frames"], list(rows["paths"]))
            wrong = np.flatnonzero(sums != rows[CHECKSUM_DATASET])
            if len(wrong):
                row = start + int(wrong[0])
                raise CacheError(
                    f"{path}: row {row}{_name(h5, row)} does not match its checksum "
                    "(the file is corrupted; rebuild it with `sleepsound preprocess`)"
                )
        yield rows


def _name(h5: h5py.File, row: int) -> str:
    try:
        return f" ({h5['paths'].asstr()[row]})"
    except Exception:  # the path itself may be what is damaged
        return ""


def open_h5(path: Path) -> h5py.File:
    """``path`` opened read-only; CacheError naming it when it is not a readable HDF5 file."""
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise CacheError(f"{path}: not a readable HDF5 file ({exc})") from exc


def verify_cache(path: Path | str, block: int = VERIFY_BLOCK) -> bool:
    """Check a cache file's content, reading every row once (memory: ``block`` rows).

    Raises CacheError naming the file (and the first bad row) when bytes are unreadable, a row
    differs from its recorded checksum, the checksums disagree with the ``checksum`` attribute,
    or a spectrogram value is not finite. Returns True when checksums are recorded and all
    match; False when the file records none (written by another tool, e.g. the reference one:
    non-finite values are still refused, but the content cannot be verified - the caller
    decides). Call it once per cache file before trusting its rows (``--skip-existing`` does;
    the training data path does when it builds its compact store).
    """
    path = Path(path)
    with open_h5(path) as h5:
        try:
            attrs = read_attrs(h5)
            if "spectrograms" not in h5:
                raise CacheError(f"{path}: dataset 'spectrograms' missing")
            n = h5["spectrograms"].shape[0]
            recorded = CHECKSUM_DATASET in h5 or "checksum" in attrs
            if recorded and (CHECKSUM_DATASET not in h5 or "checksum" not in attrs):
                raise CacheError(f"{path}: checksums incomplete (dataset or attribute missing)")
            if recorded and h5[CHECKSUM_DATASET].shape != (n,):
                raise CacheError(f"{path}: {h5[CHECKSUM_DATASET].shape[0]} checksums for {n} rows")
            sums = [rows.get(CHECKSUM_DATASET) for rows in _blocks(path, h5, n, block)]
            sums = [s for s in sums if s is not None]
            stored = np.concatenate(sums) if sums else np.zeros(0, np.uint64)
        except (OSError, KeyError, ValueError) as exc:
            if isinstance(exc, CacheError):
                raise
            raise CacheError(f"{path}: unreadable ({exc})") from exc
    if recorded and checksum_attr(stored) != attrs["checksum"]:
        raise CacheError(f"{path}: the checksums do not match the 'checksum' attribute")
    return recorded


# ----------------------------------------------------------------------------- reading


@dataclass
class CacheInfo:
    path: Path
    n_samples: int
    classes: tuple[str, ...]
    n_channels: int
    max_time: int
    attrs: dict

    @property
    def source(self) -> dict:
        return json.loads(self.attrs.get("source", "{}"))


def _attr(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_attrs(h5: h5py.File) -> dict:
    return {k: _attr(v) for k, v in h5.attrs.items()}


def validate_cache(path: Path | str, expect: dict | None = None) -> CacheInfo:
    """Open a cache file and check it against the contract (and ``expect`` attrs); raise
    CacheError naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CacheError(f"{path}: cache file not found (run `sleepsound preprocess` first)")
    with open_h5(path) as h5:
        try:
            attrs = read_attrs(h5)
            if is_reference_cache(h5):  # the reference tool's own format: read as it is
                try:
                    attrs = normalise_attrs(path, attrs)
                except ValueError as exc:
                    raise CacheError(str(exc)) from None
            for name in ("spectrograms", "labels") if is_reference_cache(h5) else DATASETS:
                if name not in h5:
                    raise CacheError(f"{path}: dataset {name!r} missing")
            specs, labels = h5["spectrograms"], h5["labels"]
            for key in ("n_samples", "n_mels", "max_time", "sample_rate", "classes", "split"):
                if key not in attrs:
                    raise CacheError(f"{path}: attribute {key!r} missing")
            n = int(attrs["n_samples"])
            n_channels = int(attrs.get("n_channels", 1))
            want_shape = (n, N_MELS, int(attrs["max_time"]))
            if n_channels > 1:
                want_shape = (n, n_channels, N_MELS, int(attrs["max_time"]))
            if specs.shape != want_shape or specs.dtype != np.float32:
                raise CacheError(
                    f"{path}: spectrograms are {specs.dtype}{list(specs.shape)}, "
                    f"the attributes promise float32{list(want_shape)}"
                )
            if labels.shape != (n,) or h5.get("n_frames", labels).shape != (n,):
                raise CacheError(f"{path}: labels/n_frames length differs from n_samples={n}")
            if int(attrs["n_mels"]) != N_MELS:
                raise CacheError(f"{path}: n_mels={attrs['n_mels']}, expected {N_MELS}")
            classes = tuple(json.loads(attrs["classes"]))
            if n and (labels[:].min() < 0 or labels[:].max() >= len(classes)):
                raise CacheError(f"{path}: labels outside 0..{len(classes) - 1}")
            for key, want in (expect or {}).items():
                if key not in attrs or attrs[key] != want:
                    raise CacheError(
                        f"{path}: attribute {key!r} is {attrs.get(key)!r}, expected {want!r}"
                    )
        except CacheError:
            raise
        except (OSError, KeyError, TypeError, ValueError) as exc:  # damaged metadata
            raise CacheError(f"{path}: unreadable cache ({type(exc).__name__}: {exc})") from exc
    return CacheInfo(path, n, classes, n_channels, int(attrs["max_time"]), attrs)


# ----------------------------------------------------------------------------- computing


def _features(chunk: list[tuple[str, str]], channels: str) -> list:
    """Worker: read and featurise a chunk of (path, policy); returns per clip either
    (spec [C, 64, T] float32, n_frames) or an AudioError."""
    audio, out = [], []
    for path, _ in chunk:
        try:
            audio.append(read_audio(path, channels, max_seconds=CLIP_SECONDS))
            out.append(None)
        except AudioError as err:
            out.append(err)
    if audio:
        n_ch = audio[0].shape[0]
        flat = [a[c] for a in audio for c in range(n_ch)]
        del audio
        specs, n_frames = clip_log_mel(flat)
        specs = specs.reshape(-1, n_ch, N_MELS, N_FRAMES)
        n_frames = n_frames.reshape(-1, n_ch)[:, 0]
        good = iter(zip(specs, n_frames, strict=True))
        out = [o if isinstance(o, AudioError) else next(good) for o in out]
    return out


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _work(args: tuple[list[tuple[str, str]], str]) -> list:
    return _features(*args)


def worker_pool(workers: int):
    """A pool of feature workers (None for in-process work). Spawned, not forked: forking
    after torch has started its threads can deadlock."""
    if workers <= 1:
        return None
    return mp.get_context("spawn").Pool(workers, initializer=_init_worker)


def compute_chunks(clips: Sequence[Clip], channels: str, pool=None) -> Iterator[list]:
    """Featurise clips in chunks, in order, in ``pool`` (or here when it is None).

    At most ``IN_FLIGHT_PER_WORKER`` chunks per worker are submitted ahead of the one being
    consumed, so memory stays bounded however many clips there are and however slowly the
    consumer writes."""

    def task(i: int):
        return ([(str(c.path), channels) for c in clips[i : i + CHUNK_CLIPS]], channels)

    starts = range(0, len(clips), CHUNK_CLIPS)
    if pool is None:
        for i in starts:
            yield _work(task(i))
        return
    ahead = IN_FLIGHT_PER_WORKER * getattr(pool, "_processes", 1)
    pending: collections.deque = collections.deque()
    todo = iter(starts)
    for i in itertools.islice(todo, ahead):
        pending.append(pool.apply_async(_work, (task(i),)))
    while pending:
        result = pending.popleft().get()
        for i in itertools.islice(todo, 1):
            pending.append(pool.apply_async(_work, (task(i),)))
        yield result


# ----------------------------------------------------------------------------- writing


class _Discard(Exception):
    """A partial file that cannot be resumed (the message says why)."""


def _note(message: str) -> None:
    """A status line on stderr, never wrapped (paths stay whole) nor read as markup."""
    console.print(escape(message), highlight=False, soft_wrap=True)


def _create_partial(path: Path, attrs: dict, n_channels: int) -> h5py.File:
    h5 = h5py.File(path, "w")
    spec_shape = (N_MELS, N_FRAMES) if n_channels == 1 else (n_channels, N_MELS, N_FRAMES)
    h5.create_dataset(
        "spectrograms",
        shape=(0, *spec_shape),
        maxshape=(None, *spec_shape),
        dtype=np.float32,
        chunks=(16, *spec_shape),
        compression="lzf",
    )
    h5.create_dataset("labels", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(4096,))
    h5.create_dataset("n_frames", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(4096,))
    h5.create_dataset(
        CHECKSUM_DATASET, shape=(0,), maxshape=(None,), dtype=np.uint64, chunks=(4096,)
    )
    text = h5py.string_dtype()
    for name in ("paths", *INVALID_DATASETS):
        h5.create_dataset(name, shape=(0,), maxshape=(None,), dtype=text, chunks=(1024,))
    h5.attrs.update(attrs)
    h5.attrs.update({"n_done": 0, "n_written": 0, "n_invalid": 0})
    h5.flush()
    return h5


def _open_partial(partial: Path, attrs: dict, n_channels: int) -> tuple[h5py.File, int]:
    """Resume from the partial file a killed run left, or start a new one; returns (the file,
    open for appending; clips already processed).

    The old partial file is only ever read: its rows are checked against their checksums and
    copied into a fresh file that then replaces it, so HDF5 structures a kill left half-written
    are never written to again. A partial file that cannot be read, was built from other inputs
    or fails a check is discarded with a message, and the split starts again.
    """
    fresh = partial.with_name(partial.name + ".new")
    fresh.unlink(missing_ok=True)  # a run killed while copying left it
    if partial.exists():
        try:
            h5, n_done = _copy_partial(partial, fresh, attrs, n_channels)
            os.replace(fresh, partial)  # h5 stays open on the renamed file
            return h5, n_done
        except (_Discard, CacheError, OSError, KeyError, ValueError) as why:
            _note(f"discarding {partial} left by an interrupted run: {why}; starting again")
            fresh.unlink(missing_ok=True)
            partial.unlink()
    return _create_partial(partial, attrs, n_channels), 0


def _copy_partial(
    partial: Path, fresh: Path, attrs: dict, n_channels: int
) -> tuple[h5py.File, int]:
    with h5py.File(partial, "r") as old:
        have = read_attrs(old)
        if "n_done" not in have or any(have.get(k) != v for k, v in attrs.items()):
            raise _Discard("it was built from other inputs or settings")
        n_done, n_written, n_invalid = (int(have[k]) for k in ("n_done", "n_written", "n_invalid"))
        for name in ROW_DATASETS:
            if old[name].shape[0] < n_written:
                raise _Discard(f"dataset {name!r} is shorter than the {n_written} rows recorded")
        for name in INVALID_DATASETS:
            if old[name].shape[0] < n_invalid:
                raise _Discard(f"dataset {name!r} is shorter than recorded")
        invalid = {name: old[name].asstr()[:n_invalid] for name in INVALID_DATASETS}
        h5 = _create_partial(fresh, attrs, n_channels)
        try:
            for block in _blocks(partial, old, n_written, VERIFY_BLOCK):
                for name in ROW_DATASETS:
                    _append(h5, name, block[name])
            for name, values in invalid.items():
                _append(h5, name, list(values))
            h5.attrs.update({"n_done": n_done, "n_written": n_written, "n_invalid": n_invalid})
            h5.flush()
        except BaseException:
            h5.close()
            raise
    return h5, n_done


def _append(h5: h5py.File, name: str, values: Sequence | np.ndarray) -> None:
    ds = h5[name]
    n = ds.shape[0]
    ds.resize(n + len(values), axis=0)
    ds[n:] = values


def _write_invalid_report(path: Path, rows: list[tuple[str, str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["path", "reason", "detail"])
    writer.writerows(rows)
    atomic_write(path, buf.getvalue())


def _cache_lock(cache_dir: Path) -> FileLock:
    """The cache folder's lock, acquired; waits (saying so) while another run holds it."""
    path = cache_dir / LOCK_FILE
    lock = FileLock(str(path), mode=default_file_mode())
    try:
        lock.acquire(timeout=0)
    except Timeout:
        _note(f"{path}: another `sleepsound preprocess` is writing {cache_dir}; waiting for it")
        lock.acquire()
        _note(f"{path}: acquired, going on")
    return lock


def build_split(
    data_dir: Path,
    cache_dir: Path,
    split: str,
    classes: Sequence[str],
    channels: str = "mean",
    pool=None,
    skip_existing: bool = False,
    invalid_audio: str = "skip",
    progress: bool = True,
) -> SplitResult:
    """Build (or reuse) ``cache_dir/{split}.h5`` from ``data_dir/{split}``, holding the cache
    folder's lock. Raises CacheError/AudioError/DatasetLayoutError (ValueErrors naming the file)."""
    if invalid_audio not in INVALID_POLICIES:
        raise ValueError(f"invalid_audio must be one of {INVALID_POLICIES}, got {invalid_audio!r}")
    if split not in SPLITS:  # a split name is also a file name in the cache folder
        raise ValueError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    data_dir, cache_dir = Path(data_dir), Path(cache_dir)
    if not Path(data_dir, split).is_dir():  # before creating the cache folder
        find_clips(data_dir, split, classes)
    cache_dir.mkdir(parents=True, exist_ok=True)
    lock = _cache_lock(cache_dir)
    try:
        return _build_locked(
            data_dir, cache_dir, split, classes, channels, pool, skip_existing, invalid_audio,
            progress,
        )  # fmt: skip
    finally:
        lock.release()


def _build_locked(
    data_dir, cache_dir, split, classes, channels, pool, skip_existing, invalid_audio, progress
) -> SplitResult:
    t0 = time.perf_counter()
    clips, unusable = find_clips(data_dir, split, classes)
    clips, digests, unreadable = digest_clips(clips)
    unusable = sorted([*unusable, *unreadable], key=lambda e: e.path)
    if unusable and invalid_audio == "error":
        raise unusable[0]
    if not clips:
        raise CacheError(
            f"{shown(data_dir / split)}: no usable audio files of classes {list(classes)}"
            + (f" ({len(unusable)} unusable entries)" if unusable else "")
        )
    fingerprint = fingerprint_clips(clips, data_dir, digests, unusable)
    del digests
    attrs = expected_attrs(split, classes, channels, fingerprint)
    final = cache_dir / f"{split}.h5"
    if skip_existing and final.exists():
        reused = _reusable(final, attrs, invalid_audio)
        if reused is not None:
            return SplitResult(
                split, final, reused.n_samples, int(reused.attrs.get("n_invalid", 0)),
                time.perf_counter() - t0, reused=True,
            )  # fmt: skip
    partial = cache_dir / f".{split}.h5.partial"
    attrs["source"] = json.dumps(describe_source(data_dir, fingerprint), sort_keys=True)
    h5, n_done = _open_partial(partial, attrs, n_channels_out(channels))
    if n_done:
        _note(f"{split}: resuming at clip {n_done} of {len(clips)} from {partial}")
    try:
        todo = clips[n_done:]
        with progress_bar(f"{split}", total=len(clips), enabled=progress) as advance:
            advance(n_done)
            for k, results in enumerate(compute_chunks(todo, channels, pool), start=1):
                chunk = todo[(k - 1) * CHUNK_CLIPS : k * CHUNK_CLIPS]
                _store_chunk(h5, chunk, results, data_dir, invalid_audio)
                h5.attrs["n_done"] = int(h5.attrs["n_done"]) + len(chunk)
                h5.flush()
                advance(len(chunk))
                reached("cache.chunk_written", split=split, chunk=k)
        n_written, invalid = _finish(h5, data_dir, split, unusable)
    except BaseException as exc:
        h5.close()
        if invalid_audio == "error":
            partial.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # HDF5 errors name no file
            raise CacheError(f"{partial}: writing the cache failed ({exc})") from exc
        raise
    h5.close()
    reached("cache.split_finished", split=split)
    _write_invalid_report(cache_dir / f"{split}.invalid.csv", invalid)
    os.replace(partial, final)
    return SplitResult(
        split, final, n_written, len(invalid),
        time.perf_counter() - t0, invalid=invalid,
    )  # fmt: skip


def _reusable(final: Path, attrs: dict, invalid_audio: str) -> CacheInfo | None:
    """The existing cache's info if ``--skip-existing`` may reuse it, else None (and why)."""
    try:
        info = validate_cache(final, expect=attrs)
        if not verify_cache(final):
            raise CacheError(f"{final}: records no checksums, its content cannot be verified")
        if invalid_audio == "error" and int(info.attrs.get("n_invalid", 0)):
            raise CacheError(
                f"{final}: built skipping {info.attrs['n_invalid']} invalid clips "
                "(see its invalid.csv), but --invalid-audio error was asked"
            )
        return info
    except CacheError as err:
        _note(f"rebuilding {final}: {err}")
        return None


def _finish(
    h5: h5py.File, data_dir: Path, split: str, unusable: list[AudioError]
) -> tuple[int, list[tuple[str, str, str]]]:
    """Final attributes of a complete partial file; returns (rows, invalid rows by path)."""
    n_written = int(h5.attrs["n_written"])
    invalid = [
        (path, *reason.split("\t", 1))
        for path, reason in zip(
            h5["invalid_paths"].asstr()[:], h5["invalid_reasons"].asstr()[:], strict=True
        )
    ]
    invalid += [(_relative(e.path, data_dir), e.reason, e.detail) for e in unusable]
    invalid.sort()
    if n_written == 0:
        raise CacheError(
            f"{shown(data_dir / split)}: every clip was invalid ({len(invalid)}); "
            "the split is empty"
        )
    h5.attrs["n_samples"] = n_written
    h5.attrs["n_invalid"] = len(invalid)
    h5.attrs["checksum"] = checksum_attr(h5[CHECKSUM_DATASET][:n_written])
    h5.attrs["sleepsound_version"] = __version__
    h5.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for key in ("n_done", "n_written"):
        del h5.attrs[key]
    return n_written, invalid


def _store_chunk(h5, chunk: Sequence[Clip], results: list, data_dir: Path, policy: str) -> None:
    results = [_finite(c, r) for c, r in zip(chunk, results, strict=True)]
    good = [(c, r) for c, r in zip(chunk, results, strict=True) if not isinstance(r, AudioError)]
    bad = [r for r in results if isinstance(r, AudioError)]
    if bad and policy == "error":
        raise bad[0]
    if good:
        specs = np.stack([r[0][0] if r[0].shape[0] == 1 else r[0] for _, r in good])
        labels = np.array([c.class_id for c, _ in good], dtype=np.int64)
        n_frames = np.array([r[1] for _, r in good], dtype=np.int32)
        paths = [c.path.relative_to(data_dir).as_posix() for c, _ in good]
        _append(h5, "spectrograms", specs)
        _append(h5, "labels", labels)
        _append(h5, "n_frames", n_frames)
        _append(h5, "paths", paths)
        _append(h5, CHECKSUM_DATASET, row_checksums(specs, labels, n_frames, paths))
    if bad:
        _append(h5, "invalid_paths", [_relative(e.path, data_dir) for e in bad])
        _append(h5, "invalid_reasons", [f"{e.reason}\t{e.detail}" for e in bad])
    h5.attrs["n_written"] = int(h5.attrs["n_written"]) + len(good)
    h5.attrs["n_invalid"] = int(h5.attrs["n_invalid"]) + len(bad)


def _finite(clip: Clip, result):
    """A featurised clip, or an AudioError when its features are not finite."""
    if isinstance(result, AudioError) or np.isfinite(result[0]).all():
        return result
    return AudioError(shown(clip.path), "non_finite", "features hold non-finite values")


def preprocess(config) -> list[SplitResult]:
    """Build the cache for every split of a :class:`sleepsound.config.PreprocessConfig`."""
    results = []
    pool = worker_pool(config.workers)
    try:
        for split in config.splits:
            results.append(_preprocess_split(config, split, pool))
    finally:
        if pool is not None:
            pool.terminate()
    return results


def _preprocess_split(config, split: str, pool) -> SplitResult:
    result = build_split(
        config.data_dir,
        config.cache_dir,
        split,
        config.classes,
        channels=config.channels,
        pool=pool,
        skip_existing=config.skip_existing,
        invalid_audio=config.invalid_audio,
    )
    if result.reused:
        _note(f"{split}: reused valid cache {result.path} ({result.n_clips} clips)")
    else:
        _note(
            f"{split}: {result.n_clips} clips, {result.n_invalid} skipped as invalid, "
            f"{result.seconds:.1f} s, {result.clips_per_second:.0f} clips/s -> {result.path}"
        )
        for path, reason, detail in result.invalid[:SHOW_INVALID]:
            _note(f"  skipped {path}: {reason} {' '.join(detail.split())[:200]}")
        if result.n_invalid > SHOW_INVALID:
            report = result.path.with_name(f"{split}.invalid.csv")
            _note(f"  ... and {result.n_invalid - SHOW_INVALID} more, all listed in {report}")
    return result
