"""The interactive night report: one self-contained HTML file per night (works offline).

Plotly draws a zoomable timeline (class probabilities per hop interval, the detected events and,
with ``--truth``, the true ones) and the hourly chart; plotly.js is embedded inline, so the page
needs no network. Below: the screening summary, the operating point with its validation
precision / recall, the scores, and the event table where each event is **playable**: the first
``EXCERPT_S`` seconds of its audio (both microphones as left/right, ``EXCERPT_SR`` Hz PCM16 WAV)
are embedded as base64 in an ``<audio>`` element, for at most ``MAX_PLAYABLE`` events (the most
confident ones; the others are listed without audio, and the page says so).

Every text that comes from a file (the recording's name, paths) is HTML-escaped; the figures
carry only our own labels and numbers.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

import numpy as np
import soundfile as sf
import soxr

EXCERPT_S = 4.0
EXCERPT_SR = 8000
MAX_PLAYABLE = 60
TIMELINE_POINTS = 4000
COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
)
STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px}
th{background:#f3f3f3}.note{background:#fff6d6;padding:.5em;border-left:4px solid #e0b000}
audio{height:28px;width:220px}
"""


def excerpts_wav(segments: Sequence[np.ndarray], sr: int) -> list[str]:
    """Base64 WAV (PCM16, ``EXCERPT_SR`` Hz) of each ``[C, n]`` native-rate segment."""
    out = []
    for seg in segments:
        x = np.ascontiguousarray(seg.T, dtype=np.float32)
        if sr != EXCERPT_SR and len(x):
            x = soxr.resample(x, sr, EXCERPT_SR, quality="HQ")
        buf = io.BytesIO()
        sf.write(buf, np.clip(x, -1, 1), EXCERPT_SR, format="WAV", subtype="PCM_16")
        out.append(base64.b64encode(buf.getvalue()).decode("ascii"))
    return out


def playable(events: Sequence, limit: int = MAX_PLAYABLE) -> list[int]:
    """Indices of the events that get audio: the most confident ``limit``, in time order."""
    order = sorted(range(len(events)), key=lambda i: -events[i].confidence)[:limit]
    return sorted(order)


def _downsample(probs: np.ndarray, points: int) -> tuple[np.ndarray, int]:
    step = max(1, int(np.ceil(len(probs) / points)))
    n = len(probs) // step * step
    head = probs[:n].reshape(-1, step, probs.shape[1]).mean(axis=1)
    tail = probs[n:].mean(axis=0, keepdims=True) if n < len(probs) else probs[:0]
    return np.vstack([head, tail]), step


def figures(hop_probs, classes, hop, events, truth_events, hourly) -> tuple[str, str]:
    """(timeline div, hourly div); the first one carries plotly.js inline."""
    import plotly.graph_objects as go
    import plotly.io as pio
    from plotly.subplots import make_subplots

    probs, step = _downsample(np.asarray(hop_probs), TIMELINE_POINTS)
    minutes = (np.arange(len(probs)) + 0.5) * step * hop / 60.0
    color = {c: COLORS[i % len(COLORS)] for i, c in enumerate(classes)}
    rows = 2 if truth_events is None else 3
    fig = make_subplots(
        rows=rows, cols=1, shared_xaxes=True, row_heights=[0.7] + [0.3 / (rows - 1)] * (rows - 1)
    )
    for k, c in enumerate(classes):
        fig.add_trace(
            go.Scatter(x=minutes, y=probs[:, k], name=c, line={"color": color[c], "width": 1}),
            row=1,
            col=1,
        )
    bands = [("detected", events)] + ([("truth", truth_events)] if truth_events is not None else [])
    for r, (name, evs) in enumerate(bands, start=2):
        for c in classes:
            mine = [e for e in evs if e.label == c]
            if not mine:
                continue
            fig.add_trace(
                go.Bar(
                    x=[(e.end - e.start) / 60.0 for e in mine],
                    base=[e.start / 60.0 for e in mine],
                    y=[name] * len(mine),
                    orientation="h",
                    marker={"color": color[c]},
                    name=f"{c} ({name})",
                    showlegend=False,
                    hovertemplate="%{base:.2f} min, %{x:.2f} min long<extra>" + c + "</extra>",
                ),
                row=r,
                col=1,
            )
    fig.update_yaxes(title_text="probability", range=[0, 1], row=1, col=1)
    fig.update_xaxes(title_text="minutes from start", row=rows, col=1)
    fig.update_layout(height=520, barmode="overlay", margin={"t": 30}, legend={"orientation": "h"})
    timeline = pio.to_html(fig, include_plotlyjs=True, full_html=False, div_id="timeline")
    hours = [f"hour {r['hour']}" for r in hourly]
    bars = go.Figure(
        [
            go.Bar(
                x=hours,
                y=[r.get(f"{c}_minutes", 0.0) for r in hourly],
                name=c,
                marker={"color": color[c]},
            )
            for c in classes
            if f"{c}_minutes" in hourly[0]
        ]
    )
    bars.update_layout(barmode="stack", height=320, yaxis_title="minutes", margin={"t": 30})
    hourly_div = pio.to_html(bars, include_plotlyjs=False, full_html=False, div_id="hourly")
    return timeline, hourly_div


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows
    )  # cells are escaped (or built from escaped parts) by the callers
    return f"<table><tr>{head}</tr>{body}</table>"


