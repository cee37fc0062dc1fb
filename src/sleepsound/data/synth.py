"""A synthetic earable sleep-sound dataset in DreamCatcher's own on-disk layout.

DreamCatcher is gated, so sleepsound ships a synthetic stand-in made by this generator:

    OUT/{train,validation,test}/{label}/{subject}_{index:05d}.wav   16 kHz, PCM16, 2 channels
    OUT/sleepsound_source.json                                      provenance, written last

Channel 0 is the in-ear microphone, channel 1 the outer one. Every clip is a simulated subject's
sound passed through a simple physical model of an earbud:

- the wearer's own sounds are body-conducted: low-passed and louder in-ear, with a weaker airborne
  copy on the outer microphone;
- ambient sound (room noise, a bed partner, bedding rustle) reaches the outer microphone fully
  and the occluded in-ear microphone only faintly and low-passed.

Subjects (breathing rate, snore pitch and formants, voice, room noise colour and level,
microphone gains, in-ear cutoff) are drawn separately for each split, so no subject is shared
between train, validation and test. The classes overlap on purpose (faint breathing in quiet
clips, low-SNR breathing, weak snores, varied noise and gain) so that models differ.

:func:`generate_night` writes one long recording of a single subject with planted events and an
``events.csv`` ground truth, rendered by the same per-label functions as the clips.

Everything is deterministic for a seed: each subject, clip and night event draws from its own
``numpy.random.SeedSequence`` spawn key, never from global state.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

from sleepsound.atomic import atomic_write
from sleepsound.data.provenance import SOURCE_FILE
from sleepsound.features.logmel import SAMPLE_RATE
from sleepsound.taxonomy import LABELS

GENERATOR = "sleepsound.data.synth"
VERSION = 1
SR = SAMPLE_RATE
CHANNELS = ("in_ear", "outer")
SUBTYPE = "PCM_16"
PARTIAL_MARKER = ".sleepsound_synth_partial"  # present while a folder is being (re)written

# --- dataset layout ----------------------------------------------------------------------------
SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
DEFAULT_N_CLIPS = 3000
CLIPS_PER_SUBJECT = 20
# Share of all clips per label (percent). quiet/breathe/snore are 54/36/10 of their 75 %.
LABEL_SHARES: dict[str, float] = {
    "quiet": 40.5,
    "non_wearer": 6.0,
    "bruxism": 2.5,
    "swallow": 4.0,
    "somniloquy": 3.0,
    "breathe": 27.0,
    "cough": 3.0,
    "snore": 7.5,
    "movements": 6.5,
}

# --- clip lengths: lognormal around 1.2 s, a few long ones -------------------------------------
LENGTH_MEDIAN_S = 1.2
LENGTH_SIGMA = 0.5
LENGTH_MIN_S = 0.4
LENGTH_MAX_S = 5.0
LONG_CLIP_FRACTION = 0.03
LONG_CLIP_RANGE_S = (5.0, 7.0)
LABEL_LENGTH_SCALE = {"cough": 0.7, "swallow": 0.8, "bruxism": 1.2, "somniloquy": 1.4}

# --- signal and channel model ------------------------------------------------------------------
WARMUP_SAMPLES = 2000  # settles the noise colouring filters before a clip starts
PINK_B = np.array([0.049922035, -0.095993537, 0.050612699, -0.004408786])
PINK_A = np.array([1.0, -2.494956002, 2.017265875, -0.522189400])
BROWN_POLE = 0.995
GLOTTAL_A = np.array([1.0, -1.9, 0.9025])  # double pole at 0.95: a smooth glottal pulse
OCCLUSION_CUTOFF_HZ = 900.0  # ambient sound leaking into the sealed ear canal
SELF_NOISE_RMS = 10 ** (-84 / 20)  # microphone self-noise, both channels
CLIP_GAIN_DB = (-6.0, 6.0)
PEAK_LIMIT = 0.95
VOWELS = (
    (730, 1090, 2440),
    (530, 1840, 2480),
    (270, 2290, 3010),
    (570, 840, 2410),
    (300, 870, 2240),
)

# Levels in dB relative to the room noise at the outer microphone (see _level).
SNR_DB = {
    "quiet_breath": (-30.0, -14.0),
    "breathe": (-12.0, 12.0),
    "breathe_stertor": (-14.0, -4.0),
    "snore": (-2.0, 24.0),
    "snore_breath": (-16.0, 4.0),
    "cough": (5.0, 32.0),
    "swallow": (-8.0, 18.0),
    "bruxism": (-5.0, 20.0),
    "somniloquy": (0.0, 28.0),
    "movements": (0.0, 24.0),
    "partner": (-6.0, 18.0),
    "tick": (-6.0, 10.0),
}
QUIET_BREATH_PROB = 0.4
QUIET_TICK_PROB = 0.25
BREATHE_STERTOR_PROB = 0.06
NON_WEARER_BREATH_PROB = 0.3
PARTNER_ACTIVITIES = (("snore", 0.45), ("breathe", 0.3), ("speech", 0.25))

# --- night -------------------------------------------------------------------------------------
NIGHT_BLOCK_S = 60.0
NIGHT_MAX_OCCUPANCY = 0.5  # planted events cover at most this share of the night
NIGHT_MIN_GAP_S = 1.0
NIGHT_FADE_S = 0.02
# label: (events per hour, (shortest, longest) duration in seconds, at least one per night)
NIGHT_EVENTS: dict[str, tuple[float, tuple[float, float], bool]] = {
    "snore": (4.0, (30.0, 240.0), True),
    "breathe": (6.0, (10.0, 90.0), True),
    "movements": (8.0, (1.0, 8.0), False),
    "swallow": (6.0, (0.6, 1.5), False),
    "cough": (2.0, (0.5, 2.5), False),
    "non_wearer": (3.0, (3.0, 40.0), False),
    "bruxism": (1.5, (1.0, 6.0), False),
    "somniloquy": (1.0, (1.0, 4.0), False),
}

# Spawn-key streams: every random draw belongs to exactly one of these.
PLAN_STREAM, SUBJECT_STREAM, CLIP_STREAM, NIGHT_STREAM = 0, 1, 2, 3


def _filter_rms(b: Sequence[float], a: Sequence[float]) -> float:
    """RMS gain of a filter on unit white noise (from its impulse response)."""
    impulse = np.zeros(1 << 15)
    impulse[0] = 1.0
    return float(np.sqrt(np.sum(signal.lfilter(b, a, impulse) ** 2)))


PINK_RMS = _filter_rms(PINK_B, PINK_A)
BROWN_RMS = _filter_rms([1.0], [1.0, -BROWN_POLE])


# ================================================================================================
# Per-label events: (body-conducted wearer sound, ambient sound), both mono
# ================================================================================================

Event = tuple[np.ndarray, np.ndarray]


def _onset(rng: np.random.Generator, voice: Voice, n: int, clip: bool, snore: bool) -> float:
    """When the first breath cycle starts: a random phase, one that puts a snore in the clip,
    or just after the start of a night event."""
    if not clip:
        return 0.1
    period = 60.0 / voice.breath_rate
    if not snore:
        return float(rng.uniform(0.0, period))
    dur = n / SR
    overlap = min(0.5 * voice.snore_s, 0.5 * dur)
    snore_start = rng.uniform(overlap - voice.snore_s, dur - overlap)
    return float(snore_start - 0.05 * period * voice.inhale_frac)


def breath_cycles(
    rng: np.random.Generator, voice: Voice, n: int, onset: float
) -> list[tuple[float, float, float, float, float]]:
    """(start, inhale_s, exhale_start, exhale_s, amplitude) of every breath touching [0, n),
    one cycle starting exactly at ``onset``, periods jittered by +-10 %."""
    period = 60.0 / voice.breath_rate
    starts = [onset]
    while starts[0] > -period:
        starts.insert(0, starts[0] - period * rng.uniform(0.9, 1.1))
    while starts[-1] < n / SR:
        starts.append(starts[-1] + period * rng.uniform(0.9, 1.1))
    cycles = []
    for start, nxt in pairwise(starts):
        p = nxt - start
        ti = p * voice.inhale_frac
        te = p * (1.0 - voice.inhale_frac - voice.pause_frac)
        cycles.append((start, ti, start + ti + 0.05 * p, te, rng.uniform(0.75, 1.25)))
    return cycles


def faint_breathing(rng: np.random.Generator, subject: Subject, n: int, ref: float) -> np.ndarray:
    cycles = breath_cycles(rng, subject.voice, n, _onset(rng, subject.voice, n, True, False))
    return _level(ref, rng, "quiet_breath") * breath_sound(rng, subject.voice, n, cycles)


def quiet_event(rng, subject: Subject, n: int, ref: float, clip: bool) -> Event:
    """Room noise only (added by the caller), sometimes with faint breathing or a few ticks."""
    body, ambient = np.zeros(n), np.zeros(n)
    if rng.random() < QUIET_BREATH_PROB:
        body = faint_breathing(rng, subject, n, ref)
    if rng.random() < QUIET_TICK_PROB:
        k = int(rng.integers(1, 5))
        ticks = _damped_sines(
            n,
            rng.uniform(0.0, n / SR, k),
            rng.uniform(2000.0, 4500.0, k),
            rng.uniform(0.0005, 0.002, k),
            np.ones(k),
        )
        ambient = _level(ref, rng, "tick") * ticks
    return body, ambient


def breathe_event(rng, subject: Subject, n: int, ref: float, clip: bool) -> Event:
    """Audible breathing at the subject's rate; a clip may catch any phase of a breath."""
    voice = subject.voice
    cycles = breath_cycles(rng, voice, n, _onset(rng, voice, n, clip, snore=False))
    body = _level(ref, rng, "breathe") * breath_sound(rng, voice, n, cycles)
    if clip and rng.random() < BREATHE_STERTOR_PROB:  # noisy breathing on the edge of a snore
        body += _level(ref, rng, "breathe_stertor") * snore_sound(rng, voice, n, cycles)
    return body, np.zeros(n)


