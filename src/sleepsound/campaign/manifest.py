"""Campaign manifests: one JSON file describes a whole experiment campaign.

A manifest names the cache, the results folder, the seeds, defaults for every run, the phase-1
runs, the teacher, the gate and the phase-2 distillation grid::

    {
      "name": "reference",
      "cache_dir": "results/cache/spectrograms",
      "results_dir": "results",
      "seeds": [42],
      "train": {"epochs": 50, "patience": 5},
      "phase1": [
        {"model": "tinycnn"},
        {"model": "crnn"},
        {"model": "tinycnn_cbam", "grid": {"r": [4, 8, 16], "k": [3, 7, 11]}}
      ],
      "teacher": {"model": "crnn"},
      "gate": {"min_margin": 0.03,
               "tuning_grid": {"lr": [0.002, 0.001, 0.0005], "weight_decay": [1e-05, 0.0001],
                               "grad_clip": [0, 0.5]}},
      "phase2": {"students": [{"model": "tinycnn"},
                              {"model": "tinycnn_cbam", "model_kwargs": {"r": 8, "k": 3}}],
                 "alpha": [0.3, 0.6, 0.9], "tau": [3, 4, 5]},
      "executor": {"kind": "ray", "address": "auto", "cpus_per_run": 2, "gpus_per_run": 0.25}
    }

``executor`` (optional; command-line flags override it) says where the runs execute:
``local`` (default: one after another in this process; with ``"workers": N``, up to N at
once in worker processes on this machine) or ``ray`` (in parallel on a Ray cluster, each run
asking for ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs, retried up to ``retries`` times).
It never changes what a run computes (given its ``threads``), so it is not part of any run
config.

A run spec is ``{"model", "model_kwargs", "grid", "overrides", "label"}``: ``grid`` expands
into one run per combination of model keyword values, ``overrides`` sets any
:class:`~sleepsound.config.TrainConfig` field for that run only, ``label`` replaces the
model-derived part of the run name. Everything a manifest leaves unset falls back to the
TrainConfig defaults (the reference policy); nothing here repeats them.

Run names are deterministic, ``<campaign>-<phase>_<stem>_s<seed>``::

    reference-p1_tinycnn_cbam_r8_k3_s42
    reference-tune_crnn_lr0.002_wd0.0001_gc0.5_s42
    reference-p2_tinycnn_kd_a0.6_t4_s42

The campaign name is part of every run name, so two campaigns sharing a results folder never
overwrite each other's runs.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from sleepsound.config import DEFAULT_CACHE_DIR, RESULTS_DIR, Strict, TrainConfig, check_run_name
from sleepsound.models import create_model, list_models

# TrainConfig fields the campaign sets itself: a manifest may not set them in `train`,
# `overrides` or a tuning grid.
CAMPAIGN_FIELDS = frozenset(
    {"model", "model_kwargs", "run_name", "results_dir", "seed", "teacher_run", "alpha", "tau"}
)
# Short names of TrainConfig fields inside run names (others appear under their own name).
NAME_ABBREVIATIONS = {"lr": "lr", "weight_decay": "wd", "grad_clip": "gc"}
PHASE_PREFIXES = {"phase1": "p1", "tuning": "tune", "phase2": "p2"}
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
N_CLASSES_FOR_CHECKS = 3  # model kwargs are checked by building the model once at this size


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file and the offending field."""


# ----------------------------------------------------------------------------- helpers


