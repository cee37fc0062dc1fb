"""Where data came from: every cache, run and report carries this, so synthetic results can
never be mistaken for DreamCatcher ones.

A data folder may hold ``sleepsound_source.json`` (written by ``sleepsound synth`` and
``sleepsound fetch``); any other folder is a user's own recordings, named by its fingerprint.
The file is checked when read: ``kind`` must be one of :data:`KIND_TITLES` and the other fields
have fixed types (short printable ``repo``/``revision``, ``version`` text or an integer, an
integer ``seed``); anything else is a :class:`SourceError` naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

SOURCE_FILE = "sleepsound_source.json"

KIND_TITLES = {
    "synthetic": "SYNTHETIC embedded earable dataset (not DreamCatcher)",
    "synthetic-night": "SYNTHETIC night recording (not DreamCatcher)",
    "dreamcatcher": "DreamCatcher",
    "folder": "user audio folder",
}


TEXT_FIELDS = ("revision", "repo", "version")  # version may also be an integer
MAX_TEXT = 200  # characters of a text field


class SourceError(ValueError):
    """A ``sleepsound_source.json`` that is unreadable or claims something it may not."""


def read_source_file(path: Path) -> dict:
    """The checked fields (kind, seed, revision, repo, version) of a source file."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"{path}: unreadable data-source record ({exc})") from None
    if not isinstance(info, dict):
        raise SourceError(f"{path}: the data-source record is not a JSON object")
    kind = info.get("kind")
    if kind not in KIND_TITLES:
        raise SourceError(
            f"{path}: unknown data-source kind {str(kind)[:40]!r} "
            f"(known kinds: {', '.join(KIND_TITLES)})"
        )
    record = {"kind": kind}
    if "seed" in info:
        if type(info["seed"]) is not int:
            raise SourceError(f"{path}: 'seed' must be an integer")
        record["seed"] = info["seed"]
    for key in TEXT_FIELDS:
        if key in info:
            value = info[key]
            if key == "version" and type(value) is int:
                record[key] = value
                continue
            if not isinstance(value, str) or len(value) > MAX_TEXT or not value.isprintable():
                raise SourceError(
                    f"{path}: {key!r} must be printable text of at most {MAX_TEXT} characters"
                )
            record[key] = value
    return record


def describe_source(data_dir: Path | str, fingerprint: str | None = None) -> dict:
    """The provenance record of a data folder; SourceError for a bad source file."""
    path = Path(data_dir) / SOURCE_FILE
    if path.is_file():
        record = read_source_file(path)
    else:
        record = {"kind": "folder"}
    record["path"] = str(Path(data_dir).resolve())
    if fingerprint:
        record["fingerprint"] = fingerprint
    return record


def source_title(source: dict | None) -> str:
    """One line for report title blocks, e.g. 'SYNTHETIC embedded ... (seed 0)'."""
    if not source:
        return "unknown data source"
    kind = source.get("kind", "unknown")
    title = KIND_TITLES.get(kind, kind)
    if "seed" in source and kind.startswith("synthetic"):
        title += f", seed {source['seed']}"
    if kind == "dreamcatcher":
        title += f" ({source.get('repo', '')}@{str(source.get('revision', ''))[:12]})"
    if kind == "folder" and source.get("fingerprint"):
        title += f" {source.get('path', '')} (fingerprint {source['fingerprint'][:12]})"
    return title
