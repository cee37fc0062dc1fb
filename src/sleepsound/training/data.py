"""Feeding cached spectrograms to models, independent of storage order and of memory.

A split is read through its compact store (:mod:`sleepsound.features.compact`: each clip's
content frames, no padding, built once per cache, memory-mapped). How it is held depends on
the memory limit (``--memory-limit``, default :func:`default_memory_limit`, shared by the
splits held at once: :func:`share_memory`), never on the result:

- ``prepared``: model-ready float32 input (scaled once) in RAM, or on the GPU with
  ``--device cuda``: a batch is one gather;
- ``mapped``: batches gathered from the memory-mapped int16 store, plus one affine map. The
  data path then allocates only batches; the store's pages are the kernel's page cache
  (counted in RSS once touched, but reclaimable).

Both compute every value with the same elementwise formula, so the same seed gives identical
batches and metrics in either mode. Batches come from a global shuffle of the whole split:
clips are grouped by input length (see :class:`~sleepsound.models.inputs.InputSpec`) *after*
a permutation of all rows, so a batch's class mix follows the split's whatever the row order
on disk (caches are written label-sorted). Scaling is fitted on the whole training split.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import torch

from sleepsound.features.cache import CacheInfo
from sleepsound.features.compact import CompactStore, open_store
from sleepsound.models.inputs import InputSpec

MEMORY_SHARE = 0.25  # default memory limit: this share of the machine's RAM
PREPARE_CHUNK = 1 << 16  # frames scaled per step when preparing (bounds the temporary)


def share_memory(splits: list[SplitData], limit: int | None) -> None:
    """Divide one memory limit between splits held at the same time (training and
    validation), in proportion to their prepared size: either all are prepared or the larger
    ones are mapped, and together they stay within the limit."""
    limit = limit or default_memory_limit()
    total = sum(s.prepared_bytes() for s in splits)
    for s in splits:
        s.memory_limit = int(limit * s.prepared_bytes() / max(total, 1))


def default_memory_limit() -> int:
    """A quarter of the machine's physical RAM (6 GB on a 24 GB machine)."""
    return int(MEMORY_SHARE * psutil.virtual_memory().total)


@dataclass
class Batch:
    x: torch.Tensor  # [B, C, 64, T] scaled input, on the split's device
    y: torch.Tensor  # [B] class ids, on the split's device
    index: np.ndarray  # [B] row numbers in the split


