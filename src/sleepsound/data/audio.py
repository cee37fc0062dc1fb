"""Reading audio folders in DreamCatcher's layout: ``ROOT/{split}/{label}/*.wav``.

Works for the embedded synthetic set, an extracted DreamCatcher archive, or a user's own
recordings. Any format soundfile reads (WAV, FLAC, OGG, ...), any sample rate (resampled to
16 kHz with soxr's high-quality filter, as librosa does by default), any channel count.

Channel policies (DreamCatcher audio is ``(2, N)``; by our convention channel 0 is the in-ear
microphone and channel 1 the outer one):

- ``mean``: the mean of all channels (the reference), one channel out;
- ``in_ear`` / ``outer``: that channel alone (a mono file gives its only channel);
- ``both``: in-ear and outer as two channels (a mono file is duplicated).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from sleepsound.features.logmel import N_FFT, SAMPLE_RATE
from sleepsound.taxonomy import LABEL_TO_ID, LABELS, class_index

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".mp3")
SPLITS = ("train", "validation", "test")
CHANNEL_POLICIES = ("mean", "in_ear", "outer", "both")


class AudioError(ValueError):
    """A clip that cannot be used; ``reason`` is a short machine-friendly kind."""

    def __init__(self, path: Path | str, reason: str, detail: str = ""):
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))

    def __reduce__(self):  # survive the trip back from a worker process
        return (type(self), (self.path, self.reason, self.detail))


class DatasetLayoutError(ValueError):
    """A data folder that does not follow ``{split}/{label}/<files>``."""


@dataclass(frozen=True)
class Clip:
    """One audio file of a dataset folder."""

    path: Path
    split: str
    label: str  # DreamCatcher label name
    class_id: int  # index into the task's class list


def n_channels_out(policy: str) -> int:
    """How many channels a policy produces."""
    check_policy(policy)
    return 2 if policy == "both" else 1


def check_policy(policy: str) -> None:
    if policy not in CHANNEL_POLICIES:
        raise ValueError(f"channel policy must be one of {CHANNEL_POLICIES}, got {policy!r}")


def select_channels(audio: np.ndarray, policy: str) -> np.ndarray:
    """audio [C, N] -> [1, N] or [2, N] following the channel policy."""
    check_policy(policy)
    if policy == "mean":
        return audio.mean(axis=0, keepdims=True)
    if policy == "both":
        return audio[:2] if audio.shape[0] >= 2 else np.repeat(audio[:1], 2, axis=0)
    channel = 0 if policy == "in_ear" or audio.shape[0] == 1 else 1
    return audio[channel : channel + 1]


def resample(audio: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Resample [C, N] float32 audio with soxr (librosa's default 'soxr_hq')."""
    if orig_sr == target_sr:
        return audio
    out = soxr.resample(np.ascontiguousarray(audio.T), orig_sr, target_sr, quality="HQ")
    return np.ascontiguousarray(np.atleast_2d(out.T), dtype=np.float32)


def read_audio(path: Path | str, channels: str = "mean") -> np.ndarray:
    """Read a file as float32 [C, N] at 16 kHz after the channel policy; raise AudioError if bad.

    Bad audio: unreadable or corrupt, empty, shorter than one FFT frame (512 samples at 16 kHz),
    or containing non-finite samples.
    """
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for corrupt files
        raise AudioError(path, "unreadable", str(exc).splitlines()[0][:200]) from exc
    if data.shape[0] == 0:
        raise AudioError(path, "empty")
    if not np.isfinite(data).all():
        raise AudioError(path, "non_finite", f"{int((~np.isfinite(data)).sum())} samples")
    audio = select_channels(data.T, channels)
    audio = resample(audio, sr)
    if audio.shape[1] < N_FFT:
        raise AudioError(
            path, "too_short", f"{audio.shape[1]} samples at {SAMPLE_RATE} Hz < {N_FFT}"
        )
    return audio


def _is_audio(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS


def scan_split(root: Path | str, split: str, classes: Sequence[str]) -> list[Clip]:
    """List a split's clips of the task's classes, sorted by path.

    Every label folder must be one of the nine DreamCatcher labels (an unknown folder is an
    error naming it); clips of labels outside ``classes`` are left out.
    """
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise DatasetLayoutError(f"{split_dir}: split folder not found")
    ids = class_index(classes)
    clips: list[Clip] = []
    for label_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        label = label_dir.name
        if label not in LABEL_TO_ID:
            raise DatasetLayoutError(
                f"{label_dir}: label folder {label!r} is not a DreamCatcher label "
                f"(expected one of: {', '.join(LABELS)})"
            )
        if label not in ids:
            continue
        for path in sorted(label_dir.rglob("*")):
            if _is_audio(path):
                clips.append(Clip(path=path, split=split, label=label, class_id=ids[label]))
    return clips


def label_counts(root: Path | str, split: str) -> dict[str, int]:
    """Number of audio files per label folder of a split (all labels, for reports)."""
    split_dir = Path(root) / split
    return {
        d.name: sum(1 for p in d.rglob("*") if _is_audio(p))
        for d in sorted(split_dir.iterdir())
        if d.is_dir()
    }
