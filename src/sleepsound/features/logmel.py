"""The log-mel front end: the one place the feature parameters live.

Every spectrogram sleepsound computes (the cache, detection over a night, export checks) goes
through :func:`log_mel`. It reproduces the reference computation

    librosa.power_to_db(librosa.feature.melspectrogram(y, sr=16000, n_fft=512, win_length=400,
        hop_length=160, n_mels=64, fmin=20, fmax=8000, power=2, center=True,
        pad_mode="constant"), ref=np.max, top_db=80)

to within 0.01 dB (tests/test_features.py), but on a whole batch of clips at once with torch.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

SAMPLE_RATE = 16_000
N_FFT = 512
WIN_LENGTH = 400  # 25 ms Hann window
HOP_LENGTH = 160  # 10 ms
N_MELS = 64
FMIN = 20.0
FMAX = 8_000.0
POWER = 2.0
TOP_DB = 80.0
AMIN = 1e-10
CLIP_SECONDS = 5.0
CLIP_SAMPLES = int(CLIP_SECONDS * SAMPLE_RATE)  # 80,000
N_FRAMES = 1 + CLIP_SAMPLES // HOP_LENGTH  # 501 centred frames
LENGTH_GROUP = 16  # clips per STFT call in clip_log_mel, grouped by length

FEATURE_PARAMS: dict[str, float | int | str | bool] = {
    "sample_rate": SAMPLE_RATE,
    "n_fft": N_FFT,
    "win_length": WIN_LENGTH,
    "hop_length": HOP_LENGTH,
    "n_mels": N_MELS,
    "fmin": FMIN,
    "fmax": FMAX,
    "power": POWER,
    "top_db": TOP_DB,
    "amin": AMIN,
    "clip_seconds": CLIP_SECONDS,
    "max_time": N_FRAMES,
    "window": "hann",
    "center": True,
    "pad_mode": "constant",
    "mel_scale": "slaney",
    "mel_norm": "slaney",
    "db_ref": "max",
}


def hz_to_mel(freq: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    freq = np.asarray(freq, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = freq / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    above = freq >= min_log_hz
    return np.where(
        above, min_log_mel + np.log(np.maximum(freq, 1e-12) / min_log_hz) / logstep, mels
    )


def mel_to_hz(mels: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    above = mels >= min_log_mel
    return np.where(above, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)


@lru_cache(maxsize=4)
def mel_filters(
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    fmin: float = FMIN,
    fmax: float = FMAX,
) -> np.ndarray:
    """Slaney-normalised triangular mel filterbank, shape [n_mels, 1 + n_fft // 2], float32."""
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    mel_edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(mel_edges)
    ramps = mel_edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_edges[2:] - mel_edges[:-2]))[:, None]
    return weights.astype(np.float32)


def fix_length(audio: np.ndarray, n_samples: int = CLIP_SAMPLES) -> np.ndarray:
    """Zero-pad at the end, or keep the first ``n_samples`` (the last axis is time)."""
    length = audio.shape[-1]
    if length >= n_samples:
        return audio[..., :n_samples]
    pad = [(0, 0)] * (audio.ndim - 1) + [(0, n_samples - length)]
    return np.pad(audio, pad)


def n_valid_frames(n_samples: int | np.ndarray, max_frames: int = N_FRAMES) -> np.ndarray:
    """Frames whose centre lies inside the real (unpadded) audio: ceil(n / hop), capped."""
    n = np.asarray(n_samples)
    return np.minimum(max_frames, np.maximum(1, -(-n // HOP_LENGTH)))


@lru_cache(maxsize=1)
def _window() -> torch.Tensor:
    return torch.hann_window(WIN_LENGTH, periodic=True, dtype=torch.float32)


@lru_cache(maxsize=1)
def _mel_basis() -> torch.Tensor:
    return torch.from_numpy(mel_filters())


def power_to_db(power: torch.Tensor) -> torch.Tensor:
    """dB relative to each item's own maximum, floored ``TOP_DB`` below it. power: [..., F, T]."""
    flat = power.flatten(start_dim=-2)
    ref = flat.amax(dim=-1).clamp_min(AMIN)[..., None, None]
    db = 10.0 * torch.log10(power.clamp_min(AMIN)) - 10.0 * torch.log10(ref)
    floor = db.flatten(start_dim=-2).amax(dim=-1)[..., None, None] - TOP_DB
    return torch.maximum(db, floor)


def mel_power(audio: torch.Tensor) -> torch.Tensor:
    """Mel power spectrogram of [B, N] float32 audio -> [B, 64, 1 + N // 160]."""
    spec = torch.stft(
        audio,
        n_fft=N_FFT,
        hop_length=HOP_LENGTH,
        win_length=WIN_LENGTH,
        window=_window(),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    power = spec.real * spec.real + spec.imag * spec.imag  # bitwise equal, fastest here
    return torch.matmul(_mel_basis(), power)


def log_mel(audio: np.ndarray | torch.Tensor) -> np.ndarray:
    """Log-mel spectrogram in dB of 16 kHz audio, the reference computation on any length.

    audio: [N] or [B, N]. Returns float32 [64, T] or [B, 64, T], T = 1 + N // 160, every value
    in [-80, 0] dB relative to each item's own maximum.
    """
    x = torch.as_tensor(np.asarray(audio, dtype=np.float32))
    squeeze = x.ndim == 1
    db = power_to_db(mel_power(x[None] if squeeze else x)).numpy()
    return db[0] if squeeze else db


def clip_log_mel(clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Cache features of a batch of clips: fixed to 5 s, then :func:`log_mel`.

    Equal to ``log_mel(fix_length(clip))`` for each clip, but the STFT only runs over frames that
    touch real audio: frames that see only the zero padding have exactly zero power, so they are
    filled in rather than computed (most clips last about 1 s of the 5 s).
    clips: 1-D float32 arrays at 16 kHz. Returns (specs [B, 64, 501], n_valid_frames [B]).
    """
    lengths = np.array([min(len(c), CLIP_SAMPLES) for c in clips])
    power = torch.zeros((len(clips), N_MELS, N_FRAMES), dtype=torch.float32)
    order = np.argsort(lengths, kind="stable")  # similar lengths together: little wasted STFT
    for start in range(0, len(order), LENGTH_GROUP):
        group = order[start : start + LENGTH_GROUP]
        span = int(min(CLIP_SAMPLES, lengths[group].max() + N_FFT // 2))  # frames touching audio
        batch = np.zeros((len(group), span), dtype=np.float32)
        for row, i in enumerate(group):
            batch[row, : lengths[i]] = clips[i][: lengths[i]]
        computed = mel_power(torch.from_numpy(batch))
        power[torch.from_numpy(group), :, : computed.shape[-1]] = computed
    return power_to_db(power).numpy(), n_valid_frames(lengths)
