"""The Ray executor: a campaign's runs in parallel on a Ray cluster (``--executor ray``).

Each run is one Ray task that calls :func:`sleepsound.campaign.execute.run_one`, the same
function the local executor calls in-process, so both give the same runs and files. The
campaign's driver keeps the phases: every phase-1 run is submitted at once, Ray starts as many
as the cluster's free resources allow (``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs each;
fractional GPUs share one device), and when the last phase-1 run of a seed ends, that seed's
gate is decided and its tuning or phase-2 runs are submitted, while other seeds still train.

- **Failures**: a run that raises, or whose worker dies (killed, out of memory, node lost), is
  submitted again - continuing from its last checkpoint - up to ``retries`` times, then marked
  failed with its reason; the other runs go on.
- **Storage**: runs read the cache and write run folders where the driver names them; every
  node must see the same paths (shared storage such as NFS; relative paths are taken from the
  driver's working directory). A worker that cannot see them fails the run with a message
  naming the path and the node.
- **Ctrl-C** cancels the runs in flight (their workers are killed), marks them failed
  (interrupted) and shuts down a Ray instance this process started, leaving no workers behind.
- **Progress**: one live view (pending / running / done / failed, which node runs what, epoch)
  fed by a small Ray actor the tasks report to.

This module imports Ray; nothing else in sleepsound does, so Ray stays an optional extra.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time

import ray
from rich.live import Live
from rich.table import Table

from sleepsound.campaign.execute import RunJob, RunOutcome, now, set_node_label
from sleepsound.campaign.manifest import ExecutorSpec
from sleepsound.campaign.runner import (
    ATTEMPT_NOTE,
    CampaignError,
    Executor,
    interrupted,
    run_slots,
)
from sleepsound.progress import console, say

POLL_SECONDS = 0.5  # how often the driver looks at finished tasks and the board
LIVE_REFRESH_PER_SECOND = 2
LIVE_RECENT_ROWS = 6  # finished runs shown under the running ones
INSTALL_HINT = "pip install 'sleepsound[ray]'"


# ----------------------------------------------------------------------------- worker side


@ray.remote(num_cpus=0)
class Board:
    """Where tasks say that they started, on which node, and which epoch they finished."""

    def __init__(self):
        self.running: dict[str, dict] = {}

    def started(self, run_name: str, node: str, attempt: int) -> None:
        self.running[run_name] = {"node": node, "attempt": attempt, "since": time.time(),
                                  "epoch": 0}  # fmt: skip

    def epoch(self, run_name: str, epoch: int) -> None:
        if run_name in self.running:
            self.running[run_name]["epoch"] = epoch

    def ended(self, run_name: str) -> None:
        self.running.pop(run_name, None)

    def snapshot(self) -> dict[str, dict]:
        return dict(self.running)


def ray_node_label() -> str:
    """``host/node-id-prefix pid N`` for the current Ray worker."""
    node_id = ray.get_runtime_context().get_node_id() or ""
    return f"{socket.gethostname()}/{node_id[:8]} pid {os.getpid()}"


def run_task(job: RunJob, cwd: str, board, attempt: int) -> RunOutcome:
    """The body of one Ray task: report to the board, run the job where the driver runs
    (same working directory, so relative paths mean the same), report the epochs."""
    from sleepsound.milestones import listen

    label = ray_node_label()
    set_node_label(label)
    board.started.remote(job.run_name, label, attempt)

    def on_milestone(name: str, info: dict) -> None:
        if name == "train.epoch_saved":
            board.epoch.remote(job.run_name, int(info.get("epoch", 0)))

    stop = listen(on_milestone)
    try:
        try:
            os.chdir(cwd)
        except OSError as exc:
            return RunOutcome(
                job.run_name, "failed", now(), now(), 0.0, node=label,
                error=f"StorageError: the driver's working directory {cwd} is not visible on "
                f"node {label} ({exc.strerror or exc}): every node needs the same paths",
            )  # fmt: skip
        from sleepsound.campaign.execute import run_one

        return run_one(job)
    finally:
        stop()
        board.ended.remote(job.run_name)


_remote_task = ray.remote(run_task)


# ----------------------------------------------------------------------------- driver side


@dataclasses.dataclass
class _InFlight:
    job: RunJob
    attempt: int
    submitted: float
    history: list[str] = dataclasses.field(default_factory=list)  # earlier attempts' errors


class RayExecutor(Executor):
    """Runs each batch of jobs as Ray tasks; see the module docstring."""

    name = "ray"
    remote = True

    def __init__(self, spec: ExecutorSpec, progress: bool = True):
        self.spec = spec
        self.progress = progress
        self.started_instance = False
        self.owns_connection = False
        self._connect()
        self.board = Board.remote()

    # -- the cluster

    def _connect(self) -> None:
        """Join the cluster at ``spec.address`` or start a local instance sized to this
        machine; CampaignError when that fails or when no node can ever hold one run."""
        kwargs = {"log_to_driver": False, "include_dashboard": False}
        self.owns_connection = not ray.is_initialized()  # else: the caller's session, kept
        if not self.owns_connection:
            pass
        elif self.spec.address is None:
            try:
                ray.init(address="local", **kwargs)  # a new instance, never a running one
            except Exception as exc:  # noqa: BLE001 - Ray raises several types here
                raise CampaignError(
                    f"--executor ray: cannot start a local Ray instance ({exc})"
                ) from None
            self.started_instance = True
        else:
            try:
                ray.init(address=self.spec.address, **kwargs)
            except Exception as exc:  # noqa: BLE001
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc)
                raise CampaignError(
                    f"--address {self.spec.address}: cannot connect to a Ray cluster ({first}); "
                    "start one with `ray start --head` or leave --address out for a local one"
                ) from None
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        fits = [
            n for n in nodes
            if run_slots(self.spec, n["Resources"].get("CPU", 0), n["Resources"].get("GPU", 0))
        ]  # fmt: skip
        total = ray.cluster_resources()
        cpus, gpus = total.get("CPU", 0), total.get("GPU", 0)
        if not fits:
            self.close()
            raise CampaignError(
                f"--cpus-per-run {self.spec.cpus_per_run:g} / --gpus-per-run "
                f"{self.spec.gpus_per_run:g}: no node of the Ray cluster ({cpus:g} CPUs, "
                f"{gpus:g} GPUs in {len(nodes)} node(s)) can hold one run"
            )
        slots = sum(
            run_slots(self.spec, n["Resources"].get("CPU", 0), n["Resources"].get("GPU", 0))
            for n in fits
        )
        where = "local Ray instance" if self.started_instance else f"Ray cluster {ray_address()}"
        say(
            f"[bold]executor ray[/]: {where}, {len(nodes)} node(s), {cpus:g} CPUs, {gpus:g} GPUs; "
            f"each run asks for {self.spec.cpus_per_run:g} CPU(s), {self.spec.gpus_per_run:g} "
            f"GPU(s): up to {slots} run(s) at once; {self.spec.retries} retr"
            f"{'y' if self.spec.retries == 1 else 'ies'} per run"
        )

    def close(self) -> None:
        """Disconnect; a local instance this executor started stops with all its workers."""
        if self.owns_connection and ray.is_initialized():
            ray.shutdown()

    # -- the runs

    def _submit(self, job: RunJob, attempt: int):
        options = {
            "num_cpus": self.spec.cpus_per_run,
            "num_gpus": self.spec.gpus_per_run,
            "max_retries": 0,  # retries are ours: each continues from the last checkpoint
            "name": job.run_name,
        }
        return _remote_task.options(**options).remote(job, os.getcwd(), self.board, attempt)

    def run(self, camp, jobs: list[RunJob]) -> None:
        """Submit every job, record each as it starts and ends, retry failures, submit what
        each end unlocks, until all ended. Ctrl-C: cancel what is in flight, mark it failed
        (interrupted), re-raise."""
        flight: dict = {}
        for job in jobs:
            self._first_attempt(flight, job)
        view = _LiveView(camp, flight, self.spec.retries)
        seen: set[str] = set()
        live = Live(
            get_renderable=view.render, console=console,
            refresh_per_second=LIVE_REFRESH_PER_SECOND, transient=False,
        ) if self.progress else None  # fmt: skip
        try:
            if live:
                live.start()
            while flight:
                ready, _ = ray.wait(list(flight), num_returns=1, timeout=POLL_SECONDS)
                self._note_starts(camp, flight, view, seen)
                for ref in ready:
                    self._ended(camp, flight, ref, view)
        except KeyboardInterrupt:
            self._interrupt(camp, flight)
            raise
        finally:
            if live:
                live.stop()

    def _note_starts(self, camp, flight, view, seen: set[str]) -> None:
        try:
            running = ray.get(self.board.snapshot.remote(), timeout=POLL_SECONDS * 4)
        except ray.exceptions.RayError:  # slow or lost board: the view waits, runs go on
            return
        view.running = running
        for name, info in running.items():
            key = f"{name}#{info['attempt']}"
            if key not in seen and any(f.job.run_name == name for f in flight.values()):
                seen.add(key)
                camp.started(name, _attempt_note(info["attempt"], self.spec.retries, info["node"]))
                if not self.progress:
                    say(f"{camp.records[name].phase} {name}: started on {info['node']}")

    def _ended(self, camp, flight, ref, view) -> None:
        entry = flight.pop(ref)
        job = entry.job
        try:
            outcome = ray.get(ref)
        except ray.exceptions.RayError as exc:  # the worker died, the node was lost, ...
            outcome = RunOutcome(
                job.run_name, "failed", camp.records[job.run_name].started, now(), "",
                error=f"{type(exc).__name__}: {_first_line(exc)}", details=str(exc),
                node=view.running.get(job.run_name, {}).get("node", ""),
            )  # fmt: skip
        if outcome.state == "failed" and entry.attempt <= self.spec.retries:
            attempt = entry.attempt + 1
            say(
                f"[yellow]{job.run_name}[/]: attempt {entry.attempt} failed ({outcome.error}); "
                f"retrying ({attempt}/{1 + self.spec.retries}), from its last checkpoint"
            )
            retry = dataclasses.replace(job, resume=True)
            history = [*entry.history, f"{outcome.error} on {outcome.node or '?'}"]
            flight[self._submit(retry, attempt)] = _InFlight(retry, attempt, time.time(), history)
            view.retried += 1
            return
        note = _attempt_note(entry.attempt, self.spec.retries, outcome.node)
        if entry.history:
            note += " after: " + " | ".join(entry.history)
        if outcome.state == "failed" and entry.attempt > 1:
            outcome.error = f"{outcome.error} ({entry.attempt} attempts)"
        view.finished.append((job.run_name, outcome.state, outcome.node))
        camp.finished(outcome, note=note)
        for follow in camp.unlocked(job.run_name):
            self._first_attempt(flight, follow)

    def _first_attempt(self, flight: dict, job: RunJob) -> None:
        job = dataclasses.replace(job, progress=False)
        flight[self._submit(job, 1)] = _InFlight(job, 1, time.time())

    def _interrupt(self, camp, flight) -> None:
        say("[bold red]interrupted[/]: cancelling the runs in flight")
        for ref, entry in flight.items():
            ray.cancel(ref, force=True)
            record = camp.records[entry.job.run_name]
            if record.state == "running":
                camp.finished(interrupted(entry.job, record.started))
        flight.clear()


def ray_address() -> str:
    try:
        return ray.get_runtime_context().gcs_address
    except Exception:  # noqa: BLE001 - only for a status line
        return "?"


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _attempt_note(attempt: int, retries: int, node: str) -> str:
    """``attempt 2/3 on host/1a2b3c4d pid 7`` (the runner drops it when the next one comes)."""
    return f"{ATTEMPT_NOTE}{attempt}/{1 + retries} on {node or 'an unknown node'}"


class _LiveView:
    """The campaign's live view: counts, the running runs with node and epoch, the last ends."""

    def __init__(self, camp, flight: dict, retries: int):
        self.camp = camp
        self.flight = flight
        self.retries = retries
        self.running: dict[str, dict] = {}
        self.finished: list[tuple[str, str, str]] = []
        self.retried = 0
        self.t0 = time.time()

    def render(self) -> Table:
        """Called from Rich's refresh thread: works on copies of what the driver changes."""
        flight = list(self.flight.values())
        configs = {f.job.run_name: f.job.config for f in flight}
        names = set(configs)
        running = {n: i for n, i in dict(self.running).items() if n in names}
        states = [r.state for r in list(self.camp.records.values())]
        done, failed = states.count("complete"), states.count("failed")
        title = (
            f"campaign {self.camp.manifest.name} on Ray, {time.time() - self.t0:.0f} s: "
            f"{len(names) - len(running)} pending, {len(running)} running, {done} done, "
            f"{failed} failed, {self.retried} retried"
        )
        table = Table(title=title, title_justify="left")
        for col in ("run", "state", "node", "epoch", "s"):
            table.add_column(col, justify="right" if col in ("epoch", "s") else "left")
        for name, info in sorted(running.items()):
            cfg = configs[name]
            state = "running" if info["attempt"] == 1 else f"running (attempt {info['attempt']})"
            table.add_row(
                name, state, info["node"], f"{info['epoch']}/{cfg.epochs}",
                f"{time.time() - info['since']:.0f}",
            )  # fmt: skip
        for name, state, node in list(self.finished)[-LIVE_RECENT_ROWS:]:
            style = "green" if state == "complete" else "red"
            table.add_row(name, f"[{style}]{state}[/]", node, "", "")
        return table


__all__ = ["Board", "RayExecutor", "run_task"]