def format_value(value: Any) -> str:
    """A value as it appears in a run name: numbers in short form (0.002, 1e-05, 4)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def tuning_stem(teacher_stem: str, settings: dict[str, Any]) -> str:
    """``crnn_lr0.002_wd0.0001_gc0.5`` for a teacher-tuning combination."""
    parts = [f"{NAME_ABBREVIATIONS.get(k, k)}{format_value(v)}" for k, v in settings.items()]
    return "_".join([teacher_stem, *parts])


def _check_train_fields(values: dict, where: str) -> dict:
    """Keys must be TrainConfig fields the campaign does not control; values must validate."""
    unknown = sorted(set(values) - set(TrainConfig.model_fields))
    if unknown:
        raise ValueError(f"unknown TrainConfig field(s) {unknown} in {where}")
    controlled = sorted(set(values) & CAMPAIGN_FIELDS)
    if controlled:
        raise ValueError(f"{controlled} cannot be set in {where}: the campaign sets them")
    TrainConfig(**values)  # value errors surface with the field name
    return values


def _check_model(name: str) -> str:
    if name not in list_models():
        raise ValueError(f"unknown model {name!r}; available models: {', '.join(list_models())}")
    return name


# ----------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class ModelRun:
    """One model configuration of a spec after grid expansion."""

    model: str
    model_kwargs: dict = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)
    label: str | None = None

    @property
    def stem(self) -> str:
        """``tinycnn_cbam_r8_k3`` (kwargs in the spec's order), or the label."""
        if self.label:
            return self.label
        return "_".join(
            [self.model] + [f"{k}{format_value(v)}" for k, v in self.model_kwargs.items()]
        )


class RunSpec(Strict):
    """One phase-1 run (or, with ``grid``, one run per combination) or one phase-2 student."""

    model: str
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    label: str | None = Field(None, pattern=NAME_PATTERN)

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        return _check_model(v)

    @field_validator("overrides")
    @classmethod
    def _overrides(cls, v: dict) -> dict:
        return _check_train_fields(v, "overrides")

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: dict | None) -> dict | None:
        if v is not None:
            empty = [k for k, values in v.items() if not values]
            if not v or empty:
                raise ValueError(f"grid needs at least one value per key (empty: {empty})")
        return v

    @model_validator(mode="after")
    def _kwargs(self):
        both = sorted(set(self.grid or {}) & set(self.model_kwargs))
        if both:
            raise ValueError(f"{both} given both in model_kwargs and in grid")
        if self.grid and self.label:
            raise ValueError("a grid spec cannot have a label (its runs need distinct names)")
        for kwargs in self.expand_kwargs():
            try:
                create_model(self.model, N_CLASSES_FOR_CHECKS, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any construction error is a manifest error
                raise ValueError(f"model {self.model!r} with {kwargs}: {exc}") from exc
        return self

    def expand_kwargs(self) -> list[dict[str, Any]]:
        """Every model-kwargs combination this spec stands for (grid keys in their order)."""
        if not self.grid:
            return [dict(self.model_kwargs)]
        keys = list(self.grid)
        return [
            {**self.model_kwargs, **dict(zip(keys, values, strict=True))}
            for values in itertools.product(*(self.grid[k] for k in keys))
        ]

    def expand(self) -> list[ModelRun]:
        return [
            ModelRun(self.model, kw, dict(self.overrides), self.label)
            for kw in self.expand_kwargs()
        ]


class TeacherSpec(Strict):
    """Picks the teacher among the phase-1 runs: by model, and by kwargs/label if ambiguous."""

    model: str
    model_kwargs: dict[str, Any] | None = None
    label: str | None = None

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        return _check_model(v)

    def matches(self, run: ModelRun) -> bool:
        return (
            run.model == self.model
            and (self.model_kwargs is None or run.model_kwargs == self.model_kwargs)
            and (self.label is None or run.label == self.label)
        )


class GateSpec(Strict):
    """The teacher must beat the best phase-1 student by ``min_margin`` validation macro-F1,
    else every combination of ``tuning_grid`` (TrainConfig fields) is trained for the teacher."""

    min_margin: float = Field(ge=0)
    tuning_grid: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("tuning_grid")
    @classmethod
    def _grid(cls, v: dict) -> dict:
        empty = [k for k, values in v.items() if not values]
        if empty:
            raise ValueError(f"tuning_grid needs at least one value per key (empty: {empty})")
        _check_train_fields({k: values[0] for k, values in v.items()}, "gate.tuning_grid")
        for key, values in v.items():
            for value in values:
                TrainConfig(**{key: value})
        return v

    def combinations(self) -> list[dict[str, Any]]:
        keys = list(self.tuning_grid)
        return [
            dict(zip(keys, values, strict=True))
            for values in itertools.product(*(self.tuning_grid[k] for k in keys))
        ]


class Phase2Spec(Strict):
    """Knowledge distillation: every student x alpha x tau, from the gate's chosen teacher."""

    students: list[RunSpec] = Field(min_length=1)
    alpha: list[float] = Field(min_length=1)
    tau: list[float] = Field(min_length=1)

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: list[float]) -> list[float]:
        bad = [a for a in v if not 0 <= a <= 1]
        if bad:
            raise ValueError(f"alpha must lie in [0, 1], got {bad}")
        return v

    @field_validator("tau")
    @classmethod
    def _tau(cls, v: list[float]) -> list[float]:
        bad = [t for t in v if t <= 0]
        if bad:
            raise ValueError(f"tau must be > 0, got {bad}")
        return v


EXECUTORS = ("local", "ray")
DEFAULT_RETRIES = 2  # a failing run is tried 1 + retries times (Ray executor)


