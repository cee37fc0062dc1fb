"""The bad-input harness: run a ``sleepsound`` command and require a clean refusal.

A clean refusal is: exit code 2, no Python traceback, and exactly one line starting with
``error:`` (on stderr) that contains the expected words (the option or file, and the reason).

Usage from a test module (rows are plain data, so adding a case is adding a line)::

    from badinput import Bad, assert_refused, run_cli

    ROWS = [
        Bad("lr-inf", ["train", "--model", "tinycnn", "--lr", "inf", ...], ["--lr", "finite"]),
    ]

    @pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
    def test_bad_input(row, tmp_path):
        assert_refused(run_cli(row.argv(...)), row.expect)

Commands run in-process through typer's CliRunner (fast: torch is imported once); an
exception that escapes a command is a failure and its traceback is shown.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from conftest import write_dataset
from typer.testing import CliRunner

from sleepsound.cli import app
from sleepsound.config import PreprocessConfig
from sleepsound.features.cache import preprocess


@dataclass(frozen=True)
class Result:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None
    trace: str = ""


@dataclass(frozen=True)
class Bad:
    """One row: ``args`` may hold ``{name}`` placeholders filled from the test's paths;
    ``setup(paths)`` prepares the bad file; ``expect`` are words the error line must hold."""

    id: str
    args: list[str]
    expect: list[str]
    setup: Callable[[dict], None] | None = None
    skip: str = ""  # reason to skip (e.g. a CUDA machine for the no-CUDA row)
    paths: dict = field(default_factory=dict)

    def argv(self, paths: dict) -> list[str]:
        return [fill(a, paths) for a in self.args]


def fill(text: str, paths: dict) -> str:
    """``text`` with each ``{name}`` of ``paths`` replaced (other braces, e.g. JSON, kept)."""
    for name, value in paths.items():
        text = text.replace("{" + name + "}", str(value))
    return text


def run_cli(args: list[str]) -> Result:
    """Run ``sleepsound ARGS`` in-process; returns exit code, stdout, stderr, and the escaped
    exception (None for a normal or ``typer.Exit`` ending) with its traceback text."""
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=True)
    exc = result.exception
    if isinstance(exc, SystemExit):
        exc = None
    trace = "".join(traceback.format_exception(exc)) if exc is not None else ""
    return Result(result.exit_code, result.stdout, result.stderr, exc, trace)


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def assert_refused(result: Result, expect: list[str] | str) -> str:
    """Exit code 2, no traceback, one ``error:`` line holding every word of ``expect``;
    returns that line."""
    expect = [expect] if isinstance(expect, str) else expect
    assert result.exception is None, f"exception escaped:\n{result.trace}"
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    lines = error_lines(result.stderr)
    assert len(lines) == 1, f"expected one 'error:' line on stderr, got:\n{output}"
    assert result.exit_code == 2, f"exit code {result.exit_code}:\n{output}"
    missing = [w for w in expect if w not in lines[0]]
    assert not missing, f"error line lacks {missing}: {lines[0]}"
    return lines[0]


def tiny_cache(root: Path, per_class: int = 8, eval_per_class: int = 4) -> Path:
    """A small real 3-class cache (train ``per_class`` clips/class, validation and test
    ``eval_per_class``) under ``root/cache``; audio under ``root/data``."""
    data = write_dataset(root / "data", per_class=per_class, splits=("train",))
    write_dataset(root / "data", per_class=eval_per_class, splits=("validation", "test"), seed=1)
    cache = root / "cache"
    preprocess(PreprocessConfig(data_dir=data, cache_dir=cache, workers=1))
    return cache


def garbage(n: int = 256, seed: int = 0) -> bytes:
    """Random bytes that are not UTF-8 text (a corrupted file)."""
    data = bytearray(np.random.default_rng(seed).integers(128, 256, n, dtype=np.uint8).tobytes())
    data[0] = 0xFF
    return bytes(data)
