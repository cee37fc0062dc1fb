"""sleepsound.deploy: export a trained run and detect sleep sounds in whole-night recordings.

* :mod:`.export`: ``export_run(run_dir, int8=...)`` -> ``model.onnx`` (+ ``model.int8.onnx``)
  and ``model_card.json``, parity-checked against PyTorch on the run's cache; and
  ``compare_variants`` (latency and test macro-F1 of PyTorch, ONNX fp32 and int8).
* :mod:`.detect`: ``detect(recording, model)`` streams a recording of any length in constant
  memory, classifies overlapping windows with the cache's exact features and writes
  ``events.csv``, ``hourly.csv``, ``summary.json`` and ``timeline.png``.
* :mod:`.events`: the pure functions from window probabilities to events, and event scoring.

Names are imported lazily, so ``import sleepsound.deploy.events`` stays light. The detection
function shares its module's name: ``from sleepsound.deploy.detect import detect``.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ExportResult": "export",
    "compare_variants": "export",
    "export_run": "export",
    "DetectResult": "detect",
    "RecordingError": "detect",
    "load_classifier": "detect",
    "Event": "events",
    "frame_accuracy": "events",
    "read_events_csv": "events",
    "score_events": "events",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
