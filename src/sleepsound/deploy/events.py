"""From window probabilities to sleep-sound events, and how events are scored: pure functions.

Detection classifies overlapping windows (``window`` seconds every ``hop`` seconds). The timeline
is cut into *hop intervals* ``[j * hop, (j + 1) * hop)``; a window *covers* an interval when the
interval's centre lies inside the window. Each interval gets class probabilities from the windows
covering it (:data:`HOP_RULES`) and a label: the arg-max, or with an operating point the most
probable class above its threshold (:func:`decide`).

Hop rule ``localised`` (the default): the interval's background probability is the **largest**
background probability of its covering windows, the other classes share the rest in proportion
to their mean over those windows. Models are trained on clips of 0.5-3 s zero-padded to the
window, labelled as a whole, so a window holding any part of a sound is called that sound (on
the demo night a window with 0.5 s of snoring at its end already says snore 0.93, the window one
hop earlier quiet 0.90). An interval is then inside a sound exactly when *every* window covering
it hears the sound, and the max of the background finds the sound's edges to one hop. The old
rule ``mean`` (every class the mean of the covering windows) labels an interval as the sound as
soon as most covering windows hold a bit of it: every edge moved outwards by about half a window
(``(window - hop) / 2``, 2 s at 5 s / 1 s), and gaps shorter than ``window + (window - hop)
/ 2`` vanished (``localised``: shorter than a window).
The price of ``localised``: one window wrongly called background inside a sound cuts a
window-long hole (measured: no such window among 615 windows lying inside true breathe/snore
events of four synthetic nights; largest background probability 0.04). Tasks without the
background class use the mean. Consecutive intervals with the same label
form segments; two segments of the same non-background label separated by at most ``max_gap``
seconds are bridged (the gap takes their label), then non-background segments shorter than
``min_duration`` seconds fall back to the background. What remains of each non-background label
is an :class:`Event` (label, start, end, mean probability of its label over its intervals). The
background label (``quiet``) is never an event; its time is counted instead.

Scoring follows the event-based convention of DCASE / sed_eval:

* a predicted and a true event *match* when they have the same label, their onsets differ by at
  most ``onset_tol`` seconds and their offsets by at most ``max(offset_tol, offset_frac * true
  duration)`` seconds;
* matching is greedy and one-to-one: every candidate pair is ranked by onset difference (then
  offset difference) and taken when neither event is matched yet;
* per label, matches are true positives, unmatched predictions false positives and unmatched
  truths false negatives; the micro average sums these counts over labels.

``frame_accuracy`` compares the two labelings on a regular time grid, background = ``quiet``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sleepsound.taxonomy import LABEL_TO_ID, LABELS

BACKGROUND = LABELS[0]  # "quiet": counted, never an event
DEFAULT_MIN_DURATION = 2.0  # s: shorter non-background segments fall back to the background
DEFAULT_MAX_GAP = 2.0  # s: same-label segments this close are bridged into one event
ONSET_TOL = 1.0  # s: one hop at the default detection settings
OFFSET_TOL = 1.0  # s
OFFSET_FRAC = 0.2  # offsets may also differ by 20 % of the true event's duration
FRAME_RESOLUTION = 0.1  # s: grid of frame_accuracy
HOP_RULES = ("localised", "mean")  # how covering windows combine into a hop interval
DEFAULT_HOP_RULE = "localised"
TRUTH_COLUMNS = ("label", "start", "end")


class EventsFileError(ValueError):
    """An events CSV that cannot be read as ``label,start,end`` rows."""


@dataclass(frozen=True)
class Event:
    """One detected (or true) sound event, times in seconds from the start of the recording."""

    label: str
    start: float
    end: float
    confidence: float = 1.0

    @property
    def duration(self) -> float:
        return self.end - self.start


# ----------------------------------------------------------------------------- windows -> hops


def n_hops(duration: float, hop: float) -> int:
    """Number of hop intervals covering ``duration`` seconds (the last one may be partial)."""
    return max(1, math.ceil(round(duration / hop, 9)))


def covering_windows(windows_per_hop: float, n: int, n_windows: int) -> tuple[np.ndarray, ...]:
    """(first, end_exclusive) window of the windows covering each of ``n`` hop intervals.

    Window ``w`` spans ``[w, w + windows_per_hop)`` in hop units (``windows_per_hop`` =
    window / hop) and covers interval ``j`` when ``j + 0.5`` lies inside it. An interval no window
    covers (possible only past the last window) gets the last window.
    """
    j = np.arange(n)
    lo = np.clip(np.floor(j + 0.5 - windows_per_hop).astype(int) + 1, 0, n_windows)
    hi = np.clip(j + 1, 0, n_windows)  # exclusive
    empty = hi <= lo
    lo[empty], hi[empty] = n_windows - 1, n_windows
    return lo, hi


def hop_probabilities(
    window_probs: np.ndarray, windows_per_hop: float, n: int, background: int | None = None
) -> np.ndarray:
    """Probabilities of each of ``n`` hop intervals from the windows covering it
    (:func:`covering_windows`).

    ``background`` None: the mean of the covering windows (hop rule ``mean``). ``background`` =
    the background's class index: hop rule ``localised`` (module docstring): the background
    takes the largest background probability of the covering windows, every other class its
    mean scaled so that the row sums to one (all background when the means are all background).

    window_probs: [W, K]. Returns [n, K] float64.
    """
    probs = np.asarray(window_probs, dtype=np.float64)
    lo, hi = covering_windows(windows_per_hop, n, probs.shape[0])
    csum = np.vstack([np.zeros((1, probs.shape[1])), np.cumsum(probs, axis=0)])
    mean = (csum[hi] - csum[lo]) / (hi - lo)[:, None]
    if background is None:
        return mean
    bg = _window_max(probs[:, background], lo, hi)
    others = np.delete(np.arange(probs.shape[1]), background)
    rest = mean[:, others].sum(axis=1)
    out = np.zeros_like(mean)
    nonzero = rest > 0
    out[np.ix_(nonzero, others)] = (
        mean[np.ix_(nonzero, others)] * ((1.0 - bg[nonzero]) / rest[nonzero])[:, None]
    )
    out[:, background] = np.where(nonzero, bg, 1.0)
    return out


def _window_max(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """max(values[lo[j]:hi[j]]) for every j (each span non-empty, at most a window long)."""
    width = int((hi - lo).max()) if len(lo) else 0
    out = np.full(len(lo), -np.inf)
    for k in range(width):  # a window holds a handful of hops: one vector pass per offset
        idx = np.minimum(lo + k, hi - 1)
        out = np.maximum(out, values[idx])
    return out


# ----------------------------------------------------------------------------- hops -> events


def decide(
    probs: np.ndarray, classes, thresholds: dict[str, float] | None, background: str = BACKGROUND
) -> np.ndarray:
    """Label index per row of ``probs`` [N, K]: argmax when ``thresholds`` is None; otherwise
    the most probable class among those at or above their threshold (``{label: t}``), the
    background when none is (argmax when the task has no background). See
    :mod:`sleepsound.deploy.operating`."""
    probs = np.asarray(probs)
    if thresholds is None:
        return probs.argmax(axis=1)
    t = np.array([thresholds.get(c, np.inf) if c != background else np.inf for c in classes])
    passing = np.where(probs >= t[None, :], probs, -np.inf)
    best = passing.argmax(axis=1)
    none = ~np.isfinite(passing.max(axis=1))
    if background in classes:
        best[none] = list(classes).index(background)
    else:
        best[none] = probs[none].argmax(axis=1)
    return best


def runs(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """Maximal runs of equal values: [(value, first, end_exclusive), ...]."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [labels.size]])
    return [(int(labels[s]), int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def bridge_gaps(labels: np.ndarray, background: int, max_gap_hops: int) -> np.ndarray:
    """Give the gap between two runs of the same non-background label that label when the gap
    lasts at most ``max_gap_hops`` intervals (whatever the gap's labels are)."""
    out = np.array(labels, copy=True)
    if max_gap_hops <= 0:
        return out
    segments = runs(out)
    i = 0
    while i < len(segments):
        value, _, end = segments[i]
        k = i
        if value != background:
            for m in range(i + 1, len(segments)):
                if segments[m][1] - end > max_gap_hops:
                    break
                if segments[m][0] == value:
                    k = m
            out[end : segments[k][1]] = value
        i = k if k > i else i + 1  # a bridged run may bridge on from its last segment
    return out


def drop_short(labels: np.ndarray, background: int, min_hops: int) -> np.ndarray:
    """Runs of a non-background label shorter than ``min_hops`` intervals become background."""
    out = np.array(labels, copy=True)
    for value, first, end in runs(out):
        if value != background and end - first < min_hops:
            out[first:end] = background
    return out


def smooth_labels(
    labels: np.ndarray,
    background: int,
    hop: float,
    min_duration: float = DEFAULT_MIN_DURATION,
    max_gap: float = DEFAULT_MAX_GAP,
) -> np.ndarray:
    """Gap bridging, then the minimum duration (both in seconds, rounded to whole hops)."""
    bridged = bridge_gaps(labels, background, int(round(max_gap / hop)))
    return drop_short(bridged, background, int(math.ceil(round(min_duration / hop, 9))))


def labels_to_events(
    labels: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    hop: float,
    duration: float,
    background: str = BACKGROUND,
) -> list[Event]:
    """Non-background runs of per-hop labels as events; the last one ends at ``duration``.

    confidence = mean probability of the event's label over its intervals.
    """
    events = []
    for value, first, end in runs(labels):
        if classes[value] == background:
            continue
        conf = float(np.mean(probs[first:end, value]))
        stop = min(end * hop, duration)
        events.append(Event(classes[value], round(first * hop, 6), round(stop, 6), conf))
    return events


def split_events(
    events: Sequence[Event], cuts: Iterable[float], probs: np.ndarray, classes, hop: float
) -> list[Event]:
    """Cut every event at the ``cuts`` (seconds) strictly inside it; each piece's confidence is
    the mean probability of its label over its hop intervals (``probs`` [n, K])."""
    cuts = sorted(set(cuts))
    out = []
    for e in events:
        inner = [c for c in cuts if e.start < c < e.end]
        if not inner:
            out.append(e)
            continue
        k = list(classes).index(e.label)
        edges = [e.start, *inner, e.end]
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            first = int(round(a / hop))
            end = max(first + 1, math.ceil(round(b / hop, 9)))
            conf = float(np.mean(probs[first:end, k]))
            out.append(Event(e.label, a, b, conf))
    return out


def windows_to_events(
    window_probs: np.ndarray,
    classes: Sequence[str],
    window: float,
    hop: float,
    duration: float,
    min_duration: float = DEFAULT_MIN_DURATION,
    max_gap: float = DEFAULT_MAX_GAP,
    background: str = BACKGROUND,
    thresholds: dict[str, float] | None = None,
    hop_rule: str = DEFAULT_HOP_RULE,
) -> tuple[list[Event], np.ndarray, np.ndarray]:
    """The whole chain: window probabilities [W, K] -> (events, hop probs [n, K], hop labels [n]).

    Hop probabilities follow ``hop_rule`` (:data:`HOP_RULES`, module docstring). Each hop
    interval is decided by :func:`decide` (argmax, or per-class ``thresholds``). The returned hop
    labels are after bridging and the minimum duration. A task without the background class gets
    no background (and the mean rule): every interval is then some event.
    """
    if hop_rule not in HOP_RULES:
        raise ValueError(f"hop rule must be one of {HOP_RULES}, got {hop_rule!r}")
    bg = list(classes).index(background) if background in classes else -1
    local = bg if hop_rule == "localised" and bg >= 0 else None
    probs = hop_probabilities(window_probs, window / hop, n_hops(duration, hop), local)
    labels = decide(probs, classes, thresholds, background)
    labels = smooth_labels(labels, bg, hop, min_duration, max_gap)
    return labels_to_events(labels, probs, classes, hop, duration, background), probs, labels


# ----------------------------------------------------------------------------- summaries


def overlap(event: Event, start: float, end: float) -> float:
    """Seconds of ``event`` inside ``[start, end)``."""
    return max(0.0, min(event.end, end) - max(event.start, start))


def label_seconds(events: Iterable[Event], label: str, start: float, end: float) -> float:
    return sum(overlap(e, start, end) for e in events if e.label == label)


def hourly_table(
    events: Sequence[Event], classes: Sequence[str], duration: float, background: str = BACKGROUND
) -> list[dict]:
    """One row per (started) hour: minutes of every class and episodes of every event label.

    Background minutes are the hour's time not covered by any event. An episode counts in the
    hour where it starts.
    """
    labels = [c for c in classes if c != background]
    rows = []
    for hour, start, end in hour_windows(duration):
        row: dict = {"hour": hour, "start_s": start, "end_s": end}
        covered = 0.0
        for label in labels:
            seconds = label_seconds(events, label, start, end)
            covered += seconds
            row[f"{label}_minutes"] = round(seconds / 60.0, 3)
        if background in classes:
            row[f"{background}_minutes"] = round(max(0.0, end - start - covered) / 60.0, 3)
        for label in labels:
            row[f"{label}_episodes"] = sum(
                1 for e in events if e.label == label and start <= e.start < end
            )
        rows.append(row)
    return rows


def hour_windows(duration: float) -> list[tuple[int, float, float]]:
    """(hour, start s, end s) of every started hour of a ``duration``-second recording (at
    least one); the last ends with the recording."""
    n = max(1, math.ceil(round(duration / 3600.0, 9)))
    return [(h, h * 3600.0, min((h + 1) * 3600.0, duration)) for h in range(n)]


def totals(rows: Sequence[dict]) -> dict:
    """Column sums of an hourly table (minutes and episodes)."""
    keys = [k for k in rows[0] if k.endswith(("_minutes", "_episodes"))] if rows else []
    out = {k: sum(r[k] for r in rows) for k in keys}
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


# ----------------------------------------------------------------------------- event files


def read_events_csv(path: Path | str) -> list[Event]:
    """Read ``label,start,end[,confidence]`` rows (seconds); EventsFileError names the file."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in TRUTH_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise EventsFileError(f"{path}: missing column(s) {missing}; need label,start,end")
            events = [_row_event(path, n, row) for n, row in enumerate(reader, start=2)]
    except OSError as exc:
        raise EventsFileError(f"{path}: cannot read events file ({exc})") from exc
    return sorted(events, key=lambda e: (e.start, e.end))


def _row_event(path: Path, line: int, row: dict) -> Event:
    try:
        start, end = float(row["start"]), float(row["end"])
        conf = float(row["confidence"]) if row.get("confidence") not in (None, "") else 1.0
    except ValueError as exc:
        raise EventsFileError(f"{path}:{line}: bad number ({exc})") from exc
    label = (row["label"] or "").strip()
    if label not in LABEL_TO_ID:
        raise EventsFileError(f"{path}:{line}: unknown label {label!r}")
    if not end > start >= 0:
        raise EventsFileError(f"{path}:{line}: need 0 <= start < end, got {start}, {end}")
    return Event(label, start, end, conf)


def events_csv_text(events: Iterable[Event]) -> str:
    """``label,start,end,confidence`` text (times to the millisecond)."""
    lines = ["label,start,end,confidence"]
    lines += [f"{e.label},{e.start:.3f},{e.end:.3f},{e.confidence:.4f}" for e in events]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- scoring


def _matches(
    pred: Sequence[Event], truth: Sequence[Event], onset_tol: float, offset_tol: float, frac: float
) -> list[tuple[int, int]]:
    """Greedy one-to-one matching of same-label events within the tolerances."""
    candidates = []
    for i, p in enumerate(pred):
        for j, t in enumerate(truth):
            if p.label != t.label:
                continue
            d_on, d_off = abs(p.start - t.start), abs(p.end - t.end)
            if d_on <= onset_tol and d_off <= max(offset_tol, frac * t.duration):
                candidates.append((d_on, d_off, i, j))
    used_p, used_t, pairs = set(), set(), []
    for _, _, i, j in sorted(candidates):
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            pairs.append((i, j))
    return pairs


def _prf(tp: int, fp: int, fn: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def score_events(
    pred: Sequence[Event],
    truth: Sequence[Event],
    onset_tol: float = ONSET_TOL,
    offset_tol: float = OFFSET_TOL,
    offset_frac: float = OFFSET_FRAC,
    labels: Sequence[str] | None = None,
) -> dict:
    """Event-based precision / recall / F1 per label and micro-averaged (see module docstring).

    ``labels``: the labels to score (default: every label in either list but the background);
    events of other labels are ignored on both sides.
    Returns ``{"per_label": {label: {tp, fp, fn, precision, recall, f1}}, "micro": {...},
    "onset_tol", "offset_tol", "offset_frac"}``.
    """
    if labels is None:
        labels = sorted({e.label for e in [*pred, *truth]} - {BACKGROUND})
    per_label = {}
    for label in labels:
        p = [e for e in pred if e.label == label]
        t = [e for e in truth if e.label == label]
        tp = len(_matches(p, t, onset_tol, offset_tol, offset_frac))
        per_label[label] = _prf(tp, len(p) - tp, len(t) - tp)
    micro = _prf(*(sum(s[k] for s in per_label.values()) for k in ("tp", "fp", "fn")))
    return {
        "per_label": per_label,
        "micro": micro,
        "onset_tol": onset_tol,
        "offset_tol": offset_tol,
        "offset_frac": offset_frac,
    }


def frame_labels(
    events: Iterable[Event], duration: float, resolution: float, labels: Sequence[str] | None
) -> np.ndarray:
    """Label names on a grid of ``resolution`` s (frame centres); background where no event,
    and for events whose label is not in ``labels`` (when given)."""
    n = max(1, math.ceil(round(duration / resolution, 9)))
    grid = np.full(n, BACKGROUND, dtype=object)
    centres = (np.arange(n) + 0.5) * resolution
    for e in events:
        if labels is not None and e.label not in labels:
            continue
        grid[(centres >= e.start) & (centres < e.end)] = e.label
    return grid


def frame_accuracy(
    pred_events: Sequence[Event],
    truth_events: Sequence[Event],
    duration: float,
    resolution: float = FRAME_RESOLUTION,
    labels: Sequence[str] | None = None,
) -> float:
    """Share of ``resolution``-second frames where the two labelings agree (background = quiet).

    ``labels``: when given, events of other labels count as background on both sides (e.g. the
    true coughs of a night scored against a quiet/breathe/snore model).
    """
    pred = frame_labels(pred_events, duration, resolution, labels)
    truth = frame_labels(truth_events, duration, resolution, labels)
    return float(np.mean(pred == truth))
