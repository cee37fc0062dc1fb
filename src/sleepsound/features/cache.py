"""The HDF5 spectrogram cache: one ``{split}.h5`` per split, written safely, validated on read.

Contract (what the data-story notebook and training read):

- datasets ``spectrograms`` float32 ``[N, 64, T]`` (``[N, 2, 64, T]`` for a two-channel cache),
  ``labels`` int64 ``[N]`` (ids into ``classes``), ``n_frames`` int32 ``[N]`` (frames that are not
  padding) and ``paths`` (source file, relative to the data folder);
- attributes ``n_samples``, ``n_mels``, ``max_time``, ``sample_rate``, ``clip_seconds``,
  ``split``, ``classes``, every feature parameter, ``channels``, ``n_channels``, ``fingerprint``
  (of the source files), ``source`` (provenance JSON), ``n_invalid`` and ``format_version``.

Writing goes to ``.{split}.h5.partial`` and is renamed into place only when complete; a killed
run resumes from the partial file (or restarts if it is unreadable). Skipped audio is listed with
its reason in ``{split}.invalid.csv`` next to the cache.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import multiprocessing as mp
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from sleepsound import __version__
from sleepsound.atomic import atomic_write
from sleepsound.data.audio import AudioError, Clip, n_channels_out, read_audio, scan_split
from sleepsound.data.provenance import describe_source
from sleepsound.features.logmel import FEATURE_PARAMS, N_FRAMES, N_MELS, clip_log_mel
from sleepsound.milestones import reached
from sleepsound.progress import progress_bar, say

FORMAT_VERSION = 1
CHUNK_CLIPS = 32  # clips per worker task and per HDF5 append
INVALID_POLICIES = ("skip", "error")


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


def fingerprint_clips(clips: Sequence[Clip], root: Path) -> str:
    """sha256 over (relative path, label, content digest) of every clip, in order."""
    h = hashlib.sha256()
    for clip in clips:
        rel = clip.path.relative_to(root).as_posix()
        h.update(f"{rel}\0{clip.label}\0{file_digest(clip.path)}\n".encode())
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
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise CacheError(f"{path}: not a readable HDF5 file ({exc})") from exc
    with h5:
        attrs = read_attrs(h5)
        for name in ("spectrograms", "labels", "n_frames", "paths"):
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
        if labels.shape != (n,) or h5["n_frames"].shape != (n,):
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
    return CacheInfo(path, n, classes, n_channels, int(attrs["max_time"]), attrs)


# ----------------------------------------------------------------------------- computing


def _features(chunk: list[tuple[str, str]], channels: str) -> list:
    """Worker: read and featurise a chunk of (path, policy); returns per clip either
    (spec [C, 64, T] float32, n_frames) or an AudioError."""
    audio, out = [], []
    for path, _ in chunk:
        try:
            audio.append(read_audio(path, channels))
            out.append(None)
        except AudioError as err:
            out.append(err)
    if audio:
        n_ch = audio[0].shape[0]
        flat = [a[c] for a in audio for c in range(n_ch)]
        specs, n_frames = clip_log_mel(flat)
        specs = specs.reshape(len(audio), n_ch, N_MELS, N_FRAMES)
        n_frames = n_frames.reshape(len(audio), n_ch)[:, 0]
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
    """Featurise clips in chunks, in order, in ``pool`` (or here when it is None)."""
    tasks = [
        ([(str(c.path), channels) for c in clips[i : i + CHUNK_CLIPS]], channels)
        for i in range(0, len(clips), CHUNK_CLIPS)
    ]
    if pool is None:
        yield from map(_work, tasks)
    else:
        yield from pool.imap(_work, tasks)


# ----------------------------------------------------------------------------- writing


def _open_partial(partial: Path, attrs: dict, n_channels: int) -> tuple[h5py.File, int]:
    """Open (resume) or create the partial file; returns (file, clips already processed)."""
    if partial.exists():
        try:
            h5 = h5py.File(partial, "a")
            have = read_attrs(h5)
            if all(have.get(k) == v for k, v in attrs.items()) and "n_done" in have:
                n_done, n_written = int(have["n_done"]), int(have["n_written"])
                for name in ("spectrograms", "labels", "n_frames", "paths"):
                    h5[name].resize(n_written, axis=0)
                for name in ("invalid_paths", "invalid_reasons"):
                    h5[name].resize(int(have["n_invalid"]), axis=0)
                return h5, n_done
            h5.close()
        except Exception:
            pass  # unreadable after a kill: start again
        partial.unlink()
    h5 = h5py.File(partial, "w")
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
    text = h5py.string_dtype()
    for name in ("paths", "invalid_paths", "invalid_reasons"):
        h5.create_dataset(name, shape=(0,), maxshape=(None,), dtype=text, chunks=(1024,))
    h5.attrs.update(attrs)
    h5.attrs.update({"n_done": 0, "n_written": 0, "n_invalid": 0})
    h5.flush()
    return h5, 0


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
    """Build (or reuse) ``cache_dir/{split}.h5`` from ``data_dir/{split}``."""
    if invalid_audio not in INVALID_POLICIES:
        raise ValueError(f"invalid_audio must be one of {INVALID_POLICIES}, got {invalid_audio!r}")
    t0 = time.perf_counter()
    data_dir, cache_dir = Path(data_dir), Path(cache_dir)
    clips = scan_split(data_dir, split, classes)
    if not clips:
        raise CacheError(f"{data_dir / split}: no audio files of classes {list(classes)}")
    fingerprint = fingerprint_clips(clips, data_dir)
    attrs = expected_attrs(split, classes, channels, fingerprint)
    final = cache_dir / f"{split}.h5"
    if skip_existing and final.exists():
        try:
            info = validate_cache(final, expect=attrs)
            return SplitResult(
                split,
                final,
                info.n_samples,
                int(info.attrs.get("n_invalid", 0)),
                time.perf_counter() - t0,
                reused=True,
            )
        except CacheError as err:
            print(f"rebuilding {final}: {err}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cache_dir / f".{split}.h5.partial"
    attrs["source"] = json.dumps(describe_source(data_dir, fingerprint), sort_keys=True)
    h5, n_done = _open_partial(partial, attrs, n_channels_out(channels))
    if n_done:
        print(f"{split}: resuming at clip {n_done} of {len(clips)} from {partial}")
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
        n_written = int(h5.attrs["n_written"])
        invalid = [
            (path, *reason.split("\t", 1))
            for path, reason in zip(
                h5["invalid_paths"].asstr()[:], h5["invalid_reasons"].asstr()[:], strict=True
            )
        ]
        if n_written == 0:
            raise CacheError(
                f"{data_dir / split}: every clip was invalid ({len(invalid)}); the split is empty"
            )
        h5.attrs["n_samples"] = n_written
        h5.attrs["sleepsound_version"] = __version__
        h5.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        for key in ("n_done", "n_written"):
            del h5.attrs[key]
    except BaseException:
        h5.close()
        if invalid_audio == "error":
            partial.unlink(missing_ok=True)
        raise
    h5.close()
    report = cache_dir / f"{split}.invalid.csv"
    _write_invalid_report(report, invalid)
    os.replace(partial, final)
    return SplitResult(
        split, final, n_written, len(invalid), time.perf_counter() - t0, invalid=invalid
    )


def _store_chunk(h5, chunk: Sequence[Clip], results: list, data_dir: Path, policy: str) -> None:
    good = [(c, r) for c, r in zip(chunk, results, strict=True) if not isinstance(r, AudioError)]
    bad = [r for r in results if isinstance(r, AudioError)]
    if bad and policy == "error":
        raise bad[0]
    if good:
        _append(
            h5, "spectrograms", np.stack([r[0][0] if r[0].shape[0] == 1 else r[0] for _, r in good])
        )
        _append(h5, "labels", np.array([c.class_id for c, _ in good], dtype=np.int64))
        _append(h5, "n_frames", np.array([r[1] for _, r in good], dtype=np.int32))
        _append(h5, "paths", [c.path.relative_to(data_dir).as_posix() for c, _ in good])
    if bad:
        _append(h5, "invalid_paths", [Path(e.path).relative_to(data_dir).as_posix() for e in bad])
        _append(h5, "invalid_reasons", [f"{e.reason}\t{e.detail}" for e in bad])
    h5.attrs["n_written"] = int(h5.attrs["n_written"]) + len(good)
    h5.attrs["n_invalid"] = int(h5.attrs["n_invalid"]) + len(bad)


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
        say(f"{split}: reused valid cache {result.path} ({result.n_clips} clips)")
    else:
        say(
            f"{split}: {result.n_clips} clips, {result.n_invalid} skipped as invalid, "
            f"{result.seconds:.1f} s, {result.clips_per_second:.0f} clips/s -> {result.path}"
        )
        for path, reason, detail in result.invalid[:10]:
            say(f"  skipped {path}: {reason} {detail}")
    return result
