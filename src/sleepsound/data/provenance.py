"""Where data came from: every cache, run and report carries this, so synthetic results can
never be mistaken for DreamCatcher ones.

A data folder may hold ``sleepsound_source.json`` (written by ``sleepsound synth`` and
``sleepsound fetch``); any other folder is a user's own recordings, named by its fingerprint.
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


def describe_source(data_dir: Path | str, fingerprint: str | None = None) -> dict:
    """The provenance record of a data folder."""
    path = Path(data_dir) / SOURCE_FILE
    if path.is_file():
        info = json.loads(path.read_text())
        record = {k: info[k] for k in ("kind", "seed", "revision", "repo", "version") if k in info}
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
