"""Safe, all-or-nothing extraction of ``.tar.gz`` archives.

:func:`safe_extract_tar` checks every member itself before writing it (no absolute paths, no
``..``, no links of any kind, no device files or FIFOs, only regular files and directories) and
extracts into a temporary sibling of the destination. Only when the whole archive has been read
without error are the extracted top-level entries renamed into place, so a rejected, truncated or
corrupt archive leaves nothing half-extracted behind.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

_COPY_CHUNK = 1 << 20

MemberCheck = Callable[[PurePosixPath, tarfile.TarInfo], "str | None"]
"""Extra per-member rule: gets the normalised member path and its header, returns a reason to
reject it (or None to accept)."""

ProgressCallback = Callable[[int], None]
"""Called with the number of compressed bytes consumed so far."""


class ArchiveError(Exception):
    """An archive that cannot be extracted."""


class UnsafeArchiveError(ArchiveError):
    """A member that must not be extracted (unsafe path or type, or an unexpected layout)."""

    def __init__(self, archive: str | os.PathLike[str], member: str, reason: str) -> None:
        self.archive = str(archive)
        self.member = member
        self.reason = reason
        super().__init__(f"refusing to extract {self.archive}: member {member!r} {reason}")


class CorruptArchiveError(ArchiveError):
    """An archive that is truncated or is not a valid gzip-compressed tar file."""

    def __init__(self, archive: str | os.PathLike[str], detail: str) -> None:
        self.archive = str(archive)
        super().__init__(f"{self.archive} is not a valid, complete .tar.gz archive ({detail})")


def safe_extract_tar(
    archive_path: str | os.PathLike[str],
    dest_dir: str | os.PathLike[str],
    *,
    check_member: MemberCheck | None = None,
    progress: ProgressCallback | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Extract a ``.tar.gz`` into ``dest_dir`` all-or-nothing; return the extracted file paths.

    Args:
        archive_path: the ``.tar.gz`` file.
        dest_dir: where the archive's top-level entries end up (created if missing).
        check_member: optional extra rule applied to every member after the safety checks.
        progress: optional callback receiving the compressed bytes read so far.
        overwrite: replace top-level entries that already exist in ``dest_dir``; otherwise an
            existing entry raises :class:`FileExistsError` (before anything is moved).

    Raises:
        UnsafeArchiveError: a member fails the safety checks or ``check_member``.
        CorruptArchiveError: the file is not a gzip-compressed tar or is truncated.
    """
    archive_path = Path(archive_path)
    dest_dir = Path(dest_dir).resolve()
    dest_dir.mkdir(parents=True, exist_ok=True)
    staging = _make_staging_dir(dest_dir)
    try:
        relative_files = _extract_all(archive_path, staging, check_member, progress)
        _move_into_place(staging, dest_dir, overwrite=overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [dest_dir / rel for rel in relative_files]


def _make_staging_dir(dest_dir: Path) -> Path:
    """A fresh temporary sibling of ``dest_dir`` (same filesystem, so moves are renames).

    Falls back to a hidden folder inside ``dest_dir`` when its parent is not writable.
    """
    try:
        return Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.extract-", dir=dest_dir.parent))
    except PermissionError:
        return Path(tempfile.mkdtemp(prefix=".extract-", dir=dest_dir))


def member_path(archive: Path, member: tarfile.TarInfo) -> PurePosixPath:
    """Validate a member's name and type; return its normalised relative path.

    Raises :class:`UnsafeArchiveError` for absolute paths, ``..`` components, links, devices,
    FIFOs and any other non-regular, non-directory member.
    """
    name = member.name
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute():
        raise UnsafeArchiveError(archive, name, "has an absolute path")
    path = PurePosixPath(name)
    if ".." in path.parts:
        raise UnsafeArchiveError(archive, name, "escapes the destination with '..'")
    if member.issym() or member.islnk():
        raise UnsafeArchiveError(archive, name, f"is a link (to {member.linkname!r})")
    if member.ischr() or member.isblk():
        raise UnsafeArchiveError(archive, name, "is a device file")
    if member.isfifo():
        raise UnsafeArchiveError(archive, name, "is a FIFO")
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(archive, name, "is not a regular file or directory")
    return path


def _extract_all(
    archive: Path,
    staging: Path,
    check_member: MemberCheck | None,
    progress: ProgressCallback | None,
) -> list[PurePosixPath]:
    """Stream the archive once, checking then writing each member under ``staging``."""
    files: list[PurePosixPath] = []
    try:
        with (
            archive.open("rb") as raw,
            gzip.GzipFile(fileobj=_Counting(raw, progress), mode="rb") as unzipped,
            tarfile.open(fileobj=unzipped, mode="r|") as tar,
        ):
            for member in tar:
                path = _checked_path(archive, member, staging, check_member)
                if path is None:
                    continue
                _write_member(tar, member, staging / path)
                if member.isfile():
                    files.append(path)
            # Read to the end so gzip checks its CRC and length trailer (catches truncation).
            while unzipped.read(_COPY_CHUNK):
                pass
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise CorruptArchiveError(archive, str(err) or type(err).__name__) from None
    return files


def _checked_path(
    archive: Path, member: tarfile.TarInfo, staging: Path, check_member: MemberCheck | None
) -> PurePosixPath | None:
    """All checks for one member; None for the archive root entry (``.``)."""
    path = member_path(archive, member)
    if not path.parts:
        return None
    target = (staging / path).resolve()
    if not target.is_relative_to(staging.resolve()):
        raise UnsafeArchiveError(archive, member.name, "resolves outside the destination")
    if check_member is not None:
        reason = check_member(path, member)
        if reason is not None:
            raise UnsafeArchiveError(archive, member.name, reason)
    return path


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    """Write one (already checked) directory or regular file; never follows or creates links."""
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    source = tar.extractfile(member)
    assert source is not None  # regular files always have data
    with source, open(target, "wb") as out:
        shutil.copyfileobj(source, out, _COPY_CHUNK)
    os.utime(target, (member.mtime, member.mtime))


def _move_into_place(staging: Path, dest_dir: Path, *, overwrite: bool) -> None:
    """Rename each top-level entry of ``staging`` into ``dest_dir``."""
    entries = sorted(staging.iterdir())
    clashes = [dest_dir / e.name for e in entries if (dest_dir / e.name).exists()]
    if clashes and not overwrite:
        raise FileExistsError(f"{clashes[0]} already exists; not overwriting it")
    for entry in entries:
        target = dest_dir / entry.name
        if target.exists() or target.is_symlink():
            _remove_aside(target, staging)
        os.replace(entry, target)


def _remove_aside(target: Path, staging: Path) -> None:
    """Rename ``target`` into the staging dir (deleted with it), so the swap is quick."""
    os.replace(target, staging / f".old-{target.name}-{os.urandom(4).hex()}")


class _Counting:
    """Read-only file wrapper that reports how many bytes have been read."""

    def __init__(self, raw: BinaryIO, progress: ProgressCallback | None) -> None:
        self._raw = raw
        self._progress = progress
        self._done = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._done += len(data)
        if self._progress is not None:
            self._progress(self._done)
        return data
