"""Caches written by the reference benchmark's own ``scripts/preprocess.py``: first-class input.

That tool writes datasets ``spectrograms`` float32 [N, 64, 501] and ``labels``, and attributes
``n_samples, n_mels, max_time, sample_rate, clip_seconds, split, n_classes, classes`` (a comma
string such as ``quiet,breathe,snore``), ``invalid_audio_policy, dataset_commit, max_samples,
next_index``: no ``n_frames``, ``paths`` or fingerprint. Such a file is read as it is, never
modified: its attributes are normalised to our contract in memory, its real frames are recovered
from the padding floor and its fingerprint from its content (:mod:`sleepsound.features.compact`),
and its provenance comes from ``dataset_commit`` (the DreamCatcher hub revision it was built
from: the reference tool only reads DreamCatcher).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from sleepsound.data.fetch import DREAMCATCHER_REPO
from sleepsound.features.logmel import CLIP_SECONDS, N_FRAMES, N_MELS, SAMPLE_RATE, TOP_DB

FORMAT = "reference"  # attrs["format"] of a normalised reference cache
REFERENCE_ATTRS = ("n_samples", "n_mels", "max_time", "sample_rate", "split", "classes")


def is_reference_cache(h5: h5py.File) -> bool:
    """A file in the reference layout: spectrograms and labels, but none of our datasets."""
    return "spectrograms" in h5 and "labels" in h5 and "n_frames" not in h5 and "paths" not in h5


def reference_source(attrs: dict) -> dict:
    """Provenance of a reference cache: DreamCatcher at ``dataset_commit`` when recorded."""
    commit = str(attrs.get("dataset_commit") or "").strip()
    if not commit:
        return {"kind": "unknown", "format": FORMAT}
    return {"kind": "dreamcatcher", "repo": DREAMCATCHER_REPO, "revision": commit, "format": FORMAT}


def normalise_attrs(path: Path, attrs: dict) -> dict:
    """The reference attributes mapped onto ours (classes as a JSON list, one channel, the
    source record); raises ValueError naming the file when a required one is missing."""
    missing = [k for k in REFERENCE_ATTRS if k not in attrs]
    if missing:
        raise ValueError(f"{path}: reference-format cache lacks attributes {missing}")
    classes = attrs["classes"]
    if isinstance(classes, str) and not classes.lstrip().startswith("["):
        classes = [c.strip() for c in classes.split(",") if c.strip()]
    else:
        classes = json.loads(classes) if isinstance(classes, str) else list(classes)
    if "n_classes" in attrs and int(attrs["n_classes"]) != len(classes):
        raise ValueError(
            f"{path}: n_classes={attrs['n_classes']} but classes lists {len(classes)}: {classes}"
        )
    return {
        **attrs,
        "classes": json.dumps(classes),
        "channels": "mean",
        "n_channels": 1,
        "fingerprint": None,  # from the content, when the compact store is built
        "format": FORMAT,
        "source": json.dumps(reference_source(attrs)),
    }


# ----------------------------------------------------------------------------- writing
# The reference tool itself is not ours to run; tests and benchmarks/scale.py make files in
# exactly its layout with these.

REFERENCE_CLASSES = ("quiet", "breathe", "snore")


def texture_rows(
    labels: np.ndarray, lengths: np.ndarray, rng: np.random.Generator, max_time: int = N_FRAMES
) -> np.ndarray:
    """Log-mel-like rows [B, 64, max_time] in dB whose class shows in their texture (0: flat
    noise, 1: slow amplitude modulation, 2: harmonic bands), ``lengths[i]`` frames of content
    then the floor, each row's maximum 0 dB and floor -80 dB as in a real cache."""
    b = len(labels)
    t = np.arange(max_time)[None, None, :]
    mel = np.arange(N_MELS)[None, :, None]
    db = -45.0 + 4.0 * rng.standard_normal((b, N_MELS, max_time))
    period = rng.uniform(20, 40, size=(b, 1, 1))
    db += np.where(labels[:, None, None] == 1, 12.0 * np.sin(2 * np.pi * t / period), 0.0)
    db += np.where(labels[:, None, None] == 2, 15.0 * (mel % 8 == 3), 0.0)
    db -= db.max(axis=(1, 2), keepdims=True)
    db = np.maximum(db, -TOP_DB)
    pad = np.arange(max_time)[None, :] >= np.asarray(lengths)[:, None]  # [B, T]
    db = np.where(pad[:, None, :], -TOP_DB, db)
    return db.astype(np.float32)


def write_reference_cache(
    path: Path | str,
    blocks,
    n_rows: int,
    split: str,
    classes=REFERENCE_CLASSES,
    dataset_commit: str = "",
    compression: str | None = "lzf",
    max_time: int = N_FRAMES,
) -> Path:
    """Write ``blocks`` (an iterable of (spectrograms [b, 64, T], labels [b])) as a cache in the
    reference tool's layout: its datasets and attributes only, nothing of ours."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        specs = h5.create_dataset(
            "spectrograms",
            (n_rows, N_MELS, max_time),
            dtype="float32",
            chunks=(1, N_MELS, max_time),
            compression=compression,
        )
        labels = h5.create_dataset("labels", (n_rows,), dtype="int64")
        at = 0
        for block, block_labels in blocks:
            specs[at : at + len(block)] = block
            labels[at : at + len(block)] = block_labels
            at += len(block)
        if at != n_rows:
            raise ValueError(f"{path}: {at} rows written, {n_rows} announced")
        h5.attrs.update(
            {
                "n_samples": n_rows,
                "n_mels": N_MELS,
                "max_time": max_time,
                "sample_rate": SAMPLE_RATE,
                "clip_seconds": CLIP_SECONDS,
                "invalid_audio_policy": "skip",
                "dataset_commit": dataset_commit,
                "split": split,
                "n_classes": len(classes),
                "classes": ",".join(classes),
                "max_samples": -1,
                "next_index": n_rows,
            }
        )
    return path
