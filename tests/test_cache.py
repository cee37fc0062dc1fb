"""The HDF5 cache: contract, bad-audio policy, skip-existing, resume after a kill, channels."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import crashrun
import h5py
import numpy as np
import pytest
import soundfile as sf
from conftest import write_dataset

from sleepsound.config import PreprocessConfig
from sleepsound.data.audio import DatasetLayoutError
from sleepsound.features.cache import CacheError, build_split, preprocess, validate_cache
from sleepsound.features.logmel import FEATURE_PARAMS


def cfg(data, cache, **kw):
    return PreprocessConfig(data_dir=data, cache_dir=cache, workers=1, **kw)


def test_contract(tmp_path):
    data = write_dataset(tmp_path / "d", per_class=5, labels=("quiet", "breathe", "snore", "cough"))
    (data / "sleepsound_source.json").write_text(json.dumps({"kind": "synthetic", "seed": 7}))
    preprocess(cfg(data, tmp_path / "c"))
    for split in ("train", "validation", "test"):
        path = tmp_path / "c" / f"{split}.h5"
        info = validate_cache(path)
        with h5py.File(path) as h5:
            assert h5["spectrograms"].dtype == np.float32
            assert h5["spectrograms"].shape == (15, 64, 501)  # cough filtered out
            labels = h5["labels"][:]
            paths = list(h5["paths"].asstr()[:])
            a = dict(h5.attrs)
            specs = h5["spectrograms"][:]
            n_frames = h5["n_frames"][:]
        assert sorted(set(labels)) == [0, 1, 2]
        for lab, p in zip(labels, paths, strict=True):  # quiet->0, breathe->1, snore->2
            assert p.split("/")[1] == ("quiet", "breathe", "snore")[lab]
        assert a["n_samples"] == 15 and a["n_mels"] == 64 and a["max_time"] == 501
        assert a["sample_rate"] == 16000 and a["clip_seconds"] == 5.0 and a["split"] == split
        assert json.loads(a["classes"]) == ["quiet", "breathe", "snore"]
        for key, value in FEATURE_PARAMS.items():
            assert a[key] == value, key
        assert info.source["kind"] == "synthetic" and info.source["seed"] == 7
        assert len(a["fingerprint"]) == 64 and a["n_invalid"] == 0
        assert specs.min() >= -80 and specs.max() <= 0 and np.isfinite(specs).all()
        # clips last 0.4-1.6 s: frames beyond n_frames are padding
        assert ((n_frames >= 40) & (n_frames <= 161)).all()
        for spec, nf in zip(specs, n_frames, strict=True):
            assert np.ptp(spec[:, nf + 3 :]) == 0.0  # constant padding after the audio


def test_unknown_label_folder_is_an_error(tmp_path):
    data = write_dataset(tmp_path / "d", per_class=2)
    (data / "train" / "snoring").mkdir()
    with pytest.raises(DatasetLayoutError, match="snoring"):
        preprocess(cfg(data, tmp_path / "c"))


def write_bad_files(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00not really a wave file")
    sf.write(folder / "empty.wav", np.zeros((0, 2), np.float32), 16000)
    sf.write(folder / "short.wav", np.zeros((100, 2), np.float32), 16000)
    nan = np.random.default_rng(0).normal(0, 0.1, (8000, 2)).astype(np.float32)
    nan[100, 0] = np.nan
    sf.write(folder / "nan.wav", nan, 16000, subtype="FLOAT")


def test_bad_audio_skip_policy_lists_every_file(tmp_path):
    data = write_dataset(tmp_path / "d", per_class=3)
    write_bad_files(data / "train" / "quiet")
    preprocess(cfg(data, tmp_path / "c"))
    with open(tmp_path / "c" / "train.invalid.csv") as f:
        rows = {r["path"]: r["reason"] for r in csv.DictReader(f)}
    assert rows == {
        "train/quiet/corrupt.wav": "unreadable",
        "train/quiet/empty.wav": "empty",
        "train/quiet/short.wav": "too_short",
        "train/quiet/nan.wav": "non_finite",
    }
    info = validate_cache(tmp_path / "c" / "train.h5")
    assert info.n_samples == 9 and info.attrs["n_invalid"] == 4
    with h5py.File(tmp_path / "c" / "train.h5") as h5:
        assert np.isfinite(h5["spectrograms"][:]).all()
        assert not any("nan" in p or "empty" in p for p in h5["paths"].asstr()[:])


@pytest.mark.parametrize("bad", ["corrupt.wav", "empty.wav", "short.wav", "nan.wav"])
def test_bad_audio_error_policy_names_the_file(tmp_path, bad):
    data = write_dataset(tmp_path / "d", per_class=2)
    write_bad_files(tmp_path / "bad")
    os.replace(tmp_path / "bad" / bad, data / "train" / "snore" / bad)
    with pytest.raises(ValueError, match=bad):
        preprocess(cfg(data, tmp_path / "c", invalid_audio="error"))
    assert not (tmp_path / "c" / "train.h5").exists()
    assert not (tmp_path / "c" / ".train.h5.partial").exists()


def test_split_with_only_bad_audio_is_an_error(tmp_path):
    data = write_dataset(tmp_path / "d", per_class=1, splits=("validation", "test"))
    write_bad_files(data / "train" / "quiet")
    with pytest.raises(CacheError, match="empty"):
        preprocess(cfg(data, tmp_path / "c", splits=("train",)))
    assert not (tmp_path / "c" / "train.h5").exists()


def test_skip_existing_reuses_only_a_valid_matching_cache(tmp_path):
    data = write_dataset(tmp_path / "d", per_class=2)
    cache = tmp_path / "c"
    preprocess(cfg(data, cache, splits=("train",)))
    mtime = (cache / "train.h5").stat().st_mtime_ns
    [r] = preprocess(cfg(data, cache, splits=("train",), skip_existing=True))
    assert r.reused and (cache / "train.h5").stat().st_mtime_ns == mtime
    # a changed source file changes the fingerprint: rebuilt
    write_dataset(data, per_class=1, splits=("train",), seed=99)
    [r] = preprocess(cfg(data, cache, splits=("train",), skip_existing=True))
    assert not r.reused
    # a corrupt cache file is rebuilt, not trusted
    (cache / "train.h5").write_bytes(b"garbage")
    [r] = preprocess(cfg(data, cache, splits=("train",), skip_existing=True))
    assert not r.reused and validate_cache(cache / "train.h5").n_samples == 6
    # another task (class list) is not a match either
    [r] = preprocess(cfg(data, cache, splits=("train",), skip_existing=True, classes="quiet,snore"))
    assert not r.reused and validate_cache(cache / "train.h5").classes == ("quiet", "snore")


def test_resume_after_kill_gives_the_same_cache(tmp_path):
    data = write_dataset(tmp_path / "d", per_class=30, splits=("train",))  # 90 clips, 3 chunks
    ref = build_split(
        data, tmp_path / "ref", "train", ("quiet", "breathe", "snore"), progress=False
    )
    cache = tmp_path / "c"
    code = (
        f"from sleepsound.features.cache import build_split; build_split({str(data)!r}, "
        f"{str(cache)!r}, 'train', ('quiet','breathe','snore'), progress=False)"
    )
    proc = subprocess.run(
        crashrun.command("cache.chunk_written", 1, "-c", code), capture_output=True
    )
    assert proc.returncode == 137
    assert not (cache / "train.h5").exists()  # never a partial file under the final name
    assert (cache / ".train.h5.partial").exists()
    with pytest.raises(CacheError):
        validate_cache(cache / "train.h5")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "resuming at clip 32 of 90" in proc.stdout + proc.stderr
    assert not (cache / ".train.h5.partial").exists()
    with h5py.File(ref.path) as a, h5py.File(cache / "train.h5") as b:
        for name in ("spectrograms", "labels", "n_frames"):
            np.testing.assert_array_equal(a[name][:], b[name][:])
        assert list(a["paths"].asstr()[:]) == list(b["paths"].asstr()[:])


def test_parallel_workers_give_the_same_cache(tmp_path):
    data = write_dataset(tmp_path / "d", per_class=25, splits=("train",))
    one = build_split(
        data, tmp_path / "one", "train", ("quiet", "breathe", "snore"), progress=False
    )
    preprocess(
        PreprocessConfig(data_dir=data, cache_dir=tmp_path / "two", splits=("train",), workers=2)
    )
    with h5py.File(one.path) as a, h5py.File(tmp_path / "two" / "train.h5") as b:
        np.testing.assert_array_equal(a["spectrograms"][:], b["spectrograms"][:])


@pytest.mark.parametrize(
    "channels,shape", [("both", (6, 2, 64, 501)), ("in_ear", (6, 64, 501)), ("outer", (6, 64, 501))]
)
def test_channel_policies(tmp_path, channels, shape):
    data = write_dataset(tmp_path / "d", per_class=2)
    preprocess(cfg(data, tmp_path / "c", splits=("test",), channels=channels))
    info = validate_cache(tmp_path / "c" / "test.h5")
    with h5py.File(info.path) as h5:
        assert h5["spectrograms"].shape == shape
    assert info.n_channels == (2 if channels == "both" else 1)
    assert info.attrs["channels"] == channels


def test_validate_cache_names_file_and_problem(tmp_path):
    path = tmp_path / "train.h5"
    with pytest.raises(CacheError, match="not found"):
        validate_cache(path)
    path.write_bytes(b"nope")
    with pytest.raises(CacheError, match="train.h5.*not a readable HDF5"):
        validate_cache(path)
    with h5py.File(path, "w") as h5:
        h5["spectrograms"] = np.zeros((2, 64, 10), np.float32)
        h5["labels"] = np.zeros(2, np.int64)
        h5["n_frames"] = np.zeros(2, np.int32)
        h5["paths"] = ["a", "b"]
        h5.attrs.update(
            {
                "n_samples": 2,
                "n_mels": 64,
                "max_time": 501,
                "sample_rate": 16000,
                "classes": '["quiet", "snore"]',
                "split": "train",
            }
        )
    with pytest.raises(CacheError, match=r"float32\[2, 64, 501\]"):
        validate_cache(path)
