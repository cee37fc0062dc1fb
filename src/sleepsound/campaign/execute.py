"""One planned run, executed: the single function both executors call.

The local executor calls :func:`run_one` in the campaign's own process; the Ray executor calls
it inside a Ray worker (:mod:`sleepsound.campaign.ray_executor`). Everything that decides what
happens to one run - reuse a complete run dir, continue an incomplete one from its last
checkpoint, train, record a failure in the run dir - lives here, so the two executors cannot
drift apart. :func:`run_one` writes only the run directory (and, through training, the
leaderboard row under its file lock); the campaign's own files (``status.csv``, ``errors/``)
are written by the driver from the returned :class:`RunOutcome`.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from sleepsound import runs
from sleepsound.config import TrainConfig
from sleepsound.features.cache import validate_cache
from sleepsound.progress import say
from sleepsound.training.distill import teacher_digest

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
REUSED_NOTE = "already complete: reused"
SHARED_STORAGE_HINT = "the cache and results folder must be on storage every node sees (e.g. NFS)"

# resume_decision states -> what the campaign does with an existing run dir
_REUSE_STATES = {
    "missing": "missing",
    "complete": "valid",
    "resumable": "resumable",
    "changed": "stale",
    "restart": "stale",
}


class StorageError(OSError):
    """A worker that cannot see the campaign's storage; the message names path and node."""


@dataclass(frozen=True)
class RunJob:
    """What one run needs: its config, its phase, and how to treat an existing run dir.

    ``resume``: reuse a complete run dir with the same config, continue an incomplete one
    (``campaign --resume``, and every retry). ``storage_check``: first make sure this process
    sees the cache and the campaign folder (workers on other machines)."""

    config: TrainConfig
    phase: str
    resume: bool = False
    progress: bool = True
    campaign_dir: Path | None = None
    storage_check: bool = False

    @property
    def run_name(self) -> str:
        return self.config.run_name


@dataclass
class RunOutcome:
    """The result of :func:`run_one`: ``state`` is ``complete`` or ``failed``."""

    run_name: str
    state: str
    started: str
    finished: str
    seconds: float | str  # training time now; a reused run's recorded duration
    error: str = ""  # one line
    details: str = ""  # the traceback (failed runs)
    note: str = ""  # e.g. "already complete: reused"
    reused: bool = False
    resumed: bool = False  # continued from a checkpoint
    node: str = ""
    val_macro_f1: float | None = None


def now() -> str:
    return time.strftime(TIME_FORMAT)


_node_label: str | None = None  # set by an executor that knows better (a Ray node id)


def set_node_label(label: str | None) -> None:
    """Name this process's node in outcomes and storage errors (None: host and pid)."""
    global _node_label
    _node_label = label


def node_name() -> str:
    """Where a run ran, for status lines and storage errors: ``host (pid N)`` by default."""
    return _node_label or f"{socket.gethostname()} (pid {os.getpid()})"


def _fingerprint(path: Path) -> str | None:
    try:
        return validate_cache(path).attrs["fingerprint"]
    except (OSError, ValueError, KeyError):
        return None


def reuse_decision(run_dir: Path, cfg: TrainConfig) -> runs.Decision:
    """The run-directory decision (:func:`sleepsound.runs.resume_decision`) for ``cfg``, with
    the cache's fingerprints and the teacher checkpoint as they are now."""
    splits = ("train", "validation")
    return runs.resume_decision(
        run_dir,
        cfg.model_dump(mode="json"),
        {split: _fingerprint(Path(cfg.cache_dir) / f"{split}.h5") for split in splits},
        (teacher_digest(cfg.teacher_run) or "<unreadable>") if cfg.is_distillation else None,
    )


