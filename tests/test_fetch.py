"""fetch_dreamcatcher against a hub we run on 127.0.0.1; safe_extract_tar on hostile archives."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path

import huggingface_hub
import pytest
import soundfile as sf
from filelock import FileLock
from hubserver import FakeHub, split_clips, tar_entry, tar_gz
from huggingface_hub import constants
from huggingface_hub.utils import close_session

from sleepsound.data import fetch as fetch_module
from sleepsound.data.archive import CorruptArchiveError, UnsafeArchiveError, safe_extract_tar
from sleepsound.data.fetch import (
    DREAMCATCHER_REPO,
    DREAMCATCHER_REVISION,
    SPLITS,
    AccessError,
    FetchError,
    IntegrityError,
    archive_filename,
    fetch_dreamcatcher,
    scrub,
)
from sleepsound.data.provenance import SOURCE_FILE

SECRET = "hf_SECRETxyz"
GOOD_TOKEN = "hf_GOODtoken123"


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clips() -> dict[str, dict[str, bytes]]:
    """Per split: {"<split>/<label>/<file>.wav": bytes}."""
    return {split: split_clips(split) for split in SPLITS}


@pytest.fixture(scope="module")
def archives(clips) -> dict[str, bytes]:
    """The repo's files: data/{split}.tar.gz."""
    return {archive_filename(split): tar_gz(clips[split]) for split in SPLITS}


