"""Configuration, validated in one place. Field defaults ARE the project's defaults: the
reference training policy (Adam 1e-3, weight decay 1e-5, batch 64, 50 epochs, patience 5,
seed 42, class weights 1.0/1.5/5.5) lives here and nowhere else. The CLI passes only what the
user set."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sleepsound.taxonomy import DEFAULT_CLASSES, parse_classes

RESULTS_DIR = Path("results")
CACHE_SUBDIR = Path("cache") / "spectrograms"
DEFAULT_CACHE_DIR = RESULTS_DIR / CACHE_SUBDIR
DEFAULT_DATA_DIR = Path("data") / "synthetic"
DEFAULT_BUCKET_FRAMES = 50  # input lengths are multiples of this many frames (0.5 s)
# The checkout's notebooks/ folder (make installs sleepsound editable from the checkout).
NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"


# A run name is ONE path component: it names <results>/runs/<name>, which training replaces.
RUN_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=+-]*")
RUN_NAME_MAX = 200


def check_run_name(name: str) -> str:
    """``name`` if it is a safe run name (one path component: letters, digits and ``_.=+-``,
    starting with a letter or digit, at most 200 characters); ValueError otherwise. ``..``,
    ``.``, ``a/b`` and absolute paths are refused: a run folder is deleted when re-trained."""
    if (
        not isinstance(name, str)
        or not RUN_NAME_PATTERN.fullmatch(name)
        or len(name) > RUN_NAME_MAX
    ):
        raise ValueError(
            f"run name {name!r} is not one safe folder name (letters, digits and _ . = + -, "
            f"starting with a letter or digit, at most {RUN_NAME_MAX} characters)"
        )
    return name


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # fmt: skip
MIN_MEMORY_LIMIT = 32 * 10**6  # bytes: the smallest --memory-limit the data path honours


def parse_size(value: str | int | float) -> int:
    """``"2GB"``, ``"512 MiB"``, ``"32MB"`` or a number of bytes -> bytes (int)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        number, unit = float(value), ""
    else:
        text = str(value).strip().upper().replace(" ", "")
        split = len(text.rstrip("KMGTIB"))
        number_text, unit = text[:split], text[split:]
        try:
            number = float(number_text)
        except ValueError:
            number = float("nan")
        if unit not in _SIZE_UNITS:
            units = "B, KB, MB, GB, TB, KiB, MiB, GiB"
            raise ValueError(f"size {value!r}: the unit must be one of {units}")
    if not number == number or number <= 0 or number == float("inf"):
        raise ValueError(f"size {value!r} is not a positive number of bytes")
    return int(number * _SIZE_UNITS[unit])


class AugmentConfig(Strict):
    """Training-time augmentation (all off by default: the reference policy has none).
    SpecAugment masks act on the cached log-mel (dB) before scaling; mixup also mixes the
    teacher's soft targets in distillation; gain shifts a clip's dB values uniformly."""

    time_masks: int = Field(0, ge=0)
    time_mask_frames: int = Field(20, ge=1)
    freq_masks: int = Field(0, ge=0)
    freq_mask_bins: int = Field(8, ge=1)
    mixup_alpha: float = Field(0.0, ge=0, allow_inf_nan=False)
    # uniform in [-gain_db, +gain_db]. Caution: cached clips are in dB relative to their own
    # maximum (0 dB peak), so a gain moves that peak where evaluation never puts it; measured
    # on the demo it hurt (0.594-0.615 vs 0.733 test macro-F1, seed 42). Masks do not.
    gain_db: float = Field(0.0, ge=0, allow_inf_nan=False)

    @property
    def active(self) -> bool:
        return bool(self.time_masks or self.freq_masks or self.mixup_alpha or self.gain_db)

    @property
    def label(self) -> str:
        """``""`` when off, else the options that differ from the defaults, e.g.
        ``time_masks=2 mixup_alpha=0.2`` (leaderboard column, report tables)."""
        if not self.active:
            return ""
        changed = [
            (k, v) for k, v in self.model_dump().items() if v != type(self).model_fields[k].default
        ]
        return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in changed)


