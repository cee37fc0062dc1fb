"""Whole-night detection: stream a recording, classify overlapping windows, merge into events.

``detect(recording, model)`` reads any file soundfile can read, of any length, sample rate and
channel count, in blocks (constant memory: the audio kept at any time is one batch of windows),
applies the model's channel policy, resamples to 16 kHz with a streaming soxr resampler, and
classifies ``window``-second windows every ``hop`` seconds.

Features equal the cache's. A window is treated exactly like a cached clip: its audio, zero-padded
to 5 s (``fix_length``), goes through :func:`~sleepsound.features.logmel.log_mel` (dB relative to
the window's own maximum), :func:`~sleepsound.models.inputs.scale_db`, and is cropped to the
model's input length policy (``bucket``: real frames rounded up to the bucket; ``full``: 501).
Instead of recomputing the STFT of every overlapping window, one STFT runs over the audio of a
whole batch of windows and each window's mel-power frames are sliced out of it. Frames whose
analysis window reaches past a window edge (two at each edge: 25 ms Hann windows every 10 ms)
see neighbouring audio there instead of the zero padding of the per-window computation, so those
four frames are recomputed per window from 30 ms snippets padded the same way. The result equals
the per-window computation up to float rounding (tests/test_detect.py checks < 1e-3 dB).

The end of a recording is handled like a short clip: windows start every hop while at least
``N_FFT`` samples (32 ms, the cache's shortest usable clip) remain, and the last ones are
zero-padded to the window length, so the last seconds are classified. A recording shorter than
one window gives one zero-padded window.

Outputs (``out_dir``), written under temporary names and renamed into place only after the whole
recording was processed: ``events.csv``, ``hourly.csv``, ``summary.json``, ``timeline.png``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import struct
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from sleepsound import __version__
from sleepsound.config import RESULTS_DIR
from sleepsound.data.audio import check_policy, n_channels_out, select_channels
from sleepsound.deploy import events as ev
from sleepsound.deploy.export import (
    CARD_NAME,
    CHECKPOINT,
    checkpoint_card,
    onnx_bytes,
    ort_predictor,
    ort_session,
    softmax,
    torch_predictor,
)
from sleepsound.features.logmel import (
    CLIP_SAMPLES,
    CLIP_SECONDS,
    FEATURE_PARAMS,
    HOP_LENGTH,
    N_FFT,
    N_FRAMES,
    SAMPLE_RATE,
    WIN_LENGTH,
    mel_power,
    n_valid_frames,
    power_to_db,
)
from sleepsound.models.inputs import input_frames, scale_db
from sleepsound.progress import progress_bar, say
from sleepsound.runs import file_sha256
from sleepsound.training.checkpoint import load_model

DEFAULT_WINDOW = CLIP_SECONDS  # s: the clip length models are trained on
DEFAULT_HOP = 1.0  # s
DEFAULT_BATCH = 64  # windows featurised together (one STFT) and handed to one model worker
MODEL_BATCH = 16  # windows per model call: as fast per window as 64, a third of the memory
MAX_SPAN_S = 80.0  # audio featurised at once at most (bounds memory whatever the hop)
DEFAULT_THREADS = 2  # model calls in flight at once (each single-threaded)
MIN_TAIL_SAMPLES = N_FFT  # a window needs this much real audio (the cache's shortest clip)
# Frames whose 400-sample analysis window (centred on the frame) crosses a window edge: the
# first 2 at the start; at the end the 2 up to the edge and, for windows shorter than 5 s, 1 past
# it (still partly over real audio in a zero-padded clip).
EDGE_FRAMES = -(-(WIN_LENGTH // 2) // HOP_LENGTH)  # 2
EDGE_SNIPPET = (EDGE_FRAMES + 1) * HOP_LENGTH  # 480 samples of audio decide those frames
BACKENDS = ("auto", "onnx", "torch")
DETECT_SUBDIR = Path("detect")
OUTPUT_FILES = ("events.csv", "hourly.csv", "summary.json", "timeline.png")
TIMELINE_POINTS = 4000  # probability curves are averaged down to at most this many points
SUMMARY_LABELS = ("snore", "breathe")  # printed in the closing line when the task has them


class RecordingError(ValueError):
    """A recording that cannot be (fully) read; the message names the file and the reason."""

    def __init__(self, path: Path | str, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


# ============================================================================= the model


@dataclass
class Classifier:
    """A model with its input contract: ``predict`` maps scaled input ``[B, C, 64, T]`` to
    class probabilities ``[B, K]``."""

    predict: Callable[[np.ndarray], np.ndarray]
    card: dict
    identity: dict

    @property
    def classes(self) -> list[str]:
        return list(self.card["classes"])

    @property
    def channels(self) -> str:
        return self.card["channels"]


def load_classifier(model: Path | str, backend: str = "auto") -> Classifier:
    """A run directory (its best checkpoint) or an exported ``.onnx`` with its model card.

    backend (run directories): ``onnx`` exports the checkpoint in memory and runs it with ONNX
    Runtime (several times faster on CPU than PyTorch for these models; parity < 1e-4, see
    tests/test_export.py); ``torch`` runs PyTorch; ``auto`` is ``onnx``, falling back to
    ``torch`` if the export fails. An ``.onnx`` file always runs with ONNX Runtime.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    path = Path(model)
    if path.suffix == ".onnx":
        return _onnx_classifier(path)
    ckpt_path = path / CHECKPOINT if path.is_dir() else path
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"{path}: neither a run directory with {CHECKPOINT} nor .onnx")
    net, ckpt = load_model(ckpt_path)
    card = _checked(checkpoint_card(ckpt), ckpt_path)
    identity = {
        "kind": "run",
        "path": str(path.resolve()),
        "checkpoint": str(ckpt_path.resolve()),
        "model": card["model"],
    }
    if backend in ("auto", "onnx"):
        try:
            data, _ = onnx_bytes(net, card["in_channels"])
            predict = _probabilities(ort_predictor(ort_session(data, threads=1)))
            return Classifier(predict, card, {**identity, "backend": "onnxruntime"})
        except Exception:
            if backend == "onnx":
                raise
    return Classifier(_probabilities(torch_predictor(net)), card, {**identity, "backend": "torch"})