def snore_event(rng, subject: Subject, n: int, ref: float, clip: bool) -> Event:
    """Snores (one per inhale at the breathing rate) over the breathing they interrupt."""
    voice = subject.voice
    cycles = breath_cycles(rng, voice, n, _onset(rng, voice, n, clip, snore=True))
    snore = _level(ref, rng, "snore") * snore_sound(rng, voice, n, cycles)
    breath = _level(ref, rng, "snore_breath") * breath_sound(rng, voice, n, cycles)
    return snore + breath, np.zeros(n)


def cough_event(rng, subject: Subject, n: int, ref: float, clip: bool) -> Event:
    start, length = _active_span(rng, n, clip)
    cough = cough_sound(rng, subject.voice, n, start, length)
    return _level(ref, rng, "cough") * cough, np.zeros(n)


def swallow_event(rng, subject: Subject, n: int, ref: float, clip: bool) -> Event:
    start, length = _active_span(rng, n, clip)
    return _level(ref, rng, "swallow") * swallow_sound(rng, n, start, length), np.zeros(n)


def bruxism_event(rng, subject: Subject, n: int, ref: float, clip: bool) -> Event:
    start, length = _active_span(rng, n, clip)
    return _level(ref, rng, "bruxism") * bruxism_sound(rng, n, start, length), np.zeros(n)


