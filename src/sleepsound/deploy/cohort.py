"""A folder of nights: one report per recording and a cohort table, resumable.

``detect_folder(nights_dir, model)`` finds every recording under ``nights_dir`` (any audio the
shared reader knows, searched recursively, sorted), runs :func:`~.detect.detect` on each into
``out_dir/<night>/`` (``<night>``: the recording's path under ``nights_dir`` without suffix,
``/`` -> ``__``), and writes ``cohort.csv`` and ``cohort.md`` (one row per night: duration, snore
index, minutes per class, partner events, scores when truth is present).

Ground truth, when present, is ``<stem>.events.csv`` beside the recording, or ``events.csv``
in a folder holding that one recording (the layout ``sleepsound synth --night`` writes).

Resumable: a night whose ``summary.json`` exists (written last) for the same recording, model
(path, and sha256 for an exported model) and settings is not redone; its row comes from that
file. A night that cannot be read gets one ``error:`` line and an ``error`` row; the others
complete.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from sleepsound.atomic import atomic_write
from sleepsound.data.audio import AUDIO_EXTENSIONS, AudioError
from sleepsound.deploy import detect as det
from sleepsound.deploy.events import EventsFileError
from sleepsound.deploy.runtime import Classifier, load_classifier
from sleepsound.deploy.screening import md_escape
from sleepsound.progress import say

COHORT_CSV = "cohort.csv"
COHORT_MD = "cohort.md"
TRUTH_SUFFIX = ".events.csv"
TRUTH_NAME = "events.csv"


@dataclass
class NightOutcome:
    night: str
    recording: Path
    status: str  # done / reused / error
    summary: dict | None = None
    error: str = ""


def find_recordings(nights_dir: Path) -> list[Path]:
    """Audio files under ``nights_dir`` (recursive, sorted, hidden files left out)."""
    if not nights_dir.is_dir():
        raise FileNotFoundError(f"{nights_dir}: not a folder of nights")
    return sorted(
        p
        for p in nights_dir.rglob("*")
        if p.is_file()
        and p.suffix.lower() in AUDIO_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(nights_dir).parts)
    )


def night_name(nights_dir: Path, recording: Path) -> str:
    return "__".join(recording.relative_to(nights_dir).with_suffix("").parts)


def truth_for(recording: Path, recordings: list[Path]) -> Path | None:
    own = recording.with_name(recording.stem + TRUTH_SUFFIX)
    if own.is_file():
        return own
    shared = recording.with_name(TRUTH_NAME)
    siblings = [r for r in recordings if r.parent == recording.parent]
    return shared if shared.is_file() and len(siblings) == 1 else None


def _finished(out: Path, recording: Path, clf: Classifier, settings: dict) -> dict | None:
    """The night's summary when it was finished with the same recording, model and settings."""
    path = out / det.SUMMARY_NAME
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = (
        isinstance(summary, dict)
        and summary.get("recording", {}).get("path") == str(recording.resolve())
        and summary.get("model", {}).get("path") == clf.identity.get("path")
        and summary.get("model", {}).get("sha256") == clf.identity.get("sha256")
        and summary.get("settings") == settings
    )
    return summary if same else None


def detect_folder(
    nights_dir: Path | str,
    model: Path | str | Classifier,
    out_dir: Path | str,
    operating_point: str | None = None,
    progress: bool = True,
    **options,
) -> list[NightOutcome]:
    """Every night of a folder (see the module docstring); returns one outcome per night."""
    nights_dir, out_dir = Path(nights_dir), Path(out_dir)
    recordings = find_recordings(nights_dir)
    if not recordings:
        raise FileNotFoundError(f"{nights_dir}: no audio recordings found")
    clf = model if isinstance(model, Classifier) else load_classifier(model)
    settings = {"operating_point": operating_point, **{k: options[k] for k in sorted(options)}}
    outcomes = []
    for k, rec in enumerate(recordings, start=1):
        name = night_name(nights_dir, rec)
        out = out_dir / name
        done = _finished(out, rec, clf, settings)
        if done is not None:
            say(f"[{k}/{len(recordings)}] {name}: already done, kept")
            outcomes.append(NightOutcome(name, rec, "reused", done))
            continue
        say(f"[{k}/{len(recordings)}] {name}")
        try:
            result = det.detect(
                rec,
                clf,
                out_dir=out,
                truth=truth_for(rec, recordings),
                operating_point=operating_point,
                progress=progress,
                settings=settings,
                **options,
            )
        except (AudioError, EventsFileError) as err:
            _error_line(str(err))
            outcomes.append(NightOutcome(name, rec, "error", None, str(err)))
            continue
        outcomes.append(NightOutcome(name, rec, "done", result.summary))
    write_cohort(out_dir, outcomes, clf.classes)
    return outcomes


def _error_line(message: str) -> None:
    """One unwrapped ``error:`` line on stderr, as the CLI writes them."""
    Console(stderr=True, soft_wrap=True).print(
        f"[bold red]error:[/] {escape(message)}", highlight=False
    )


def cohort_row(outcome: NightOutcome, classes) -> dict:
    row: dict = {"night": outcome.night, "status": outcome.status, "error": outcome.error}
    s = outcome.summary
    if s is None:
        return row
    scr = s["screening"]
    row.update(
        {
            "duration_h": round(s["recording"]["duration_s"] / 3600.0, 4),
            "snore_index_per_h": scr["snore"]["index_per_h"],
            "snore_episodes": scr["snore"]["episodes"],
            "snoring_percent": scr["snore"]["percent_of_night"],
            "longest_snore_s": scr["snore"]["longest_bout_s"],
            "partner_events": scr["partner"]["events"],
            **{f"{c}_minutes": scr["minutes"].get(c, 0.0) for c in classes},
        }
    )
    lib = (s.get("scores") or {}).get("library_scores", {})
    if "psds" in lib:
        row["psds1"] = round(lib["psds"]["psds1"]["value"], 4)
        row["psds2"] = round(lib["psds"]["psds2"]["value"], 4)
        row["collar_f1"] = round(lib["collar_f1"]["micro"], 4)
        row["segment_error_rate"] = round(lib["segment_error_rate"]["macro"], 4)
    return row


def write_cohort(out_dir: Path, outcomes: list[NightOutcome], classes) -> list[dict]:
    rows = [cohort_row(o, classes) for o in outcomes]
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / COHORT_CSV, buf.getvalue())
    lines = [
        "# Cohort",
        "",
        "Research measures from a sound classifier, not a diagnosis.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(md_escape(str(r.get(c, ""))) for c in columns) + " |" for r in rows]
    atomic_write(out_dir / COHORT_MD, "\n".join(lines) + "\n")
    return rows