def augment_label(augment: dict | None) -> str:
    """:attr:`AugmentConfig.label` of a saved run config's ``augment`` (``""`` when none)."""
    if not isinstance(augment, dict):
        return ""
    try:
        return AugmentConfig(**augment).label
    except ValueError:
        return "unreadable augmentation settings"


class PreprocessConfig(Strict):
    data_dir: Path = DEFAULT_DATA_DIR
    cache_dir: Path = DEFAULT_CACHE_DIR
    splits: tuple[str, ...] = ("train", "validation", "test")
    classes: tuple[str, ...] = DEFAULT_CLASSES
    channels: Literal["mean", "in_ear", "outer", "both"] = "mean"
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    skip_existing: bool = False
    invalid_audio: Literal["skip", "error"] = "skip"

    @field_validator("classes", mode="before")
    @classmethod
    def _classes(cls, v):
        return parse_classes(v)


class TrainConfig(Strict):
    """One training run. ``teacher_run``/``alpha``/``tau`` make it a distillation run."""

    cache_dir: Path = DEFAULT_CACHE_DIR
    model: str = "tinycnn"
    model_kwargs: dict = Field(default_factory=dict)
    run_name: str | None = None
    results_dir: Path = RESULTS_DIR
    epochs: int = Field(50, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(1e-5, ge=0, allow_inf_nan=False)
    grad_clip: float = Field(0.0, ge=0, allow_inf_nan=False)  # 0: no clipping
    class_weights: str = "reference"  # "reference" | "balanced" | "none" | "1.0,1.5,5.5"
    patience: int = Field(5, ge=1)
    # Learning rate per epoch: "constant" (the reference policy) or "cosine", which decays it
    # from lr in epoch 1 to near 0 in the last epoch (see training.train.epoch_lr), so a run
    # ends with small steps and its validation score settles within its epoch budget.
    schedule: Literal["constant", "cosine"] = "constant"
    seed: int = 42
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # Input length policy: "bucket" crops each clip's padding to a multiple of bucket_frames
    # (the same for a clip wherever it is used); "full" feeds all 501 frames as the reference.
    frames: Literal["bucket", "full"] = "bucket"
    bucket_frames: int = Field(DEFAULT_BUCKET_FRAMES, ge=1)
    threads: int | None = Field(None, ge=1)
    # Most RAM the training data path may hold (bytes); None adapts to the machine.
    memory_limit: int | None = Field(None, ge=MIN_MEMORY_LIMIT)
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast on CUDA only
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    # knowledge distillation
    teacher_run: Path | None = None
    alpha: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    tau: float | None = Field(None, gt=0, allow_inf_nan=False)

    @field_validator("run_name")
    @classmethod
    def _run_name(cls, v: str | None) -> str | None:
        return None if v is None else check_run_name(v)

    @field_validator("memory_limit", mode="before")
    @classmethod
    def _memory_limit(cls, v):
        if v is None:
            return None
        size = parse_size(v)
        if size < MIN_MEMORY_LIMIT:
            raise ValueError(f"{v!r} is below the smallest limit the data path honours, 32MB")
        return size

    @field_validator("class_weights")
    @classmethod
    def _weights(cls, v: str) -> str:
        v = v.strip()
        if v in ("reference", "balanced", "none"):
            return v
        try:
            values = [float(x) for x in v.split(",")]
        except ValueError as exc:
            raise ValueError(
                f"class weights must be 'reference', 'balanced', 'none' or numbers, got {v!r}"
            ) from exc
        if not all(math.isfinite(w) and w > 0 for w in values):
            raise ValueError(f"class weights must be positive finite numbers, got {v!r}")
        return ",".join(str(w) for w in values)

    @model_validator(mode="after")
    def _kd(self):
        kd = [self.teacher_run is not None, self.alpha is not None, self.tau is not None]
        if any(kd) and not all(kd):
            raise ValueError("distillation needs teacher_run, alpha and tau together")
        return self

    @property
    def is_distillation(self) -> bool:
        return self.teacher_run is not None

    def default_run_name(self) -> str:
        parts = [self.model] + [f"{k}{v}" for k, v in sorted(self.model_kwargs.items())]
        if self.is_distillation:
            parts.append(f"kd-a{self.alpha:g}-t{self.tau:g}")
        parts.append(f"s{self.seed}")
        return check_run_name("_".join(parts))
