"""Training throughput (samples/s, batch 64, all cores): our loop vs a per-item h5py loader.

Three loops over the same cache, in one run, for TinyCNN and CRNN:
  per-item   a torch Dataset doing one h5py read per clip (all 501 frames) + DataLoader,
             as the reference did;
  ours/full  sleepsound's in-memory split with all 501 frames (data pipeline effect only);
  ours       sleepsound's default: length-bucketed input (padding cropped).

    python benchmarks/train_throughput.py --cache-dir results/cache/spectrograms [--steps 15]
"""

from __future__ import annotations

import argparse
import time

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from sleepsound.config import DEFAULT_CACHE_DIR
from sleepsound.models import create_model
from sleepsound.models.inputs import scale_db
from sleepsound.training.data import SplitData


class PerItemH5(Dataset):
    def __init__(self, path, scaling):
        self.path, self.scaling = path, scaling
        self.h5 = None
        with h5py.File(path) as h5:
            self.n = h5["labels"].shape[0]

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if self.h5 is None:
            self.h5 = h5py.File(self.path, "r")
        x = torch.from_numpy(self.h5["spectrograms"][i])[None]
        return scale_db(x, self.scaling), int(self.h5["labels"][i])


def step(model, opt, x, y):
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def timed(batches, model, steps: int) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    seen, t0 = 0, None
    for k, (x, y) in enumerate(batches):
        if k == 2:  # two warm-up steps
            t0, seen = time.perf_counter(), 0
        step(model, opt, x, y)
        seen += len(y)
        if k + 1 >= steps + 2:
            break
    return seen / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR))
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    path = f"{args.cache_dir}/train.h5"
    print(
        f"cache {path}, batch {args.batch_size}, {torch.get_num_threads()} threads, "
        f"{args.steps} timed steps after 2 warm-up steps"
    )
    t0 = time.perf_counter()
    split = SplitData(path, progress=False)
    specs = {frames: split.fit_spec(frames) for frames in ("full", "bucket")}
    split.hold(specs["bucket"])
    print(f"opened split (compact store): {len(split)} clips in {time.perf_counter() - t0:.2f} s")
    scaling = specs["bucket"].scaling
    rng = np.random.default_rng(0)
    for name in ("tinycnn", "crnn"):
        rates = {}
        torch.manual_seed(0)
        loader = DataLoader(PerItemH5(path, scaling), batch_size=args.batch_size, shuffle=True)
        rates["per-item h5py + DataLoader"] = timed(loader, create_model(name, 3), args.steps)
        for frames in ("full", "bucket"):
            batches = ((b.x, b.y) for b in split.batches(args.batch_size, specs[frames], rng))
            torch.manual_seed(0)
            rates[f"ours ({frames})"] = timed(batches, create_model(name, 3), args.steps)
        base = rates["per-item h5py + DataLoader"]
        for label, rate in rates.items():
            print(f"{name:8s} {label:28s} {rate:8.1f} samples/s  {rate / base:5.2f}x")


if __name__ == "__main__":
    main()