def somniloquy_event(rng, subject: Subject, n: int, ref: float, clip: bool) -> Event:
    start, length = _active_span(rng, n, clip)
    speech = speech_sound(rng, subject.voice, n, start, length)
    return _level(ref, rng, "somniloquy") * speech, np.zeros(n)


def movements_event(rng, subject: Subject, n: int, ref: float, clip: bool) -> Event:
    """Bedding rustle (mostly airborne, so outer) plus a few body thumps (in-ear)."""
    start, length = _active_span(rng, n, clip)
    level = _level(ref, rng, "movements")
    rustle = rustle_sound(rng, n, start, length)
    k = int(rng.integers(0, 3))
    thumps = _damped_sines(
        n,
        start + rng.uniform(0.0, length, k),
        rng.uniform(40.0, 120.0, k),
        rng.uniform(0.03, 0.08, k),
        rng.uniform(0.5, 1.5, k),
    )
    return level * (0.3 * rustle + thumps), level * rustle


def non_wearer_event(rng, subject: Subject, n: int, ref: float, clip: bool) -> Event:
    """The bed partner snoring, breathing or talking: ambient sound, so mainly the outer mic."""
    partner = subject.partner
    names = [name for name, _ in PARTNER_ACTIVITIES]
    activity = names[rng.choice(len(names), p=[p for _, p in PARTNER_ACTIVITIES])]
    if activity == "speech":
        start, length = _active_span(rng, n, clip)
        sound = _normalize(speech_sound(rng, partner, n, start, length) + 1e-9)
    else:
        snoring = activity == "snore"
        cycles = breath_cycles(rng, partner, n, _onset(rng, partner, n, clip, snore=snoring))
        sound = breath_sound(rng, partner, n, cycles)
        if snoring:
            sound = snore_sound(rng, partner, n, cycles) + 0.3 * sound
    ambient = _level(ref, rng, "partner") * 10 ** (subject.partner_db / 20) * sound
    body = np.zeros(n)
    if clip and rng.random() < NON_WEARER_BREATH_PROB:
        body = faint_breathing(rng, subject, n, ref)
    return body, ambient


EVENTS: dict[str, Callable[..., Event]] = {
    "quiet": quiet_event,
    "non_wearer": non_wearer_event,
    "bruxism": bruxism_event,
    "swallow": swallow_event,
    "somniloquy": somniloquy_event,
    "breathe": breathe_event,
    "cough": cough_event,
    "snore": snore_event,
    "movements": movements_event,
}
assert set(EVENTS) == set(LABELS) == set(LABEL_SHARES)


# ================================================================================================
# The earbud: two microphones
# ================================================================================================


def to_channels(
    subject: Subject, body: np.ndarray, ambient: np.ndarray, state: dict | None = None
) -> tuple[np.ndarray, dict]:
    """Mono body/ambient sound -> [n, 2] (in-ear, outer); ``state`` continues a stream."""
    if state is None:
        state = {"body": np.zeros((1, 2)), "occ": np.zeros((1, 2))}
    in_body, z_body = signal.sosfilt(_sos("lowpass", subject.inear_cutoff), body, zi=state["body"])
    in_amb, z_occ = signal.sosfilt(_sos("lowpass", OCCLUSION_CUTOFF_HZ), ambient, zi=state["occ"])
    in_ear = (subject.body_gain * in_body + subject.occlusion * in_amb) * 10 ** (
        subject.gain_in_db / 20
    )
    outer = (subject.air_gain * body + ambient) * 10 ** (subject.gain_out_db / 20)
    return np.stack([in_ear, outer], axis=1), {"body": z_body, "occ": z_occ}


