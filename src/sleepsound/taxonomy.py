"""The DreamCatcher label taxonomy and task selection: the one place these names live.

DreamCatcher labels every clip with one of nine labels (ids 0..8, in this order). A *task* is an
ordered subset of them; the benchmark's task is ``quiet, breathe, snore`` (ids 0, 5, 7 -> 0, 1, 2).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

LABELS: tuple[str, ...] = (
    "quiet",
    "non_wearer",
    "bruxism",
    "swallow",
    "somniloquy",
    "breathe",
    "cough",
    "snore",
    "movements",
)
LABEL_TO_ID: dict[str, int] = {name: i for i, name in enumerate(LABELS)}

DEFAULT_CLASSES: tuple[str, ...] = ("quiet", "breathe", "snore")
# Cross-entropy weights the reference used for the default task (quiet, breathe, snore).
DEFAULT_CLASS_WEIGHTS: tuple[float, ...] = (1.0, 1.5, 5.5)


class TaxonomyError(ValueError):
    """A label or class list that does not fit the DreamCatcher taxonomy."""


def parse_classes(classes: str | Sequence[str] | None) -> tuple[str, ...]:
    """Turn ``"quiet,breathe,snore"`` (or a sequence) into a validated, ordered class tuple."""
    if classes is None:
        return DEFAULT_CLASSES
    items = classes.split(",") if isinstance(classes, str) else list(classes)
    names = tuple(c.strip() for c in items if c.strip())
    if len(names) < 2:
        raise TaxonomyError(f"a task needs at least two classes, got {names!r}")
    unknown = [c for c in names if c not in LABEL_TO_ID]
    if unknown:
        raise TaxonomyError(
            f"unknown class(es) {unknown}; the DreamCatcher labels are {', '.join(LABELS)}"
        )
    if len(set(names)) != len(names):
        raise TaxonomyError(f"class list has duplicates: {names!r}")
    return names


def class_index(classes: Iterable[str]) -> dict[str, int]:
    """Map label name -> class id within the task."""
    return {name: i for i, name in enumerate(classes)}


def default_class_weights(classes: Sequence[str]) -> tuple[float, ...] | None:
    """The reference weights when the task is the reference task, else None (use balanced)."""
    return DEFAULT_CLASS_WEIGHTS if tuple(classes) == DEFAULT_CLASSES else None
