"""sleepsound.deploy: export a trained run and detect sleep sounds in whole-night recordings.

* :mod:`.export`: ``export_run(run_dir, int8=...)`` -> ``model.onnx`` (+ ``model.int8.onnx``)
  and ``model_card.json``, parity-checked against PyTorch on the run's cache; and
  ``compare_variants`` (latency and test macro-F1 of PyTorch, ONNX fp32 and int8).
* :mod:`.card`: the model card (input spec, classes, model files' sha256), checked on load.
* :mod:`.runtime`: PyTorch / ONNX Runtime predictors; ``load_classifier``.
* :mod:`.operating`: per-class thresholds for ``far=2/h`` / ``recall=0.9`` on validation.
* :mod:`.detect`: ``detect(recording, model)`` streams a recording of any length in constant
  memory and writes the night's events, hourly table, scores, report and summary.
* :mod:`.screening`: snore index, minutes, loudness, wearer vs partner attribution.
* :mod:`.scoring`: PSDS, collar/intersection F1, segment error rate (sed_scores_eval).
* :mod:`.html_report`: the interactive, self-contained night report.
* :mod:`.cohort`: ``detect_folder`` (a folder of nights, resumable, one cohort table).
* :mod:`.events`: the pure functions from window probabilities to events, and our matcher.

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
    "load_classifier": "runtime",
    "detect_folder": "cohort",
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