def reuse_state(run_dir: Path, cfg: TrainConfig) -> str:
    """What resuming can do with an existing run dir:

    ``valid`` (complete, metrics readable, same config, cache and teacher: skip it),
    ``resumable`` (same config but incomplete: continue from its last checkpoint),
    ``stale`` (another config, cache or teacher: train afresh), ``missing``.
    """
    return _REUSE_STATES[reuse_decision(run_dir, cfg).state]


def check_storage(job: RunJob) -> None:
    """Raise :class:`StorageError` naming the path and this node when the cache folder or the
    campaign folder (created by the driver before any run starts) is not visible here."""
    where = node_name()
    cache = Path(job.config.cache_dir)
    if not cache.is_dir():
        raise StorageError(
            f"cache folder {cache.resolve()} is not visible on node {where}: {SHARED_STORAGE_HINT}"
        )
    if job.campaign_dir is not None and not Path(job.campaign_dir).is_dir():
        raise StorageError(
            f"campaign folder {Path(job.campaign_dir).resolve()} is not visible on node {where}: "
            f"{SHARED_STORAGE_HINT}"
        )


def validation_f1(run_dir: Path) -> float:
    return float(runs.read_metrics(run_dir)["validation"]["macro_f1"])


def _reused(job: RunJob, run_dir: Path, started: str) -> RunOutcome:
    if runs.ensure_row(run_dir):
        say(f"{job.run_name}: its missing leaderboard row was added")
    return RunOutcome(
        job.run_name, "complete", started, now(),
        runs.read_metrics(run_dir).get("duration_s", ""), note=REUSED_NOTE, reused=True,
        node=node_name(), val_macro_f1=validation_f1(run_dir),
    )  # fmt: skip


def _failed(job: RunJob, run_dir: Path, started: str, t0: float, exc: BaseException) -> RunOutcome:
    error = f"{type(exc).__name__}: {exc}"
    if runs.run_status(run_dir) == "running":
        runs.set_status(run_dir, "failed", error=error)
    return RunOutcome(
        job.run_name, "failed", started, now(), time.perf_counter() - t0,
        error=error.splitlines()[0], details="".join(traceback.format_exception(exc)),
        node=node_name(),
    )  # fmt: skip


def run_one(job: RunJob) -> RunOutcome:
    """Train (or reuse, or continue) one run; every failure becomes a ``failed`` outcome.

    KeyboardInterrupt marks the run dir failed and propagates (the caller records it)."""
    from sleepsound.training import train as train_module

    cfg = job.config
    run_dir = runs.run_dir(cfg.results_dir, cfg.run_name)
    started, t0 = now(), time.perf_counter()
    from_checkpoint = False
    try:
        if job.storage_check:
            check_storage(job)
        if job.resume:
            decision = reuse_decision(run_dir, cfg)
            state = _REUSE_STATES[decision.state]
            if state == "valid":
                return _reused(job, run_dir, started)
            if state == "resumable":
                from_checkpoint = True
                if runs.run_status(run_dir) == "complete":  # complete but metrics unreadable
                    runs.set_status(run_dir, "running")
            elif state == "stale":
                say(f"{cfg.run_name}: existing run is stale ({decision.reason}): training again")
        train_module.train_run(cfg, resume=from_checkpoint, progress=job.progress)
    except KeyboardInterrupt:
        if runs.run_status(run_dir) == "running":
            runs.set_status(run_dir, "failed", error="interrupted (KeyboardInterrupt)")
        raise
    except Exception as exc:  # noqa: BLE001 - any failure is recorded, the campaign goes on
        return _failed(job, run_dir, started, t0, exc)
    return RunOutcome(
        cfg.run_name, "complete", started, now(), time.perf_counter() - t0,
        resumed=from_checkpoint, node=node_name(), val_macro_f1=validation_f1(run_dir),
    )  # fmt: skip


__all__ = [
    "RunJob",
    "RunOutcome",
    "StorageError",
    "check_storage",
    "reuse_decision",
    "reuse_state",
    "run_one",
    "set_node_label",
    "validation_f1",
]
