"""The compact form of a cache split: each clip's content frames only, built once and reused.

A cache row is 501 frames, most of them padding at the clip's dB floor when clips last ~1 s.
The compact store keeps, per clip, the frames before its trailing floor (its *content*), as
int16 in 1/400 dB (error <= 0.00125 dB; float32 when a value lies outside int16's range), plus
the clip's floor value. Any input length is rebuilt exactly from it: stored frames first, then
the floor. ::

    <store>/frames.bin   [total frames, C, 64] raw, C order (always memory-mapped)
    <store>/index.npz    offsets [N+1], stored [N], n_frames [N], floor_q [N], labels [N]
    <store>/meta.json    the cache's identity, fingerprint, dtype, whole-split dB statistics

Before it is built, the cache's rows are checked against their recorded checksums
(:func:`~sleepsound.features.cache.verify_cache`; files of other tools record none); the build
is one pass of block reads (memory bounded by ``memory_limit``), checking every value is
finite, and records the whole split's mean/std of dB values over real
frames, so input scaling never depends on storage order or on a block. Written to a temporary
folder and renamed when complete; concurrent builders of one store wait on a lock.

Caches without ``n_frames`` (the reference benchmark's own format) get their real frames from
the padding floor, and their fingerprint from the content (labels and spectrogram bytes).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from filelock import FileLock

from sleepsound.features.cache import (
    CHECKSUM_DATASET,
    CacheError,
    CacheInfo,
    validate_cache,
    verify_cache,
)
from sleepsound.progress import progress_bar, say

FORMAT_VERSION = 1
Q_PER_DB = 400.0  # int16 steps per dB: -80 dB -> -32000
INT16_LIMIT_DB = 32767 / Q_PER_DB
FRAMES_FILE = "frames.bin"
INDEX_FILE = "index.npz"
META_FILE = "meta.json"
STORE_SUBDIR = "compact"  # <cache folder>/compact/<split>-<identity>/
MIN_BLOCK_ROWS = 8
MAX_BLOCK_ROWS = 4096


@dataclass
class CompactStore:
    """An opened store; ``frames`` is a copy-on-write np.memmap (never written)."""

    path: Path
    info: CacheInfo
    frames: np.ndarray  # [total, C, 64] np.memmap, int16 (units 1/Q_PER_DB dB) or float32
    offsets: np.ndarray  # [N+1] int64
    stored: np.ndarray  # [N] int32 frames kept per clip (>= 1)
    n_frames: np.ndarray  # [N] int32 real frames (from the cache, or recovered)
    floor_q: np.ndarray  # [N] float32 the clip's floor in the frames' units
    labels: np.ndarray  # [N] int64
    meta: dict

    @property
    def quantized(self) -> bool:
        return self.frames.dtype == np.int16

    @property
    def units_per_db(self) -> float:
        return Q_PER_DB if self.quantized else 1.0

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    @property
    def nbytes(self) -> int:
        return int(self.frames.nbytes)

    def db_stats(self) -> tuple[float, float]:
        """(mean, std) of dB values over real frames of every clip."""
        s = self.meta["stats"]
        mean = s["sum"] / max(s["count"], 1)
        var = max(s["sumsq"] / max(s["count"], 1) - mean * mean, 0.0)
        return mean, float(np.sqrt(var))

    def clip_db(self, i: int, length: int) -> np.ndarray:
        """Clip ``i`` as dB [C, 64, length], rebuilt exactly from the store (for tests/tools)."""
        keep = min(length, int(self.stored[i]))
        rows = np.asarray(self.frames[self.offsets[i] : self.offsets[i] + keep], dtype=np.float32)
        out = np.full((length, *self.frames.shape[1:]), self.floor_q[i], dtype=np.float32)
        out[:keep] = rows
        return np.moveaxis(out, 0, -1) / self.units_per_db


# ----------------------------------------------------------------------------- per clip


def content_frames(spec: np.ndarray) -> tuple[int, float]:
    """(frames before the trailing floor, floor value) of one clip [C, 64, T] in dB.

    The floor is the clip's smallest value: zero padding lands exactly on it (power_to_db
    clips everything TOP_DB below the clip's maximum). At least one frame is kept."""
    content, floor = block_content(spec.reshape(1, -1, *spec.shape[-2:]))
    return int(content[0]), float(floor[0])


