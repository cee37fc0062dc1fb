"""Running a campaign: phase 1, the teacher gate (and tuning when it fails), phase 2.

    result = run_campaign("experiments/reference.json")              # a new campaign
    result = run_campaign("experiments/reference.json", resume=True) # continue / after changes

Order: phase 1 for every seed is queued first. As soon as the last phase-1 run of a seed ends,
that seed's gate is decided (teacher = the seed's phase-1 teacher, best student = best
validation macro-F1 among its other phase-1 runs); when the teacher does not beat it by
``min_margin``, the tuning grid is trained for the teacher and the best teacher by validation
macro-F1 (original or tuned) is kept; then phase 2 distils from the seed's chosen teacher. A
seed's next runs join the back of the queue, so a worker that would wait for the slowest seed
takes them instead; one run at a time, the order is phase 1 of all seeds, tuning, phase 2.

Everything lands in ``<results_dir>/campaigns/<name>/``:

- ``manifest.json``: the manifest as run (after any cache/results overrides),
- ``status.csv``: every planned run with its state (planned, running, complete, failed,
  skipped), times, error and run dir, rewritten atomically at every change,
- ``gate.json``: the gate decision per seed (scores, margins, tuning results, chosen teacher),
- ``errors/<run>.txt``: the traceback of each failed run,
- ``summary.csv``: per configuration across seeds (see :mod:`sleepsound.campaign.summary`).

Run directories stay in ``<results_dir>/runs/<run name>/`` like any other run, and every
finished run gets its leaderboard row. A failing run is recorded and the campaign goes on.

Executors: an executor takes the phase-1 runs and, after each run it reports ended, the runs
that end unlocks (``_Campaign.unlocked``), until none is left. The local executor (default)
runs them one after another in this process, or with ``workers`` > 1 in that many worker
processes on this machine (:mod:`sleepsound.campaign.pool_executor`); the Ray executor
(:mod:`sleepsound.campaign.ray_executor`) runs them in parallel on a Ray cluster, with retries.
All call :func:`sleepsound.campaign.execute.run_one` for each run and report through the same
``_Campaign`` methods, so plan, gate, files and results are the same.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from sleepsound import runs
from sleepsound.atomic import atomic_write
from sleepsound.campaign.execute import (
    RunJob,
    RunOutcome,
    reuse_decision,
    reuse_state,
    run_one,
)
from sleepsound.campaign.execute import validation_f1 as _validation_f1
from sleepsound.campaign.manifest import (
    ExecutorSpec,
    Manifest,
    ManifestError,
    ModelRun,
    load_manifest,
    parse_manifest,
    tuning_stem,
)
from sleepsound.campaign.summary import summarize
from sleepsound.config import TrainConfig
from sleepsound.progress import say

CAMPAIGNS_SUBDIR = "campaigns"
STATUS_COLUMNS = [
    "phase", "run_name", "seed", "state", "started", "finished", "seconds", "error", "run_dir",
    "note",
]  # fmt: skip
PHASES = ("phase1", "gate", "tuning", "phase2")
STATES = ("planned", "running", "complete", "failed", "skipped")
GATE_TOLERANCE = 1e-9  # a margin equal to min_margin up to float rounding passes
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
WHEN_GATE_FAILS = "only if the gate fails"
TEACHER_FROM_GATE = "teacher decided by the gate"
TEACHER_NOTE = "teacher"
ATTEMPT_NOTE = "attempt "  # status-note prefix of a retried run's attempt count (Ray)
INTERRUPTED = "interrupted (KeyboardInterrupt)"

out = Console()  # tables go to stdout; status lines (say) to stderr


class CampaignError(ValueError):
    """A campaign that cannot start as asked (e.g. it exists and neither flag was given)."""


# ----------------------------------------------------------------------------- the plan


@dataclass
class PlannedRun:
    """One step of the plan. ``config`` is None for the gate step; for tuning runs and phase 2
    the config is provisional (tuning runs happen only if the gate fails; phase 2's teacher is
    the phase-1 teacher unless tuning finds a better one)."""

    phase: str
    run_name: str
    seed: int
    config: TrainConfig | None
    conditional: bool = False
    note: str = ""
    is_teacher: bool = False  # the phase-1 run the gate judges
    same_as: str = ""  # a tuning point with the teacher's own settings: that run, reused


def campaign_dir(manifest: Manifest) -> Path:
    return Path(manifest.results_dir) / CAMPAIGNS_SUBDIR / manifest.name


def run_dir_of(config: TrainConfig) -> Path:
    return runs.run_dir(config.results_dir, config.run_name)


def _config(manifest: Manifest, run: ModelRun, name: str, seed: int, **extra) -> TrainConfig:
    """Manifest defaults < spec overrides < ``extra``; TrainConfig fills in everything else."""
    values = {"cache_dir": manifest.cache_dir, **manifest.train, **run.overrides, **extra}
    return TrainConfig(
        model=run.model,
        model_kwargs=run.model_kwargs,
        run_name=name,
        results_dir=manifest.results_dir,
        seed=seed,
        **values,
    )


def _comparable(cfg: TrainConfig) -> dict:
    return cfg.model_dump(mode="json", exclude={"run_name"})


def phase2_config(
    manifest: Manifest, stem: str, student: ModelRun, alpha: float, tau: float, seed: int,
    teacher_dir: Path,
) -> TrainConfig:  # fmt: skip
    name = manifest.run_name("phase2", stem, seed)
    return _config(manifest, student, name, seed, teacher_run=teacher_dir, alpha=alpha, tau=tau)


def plan(manifest: Manifest) -> list[PlannedRun]:
    """Every step, in the order one run at a time executes them: phase 1 (all seeds), then per
    seed the gate and its conditional tuning runs, then phase 2 (all seeds) with the teacher to
    be decided. With several runs at once a seed's later steps start once its own runs before
    them have ended (``_Campaign.unlocked``)."""
    steps: list[PlannedRun] = []
    teacher = manifest.teacher_run() if manifest.teacher else None
    teacher_cfg: dict[int, TrainConfig] = {}
    for seed in manifest.seeds:
        for run in manifest.phase1_runs():
            name = manifest.run_name("phase1", run.stem, seed)
            cfg = _config(manifest, run, name, seed)
            is_teacher = teacher is not None and run == teacher
            note = TEACHER_NOTE if is_teacher else ""
            steps.append(PlannedRun("phase1", name, seed, cfg, note=note, is_teacher=is_teacher))
            if is_teacher:
                teacher_cfg[seed] = cfg
    if manifest.gate is not None:
        for seed in manifest.seeds:
            gate = manifest.gate
            steps.append(
                PlannedRun(
                    "gate", f"{manifest.name}-gate_s{seed}", seed, None,
                    note=f"margin >= {gate.min_margin:g}",
                )
            )  # fmt: skip
            for combo in gate.combinations():
                name = manifest.run_name("tuning", tuning_stem(teacher.stem, combo), seed)
                cfg = _config(manifest, teacher, name, seed, **combo)
                same = _comparable(cfg) == _comparable(teacher_cfg[seed])
                same_as = teacher_cfg[seed].run_name if same else ""
                note = f"{WHEN_GATE_FAILS}; same settings as {same_as}" if same else WHEN_GATE_FAILS
                steps.append(
                    PlannedRun("tuning", name, seed, cfg, True, note=note, same_as=same_as)
                )
    for seed in manifest.seeds:
        for stem, student, alpha, tau in manifest.phase2_runs():
            cfg = phase2_config(
                manifest, stem, student, alpha, tau, seed, run_dir_of(teacher_cfg[seed])
            )
            steps.append(PlannedRun("phase2", cfg.run_name, seed, cfg, note=TEACHER_FROM_GATE))
    return steps


def plan_counts(steps: list[PlannedRun]) -> dict[str, dict]:
    """Per phase: runs per seed, total, and whether they are conditional."""
    counts: dict[str, dict] = {}
    seeds = sorted({s.seed for s in steps})
    for phase in PHASES:
        mine = [s for s in steps if s.phase == phase]
        if mine:
            counts[phase] = {
                "per_seed": len(mine) // max(len(seeds), 1),
                "total": len(mine),
                "conditional": any(s.conditional for s in mine),
            }
    return counts


def _when(step: PlannedRun) -> str:
    if step.phase == "tuning":
        return "= teacher run" if step.same_as else "if gate fails"
    if step.phase == "phase2":
        return "gate's teacher"
    return step.note or "always"


def plan_table(manifest: Manifest, steps: list[PlannedRun]) -> tuple[Table, Table]:
    """The plan as a table of steps and a table of counts per phase."""
    table = Table(title=f"campaign {manifest.name}: plan (run names start {manifest.name}-)")
    table.add_column("#", justify="right")
    table.add_column("phase")
    table.add_column("run", no_wrap=True)
    table.add_column("epochs", justify="right")
    table.add_column("when", no_wrap=True)
    prefix = f"{manifest.name}-"
    for i, s in enumerate(steps, 1):
        epochs = str(s.config.epochs) if s.config else ""
        table.add_row(str(i), s.phase, s.run_name.removeprefix(prefix), epochs, _when(s))
    counts = Table(title=f"{len(manifest.seeds)} seed(s): {manifest.seeds}")
    for col in ("phase", "per seed", "total", "condition"):
        counts.add_column(col, justify="right" if col in ("per seed", "total") else "left")
    conditions = {"gate": "a step, no training", "tuning": WHEN_GATE_FAILS,
                  "phase2": TEACHER_FROM_GATE}  # fmt: skip
    for phase, c in plan_counts(steps).items():
        counts.add_row(phase, str(c["per_seed"]), str(c["total"]), conditions.get(phase, "always"))
    return table, counts


def print_plan(manifest: Manifest | Path | str, console: Console | None = None) -> list[PlannedRun]:
    """Print the plan (``sleepsound campaign --dry-run``); returns the steps."""
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    steps = plan(manifest)
    console = console or out
    for table in plan_table(manifest, steps):
        console.print(table)
    trained = sum(1 for s in steps if s.config is not None and not s.conditional)
    tuning = sum(1 for s in steps if s.phase == "tuning")
    console.print(
        f"{trained} runs to train, plus {tuning} tuning runs if the gate fails; "
        f"campaign folder {campaign_dir(manifest)}, runs in {Path(manifest.results_dir) / 'runs'}"
    )
    console.print(resources_line(manifest.executor, steps))
    return steps


def machine_resources() -> tuple[int, int]:
    """(CPUs, GPUs) of this machine: what a local Ray instance is sized to."""
    import os

    import torch

    return os.cpu_count() or 1, torch.cuda.device_count() if torch.cuda.is_available() else 0


def run_slots(spec: ExecutorSpec, cpus: float, gpus: float) -> int:
    """How many runs fit at once on ``cpus`` CPUs and ``gpus`` GPUs (at least 0)."""
    slots = int(cpus // spec.cpus_per_run)
    if spec.gpus_per_run > 0:
        slots = min(slots, int(gpus // spec.gpus_per_run + GATE_TOLERANCE))
    return max(slots, 0)


def resources_line(spec: ExecutorSpec, steps: list[PlannedRun]) -> str:
    """What the executor will ask for (``--dry-run``)."""
    if spec.kind == "local" and spec.workers > 1:
        from sleepsound.campaign.pool_executor import threads_per_worker

        return (
            f"executor local: up to {spec.workers} runs at once in worker processes on this "
            f"machine, {threads_per_worker(spec.workers)} thread(s) each unless a run sets threads"
        )
    if spec.kind == "local":
        return "executor local: one run at a time in this process (--executor ray: in parallel)"
    widest = plan_counts(steps)["phase1"]["total"]
    asks = f"{spec.cpus_per_run:g} CPU(s) and {spec.gpus_per_run:g} GPU(s)"
    if spec.address is None:
        cpus, gpus = machine_resources()
        slots = run_slots(spec, cpus, gpus)
        where = (
            f"a local Ray instance sized to this machine ({cpus} CPUs, {gpus} GPUs): up to "
            f"{slots} run(s) at once"
        )
        if slots == 0:
            where += " - none fits: lower --cpus-per-run / --gpus-per-run"
    else:
        where = f"the Ray cluster at {spec.address}: as many at once as its free resources allow"
    return (
        f"executor ray: each run asks for {asks} on {where}; {widest} phase-1 run(s) are ready "
        f"at once, a seed's later runs when its phase 1 ends; a failing run is tried up to "
        f"{1 + spec.retries} times"
    )


# ----------------------------------------------------------------------------- records


@dataclass
class RunRecord:
    """One row of ``status.csv``."""

    phase: str
    run_name: str
    seed: int
    state: str = "planned"
    started: str = ""
    finished: str = ""
    seconds: float | str = ""
    error: str = ""
    run_dir: str = ""
    note: str = ""

    def row(self) -> list:
        seconds = f"{self.seconds:.1f}" if isinstance(self.seconds, float) else self.seconds
        return [self.phase, self.run_name, self.seed, self.state, self.started, self.finished,
                seconds, self.error, self.run_dir, self.note]  # fmt: skip


@dataclass
class CampaignResult:
    manifest: Manifest
    campaign_dir: Path
    plan: list[PlannedRun]
    records: dict[str, RunRecord] = field(default_factory=dict)
    gates: dict[int, dict] = field(default_factory=dict)
    summary: pd.DataFrame | None = None
    wall_seconds: float = 0.0
    run_seconds: float = 0.0  # sum of the run times of the runs trained (not reused)
    nodes: dict[str, str] = field(default_factory=dict)  # run name -> where it ran
    dry_run: bool = False

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for r in self.records.values() if r.state == s) for s in STATES}

    def failed_runs(self) -> list[str]:
        return [r.run_name for r in self.records.values() if r.state == "failed"]

    def complete_run_dirs(self) -> list[Path]:
        return [Path(r.run_dir) for r in self.records.values() if r.state == "complete"]


def _now() -> str:
    return time.strftime(TIME_FORMAT)


# ----------------------------------------------------------------------------- the campaign


class _Campaign:
    """The state of one campaign run: records, status file, counters. The executor runs the
    jobs (:func:`sleepsound.campaign.execute.run_one`); this class records what they give."""

    def __init__(
        self, manifest: Manifest, steps: list[PlannedRun], resume: bool, progress: bool,
        executor: Executor | None = None,
    ):  # fmt: skip
        self.manifest = manifest
        self.steps = steps
        self.resume = resume
        self.progress = progress
        self.executor = executor or LocalExecutor()
        self.dir = campaign_dir(manifest)
        self.records: dict[str, RunRecord] = {}
        for s in steps:
            if s.config is not None:
                self.records[s.run_name] = RunRecord(
                    s.phase, s.run_name, s.seed, run_dir=str(run_dir_of(s.config)), note=s.note
                )
        self.gates: dict[int, dict] = {}
        self.tuning: dict[int, list[PlannedRun]] = {}
        self.total = sum(1 for s in steps if s.config is not None and not s.conditional)
        self.done = 0
        self.trained_seconds = 0.0  # sum of the run times of runs trained (not reused) now
        self.nodes: dict[str, str] = {}  # run name -> where it last ran

    # -- files

    def write_status(self) -> None:
        runs.write_csv(
            self.dir / "status.csv", STATUS_COLUMNS, [r.row() for r in self.records.values()]
        )

    def write_gates(self) -> None:
        gate = self.manifest.gate
        runs.write_json(
            self.dir / "gate.json",
            {
                "min_margin": gate.min_margin if gate else None,
                "tuning_grid": gate.tuning_grid if gate else None,
                "teacher": self.manifest.teacher.model_dump(exclude_none=True)
                if self.manifest.teacher
                else None,
                "seeds": {str(seed): g for seed, g in self.gates.items()},
            },
        )

    def update(self, record: RunRecord, **changes) -> None:
        for key, value in changes.items():
            setattr(record, key, value)
        self.write_status()

    # -- runs: the executor calls job(), started() and finished()

    def job(self, cfg: TrainConfig, phase: str) -> RunJob:
        return RunJob(
            cfg, phase, resume=self.resume, progress=self.progress, campaign_dir=self.dir,
            storage_check=self.executor.remote,
        )  # fmt: skip

    def started(self, run_name: str, note: str = "") -> None:
        """Mark a run running (``note``: e.g. the node or the attempt)."""
        record = self.records[run_name]
        base = _drop_attempts(record.note)
        self.update(
            record, state="running", started=_now(), finished="", seconds="", error="",
            note=_join(base, note),
        )  # fmt: skip

    def finished(self, outcome: RunOutcome, note: str = "") -> RunRecord:
        """Record what :func:`run_one` (or the executor, for a dead worker) gave."""
        record = self.records[outcome.run_name]
        self.done += 1
        counter = f"[{self.done}/{self.total}]"
        base = _drop_attempts(record.note)
        if outcome.node:
            self.nodes[outcome.run_name] = outcome.node
        if outcome.state == "complete":
            if not outcome.reused and isinstance(outcome.seconds, float):
                self.trained_seconds += outcome.seconds
            self.update(
                record, state="complete", started=outcome.started, finished=outcome.finished,
                seconds=outcome.seconds, error="", note=_join(base, outcome.note, note),
            )  # fmt: skip
            if outcome.reused:
                say(f"{counter} {record.phase} {outcome.run_name}: already complete, reused")
            else:
                how = " (continued from its checkpoint)" if outcome.resumed else ""
                say(
                    f"{counter} {outcome.run_name}: complete in {outcome.seconds:.0f} s{how}, "
                    f"val macro-F1 {outcome.val_macro_f1:.4f}"
                )
            return record
        if isinstance(outcome.seconds, float):
            self.trained_seconds += outcome.seconds
        error_file = self.dir / "errors" / f"{record.run_name}.txt"
        atomic_write(error_file, outcome.details or outcome.error + "\n")
        self.update(
            record, state="failed", started=outcome.started or record.started,
            finished=outcome.finished, seconds=outcome.seconds, error=outcome.error,
            note=_join(base, note),
        )  # fmt: skip
        say(
            f"[bold red]{counter} {record.run_name} failed[/]: {outcome.error} "
            f"(traceback in {error_file})"
        )
        return record

    def skip(self, name: str, reason: str) -> None:
        record = self.records[name]
        self.update(record, state="skipped", note=_join(record.note, reason))

    # -- the schedule: phase 1 of every seed, then each seed on its own as its runs end

    def run_all(self) -> None:
        """Every run of the campaign: the executor starts with phase 1 and asks
        :meth:`unlocked` after each run for what may follow."""
        self.executor.run(self, [self.job(s.config, s.phase) for s in self.steps_of("phase1")])

    def steps_of(self, phase: str, seed: int | None = None) -> list[PlannedRun]:
        """The plan's steps of ``phase`` (of one ``seed``, or all)."""
        return [s for s in self.steps if s.phase == phase and seed in (None, s.seed)]

    def unlocked(self, run_name: str) -> list[RunJob]:
        """The runs that the end of ``run_name`` (recorded by :meth:`finished`) lets start.
        After the last phase-1 run of a seed: that seed's gate, then its tuning runs (gate
        failed) or its phase 2. After the last tuning run of a seed: the teacher is chosen,
        then its phase 2. Otherwise none."""
        record = self.records[run_name]
        if not self._phase_ended(record.phase, record.seed):
            return []
        if record.phase == "phase1":
            tuning = self.decide_gate(record.seed)
            if tuning:
                return [self.job(s.config, "tuning") for s in tuning]
            return self.phase2_jobs(record.seed)
        if record.phase == "tuning":
            return self.phase2_jobs(record.seed)
        return []

    def _phase_ended(self, phase: str, seed: int) -> bool:
        return all(
            self.records[s.run_name].state not in ("planned", "running")
            for s in self.steps_of(phase, seed)
        )

    def decide_gate(self, seed: int) -> list[PlannedRun]:
        """Judge ``seed``'s teacher once its phase 1 is complete; returns the tuning runs to
        train (empty when the gate passes or cannot be decided)."""
        p1 = self.steps_of("phase1", seed)
        teacher = next((s for s in p1 if s.is_teacher), None)
        if teacher is None:
            return []
        t_rec = self.records[teacher.run_name]
        tuning = self.steps_of("tuning", seed)
        decision: dict = {"teacher_run": teacher.run_name}
        self.gates[seed] = decision
        if t_rec.state != "complete":
            reason = f"teacher {teacher.run_name} {t_rec.state}: {t_rec.error}"
            decision.update(passed=None, chosen_teacher_run=None, reason=reason)
            for s in tuning:
                self.skip(s.run_name, "teacher unavailable")
            self.write_gates()
            say(f"[bold red]gate s{seed}[/]: {reason}; phase 2 of this seed is skipped")
            return []
        teacher_f1 = _validation_f1(run_dir_of(teacher.config))
        students = {
            s.run_name: _validation_f1(run_dir_of(s.config))
            for s in p1
            if s is not teacher and self.records[s.run_name].state == "complete"
        }
        decision["teacher_val_macro_f1"] = teacher_f1
        decision["students_val_macro_f1"] = students
        gate = self.manifest.gate
        if gate is None:
            decision.update(passed=True, reason="no gate in the manifest")
        elif not students:
            decision.update(passed=True, reason="no completed phase-1 student to compare with")
        else:
            best = max(students, key=students.get)
            margin = teacher_f1 - students[best]
            passed = margin >= gate.min_margin - GATE_TOLERANCE
            decision.update(
                best_student_run=best,
                best_student_val_macro_f1=students[best],
                margin=margin,
                min_margin=gate.min_margin,
                passed=passed,
                reason=(
                    f"teacher {teacher_f1:.4f} vs best student {students[best]:.4f}: margin "
                    f"{margin:+.4f} {'>=' if passed else '<'} {gate.min_margin:g}"
                ),
            )
        say(f"[bold]gate s{seed}[/]: {decision['reason']}")
        if decision["passed"]:
            for s in tuning:
                self.skip(s.run_name, "gate passed: not needed")
            return []
        todo = sum(1 for s in tuning if not s.same_as)
        skipped = len(tuning) - todo
        same = f", skipping {skipped} identical to the teacher" if skipped else ""
        say(f"gate s{seed} failed: training {todo} teacher-tuning run(s){same}")
        self.total += len(tuning)
        self.tuning[seed] = tuning
        train = []
        for s in tuning:
            if s.same_as:
                self.done += 1
                self.skip(s.run_name, "identical to the phase-1 teacher")
            else:
                train.append(s)
        return train

    def choose_teacher(self, seed: int) -> Path | None:
        """After the tuning runs: the teacher phase 2 distils from for ``seed`` (best by
        validation macro-F1, the original on ties), or None when there is none."""
        decision = self.gates.get(seed)
        if decision is None or decision.get("passed") is None:
            return None
        chosen = decision["teacher_run"]
        if not decision["passed"]:
            candidates = {chosen: decision["teacher_val_macro_f1"]}
            results = {}
            for s in self.tuning.get(seed, []):
                state = self.records[s.run_name].state
                results[s.run_name] = {"state": state}
                if s.same_as:
                    results[s.run_name]["same_as"] = s.same_as
                elif state == "complete":
                    f1 = _validation_f1(run_dir_of(s.config))
                    candidates[s.run_name] = f1
                    results[s.run_name]["val_macro_f1"] = f1
            decision["tuning"] = results
            chosen = max(candidates, key=candidates.get)  # ties: the original teacher (first)
        decision["chosen_teacher_run"] = chosen
        decision["chosen_teacher_dir"] = str(self._dir(chosen))
        decision["chosen_teacher_val_macro_f1"] = _validation_f1(self._dir(chosen))
        students = decision.get("students_val_macro_f1")
        if students:
            decision["chosen_margin"] = decision["chosen_teacher_val_macro_f1"] - max(
                students.values()
            )
        self.write_gates()
        say(f"gate s{seed}: phase 2 distils from {chosen}")
        return self._dir(chosen)

    def _dir(self, run_name: str) -> Path:
        return Path(self.records[run_name].run_dir)

    def phase2_jobs(self, seed: int) -> list[RunJob]:
        """``seed``'s phase-2 runs, distilling from its chosen teacher; without one (no teacher
        in the manifest: no gate was decided; or it failed) they are skipped."""
        teacher_dir = self.choose_teacher(seed)
        jobs = []
        for s in self.steps_of("phase2", seed):
            if teacher_dir is None:
                self.done += 1
                reason = self.gates.get(seed, {}).get("reason", "no teacher")
                self.skip(s.run_name, f"no teacher for seed {seed}: {reason}")
                continue
            config = s.config.model_copy(update={"teacher_run": teacher_dir})
            jobs.append(self.job(config, "phase2"))
        return jobs


