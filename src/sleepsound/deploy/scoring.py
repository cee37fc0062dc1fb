"""Scoring a night against its ground truth with the field's own library, ``sed_scores_eval``.

Two score timelines go to the library, both in its format (a DataFrame per recording with
``onset``, ``offset`` and one column per class, one row per hop interval):

* **probabilities**: the mean class probabilities of each hop interval (also written as
  ``scores/<recording>.tsv`` so users can run their own evaluations). Threshold-independent
  **PSDS** is computed on them with the DCASE scenario settings (:data:`PSDS_SCENARIOS`, as in
  DCASE 2021-2023 task 4: scenario 1 dtc = gtc = 0.7, alpha_st = 1; scenario 2 dtc = gtc = 0.1,
  cttc = 0.3, alpha_ct = 0.5, alpha_st = 1; max eFPR 100 per hour), on probabilities rounded to
  0.01: the library sweeps every distinct score, and a night has tens of thousands (an 8 h
  synthetic night with 183 true and 2,631 detected events: 88 s and 1.4 GB peak without
  bootstrap on a loaded 2-core machine at 0.01; unrounded, half an hour already took 25 s).
* **decisions**: 1 where the night's final events (after the operating point, gap bridging and
  minimum duration) are, 0 elsewhere. At threshold 0.5 the library then scores exactly the
  events detection reported: **collar-based F1** (onset collar ``onset_tol``, offset collar
  ``max(offset_tol, 20 % of the true event)``), **intersection-based F1** (dtc = gtc = 0.5) and
  the **segment-based error rate** (1 s segments).

**Bootstrap confidence intervals** (90 %, the library's ``bootstrapped_*`` functions, 5 folds x
20 iterations): the library resamples recordings; a single night is cut into ``CHUNK_S`` pieces
(events cut at the piece edges), so the interval shows how much the figure depends on which
parts of the night are scored.

**Two sets of detections are scored.** All of them (``events``, ``frame_accuracy`` and the
library's figures): the classifier and its post-processing, whoever made the sound. And the
**wearer's** (``events_wearer``, ``frame_accuracy_wearer``, ``library_scores.wearer``): without
the events attributed to the partner (:mod:`.screening`), i.e. what the screening reports as the
wearer's. The task's classes are the wearer's sounds; a partner's sound is ``non_wearer`` in the
truth, outside the task, so background for scoring; a detection the screening gives to the
partner claims no wearer's sound, so it is no false positive of the wearer's task, and a
wearer's sound wrongly given to the partner is a miss there. PSDS needs no decisions and is
computed once, on the probabilities (no attribution).

What the library lacks stays ours (:mod:`.events`): frame accuracy on a 0.1 s grid, and the
per-label greedy matcher whose micro F1 the tests cross-check against the library's collar F1.
Scored labels are the model's non-background classes that occur in the truth; truth events of
other labels are listed as unscored. With a single scored label PSDS 2 has no cross-triggers
to count (``cttc_threshold`` None, ``alpha_ct`` 0; the stored settings say so).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sleepsound.deploy import events as ev

PSDS_SCENARIOS = {
    "psds1": {
        "dtc_threshold": 0.7,
        "gtc_threshold": 0.7,
        "cttc_threshold": None,
        "alpha_ct": 0.0,
        "alpha_st": 1.0,
        "max_efpr": 100.0,
    },
    "psds2": {
        "dtc_threshold": 0.1,
        "gtc_threshold": 0.1,
        "cttc_threshold": 0.3,
        "alpha_ct": 0.5,
        "alpha_st": 1.0,
        "max_efpr": 100.0,
    },
}
INTERSECTION_F1 = {"dtc_threshold": 0.5, "gtc_threshold": 0.5}
SEGMENT_S = 1.0
CHUNK_S = 600.0  # bootstrap piece of a single night
MIN_CHUNK_S = 60.0  # a last piece shorter than this joins the previous one
BOOTSTRAP = {"n_folds": 5, "n_iterations": 20}
CONFIDENCE = 0.9
DECISION_THRESHOLD = 0.5
JOIN_GAP_S = 0.001  # s: gap the decision timeline puts between two touching same-label events
PSDS_DECIMALS = 2  # PSDS sweeps every distinct score: 101 thresholds bound its cost on a night


def _library():
    """The sed_scores_eval modules (its sed_eval -> dcase_util import warns about pkg_resources)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sed_scores_eval import collar_based, intersection_based, segment_based

    return collar_based, intersection_based, segment_based


