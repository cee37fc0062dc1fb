"""Temporaries of deploy outputs: named so they cannot be taken for results, removed when stale.

Every deploy output is written through :mod:`sleepsound.atomic`, whose temporary is
``.<name>.<random>.tmp`` beside the final file: hidden, with a suffix no reader opens. A process
killed mid-write (``kill -9``) leaves one behind; :func:`clean_stale` removes those of the named
outputs when the folder is next written, so they do not pile up.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

TEMP_SUFFIX = ".tmp"
# What the int8 step of older versions left in the export folder when killed (tmpXXXXXXXX/).
LEGACY_TMP_FILES = {"prepared.onnx", "dynamic.onnx", "static.onnx"}


def clean_stale(folder: Path, names: Iterable[str]) -> list[Path]:
    """Remove ``.<name>.*.tmp`` temporaries of ``names`` in ``folder`` and old ``tmp*/`` folders
    that hold only int8 candidates; returns what was removed."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for name in names:
        for tmp in folder.glob(f".{name}.*{TEMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    for sub in folder.glob("tmp*"):
        if sub.is_dir() and not sub.is_symlink():
            inside = {p.name for p in sub.iterdir()}
            if inside <= LEGACY_TMP_FILES:
                shutil.rmtree(sub, ignore_errors=True)
                removed.append(sub)
    return removed