# ----------------------------------------------------------------------------- executors


class Executor:
    """Runs the campaign's jobs and reports each through ``camp.started`` / ``camp.finished``.
    ``remote``: runs execute in other processes, possibly on other machines."""

    name = "local"
    remote = False

    def run(self, camp: _Campaign, jobs: list[RunJob]) -> None:
        """Run ``jobs`` and, after each run's ``camp.finished``, the jobs
        ``camp.unlocked(run_name)`` returns, until none is left."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the executor holds (a Ray instance it started)."""


class LocalExecutor(Executor):
    """The default: each run in this process, one after another, in plan order."""

    def run(self, camp: _Campaign, jobs: list[RunJob]) -> None:
        queue = list(jobs)
        while queue:
            job = queue.pop(0)
            counter = f"[{camp.done + 1}/{camp.total}]"
            say(f"[bold]{counter} {job.phase} {job.run_name}[/]: {job.config.model}")
            camp.started(job.run_name)
            try:
                outcome = run_one(job)
            except KeyboardInterrupt:
                camp.finished(interrupted(job, camp.records[job.run_name].started))
                raise
            camp.finished(outcome)
            queue += camp.unlocked(job.run_name)


def interrupted(job: RunJob, started: str) -> RunOutcome:
    """The outcome of a run stopped by Ctrl-C."""
    return RunOutcome(
        job.run_name, "failed", started, _now(), "", error=INTERRUPTED, details=INTERRUPTED + "\n"
    )