def block_content(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`content_frames` of every clip of a block [B, C, 64, T]."""
    floor = block.min(axis=(1, 2, 3))
    above = (block > floor[:, None, None, None]).any(axis=(1, 2))  # [B, T]
    last = above.shape[1] - np.argmax(above[:, ::-1], axis=1)
    return np.where(above.any(axis=1), last, 1), floor


# ----------------------------------------------------------------------------- locating


def cache_identity(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def store_path(cache_path: Path, store_root: Path | None = None) -> Path:
    """Where the store of ``cache_path`` lives: ``<cache folder>/compact/<stem>-<id>`` (or
    under ``store_root``); the id changes whenever the cache file does."""
    ident = json.dumps(cache_identity(cache_path), sort_keys=True).encode()
    name = f"{cache_path.stem}-{hashlib.sha256(ident).hexdigest()[:16]}"
    root = Path(store_root) if store_root else cache_path.parent / STORE_SUBDIR
    return root / name


def _writable_root(cache_path: Path, store_root: Path | None) -> Path | None:
    if store_root is not None:
        return Path(store_root)
    if os.access(cache_path.parent, os.W_OK):
        return None
    # a read-only cache folder (e.g. a shared dataset): keep stores in the user's cache
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sleepsound" / "compact"


# ----------------------------------------------------------------------------- building


def block_rows(row_bytes: int, memory_limit: int) -> int:
    """Rows per read while building: a block (float32 + working copies) within 1/8 of the
    limit."""
    return int(np.clip(memory_limit // (8 * max(row_bytes, 1)), MIN_BLOCK_ROWS, MAX_BLOCK_ROWS))


def has_checksums(cache_path: Path) -> bool:
    with h5py.File(cache_path, "r") as h5:
        return CHECKSUM_DATASET in h5 or "checksum" in h5.attrs


def _fits_int16(lo: float, hi: float) -> bool:
    return -INT16_LIMIT_DB <= lo and hi <= INT16_LIMIT_DB


class _OutOfRange(Exception):
    """A value outside int16's dB range: the store is rebuilt as float32."""


def build_store(
    cache_path: Path,
    info: CacheInfo,
    out: Path,
    memory_limit: int,
    progress: bool = True,
    verified: bool = False,
) -> None:
    """One pass over the cache -> a complete store folder at ``out`` (atomic rename)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    t0 = time.perf_counter()
    try:
        with progress_bar(
            f"compact store {cache_path.name}", info.n_samples, enabled=progress, unit="clips"
        ) as advance:
            try:
                meta = _write_store(cache_path, info, tmp, memory_limit, np.int16, advance)
            except _OutOfRange:
                meta = _write_store(cache_path, info, tmp, memory_limit, np.float32, advance)
        meta["cache_checksums_verified"] = verified
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - t0
    if progress:
        say(
            f"compact store of {cache_path}: {info.n_samples:,} clips, "
            f"{meta['total_frames']:,} frames ({(out / FRAMES_FILE).stat().st_size / 1e6:,.1f} MB "
            f"{meta['dtype']}) in {seconds:.1f} s ({info.n_samples / max(seconds, 1e-9):,.0f} "
            f"clips/s) -> {out}"
        )


def _write_store(cache_path, info, tmp: Path, memory_limit: int, dtype, progress) -> dict:
    scale = Q_PER_DB if dtype == np.int16 else 1.0
    with h5py.File(cache_path, "r") as h5:
        specs, labels = h5["spectrograms"], h5["labels"][:].astype(np.int64)
        n = len(labels)
        cached_frames = h5["n_frames"][:].astype(np.int64) if "n_frames" in h5 else None
        row_shape = specs.shape[1:]
        n_ch = 1 if len(row_shape) == 2 else row_shape[0]
        rows_per = block_rows(int(np.prod(row_shape)) * 4, memory_limit)
        stored = np.zeros(n, np.int64)
        n_frames = np.zeros(n, np.int64)
        floor_q = np.zeros(n, np.float32)
        stats = {"sum": 0.0, "sumsq": 0.0, "count": 0}
        digest = hashlib.sha256(labels.tobytes())
        with open(tmp / FRAMES_FILE, "wb") as f:
            for start in range(0, n, rows_per):
                block = specs[start : start + rows_per]
                digest.update(np.ascontiguousarray(block).data)  # hashed without a copy
                finite = np.isfinite(block.reshape(len(block), -1)).all(axis=1)
                if not finite.all():
                    bad = start + int(np.flatnonzero(~finite)[0])
                    raise CacheError(f"{cache_path}: non-finite spectrogram values in row {bad}")
                if dtype == np.int16 and not _fits_int16(float(block.min()), float(block.max())):
                    raise _OutOfRange
                block = block.reshape(len(block), n_ch, *row_shape[-2:])
                sl = slice(start, start + len(block))
                content, floor = block_content(block)
                real = np.clip(content if cached_frames is None else cached_frames[sl], 1, None)
                real = np.minimum(real, block.shape[-1])
                keep = np.maximum(content, real)
                stored[sl], n_frames[sl] = keep, real
                floor_q[sl] = np.rint(floor * scale) if dtype == np.int16 else floor
                stored_block = np.rint(block * scale).astype(dtype) if scale != 1.0 else block
                for spec, q, k, r in zip(block, stored_block, keep, real, strict=True):
                    values = spec[..., :r]
                    stats["sum"] += float(values.sum(dtype=np.float64))
                    stats["sumsq"] += float(np.square(values, dtype=np.float64).sum())
                    stats["count"] += int(values.size)
                    f.write(np.ascontiguousarray(np.moveaxis(q[..., :k], -1, 0)).data)
                progress(len(block))
    offsets = np.concatenate([[0], np.cumsum(stored)]).astype(np.int64)
    np.savez(
        tmp / INDEX_FILE,
        offsets=offsets,
        stored=stored.astype(np.int32),
        n_frames=n_frames.astype(np.int32),
        floor_q=floor_q,
        labels=labels,
    )
    return {
        "format_version": FORMAT_VERSION,
        "cache": cache_identity(cache_path),
        "fingerprint": info.attrs.get("fingerprint") or f"content:{digest.hexdigest()}",
        "content_sha256": digest.hexdigest(),
        "dtype": np.dtype(dtype).name,
        "channels": n_ch,
        "n_mels": int(row_shape[-2]),
        "n_clips": n,
        "total_frames": int(offsets[-1]),
        "frames_recovered": cached_frames is None,
        "stats": stats,
    }


def _load(out: Path, info: CacheInfo) -> CompactStore:
    meta = json.loads((out / META_FILE).read_text())
    index = np.load(out / INDEX_FILE)
    shape = (meta["total_frames"], meta["channels"], meta["n_mels"])
    dtype = np.dtype(meta["dtype"])
    if shape[0] == 0:
        frames = np.zeros(shape, dtype)
    else:
        frames = np.memmap(out / FRAMES_FILE, dtype=dtype, mode="c", shape=shape)
    return CompactStore(
        out,
        info,
        frames,
        index["offsets"],
        index["stored"],
        index["n_frames"],
        index["floor_q"],
        index["labels"],
        meta,
    )


def _valid(out: Path, cache_path: Path) -> bool:
    try:
        meta = json.loads((out / META_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (
        meta.get("format_version") == FORMAT_VERSION
        and meta.get("cache") == cache_identity(cache_path)
        and (out / INDEX_FILE).is_file()
        and (out / FRAMES_FILE).is_file()
    )


def open_store(
    cache_path: Path | str,
    memory_limit: int,
    store_root: Path | None = None,
    expect: dict | None = None,
    progress: bool = True,
) -> CompactStore:
    """The compact store of a cache split, built on first use (validated cache, either
    format), its frames memory-mapped (file-backed pages the kernel can always reclaim);
    ``memory_limit`` bounds the build's blocks."""
    cache_path = Path(cache_path)
    info = validate_cache(cache_path, expect)
    root = _writable_root(cache_path, store_root)
    out = store_path(cache_path, root)
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if not _valid(out, cache_path):
            shutil.rmtree(out, ignore_errors=True)
            for stale in out.parent.glob(f".{out.name}.*.tmp"):
                shutil.rmtree(stale, ignore_errors=True)  # left by a killed builder
            # every row against its checksum; a file without checksums (the reference tool's)
            # is not read twice: the build itself refuses non-finite rows
            verified = has_checksums(cache_path) and verify_cache(cache_path)
            build_store(cache_path, info, out, memory_limit, progress, verified)
    store = _load(out, info)
    if info.attrs.get("fingerprint") is None:
        info.attrs["fingerprint"] = store.fingerprint
    return store
