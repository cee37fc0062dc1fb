"""Night screening, scoring with sed_scores_eval, operating points and the shared audio reader.

Real audio files (soundfile, PyAV), the real sed_scores_eval library, no mocks. The screening
night is rendered with the embedded generator's own physical earbud model
(``sleepsound.data.synth``): the wearer's snores are body-conducted, the partner's sounds are
ambient.
"""

from __future__ import annotations

import tracemalloc
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sleepsound.data import synth
from sleepsound.data.audio import AudioError, open_audio, read_audio, unreadable_reason
from sleepsound.deploy import events as ev
from sleepsound.deploy import operating, scoring, screening
from sleepsound.features.logmel import SAMPLE_RATE, log_mel

SR = SAMPLE_RATE
E = ev.Event

# ============================================================================= a screening night

NIGHT_S = 180.0
WEARER_SNORES = [(10.0, 30.0), (60.0, 75.0), (140.0, 170.0)]
PARTNER_SOUNDS = [(35.0, 55.0), (100.0, 125.0)]


def render_night(path: Path, seed: int = 3) -> Path:
    """Room noise, three snores of the wearer and two sounds of the bed partner, through the
    generator's two-microphone model (channel 0 in-ear, 1 outer)."""
    rng = np.random.default_rng(seed)
    subject = synth.draw_subject(rng, "screen")
    ref = 10 ** (subject.noise_db / 20)
    n = int(NIGHT_S * SR)
    noise, _ = synth.room_noise(rng, subject, n)
    body, ambient = np.zeros(n), ref * noise
    for (a, b), maker in [(s, synth.snore_event) for s in WEARER_SNORES] + [
        (s, synth.non_wearer_event) for s in PARTNER_SOUNDS
    ]:
        i, j = int(a * SR), int(b * SR)
        ev_body, ev_ambient = maker(rng, subject, j - i, ref, False)
        body[i:j] += ev_body
        ambient[i:j] += ev_ambient
    x, _ = synth.to_channels(subject, body, ambient)
    sf.write(path, np.clip(x, -1, 1).astype(np.float32), SR, subtype="PCM_16")
    return path


def level_track(path: Path) -> screening.LevelTrack:
    track = screening.LevelTrack()
    with open_audio(path) as stream:
        for block in stream.native_blocks():
            track.add(block, stream.info.sample_rate)
    return track


def test_screening_figures_and_partner_attribution(tmp_path):
    """The five sounds, all labelled ``snore`` (as a snore model would hear a partner's snore or
    breath), are attributed by the in-ear/outer energy cue alone: the wearer's three to the
    wearer, the partner's two to the partner. Snore figures count the wearer's only."""
    path = render_night(tmp_path / "night.wav")
    track = level_track(path)
    assert track.mean_square.shape == (int(NIGHT_S / screening.LEVEL_BIN_S), 2)
    found = sorted(
        [E("snore", a, b, 0.9) for a, b in WEARER_SNORES + PARTNER_SOUNDS], key=lambda e: e.start
    )
    screened = screening.screen_events(found, track.mean_square)
    sources = {(e.start, e.end): e.source for e in screened}
    assert {s: sources[s] for s in WEARER_SNORES} == dict.fromkeys(WEARER_SNORES, "wearer")
    assert {s: sources[s] for s in PARTNER_SOUNDS} == dict.fromkeys(PARTNER_SOUNDS, "partner")
    wearer_ratio = min(e.in_ear_minus_outer_db for e in screened if e.source == "wearer")
    partner_ratio = max(e.in_ear_minus_outer_db for e in screened if e.source == "partner")
    assert wearer_ratio > partner_ratio + 10  # the cue separates them by a wide margin
    assert all(-90 < e.in_ear_dbfs < 0 and -90 < e.outer_dbfs < 0 for e in screened)

    s = screening.summarize(screened, ("quiet", "breathe", "snore"), NIGHT_S, channels=2)
    hours = NIGHT_S / 3600
    assert s["snore"]["episodes"] == 3
    assert s["snore"]["index_per_h"] == pytest.approx(3 / hours, abs=1e-3)
    assert s["snore"]["percent_of_night"] == pytest.approx(100 * 65 / NIGHT_S, abs=1e-3)
    assert s["snore"]["longest_bout_s"] == 30.0
    assert s["minutes"]["snore"] == pytest.approx(65 / 60, abs=1e-3)
    assert s["partner"] == {
        "events": 2,
        "minutes": pytest.approx(45 / 60, abs=1e-3),
        "by_label": {"quiet": 0, "breathe": 0, "snore": 2},
    }
    assert s["minutes"]["quiet"] == pytest.approx((NIGHT_S - 110) / 60, abs=1e-3)
    assert s["hourly"][0]["snore_episodes"] == 3 and s["hourly"][0]["partner_events"] == 2
    assert "not a diagnosis" in s["disclaimer"]