def _e(value) -> str:
    return html.escape(str(value))


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def render(summary: dict, screened, hop_probs, truth_events, audio: dict[int, str]) -> str:
    """The whole page. ``audio``: event index -> base64 WAV."""
    rec, scr = summary["recording"], summary["screening"]
    classes, hop = summary["model"]["classes"], summary["parameters"]["hop_s"]
    timeline, hourly = figures(hop_probs, classes, hop, screened, truth_events, scr["hourly"])
    sn, partner = scr["snore"], scr["partner"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Night report: {_e(rec['name'])}</title><style>{STYLE}</style></head><body>",
        f"<h1>Night report: {_e(rec['name'])}</h1>",
        f"<p class='note'>{_e(scr['disclaimer'])}</p>",
        f"<p>{_e(rec['path'])}: {rec['duration_s'] / 3600:.2f} h, {_e(rec['format'])}, "
        f"{rec['channels']} channel(s). Model: {_e(summary['model'].get('path', ''))} "
        f"({_e(summary['model'].get('backend', ''))}). Decision: "
        f"{_e(summary['decision'])}.</p>",
        "<h2>Screening summary</h2>",
        _table(
            ["measure", "value"],
            [
                ["snore episodes (wearer)", sn["episodes"]],
                ["snore index", f"{sn['index_per_h']:.2f} episodes/h"],
                ["snoring", f"{sn['percent_of_night']:.2f} % of the night"],
                ["longest snoring bout", f"{sn['longest_bout_s']:.1f} s"],
                ["partner events", f"{partner['events']} ({partner['minutes']:.2f} min)"],
                ["attribution", _e(scr["attribution"])],
            ]
            + [[_e(c), f"{m:.2f} min"] for c, m in scr["minutes"].items()],
        ),
        "<h2>Timeline</h2>",
        timeline,
        "<h2>Per hour</h2>",
        hourly,
    ]
    op = summary.get("operating_point")
    if op:
        parts += [
            f"<h2>Operating point {_e(op['spec'])}</h2>",
            "<p>Per-class thresholds chosen on the validation split of the model's run; "
            "precision, recall and false alarms per hour they give there:</p>",
            _table(
                ["class", "threshold", "precision", "recall", "false alarms/h"],
                [
                    [
                        _e(c),
                        f"{v['threshold']:.3f}",
                        f"{v['precision']:.3f}",
                        f"{v['recall']:.3f}",
                        f"{v['far_per_h']:.1f}",
                    ]
                    for c, v in op["validation"].items()
                ],
            ),
        ]
    parts += _scores_html(summary.get("scores"))
    parts += _events_html(screened, audio)
    parts.append("</body></html>")
    return "\n".join(parts)


def _scores_html(scores: dict | None) -> list[str]:
    if not scores or "collar_f1" not in scores.get("library_scores", {}):
        return []
    lib = scores["library_scores"]
    boot = lib.get("bootstrap", {})

    def ci(key):
        b = boot.get(key)
        return (
            f" (90 % CI {b['low']:.3f}-{b['high']:.3f})"
            if isinstance(b, dict) and "low" in b
            else ""
        )

    rows = [
        ["PSDS scenario 1", f"{lib['psds']['psds1']['value']:.3f}{ci('psds1')}"],
        ["PSDS scenario 2", f"{lib['psds']['psds2']['value']:.3f}"],
        ["collar-based F1 (micro)", f"{lib['collar_f1']['micro']:.3f}{ci('collar_f1_micro')}"],
        ["intersection-based F1 (micro)", f"{lib['intersection_f1']['micro']:.3f}"],
        ["segment-based error rate", f"{lib['segment_error_rate']['macro']:.3f}"],
        ["frame accuracy (ours)", f"{scores['frame_accuracy']:.3f}"],
    ]
    return [
        "<h2>Scores against the ground truth (sed_scores_eval)</h2>",
        _table(["score", "value"], rows),
    ]


def _events_html(screened, audio: dict[int, str]) -> list[str]:
    rows = []
    for i, e in enumerate(screened):
        player = (
            f"<audio controls preload='none' src='data:audio/wav;base64,{audio[i]}'></audio>"
            if i in audio
            else "-"
        )
        rows.append(
            [
                i + 1,
                _e(e.label),
                _clock(e.start),
                f"{e.duration:.1f} s",
                f"{e.confidence:.2f}",
                _e(e.source),
                f"{e.in_ear_dbfs:.1f}",
                "-" if e.outer_dbfs is None else f"{e.outer_dbfs:.1f}",
                "-" if e.in_ear_minus_outer_db is None else f"{e.in_ear_minus_outer_db:.1f}",
                player,
            ]
        )
    note = (
        f"<p>{len(audio)} of {len(screened)} events playable (the most confident "
        f"{MAX_PLAYABLE}; first {EXCERPT_S:g} s, left = in-ear, right = outer).</p>"
    )
    header = [
        "#",
        "label",
        "start",
        "duration",
        "confidence",
        "source",
        "in-ear dBFS",
        "outer dBFS",
        "in-ear - outer dB",
        "listen",
    ]
    return [f"<h2 id='events'>Events ({len(screened)})</h2>", note, _table(header, rows)]