def _self_noise(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    return x + SELF_NOISE_RMS * rng.standard_normal(x.shape, dtype=np.float32)


def render_clip(
    label: str, subject: Subject, duration_s: float, rng: np.random.Generator
) -> np.ndarray:
    """One labelled clip, float32 [n, 2] (in-ear, outer) in [-1, 1]."""
    n = max(1, int(round(duration_s * SR)))
    ref = 10 ** ((subject.noise_db + rng.normal(0.0, 2.0)) / 20)
    noise, _ = room_noise(rng, subject, n)
    body, ambient = EVENTS[label](rng, subject, n, ref, True)
    x, _ = to_channels(subject, body, ambient + ref * noise)
    x = _self_noise(rng, x) * 10 ** (rng.uniform(*CLIP_GAIN_DB) / 20)
    peak = float(np.max(np.abs(x)))
    if peak > PEAK_LIMIT:
        x *= PEAK_LIMIT / peak
    return x.astype(np.float32)


# ================================================================================================
# The clip dataset
# ================================================================================================


@dataclass(frozen=True)
class ClipSpec:
    index: int
    split: str
    label: str
    subject_id: str
    duration: float  # seconds

    @property
    def relpath(self) -> str:
        return f"{self.split}/{self.label}/{self.subject_id}_{self.index:05d}.wav"


def apportion(total: int, weights: Sequence[float], at_least_one: bool = False) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder)."""
    w = np.asarray(weights, dtype=float)
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    if at_least_one and total >= len(w):
        for i in np.flatnonzero(counts == 0):
            counts[np.argmax(counts)] -= 1
            counts[i] = 1
    return [int(c) for c in counts]


def clip_duration(rng: np.random.Generator, label: str) -> float:
    """Mostly 0.5-3 s (lognormal around 1.2 s), 3 % between 5 and 7 s; millisecond grid."""
    if rng.random() < LONG_CLIP_FRACTION:
        return round(float(rng.uniform(*LONG_CLIP_RANGE_S)), 3)
    median = LENGTH_MEDIAN_S * LABEL_LENGTH_SCALE.get(label, 1.0)
    d = median * np.exp(LENGTH_SIGMA * rng.standard_normal())
    return round(float(np.clip(d, LENGTH_MIN_S, LENGTH_MAX_S)), 3)


def check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    labels = tuple(labels)
    unknown = [lab for lab in labels if lab not in LABELS]
    if not labels or unknown or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct DreamCatcher labels {LABELS}, got {labels}")
    return labels


def plan_dataset(
    n_clips: int, seed: int, labels: Sequence[str] = LABELS
) -> tuple[list[ClipSpec], dict[str, Subject]]:
    """Every clip's split, label, subject and length, and the subjects (disjoint per split)."""
    labels = check_labels(labels)
    if n_clips < 1:
        raise ValueError(f"n_clips must be positive, got {n_clips}")
    rng = _rng(seed, PLAN_STREAM)
    weights = [LABEL_SHARES[lab] for lab in labels]
    specs: list[ClipSpec] = []
    subjects: dict[str, Subject] = {}
    for split, n_split in zip(SPLITS, apportion(n_clips, SPLIT_FRACTIONS), strict=True):
        counts = apportion(n_split, weights, at_least_one=True)
        first = len(subjects)
        ids = [f"s{first + k:04d}" for k in range(max(1, round(n_split / CLIPS_PER_SUBJECT)))]
        for k, sid in enumerate(ids):
            subjects[sid] = draw_subject(_rng(seed, SUBJECT_STREAM, first + k), sid)
        split_labels = rng.permutation(np.repeat(np.array(labels), counts))
        owners = rng.permutation(np.arange(n_split) % len(ids))
        for label, owner in zip(split_labels, owners, strict=True):
            label = str(label)
            specs.append(ClipSpec(len(specs), split, label, ids[owner], clip_duration(rng, label)))
    return specs, subjects


def _prepare_out_dir(out: Path, kind: str) -> None:
    """Make ``out`` ready for a fresh set: clear our own earlier output, never anyone else's."""
    out.mkdir(parents=True, exist_ok=True)
    source = out / SOURCE_FILE
    ours = (out / PARTIAL_MARKER).exists()
    if source.exists():
        ours = ours or json.loads(source.read_text()).get("kind") == kind
        if not ours:
            raise FileExistsError(f"{out} holds a {SOURCE_FILE} that is not a {kind} set")
        source.unlink()
    old = [p for split in SPLITS for p in (out / split).glob("*/*") if p.is_file()]
    if old and not ours:
        raise FileExistsError(f"{out} already holds audio that sleepsound synth did not write")
    for path in old:
        path.unlink()
    (out / PARTIAL_MARKER).touch()


def _finish(out: Path, info: dict) -> dict:
    """Write the provenance atomically, last: a folder with it is complete. Returns it as read
    back (plain JSON types)."""
    text = json.dumps(info, indent=2) + "\n"
    atomic_write(out / SOURCE_FILE, text)  # the mode the umask gives, not mkstemp's 0600
    (out / PARTIAL_MARKER).unlink(missing_ok=True)
    return json.loads(text)


def _track(items: Sequence, enabled: bool, description: str) -> Iterable:
    if not enabled:
        return items
    from rich.progress import track

    return track(items, description=description, total=len(items))


def generate_dataset(
    out_dir: Path | str,
    n_clips: int = DEFAULT_N_CLIPS,
    seed: int = 0,
    labels: Sequence[str] = LABELS,
    progress: bool = True,
) -> dict:
    """Write ``out_dir/{split}/{label}/*.wav`` and ``sleepsound_source.json``; return the latter."""
    out = Path(out_dir)
    labels = check_labels(labels)
    specs, subjects = plan_dataset(n_clips, seed, labels)
    _prepare_out_dir(out, "synthetic")
    for split in SPLITS:
        for label in labels:
            (out / split / label).mkdir(parents=True, exist_ok=True)
    for spec in _track(specs, progress, "Synthesising clips"):
        rng = _rng(seed, CLIP_STREAM, spec.index)
        audio = render_clip(spec.label, subjects[spec.subject_id], spec.duration, rng)
        sf.write(out / spec.relpath, audio, SR, subtype=SUBTYPE)
    splits = {s: {lab: 0 for lab in labels} for s in SPLITS}
    for spec in specs:
        splits[spec.split][spec.label] += 1
    info = {
        "kind": "synthetic",
        "generator": GENERATOR,
        "version": VERSION,
        "seed": seed,
        "n_clips": n_clips,
        "labels": list(labels),
        "splits": splits,
        "sample_rate": SR,
        "channels": list(CHANNELS),
    }
    return _finish(out, info)