class _WritableFrame(pd.DataFrame):
    """A DataFrame whose ``to_numpy`` gives a writable array: under pandas 3 (copy-on-write)
    it is read-only, which sed_scores_eval 0.0.4's Cython detection code cannot take."""

    @property
    def _constructor(self):
        return _WritableFrame

    def to_numpy(self, *args, **kwargs) -> np.ndarray:
        return np.array(super().to_numpy(*args, **kwargs), copy=True)


def score_frame(scores: np.ndarray, timestamps: np.ndarray, classes: Sequence[str]):
    """A sed_scores_eval score DataFrame: scores [n, K], timestamps [n + 1]."""
    _library()
    from sed_scores_eval.base_modules.scores import create_score_dataframe

    frame = create_score_dataframe(np.asarray(scores, float), np.asarray(timestamps), list(classes))
    return _WritableFrame(frame)


def hop_timestamps(n: int, hop: float, duration: float) -> np.ndarray:
    """Interval edges of ``n`` hop intervals, the last one ending at the recording's end."""
    stamps = np.arange(n + 1, dtype=float) * hop
    stamps[-1] = max(min(stamps[-1], duration), stamps[-2] + 1e-3 if n else 0.0)
    return np.round(stamps, 6)


def write_scores(path: Path, hop_probs: np.ndarray, classes, hop: float, duration: float) -> str:
    """The probabilities timeline as the library's TSV text (``sed_scores_eval.io``
    ``read_sed_scores`` reads it back)."""
    frame = score_frame(hop_probs, hop_timestamps(len(hop_probs), hop, duration), classes)
    return frame.to_csv(sep="\t", index=False)


def decision_scores(events: Sequence[ev.Event], labels: Sequence[str], timestamps: np.ndarray):
    """[n, L] with 1 where an event of that label covers the interval centre."""
    centres = (timestamps[:-1] + timestamps[1:]) / 2
    out = np.zeros((len(centres), len(labels)))
    for e in events:
        if e.label in labels:
            k = list(labels).index(e.label)
            out[(centres >= e.start) & (centres < e.end), k] = 1.0
    return out


def decision_frame(events: Sequence[ev.Event], labels: Sequence[str], timestamps: np.ndarray):
    """The library's frame of the events as decisions (:func:`decision_scores`) on the hop
    grid, with a ``JOIN_GAP_S`` interval of 0 before every event that starts where one of its
    label ends (an event cut where its source changed), so that the library sees the same
    events detection reported instead of one merged event."""
    stamps = np.asarray(timestamps, dtype=float)
    ends = {(e.label, round(e.end, 6)) for e in events if e.label in labels}
    joins = sorted(
        {(e.label, round(e.start, 6)) for e in events if (e.label, round(e.start, 6)) in ends}
    )
    if joins:
        before = [t - JOIN_GAP_S for _, t in joins]
        stamps = np.unique(np.round(np.concatenate([stamps, before]), 6))
    scores = decision_scores(events, labels, stamps)
    for label, t in joins:
        scores[np.isclose(stamps[:-1], t - JOIN_GAP_S), list(labels).index(label)] = 0.0
    return score_frame(scores, stamps, labels)