def test_one_channel_night_is_unattributed(tmp_path):
    mono = tmp_path / "mono.wav"
    data, _ = sf.read(render_night(tmp_path / "n.wav"), dtype="float32")
    sf.write(mono, data[:, 0], SR)
    track = level_track(mono)
    screened = screening.screen_events(
        [E("snore", 10.0, 30.0), E("non_wearer", 35.0, 55.0)], track.mean_square
    )
    assert [e.source for e in screened] == ["unknown", "partner"]
    assert screened[0].outer_dbfs is None


def test_markdown_escapes_names():
    summary = {
        "screening": screening.summarize([], ("quiet", "snore"), 60.0, 2),
        "operating_point": None,
    }
    text = screening.markdown(summary, "<script>alert(1)</script>[x](http://e)")
    assert "<script>" not in text and "](http" not in text
    assert "research measure" in text.lower() or "not a diagnosis" in text


# ============================================================================= sed_scores_eval


def hand_night():
    """30 true events of 30 s (snore and breathe alternating, one every 110 s) in one hour;
    detection finds 24 of them 1 s late and adds one 20 s false snore."""
    truth, found = [], []
    for i in range(30):
        a, label = i * 110 + 10.0, ("snore", "breathe")[i % 2]
        truth.append(E(label, a, a + 30))
        if i % 5:
            found.append(E(label, a + 1, a + 31))
    found.append(E("snore", 3350.0, 3370.0))
    classes = ("quiet", "breathe", "snore")
    probs = np.zeros((3600, 3))
    probs[:, 0] = 1
    for e in found:
        probs[int(e.start) : int(e.end)] = np.eye(3)[classes.index(e.label)]
    return truth, found, classes, probs


def test_sed_scores_eval_figures_equal_hand_computed_values():
    """Hand counts: 24 matches, 1 false alarm, 6 misses -> P = 24/25, R = 24/30,
    F1 = 2PR/(P+R) (collar 2.5 s: the 1 s shift is inside it; intersection: 29/30 overlap).
    Segment error rate (1 s segments, per class (D + I) / N): breathe misses 3 x 30 segments
    and each of its 12 found events loses its first second and adds one at its end:
    (90 + 12 + 12) / 450; snore the same plus 20 false segments: (90 + 12 + 32) / 450.
    PSDS 2 (dtc = gtc = 0.1) is 1: at the lowest threshold each class is one detection over the
    whole hour, which covers every true event and is 25 % true (> 0.1), so TPR 1 at FPR 0."""
    truth, found, classes, probs = hand_night()
    out = scoring.evaluate_night("n", probs, classes, 1.0, 3600.0, found, truth, 2.5, 2.5)
    p, r = 24 / 25, 24 / 30
    f1 = 2 * p * r / (p + r)
    assert out["collar_f1"]["micro"] == pytest.approx(f1)
    assert (out["collar_f1"]["precision"], out["collar_f1"]["recall"]) == pytest.approx((p, r))
    assert out["collar_f1"]["counts"]["snore"] == {"tps": 12, "fps": 1, "n_ref": 15}
    assert out["intersection_f1"]["micro"] == pytest.approx(f1)
    er = out["segment_error_rate"]["per_label"]
    assert er["breathe"] == pytest.approx(114 / 450) and er["snore"] == pytest.approx(134 / 450)
    assert out["segment_error_rate"]["macro"] == pytest.approx((114 + 134) / 900)
    assert out["psds"]["psds2"]["value"] == pytest.approx(1.0)
    assert 0 < out["psds"]["psds1"]["value"] < 1
    ci = out["bootstrap"]["collar_f1_micro"]
    assert ci["low"] <= f1 + 0.02 and ci["high"] >= f1 - 0.05 and ci["low"] < ci["high"]
    # cross-check: our own matcher gives the same event F1 on this night
    own = scoring.own_scores(found, truth, classes, 3600.0, 2.5, 2.5)["events"]["micro"]
    assert (own["tp"], own["fp"], own["fn"]) == (24, 1, 6)
    assert own["f1"] == pytest.approx(out["collar_f1"]["micro"])