def make_executor(spec: ExecutorSpec, progress: bool = True) -> Executor:
    """The executor the manifest (after command-line overrides) asks for; Ray is imported only
    here, only when asked for."""
    if spec.kind == "local":
        if spec.workers > 1:
            from sleepsound.campaign.pool_executor import PoolExecutor

            return PoolExecutor(spec.workers)
        return LocalExecutor()
    try:
        from sleepsound.campaign.ray_executor import RayExecutor
    except ImportError as exc:
        raise CampaignError(
            f"--executor ray needs Ray ({exc}): pip install 'sleepsound[ray]'"
        ) from None
    return RayExecutor(spec, progress=progress)


def _drop_attempts(note: str) -> str:
    return "; ".join(p for p in note.split("; ") if p and not p.startswith(ATTEMPT_NOTE))


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


# ----------------------------------------------------------------------------- entry point


def remove_campaign(manifest: Manifest, steps: list[PlannedRun]) -> list[Path]:
    """Delete the campaign folder and every run dir the plan names; returns what was removed."""
    removed = []
    targets = [campaign_dir(manifest)] + [run_dir_of(s.config) for s in steps if s.config]
    for path in targets:
        if path.exists():
            say(f"removing {path}")
            shutil.rmtree(path)
            removed.append(path)
    board = runs.leaderboard_file(manifest.results_dir)
    n_rows = runs.remove_runs(board, targets[1:])
    if n_rows:
        say(f"removed {n_rows} row(s) from {board}")
    return removed