# ================================================================================================
# A whole night
# ================================================================================================

DEFAULT_NIGHT_HOURS = 8.0


def plan_night(rng: np.random.Generator, hours: float) -> list[tuple[str, float, float]]:
    """Non-overlapping (label, start, end) events, sorted, in whole milliseconds."""
    total = hours * 3600.0
    labels, durations = [], []
    for label, (per_hour, (shortest, longest), required) in NIGHT_EVENTS.items():
        count = int(rng.poisson(per_hour * hours))
        for _ in range(max(count, int(required))):
            labels.append(label)
            durations.append(np.exp(rng.uniform(np.log(shortest), np.log(longest))))
    d = np.array(durations)
    d *= min(1.0, NIGHT_MAX_OCCUPANCY * total / d.sum())
    free = max(total - d.sum() - (len(d) + 1) * NIGHT_MIN_GAP_S, 0.0)
    gaps = NIGHT_MIN_GAP_S + free * rng.dirichlet(np.ones(len(d) + 1))
    events = []
    t = gaps[0]
    for j, i in enumerate(rng.permutation(len(d))):
        start, end = round(t, 3), min(round(t + d[i], 3), total)
        if end > start:
            events.append((labels[i], start, end))
        t += d[i] + gaps[j + 1]
    return events


def night_event(
    label: str, rng: np.random.Generator, subject: Subject, n: int, ref: float
) -> Event:
    """A planted event filling its window, faded in and out."""
    body, ambient = EVENTS[label](rng, subject, n, ref, False)
    fade = np.ones(n)
    k = min(int(NIGHT_FADE_S * SR), n // 2)
    if k:
        ramp = np.linspace(0.0, 1.0, k)
        fade[:k], fade[n - k :] = ramp, ramp[::-1]
    return body * fade, ambient * fade


def generate_night(
    out_dir: Path | str, hours: float = DEFAULT_NIGHT_HOURS, seed: int = 0, progress: bool = True
) -> dict:
    """Write ``night.wav`` (2 channels, 16 kHz), ``events.csv`` and ``sleepsound_source.json``.

    One subject, room noise throughout, planted events; streamed in 60 s blocks.
    """
    if hours <= 0:
        raise ValueError(f"hours must be positive, got {hours}")
    out = Path(out_dir)
    _prepare_out_dir(out, "synthetic-night")
    subject = draw_subject(_rng(seed, NIGHT_STREAM, 0), "night")
    events = plan_night(_rng(seed, NIGHT_STREAM, 1), hours)
    noise_rng = _rng(seed, NIGHT_STREAM, 2)
    ref = 10 ** (subject.noise_db / 20)
    n_total = int(round(hours * 3600.0 * SR))
    block = int(NIGHT_BLOCK_S * SR)
    spans = [(round(start * SR), round(end * SR)) for _, start, end in events]
    rendered: dict[int, Event] = {}
    noise_state = chan_state = None
    with sf.SoundFile(out / "night.wav", "w", SR, len(CHANNELS), SUBTYPE) as f:
        for b0 in _track(range(0, n_total, block), progress, "Synthesising night"):
            m = min(block, n_total - b0)
            noise, noise_state = room_noise(noise_rng, subject, m, noise_state)
            body, ambient = np.zeros(m), ref * noise
            for i, (s0, s1) in enumerate(spans):
                lo, hi = max(s0, b0), min(s1, b0 + m)
                if hi <= lo:
                    continue
                if i not in rendered:
                    rng = _rng(seed, NIGHT_STREAM, 3, i)
                    rendered[i] = night_event(events[i][0], rng, subject, s1 - s0, ref)
                ev_body, ev_ambient = rendered[i]
                body[lo - b0 : hi - b0] += ev_body[lo - s0 : hi - s0]
                ambient[lo - b0 : hi - b0] += ev_ambient[lo - s0 : hi - s0]
                if s1 <= b0 + m:
                    del rendered[i]
            x, chan_state = to_channels(subject, body, ambient, chan_state)
            f.write(np.clip(_self_noise(noise_rng, x), -1.0, 1.0).astype(np.float32))
    with open(out / "events.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["label", "start", "end"])
        writer.writerows([label, f"{start:.3f}", f"{end:.3f}"] for label, start, end in events)
    counts = {label: sum(e[0] == label for e in events) for label in NIGHT_EVENTS}
    info = {
        "kind": "synthetic-night",
        "generator": GENERATOR,
        "version": VERSION,
        "seed": seed,
        "hours": hours,
        "sample_rate": SR,
        "channels": list(CHANNELS),
        "n_events": len(events),
        "events": counts,
        "subject": asdict(subject),
    }
    return _finish(out, info)


def _rng(seed: int, *key: int) -> np.random.Generator:
    """An independent generator for one spawn key under ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


# ================================================================================================
# Subjects
# ================================================================================================


@dataclass(frozen=True)
class Voice:
    """One sleeper's breathing, snoring and speaking."""

    breath_rate: float  # breaths per minute
    inhale_frac: float  # share of a breath cycle spent inhaling
    pause_frac: float  # share spent in the end-expiratory pause
    breath_hz: float  # centre of the airflow-noise band
    snore_f0: float  # Hz
    formants: tuple[float, float, float]  # upper-airway resonances of the snore
    snore_s: float  # typical snore length
    snore_noise: float  # 0..1 share of turbulent noise in a snore
    speech_f0: float
    formant_scale: float  # vocal-tract length


@dataclass(frozen=True)
class Subject:
    """A simulated wearer, their bed partner, their room and their earbud."""

    subject_id: str
    voice: Voice
    partner: Voice
    noise_mix: tuple[float, float, float]  # white, pink, brown power shares
    noise_db: float  # room noise RMS at the outer microphone, dBFS
    hum_hz: float  # mains hum frequency, 0 for none
    hum_db: float  # hum level relative to the room noise
    inear_cutoff: float  # Hz, body-conduction low-pass
    body_gain: float  # in-ear boost of body-conducted sound (occlusion effect)
    occlusion: float  # amplitude of ambient sound reaching the in-ear microphone
    air_gain: float  # amplitude of the wearer's airborne sound at the outer microphone
    gain_in_db: float
    gain_out_db: float
    partner_db: float  # partner loudness offset (distance)


def draw_voice(rng: np.random.Generator) -> Voice:
    return Voice(
        breath_rate=float(rng.uniform(10.0, 24.0)),
        inhale_frac=float(rng.uniform(0.35, 0.45)),
        pause_frac=float(rng.uniform(0.08, 0.25)),
        breath_hz=float(rng.uniform(250.0, 900.0)),
        snore_f0=float(np.exp(rng.uniform(np.log(30.0), np.log(120.0)))),
        formants=(
            float(rng.uniform(250.0, 600.0)),
            float(rng.uniform(800.0, 1600.0)),
            float(rng.uniform(2000.0, 3000.0)),
        ),
        snore_s=float(rng.uniform(0.5, 1.4)),
        snore_noise=float(rng.uniform(0.15, 0.6)),
        speech_f0=float(rng.uniform(90.0, 230.0)),
        formant_scale=float(rng.uniform(0.88, 1.15)),
    )


def draw_subject(rng: np.random.Generator, subject_id: str) -> Subject:
    return Subject(
        subject_id=subject_id,
        voice=draw_voice(rng),
        partner=draw_voice(rng),
        noise_mix=tuple(float(w) for w in rng.dirichlet([1.0, 1.0, 1.0])),
        noise_db=float(rng.uniform(-62.0, -38.0)),
        hum_hz=float(rng.choice([50.0, 60.0])) if rng.random() < 0.3 else 0.0,
        hum_db=float(rng.uniform(-20.0, -6.0)),
        inear_cutoff=float(rng.uniform(600.0, 2000.0)),
        body_gain=float(rng.uniform(1.4, 3.0)),
        occlusion=float(rng.uniform(0.08, 0.3)),
        air_gain=float(rng.uniform(0.15, 0.4)),
        gain_in_db=float(rng.uniform(-4.0, 4.0)),
        gain_out_db=float(rng.uniform(-4.0, 4.0)),
        partner_db=float(rng.uniform(-6.0, 0.0)),
    )


# ================================================================================================
# Signal building blocks (mono, float64)
# ================================================================================================


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / (np.sqrt(np.mean(x * x)) + 1e-12)


def _level(ref: float, rng: np.random.Generator, key: str) -> float:
    """An amplitude ``SNR_DB[key]`` dB (uniformly drawn) above the noise level ``ref``."""
    low, high = SNR_DB[key]
    return ref * 10 ** (rng.uniform(low, high) / 20)


def _sos(kind: str, freq: float | tuple[float, float], order: int = 2) -> np.ndarray:
    """A Butterworth filter; edges kept inside (10 Hz, 0.95 Nyquist), snapped to a 1/48-octave
    grid so that designs are shared (cached) across clips."""
    edges = np.clip(np.atleast_1d(np.asarray(freq, dtype=float)), 10.0, 0.475 * SR)
    snapped = tuple(float(2 ** (round(np.log2(f) * 48) / 48)) for f in edges)
    return _butter(kind, snapped, order)


@lru_cache(maxsize=8192)
def _butter(kind: str, edges: tuple[float, ...], order: int) -> np.ndarray:
    wn = edges if len(edges) > 1 else edges[0]
    return signal.butter(order, wn, btype=kind, fs=SR, output="sos")


def _bandpass(x: np.ndarray, low: float, high: float, order: int = 2) -> np.ndarray:
    return signal.sosfilt(_sos("bandpass", (low, high), order), x)


def _smooth_random(rng: np.random.Generator, n: int, rate_hz: float) -> np.ndarray:
    """A smooth random contour of ``n`` samples, about ``rate_hz`` wiggles per second."""
    k = max(2, int(n / SR * rate_hz) + 2)
    return np.interp(np.linspace(0.0, k - 1.0, n), np.arange(k), rng.standard_normal(k))


def _pulse_train(
    rng: np.random.Generator, f0: np.ndarray, shimmer: float
) -> tuple[np.ndarray, np.ndarray]:
    """Glottal-like pulses at the instantaneous frequency ``f0``: (pulses, cycle phase)."""
    phase = np.cumsum(f0) / SR + rng.random()
    pulses = np.diff(np.floor(phase), prepend=np.floor(phase[0]))
    pulses *= 1.0 + shimmer * rng.standard_normal(len(f0))
    return signal.lfilter([1.0], GLOTTAL_A, pulses), phase


def _formants(x: np.ndarray, formants: Sequence[float], gains=(1.0, 0.5, 0.25)) -> np.ndarray:
    """A parallel bank of resonators (bandwidth ~ 12 % of each centre plus 60 Hz)."""
    out = np.zeros_like(x)
    for f, g in zip(formants, gains, strict=True):
        bw = 60.0 + 0.12 * f
        out += g * _bandpass(x, f - bw / 2, f + bw / 2, order=1)
    return out


def _window(kind: str, m: int) -> np.ndarray:
    """Amplitude shapes: a breath, a snore, an explosive burst, a hann bump."""
    x = (np.arange(m) + 0.5) / m
    if kind == "breath":
        s = np.sin(np.pi * x)
        return s * np.sqrt(s)
    if kind == "snore":
        return signal.windows.tukey(m, 0.5)
    if kind == "burst":
        t = x * m / SR
        return (1.0 - np.exp(-t / 0.004)) * np.exp(-t / max(0.25 * m / SR, 1e-3))
    return np.sin(np.pi * x) ** 2


def _add(env: np.ndarray, start_s: float, length_s: float, amp: float, kind: str) -> None:
    """Add a shaped bump of ``length_s`` at ``start_s`` into ``env`` (clipped to its range)."""
    i0 = int(round(start_s * SR))
    m = max(1, int(round(length_s * SR)))
    a, b = max(i0, 0), min(i0 + m, len(env))
    if b > a:
        env[a:b] += amp * _window(kind, m)[a - i0 : b - i0]


def _damped_sines(
    n: int, times: Iterable[float], freqs: Iterable[float], taus: Iterable[float], amps
) -> np.ndarray:
    """A sum of decaying sinusoids (clicks, thumps, bubbles)."""
    out = np.zeros(n)
    for t0, f, tau, a in zip(times, freqs, taus, amps, strict=True):
        m = int(5 * tau * SR) + 1
        t = np.arange(m) / SR
        seg = a * np.sin(2 * np.pi * f * t) * np.exp(-t / tau)
        i0 = int(round(t0 * SR))
        lo, hi = max(i0, 0), min(i0 + m, n)
        if hi > lo:
            out[lo:hi] += seg[lo - i0 : hi - i0]
    return out


def _active_span(rng: np.random.Generator, n: int, clip: bool) -> tuple[float, float]:
    """Where a burst-like event lies: most of a clip, or all of a night event's window."""
    dur = n / SR
    if not clip:
        return 0.05 * min(dur, 1.0), max(dur - 0.1 * min(dur, 1.0), 0.05)
    start = rng.uniform(0.0, 0.2) * dur
    return start, rng.uniform(0.6, 0.95) * (dur - start)


# ================================================================================================
# Sound sources
# ================================================================================================


def breath_sound(rng: np.random.Generator, voice: Voice, n: int, cycles) -> np.ndarray:
    """Turbulent airflow noise: a brighter inhale and a darker, softer exhale per cycle."""
    env_in, env_ex = np.zeros(n), np.zeros(n)
    for start, ti, ex_start, te, amp in cycles:
        _add(env_in, start, ti, amp, "breath")
        _add(env_ex, ex_start, te, amp * rng.uniform(0.4, 0.8), "breath")
    c = voice.breath_hz
    inhale = _normalize(_bandpass(rng.standard_normal(n), 0.5 * c, 2.5 * c))
    exhale = _normalize(_bandpass(rng.standard_normal(n), 0.3 * c, 1.5 * c))
    return env_in * inhale + env_ex * exhale


def snore_sound(rng: np.random.Generator, voice: Voice, n: int, cycles) -> np.ndarray:
    """Soft-palate flutter: pulses at the snore f0 through the airway formants, one per inhale."""
    env = np.zeros(n)
    for start, ti, _, _, amp in cycles:
        length = min(voice.snore_s * rng.uniform(0.8, 1.2), 0.95 * ti)
        _add(env, start + 0.05 * ti, length, amp * rng.uniform(0.7, 1.3), "snore")
    f0 = voice.snore_f0 * (1.0 + 0.06 * _smooth_random(rng, n, 3.0))
    pulses, phase = _pulse_train(rng, f0, shimmer=0.35)
    voiced = _normalize(_formants(pulses, voice.formants) + 0.5 * _normalize(pulses))
    flutter = 0.6 + 0.4 * np.cos(2 * np.pi * phase)
    turbulence = _normalize(_bandpass(rng.standard_normal(n), 150.0, 2500.0) * flutter)
    src = (1.0 - voice.snore_noise) * voiced + voice.snore_noise * turbulence
    return env * _normalize(src)


def speech_sound(rng: np.random.Generator, voice: Voice, n: int, start: float, length: float):
    """Sleep-talk: voiced syllables with a falling, wandering pitch and changing vowels."""
    out = np.zeros(n)
    t = start
    end = start + length
    while t < end - 0.08:
        syl = min(rng.uniform(0.12, 0.35), end - t)
        m = int(syl * SR)
        f0 = voice.speech_f0 * rng.uniform(0.85, 1.2) * np.linspace(1.05, 0.9, m)
        f0 *= 1.0 + 0.04 * _smooth_random(rng, m, 8.0)
        pulses, _ = _pulse_train(rng, f0, shimmer=0.1)
        vowel = np.array(VOWELS[rng.integers(len(VOWELS))]) * voice.formant_scale
        seg = _normalize(_formants(pulses, vowel, gains=(1.0, 0.6, 0.3))) * _window("hann", m)
        if rng.random() < 0.4:  # a fricative onset
            k = min(m, int(0.05 * SR))
            seg[:k] += 0.4 * _bandpass(rng.standard_normal(k), 2500.0, 7000.0) * _window("hann", k)
        i0 = int(t * SR)
        hi = min(i0 + m, n)
        out[i0:hi] += seg[: hi - i0] * rng.uniform(0.6, 1.0)
        t += syl + rng.uniform(0.03, 0.2)
    return out


def cough_sound(rng: np.random.Generator, voice: Voice, n: int, start: float, length: float):
    """1-3 coughs: an explosive broadband burst with a short voiced tail each."""
    count = int(rng.integers(1, 4)) if length > 0.6 else 1
    times = start + np.sort(rng.uniform(0.0, max(length - 0.25, 0.01), count))
    burst_env, tail_env = np.zeros(n), np.zeros(n)
    for t in times:
        _add(burst_env, t, rng.uniform(0.15, 0.4), rng.uniform(0.6, 1.0), "burst")
        _add(tail_env, t + 0.03, rng.uniform(0.1, 0.25), rng.uniform(0.1, 0.4), "hann")
    burst = _normalize(_bandpass(rng.standard_normal(n), 150.0, 5000.0))
    f0 = np.full(n, 1.3 * voice.speech_f0)
    pulses, _ = _pulse_train(rng, f0, shimmer=0.3)
    tail = _normalize(_formants(pulses, np.array(VOWELS[0]) * voice.formant_scale))
    return burst_env * burst + tail_env * tail


def swallow_sound(rng: np.random.Generator, n: int, start: float, length: float) -> np.ndarray:
    """A low-frequency click followed by a gurgle of small bubbles."""
    click = _damped_sines(
        n, [start], [rng.uniform(120.0, 400.0)], [rng.uniform(0.012, 0.03)], [1.0]
    )
    k = int(rng.integers(4, 15))
    times = start + 0.05 + np.sort(rng.uniform(0.0, max(0.9 * length - 0.05, 0.05), k))
    bubbles = _damped_sines(
        n,
        times,
        rng.uniform(300.0, 1300.0, k),
        rng.uniform(0.004, 0.015, k),
        rng.uniform(0.1, 0.5, k),
    )
    return click + bubbles


def bruxism_sound(rng: np.random.Generator, n: int, start: float, length: float) -> np.ndarray:
    """Trains of short high-frequency grinding clicks over a gritty low-mid noise."""
    env = np.zeros(n)
    t = start
    while t < start + length - 0.1:
        burst = min(rng.uniform(0.2, 1.0), start + length - t)
        _add(env, t, burst, rng.uniform(0.6, 1.0), "snore")
        t += burst + rng.uniform(0.05, 0.4)
    rate = rng.uniform(30.0, 90.0)
    clicks = (rng.random(n) < rate / SR) * rng.uniform(0.3, 1.0, n)
    lo = rng.uniform(1500.0, 3000.0)
    clicks = _normalize(_bandpass(clicks, lo, lo * rng.uniform(1.6, 2.5)))
    grit = _normalize(_bandpass(rng.standard_normal(n), 300.0, 1500.0))
    return env * (clicks + 0.3 * grit)


def rustle_sound(rng: np.random.Generator, n: int, start: float, length: float) -> np.ndarray:
    """Bedding rustle: low-mid broadband noise under an irregular, bursty envelope."""
    env = np.zeros(n)
    _add(env, start, length, 1.0, "snore")
    irregular = np.abs(_smooth_random(rng, n, rng.uniform(4.0, 15.0))) ** 2
    noise = _bandpass(rng.standard_normal(n), 100.0, rng.uniform(1500.0, 5000.0))
    return env * irregular * _normalize(noise)


def room_noise(
    rng: np.random.Generator, subject: Subject, n: int, state: dict | None = None
) -> tuple[np.ndarray, dict]:
    """Room noise of about unit RMS in the subject's colour (+ hum); ``state`` continues a
    stream (filter memories and the hum's clock)."""
    if state is None:
        _, state = room_noise(rng, subject, WARMUP_SAMPLES, _noise_state())
    white = rng.standard_normal(n)
    pink, zp = signal.lfilter(PINK_B, PINK_A, white, zi=state["pink"])
    brown, zb = signal.lfilter([1.0], [1.0, -BROWN_POLE], white, zi=state["brown"])
    w, p, b = subject.noise_mix
    x = np.sqrt(w) * white + np.sqrt(p) / PINK_RMS * pink + np.sqrt(b) / BROWN_RMS * brown
    if subject.hum_hz:
        t = (state["t"] + np.arange(n)) / SR
        hum = np.sin(2 * np.pi * subject.hum_hz * t) + 0.5 * np.sin(4 * np.pi * subject.hum_hz * t)
        x += 10 ** (subject.hum_db / 20) * hum
    return x, {"pink": zp, "brown": zb, "t": state["t"] + n}


def _noise_state() -> dict:
    return {"pink": np.zeros(3), "brown": np.zeros(1), "t": 0}