class ExecutorSpec(Strict):
    """Where runs execute (see the module docstring); defaults: local, 1 CPU, no GPU."""

    kind: Literal["local", "ray"] = "local"
    workers: int = Field(1, ge=1)  # local: runs at once in worker processes (1: in-process)
    address: str | None = None  # Ray: None starts a local instance; "auto" or HOST:PORT joins
    cpus_per_run: float = Field(1.0, gt=0, allow_inf_nan=False)
    gpus_per_run: float = Field(0.0, ge=0, allow_inf_nan=False)
    retries: int = Field(DEFAULT_RETRIES, ge=0)

    @field_validator("gpus_per_run")
    @classmethod
    def _gpus(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError(f"a run asks for a fraction of one GPU or whole GPUs, got {v:g}")
        return v


class Manifest(Strict):
    """A validated campaign manifest (see the module docstring)."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    cache_dir: Path = DEFAULT_CACHE_DIR
    results_dir: Path = RESULTS_DIR
    seeds: list[int] = Field(default_factory=lambda: [TrainConfig.model_fields["seed"].default])
    train: dict[str, Any] = Field(default_factory=dict)
    phase1: list[RunSpec] = Field(min_length=1)
    teacher: TeacherSpec | None = None
    gate: GateSpec | None = None
    phase2: Phase2Spec | None = None
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("at least one seed is needed")
        if len(set(v)) != len(v):
            raise ValueError(f"seeds repeat: {v}")
        return v

    @field_validator("train")
    @classmethod
    def _train(cls, v: dict) -> dict:
        return _check_train_fields(v, "train")

    @model_validator(mode="after")
    def _consistent(self):
        if (self.gate or self.phase2) and self.teacher is None:
            raise ValueError("'teacher' is required when 'gate' or 'phase2' is given")
        for phase, stems in (
            ("phase1", [r.stem for r in self.phase1_runs()]),
            ("phase2", [s for s, *_ in self.phase2_runs()]),
        ):
            dup = sorted({s for s in stems if stems.count(s) > 1})
            if dup:
                raise ValueError(
                    f"{phase}: duplicate run names {dup}; give the specs distinct 'label's, "
                    "model_kwargs or grid values"
                )
        if self.teacher is not None:
            matches = [r.stem for r in self.phase1_runs() if self.teacher.matches(r)]
            if len(matches) != 1:
                found = f"matches {matches}" if matches else "matches no phase-1 run"
                raise ValueError(
                    f"teacher {self.teacher.model_dump(exclude_none=True)} {found}; "
                    "it must pick exactly one (add model_kwargs or label)"
                )
        stems = self.tuning_stems()
        dup = sorted({s for s in stems if stems.count(s) > 1})
        if dup:
            raise ValueError(f"gate.tuning_grid: duplicate run names {dup}; repeat no value")
        self._check_names()
        return self

    def _check_names(self) -> None:
        """Every run name the manifest expands to must be one safe folder name: a grid value
        such as a path must not lead a run folder out of ``<results>/runs``."""
        where = {"phase1": "phase1", "tuning": "gate.tuning_grid", "phase2": "phase2"}
        stems = {
            "phase1": [r.stem for r in self.phase1_runs()],
            "tuning": self.tuning_stems(),
            "phase2": [s for s, *_ in self.phase2_runs()],
        }
        for phase, names in stems.items():
            for stem in names:
                for seed in self.seeds:
                    try:
                        check_run_name(self.run_name(phase, stem, seed))
                    except ValueError as exc:
                        raise ValueError(f"{where[phase]}: {exc}") from None

    # -- expansion

    def phase1_runs(self) -> list[ModelRun]:
        return [run for spec in self.phase1 for run in spec.expand()]

    def teacher_run(self) -> ModelRun:
        return next(r for r in self.phase1_runs() if self.teacher.matches(r))

    def tuning_stems(self) -> list[str]:
        """Run-name stems of the teacher-tuning grid, e.g. ``crnn_lr0.002_wd1e-05_gc0``."""
        if self.gate is None or self.teacher is None:
            return []
        return [tuning_stem(self.teacher_run().stem, combo) for combo in self.gate.combinations()]

    def phase2_runs(self) -> list[tuple[str, ModelRun, float, float]]:
        """(stem, student, alpha, tau) for every phase-2 run, students outermost."""
        if self.phase2 is None:
            return []
        return [
            (f"{student.stem}_kd_a{format_value(a)}_t{format_value(t)}", student, a, t)
            for spec in self.phase2.students
            for student in spec.expand()
            for a in self.phase2.alpha
            for t in self.phase2.tau
        ]

    def run_name(self, phase: str, stem: str, seed: int) -> str:
        return f"{self.name}-{PHASE_PREFIXES[phase]}_{stem}_s{seed}"


# ----------------------------------------------------------------------------- loading


def _location(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(manifest)"


def format_validation_error(path: Path | str, err: ValidationError) -> str:
    lines = [f"{path}: invalid manifest ({err.error_count()} problem(s))"]
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not allowed here)"
        lines.append(f"  {_location(e['loc'])}: {msg}")
    return "\n".join(lines)


def parse_manifest(data: Any, source: Path | str = "<manifest>") -> Manifest:
    """Validate already-parsed JSON; errors become a :class:`ManifestError` naming ``source``."""
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: a manifest is a JSON object, got {type(data).__name__}")
    try:
        return Manifest.model_validate(data)
    except ValidationError as err:
        raise ManifestError(format_validation_error(source, err)) from None


def load_manifest(path: Path | str) -> Manifest:
    """Read and validate a manifest file.

    Raises:
        ManifestError: file missing, invalid JSON (with line and column), or invalid content
            (every problem listed with its field, e.g. ``phase2.alpha``).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read manifest ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    return parse_manifest(data, path)