def _onnx_classifier(path: Path) -> Classifier:
    card_path = path.with_name(CARD_NAME)
    if not path.is_file() or not card_path.is_file():
        raise FileNotFoundError(f"{path}: needs the model file and its {CARD_NAME} beside it")
    card = _checked(json.loads(card_path.read_text()), card_path)
    identity = {
        "kind": "onnx",
        "path": str(path.resolve()),
        "sha256": file_sha256(path),
        "model": card.get("model"),
        "source_run": card.get("source_run"),
        "backend": "onnxruntime",
    }
    return Classifier(_probabilities(ort_predictor(ort_session(path, threads=1))), card, identity)


def _checked(card: dict, source: Path) -> dict:
    """Refuse a model whose features differ from the ones computed here."""
    check_policy(card["channels"])
    params = card.get("feature_params", FEATURE_PARAMS)
    diff = {k: (params.get(k), v) for k, v in FEATURE_PARAMS.items() if params.get(k) != v}
    if diff:
        raise ValueError(f"{source}: model expects other features than log_mel computes: {diff}")
    return card


def _probabilities(logits_fn: Callable[[np.ndarray], np.ndarray]):
    return lambda x: softmax(np.asarray(logits_fn(x), dtype=np.float64))


# ============================================================================= reading audio


def wav_shortfall(path: Path) -> int:
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


