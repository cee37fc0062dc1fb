"""Windowed log-mel over a stream: the cache's exact features for overlapping windows of audio.

A window is treated exactly like a cached clip: its audio, zero-padded to 5 s
(:func:`~sleepsound.features.logmel.fix_length`), goes through
:func:`~sleepsound.features.logmel.log_mel` (dB relative to the window's own maximum), is
scaled and cropped by the model's :class:`~sleepsound.models.inputs.InputSpec`. Instead of
recomputing the STFT of every overlapping window, one STFT runs over the audio of a whole batch
of windows and each window's mel-power frames are sliced out of it. Frames whose analysis window
reaches past a window edge (two at each edge: 25 ms Hann windows every 10 ms) see neighbouring
audio there instead of the zero padding of the per-window computation, so those frames are
recomputed per window from 30 ms snippets padded the same way. The result equals the per-window
computation up to float rounding (tests/test_detect.py checks < 1e-3 dB).

The end of a stream is handled like a short clip: windows start every hop while at least
``N_FFT`` samples (32 ms, the cache's shortest usable clip) remain, and the last ones are
zero-padded to the window length. A stream shorter than one window gives one zero-padded window.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from sleepsound.features.logmel import (
    CLIP_SAMPLES,
    CLIP_SECONDS,
    HOP_LENGTH,
    N_FFT,
    N_FRAMES,
    SAMPLE_RATE,
    WIN_LENGTH,
    mel_power,
    n_valid_frames,
    power_to_db,
)

MAX_SPAN_S = 80.0  # audio featurised at once at most (bounds memory whatever the hop)
MIN_TAIL_SAMPLES = N_FFT  # a window needs this much real audio (the cache's shortest clip)
# Frames whose 400-sample analysis window (centred on the frame) crosses a window edge: the
# first 2 at the start; at the end the 2 up to the edge and, for windows shorter than 5 s, 1 past
# it (still partly over real audio in a zero-padded clip).
EDGE_FRAMES = -(-(WIN_LENGTH // 2) // HOP_LENGTH)  # 2
EDGE_SNIPPET = (EDGE_FRAMES + 1) * HOP_LENGTH  # 480 samples of audio decide those frames
SILENCE_DB = -200.0  # level reported for a window of exact digital silence


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
    span: np.ndarray, n: int, real: np.ndarray, geo: Geometry, spec
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Scaled model input of ``n`` windows, grouped by input length.

    real: samples of real audio in each window (the rest is zero padding); spec: the model's
    :class:`~sleepsound.models.inputs.InputSpec`. Returns
    [(window indices within the batch, x [b, C, 64, T] float32), ...].
    """
    db = power_to_db(window_power(span, n, geo))
    x = spec.scale_db(db).numpy()
    lengths = spec.lengths(n_valid_frames(real))
    return [
        (idx, np.ascontiguousarray(x[idx, ..., :t]))
        for t in np.unique(lengths)
        for idx in [np.flatnonzero(lengths == t)]
    ]


def window_levels_db(span: np.ndarray, n: int, real: np.ndarray, geo: Geometry) -> np.ndarray:
    """RMS level in dBFS of each window's real audio, the loudest channel: ``[n]``.

    Exact digital silence gives ``SILENCE_DB``.
    """
    power = span.astype(np.float64) ** 2
    csum = np.concatenate([np.zeros((span.shape[0], 1)), np.cumsum(power, axis=1)], axis=1)
    starts = np.arange(n) * geo.hop
    ends = starts + np.maximum(real, 1)
    mean_square = (csum[:, ends] - csum[:, starts]) / np.maximum(real, 1)
    loudest = mean_square.max(axis=0)
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(loudest)
    return np.where(loudest > 0, db, SILENCE_DB)


def window_batches(
    blocks: Iterator[np.ndarray], geo: Geometry, batch: int
) -> Iterator[tuple[np.ndarray, int, np.ndarray, int]]:
    """Cut streamed 16 kHz audio into batches of windows: (span, n, real samples per window,
    first window index). Keeps only the audio of the pending batch in memory."""
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
