"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

The new file gets the permissions an ordinary ``open(path, "w")`` would give it
(``0o666`` less the process umask, e.g. ``0o644``), not the ``0o600`` of a temporary file.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

_UMASK_LOCK = threading.Lock()
PROC_STATUS = "/proc/self/status"


def current_umask() -> int:
    """The process umask. Read from ``/proc/self/status`` where the kernel reports it (Linux):
    setting and restoring it, the only portable way, leaves a moment in which a file another
    thread creates gets the wrong mode; that is the fallback elsewhere (under a lock)."""
    try:
        with open(PROC_STATUS, encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def default_file_mode() -> int:
    """Mode of a newly created regular file: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a unique temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, default_file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())
