"""The log-mel front end against librosa's reference computation (the cache contract)."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import soundfile as sf

from sleepsound.data.audio import read_audio
from sleepsound.features import logmel
from sleepsound.features.logmel import clip_log_mel, fix_length, log_mel, mel_filters

TOLERANCE_DB = 0.01


def reference_features(path) -> np.ndarray:
    """What the reference pipeline computes for one file (librosa, one clip at a time)."""
    y, _ = librosa.load(path, sr=16_000, mono=True)
    y = librosa.util.fix_length(y, size=logmel.CLIP_SAMPLES)
    mel = librosa.feature.melspectrogram(
        y=y, sr=16_000, n_fft=512, win_length=400, hop_length=160, n_mels=64, fmin=20,
        fmax=8000, power=2.0, center=True, pad_mode="constant",
    )  # fmt: skip
    return librosa.power_to_db(mel, ref=np.max, top_db=80.0)


def test_mel_filters_equal_librosa():
    ref = librosa.filters.mel(sr=16_000, n_fft=512, n_mels=64, fmin=20, fmax=8000)
    np.testing.assert_allclose(mel_filters(), ref, atol=1e-7)


@pytest.mark.parametrize("sr", [8_000, 16_000, 44_100])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
def test_file_features_match_librosa(tmp_path, sr, channels, fmt):
    rng = np.random.default_rng(sr + channels)
    seconds = [0.3, 1.1, 6.2]  # short (padded), typical, longer than 5 s (cut to the head)
    for k, dur in enumerate(seconds):
        n = int(dur * sr)
        t = np.arange(n) / sr
        sig = 0.3 * np.sin(2 * np.pi * 440 * t) + rng.normal(0, 0.05, n)
        audio = np.stack([sig * g for g in (1.0, 0.5)[:channels]], axis=1)
        path = tmp_path / f"clip{k}.{fmt.lower()}"
        sf.write(path, audio.astype(np.float32), sr, format=fmt, subtype="PCM_16")
        ours, n_valid = clip_log_mel([read_audio(path, "mean")[0]])
        ref = reference_features(path)
        assert ours.shape == (1, 64, 501) and ref.shape == (64, 501)
        assert np.abs(ours[0] - ref).max() < TOLERANCE_DB, (sr, channels, fmt, dur)
        expected_frames = min(501, int(np.ceil(min(dur * 16_000, 80_000) / 160)))
        assert abs(int(n_valid[0]) - expected_frames) <= 1


def test_batch_of_mixed_lengths_equals_one_at_a_time():
    rng = np.random.default_rng(0)
    clips = [
        rng.normal(0, 10 ** rng.uniform(-4, 0), int(n)).astype(np.float32)
        for n in rng.integers(600, 100_000, size=40)
    ]
    batched, _ = clip_log_mel(clips)
    single = np.stack([log_mel(fix_length(c)) for c in clips])
    np.testing.assert_array_equal(batched, single)
    assert batched.min() >= -80.0 and batched.max() <= 0.0


def test_very_quiet_clip_padding_matches_reference():
    """Padding sits at 10*log10(amin/ref), which is above -80 dB for very quiet clips."""
    y = np.random.default_rng(1).normal(0, 1e-5, 8_000).astype(np.float32)
    ours, _ = clip_log_mel([y])
    ref = librosa.power_to_db(
        librosa.feature.melspectrogram(
            y=fix_length(y), sr=16_000, n_fft=512, win_length=400, hop_length=160, n_mels=64,
            fmin=20, fmax=8000, center=True, pad_mode="constant"),
        ref=np.max, top_db=80.0,
    )  # fmt: skip
    assert np.abs(ours[0] - ref).max() < TOLERANCE_DB
    assert ours[0, :, -1].max() > -80.0  # not at the floor: the contract's subtlety
