"""Running a campaign: phase 1, the teacher gate (and tuning when it fails), phase 2.

    result = run_campaign("experiments/reference.json")              # a new campaign
    result = run_campaign("experiments/reference.json", resume=True) # continue / after changes

Order: phase 1 for every seed; then per seed the gate (teacher = that seed's phase-1 teacher,
best student = best validation macro-F1 among that seed's other phase-1 runs); when the teacher
does not beat it by ``min_margin``, the tuning grid is trained for the teacher and the best
teacher by validation macro-F1 (original or tuned) is kept; then phase 2 distils from each
seed's chosen teacher.

Everything lands in ``<results_dir>/campaigns/<name>/``:

- ``manifest.json``: the manifest as run (after any cache/results overrides),
- ``status.csv``: every planned run with its state (planned, running, complete, failed,
  skipped), times, error and run dir, rewritten atomically at every change,
- ``gate.json``: the gate decision per seed (scores, margins, tuning results, chosen teacher),
- ``errors/<run>.txt``: the traceback of each failed run,
- ``summary.csv``: per configuration across seeds (see :mod:`sleepsound.campaign.summary`).

Run directories stay in ``<results_dir>/runs/<run name>/`` like any other run, and every
finished run gets its leaderboard row. A failing run is recorded and the campaign goes on.
"""

from __future__ import annotations

import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from sleepsound import runs
from sleepsound.atomic import atomic_write
from sleepsound.campaign.manifest import Manifest, ModelRun, load_manifest, tuning_stem
from sleepsound.campaign.summary import summarize
from sleepsound.config import TrainConfig
from sleepsound.features.cache import validate_cache
from sleepsound.progress import say
from sleepsound.training.distill import teacher_digest

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
    """Every step in execution order: phase 1 (all seeds), then per seed the gate and its
    conditional tuning runs, then phase 2 (all seeds) with the teacher to be decided."""
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
    return steps


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
    dry_run: bool = False

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for r in self.records.values() if r.state == s) for s in STATES}

    def complete_run_dirs(self) -> list[Path]:
        return [Path(r.run_dir) for r in self.records.values() if r.state == "complete"]


def _now() -> str:
    return time.strftime(TIME_FORMAT)


# ----------------------------------------------------------------------------- reuse checks


def _validation_f1(run_dir: Path) -> float:
    return float(runs.read_metrics(run_dir)["validation"]["macro_f1"])


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


_REUSE_STATES = {
    "missing": "missing",
    "complete": "valid",
    "resumable": "resumable",
    "changed": "stale",
    "restart": "stale",
}


# ----------------------------------------------------------------------------- the campaign