def open_recording(path: Path) -> sf.SoundFile:
    """Open a recording, or raise RecordingError saying why it cannot be used."""
    if not path.is_file():
        raise RecordingError(path, "file not found")
    if path.stat().st_size == 0:
        raise RecordingError(path, "empty file (0 bytes)")
    missing = wav_shortfall(path)
    if missing:
        raise RecordingError(
            path, f"truncated WAV: the header promises {missing:,} more bytes of audio than exist"
        )
    try:
        f = sf.SoundFile(str(path))
    except Exception as exc:  # soundfile raises several types for unreadable files
        raise RecordingError(path, f"not a readable audio file ({_first_line(exc)})") from exc
    if f.frames == 0:
        f.close()
        raise RecordingError(path, "contains no audio (0 frames)")
    return f


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def audio_blocks(path: Path, channels: str, block_seconds: float) -> Iterator[np.ndarray]:
    """Stream ``path`` as float32 ``[C, n]`` blocks at 16 kHz after the channel policy.

    Raises RecordingError if the file fails to decode part-way, holds non-finite samples, or
    ends before the number of frames its header declares.
    """
    with open_recording(path) as f:
        sr, total = f.samplerate, f.frames
        stream = None
        if sr != SAMPLE_RATE:
            stream = soxr.ResampleStream(
                sr, SAMPLE_RATE, n_channels_out(channels), dtype="float32", quality="HQ"
            )
        block, done = max(1, int(block_seconds * sr)), 0
        while True:
            try:
                data = f.read(block, dtype="float32", always_2d=True)
            except Exception as exc:
                raise RecordingError(
                    path, f"decoding failed after {done / sr:.1f} s ({_first_line(exc)})"
                ) from exc
            if not np.isfinite(data).all():
                raise RecordingError(path, f"non-finite samples after {done / sr:.1f} s")
            done += len(data)
            last = len(data) == 0 or done >= total
            # a contiguous [C, n] copy first: the policy's channel mean is 3x faster on it
            x = select_channels(np.ascontiguousarray(data.T), channels) if len(data) else None
            if stream is not None:
                chunk = np.zeros((0, n_channels_out(channels)), np.float32) if x is None else x.T
                y = stream.resample_chunk(np.ascontiguousarray(chunk), last=last)
                x = np.ascontiguousarray(y.T, dtype=np.float32)
            if x is not None and x.shape[1]:
                yield np.ascontiguousarray(x, dtype=np.float32)
            if last:
                break
        if done < total:
            raise RecordingError(
                path, f"ends early: {done:,} of the {total:,} frames its header declares"
            )


# ============================================================================= features