def test_scores_tsv_is_the_library_format(tmp_path):
    from sed_scores_eval.base_modules.io import read_sed_scores

    _, _, classes, probs = hand_night()
    path = tmp_path / "n.tsv"
    path.write_text(scoring.write_scores(path, probs[:100], classes, 1.0, 99.5))
    back = read_sed_scores(path)
    assert list(back.columns) == ["onset", "offset", *classes]
    assert back["offset"].iloc[-1] == pytest.approx(99.5)
    np.testing.assert_allclose(back[list(classes)].to_numpy(), probs[:100])


# ============================================================================= operating points


def test_operating_point_parsing():
    assert operating.parse("far=2/h") == ("far", 2.0)
    assert operating.parse(" recall = 0.9 ") == ("recall", 0.9)
    assert operating.canonical("far=2.0/h") == "far=2/h"
    for bad in ("far=2", "recall=1.5", "far=-1/h", "precision=0.9", "far=nan/h"):
        with pytest.raises(operating.OperatingPointError, match="--operating-point"):
            operating.parse(bad)


def test_thresholds_meet_the_requested_rate_and_recall():
    """On 3000 synthetic validation clips: every class's false alarms per hour under the
    decision rule stay within the target, and the threshold is the lowest that does (a hair
    lower lets one more negative through); recall targets are met per class."""
    rng = np.random.default_rng(0)
    classes = ("quiet", "breathe", "snore")
    labels = rng.integers(0, 3, 3000)
    logits = rng.normal(0, 1, (3000, 3)) + 2.5 * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    for target in (2.0, 50.0, 400.0):
        point = operating.choose(probs, labels, classes, f"far={target}/h")
        for k, c in enumerate(classes[1:], start=1):
            fig = point["validation"][c]
            assert fig["far_per_h"] <= target + 1e-9
            t = point["thresholds"][c]
            neg = probs[labels != k, k]
            allowed = int(target * len(neg) / 3600)
            assert np.sum(neg >= t) <= allowed < np.sum(neg >= np.nextafter(t, 0) - 1e-12)
    point = operating.choose(probs, labels, classes, "recall=0.9")
    for k, c in enumerate(classes[1:], start=1):
        assert np.mean(probs[labels == k, k] >= point["thresholds"][c]) >= 0.9
    # the decision rule: the most probable class above its threshold, else quiet
    t = {"breathe": 0.5, "snore": 0.3}
    rows = np.array([[0.2, 0.45, 0.35], [0.1, 0.55, 0.35], [0.8, 0.1, 0.1]])
    assert ev.decide(rows, classes, t).tolist() == [2, 1, 0]
    assert ev.decide(rows, classes, None).tolist() == [1, 1, 0]


# ============================================================================= the audio reader


def test_m4a_night_decodes_to_the_same_features_as_its_wav(tmp_path):
    """A stereo WAV encoded to AAC in .m4a (PyAV) is read through PyAV (soundfile cannot) and
    gives the WAV's log-mel features within the codec's loss: mean |difference| < 0.5 dB and
    95 % of values within 2 dB over a 60 s night of the generator's sounds (measured: 0.26 and
    0.71 dB; the decoded length differs by 512 samples of codec padding)."""
    import av

    wav = render_night(tmp_path / "night.wav")
    data, _ = sf.read(wav, dtype="float32")
    data = data[: 60 * SR]
    sf.write(wav, data, SR)
    m4a = tmp_path / "night.m4a"
    with av.open(str(m4a), "w") as out:
        stream = out.add_stream("aac", rate=SR)
        stream.layout = "stereo"
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(data.T), format="fltp", layout="stereo"
        )
        frame.sample_rate, frame.pts, frame.time_base = SR, 0, Fraction(1, SR)
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    with open_audio(m4a) as s:
        assert s.info.backend == "pyav" and s.info.channels == 2
    a, b = read_audio(wav, "mean"), read_audio(m4a, "mean")
    assert abs(b.shape[1] - a.shape[1]) < 0.05 * SR  # the codec pads at most a frame or two
    n = min(a.shape[1], b.shape[1])
    diffs = []
    for start in range(0, n - 5 * SR, 5 * SR):
        fa, fb = log_mel(a[0, start : start + 5 * SR]), log_mel(b[0, start : start + 5 * SR])
        diffs.append(np.abs(fa - fb))
    d = np.concatenate([x.ravel() for x in diffs])
    assert d.mean() < 0.5 and np.percentile(d, 95) < 2.0, (d.mean(), np.percentile(d, 95))


