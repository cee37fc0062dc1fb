"""The one audio reader: dataset folders in DreamCatcher's layout and whole-night recordings.

Files are read with soundfile (libsndfile: WAV, FLAC, OGG/Opus, AIFF, CAF, MP3, ...) and, when
soundfile cannot open them, with PyAV (FFmpeg: ``.m4a``, ``.aac``, ``.opus``, ``.caf``, ``.mp3``
from phones and other devices). Either way audio is *streamed*: :class:`AudioStream` yields
blocks, so a night of any length is read in constant memory, and :func:`read_audio` with
``max_seconds`` reads only the start it keeps (preprocess keeps 5 s of a clip, whatever its
length). Any sample rate (resampled to 16 kHz with soxr's high-quality filter, as librosa does by
default; streamed with ``soxr.ResampleStream``), any channel count.

Channel policies (DreamCatcher audio is ``(2, N)``; by our convention channel 0 is the in-ear
microphone and channel 1 the outer one):

- ``mean``: the mean of all channels (the reference), one channel out;
- ``in_ear`` / ``outer``: that channel alone (a mono file gives its only channel);
- ``both``: in-ear and outer as two channels (a mono file is duplicated).

One rule for bad audio, the same in ``preprocess`` and ``detect`` (:class:`AudioError`, whose
``reason`` is a short kind): a missing, empty (0 bytes) or unreadable file, a WAV whose header
promises more audio than the file holds (``truncated``: a cut copy is refused, never taken for a
shorter recording), a file that fails to decode part-way or ends before the frames its header
declares, no audio at all, non-finite samples, or less than one FFT frame (512 samples at 16 kHz).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from sleepsound.features.logmel import N_FFT, SAMPLE_RATE

SOUNDFILE_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".mp3")
PYAV_EXTENSIONS = (".m4a", ".aac", ".opus", ".caf", ".mp4", ".webm", ".wma")
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS + PYAV_EXTENSIONS
SPLITS = ("train", "validation", "test")
CHANNEL_POLICIES = ("mean", "in_ear", "outer", "both")
BLOCK_SECONDS = 10.0  # native audio decoded per block when streaming
RESAMPLE_MARGIN_S = 0.05  # audio read past ``max_seconds`` so the resampler's edge is exact
DETAIL_CHARS = 200
INEXACT_LENGTH_FORMATS = ("MP3",)  # libsndfile estimates their frame count from the header


class AudioError(ValueError):
    """A file that cannot be used; ``reason`` is a short machine-friendly kind, ``detail`` says
    more. The message names the file."""

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


@dataclass(frozen=True)
class AudioInfo:
    """What a file says about itself before decoding. ``frames`` is exact for soundfile and
    ``None`` for PyAV (compressed streams only estimate it: ``duration_s`` is that estimate)."""

    path: str
    sample_rate: int
    channels: int
    frames: int | None
    duration_s: float
    format: str
    backend: str  # "soundfile" or "pyav"


# ============================================================================= channel policies


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


# ============================================================================= opening files


def wav_shortfall(path: Path | str) -> int:
    """Bytes missing from a RIFF/WAVE file whose data chunk promises more than the file holds
    (libsndfile silently reads such a file as shorter); 0 when complete or not a WAV."""
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return 0
        size = os.fstat(fh.fileno()).st_size
        pos = 12
        while pos + 8 <= size:
            fh.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", fh.read(8))
            if chunk_id == b"data":
                if chunk_size in (0, 0xFFFFFFFF):  # streaming writers leave the size open
                    return 0
                return max(0, chunk_size - (size - pos - 8))
            pos += 8 + chunk_size + (chunk_size & 1)
    return 0


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:DETAIL_CHARS]


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise AudioError(path, "not_found", "no such file")
    try:
        size = path.stat().st_size
        missing = wav_shortfall(path)
    except OSError as exc:
        raise AudioError(path, "unreadable", _first_line(exc)) from exc
    if size == 0:
        raise AudioError(path, "empty_file", "0 bytes")
    if missing:
        raise AudioError(
            path,
            "truncated",
            f"truncated WAV: the header promises {missing:,} more bytes of audio than exist",
        )


class AudioStream:
    """An open audio file (soundfile, else PyAV), read as native-rate blocks.

    Use as a context manager. ``info`` describes the file; :meth:`native_blocks` yields float32
    ``[C, n]`` blocks at the file's rate; :meth:`blocks` yields 16 kHz blocks after a channel
    policy. Both raise :class:`AudioError` when decoding fails part-way, samples are not finite,
    or a file ends before the frames its header declares. ``frames_read`` counts native frames.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        _check_file(self.path)
        self.frames_read = 0
        self._sf: sf.SoundFile | None = None
        self._av = None
        try:
            self._sf = sf.SoundFile(str(self.path))
        except Exception as sf_exc:  # soundfile raises several types for files it cannot read
            self._open_pyav(sf_exc)
        self.info = self._info()
        if self.info.frames == 0:
            self.close()
            raise AudioError(self.path, "empty", "contains no audio (0 frames)")

    def _open_pyav(self, sf_exc: BaseException) -> None:
        try:
            import av

            container = av.open(str(self.path))
            if not container.streams.audio:
                container.close()
                raise ValueError("no audio stream")
            self._av = container
        except Exception as exc:
            raise AudioError(
                self.path,
                "unreadable",
                f"not a readable audio file: soundfile: {_first_line(sf_exc)}; "
                f"PyAV: {_first_line(exc)}",
            ) from exc

    def _info(self) -> AudioInfo:
        if self._sf is not None:
            f = self._sf
            return AudioInfo(
                str(self.path),
                f.samplerate,
                f.channels,
                f.frames,
                f.frames / f.samplerate,
                f"{f.format}/{f.subtype}",
                "soundfile",
            )
        stream = self._av.streams.audio[0]
        rate = int(stream.codec_context.sample_rate or stream.rate)
        duration = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif self._av.duration is not None:
            duration = self._av.duration / 1e6
        return AudioInfo(
            str(self.path),
            rate,
            int(stream.codec_context.layout.nb_channels),
            None,
            duration,
            f"{self._av.format.name}/{stream.codec_context.name}",
            "pyav",
        )

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._sf is not None:
            self._sf.close()
        if self._av is not None:
            self._av.close()

    # ------------------------------------------------------------------------- native blocks

    def native_blocks(
        self, block_frames: int | None = None, max_frames: int | None = None
    ) -> Iterator[np.ndarray]:
        """Float32 ``[C, n]`` blocks at the file's rate, in order, up to ``max_frames``."""
        sr = self.info.sample_rate
        block = max(1, int(block_frames or BLOCK_SECONDS * sr))
        source = self._sf_blocks(block) if self._sf is not None else self._av_blocks(block)
        for data in source:
            if max_frames is not None:
                data = data[:, : max(0, max_frames - self.frames_read)]
            if not data.shape[1]:
                break
            if not np.isfinite(data).all():
                raise AudioError(
                    self.path, "non_finite", f"non-finite samples after {self._at():.1f} s"
                )
            self.frames_read += data.shape[1]
            yield data
            if max_frames is not None and self.frames_read >= max_frames:
                return
        total = self.info.frames
        exact = not self.info.format.startswith(INEXACT_LENGTH_FORMATS)
        if total is not None and exact and self.frames_read < total and max_frames is None:
            raise AudioError(
                self.path,
                "ends_early",
                f"ends early: {self.frames_read:,} of the {total:,} frames its header declares",
            )
        if self.frames_read == 0:
            raise AudioError(self.path, "empty", "contains no audio (0 frames)")

    def _at(self) -> float:
        return self.frames_read / self.info.sample_rate

    def _sf_blocks(self, block: int) -> Iterator[np.ndarray]:
        while True:
            try:
                data = self._sf.read(block, dtype="float32", always_2d=True)
            except Exception as exc:
                raise AudioError(
                    self.path,
                    "decode_failed",
                    f"decoding failed after {self._at():.1f} s ({_first_line(exc)})",
                ) from exc
            if not len(data):
                return
            # a contiguous [C, n] copy: the policy's channel mean is 3x faster on it
            yield np.ascontiguousarray(data.T)

    def _av_blocks(self, block: int) -> Iterator[np.ndarray]:
        import av

        stream = self._av.streams.audio[0]
        layout = stream.codec_context.layout
        rate = self.info.sample_rate
        converter = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        pending: list[np.ndarray] = []
        held = 0
        try:
            for frame in self._av.decode(stream):
                for out in converter.resample(frame):
                    pending.append(out.to_ndarray().astype(np.float32, copy=False))
                    held += pending[-1].shape[1]
                if held >= block:
                    yield np.ascontiguousarray(np.concatenate(pending, axis=1))
                    pending, held = [], 0
            for out in converter.resample(None):
                pending.append(out.to_ndarray().astype(np.float32, copy=False))
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            raise AudioError(
                self.path,
                "decode_failed",
                f"decoding failed after {self._at():.1f} s ({_first_line(exc)})",
            ) from exc
        if pending:
            yield np.ascontiguousarray(np.concatenate(pending, axis=1))

    # ------------------------------------------------------------------------- 16 kHz blocks

    def blocks(
        self,
        channels: str,
        block_seconds: float = BLOCK_SECONDS,
        tap: Callable[[np.ndarray, int], None] | None = None,
    ) -> Iterator[np.ndarray]:
        """Float32 ``[C', n]`` blocks at 16 kHz after the channel policy, streamed (soxr).

        ``tap(native_block, sample_rate)`` sees every native block first (e.g. to measure the
        level of each microphone before the policy mixes them).
        """
        check_policy(channels)
        sr = self.info.sample_rate
        stream = None
        if sr != SAMPLE_RATE:
            stream = soxr.ResampleStream(
                sr, SAMPLE_RATE, n_channels_out(channels), dtype="float32", quality="HQ"
            )
        for data in self.native_blocks(int(block_seconds * sr)):
            if tap is not None:
                tap(data, sr)
            x = select_channels(data, channels)
            if stream is not None:
                x = np.ascontiguousarray(stream.resample_chunk(np.ascontiguousarray(x.T)).T)
            if x.shape[1]:
                yield np.ascontiguousarray(x, dtype=np.float32)
        if stream is not None:
            empty = np.zeros((0, n_channels_out(channels)), np.float32)
            y = np.ascontiguousarray(stream.resample_chunk(empty, last=True).T, dtype=np.float32)
            if y.shape[1]:
                yield y


