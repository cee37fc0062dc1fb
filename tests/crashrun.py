"""Run sleepsound code and die like ``kill -9`` at a named milestone (see sleepsound.milestones).

    python tests/crashrun.py MILESTONE COUNT -c "python code"
    python tests/crashrun.py MILESTONE COUNT <sleepsound CLI arguments...>

The process exits with status 137 (as if SIGKILLed), without clean-up, the COUNT-th time
MILESTONE (e.g. ``train.epoch_saved``, ``cache.chunk_written``) is reached. The hook lives
here, in the tests, not in production code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()


def command(milestone: str, count: int, *args: str) -> list[str]:
    """The argv that runs ``args`` (``-c CODE`` or CLI arguments) and crashes at the milestone."""
    return [sys.executable, str(HERE), milestone, str(count), *args]


def kill_group_after(proc: subprocess.Popen, delay: float) -> int:
    """Wait ``delay`` s for ``proc`` (started with ``start_new_session=True``), then SIGKILL its
    whole process group; returns its exit code (-9 when killed, its own when it finished)."""
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return proc.returncode


def main(argv: list[str]) -> None:
    milestone, count, rest = argv[0], int(argv[1]), argv[2:]
    seen = 0

    def crash(name: str, info: dict) -> None:
        nonlocal seen
        if name == milestone:
            seen += 1
            if seen >= count:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(137)

    from sleepsound.milestones import listen

    listen(crash)
    if rest[:1] == ["-c"]:
        exec(compile(rest[1], "<crashrun>", "exec"), {"__name__": "__main__"})
    else:
        from sleepsound.cli import app

        app(rest, prog_name="sleepsound")


if __name__ == "__main__":
    main(sys.argv[1:])