def test_reader_reads_only_what_it_keeps(tmp_path):
    """max_seconds=5 on a 10-minute stereo file equals the first 5 s of the whole read and
    allocates a small fraction of it."""
    path = tmp_path / "long.wav"
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", 44_100, 2, "PCM_16") as f:
        for _ in range(10):
            f.write((0.1 * rng.standard_normal((60 * 44_100, 2))).astype(np.float32))
    tracemalloc.start()
    head = read_audio(path, "mean", max_seconds=5.0)
    _, peak_head = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert head.shape == (1, 5 * SR)
    whole = read_audio(path, "mean")
    np.testing.assert_allclose(head, whole[:, : 5 * SR], atol=1e-4)
    assert peak_head < 20 * 2**20, peak_head  # the whole file decodes to ~200 MB of float32


def test_one_rule_for_bad_audio(tmp_path):
    """A truncated WAV, garbage bytes, an empty file and a file without frames are refused by
    the shared reader with a reason, whether read whole, in part (preprocess) or opened."""
    good = tmp_path / "good.wav"
    sf.write(good, np.zeros((SR * 4, 2), np.float32) + 0.01, SR, subtype="PCM_16")
    data = good.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "unreadable": np.random.default_rng(0).bytes(5000),
        "empty_file": b"",
    }
    for reason, blob in cases.items():
        path = tmp_path / f"{reason}.wav"
        path.write_bytes(blob)
        for read in (lambda p: read_audio(p), lambda p: read_audio(p, max_seconds=1.0)):
            with pytest.raises(AudioError) as info:
                read(path)
            assert info.value.reason == reason and str(path) in str(info.value)
        assert unreadable_reason(path).reason == reason
    none = tmp_path / "none.wav"
    sf.write(none, np.zeros((0, 2), np.float32), SR)
    with pytest.raises(AudioError, match="no audio"):
        read_audio(none)
    assert unreadable_reason(good) is None


def test_an_event_no_louder_than_the_floor_is_unattributed():
    flat = np.full((3000, 2), 1e-6)
    louder = flat.copy()
    louder[100:400, 1] = 1e-4  # 20 dB up on the outer microphone only
    quiet = screening.screen_events([E("snore", 10, 40)], flat)[0]
    loud = screening.screen_events([E("snore", 10, 40)], louder)[0]
    assert quiet.source == "unknown" and loud.source == "partner"


def test_an_event_spanning_wearer_and_partner_is_cut_where_the_source_changes(tmp_path):
    """One snore event over the wearer's snore (10-30 s) and the partner's sound (35-55 s), as
    a classifier merges them: one cut between the two, the pieces attributed wearer then
    partner (the whole event gets one source). Events of one source are never cut."""
    track = level_track(render_night(tmp_path / "night.wav"))
    ms = track.mean_square
    merged = E("snore", 10.0, 55.0, 0.9)
    cuts = screening.source_cuts([merged], ms, hop=1.0)
    assert len(cuts) == 1 and 29.0 <= cuts[0] <= 36.0, cuts
    pieces = [E("snore", 10.0, cuts[0]), E("snore", cuts[0], 55.0)]
    assert [e.source for e in screening.screen_events(pieces, ms)] == ["wearer", "partner"]
    single = [E("snore", a, b) for a, b in WEARER_SNORES + PARTNER_SOUNDS]
    assert screening.source_cuts(single, ms, hop=1.0) == []
    assert screening.source_cuts([E("non_wearer", 10.0, 55.0)], ms, hop=1.0) == []
    assert screening.source_cuts([merged], ms[:, :1], hop=1.0) == []  # one channel


def test_touching_events_stay_apart_and_partner_detections_are_scored_apart():
    """Two touching snore events (one cut by source) are two events for the library too (its
    collar F1 equals our matcher's); without the partner's detection the wearer's task has no
    false positive."""
    classes = ("quiet", "breathe", "snore")
    truth = [E("snore", 100.0, 160.0), E("non_wearer", 160.0, 190.0)]
    found = [E("snore", 100.0, 160.0), E("snore", 160.0, 190.0)]
    wearer = found[:1]
    probs = np.tile([0.9, 0.05, 0.05], (600, 1))
    probs[100:190] = [0.0, 0.05, 0.95]
    lib = scoring.evaluate_night(
        "n", probs, classes, 1.0, 600.0, found, truth, 1.0, 1.0, bootstrap=False, wearer=wearer
    )
    own = scoring.own_scores(found, truth, classes, 600.0, 1.0, 1.0, wearer=wearer)
    assert own["events"]["micro"]["f1"] == pytest.approx(2 / 3)
    assert lib["collar_f1"]["micro"] == pytest.approx(2 / 3)
    assert own["events_wearer"]["micro"]["f1"] == 1.0 == lib["wearer"]["collar_f1"]["micro"]
    assert own["frame_accuracy_wearer"] == 1.0 > own["frame_accuracy"]