def open_audio(path: Path | str) -> AudioStream:
    """Open a file for streaming; :class:`AudioError` says why it cannot be used."""
    return AudioStream(path)


def unreadable_reason(path: Path | str) -> AudioError | None:
    """None when ``path`` opens as audio, else the :class:`AudioError` saying why not (reads
    the header only; decoding errors later in the file show up when it is read)."""
    try:
        with open_audio(path):
            return None
    except AudioError as err:
        return err


def is_readable(path: Path | str) -> bool:
    """Whether ``path`` opens as audio (see :func:`unreadable_reason`)."""
    return unreadable_reason(path) is None


# ============================================================================= whole clips


def read_audio(
    path: Path | str, channels: str = "mean", max_seconds: float | None = None
) -> np.ndarray:
    """Read a file as float32 [C, N] at 16 kHz after the channel policy; raise AudioError if bad.

    ``max_seconds``: keep only the first seconds, and read only them (plus a few milliseconds
    so the resampler sees past the cut): a 2-hour file costs what 5 s cost. The result equals
    reading the whole file and cutting it, up to resampler rounding at the cut.
    Bad audio: see the module docstring.
    """
    check_policy(channels)
    with open_audio(path) as stream:
        sr = stream.info.sample_rate
        max_frames = None
        if max_seconds is not None:
            if not max_seconds > 0:
                raise ValueError(f"max_seconds must be positive, got {max_seconds}")
            max_frames = int(np.ceil((max_seconds + RESAMPLE_MARGIN_S) * sr))
        parts = list(stream.native_blocks(max_frames=max_frames))
    data = np.concatenate(parts, axis=1)
    audio = resample(select_channels(data, channels), sr)
    if max_seconds is not None:
        audio = audio[:, : int(round(max_seconds * SAMPLE_RATE))]
    if audio.shape[1] < N_FFT:
        raise AudioError(
            path, "too_short", f"{audio.shape[1]} samples at {SAMPLE_RATE} Hz < {N_FFT}"
        )
    return np.ascontiguousarray(audio, dtype=np.float32)


