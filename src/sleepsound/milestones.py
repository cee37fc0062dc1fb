"""Named points that long commands pass (an epoch saved, a cache chunk written), for observers.

Production code only announces them: ``reached("train.epoch_saved", epoch=3)``. Nothing
listens unless someone calls :func:`listen` - the crash tests do, from a small runner script
(``tests/crashrun.py``), to kill a process at an exact point without any test code here.

Milestones announced today: ``cache.chunk_written`` (split, chunk), ``cache.split_finished``
(split: the partial file complete and closed, not yet renamed), ``train.epoch_saved``
(run_dir, epoch: checkpoints and epochs.csv written), ``train.metrics_written`` (run_dir),
``train.status_complete`` (run_dir: before the leaderboard row).
"""

from __future__ import annotations

from collections.abc import Callable

Listener = Callable[[str, dict], None]
_listeners: list[Listener] = []


def listen(listener: Listener) -> Callable[[], None]:
    """Call ``listener(name, info)`` at every milestone; returns a function that stops it."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener) if listener in _listeners else None


def reached(name: str, **info) -> None:
    """Announce a milestone to the listeners (none in normal use: a no-op)."""
    for listener in list(_listeners):
        listener(name, info)
