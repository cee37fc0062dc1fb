"""Feeding cached spectrograms to models: whole splits in memory, length-bucketed batches.

A split is read with one HDF5 read per block of contiguous rows: the whole split at once when
it fits in memory (the usual case), otherwise blocks of ``BLOCK_CLIPS`` rows, visited in a
shuffled order. Never one h5py read per clip.

Batches hold clips of the same input length (see :mod:`sleepsound.models.inputs`), so short
clips are not padded to 5 s and a clip's input never depends on the batch it lands in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import psutil
import torch

from sleepsound.features.cache import CacheInfo, validate_cache
from sleepsound.models.inputs import fit_scaling, input_frames, scale_db

BLOCK_CLIPS = 8192  # rows per read when a split does not fit in memory
MEMORY_FRACTION = 0.4  # a split is loaded whole if it needs less than this share of free RAM


@dataclass
class Batch:
    x: torch.Tensor  # [B, C, 64, T] scaled input
    y: torch.Tensor  # [B] class ids
    index: np.ndarray  # [B] row numbers in the split


class SplitData:
    """One cache split: labels and lengths in memory, spectrograms in memory or in blocks."""

    def __init__(self, path: Path | str, expect: dict | None = None, in_memory: bool | None = None):
        self.info: CacheInfo = validate_cache(path, expect)
        self.path = Path(path)
        with h5py.File(self.path, "r") as h5:
            self.labels = h5["labels"][:]
            self.n_frames = h5["n_frames"][:]
            row_bytes = int(np.prod(h5["spectrograms"].shape[1:])) * 4
        need = row_bytes * len(self.labels)
        if in_memory is None:
            in_memory = need < MEMORY_FRACTION * psutil.virtual_memory().available
        self.block = len(self.labels) if in_memory else BLOCK_CLIPS
        self._cached: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    @property
    def n_channels(self) -> int:
        return self.info.n_channels

    def blocks(self) -> list[tuple[int, int]]:
        n = len(self)
        return [(s, min(n, s + self.block)) for s in range(0, n, self.block)]

    def read_block(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as [rows, C, 64, T]; the last block read is kept."""
        if self._cached is not None and self._cached[0] == start:
            return self._cached[1]
        with h5py.File(self.path, "r") as h5:
            specs = h5["spectrograms"][start:stop]
        if specs.ndim == 3:
            specs = specs[:, None]
        self._cached = (start, specs)
        return specs

    def fit_scaling(self) -> dict:
        """Input scaling from this split's statistics (call on the training split)."""
        start, stop = self.blocks()[0]
        return fit_scaling(self.read_block(start, stop), self.n_frames[start:stop])

    def batches(
        self,
        batch_size: int,
        scaling: dict,
        frames: str = "bucket",
        bucket: int = 50,
        rng: np.random.Generator | None = None,
    ) -> Iterator[Batch]:
        """Length-bucketed batches; shuffled when ``rng`` is given, in row order otherwise."""
        block_order = self.blocks()
        if rng is not None:
            block_order = [block_order[i] for i in rng.permutation(len(block_order))]
        for start, stop in block_order:
            specs = self.read_block(start, stop)
            lengths = input_frames(self.n_frames[start:stop], frames, bucket, specs.shape[-1])
            groups = []
            for length in np.unique(lengths):
                rows = np.flatnonzero(lengths == length)
                if rng is not None:
                    rows = rng.permutation(rows)
                groups += [
                    (int(length), rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)
                ]
            if rng is not None:
                groups = [groups[i] for i in rng.permutation(len(groups))]
            for length, rows in groups:
                x = np.take(specs[..., :length], rows, axis=0)
                yield Batch(
                    x=scale_db(torch.from_numpy(x), scaling),
                    y=torch.from_numpy(self.labels[start + rows]),
                    index=start + rows,
                )
