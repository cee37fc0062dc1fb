"""Preprocessing throughput: audio files -> HDF5 cache, clips/s.

Ours (`sleepsound preprocess`, all cores) side by side, in one run, with the reference's way:
a one-clip-at-a-time loop with librosa (load, fix length, melspectrogram, power_to_db) over the
same files, writing the same HDF5 datasets.

    python benchmarks/preprocess_throughput.py [--clips 3000] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import h5py
import librosa
import numpy as np

from sleepsound.config import PreprocessConfig
from sleepsound.data.discover import find_clips
from sleepsound.data.synth import generate_dataset
from sleepsound.features.cache import preprocess
from sleepsound.features.logmel import CLIP_SAMPLES
from sleepsound.taxonomy import DEFAULT_CLASSES


def librosa_loop(data: Path, out: Path, split: str) -> int:
    clips, _ = find_clips(data, split, DEFAULT_CLASSES)
    specs, labels = [], []
    for clip in clips:
        y, _ = librosa.load(clip.path, sr=16_000, mono=True)
        y = librosa.util.fix_length(y, size=CLIP_SAMPLES)
        mel = librosa.feature.melspectrogram(
            y=y, sr=16_000, n_fft=512, win_length=400, hop_length=160, n_mels=64, fmin=20,
            fmax=8000, power=2.0, center=True, pad_mode="constant",
        )  # fmt: skip
        specs.append(librosa.power_to_db(mel, ref=np.max, top_db=80.0).astype(np.float32))
        labels.append(clip.class_id)
    with h5py.File(out / f"{split}.h5", "w") as h5:
        h5["spectrograms"] = np.stack(specs)
        h5["labels"] = np.array(labels)
    return len(clips)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_dataset(tmp / "data", n_clips=args.clips, seed=args.seed, progress=False)
        splits = ("train", "validation", "test")

        t0 = time.perf_counter()
        n_ref = 0
        (tmp / "ref").mkdir()
        for split in splits:
            n_ref += librosa_loop(tmp / "data", tmp / "ref", split)
        t_ref = time.perf_counter() - t0

        t0 = time.perf_counter()
        results = preprocess(
            PreprocessConfig(data_dir=tmp / "data", cache_dir=tmp / "ours", workers=args.workers)
        )
        t_ours = time.perf_counter() - t0
        n_ours = sum(r.n_clips + r.n_invalid for r in results)

        with h5py.File(tmp / "ref" / "test.h5") as a, h5py.File(tmp / "ours" / "test.h5") as b:
            diff = float(np.abs(a["spectrograms"][:] - b["spectrograms"][:]).max())

    ref_rate, our_rate = n_ref / t_ref, n_ours / t_ours
    print(
        f"\nfiles: {n_ours} (3-class subset of {args.clips} synthetic clips), "
        f"{os.cpu_count()} cores"
    )
    print(f"librosa one-clip loop : {t_ref:7.1f} s  {ref_rate:8.1f} clips/s")
    print(
        f"sleepsound preprocess : {t_ours:7.1f} s  {our_rate:8.1f} clips/s "
        f"({args.workers} workers, includes pool start-up, fingerprinting, HDF5 writes)"
    )
    print(f"speed-up              : {our_rate / ref_rate:7.2f}x   (target >= 1.7x)")
    print(f"max |ours - librosa| on test split: {diff:.2e} dB")


if __name__ == "__main__":
    main()
