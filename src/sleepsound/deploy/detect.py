"""Whole-night detection: stream a recording, classify overlapping windows, report the night.

``detect(recording, model)`` reads any file the shared reader reads (:mod:`sleepsound.data.audio`:
soundfile, else PyAV for phone formats), of any length, sample rate and channel count, in blocks
(constant memory: the audio kept at any time is one batch of windows), applies the model's
channel policy, resamples to 16 kHz with a streaming soxr resampler, and classifies
``window``-second windows every ``hop`` seconds with the cache's exact features
(:mod:`sleepsound.features.streaming`).

Deciding: windows whose real audio is digital silence or near it (RMS below
``NEAR_SILENCE_DBFS`` on every channel the model sees) are ``quiet`` whatever the model says
(the log-mel of a silent window is normalised to its own maximum and looks like anything);
then each hop interval gets probabilities from the windows covering it (hop rule
``localised``: an interval is inside a sound only when every window covering it hears it, which
puts event edges within a hop of the truth instead of half a window outside it; see
:mod:`.events`) and the arg-max, or with an operating point (``far=2/h``, ``recall=0.9``) the
per-class thresholds chosen on validation (:mod:`.operating`); then gap bridging and the minimum
duration (:mod:`.events`). An event is cut where its source changes (a wearer's snoring running
into a partner's), then every event gets loudness and wearer/partner attribution
(:mod:`.screening`); with ``truth`` the night is scored, all detections and the wearer's apart
(:mod:`.scoring`).

Outputs (``out_dir``), each written under a hidden temporary name and renamed into place,
``summary.json`` last (its presence marks a finished night; stale temporaries of a killed run
are removed on the next one): ``events.csv``, ``hourly.csv``, ``scores/<name>.tsv`` (per hop
interval class probabilities in sed_scores_eval's format), ``report.html`` (interactive,
self-contained), ``summary.md``, ``timeline.png``, ``summary.json``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sleepsound import __version__
from sleepsound.atomic import atomic_write, atomic_write_bytes
from sleepsound.config import RESULTS_DIR
from sleepsound.data.audio import AudioError, open_audio, read_segments
from sleepsound.deploy import events as ev
from sleepsound.deploy import html_report, operating, scoring, screening
from sleepsound.deploy.runtime import Classifier, load_classifier
from sleepsound.deploy.staging import clean_stale
from sleepsound.features.logmel import CLIP_SECONDS, SAMPLE_RATE
from sleepsound.features.streaming import (
    Geometry,
    window_batches,
    window_inputs,
    window_levels_db,
)
from sleepsound.progress import progress_bar, say

DEFAULT_WINDOW = CLIP_SECONDS  # s: the clip length models are trained on
DEFAULT_HOP = 1.0  # s
DEFAULT_BATCH = 64  # windows featurised together (one STFT) and handed to one model worker
MODEL_BATCH = 16  # windows per model call: as fast per window as 64, a third of the memory
DEFAULT_THREADS = 2  # model calls in flight at once (each single-threaded)
NEAR_SILENCE_DBFS = -90.0  # window RMS below this (every channel) is quiet: 16-bit's last bits
DETECT_SUBDIR = Path("detect")
SCORES_SUBDIR = "scores"
SUMMARY_NAME = "summary.json"  # written last: marks a finished night
OUTPUT_FILES = ("events.csv", "hourly.csv", "summary.md", "report.html", "timeline.png")
TIMELINE_POINTS = 4000  # probability curves are averaged down to at most this many points

RecordingError = AudioError  # one error type for unusable audio, in preprocess and detect


@dataclass
class DetectResult:
    out_dir: Path
    events: list[ev.Event]
    summary: dict
    window_probs: np.ndarray = field(repr=False)
    hop_probs: np.ndarray = field(repr=False)
    files: dict[str, Path] = field(default_factory=dict)
    screened: list = field(default_factory=list, repr=False)

    @property
    def real_time_factor(self) -> float:
        return self.summary["processing"]["real_time_factor"]


def resolve_operating_point(clf: Classifier, spec: str | None) -> dict | None:
    """The thresholds of an operating point: the model card's when it has them, else chosen
    on the validation split of the model's run (run directories, or the card's source run)."""
    if spec is None:
        return None
    key = operating.canonical(spec)
    stored = (clf.card.get("operating_points") or {}).get(key)
    if stored:
        return stored
    run_dir = clf.identity.get("run_dir")
    if not run_dir or not Path(run_dir).is_dir():
        raise operating.OperatingPointError(
            f"--operating-point {spec}: the model card has no such point and its run "
            f"({run_dir}) is not here to choose one; export with --operating-point {key}"
        )
    return operating.for_run(run_dir, key, clf.classes)


def detect(
    recording: Path | str,
    model: Path | str | Classifier,
    window: float = DEFAULT_WINDOW,
    hop: float = DEFAULT_HOP,
    out_dir: Path | str | None = None,
    batch_size: int = DEFAULT_BATCH,
    truth: Path | str | None = None,
    progress: bool = True,
    min_duration: float = ev.DEFAULT_MIN_DURATION,
    max_gap: float = ev.DEFAULT_MAX_GAP,
    backend: str = "auto",
    threads: int = DEFAULT_THREADS,
    onset_tol: float | None = None,
    operating_point: str | None = None,
    bootstrap: bool = True,
    settings: dict | None = None,
    hop_rule: str = ev.DEFAULT_HOP_RULE,
) -> DetectResult:
    """Detect and report sleep-sound events in a recording of any length (module docstring).

    Args:
        recording: an audio file (see :mod:`sleepsound.data.audio`).
        model: a run directory, an exported ``.onnx`` (``model_card.json`` beside it), or a
            loaded :class:`~sleepsound.deploy.runtime.Classifier`.
        window, hop: seconds (multiples of 10 ms; window <= 5 s).
        out_dir: where the outputs go (default ``results/detect/<recording stem>``).
        batch_size: windows featurised together (one STFT) and handed to one model worker,
            which calls the model on at most MODEL_BATCH of them at a time.
        truth: optional ``events.csv`` (label,start,end) to score the detection against.
        min_duration, max_gap: event post-processing in seconds (see :mod:`.events`).
        backend: for run directories, ``auto`` / ``onnx`` / ``torch`` (see load_classifier).
        threads: model calls run in parallel, each on one thread.
        onset_tol: scoring collar in seconds for onsets and offsets (default: half a window,
            at least 1 s). A window holding any part of an event tends to be classified as
            that event; the ``localised`` hop rule undoes that (edges within a hop), the
            ``mean`` rule left them up to half a window outside, which this default absorbed.
            On four synthetic nights the localised figures are equal at 1 s and 2.5 s.
        operating_point: ``far=<n>/h`` or ``recall=<r>`` (default: argmax).
        bootstrap: bootstrap confidence intervals of the scores (with ``truth``).
        settings: recorded as is in the summary (a folder run compares it to resume).
        hop_rule: how covering windows combine into a hop interval (:data:`.events.HOP_RULES`;
            ``mean``: the earlier rule, kept for comparison).
    """
    t0 = time.perf_counter()
    path = Path(recording)
    out = Path(out_dir) if out_dir is not None else RESULTS_DIR / DETECT_SUBDIR / path.stem
    geo = Geometry.from_seconds(window, hop)
    if operating_point is not None:
        operating.canonical(operating_point)
    truth_events = ev.read_events_csv(truth) if truth is not None else None
    clf = model if isinstance(model, Classifier) else load_classifier(model, backend)
    point = resolve_operating_point(clf, operating_point)
    with open_audio(path) as stream:
        info = stream.info
    track = screening.LevelTrack()
    window_probs, n_samples, n_quiet = _classify(
        path, clf, geo, batch_size, threads, info.duration_s, progress, track
    )
    duration = n_samples / SAMPLE_RATE
    thresholds = point["thresholds"] if point else None
    found, hop_probs, _ = ev.windows_to_events(
        window_probs,
        clf.classes,
        window,
        hop,
        duration,
        min_duration,
        max_gap,
        thresholds=thresholds,
        hop_rule=hop_rule,
    )
    cuts = screening.source_cuts(found, track.mean_square, hop, track.bin_s)
    found = ev.split_events(found, cuts, hop_probs, clf.classes, hop)
    screened = screening.screen_events(found, track.mean_square, track.bin_s)
    wearer = [f for f, s in zip(found, screened, strict=True) if s.source != "partner"]
    elapsed = time.perf_counter() - t0
    summary = {
        "recording": {
            "name": path.name,
            "path": str(path.resolve()),
            "duration_s": duration,
            "sample_rate": info.sample_rate,
            "channels": info.channels,
            "format": info.format,
            "reader": info.backend,
        },
        "model": {**clf.identity, "classes": clf.classes, "input_spec": clf.spec.to_dict()},
        "decision": f"operating point {point['spec']}" if point else "argmax",
        "operating_point": point,
        "parameters": {
            "window_s": geo.window / SAMPLE_RATE,
            "hop_s": geo.hop / SAMPLE_RATE,
            "min_duration_s": min_duration,
            "max_gap_s": max_gap,
            "background": ev.BACKGROUND,
            "near_silence_dbfs": NEAR_SILENCE_DBFS,
            "hop_rule": hop_rule,
            "source_window_s": screening.SOURCE_WINDOW_S,
            "source_min_s": screening.SOURCE_MIN_S,
            "source_splits": len(cuts),
        },
        "processing": {
            "seconds": elapsed,  # loading the model, decoding, features, model, events
            "audio_seconds": duration,
            "real_time_factor": elapsed / duration if duration else 0.0,
            "windows": int(len(window_probs)),
            "near_silent_windows": int(n_quiet),
        },
        "screening": screening.summarize(screened, clf.classes, duration, track.channels),
        "settings": settings,
        "sleepsound_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    hourly = ev.hourly_table(found, clf.classes, duration)
    summary["totals"] = {**ev.totals(hourly), "events": dict(summary["screening"]["events"])}
    summary["hourly"] = hourly
    if truth_events is not None:
        tol = onset_tol if onset_tol is not None else max(ev.ONSET_TOL, window / 2)
        off_tol = max(ev.OFFSET_TOL, tol)
        summary["scores"] = {
            "truth": str(Path(truth).resolve()),
            **scoring.own_scores(
                found, truth_events, clf.classes, duration, tol, off_tol, wearer=wearer
            ),
            "library_scores": scoring.evaluate_night(
                path.stem,
                hop_probs,
                clf.classes,
                hop,
                duration,
                found,
                truth_events,
                tol,
                off_tol,
                bootstrap=bootstrap,
                wearer=wearer,
            ),
        }
        summary["scores"]["unscored_truth_labels"] = sorted(
            {e.label for e in truth_events} - set(clf.classes)
        )
    audio = _excerpts(path, screened)
    files = _write_outputs(
        out, path, summary, screened, hop_probs, clf.classes, hop, truth_events, audio, found
    )
    _print_summary(summary)
    return DetectResult(out, found, summary, window_probs, hop_probs, files, screened)


def _excerpts(path: Path, screened) -> dict[int, str]:
    chosen = html_report.playable(screened)
    if not chosen:
        return {}
    spans = [
        (screened[i].start, min(screened[i].end, screened[i].start + html_report.EXCERPT_S))
        for i in chosen
    ]
    segments, sr = read_segments(path, spans)
    return dict(zip(chosen, html_report.excerpts_wav(segments, sr), strict=True))


def _classify(path, clf, geo, batch_size, threads, duration, progress, track):
    """(window probabilities [W, K] in order, 16 kHz samples read, near-silent windows)."""
    if batch_size < 1 or threads < 1:
        raise ValueError("batch_size and threads must be >= 1")
    batch_size = geo.batch_windows(batch_size)
    spec, classes = clf.spec, clf.classes
    quiet = classes.index(ev.BACKGROUND) if ev.BACKGROUND in classes else None
    results: list[np.ndarray] = []
    pending: deque[tuple[Future, int]] = deque()
    n_quiet = n_samples = 0
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # feature work shares the cores with the model calls
    try:
        with (
            open_audio(path) as stream,
            ThreadPoolExecutor(max_workers=threads) as pool,
            progress_bar("detect", total=round(duration), enabled=progress, unit="s audio") as adv,
        ):
            blocks = _counted(
                stream.blocks(spec.channels, batch_size * geo.hop / SAMPLE_RATE, tap=track.add)
            )
            for span, n, real, _ in window_batches(blocks, geo, batch_size):
                groups = window_inputs(span, n, real, geo, spec)
                silent = window_levels_db(span, n, real, geo) < NEAR_SILENCE_DBFS
                n_quiet += int(silent.sum()) if quiet is not None else 0
                job = pool.submit(_predict_groups, clf, groups, n, silent, quiet)
                pending.append((job, n))
                while len(pending) > threads:
                    _collect(pending, results, adv, geo)
            while pending:
                _collect(pending, results, adv, geo)
            n_samples = blocks.total
    finally:
        torch.set_num_threads(prev_threads)
    probs = np.concatenate(results) if results else np.zeros((0, len(classes)))
    return probs, n_samples, n_quiet


class _counted:
    """An iterator of [C, n] blocks that counts their samples (``total``)."""

    def __init__(self, blocks):
        self._blocks, self.total = blocks, 0

    def __iter__(self):
        for block in self._blocks:
            self.total += block.shape[1]
            yield block


def _predict_groups(clf: Classifier, groups, n: int, silent: np.ndarray, quiet) -> np.ndarray:
    """Probabilities of a batch's windows, in model calls of at most MODEL_BATCH windows;
    near-silent windows are quiet (one-hot) when the task has the quiet class."""
    probs = np.zeros((n, len(clf.classes)))
    for idx, x in groups:
        for s in range(0, len(idx), MODEL_BATCH):
            probs[idx[s : s + MODEL_BATCH]] = clf.predict(x[s : s + MODEL_BATCH])
    if quiet is not None and silent.any():
        probs[silent] = 0.0
        probs[silent, quiet] = 1.0
    return probs


def _collect(pending: deque, results: list, advance, geo: Geometry) -> None:
    future, n = pending.popleft()
    results.append(future.result())
    advance(n * geo.hop / SAMPLE_RATE)


# ============================================================================= outputs


def hourly_csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def events_csv_text(screened) -> str:
    """``label,start,end,confidence`` (what :func:`~.events.read_events_csv` reads) and the
    screening columns."""
    lines = ["label,start,end,confidence,source,in_ear_dbfs,outer_dbfs,in_ear_minus_outer_db"]
    for e in screened:
        outer = "" if e.outer_dbfs is None else f"{e.outer_dbfs:.2f}"
        ratio = "" if e.in_ear_minus_outer_db is None else f"{e.in_ear_minus_outer_db:.2f}"
        lines.append(
            f"{e.label},{e.start:.3f},{e.end:.3f},{e.confidence:.4f},{e.source},"
            f"{e.in_ear_dbfs:.2f},{outer},{ratio}"
        )
    return "\n".join(lines) + "\n"


def _write_outputs(
    out, path, summary, screened, hop_probs, classes, hop, truth_events, audio, found
) -> dict:
    """Every output through an atomic write, ``summary.json`` last."""
    out.mkdir(parents=True, exist_ok=True)
    scores_name = f"{SCORES_SUBDIR}/{path.stem}.tsv"
    clean_stale(out, (*OUTPUT_FILES, SUMMARY_NAME))
    clean_stale(out / SCORES_SUBDIR, (f"{path.stem}.tsv",))
    files = {name: out / name for name in (*OUTPUT_FILES, scores_name, SUMMARY_NAME)}
    atomic_write(files["events.csv"], events_csv_text(screened))
    atomic_write(files["hourly.csv"], hourly_csv_text(summary["screening"]["hourly"]))
    atomic_write(
        files[scores_name],
        scoring.write_scores(
            files[scores_name], hop_probs, classes, hop, summary["recording"]["duration_s"]
        ),
    )
    atomic_write(files["summary.md"], screening.markdown(summary, path.name))
    page = html_report.render(summary, screened, hop_probs, truth_events, audio)
    atomic_write(files["report.html"], page)
    buf = io.BytesIO()
    plot_timeline(buf, hop_probs, classes, hop, found, truth_events)
    atomic_write_bytes(files["timeline.png"], buf.getvalue())
    atomic_write(files[SUMMARY_NAME], json.dumps(summary, indent=2) + "\n")
    return files


def _downsample(probs: np.ndarray, points: int) -> tuple[np.ndarray, int]:
    step = max(1, math.ceil(len(probs) / points))
    n = len(probs) // step * step
    head = probs[:n].reshape(-1, step, probs.shape[1]).mean(axis=1)
    tail = probs[n:].mean(axis=0, keepdims=True) if n < len(probs) else probs[:0]
    return np.vstack([head, tail]), step


def plot_timeline(path, hop_probs, classes, hop, found, truth_events=None) -> None:
    """Class probabilities (stacked) and the event bands over time, hours on the x-axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs, step = _downsample(hop_probs, TIMELINE_POINTS)
    hours = (np.arange(len(probs)) + 0.5) * step * hop / 3600.0
    colors = {c: plt.get_cmap("tab10")(i % 10) for i, c in enumerate(classes)}
    bands = [("detected", found)] + ([("truth", truth_events)] if truth_events else [])
    fig, axes = plt.subplots(
        1 + len(bands),
        1,
        figsize=(12, 3 + 0.6 * len(bands)),
        sharex=True,
        gridspec_kw={"height_ratios": [4] + [1] * len(bands)},
    )
    axes[0].stackplot(hours, probs.T, labels=classes, colors=[colors[c] for c in classes])
    axes[0].set_ylabel("probability")
    axes[0].set_ylim(0, 1)
    axes[0].legend(
        loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=len(classes), fontsize="small"
    )
    for ax, (name, events) in zip(axes[1:], bands, strict=True):
        for e in events:
            color = colors.get(e.label, "grey")
            ax.axvspan(e.start / 3600.0, e.end / 3600.0, color=color, lw=0)
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
    axes[-1].set_xlabel("hours")
    axes[-1].set_xlim(0, max(hours[-1] + 0.5 * step * hop / 3600.0, 1e-6))
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def _print_summary(summary: dict) -> None:
    proc, scr = summary["processing"], summary["screening"]
    rtf = proc["real_time_factor"]
    say(
        f"processed {proc['audio_seconds'] / 3600:.2f} h of audio in {proc['seconds']:.1f} s "
        f"(real-time factor {rtf:.5f} = 1/{1 / rtf:.0f})"
        if rtf
        else "processed 0 s of audio"
    )
    scores = summary.get("scores")
    if scores:
        micro = scores["events"]["micro"]
        lib = scores["library_scores"]
        extra = ""
        if "psds" in lib:
            extra = (
                f"; sed_scores_eval: PSDS1 {lib['psds']['psds1']['value']:.3f}, PSDS2 "
                f"{lib['psds']['psds2']['value']:.3f}, collar F1 {lib['collar_f1']['micro']:.3f}"
            )
        say(
            f"vs truth: event F1 {micro['f1']:.3f} (P {micro['precision']:.3f}, "
            f"R {micro['recall']:.3f}), frame accuracy {scores['frame_accuracy']:.3f}{extra}"
        )
        if "events_wearer" in scores:
            own = scores["events_wearer"]["micro"]
            say(
                f"wearer's events (partner-attributed left out): event F1 {own['f1']:.3f} "
                f"(P {own['precision']:.3f}, R {own['recall']:.3f}), frame accuracy "
                f"{scores['frame_accuracy_wearer']:.3f}"
            )
    sn = scr["snore"]
    say(
        f"{sum(scr['events'].values())} events; snore index {sn['index_per_h']:.1f}/h "
        f"({sn['episodes']} episodes, {sn['percent_of_night']:.1f} % of the night); "
        f"{scr['partner']['events']} partner events"
    )