def read_segments(
    path: Path | str, spans: Sequence[tuple[float, float]], channels: int = 2
) -> tuple[list[np.ndarray], int]:
    """Native-rate float32 ``[channels, n]`` audio of each ``(start, end)`` second span (the
    first ``channels`` channels; a mono file is repeated), in one streamed pass that stops at
    the last span's end. Returns (arrays in the order of ``spans``, the file's sample rate)."""
    with open_audio(path) as stream:
        sr = stream.info.sample_rate
        bounds = [(int(a * sr), max(int(a * sr), int(b * sr))) for a, b in spans]
        parts: list[list[np.ndarray]] = [[] for _ in spans]
        last = max((b for _, b in bounds), default=0)
        pos = 0
        for block in stream.native_blocks(max_frames=last):
            n = block.shape[1]
            if block.shape[0] < channels:
                block = np.repeat(block[:1], channels, axis=0)
            for k, (a, b) in enumerate(bounds):
                lo, hi = max(a, pos), min(b, pos + n)
                if hi > lo:
                    parts[k].append(block[:channels, lo - pos : hi - pos])
            pos += n
    out = [np.concatenate(p, axis=1) if p else np.zeros((channels, 0), np.float32) for p in parts]
    return out, sr


# ============================================================================= dataset folders


def _is_audio(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS


def label_counts(root: Path | str, split: str) -> dict[str, int]:
    """Number of audio files per label folder of a split (all labels, for reports)."""
    split_dir = Path(root) / split
    return {
        d.name: sum(1 for p in d.rglob("*") if _is_audio(p))
        for d in sorted(split_dir.iterdir())
        if d.is_dir()
    }
