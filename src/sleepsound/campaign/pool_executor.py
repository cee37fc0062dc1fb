"""The local pool executor: a campaign's runs in parallel worker processes on this machine
(``"executor": {"kind": "local", "workers": N}`` or ``campaign --workers N``).

Each run is :func:`sleepsound.campaign.execute.run_one` in a process of its own (at most ``N``
at once), so the runs and files are those of the one-after-another local executor. Without
Ray, a cluster or its start-up time, it fills a multi-core machine with small runs. On the
2-core test machine a demo run in a one-thread worker beside another takes 1.54x as long as
alone on both cores (1.3x the samples/s in total).

- **Processes**: each run's process is forked from a fork server (one per driver process,
  started with the environment of its first pooled run) that has imported torch and the
  training code once, so a run starts training without the ~5.5 s of imports a fresh
  interpreter pays (torch, then ``torch._dynamo``, which ``torch.optim`` loads). The server has
  run no torch op and started no thread, so forking it is safe.

- **Threads**: a run whose config leaves ``threads`` unset uses ``CPUs // N`` threads in its
  worker. Runs are reproducible for a given thread count; for results identical to the
  one-process executor, set ``threads`` in the manifest's ``train`` section.
- **Order**: runs start in plan order as workers free up, a seed's gate, tuning and phase 2
  as soon as its own runs before them have ended; at most ``N`` are running.
- **Failures**: a run that raises is recorded failed and the others go on (``--resume``
  continues it from its last checkpoint). A worker that dies (killed, out of memory) fails
  its own run only, with its exit code; one process per run keeps the others alive.
- **Ctrl-C** reaches the workers too (same process group): each marks its run failed
  (interrupted); the driver records them, stops the pool and re-raises.
- **Output**: no progress bars in workers (they would interleave); a line when a run starts,
  each epoch's line named by its run, and the usual line when it ends.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sys
from multiprocessing.connection import Connection, wait

from sleepsound.campaign.execute import RunJob, RunOutcome, now, run_one
from sleepsound.campaign.runner import Executor, interrupted
from sleepsound.progress import say

# imported once by the fork server: what every run needs before its first epoch
FORK_SERVER_PRELOAD = ["torch", "torch._dynamo", "sleepsound.campaign.execute",
                       "sleepsound.training.train"]  # fmt: skip
JOIN_SECONDS = 30  # how long the driver waits for a worker to end after its result / Ctrl-C


def threads_per_worker(workers: int, cpus: int | None = None) -> int:
    """Torch threads of a run in one of ``workers`` processes on ``cpus`` CPUs (at least 1)."""
    return max(1, (cpus or os.cpu_count() or 1) // workers)


def _work(job: RunJob, threads: int, sender: Connection) -> None:
    """Worker side: one run with the pool's thread count unless its config sets one; the
    outcome goes back through ``sender``."""
    import torch

    torch.set_num_threads(job.config.threads or threads)
    sender.send(run_one(job))
    sender.close()
    # Everything the run writes is on disk (atomically) by now; skip the interpreter's
    # teardown, which takes seconds with torch loaded, so the next run starts sooner.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@dataclasses.dataclass
class _Worker:
    job: RunJob
    process: multiprocessing.process.BaseProcess
    receiver: Connection


class PoolExecutor(Executor):
    """Runs the campaign in up to ``workers`` processes at once (see the module docstring)."""

    name = "local"

    def __init__(self, workers: int):
        self.workers = workers
        self.threads = threads_per_worker(workers)
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(FORK_SERVER_PRELOAD)

    def run(self, camp, jobs: list[RunJob]) -> None:
        queue = list(jobs)
        flight: dict[int, _Worker] = {}  # process sentinel -> worker
        try:
            while queue or flight:
                while queue and len(flight) < self.workers:
                    job = dataclasses.replace(queue.pop(0), progress=False)
                    worker = self._start(camp, job)
                    flight[worker.process.sentinel] = worker
                for sentinel in wait(list(flight)):
                    worker = flight.pop(sentinel)
                    camp.finished(self._outcome(camp, worker))
                    queue += camp.unlocked(worker.job.run_name)
        except KeyboardInterrupt:
            for worker in flight.values():
                worker.process.join(JOIN_SECONDS)  # it got the SIGINT too: marks its run dir
                if worker.process.is_alive():
                    worker.process.kill()
                record = camp.records[worker.job.run_name]
                if record.state == "running":
                    camp.finished(interrupted(worker.job, record.started))
            raise

    def _start(self, camp, job: RunJob) -> _Worker:
        receiver, sender = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=_work, args=(job, self.threads, sender), name=job.run_name, daemon=True
        )
        camp.started(job.run_name)
        process.start()
        sender.close()  # the child holds the sending end now
        say(f"{camp.records[job.run_name].phase} {job.run_name}: started (pid {process.pid})")
        return _Worker(job, process, receiver)

    @staticmethod
    def _outcome(camp, worker: _Worker) -> RunOutcome:
        """What the ended worker sent, or a failed outcome naming how its process died."""
        outcome = None
        try:
            if worker.receiver.poll():
                outcome = worker.receiver.recv()
        except (EOFError, OSError):
            outcome = None
        worker.process.join(JOIN_SECONDS)
        worker.receiver.close()
        if isinstance(outcome, RunOutcome):
            return outcome
        code = worker.process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        job = worker.job
        return RunOutcome(
            job.run_name, "failed", camp.records[job.run_name].started, now(), "",
            error=f"its worker process died ({how}) before reporting a result",
            details=f"worker process {worker.process.pid} of {job.run_name} ended with {how}\n",
        )  # fmt: skip


__all__ = ["PoolExecutor", "threads_per_worker"]