def _chunks(duration: float) -> list[tuple[float, float]]:
    edges = list(np.arange(0.0, duration, CHUNK_S)) + [duration]
    if len(edges) > 2 and edges[-1] - edges[-2] < MIN_CHUNK_S:
        del edges[-2]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _split(frame, truth, duration: float, audio_id: str):
    """Cut one recording's scores and truth into bootstrap pieces (ids ``<id>#k``)."""
    scores, gts, durs = {}, {}, {}
    for k, (a, b) in enumerate(_chunks(duration)):
        key = f"{audio_id}#{k}"
        rows = frame[(frame["onset"] >= a - 1e-9) & (frame["onset"] < b - 1e-9)].copy()
        if rows.empty:
            continue
        rows[["onset", "offset"]] = rows[["onset", "offset"]] - a
        scores[key] = _WritableFrame(rows.reset_index(drop=True))
        gts[key] = [
            (max(on, a) - a, min(off, b) - a, lab) for on, off, lab in truth if on < b and off > a
        ]
        durs[key] = float(rows["offset"].iloc[-1])
    return scores, gts, durs


def _ci(bootstrapped) -> dict:
    from sed_scores_eval.base_modules.bootstrap import confidence_interval

    mean, low, high = confidence_interval(list(bootstrapped), confidence=CONFIDENCE)
    return {"mean": mean, "low": low, "high": high, "confidence": CONFIDENCE}


def _micro(values) -> float:
    return float(values["micro_average"]) if isinstance(values, dict) else float(values)


def evaluate_night(
    audio_id: str,
    hop_probs: np.ndarray,
    classes: Sequence[str],
    hop: float,
    duration: float,
    found: Sequence[ev.Event],
    truth_events: Sequence[ev.Event],
    onset_tol: float,
    offset_tol: float,
    bootstrap: bool = True,
    wearer: Sequence[ev.Event] | None = None,
) -> dict:
    """Every score of one night (see the module docstring); JSON-ready. ``wearer``: the
    detections not attributed to the partner, scored apart as ``wearer`` (collar and
    intersection F1)."""
    _, intersection_based, segment_based = _library()
    model_labels = [c for c in classes if c != ev.BACKGROUND]
    labels = [c for c in model_labels if any(t.label == c for t in truth_events)]
    unscored = sorted({t.label for t in truth_events} - set(model_labels))
    out: dict = {"labels": labels, "unscored_truth_labels": unscored}
    if not labels:
        out["note"] = "no truth event of the model's labels: nothing to score"
        return out
    stamps = hop_timestamps(len(hop_probs), hop, duration)
    cols = [list(classes).index(c) for c in labels]
    truth = [(t.start, t.end, t.label) for t in truth_events if t.label in labels]
    gt = {audio_id: truth}
    durations = {audio_id: float(stamps[-1])}
    rounded = np.round(np.asarray(hop_probs)[:, cols], PSDS_DECIMALS)
    probs = {audio_id: score_frame(rounded, stamps, labels)}
    decisions = {audio_id: decision_frame(found, labels, stamps)}
    collar = {"onset_collar": onset_tol, "offset_collar": offset_tol, "offset_collar_rate": 0.2}

    psds = {}
    for name, setting in PSDS_SCENARIOS.items():
        if len(labels) < 2 and setting["cttc_threshold"] is not None:
            # cross-triggers need a second class: scored without them, and said so
            setting = {**setting, "cttc_threshold": None, "alpha_ct": 0.0}
        value, *_ = intersection_based.psds(probs, gt, durations, **setting)
        psds[name] = {"value": float(value), "settings": setting}
    f1s = _decision_f1(decisions, gt, labels, collar)
    er, ir, dr, _ = segment_based.error_rate(
        decisions, gt, durations, DECISION_THRESHOLD, segment_length=SEGMENT_S
    )
    out.update(
        {
            "library": "sed_scores_eval",
            "psds": psds,
            **f1s,
            "segment_error_rate": {
                "macro": float(er["macro_average"]),
                "insertion_rate": float(ir["macro_average"]),
                "deletion_rate": float(dr["macro_average"]),
                "per_label": {c: float(er[c]) for c in labels},
                "segment_s": SEGMENT_S,
            },
        }
    )
    if wearer is not None:
        own = {audio_id: decision_frame(wearer, labels, stamps)}
        out["wearer"] = {
            "note": "detections attributed to the partner left out",
            **_decision_f1(own, gt, labels, collar),
        }
    if bootstrap and len(_chunks(duration)) >= BOOTSTRAP["n_folds"]:
        out["bootstrap"] = _bootstrap(audio_id, probs, decisions, truth, duration, collar)
    elif bootstrap:
        out["bootstrap"] = {
            "note": f"night shorter than {BOOTSTRAP['n_folds']} pieces of {CHUNK_S:.0f} s"
        }
    return out