def run_campaign(
    manifest_path: Path | str,
    resume: bool = False,
    fresh_start: bool = False,
    dry_run: bool = False,
    progress: bool = True,
    cache_dir: Path | str | None = None,
    results_dir: Path | str | None = None,
    executor: dict | None = None,
    memory_limit: str | int | None = None,
) -> CampaignResult:
    """Run (or with ``dry_run`` only print) the campaign a manifest describes.

    Args:
        manifest_path: the manifest JSON (see :mod:`sleepsound.campaign.manifest`).
        resume: continue an existing campaign: runs whose artifacts are complete and whose
            saved config equals what the manifest now gives are skipped; incomplete ones are
            continued from their last checkpoint; changed ones are trained again.
        fresh_start: delete the campaign folder and its runs first (prints what it removes).
        dry_run: print the plan (and the resources the executor asks for) and return.
        progress: per-epoch progress bars (local) or the live campaign view (Ray).
        cache_dir, results_dir: override the manifest's folders.
        executor: override fields of the manifest's ``executor`` section (``kind``,
            ``address``, ``cpus_per_run``, ``gpus_per_run``, ``retries``).
        memory_limit: override ``train.memory_limit`` (bytes or ``"8G"``) for every run.

    Raises:
        ManifestError: the manifest (with the overrides) is invalid.
        CampaignError: the campaign exists and neither ``resume`` nor ``fresh_start`` is set,
            or both are.
        KeyboardInterrupt: after marking the runs in progress failed in ``status.csv``.
    """
    manifest = with_overrides(
        load_manifest(manifest_path), manifest_path, cache_dir=cache_dir,
        results_dir=results_dir, executor=executor, memory_limit=memory_limit,
    )  # fmt: skip
    steps = plan(manifest)
    cdir = campaign_dir(manifest)
    if dry_run:
        print_plan(manifest)
        return CampaignResult(manifest, cdir, steps, dry_run=True)
    if resume and fresh_start:
        raise CampaignError("--resume and --fresh-start exclude each other: pass one of them")
    if fresh_start:
        remove_campaign(manifest, steps)
    elif cdir.exists() and not resume:
        raise CampaignError(
            f"{cdir} already exists: pass --resume to continue that campaign (finished runs are "
            "kept) or --fresh-start to delete it and its runs and start over"
        )
    t0 = time.perf_counter()
    engine = make_executor(manifest.executor, progress=progress)  # Ray: connect first
    try:
        cdir.mkdir(parents=True, exist_ok=True)
        runs.remove_temporaries(cdir)  # left by a killed earlier run of this campaign
        _write_manifest(cdir, manifest)
        camp = _Campaign(manifest, steps, resume, progress, engine)
        camp.write_status()
        say(
            f"[bold]campaign {manifest.name}[/]: {camp.total} runs planned over seeds "
            f"{manifest.seeds} ({sum(s.conditional for s in steps)} more if a gate fails) -> "
            f"{cdir}"
        )
        camp.run_all()
    finally:
        engine.close()
    result = CampaignResult(manifest, cdir, steps, camp.records, camp.gates)
    result.summary = summarize(result.complete_run_dirs())
    atomic_write(cdir / "summary.csv", result.summary.to_csv(index=False))
    result.wall_seconds = time.perf_counter() - t0
    result.run_seconds = camp.trained_seconds
    result.nodes = dict(camp.nodes)
    _closing_summary(result)
    return result