@dataclass(frozen=True)
class Geometry:
    """Window and hop in samples and frames at 16 kHz."""

    window: int  # samples
    hop: int  # samples

    @classmethod
    def from_seconds(cls, window: float, hop: float) -> Geometry:
        win, hp = round(window * SAMPLE_RATE), round(hop * SAMPLE_RATE)
        if not (2 * EDGE_SNIPPET <= win <= CLIP_SAMPLES):
            shortest = 2 * EDGE_SNIPPET / SAMPLE_RATE
            raise ValueError(f"window must be {shortest} to {CLIP_SECONDS} s, got {window}")
        if not 0 < hp <= win:
            raise ValueError(f"hop must be positive and at most the window, got {hop}")
        if win % HOP_LENGTH or hp % HOP_LENGTH:
            raise ValueError("window and hop must be multiples of 10 ms (the frame hop)")
        return cls(win, hp)

    @property
    def window_frames(self) -> int:
        return 1 + self.window // HOP_LENGTH

    @property
    def hop_frames(self) -> int:
        return self.hop // HOP_LENGTH

    def batch_windows(self, batch_size: int) -> int:
        """Windows per batch: ``batch_size``, fewer if their audio would exceed MAX_SPAN_S."""
        most = 1 + (round(MAX_SPAN_S * SAMPLE_RATE) - self.window) // self.hop
        return max(1, min(batch_size, most))

    def n_windows(self, n_samples: int) -> int:
        """Windows starting every hop while at least MIN_TAIL_SAMPLES remain (at least one)."""
        return max(1, -(-(n_samples - MIN_TAIL_SAMPLES + 1) // self.hop))


def _edge_power(span: torch.Tensor, starts: np.ndarray, left: bool) -> torch.Tensor:
    """Mel power of the edge frames of windows, computed with the window's zero padding.

    span: [C, L]; starts: offsets of the EDGE_SNIPPET samples before a window's end (or from
    its start). Returns [n, C, 64, EDGE_FRAMES] (left) or [n, C, 64, 2 * EDGE_FRAMES - 1]
    (right: frames centred from (EDGE_FRAMES - 1) hops before the end to as many after it).
    """
    idx = torch.as_tensor(starts)[:, None] + torch.arange(EDGE_SNIPPET)[None, :]
    snippets = span[:, idx].transpose(0, 1)  # [n, C, EDGE_SNIPPET]
    n, c = snippets.shape[:2]
    if not left:  # the zero padding after the window end
        pad = (EDGE_FRAMES - 1) * HOP_LENGTH
        snippets = torch.nn.functional.pad(snippets, (0, pad))
    power = mel_power(snippets.reshape(n * c, -1))
    power = power[..., :EDGE_FRAMES] if left else power[..., -(2 * EDGE_FRAMES - 1) :]
    return power.reshape(n, c, *power.shape[1:])


def window_power(span: np.ndarray, n: int, geo: Geometry) -> torch.Tensor:
    """Mel power of ``n`` windows starting every hop in ``span``, as ``[n, C, 64, 501]``.

    span: [C, (n - 1) * hop + window] float32 (zeros past the end of the recording). Equals
    ``mel_power(fix_length(window_audio))`` of each window (a clip zero-padded to 5 s).
    """
    x = torch.from_numpy(span)
    frames = mel_power(x)  # [C, 64, F]: one STFT for every window of the batch
    wf = geo.window_frames
    win = frames.unfold(-1, wf, geo.hop_frames)[:, :, :n]  # [C, 64, n, wf] (a view)
    out = torch.zeros((n, x.shape[0], frames.shape[1], N_FRAMES), dtype=torch.float32)
    out[..., :wf] = win.permute(2, 0, 1, 3)
    starts = np.arange(n) * geo.hop
    out[..., :EDGE_FRAMES] = _edge_power(x, starts, left=True)
    right = _edge_power(x, starts + geo.window - EDGE_SNIPPET, left=False)
    first = wf - EDGE_FRAMES
    keep = min(right.shape[-1], N_FRAMES - first)
    out[..., first : first + keep] = right[..., :keep]
    return out


def window_inputs(
    span: np.ndarray, n: int, real: np.ndarray, geo: Geometry, card: dict
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Scaled model input of ``n`` windows, grouped by input length.

    real: samples of real audio in each window (the rest is zero padding). Returns
    [(window indices within the batch, x [b, C, 64, T] float32), ...].
    """
    db = power_to_db(window_power(span, n, geo))
    x = scale_db(db, card["input_scaling"]).numpy()
    lengths = input_frames(n_valid_frames(real), card["frames"], card["bucket_frames"])
    return [
        (idx, np.ascontiguousarray(x[idx, ..., :t]))
        for t in np.unique(lengths)
        for idx in [np.flatnonzero(lengths == t)]
    ]


def window_batches(
    blocks: Iterator[np.ndarray], geo: Geometry, batch: int
) -> Iterator[tuple[np.ndarray, int, np.ndarray, int]]:
    """Cut streamed audio into batches of windows: (span, n, real samples per window, first
    window index). Keeps only the audio of the pending batch in memory."""
    buf = np.zeros((0, 0), np.float32)
    buf_start = next_w = total = 0

    def take(n: int) -> tuple[np.ndarray, int, np.ndarray, int]:
        start = next_w * geo.hop - buf_start
        need = (n - 1) * geo.hop + geo.window
        span = buf[:, start : start + need]
        if span.shape[1] < need:
            span = np.pad(span, ((0, 0), (0, need - span.shape[1])))
        starts = (next_w + np.arange(n)) * geo.hop
        real = np.clip(total - starts, 0, geo.window)
        return np.ascontiguousarray(span), n, real, next_w

    for block in blocks:
        buf = block if buf.size == 0 else np.concatenate([buf, block], axis=1)
        total += block.shape[1]
        while (next_w + batch - 1) * geo.hop + geo.window <= total:
            yield take(batch)
            next_w += batch
            drop = next_w * geo.hop - buf_start
            buf, buf_start = buf[:, drop:], buf_start + drop
    if total == 0:
        return
    n_windows = geo.n_windows(total)
    while next_w < n_windows:
        n = min(batch, n_windows - next_w)
        yield take(n)
        next_w += n


# ============================================================================= detection


@dataclass
class DetectResult:
    out_dir: Path
    events: list[ev.Event]
    summary: dict
    window_probs: np.ndarray = field(repr=False)
    hop_probs: np.ndarray = field(repr=False)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def real_time_factor(self) -> float:
        return self.summary["processing"]["real_time_factor"]


def detect(
    recording: Path | str,
    model: Path | str | Classifier,
    window: float = DEFAULT_WINDOW,
    hop: float = DEFAULT_HOP,
    out_dir: Path | str | None = None,
    batch_size: int = DEFAULT_BATCH,
    truth: Path | str | None = None,
    progress: bool = True,
    min_duration: float = ev.DEFAULT_MIN_DURATION,
    max_gap: float = ev.DEFAULT_MAX_GAP,
    backend: str = "auto",
    threads: int = DEFAULT_THREADS,
    onset_tol: float | None = None,
) -> DetectResult:
    """Detect sleep-sound events in a recording of any length (see the module docstring).

    Args:
        recording: an audio file soundfile reads.
        model: a run directory, an exported ``.onnx`` (``model_card.json`` beside it), or a
            loaded :class:`Classifier`.
        window, hop: seconds (multiples of 10 ms; window <= 5 s).
        out_dir: where the outputs go (default ``results/detect/<recording stem>``).
        batch_size: windows featurised together (one STFT) and handed to one model worker,
            which calls the model on at most MODEL_BATCH of them at a time.
        truth: optional ``events.csv`` (label,start,end) to score the detection against.
        min_duration, max_gap: event post-processing in seconds (see :mod:`.events`).
        backend: for run directories, ``auto`` / ``onnx`` / ``torch`` (see load_classifier).
        threads: model calls run in parallel, each on one thread.
        onset_tol: scoring collar in seconds for onsets and offsets (default: half a window,
            at least 1 s). A window holding any part of an event tends to be classified as
            that event, so detected boundaries move outwards by up to half a window.
    """
    t0 = time.perf_counter()
    path = Path(recording)
    out = Path(out_dir) if out_dir is not None else RESULTS_DIR / DETECT_SUBDIR / path.stem
    geo = Geometry.from_seconds(window, hop)
    truth_events = ev.read_events_csv(truth) if truth is not None else None
    clf = model if isinstance(model, Classifier) else load_classifier(model, backend)
    info = _recording_info(path)
    window_probs = _classify(path, clf, geo, batch_size, threads, info["duration_s"], progress)
    duration = info["duration_s"]
    found, hop_probs, _ = ev.windows_to_events(
        window_probs, clf.classes, window, hop, duration, min_duration, max_gap
    )
    elapsed = time.perf_counter() - t0
    summary = _summary(path, info, clf, found, geo, window_probs, elapsed, min_duration, max_gap)
    if truth_events is not None:
        tol = onset_tol if onset_tol is not None else max(ev.ONSET_TOL, window / 2)
        summary["scores"] = _scores(found, truth_events, clf.classes, duration, truth, tol)
    files = _write_outputs(out, found, summary, hop_probs, clf.classes, hop, truth_events)
    _print_summary(summary)
    return DetectResult(out, found, summary, window_probs, hop_probs, files)


def _recording_info(path: Path) -> dict:
    with open_recording(path) as f:
        return {
            "path": str(path.resolve()),
            "duration_s": f.frames / f.samplerate,
            "sample_rate": f.samplerate,
            "channels": f.channels,
            "frames": f.frames,
            "format": f"{f.format}/{f.subtype}",
        }


def _classify(
    path: Path,
    clf: Classifier,
    geo: Geometry,
    batch_size: int,
    threads: int,
    duration: float,
    progress: bool,
) -> np.ndarray:
    """Window probabilities [W, K] of the whole recording, in order."""
    if batch_size < 1 or threads < 1:
        raise ValueError("batch_size and threads must be >= 1")
    batch_size = geo.batch_windows(batch_size)
    blocks = audio_blocks(path, clf.channels, block_seconds=batch_size * geo.hop / SAMPLE_RATE)
    results: list[np.ndarray] = []
    pending: deque[tuple[Future, int]] = deque()
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # feature work shares the cores with the model calls
    try:
        with (
            ThreadPoolExecutor(max_workers=threads) as pool,
            progress_bar("detect", total=round(duration), enabled=progress, unit="s audio") as adv,
        ):
            for span, n, real, _ in window_batches(blocks, geo, batch_size):
                groups = window_inputs(span, n, real, geo, clf.card)
                pending.append((pool.submit(_predict_groups, clf, groups, n), n))
                while len(pending) > threads:
                    _collect(pending, results, adv, geo)
            while pending:
                _collect(pending, results, adv, geo)
    finally:
        torch.set_num_threads(prev_threads)
    return np.concatenate(results) if results else np.zeros((0, len(clf.classes)))


def _predict_groups(clf: Classifier, groups, n: int) -> np.ndarray:
    """Probabilities of a batch's windows, in model calls of at most MODEL_BATCH windows."""
    probs = np.zeros((n, len(clf.classes)))
    for idx, x in groups:
        for s in range(0, len(idx), MODEL_BATCH):
            probs[idx[s : s + MODEL_BATCH]] = clf.predict(x[s : s + MODEL_BATCH])
    return probs


def _collect(pending: deque, results: list, advance, geo: Geometry) -> None:
    future, n = pending.popleft()
    results.append(future.result())
    advance(n * geo.hop / SAMPLE_RATE)


def _summary(path, info, clf, found, geo, window_probs, elapsed, min_duration, max_gap) -> dict:
    duration = info["duration_s"]
    hourly = ev.hourly_table(found, clf.classes, duration)
    per_label = {
        c: sum(1 for e in found if e.label == c) for c in clf.classes if c != ev.BACKGROUND
    }
    return {
        "recording": info,
        "model": {
            **clf.identity,
            "classes": clf.classes,
            "channels": clf.channels,
            "frames": clf.card["frames"],
            "bucket_frames": clf.card["bucket_frames"],
        },
        "parameters": {
            "window_s": geo.window / SAMPLE_RATE,
            "hop_s": geo.hop / SAMPLE_RATE,
            "min_duration_s": min_duration,
            "max_gap_s": max_gap,
            "background": ev.BACKGROUND,
        },
        "processing": {
            "seconds": elapsed,  # loading the model, decoding, features, model, events
            "audio_seconds": duration,
            "real_time_factor": elapsed / duration if duration else 0.0,
            "windows": int(len(window_probs)),
        },
        "totals": {**ev.totals(hourly), "events": per_label},
        "hourly": hourly,
        "sleepsound_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _scores(found, truth_events, classes, duration, truth_path, tol: float) -> dict:
    """Event and frame scores on the model's labels; truth events of other labels (e.g. the
    coughs of a synthetic night under a quiet/breathe/snore model) are left out."""
    labels = [c for c in classes if c != ev.BACKGROUND]
    unscored = sorted({e.label for e in truth_events} - set(classes))
    return {
        "truth": str(Path(truth_path).resolve()),
        "events": ev.score_events(
            found, truth_events, onset_tol=tol, offset_tol=max(ev.OFFSET_TOL, tol), labels=labels
        ),
        "frame_accuracy": ev.frame_accuracy(found, truth_events, duration, labels=labels),
        "frame_resolution_s": ev.FRAME_RESOLUTION,
        "unscored_truth_labels": unscored,
    }


# ============================================================================= outputs


def hourly_csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _write_outputs(out, found, summary, hop_probs, classes, hop, truth_events) -> dict:
    """Write every output under a temporary name, then rename them all into place."""
    out.mkdir(parents=True, exist_ok=True)
    staged: dict[str, Path] = {}
    try:
        contents = {
            "events.csv": ev.events_csv_text(found).encode(),
            "hourly.csv": hourly_csv_text(summary["hourly"]).encode(),
            "summary.json": (json.dumps(summary, indent=2) + "\n").encode(),
        }
        for name, data in contents.items():
            staged[name] = _stage(out, name)
            staged[name].write_bytes(data)
        staged["timeline.png"] = _stage(out, "timeline.png")
        plot_timeline(staged["timeline.png"], hop_probs, classes, hop, found, truth_events)
        final = {}
        for name in OUTPUT_FILES:
            final[name] = out / name
            os.replace(staged.pop(name), final[name])
        return final
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)


def _stage(out: Path, name: str) -> Path:
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def _downsample(probs: np.ndarray, points: int) -> tuple[np.ndarray, int]:
    step = max(1, math.ceil(len(probs) / points))
    n = len(probs) // step * step
    head = probs[:n].reshape(-1, step, probs.shape[1]).mean(axis=1)
    tail = probs[n:].mean(axis=0, keepdims=True) if n < len(probs) else probs[:0]
    return np.vstack([head, tail]), step


def plot_timeline(path, hop_probs, classes, hop, found, truth_events=None) -> None:
    """Class probabilities (stacked) and the event bands over time, hours on the x-axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs, step = _downsample(hop_probs, TIMELINE_POINTS)
    hours = (np.arange(len(probs)) + 0.5) * step * hop / 3600.0
    colors = {c: plt.get_cmap("tab10")(i % 10) for i, c in enumerate(classes)}
    bands = [("detected", found)] + ([("truth", truth_events)] if truth_events else [])
    fig, axes = plt.subplots(
        1 + len(bands),
        1,
        figsize=(12, 3 + 0.6 * len(bands)),
        sharex=True,
        gridspec_kw={"height_ratios": [4] + [1] * len(bands)},
    )
    axes[0].stackplot(hours, probs.T, labels=classes, colors=[colors[c] for c in classes])
    axes[0].set_ylabel("probability")
    axes[0].set_ylim(0, 1)
    axes[0].legend(
        loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=len(classes), fontsize="small"
    )
    for ax, (name, events) in zip(axes[1:], bands, strict=True):
        for e in events:
            color = colors.get(e.label, "grey")
            ax.axvspan(e.start / 3600.0, e.end / 3600.0, color=color, lw=0)
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
    axes[-1].set_xlabel("hours")
    axes[-1].set_xlim(0, max(hours[-1] + 0.5 * step * hop / 3600.0, 1e-6))
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def _print_summary(summary: dict) -> None:
    proc, tot = summary["processing"], summary["totals"]
    rtf = proc["real_time_factor"]
    say(
        f"processed {proc['audio_seconds'] / 3600:.2f} h of audio in {proc['seconds']:.1f} s "
        f"(real-time factor {rtf:.5f} = 1/{1 / rtf:.0f})"
        if rtf
        else "processed 0 s of audio"
    )
    scores = summary.get("scores")
    if scores:
        micro = scores["events"]["micro"]
        per = ", ".join(f"{k} {v['f1']:.2f}" for k, v in scores["events"]["per_label"].items())
        say(
            f"vs truth: event F1 {micro['f1']:.3f} (P {micro['precision']:.3f}, "
            f"R {micro['recall']:.3f}; {per}), frame accuracy {scores['frame_accuracy']:.3f}"
        )
    parts = [
        f"{tot[f'{lab}_minutes']:.1f} min {lab}, {tot[f'{lab}_episodes']} episodes"
        for lab in SUMMARY_LABELS
        if f"{lab}_minutes" in tot
    ]
    n_events = sum(tot["events"].values())
    say(f"{n_events} events" + (": " + "; ".join(parts) if parts else ""))
