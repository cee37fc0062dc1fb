"""The synthetic earable dataset and night: layout, determinism, mix, realism, hardness."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sleepsound.data import synth
from sleepsound.features.logmel import SAMPLE_RATE
from sleepsound.taxonomy import DEFAULT_CLASSES, LABELS

N_SMALL = 300


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "data"
    return out, synth.generate_dataset(out, n_clips=N_SMALL, seed=0, progress=False)


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("night")
    return out, synth.generate_night(out, hours=0.05, seed=3, progress=False)


def _wavs(root: Path) -> list[Path]:
    return sorted(root.glob("*/*/*.wav"))


def _subject(path: Path) -> str:
    return path.stem.rsplit("_", 1)[0]


def _render(label: str, n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` clips of one label, each from its own subject (no disk)."""
    clips = []
    for i in range(n):
        subject = synth.draw_subject(np.random.default_rng([seed, i]), f"t{i}")
        clips.append(synth.render_clip(label, subject, 1.5, np.random.default_rng([seed, i, 1])))
    return clips


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _centroid(x: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    return float(np.sum(freqs * power) / np.sum(power))


# --- the clip dataset --------------------------------------------------------------------------


def test_layout_and_provenance(small_set):
    root, info = small_set
    assert set(p.name for p in root.iterdir() if p.is_dir()) == set(synth.SPLITS)
    wavs = _wavs(root)
    assert len(wavs) == N_SMALL
    assert len({p.name for p in wavs}) == N_SMALL  # file names are unique
    for path in wavs[::7]:
        meta = sf.info(path)
        assert meta.samplerate == SAMPLE_RATE
        assert meta.channels == 2
        assert meta.subtype == "PCM_16"
        audio, sr = sf.read(path)
        assert audio.shape == (meta.frames, 2) and np.abs(audio).max() > 0
    on_disk = Counter((p.parts[-3], p.parts[-2]) for p in wavs)
    assert {(s, lab): c for s, d in info["splits"].items() for lab, c in d.items() if c} == dict(
        on_disk
    )
    saved = json.loads((root / "sleepsound_source.json").read_text())
    assert saved == info
    assert info["kind"] == "synthetic" and info["generator"] == "sleepsound.data.synth"
    assert info["version"] == 1 and info["seed"] == 0 and info["n_clips"] == N_SMALL
    assert info["labels"] == list(LABELS)
    assert not list(root.glob(".*"))  # no temp file or partial marker left behind


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = (tmp_path / name for name in "abc")
    synth.generate_dataset(a, n_clips=24, seed=7, progress=False)
    synth.generate_dataset(b, n_clips=24, seed=7, progress=False)
    synth.generate_dataset(c, n_clips=24, seed=8, progress=False)
    files_a = [p.relative_to(a) for p in _wavs(a)]
    assert files_a == [p.relative_to(b) for p in _wavs(b)]
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)
    source = "sleepsound_source.json"
    assert (a / source).read_bytes() == (b / source).read_bytes()
    audio_a = b"".join((a / f).read_bytes() for f in files_a)
    audio_c = b"".join(p.read_bytes() for p in _wavs(c))
    assert audio_a != audio_c


def test_class_mix_and_split_sizes():
    specs, _ = synth.plan_dataset(3000, seed=1)
    labels = Counter(s.label for s in specs)
    core = sum(labels[c] for c in DEFAULT_CLASSES)
    shares = {c: 100 * labels[c] / core for c in DEFAULT_CLASSES}
    for name, want in zip(DEFAULT_CLASSES, (54, 36, 10), strict=True):
        assert abs(shares[name] - want) < 1.0, shares
    assert 0.2 < 1 - core / len(specs) < 0.3  # the other six labels: a modest extra share
    splits = Counter(s.split for s in specs)
    for split, want in zip(synth.SPLITS, synth.SPLIT_FRACTIONS, strict=True):
        assert abs(splits[split] / len(specs) - want) < 0.01


def test_small_set_mix_and_every_label_in_every_split(small_set):
    _, info = small_set
    for split, counts in info["splits"].items():
        assert all(counts[lab] >= 1 for lab in LABELS), split
    totals = Counter()
    for counts in info["splits"].values():
        totals.update(counts)
    core = sum(totals[c] for c in DEFAULT_CLASSES)
    for name, want in zip(DEFAULT_CLASSES, (54, 36, 10), strict=True):
        assert abs(100 * totals[name] / core - want) < 3.0


def test_label_subset(tmp_path):
    info = synth.generate_dataset(tmp_path, n_clips=30, labels=("quiet", "snore"), progress=False)
    assert {p.parts[-2] for p in _wavs(tmp_path)} == {"quiet", "snore"}
    assert info["labels"] == ["quiet", "snore"]
    with pytest.raises(ValueError):
        synth.plan_dataset(30, 0, labels=("quiet", "purring"))


def test_clip_lengths(small_set):
    specs, _ = synth.plan_dataset(3000, seed=0)
    durations = np.array([s.duration for s in specs])
    assert 0.5 <= np.median(durations) <= 3.0
    assert np.mean((durations > 0.5) & (durations < 3.0)) > 0.8
    assert 0.01 < np.mean(durations > 5.0) < 0.06
    assert durations.max() <= 7.0 and durations.min() > 0.3
    # the files hold exactly the planned lengths
    root, _ = small_set
    planned = {Path(s.relpath).name: s.duration for s in synth.plan_dataset(N_SMALL, seed=0)[0]}
    for path in _wavs(root)[::11]:
        assert sf.info(path).frames == round(planned[path.name] * SAMPLE_RATE)