class _Campaign:
    """The state of one campaign run: records, status file, counters."""

    def __init__(self, manifest: Manifest, steps: list[PlannedRun], resume: bool, progress: bool):
        self.manifest = manifest
        self.steps = steps
        self.resume = resume
        self.progress = progress
        self.dir = campaign_dir(manifest)
        self.records: dict[str, RunRecord] = {}
        for s in steps:
            if s.config is not None:
                self.records[s.run_name] = RunRecord(
                    s.phase, s.run_name, s.seed, run_dir=str(run_dir_of(s.config)), note=s.note
                )
        self.gates: dict[int, dict] = {}
        self.total = sum(1 for s in steps if s.config is not None and not s.conditional)
        self.done = 0

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

    # -- one run

    def execute(self, cfg: TrainConfig, phase: str) -> RunRecord:
        """Train (or reuse, or resume) one run; failures are recorded, never raised, except
        KeyboardInterrupt, which marks the run failed and propagates."""
        from sleepsound.training.train import train_run

        record = self.records[cfg.run_name]
        run_dir = run_dir_of(cfg)
        self.done += 1
        counter = f"[{self.done}/{self.total}]"
        resume_from_checkpoint = False
        if self.resume:
            decision = reuse_decision(run_dir, cfg)
            state = _REUSE_STATES[decision.state]
            if state == "valid":
                seconds = runs.read_metrics(run_dir).get("duration_s", "")
                if runs.ensure_row(run_dir):
                    say(f"{cfg.run_name}: its missing leaderboard row was added")
                say(f"{counter} {phase} {cfg.run_name}: already complete, reused")
                self.update(
                    record, state="complete", seconds=seconds, error="",
                    note=_join(record.note, "already complete: reused"),
                )  # fmt: skip
                return record
            if state == "resumable":
                resume_from_checkpoint = True
                if runs.run_status(run_dir) == "complete":  # complete but metrics unreadable
                    runs.set_status(run_dir, "running")
            elif state == "stale":
                say(f"{cfg.run_name}: existing run is stale ({decision.reason}): training it again")
        what = "resuming" if resume_from_checkpoint else "training"
        say(f"[bold]{counter} {phase} {cfg.run_name}[/]: {what} {cfg.model}")
        t0 = time.perf_counter()
        self.update(record, state="running", started=_now(), finished="", seconds="", error="")
        try:
            train_run(cfg, resume=resume_from_checkpoint, progress=self.progress)
        except KeyboardInterrupt:
            self._failed(record, run_dir, t0, "interrupted (KeyboardInterrupt)", None)
            raise
        except Exception as exc:  # noqa: BLE001 - any failure is recorded, the campaign goes on
            self._failed(record, run_dir, t0, f"{type(exc).__name__}: {exc}", exc)
            return record
        seconds = time.perf_counter() - t0
        self.update(record, state="complete", finished=_now(), seconds=seconds)
        say(
            f"{counter} {cfg.run_name}: complete in {seconds:.0f} s, "
            f"val macro-F1 {_validation_f1(run_dir):.4f}"
        )
        return record

    def _failed(self, record, run_dir: Path, t0: float, error: str, exc) -> None:
        error_file = self.dir / "errors" / f"{record.run_name}.txt"
        text = "".join(traceback.format_exception(exc)) if exc is not None else error + "\n"
        atomic_write(error_file, text)
        if runs.run_status(run_dir) == "running":
            runs.set_status(run_dir, "failed", error=error)
        self.update(
            record, state="failed", finished=_now(), seconds=time.perf_counter() - t0,
            error=error.splitlines()[0] if error else "",
        )  # fmt: skip
        say(f"[bold red]{record.run_name} failed[/]: {error} (traceback in {error_file})")

    def skip(self, name: str, reason: str) -> None:
        record = self.records[name]
        self.update(record, state="skipped", note=_join(record.note, reason))

    # -- phases

    def phase1(self) -> None:
        for s in self.steps:
            if s.phase == "phase1":
                self.execute(s.config, "phase1")

    def gate(self, seed: int) -> Path | None:
        """Decide the teacher for ``seed`` (tuning if needed); returns its run dir or None."""
        steps = [s for s in self.steps if s.seed == seed]
        p1 = [s for s in steps if s.phase == "phase1"]
        teacher = next((s for s in p1 if s.is_teacher), None)
        if teacher is None:
            return None
        t_rec = self.records[teacher.run_name]
        tuning = [s for s in steps if s.phase == "tuning"]
        decision: dict = {"teacher_run": teacher.run_name}
        self.gates[seed] = decision
        if t_rec.state != "complete":
            reason = f"teacher {teacher.run_name} {t_rec.state}: {t_rec.error}"
            decision.update(passed=None, chosen_teacher_run=None, reason=reason)
            for s in tuning:
                self.skip(s.run_name, "teacher unavailable")
            self.write_gates()
            say(f"[bold red]gate s{seed}[/]: {reason}; phase 2 of this seed is skipped")
            return None
        teacher_f1 = _validation_f1(run_dir_of(teacher.config))
        students = {
            s.run_name: _validation_f1(run_dir_of(s.config))
            for s in p1
            if s is not teacher and self.records[s.run_name].state == "complete"
        }
        decision["teacher_val_macro_f1"] = teacher_f1
        decision["students_val_macro_f1"] = students
        gate = self.manifest.gate
        chosen = teacher.run_name
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
        else:
            chosen = self._tune(seed, teacher, tuning, decision)
        decision["chosen_teacher_run"] = chosen
        decision["chosen_teacher_dir"] = str(self._dir(chosen))
        decision["chosen_teacher_val_macro_f1"] = _validation_f1(self._dir(chosen))
        if students:
            decision["chosen_margin"] = decision["chosen_teacher_val_macro_f1"] - max(
                students.values()
            )
        self.write_gates()
        say(f"gate s{seed}: phase 2 distils from {chosen}")
        return self._dir(chosen)

    def _dir(self, run_name: str) -> Path:
        return Path(self.records[run_name].run_dir)

    def _tune(self, seed: int, teacher: PlannedRun, tuning: list[PlannedRun], decision) -> str:
        say(f"gate s{seed} failed: training {len(tuning)} teacher-tuning runs")
        self.total += len(tuning)
        candidates = {teacher.run_name: decision["teacher_val_macro_f1"]}
        results = {}
        for s in tuning:
            if s.same_as:
                self.done += 1
                self.skip(s.run_name, "identical to the phase-1 teacher")
                results[s.run_name] = {"state": "skipped", "same_as": s.same_as}
                continue
            record = self.execute(s.config, "tuning")
            results[s.run_name] = {"state": record.state}
            if record.state == "complete":
                f1 = _validation_f1(run_dir_of(s.config))
                candidates[s.run_name] = f1
                results[s.run_name]["val_macro_f1"] = f1
        decision["tuning"] = results
        return max(candidates, key=candidates.get)  # ties: the original teacher (first)

    def phase2(self, teachers: dict[int, Path | None]) -> None:
        for s in self.steps:
            if s.phase != "phase2":
                continue
            teacher_dir = teachers.get(s.seed)
            if teacher_dir is None:
                self.done += 1
                reason = self.gates.get(s.seed, {}).get("reason", "no teacher")
                self.skip(s.run_name, f"no teacher for seed {s.seed}: {reason}")
                continue
            self.execute(s.config.model_copy(update={"teacher_run": teacher_dir}), "phase2")


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
) -> CampaignResult:
    """Run (or with ``dry_run`` only print) the campaign a manifest describes.

    Args:
        manifest_path: the manifest JSON (see :mod:`sleepsound.campaign.manifest`).
        resume: continue an existing campaign: runs whose artifacts are complete and whose
            saved config equals what the manifest now gives are skipped; incomplete ones are
            continued from their last checkpoint; changed ones are trained again.
        fresh_start: delete the campaign folder and its runs first (prints what it removes).
        dry_run: print the plan and return without training.
        progress: per-epoch progress bars.
        cache_dir, results_dir: override the manifest's folders.

    Raises:
        ManifestError: the manifest is invalid.
        CampaignError: the campaign exists and neither ``resume`` nor ``fresh_start`` is set,
            or both are.
        KeyboardInterrupt: after marking the current run failed in ``status.csv``.
    """
    manifest = load_manifest(manifest_path)
    overrides = {"cache_dir": cache_dir, "results_dir": results_dir}
    overrides = {k: Path(v) for k, v in overrides.items() if v is not None}
    if overrides:
        manifest = Manifest.model_validate({**manifest.model_dump(), **overrides})
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
    cdir.mkdir(parents=True, exist_ok=True)
    runs.remove_temporaries(cdir)  # left by a killed earlier run of this campaign
    _write_manifest(cdir, manifest)
    camp = _Campaign(manifest, steps, resume, progress)
    camp.write_status()
    say(
        f"[bold]campaign {manifest.name}[/]: {camp.total} runs planned over seeds "
        f"{manifest.seeds} ({sum(s.conditional for s in steps)} more if a gate fails) -> {cdir}"
    )
    camp.phase1()
    teachers = {seed: camp.gate(seed) for seed in manifest.seeds} if manifest.teacher else {}
    camp.phase2(teachers)
    result = CampaignResult(manifest, cdir, steps, camp.records, camp.gates)
    result.summary = summarize(result.complete_run_dirs())
    atomic_write(cdir / "summary.csv", result.summary.to_csv(index=False))
    result.wall_seconds = time.perf_counter() - t0
    _closing_summary(result)
    return result


def _write_manifest(cdir: Path, manifest: Manifest) -> None:
    path = cdir / "manifest.json"
    data = manifest.model_dump(mode="json")
    if path.is_file():
        try:
            if runs.read_json(path) != data:
                say(f"{path}: the manifest changed since the last run; changed runs are redone")
        except (OSError, ValueError):
            pass
    runs.write_json(path, data)


def _closing_summary(result: CampaignResult) -> None:
    counts = result.counts()
    table = Table(title=f"campaign {result.manifest.name}: {result.wall_seconds:.0f} s wall time")
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
    for seed, gate in result.gates.items():
        out.print(f"gate s{seed}: {gate.get('reason')} -> teacher {gate.get('chosen_teacher_run')}")
    if counts["failed"]:
        failed = [r.run_name for r in result.records.values() if r.state == "failed"]
        out.print(
            f"[bold red]failed[/]: {', '.join(failed)} (see {result.campaign_dir / 'errors'})"
        )


__all__ = [
    "CampaignError",
    "CampaignResult",
    "PlannedRun",
    "RunRecord",
    "campaign_dir",
    "plan",
    "plan_counts",
    "plan_table",
    "print_plan",
    "remove_campaign",
    "reuse_state",
    "run_campaign",
]