def with_overrides(
    manifest: Manifest, source: Path | str, cache_dir=None, results_dir=None,
    executor: dict | None = None, memory_limit: str | int | None = None,
) -> Manifest:  # fmt: skip
    """The manifest with command-line overrides applied and validated again; a bad value is a
    ManifestError naming the option's field (e.g. ``executor.gpus_per_run``)."""
    data = manifest.model_dump()
    changed = False
    for key, value in (("cache_dir", cache_dir), ("results_dir", results_dir)):
        if value is not None:
            data[key], changed = Path(value), True
    executor = {k: v for k, v in (executor or {}).items() if v is not None}
    if executor:
        data["executor"], changed = {**data["executor"], **executor}, True
    if memory_limit is not None:
        data["train"], changed = {**data["train"], "memory_limit": memory_limit}, True
    if not changed:
        return manifest
    try:
        return parse_manifest(data, source)
    except ManifestError as err:
        given = {**executor, "memory_limit": memory_limit}
        options = ", ".join(
            f"--{k.replace('_', '-')} {v}".replace("--kind", "--executor")
            for k, v in given.items()
            if v is not None
        )
        raise ManifestError(f"{err} (with the command-line options {options})") from None


def _write_manifest(cdir: Path, manifest: Manifest) -> None:
    """Write the manifest as run; say when it changed (where runs execute does not count)."""
    path = cdir / "manifest.json"
    data = manifest.model_dump(mode="json")
    if path.is_file():
        try:
            before = {k: v for k, v in runs.read_json(path).items() if k != "executor"}
            if before != {k: v for k, v in data.items() if k != "executor"}:
                say(f"{path}: the manifest changed since the last run; changed runs are redone")
        except (OSError, ValueError, AttributeError):
            pass
    runs.write_json(path, data)


