"""Finding a split's clips without stopping at the first odd file.

``find_clips`` walks ``ROOT/{split}/{label}/`` (subfolders included) and returns the clips of the
task's classes plus, for every entry it cannot use, an :class:`AudioError` with a reason, so the
caller lists them in ``{split}.invalid.csv`` like other bad audio instead of failing or ignoring
them silently:

- ``bad_name``: a file name that is not UTF-8 (shown with ``\\x..`` escapes);
- ``symlink_loop`` / ``broken_link``: a symbolic link that never reaches a file;
- ``not_a_file``: a FIFO, socket or device (never opened: reading a FIFO blocks);
- ``unreadable``: a file or folder this user may not read;
- ``unsupported_format``: a file whose extension no reader here handles (hidden files, whose
  names start with a dot, are the only entries left out without a trace);
- ``no_label``: an audio file directly in the split folder, outside any label folder (other
  plain files there, e.g. metadata, are not data and are left alone).

Audio files are opened only later (``read_audio``); errors found then are listed the same way.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from sleepsound.data.audio import AUDIO_EXTENSIONS, AudioError, Clip, DatasetLayoutError
from sleepsound.taxonomy import LABEL_TO_ID, LABELS, class_index


def shown(path: Path | str) -> str:
    """A path as printable text: bytes that are not UTF-8 become ``\\xNN`` escapes (file names
    are bytes on POSIX; such a name cannot be written to CSV, HDF5 or a terminal as it is)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def find_clips(
    root: Path | str, split: str, classes: Sequence[str]
) -> tuple[list[Clip], list[AudioError]]:
    """(clips sorted by path, entries that cannot be used) of one split.

    Every label folder must be one of the nine DreamCatcher labels (an unknown folder is a
    :class:`DatasetLayoutError` naming it); folders of labels outside ``classes`` are not read.
    """
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise DatasetLayoutError(f"{shown(split_dir)}: split folder not found")
    ids = class_index(classes)
    clips: list[Clip] = []
    bad: list[AudioError] = _split_level(split_dir)
    for label_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        label = label_dir.name
        if label not in LABEL_TO_ID:
            raise DatasetLayoutError(
                f"{shown(label_dir)}: label folder {shown(label)!r} is not a DreamCatcher label "
                f"(expected one of: {', '.join(LABELS)})"
            )
        if label not in ids:
            continue
        for path, problem in _walk(label_dir, set()):
            if problem is not None:
                bad.append(problem)
            else:
                clips.append(Clip(path=path, split=split, label=label, class_id=ids[label]))
    return clips, bad


def _split_level(split_dir: Path) -> list[AudioError]:
    """Entries directly in the split folder that are not label folders but look meant as data:
    links that never resolve, special files, and audio files outside any label folder (other
    files there, e.g. metadata, are not data)."""
    bad = []
    for path in sorted(split_dir.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        try:
            info = os.stat(path)
        except OSError as exc:
            loop = exc.errno == errno.ELOOP
            reason = "symlink_loop" if loop else "broken_link" if path.is_symlink() else None
            bad.append(AudioError(shown(path), reason or "unreadable", _why(exc)))
            continue
        if not stat.S_ISREG(info.st_mode):
            bad.append(AudioError(shown(path), "not_a_file", _kind(info.st_mode)))
        elif path.suffix.lower() in AUDIO_EXTENSIONS:
            bad.append(AudioError(shown(path), "no_label", "not inside a label folder"))
    return bad


def _walk(folder: Path, seen: set[tuple[int, int]]) -> Iterator[tuple[Path, AudioError | None]]:
    """Files under ``folder`` in name order: (path, None) for an audio file, else the problem."""
    try:
        info = folder.stat()
        seen.add((info.st_dev, info.st_ino))
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: os.fsencode(e.name))
    except OSError as exc:
        yield folder, AudioError(shown(folder), "unreadable", _why(exc))
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.name.startswith("."):
            continue
        if not _is_utf8(entry.name):
            yield path, AudioError(shown(path), "bad_name", "file name is not UTF-8")
            continue
        try:
            info = os.stat(path)  # follows links
        except OSError as exc:
            loop = exc.errno == errno.ELOOP
            reason = "symlink_loop" if loop else "broken_link" if entry.is_symlink() else None
            yield path, AudioError(shown(path), reason or "unreadable", _why(exc))
            continue
        if stat.S_ISDIR(info.st_mode):
            if (info.st_dev, info.st_ino) in seen:
                yield path, AudioError(shown(path), "symlink_loop", "links back to a parent")
            else:
                yield from _walk(path, seen)
        elif not stat.S_ISREG(info.st_mode):
            yield path, AudioError(shown(path), "not_a_file", _kind(info.st_mode))
        elif path.suffix.lower() not in AUDIO_EXTENSIONS:
            what = f"{path.suffix!r}" if path.suffix else "no extension"
            yield path, AudioError(shown(path), "unsupported_format", f"{what}: not an audio file")
        elif not os.access(path, os.R_OK):
            yield path, AudioError(shown(path), "unreadable", "permission denied")
        else:
            yield path, None


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # surrogate escapes of undecodable bytes
        return False
    return True


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device or special file"
