"""Shared fixtures: small REAL audio datasets in DreamCatcher's layout, written with soundfile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sleepsound.config import PreprocessConfig
from sleepsound.features.cache import preprocess
from sleepsound.taxonomy import LABELS


def tone_clip(
    label: str, rng: np.random.Generator, sr: int = 16_000, seconds: float = 0.8, channels: int = 2
) -> np.ndarray:
    """A clip whose class shows in its local texture, which a small CNN with global pooling
    can see: quiet = stationary noise, breathe = noise amplitude-modulated at ~4 Hz, snore = a
    ~100 Hz pulse train (harmonic comb); other labels = a pulse train at 60*(i+1) Hz that is
    amplitude-modulated at (i+1) Hz. Returns [N, channels] float32."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    noise = rng.normal(0, 1.0, n)
    i = LABELS.index(label)

    def pulses(f0):
        return (np.sin(2 * np.pi * f0 * t) > 0.95).astype(float) * 4 + 0.1 * noise

    if label == "quiet":
        mono = 0.05 * noise
    elif label == "breathe":
        mono = noise * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 5) * t)) ** 2
    elif label == "snore":
        mono = pulses(100 * rng.uniform(0.9, 1.1))
    else:
        mono = pulses(60 * (i + 1)) * (0.6 + 0.4 * np.sin(2 * np.pi * (i + 1) * t))
    mono = 0.1 * mono / (np.abs(mono).max() + 1e-9) * rng.uniform(0.3, 1.0)
    chans = [mono * g for g in (1.0, 0.6)[:channels]]
    return np.stack(chans, axis=1).astype(np.float32)


def write_dataset(
    root: Path,
    per_class: dict[str, int] | int = 24,
    labels=("quiet", "breathe", "snore"),
    seed: int = 0,
    splits=("train", "validation", "test"),
    sr: int = 16_000,
    fmt: str = "WAV",
) -> Path:
    rng = np.random.default_rng(seed)
    for split in splits:
        for label in labels:
            count = per_class if isinstance(per_class, int) else per_class[label]
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                clip = tone_clip(label, rng, sr, seconds=float(rng.uniform(0.4, 1.6)))
                sf.write(folder / f"{label}_{k:03d}.{fmt.lower()}", clip, sr, format=fmt)
    return root


@pytest.fixture(scope="session")
def tone_cache(tmp_path_factory) -> Path:
    """A 3-class cache of texture clips (train 40/class, validation and test 12/class)."""
    root = tmp_path_factory.mktemp("tones")
    data = write_dataset(root / "data", per_class=40, splits=("train",))
    write_dataset(root / "data", per_class=12, splits=("validation", "test"), seed=1)
    cache = root / "cache"
    preprocess(PreprocessConfig(data_dir=data, cache_dir=cache, workers=1))
    return cache