def _closing_summary(result: CampaignResult) -> None:
    counts = result.counts()
    spec = result.manifest.executor
    table = Table(
        title=f"campaign {result.manifest.name} ({spec.kind} executor): "
        f"{result.wall_seconds:.0f} s wall time"
    )
    for col in ("phase", *STATES[2:]):
        table.add_column(col, justify="left" if col == "phase" else "right")
    for phase in ("phase1", "tuning", "phase2"):
        recs = [r for r in result.records.values() if r.phase == phase]
        if recs:
            table.add_row(phase, *[str(sum(r.state == s for r in recs)) for s in STATES[2:]])
    out.print(table)
    if result.summary is not None and not result.summary.empty:
        best = result.summary.iloc[0]
        out.print(
            f"best configuration by mean test macro-F1: {best['configuration']} "
            f"({best['test_macro_f1_mean']:.4f}, {best['n_seeds']} seed(s))"
        )
    out.print(
        f"{counts['complete']} complete, {counts['failed']} failed, {counts['skipped']} skipped; "
        f"see {result.campaign_dir}/ (status.csv, gate.json, summary.csv)"
    )
    ratio = result.run_seconds / result.wall_seconds if result.wall_seconds else 0.0
    out.print(
        f"wall time {result.wall_seconds:.1f} s; sum of run times {result.run_seconds:.1f} s "
        f"(runs trained now, reused ones excluded): {ratio:.2f} runs' worth of work per second "
        "of wall time"
    )
    nodes = sorted({n.split(" (pid")[0] for n in result.nodes.values()})
    if spec.kind != "local" and nodes:
        out.print(f"runs executed on {len(nodes)} node(s): {', '.join(nodes)}")
    for seed, gate in result.gates.items():
        out.print(f"gate s{seed}: {gate.get('reason')} -> teacher {gate.get('chosen_teacher_run')}")
    if counts["failed"]:
        out.print(
            f"[bold red]failed[/]: {', '.join(result.failed_runs())} "
            f"(see {result.campaign_dir / 'errors'})"
        )


__all__ = [
    "CampaignError",
    "CampaignResult",
    "PlannedRun",
    "RunRecord",
    "Executor",
    "LocalExecutor",
    "campaign_dir",
    "make_executor",
    "plan",
    "plan_counts",
    "plan_table",
    "print_plan",
    "remove_campaign",
    "reuse_decision",
    "reuse_state",
    "run_campaign",
    "with_overrides",
]
