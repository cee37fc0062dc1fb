"""The HDF5 cache: contract, bad-audio policy, skip-existing, resume after a kill, channels."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

import crashrun
import h5py
import numpy as np
import pytest
import soundfile as sf
from conftest import write_dataset

from sleepsound.config import PreprocessConfig
from sleepsound.data.audio import DatasetLayoutError
from sleepsound.features.cache import (
    CacheError,
    build_split,
    preprocess,
    validate_cache,
    verify_cache,
)
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


# ----------------------------------------------------------------------------- issue 13

CLASSES = ("quiet", "breathe", "snore")


def _spectrogram_chunk(path) -> tuple[int, int]:
    """(byte offset, size) of the second stored chunk of the spectrograms dataset."""
    with h5py.File(path) as h5:
        info = h5["spectrograms"].id.get_chunk_info(1)
    return info.byte_offset, info.size


def _flip(path, offset: int, n: int = 64) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        data = bytearray(f.read(n))
        f.seek(offset)
        f.write(bytes(b ^ 0x5A for b in data))


def test_corrupted_bytes_fail_verification_and_are_not_reused(tmp_path):
    data = write_dataset(tmp_path / "d", per_class=12, splits=("train",))
    cache = tmp_path / "c"
    preprocess(cfg(data, cache, splits=("train",)))
    path = cache / "train.h5"
    assert verify_cache(path) is True
    with h5py.File(path) as h5:
        good = h5["spectrograms"][:]
    offset, size = _spectrogram_chunk(path)
    _flip(path, offset + size // 2)
    with pytest.raises(CacheError, match=r"train\.h5: rows? \d+"):
        verify_cache(path)
    validate_cache(path)  # the structure is intact: only the content check sees it
    [r] = preprocess(cfg(data, cache, splits=("train",), skip_existing=True))
    assert not r.reused
    assert verify_cache(path) is True
    with h5py.File(path) as h5:
        np.testing.assert_array_equal(h5["spectrograms"][:], good)


@pytest.mark.parametrize(
    "edit,why",
    [
        (lambda h5: h5["spectrograms"].__setitem__((3, 0, 0), np.float32(-7.0)), "checksum"),
        (lambda h5: h5["labels"].__setitem__(5, (h5["labels"][5] + 1) % 3), "checksum"),
        (lambda h5: h5["spectrograms"].__setitem__((2, 0, 0), np.nan), "non-finite"),
        (lambda h5: h5.attrs.__setitem__("checksum", "blake2b64-rows:00"), "attribute"),
        (lambda h5: h5.__delitem__("checksums"), "incomplete"),
    ],
    ids=["value", "label", "nan", "attr", "no-dataset"],
)
def test_verify_refuses_edited_content(tmp_path, edit, why):
    data = write_dataset(tmp_path / "d", per_class=3, splits=("test",))
    preprocess(cfg(data, tmp_path / "c", splits=("test",)))
    path = tmp_path / "c" / "test.h5"
    with h5py.File(path, "r+") as h5:
        edit(h5)
    with pytest.raises(CacheError, match=f"test.h5.*{why}"):
        verify_cache(path)


def test_verify_without_checksums_cannot_verify_but_refuses_nan(tmp_path):
    """A file of the reference tool's kind (no checksums, no n_frames/paths) is readable:
    verify says it cannot vouch for it; non-finite values are an error naming the file."""
    path = tmp_path / "ref.h5"
    with h5py.File(path, "w") as h5:
        h5["spectrograms"] = np.full((5, 64, 501), -80.0, np.float32)
        h5["labels"] = np.zeros(5, np.int64)
    assert verify_cache(path) is False
    with h5py.File(path, "r+") as h5:
        h5["spectrograms"][4, 3, 2] = np.inf
    with pytest.raises(CacheError, match="ref.h5: row 4 holds non-finite"):
        verify_cache(path)


def test_skip_existing_with_error_policy_does_not_reuse_a_cache_that_skipped_clips(tmp_path):
    data = write_dataset(tmp_path / "d", per_class=2, splits=("train",))
    (data / "train" / "quiet" / "corrupt.wav").write_bytes(b"RIFF\x00\x00not a wave")
    cache = tmp_path / "c"
    preprocess(cfg(data, cache, splits=("train",)))
    assert validate_cache(cache / "train.h5").attrs["n_invalid"] == 1
    with pytest.raises(ValueError, match="corrupt.wav"):
        preprocess(cfg(data, cache, splits=("train",), skip_existing=True, invalid_audio="error"))
    # the clean case is still reused under the error policy
    (data / "train" / "quiet" / "corrupt.wav").unlink()
    preprocess(cfg(data, cache, splits=("train",)))
    [r] = preprocess(cfg(data, cache, splits=("train",), skip_existing=True, invalid_audio="error"))
    assert r.reused


def _killed_partial(tmp_path, data, cache, chunk: int = 2):
    code = (
        f"from sleepsound.features.cache import build_split; build_split({str(data)!r}, "
        f"{str(cache)!r}, 'train', {CLASSES!r}, progress=False)"
    )
    proc = subprocess.run(
        crashrun.command("cache.chunk_written", chunk, "-c", code), capture_output=True
    )
    assert proc.returncode == 137
    return code, cache / ".train.h5.partial"


def _same_cache(a_path, b_path) -> None:
    with h5py.File(a_path) as a, h5py.File(b_path) as b:
        for name in ("spectrograms", "labels", "n_frames", "checksums"):
            np.testing.assert_array_equal(a[name][:], b[name][:])
        assert list(a["paths"].asstr()[:]) == list(b["paths"].asstr()[:])
        assert a.attrs["checksum"] == b.attrs["checksum"]


@pytest.mark.parametrize("damage", ["spectrogram-chunk", "string-heap", "truncated"])
def test_a_damaged_partial_file_is_discarded_and_one_run_recovers(tmp_path, damage):
    data = write_dataset(tmp_path / "d", per_class=30, splits=("train",))  # 90 clips, 3 chunks
    write_bad_files(data / "train" / "quiet")  # invalid rows too (a string heap to damage)
    ref = build_split(data, tmp_path / "ref", "train", CLASSES, progress=False)
    cache = tmp_path / "c"
    code, partial = _killed_partial(tmp_path, data, cache)
    if damage == "spectrogram-chunk":
        offset, size = _spectrogram_chunk(partial)
        _flip(partial, offset + size // 3, 32)
    elif damage == "string-heap":
        raw = partial.read_bytes()
        at = raw.index(b"GCOL")  # HDF5 global heap collection (variable-length strings)
        _flip(partial, at, 16)
    else:
        os.truncate(partial, partial.stat().st_size * 2 // 3)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert verify_cache(cache / "train.h5")
    _same_cache(ref.path, cache / "train.h5")
    assert "discarding" in proc.stderr and ".train.h5.partial" in proc.stderr
    assert (cache / "train.invalid.csv").read_text() == (
        tmp_path / "ref" / "train.invalid.csv"
    ).read_text()
    assert not [p.name for p in cache.iterdir() if "partial" in p.name or ".tmp" in p.name]


def test_resume_copies_the_checked_rows(tmp_path):
    """An intact partial file is resumed (not rebuilt) and gives the same cache."""
    data = write_dataset(tmp_path / "d", per_class=30, splits=("train",))
    ref = build_split(data, tmp_path / "ref", "train", CLASSES, progress=False)
    cache = tmp_path / "c"
    code, partial = _killed_partial(tmp_path, data, cache)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "resuming at clip 64 of 90" in proc.stderr
    _same_cache(ref.path, cache / "train.h5")


def test_a_second_preprocess_waits_for_the_lock_and_says_so(tmp_path):
    from filelock import FileLock

    data = write_dataset(tmp_path / "d", per_class=2, splits=("test",))
    cache = tmp_path / "c"
    cache.mkdir()
    lock = FileLock(str(cache / ".preprocess.lock"))
    lock.acquire()
    log = tmp_path / "log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            crashrun.command("never", 1, "preprocess", "--data", str(data),
                             "--cache-dir", str(cache), "--splits", "test", "--workers", "1"),
            stdout=err, stderr=err,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while "waiting" not in log.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.2)
            assert ".preprocess.lock" in log.read_text() and "waiting" in log.read_text()
            time.sleep(0.5)
            assert proc.poll() is None and not (cache / "test.h5").exists()
        finally:
            lock.release()
        assert proc.wait(timeout=120) == 0, log.read_text()
    assert verify_cache(cache / "test.h5")


def _odd_entries(folder) -> dict[str, str]:
    """Entries no reader can use, by name -> expected reason (None: any reason)."""
    folder.mkdir(parents=True, exist_ok=True)
    src = next(folder.parent.glob("*/*.wav"))
    os.link(src, os.fsencode(folder) + b"/caf\xe9-latin1.wav")  # not UTF-8
    os.mkfifo(folder / "pipe.wav")
    os.symlink("self.wav", folder / "self.wav")  # a loop
    os.symlink("missing.wav", folder / "dangling.wav")
    (folder / "sub").mkdir()
    os.symlink("..", folder / "sub" / "up")  # a folder loop
    (folder / "notes.txt").write_text("not audio")
    (folder / "phone.opus").write_bytes(b"OggS\x00garbage" * 10)
    (folder / "watch.caf").write_bytes(b"caff garbage")
    (folder / "memo.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A garbage")
    return {
        "caf\\xe9-latin1.wav": "bad_name",
        "pipe.wav": "not_a_file",
        "self.wav": "symlink_loop",
        "dangling.wav": "broken_link",
        "sub/up": "symlink_loop",
        "notes.txt": "unsupported_format",
        "phone.opus": None,
        "watch.caf": None,
        "memo.m4a": None,
    }


def test_odd_entries_are_listed_not_fatal_nor_silent(tmp_path):
    data = write_dataset(tmp_path / "d", per_class=2, splits=("train",))
    expected = {f"snore/{k}": v for k, v in _odd_entries(data / "train" / "snore").items()}
    # directly in the split folder: a loop, a FIFO and stray audio are listed, metadata is not
    os.symlink("loop", data / "train" / "loop")
    os.mkfifo(data / "train" / "fifo")
    (data / "train" / "stray.wav").write_bytes(
        (data / "train" / "quiet" / "quiet_000.wav").read_bytes()
    )
    (data / "train" / "metadata.csv").write_text("subject,night\n")
    expected.update({"loop": "symlink_loop", "fifo": "not_a_file", "stray.wav": "no_label"})
    [r] = preprocess(cfg(data, tmp_path / "c", splits=("train",)))
    assert r.n_clips == 6
    with open(tmp_path / "c" / "train.invalid.csv", encoding="utf-8") as f:
        rows = {row["path"]: row["reason"] for row in csv.DictReader(f)}
    for name, reason in expected.items():
        key = f"train/{name}"
        assert key in rows, (key, rows)
        assert reason is None or rows[key] == reason, (key, rows[key])
    assert len(rows) == len(expected), rows
    assert verify_cache(tmp_path / "c" / "train.h5")
    with pytest.raises(ValueError, match="train/fifo: not_a_file"):  # the first, by path
        preprocess(cfg(data, tmp_path / "c2", splits=("train",), invalid_audio="error"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_is_listed(tmp_path):
    data = write_dataset(tmp_path / "d", per_class=2, splits=("train",))
    locked = data / "train" / "quiet" / "quiet_000.wav"
    locked.chmod(0)
    [r] = preprocess(cfg(data, tmp_path / "c", splits=("train",)))
    assert r.n_clips == 5
    assert (
        "train/quiet/quiet_000.wav,unreadable" in (tmp_path / "c" / "train.invalid.csv").read_text()
    )


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_get_the_mode_the_umask_gives(tmp_path, umask):
    data = write_dataset(tmp_path / "d", per_class=2, splits=("test",))
    old = os.umask(umask)
    try:
        preprocess(cfg(data, tmp_path / "c", splits=("test",)))
    finally:
        os.umask(old)
    for name in ("test.h5", "test.invalid.csv"):
        assert (tmp_path / "c" / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


@pytest.mark.parametrize(
    "content,why",
    [
        ('{"kind": "dreamcatcher-verified", "seed": 1}', "unknown data-source kind"),
        ('{"kind": "synthetic", "seed": "7; rm"}', "'seed'"),
        ('{"kind": "dreamcatcher", "repo": "x\\n# Title"}', "'repo'"),
        ("[1, 2]", "not a JSON object"),
        ("{not json", "unreadable"),
    ],
)
def test_source_file_claims_are_checked(tmp_path, content, why):
    data = write_dataset(tmp_path / "d", per_class=1, splits=("test",))
    (data / "sleepsound_source.json").write_text(content)
    with pytest.raises(ValueError, match=f"sleepsound_source.json.*{why}"):
        preprocess(cfg(data, tmp_path / "c", splits=("test",)))


def test_reading_the_umask_never_changes_it(monkeypatch, tmp_path):
    """Setting and restoring the umask to read it leaves a moment in which another thread's new
    file gets mode 0600; on Linux it is read from /proc instead."""
    from sleepsound import atomic

    if not os.path.exists(atomic.PROC_STATUS):
        pytest.skip("no /proc here: the set-and-restore fallback is used")
    real = os.umask(0o022)
    os.umask(real)
    calls = []
    monkeypatch.setattr(os, "umask", lambda mask: calls.append(mask) or real)
    assert atomic.current_umask() == real
    atomic.atomic_write(tmp_path / "x.txt", "x")
    assert calls == [], f"os.umask was called with {calls}"
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o666 & ~real


def test_damaged_metadata_is_a_cache_error_naming_the_file(tmp_path):
    data = write_dataset(tmp_path / "d", per_class=1, splits=("test",))
    preprocess(cfg(data, tmp_path / "c", splits=("test",)))
    path = tmp_path / "c" / "test.h5"
    with h5py.File(path, "r+") as h5:
        h5.attrs["classes"] = "[quiet, snore"  # not JSON
    with pytest.raises(CacheError, match="test.h5: unreadable cache"):
        validate_cache(path)


class _CountingPool:
    """A real worker pool that records how many chunks were handed to it before the consumer
    took them (a spy: the real pool does the work)."""

    def __init__(self, pool):
        self.pool, self._processes = pool, pool._processes
        self.submitted = 0

    def apply_async(self, fn, args):
        self.submitted += 1
        return self.pool.apply_async(fn, args)

    def imap(self, fn, tasks):
        tasks = list(tasks)
        self.submitted += len(tasks)
        return self.pool.imap(fn, tasks)


def test_chunks_in_flight_are_bounded_whatever_the_number_of_clips(tmp_path):
    """A slow writer must not let finished feature chunks pile up in memory."""
    from sleepsound.data.discover import find_clips
    from sleepsound.features.cache import CHUNK_CLIPS, IN_FLIGHT_PER_WORKER, compute_chunks
    from sleepsound.features.cache import worker_pool as make_pool

    data = write_dataset(tmp_path / "d", per_class=2 * CHUNK_CLIPS, splits=("train",))
    clips, _ = find_clips(data, "train", CLASSES)  # 6 chunks, more than may be in flight
    real = make_pool(2)
    try:
        pool = _CountingPool(real)
        ahead = []
        for k, _ in enumerate(compute_chunks(clips, "mean", pool), start=1):
            ahead.append(pool.submitted - k)
    finally:
        real.terminate()
    assert len(ahead) == len(clips) // CHUNK_CLIPS
    assert max(ahead) <= IN_FLIGHT_PER_WORKER * 2, ahead
