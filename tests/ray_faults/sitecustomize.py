"""Fault injection for the Ray campaign tests, loaded by every Python process of the test's
Ray cluster (this folder is put first on the cluster's PYTHONPATH; nothing in sleepsound knows
about it).

When ``SLEEPSOUND_FAULTS`` names a JSON file, a :mod:`sleepsound.milestones` listener reads it
at every milestone (so a test can change the faults between campaigns without restarting the
cluster)::

    {"raise": {"<run name>": "<milestone>"},        # raise RuntimeError there, every attempt
     "kill_once": {"<run name>": "<marker file>"}}  # os._exit(137) at the first epoch saved
                                                    # (the marker says it happened)
"""

import os

_FAULTS = os.environ.get("SLEEPSOUND_FAULTS")


def _install(path: str) -> None:
    import json
    from pathlib import Path

    try:
        from sleepsound.milestones import listen
    except ImportError:  # a Ray helper process without sleepsound on its path
        return

    def fault(name: str, info: dict) -> None:
        try:
            spec = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return
        run = Path(str(info.get("run_dir", ""))).name
        if spec.get("raise", {}).get(run) == name:
            raise RuntimeError(f"injected failure at {name} in {run}")
        marker = spec.get("kill_once", {}).get(run)
        if marker and name == "train.epoch_saved" and not os.path.exists(marker):
            Path(marker).write_text(str(os.getpid()))
            os._exit(137)

    listen(fault)


if _FAULTS:
    _install(_FAULTS)