def batch_plan(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None = None
) -> list[np.ndarray]:
    """Row indices of each batch: equal input length within a batch.

    With ``rng``: all rows are permuted first, then grouped by length (keeping the permuted
    order), cut into batches, and the batches shuffled; so each batch is a random sample of
    its length group, whatever order the rows are stored in. Without: row order."""
    order = rng.permutation(len(lengths)) if rng is not None else np.arange(len(lengths))
    by_length = lengths[order]
    plan = []
    for length in np.unique(by_length):
        rows = order[by_length == length]
        plan += [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    if rng is not None:
        plan = [plan[i] for i in rng.permutation(len(plan))]
    return plan


def affine(q: torch.Tensor, units_per_db: float, spec: InputSpec) -> torch.Tensor:
    """Stored values -> model input: the ONE elementwise formula of both holding modes."""
    return (q.float() / units_per_db + spec.offset) / spec.scale


class SplitData:
    """One cache split: labels and lengths in memory, frames in the compact store."""

    def __init__(
        self,
        path: Path | str,
        expect: dict | None = None,
        memory_limit: int | None = None,
        store_root: Path | None = None,
        progress: bool = False,
    ):
        self.path = Path(path)
        self.memory_limit = memory_limit or default_memory_limit()
        self.store: CompactStore = open_store(
            self.path, self.memory_limit, store_root, expect, progress
        )
        self.info: CacheInfo = self.store.info
        self.labels = self.store.labels
        self.n_frames = self.store.n_frames
        self._held: dict | None = None  # tensors for the current (spec, device)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    @property
    def n_channels(self) -> int:
        return self.info.n_channels

    @property
    def fingerprint(self) -> str:
        return self.store.fingerprint

    def fit_spec(self, frames: str = "bucket", bucket: int | None = None) -> InputSpec:
        """The input spec of a run trained on this split: scaling from the whole split's dB
        mean/std over real frames, plus the length policy and channels."""
        mean, std = self.store.db_stats()
        extra = {} if bucket is None else {"bucket": bucket}
        return InputSpec(
            offset=-mean,
            scale=max(std, 1e-3),
            frames=frames,
            channels=self.info.attrs.get("channels", "mean"),
            n_channels=self.n_channels,
            max_time=self.info.max_time,
            **extra,
        )

    # -- holding

    def prepared_bytes(self) -> int:
        """RAM (or GPU memory) of the model-ready float32 form."""
        return int(self.store.frames.size) * 4

    def hold(self, spec: InputSpec, device: torch.device | str = "cpu") -> str:
        """Place the split for ``spec`` on ``device``; returns the mode (``prepared`` or
        ``mapped``). Prepared when the float32 form fits the memory limit (on CUDA: when it
        fits in half the free GPU memory)."""
        device = torch.device(device)
        key = (spec, str(device))
        if self._held is not None and self._held["key"] == key:
            return self._held["mode"]
        store = self.store
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            prepared = self.prepared_bytes() <= 0.5 * free
        else:
            prepared = self.prepared_bytes() <= self.memory_limit
        frames = torch.from_numpy(store.frames)
        floor = torch.from_numpy(store.floor_q)
        if prepared:
            out = torch.empty(frames.shape, dtype=torch.float32, device=device)
            for s in range(0, len(frames), PREPARE_CHUNK):
                chunk = frames[s : s + PREPARE_CHUNK].to(device)
                out[s : s + PREPARE_CHUNK] = affine(chunk, store.units_per_db, spec)
            frames = out
            floor = affine(floor.to(device), store.units_per_db, spec)
        self._held = {
            "key": key,
            "mode": "prepared" if prepared else "mapped",
            "device": device,
            "frames": frames,
            "floor": floor.to(device),
            "offsets": torch.from_numpy(store.offsets).to(device),
            "stored": torch.from_numpy(store.stored.astype(np.int64)).to(device),
            "labels": torch.from_numpy(self.labels).to(device),
            "units": store.units_per_db,
            "spec": spec,
        }
        return self._held["mode"]

    def gather(self, rows: np.ndarray, length: int) -> torch.Tensor:
        """Model input [B, C, 64, length] of ``rows`` (all of input length ``length``)."""
        h = self._held
        dev = h["device"]
        r = torch.from_numpy(np.asarray(rows, dtype=np.int64)).to(dev)
        t = torch.arange(length, device=dev)
        stored = h["stored"][r][:, None]  # [B, 1]
        pos = h["offsets"][r][:, None] + torch.minimum(t[None, :], stored - 1)  # [B, L]
        if h["mode"] == "mapped":  # only the rows of this batch leave the memory map
            flat = pos.flatten().cpu()
            x = torch.from_numpy(np.asarray(self.store.frames[flat.numpy()])).to(dev)
            x = affine(x, h["units"], h["spec"]).view(*pos.shape, *x.shape[1:])
            floor = affine(h["floor"][r], h["units"], h["spec"])
        else:
            x = h["frames"][pos]  # [B, L, C, 64]
            floor = h["floor"][r]
        pad = (t[None, :] >= stored)[..., None, None]
        x = torch.where(pad, floor[:, None, None, None], x)
        # channels-last: the layout the models' convolutions run fastest in (see train.place)
        return x.permute(0, 2, 3, 1).contiguous(memory_format=torch.channels_last)

    def batches(
        self,
        batch_size: int,
        spec: InputSpec,
        rng: np.random.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> Iterator[Batch]:
        """Length-grouped batches of model input; a global shuffle when ``rng`` is given,
        row order otherwise."""
        self.hold(spec, device)
        lengths = spec.lengths(self.n_frames)
        for rows in batch_plan(lengths, batch_size, rng):
            yield Batch(
                x=self.gather(rows, int(lengths[rows[0]])),
                y=self._held["labels"][torch.from_numpy(rows).to(self._held["device"])],
                index=rows,
            )

    def release(self) -> None:
        """Drop the held tensors (e.g. before evaluating another split on the GPU)."""
        self._held = None