def test_subjects_disjoint_across_splits(small_set):
    root, _ = small_set
    by_split = {s: {_subject(p) for p in (root / s).glob("*/*.wav")} for s in synth.SPLITS}
    train, val, test = (by_split[s] for s in synth.SPLITS)
    assert not train & val and not train & test and not val & test
    assert min(len(v) for v in by_split.values()) >= 2
    clips_per_subject = Counter(_subject(p) for p in _wavs(root))
    assert np.mean(list(clips_per_subject.values())) >= 5


def test_refuses_foreign_folder_and_clears_its_own(tmp_path):
    foreign = tmp_path / "foreign"
    (foreign / "train" / "quiet").mkdir(parents=True)
    (foreign / "train" / "quiet" / "real.wav").write_bytes(b"not ours")
    with pytest.raises(FileExistsError):
        synth.generate_dataset(foreign, n_clips=12, progress=False)
    assert (foreign / "train" / "quiet" / "real.wav").exists()
    ours = tmp_path / "ours"
    synth.generate_dataset(ours, n_clips=24, progress=False)
    synth.generate_dataset(ours, n_clips=12, progress=False)
    assert len(_wavs(ours)) == 12


# --- physics: channels and hardness ------------------------------------------------------------


def test_wearer_sounds_are_louder_and_darker_in_ear():
    for label in ("snore", "cough"):
        clips = _render(label, 24)
        ratio_db = [20 * np.log10(_rms(c[:, 0]) / _rms(c[:, 1])) for c in clips]
        assert np.median(ratio_db) > 3.0, label
        centroid_in = np.mean([_centroid(c[:, 0]) for c in clips])
        centroid_out = np.mean([_centroid(c[:, 1]) for c in clips])
        assert centroid_in < 0.7 * centroid_out, label


def test_partner_sounds_reach_mainly_the_outer_mic():
    clips = _render("non_wearer", 24)
    louder_outside = [_rms(c[:, 1]) > _rms(c[:, 0]) for c in clips]
    assert np.mean(louder_outside) >= 0.9


def test_quiet_and_breathe_not_separable_by_loudness():
    """A one-feature classifier (RMS of the channel mean, best threshold) stays well short of
    perfect: loudness alone must not give the class away."""
    quiet = [_rms(c.mean(axis=1)) for c in _render("quiet", 60, seed=1)]
    breathe = [_rms(c.mean(axis=1)) for c in _render("breathe", 60, seed=1)]
    x = np.log(np.concatenate([quiet, breathe]))
    y = np.r_[np.zeros(len(quiet)), np.ones(len(breathe))]
    best = max(max(np.mean((x > t) == y), np.mean((x <= t) == y)) for t in np.unique(x))
    assert best < 0.95
    # yet breathing is really there: breathe clips are on average louder in-ear
    assert np.median(breathe) > np.median(quiet)


# --- the night ---------------------------------------------------------------------------------


def _events(root: Path) -> list[tuple[str, float, float]]:
    with open(root / "events.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [(r["label"], float(r["start"]), float(r["end"])) for r in rows]


def test_night_file_and_events(night):
    root, info = night
    meta = sf.info(root / "night.wav")
    assert meta.samplerate == SAMPLE_RATE and meta.channels == 2
    assert meta.frames == round(0.05 * 3600 * SAMPLE_RATE)
    with open(root / "events.csv", newline="") as f:
        assert next(csv.reader(f)) == ["label", "start", "end"]
    events = _events(root)
    starts = [s for _, s, _ in events]
    assert starts == sorted(starts)
    assert all(0 <= s < e <= 0.05 * 3600 for _, s, e in events)
    assert all(e0 <= s1 for (_, _, e0), (_, s1, _) in zip(events, events[1:], strict=False))
    assert {lab for lab, _, _ in events} <= set(LABELS) - {"quiet"}
    assert any(lab == "snore" for lab, _, _ in events)
    saved = json.loads((root / "sleepsound_source.json").read_text())
    assert saved == info and info["kind"] == "synthetic-night" and info["seed"] == 3
    assert info["hours"] == 0.05 and info["n_events"] == len(events)


def test_night_events_are_audible(night):
    root, _ = night
    audio, _ = sf.read(root / "night.wav")
    in_ear = audio[:, 0]
    events = _events(root)
    mask = np.zeros(len(in_ear), bool)
    for _, s, e in events:
        mask[int(s * SAMPLE_RATE) : int(e * SAMPLE_RATE)] = True
    background = _rms(in_ear[~mask])
    for label, s, e in events:
        if label == "snore":
            segment = in_ear[int(s * SAMPLE_RATE) : int(e * SAMPLE_RATE)]
            assert _rms(segment) > 2 * background


def test_night_full_hour_plan_is_realistic():
    events = synth.plan_night(np.random.default_rng(0), hours=8.0)
    counts = Counter(lab for lab, _, _ in events)
    assert counts["snore"] >= 8 and counts["breathe"] >= 8
    snores = [e - s for lab, s, e in events if lab == "snore"]
    assert min(snores) >= 30 and max(snores) <= 240
    covered = sum(e - s for _, s, e in events)
    assert 0.05 * 8 * 3600 < covered <= synth.NIGHT_MAX_OCCUPANCY * 8 * 3600


def test_night_is_deterministic(tmp_path):
    a, b, c = (tmp_path / name for name in "abc")
    for folder, seed in ((a, 5), (b, 5), (c, 6)):
        synth.generate_night(folder, hours=0.005, seed=seed, progress=False)
    for name in ("night.wav", "events.csv", "sleepsound_source.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "night.wav").read_bytes() != (c / "night.wav").read_bytes()