@pytest.fixture
def hf_home(tmp_path, monkeypatch) -> Path:
    """An isolated huggingface_hub: its own home, cache and login file; no token, not offline."""
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for var in ("HF_HUB_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    # huggingface_hub reads these at import time.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    return home


@pytest.fixture
def hub(hf_home, archives, monkeypatch):
    """A running FakeHub serving the three archives; HF_ENDPOINT points at it."""
    monkeypatch.setattr(fetch_module, "_BACKOFF_SECONDS", 0.01)  # retry at once
    with FakeHub(DREAMCATCHER_REPO, DREAMCATCHER_REVISION, dict(archives)) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server
    close_session()  # drop pooled connections to this server


@pytest.fixture
def out(tmp_path) -> Path:
    return tmp_path / "work" / "dreamcatcher"


def _files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _assert_split_extracted(out: Path, split: str, clips: dict[str, bytes]) -> None:
    assert _files_under(out / split) == {k.removeprefix(f"{split}/"): v for k, v in clips.items()}


TRAIN = archive_filename("train")


def _partial(out: Path, name: str = TRAIN) -> Path:
    """Where an interrupted download of ``name`` waits to be resumed."""
    return out / ".downloads" / f"{name}.incomplete"


def _ranges(hub: FakeHub, name: str = TRAIN) -> list[str | None]:
    """The Range header of each GET of ``name`` (None: the whole file was asked for)."""
    return [r.headers.get("range") for r in hub.downloads(name)]


def _assert_train_fetched(result, out: Path, clips, archives) -> None:
    """The train split arrived whole: verified, extracted, nothing partial left behind."""
    assert result.splits["train"].sha256 == hashlib.sha256(archives[TRAIN]).hexdigest()
    assert result.splits["train"].size == len(archives[TRAIN])
    _assert_split_extracted(out, "train", clips["train"])
    assert not list((out / ".downloads").rglob("*.incomplete*"))


# --- fetch -----------------------------------------------------------------------------------


def test_fetch_all_splits(hub, out, clips, archives):
    result = fetch_dreamcatcher(out, progress=False)

    assert not result.already_present
    assert set(result.splits) == set(SPLITS)
    for split in SPLITS:
        _assert_split_extracted(out, split, clips[split])
        info = result.splits[split]
        assert info.n_files == len(clips[split])
        assert info.size == len(archives[archive_filename(split)])
    wav = next((out / "train" / "snore").glob("*.wav"))
    audio, sr = sf.read(wav)
    assert sr == 16_000 and audio.shape[1] == 2

    source = json.loads((out / SOURCE_FILE).read_text())
    assert source["kind"] == "dreamcatcher"
    assert (source["repo"], source["revision"]) == (DREAMCATCHER_REPO, DREAMCATCHER_REVISION)
    assert source["splits"]["test"]["n_files"] == len(clips["test"])
    assert len(source["splits"]["test"]["sha256"]) == 64
    for split in SPLITS:
        marker = json.loads((out / f".complete-{split}.json").read_text())
        assert marker["sha256"] == source["splits"][split]["sha256"]
    # archives are removed after extraction; no staging folders are left behind
    assert not list((out / ".downloads").rglob("*.tar.gz"))
    assert sorted(p.name for p in out.parent.iterdir()) == ["dreamcatcher"]


def test_second_call_is_a_noop(hub, out, capsys):
    fetch_dreamcatcher(out, progress=False)
    hub.requests.clear()

    result = fetch_dreamcatcher(out, progress=True)

    assert result.already_present
    assert hub.requests == []
    assert "already present" in capsys.readouterr().err


def test_resume_after_cut_connection(hub, out, clips, archives):
    """Within one call: the cut GET is retried from where it stopped."""
    hub.cut_after_bytes = len(archives[TRAIN]) // 2

    result = fetch_dreamcatcher(out, splits=["train"], progress=False)

    assert _ranges(hub) == [None, f"bytes={hub.cut_after_bytes}-"]
    assert hub.bytes_sent == len(archives[TRAIN])  # nothing was sent twice
    _assert_train_fetched(result, out, clips, archives)


def test_interrupted_download_resumes_in_a_later_call(hub, out, clips, archives):
    """A call that gives up keeps what arrived; the next call asks only for the rest."""
    size = len(archives[TRAIN])
    hub.cut_after_bytes = size // 3

    with pytest.raises(FetchError, match="rerun `sleepsound fetch dreamcatcher` to resume") as err:
        fetch_dreamcatcher(out, splits=["train"], progress=False, retries=0)
    assert not isinstance(err.value, (AccessError, IntegrityError))
    assert str(_partial(out)) in str(err.value)
    kept = _partial(out).stat().st_size
    assert 0 < kept < size
    assert not (out / "train").exists() and not (out / ".complete-train.json").exists()

    hub.requests.clear()
    result = fetch_dreamcatcher(out, splits=["train"], progress=False, retries=0)

    assert _ranges(hub) == [f"bytes={kept}-"]
    assert hub.bytes_sent == size // 3 + (size - kept)
    _assert_train_fetched(result, out, clips, archives)


def test_resume_after_killed_process(hub, out, clips, archives):
    """SIGKILL a fetch mid-download (no cleanup runs); a new fetch resumes where it died."""
    size = len(archives[TRAIN])
    hub.bytes_per_second = size / 4  # the whole archive would take about 4 s
    code = (
        "from sleepsound.data.fetch import fetch_dreamcatcher; "
        f"fetch_dreamcatcher({str(out)!r}, splits=['train'], progress=False)"
    )
    proc = subprocess.Popen(  # inherits HF_ENDPOINT and HF_HOME from the fixtures
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while not (_partial(out).is_file() and _partial(out).stat().st_size >= size // 5):
            assert proc.poll() is None, proc.communicate()[0].decode()
            assert time.monotonic() < deadline, "the download did not start"
            time.sleep(0.01)
        proc.kill()
    finally:
        proc.kill()
        proc.wait()
    kept = _partial(out).stat().st_size
    assert size // 5 <= kept < size

    hub.bytes_per_second = None
    hub.requests.clear()
    result = fetch_dreamcatcher(out, splits=["train"], progress=False)

    assert _ranges(hub) == [f"bytes={kept}-"]
    assert hub.bytes_sent < 1.5 * size  # both runs together: what arrived was not sent again
    _assert_train_fetched(result, out, clips, archives)


def test_server_errors_are_retried(hub, out, clips, archives):
    """408/429/5xx answers are retried (resuming); too many in a row give up, keeping the bytes."""
    hub.cut_after_bytes = len(archives[TRAIN]) // 2
    hub.fail_downloads = [None, 503, 429]  # cut, two errors, then the rest: three retries
    result = fetch_dreamcatcher(out, splits=["train"], progress=False, retries=3)
    resume = f"bytes={hub.cut_after_bytes}-"
    assert _ranges(hub) == [None] + [resume] * 3
    _assert_train_fetched(result, out, clips, archives)


def test_server_errors_exhaust_retries(hub, out):
    hub.fail_downloads = [503] * 3
    with pytest.raises(FetchError, match=r"HTTP 503.*rerun `sleepsound fetch dreamcatcher`"):
        fetch_dreamcatcher(out, splits=["train"], progress=False, retries=2)
    assert len(hub.downloads(TRAIN)) == 3


@pytest.mark.parametrize(("mode", "second_call"), [("ignore", ["R"]), ("refuse", ["R", None])])
def test_server_not_resuming_restarts_from_zero(hub, out, clips, archives, mode, second_call):
    """A 200 to a Range GET (whole file) or a 416: start again from zero, still verified."""
    hub.cut_after_bytes = len(archives[TRAIN]) // 2
    with pytest.raises(FetchError):
        fetch_dreamcatcher(out, splits=["train"], progress=False, retries=0)
    kept = _partial(out).stat().st_size

    hub.ranges = mode
    hub.requests.clear()
    result = fetch_dreamcatcher(out, splits=["train"], progress=False, retries=0)

    resume = f"bytes={kept}-"
    assert _ranges(hub) == [resume if r == "R" else r for r in second_call]
    _assert_train_fetched(result, out, clips, archives)


def test_redirect_to_cdn_drops_the_token(gated_hub, out, clips, archives, monkeypatch):
    """Archive bytes come from another host:port; the Authorization header stays on the hub.

    The CDN also cuts the first transfer, so the resumed GET is redirected too.
    """
    monkeypatch.setenv("HF_TOKEN", GOOD_TOKEN)
    with FakeHub("cdn/none", "none", dict(archives)) as cdn:
        assert cdn.url != gated_hub.url  # another port: another origin
        gated_hub.redirect_to = cdn.url
        cdn.cut_after_bytes = len(archives[TRAIN]) // 2
        result = fetch_dreamcatcher(out, splits=["train"], progress=False)

    hub_gets, cdn_gets = gated_hub.downloads(TRAIN), cdn.downloads(TRAIN)
    assert [r.headers["authorization"] for r in hub_gets] == [f"Bearer {GOOD_TOKEN}"] * 2
    assert gated_hub.bytes_sent == 0
    assert [r.headers.get("range") for r in cdn_gets] == [None, f"bytes={cdn.cut_after_bytes}-"]
    for request in cdn.requests:
        assert "authorization" not in request.headers
        assert not [v for v in request.headers.values() if GOOD_TOKEN in v]
    _assert_train_fetched(result, out, clips, archives)


def test_partial_of_another_file_is_not_resumed(hub, out, clips, archives):
    """Bytes without a matching sidecar (another revision, a foreign file) are thrown away."""
    _partial(out).parent.mkdir(parents=True)
    _partial(out).write_bytes(b"bytes of some other version of the archive")

    result = fetch_dreamcatcher(out, splits=["train"], progress=False)

    assert _ranges(hub) == [None]
    _assert_train_fetched(result, out, clips, archives)


def test_downloaded_archive_is_reused(hub, out, clips, archives):
    """A run stopped after the download (here: markers removed) verifies and reuses it."""
    fetch_dreamcatcher(out, splits=["train"], progress=False, keep_archives=True)
    (out / ".complete-train.json").unlink()
    hub.requests.clear()

    result = fetch_dreamcatcher(out, splits=["train"], progress=False)

    assert hub.downloads() == []
    _assert_train_fetched(result, out, clips, archives)
    assert not (out / ".downloads" / TRAIN).exists()


def test_concurrent_fetch_is_refused(hub, out, clips):
    (out / ".downloads").mkdir(parents=True)
    with FileLock(out / ".downloads" / ".lock"):  # as another fetch holds it
        with pytest.raises(FetchError, match="another process is already fetching"):
            fetch_dreamcatcher(out, splits=["train"], progress=False)
    assert hub.requests == []

    fetch_dreamcatcher(out, splits=["train"], progress=False)
    _assert_split_extracted(out, "train", clips["train"])


def test_download_progress_without_a_terminal(hub, out, capsys, monkeypatch):
    monkeypatch.setattr(fetch_module, "_PROGRESS_EVERY_SECONDS", 0.0)
    fetch_dreamcatcher(out, splits=["train"], progress=True)

    err = capsys.readouterr().err
    assert "train: downloading data/train.tar.gz" in err
    assert "MB (100%), " in err and "MB/s" in err  # periodic lines (here: every chunk)
    assert "train: downloaded " in err and "verifying size and sha256" in err


def test_corrupt_download_is_rejected_and_removed(hub, out, clips):
    hub.corrupt = True
    with pytest.raises(IntegrityError) as err:
        fetch_dreamcatcher(out, splits=["train"], progress=False)

    message = str(err.value)
    assert "data/train.tar.gz" in message and "expected sha256" in message
    assert err.value.expected != err.value.actual
    assert not (out / ".downloads" / "data" / "train.tar.gz").exists()
    assert not list((out / ".downloads").rglob("*.incomplete*"))
    assert not (out / "train").exists() and not (out / ".complete-train.json").exists()

    hub.corrupt = False
    hub.requests.clear()
    fetch_dreamcatcher(out, splits=["train"], progress=False)  # downloads again, from zero
    assert _ranges(hub) == [None]
    _assert_split_extracted(out, "train", clips["train"])


@pytest.mark.parametrize(
    ("archive", "member"),
    [
        ({"../evil.wav": b"x"}, "../evil.wav"),
        ({"/tmp/abs-evil.wav": b"x"}, "/tmp/abs-evil.wav"),
        ({"validation/snore/a.wav": b"x"}, "validation/snore/a.wav"),
        ({"train/dog/a.wav": b"x"}, "train/dog/a.wav"),
        ({"train/a.wav": b"x"}, "train/a.wav"),
    ],
)
def test_bad_archive_is_rejected_naming_the_member(hub, out, clips, archive, member):
    good, bad = clips["train"], [tar_entry(n, size=len(d)) for n, d in archive.items()]
    hub.files[archive_filename("train")] = tar_gz(good, extra=bad)

    with pytest.raises(UnsafeArchiveError) as err:
        fetch_dreamcatcher(out, splits=["train"], progress=False)

    assert member in str(err.value) and "train.tar.gz" in str(err.value)
    assert not (out / "train").exists() and not (out / ".complete-train.json").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["dreamcatcher"]
    assert not (out.parent / "evil.wav").exists() and not Path("/tmp/abs-evil.wav").exists()


def test_symlink_in_served_archive_is_rejected(hub, out, clips):
    link = tar_entry("train/snore/passwd.wav", tarfile.SYMTYPE, "/etc/passwd")
    hub.files[archive_filename("train")] = tar_gz(clips["train"], extra=[link])

    with pytest.raises(UnsafeArchiveError, match="train/snore/passwd.wav"):
        fetch_dreamcatcher(out, splits=["train"], progress=False)
    assert not (out / "train").exists()


@pytest.fixture
def gated_hub(hub):
    hub.gated = True
    hub.tokens = {GOOD_TOKEN: True, SECRET: False}
    return hub


def _assert_access_steps(message: str) -> None:
    for step in (
        "https://huggingface.co/datasets/THU-PI-Sensing/DreamCatcher",
        "https://huggingface.co/settings/tokens",
        "hf auth login",
        "huggingface-cli login",
        "export HF_TOKEN=",
        "sleepsound fetch dreamcatcher",
    ):
        assert step in message


def test_gated_without_token(gated_hub, out):
    with pytest.raises(AccessError) as err:
        fetch_dreamcatcher(out, progress=False)
    assert "no Hugging Face token" in str(err.value)
    _assert_access_steps(str(err.value))
    assert gated_hub.bytes_sent == 0
    assert not list((out / ".downloads").rglob("*.incomplete*"))


def test_gated_with_wrong_token(gated_hub, out):
    with pytest.raises(AccessError, match="rejected your token") as err:
        fetch_dreamcatcher(out, token="hf_wrongTOKEN", progress=False)
    _assert_access_steps(str(err.value))


def test_gated_with_token_lacking_access(gated_hub, out, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    with pytest.raises(AccessError, match="no access"):
        fetch_dreamcatcher(out, progress=False)
    assert gated_hub.requests[-1].headers["authorization"] == f"Bearer {SECRET}"


def test_gated_with_good_token_from_env(gated_hub, out, clips, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", GOOD_TOKEN)
    fetch_dreamcatcher(out, splits=["test"], progress=False)
    _assert_split_extracted(out, "test", clips["test"])


@pytest.mark.parametrize("has_access", [False, True])
def test_token_never_leaks(gated_hub, out, monkeypatch, capsys, caplog, has_access):
    """The token appears in no output, log record, exception text or file we write."""
    gated_hub.tokens[SECRET] = has_access
    monkeypatch.setenv("HF_TOKEN", SECRET)
    caplog.set_level(logging.DEBUG)

    texts = []
    try:
        result = fetch_dreamcatcher(out, progress=True)
        assert not result.already_present
    except AccessError as err:
        assert not has_access
        texts += [str(err), repr(err), "".join(traceback.format_exception(err))]
    captured = capsys.readouterr()
    texts += [captured.out, captured.err, caplog.text]
    texts += [str(r.msg) + str(r.args) for r in caplog.records]
    if has_access:
        assert "MB/s" in captured.err  # the summary line was printed
    assert gated_hub.requests[-1].headers["authorization"] == f"Bearer {SECRET}"

    assert not [t for t in texts if SECRET in t]
    leaking = [
        p for p in out.parent.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()
    ]
    assert leaking == []


def test_scrub_removes_tokens():
    assert scrub(f"GET failed with Bearer {SECRET}", SECRET) == "GET failed with Bearer ***"
    assert "hf_" not in scrub("token hf_" + "a1" * 17)


def test_unknown_split(hub, out):
    with pytest.raises(ValueError, match="unknown split"):
        fetch_dreamcatcher(out, splits=["dev"], progress=False)


def test_unreachable_hub(hf_home, out, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(FetchError, match="could not reach the hub at http://127.0.0.1:9"):
        fetch_dreamcatcher(out, progress=False)


def test_endpoint_is_read_at_call_time(hub, out):
    assert huggingface_hub.constants.ENDPOINT != hub.url
    fetch_dreamcatcher(out, splits=["validation"], progress=False)
    assert hub.downloads("data/validation.tar.gz")


# --- safe_extract_tar ------------------------------------------------------------------------


GOOD = {"train/quiet/a.wav": b"a" * 100, "train/snore/b.wav": b"b" * 200}


def _archive(tmp_path: Path, extra=(), members=GOOD) -> Path:
    path = tmp_path / "x.tar.gz"
    path.write_bytes(tar_gz(members, extra=extra))
    return path


def _assert_nothing_extracted(tmp_path: Path, dest: Path) -> None:
    assert not dest.exists() or not any(dest.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) in (["x.tar.gz"], ["dest", "x.tar.gz"])


def test_extracts_good_archive(tmp_path):
    dest = tmp_path / "dest"
    paths = safe_extract_tar(_archive(tmp_path), dest)
    assert sorted(p.relative_to(dest).as_posix() for p in paths) == sorted(GOOD)
    assert _files_under(dest) == GOOD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "x.tar.gz"]


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (tar_entry("../evil.wav", size=3), "'..'"),
        (tar_entry("train/../../evil.wav", size=3), "'..'"),
        (tar_entry("/tmp/abs-evil.wav", size=3), "absolute"),
        (tar_entry("train/snore/passwd", tarfile.SYMTYPE, "/etc/passwd"), "link"),
        (tar_entry("train/snore/inside", tarfile.SYMTYPE, "../quiet/a.wav"), "link"),
        (tar_entry("train/snore/hard", tarfile.LNKTYPE, "train/quiet/a.wav"), "link"),
        (tar_entry("train/snore/null", tarfile.CHRTYPE), "device"),
        (tar_entry("train/snore/sda", tarfile.BLKTYPE), "device"),
        (tar_entry("train/snore/fifo", tarfile.FIFOTYPE), "FIFO"),
    ],
)
def test_rejects_unsafe_member(tmp_path, entry, reason):
    archive, dest = _archive(tmp_path, extra=[entry]), tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError, match=reason) as err:
        safe_extract_tar(archive, dest)
    assert err.value.member == entry.name and entry.name in str(err.value)
    assert str(archive) in str(err.value)
    _assert_nothing_extracted(tmp_path, dest)
    assert not (tmp_path.parent / "evil.wav").exists() and not Path("/tmp/abs-evil.wav").exists()


def test_member_check_rejects(tmp_path):
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError, match="train/snore/b.wav.*is not wanted"):
        safe_extract_tar(
            _archive(tmp_path),
            dest,
            check_member=lambda path, _: "is not wanted" if path.name == "b.wav" else None,
        )
    _assert_nothing_extracted(tmp_path, dest)


def test_rejects_corrupt_gzip(tmp_path):
    archive, dest = tmp_path / "x.tar.gz", tmp_path / "dest"
    archive.write_bytes(b"\x1f\x8b\x08\x00" + b"not really gzip" * 20)
    with pytest.raises(CorruptArchiveError, match="x.tar.gz"):
        safe_extract_tar(archive, dest)
    _assert_nothing_extracted(tmp_path, dest)


def test_rejects_plain_garbage(tmp_path):
    archive, dest = tmp_path / "x.tar.gz", tmp_path / "dest"
    archive.write_bytes(b"hello, this is not an archive")
    with pytest.raises(CorruptArchiveError, match="x.tar.gz"):
        safe_extract_tar(archive, dest)


def test_rejects_truncated_archive(tmp_path):
    archive, dest = _archive(tmp_path), tmp_path / "dest"
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) - 10])  # loses the gzip trailer only
    with pytest.raises(CorruptArchiveError, match="x.tar.gz"):
        safe_extract_tar(archive, dest)
    _assert_nothing_extracted(tmp_path, dest)


def test_rejects_tar_that_is_not_a_tar(tmp_path):
    archive, dest = tmp_path / "x.tar.gz", tmp_path / "dest"
    archive.write_bytes(gzip.compress(b"\x01" * 5000))
    with pytest.raises(CorruptArchiveError):
        safe_extract_tar(archive, dest)
    _assert_nothing_extracted(tmp_path, dest)


def test_existing_destination_needs_overwrite(tmp_path):
    archive, dest = _archive(tmp_path), tmp_path / "dest"
    (dest / "train").mkdir(parents=True)
    (dest / "train" / "old.wav").write_bytes(b"old")
    with pytest.raises(FileExistsError):
        safe_extract_tar(archive, dest)
    assert _files_under(dest) == {"train/old.wav": b"old"}

    safe_extract_tar(archive, dest, overwrite=True)
    assert _files_under(dest) == GOOD
