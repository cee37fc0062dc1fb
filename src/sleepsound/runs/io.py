"""Small file helpers for run artifacts: JSON and CSV written atomically, sha256 of a file."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

from sleepsound.atomic import atomic_write


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json(path: Path | str, data) -> None:
    """Indented JSON, replaced atomically (non-JSON values via ``str``)."""
    atomic_write(Path(path), json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: Path | str):
    """Parsed JSON; raises OSError / ValueError (JSONDecodeError, UnicodeDecodeError)."""
    return json.loads(Path(path).read_text())


def write_csv(path: Path | str, header: list[str], rows: list[list]) -> None:
    """A header and rows, replaced atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write(Path(path), buf.getvalue())
