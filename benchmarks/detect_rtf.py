"""Real-time factor of whole-recording detection per model variant (one run, same recording).

Generates a synthetic night (default 1 h, two channels, 16 kHz), then runs detection with the
run's PyTorch checkpoint, its ONNX fp32 export and its ONNX int8 export; prints processing
time, real-time factor, the 8-hour projection and the event scores.

    python benchmarks/detect_rtf.py --run results/runs/<run> --export results/export/<run>
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sleepsound.data.synth import generate_night
from sleepsound.deploy.detect import detect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--export", required=True, help="folder with model.onnx, model.int8.onnx")
    parser.add_argument("--hours", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate_night(Path(tmp) / "night", hours=args.hours, seed=1, progress=False)
        print(f"synthetic night of {args.hours} h generated in {time.perf_counter() - t0:.1f} s")
        variants = [
            ("pytorch fp32", Path(args.run), "torch"),
            ("onnxruntime fp32", Path(args.export) / "model.onnx", "auto"),
            ("onnxruntime int8", Path(args.export) / "model.int8.onnx", "auto"),
        ]
        rows = []
        for name, model, backend in variants:
            t0 = time.perf_counter()
            result = detect(
                Path(tmp) / "night" / "night.wav",
                model,
                out_dir=Path(tmp) / name,
                truth=Path(tmp) / "night" / "events.csv",
                progress=False,
                backend=backend,
            )
            seconds = time.perf_counter() - t0
            scores = result.summary.get("scores", {})
            rows.append((name, seconds, seconds / (args.hours * 3600), scores))
    print(f"\n{'variant':18s} {'seconds':>8s} {'RTF':>10s} {'8 h proj.':>10s}  scores")
    for name, seconds, rtf, scores in rows:
        event = scores.get("events", {}).get("micro", {}).get("f1")
        frame = scores.get("frame_accuracy")
        print(
            f"{name:18s} {seconds:8.1f} {rtf:10.5f} {rtf * 8 * 3600:9.0f}s  "
            f"event F1 {event}, frame accuracy {frame}"
        )


if __name__ == "__main__":
    main()