def _decision_f1(decisions, gt, labels, collar) -> dict:
    """Collar-based and intersection-based F1 of a decision timeline (JSON-ready)."""
    collar_based, intersection_based, _ = _library()
    f_c, p_c, r_c, stats_c = collar_based.fscore(decisions, gt, DECISION_THRESHOLD, **collar)
    f_i, p_i, r_i, _ = intersection_based.fscore(
        decisions, gt, DECISION_THRESHOLD, **INTERSECTION_F1
    )
    return {
        "collar_f1": {
            "micro": _micro(f_c),
            "precision": _micro(p_c),
            "recall": _micro(r_c),
            "per_label": {c: float(f_c[c]) for c in labels},
            "counts": {c: {k: int(stats_c[c][k]) for k in ("tps", "fps", "n_ref")} for c in labels},
            **collar,
        },
        "intersection_f1": {
            "micro": _micro(f_i),
            "precision": _micro(p_i),
            "recall": _micro(r_i),
            "per_label": {c: float(f_i[c]) for c in labels},
            **INTERSECTION_F1,
        },
    }


def _bootstrap(audio_id, probs, decisions, truth, duration, collar) -> dict:
    collar_based, intersection_based, _ = _library()
    p_scores, gts, durs = _split(probs[audio_id], truth, duration, audio_id)
    d_scores, _, _ = _split(decisions[audio_id], truth, duration, audio_id)
    out: dict = {"pieces_s": CHUNK_S, **BOOTSTRAP}
    try:
        f, *_ = collar_based.bootstrapped_fscore(
            d_scores, gts, DECISION_THRESHOLD, **collar, **BOOTSTRAP
        )
        out["collar_f1_micro"] = _ci([_micro(x) for x in f])
        setting = PSDS_SCENARIOS["psds1"]
        values, *_ = intersection_based.bootstrapped_psds(
            p_scores, gts, durs, **setting, **BOOTSTRAP
        )
        out["psds1"] = _ci([float(v) for v in values])
    except (ValueError, ZeroDivisionError) as exc:  # a resample without any event of a label
        out["note"] = f"not computed: {exc}"[:200]
    return out


def own_scores(found, truth_events, classes, duration, onset_tol, offset_tol, wearer=None) -> dict:
    """Our matcher (for the cross-check) and frame accuracy (the library has no such figure);
    with ``wearer`` (the detections not attributed to the partner) the same figures for them
    (``events_wearer``, ``frame_accuracy_wearer``; module docstring)."""
    labels = [c for c in classes if c != ev.BACKGROUND]
    sets = {"": found} if wearer is None else {"": found, "_wearer": wearer}
    out: dict = {}
    for suffix, events in sets.items():
        out[f"events{suffix}"] = ev.score_events(
            events, truth_events, onset_tol=onset_tol, offset_tol=offset_tol, labels=labels
        )
        out[f"frame_accuracy{suffix}"] = ev.frame_accuracy(
            events, truth_events, duration, labels=labels
        )
    out["frame_resolution_s"] = ev.FRAME_RESOLUTION
    return out
