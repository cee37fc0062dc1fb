"""Every subcommand over a table of bad inputs: one ``error:`` line naming the option or file
and the reason, exit code 2, never a traceback (issue 13). Add a case by adding a row."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from badinput import Bad, assert_refused, fill, garbage, run_cli, tiny_cache
from conftest import write_dataset

from sleepsound import runs
from sleepsound.config import TrainConfig
from sleepsound.data.provenance import SOURCE_FILE
from sleepsound.features.cache import validate_cache
from sleepsound.models import create_model
from sleepsound.training.train import train_run


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A tiny real cache and one finished 1-epoch TinyCNN run (read-only for the rows)."""
    root = tmp_path_factory.mktemp("badinput")
    cache = tiny_cache(root)
    cfg = TrainConfig(
        cache_dir=cache, results_dir=root / "results", model="tinycnn", epochs=1,
        batch_size=16, threads=1,
    )  # fmt: skip
    run = train_run(cfg, progress=False)
    return {"cache": cache, "run": run}


# ----------------------------------------------------------------------------- setups


def _copy_run(p: dict, name: str = "copy") -> Path:
    dest = runs.run_dir(p["results"], name)
    shutil.copytree(p["run"], dest)
    return dest


def _edit_best(p: dict, edit) -> None:
    """Copy the run to {results}/runs/copy and rewrite its best checkpoint with ``edit``."""
    path = runs.best_checkpoint(_copy_run(p))
    ckpt = torch.load(path, weights_only=True)
    torch.save(edit(ckpt), path)


def _without_state_dict(ckpt):
    return {k: v for k, v in ckpt.items() if k != "state_dict"}


def _four_class_weights(ckpt):
    return {**ckpt, "state_dict": create_model("tinycnn", 4).state_dict()}


def _four_class_teacher(ckpt):
    model = create_model("tinycnn", 4)
    return {**ckpt, "state_dict": model.state_dict(), "model": model.config}


def _nan_weights(ckpt):
    sd = dict(ckpt["state_dict"])
    key = next(k for k in sd if k.endswith("weight"))
    sd[key] = torch.full_like(sd[key], float("nan"))
    return {**ckpt, "state_dict": sd}


def _garbage_checkpoint(p: dict) -> None:
    runs.best_checkpoint(_copy_run(p)).write_bytes(garbage())


def _stored_logits(p: dict, logits_of) -> None:
    """Copy the run as a teacher and plant a stored teacher-logits file for it."""
    teacher = _copy_run(p)
    train = validate_cache(p["cache"] / "train.h5")
    key = (
        f"{runs.file_sha256(runs.best_checkpoint(teacher))[:16]}_"
        f"{train.attrs['fingerprint'][:16]}_train"
    )
    store = Path(p["results"]) / "cache" / "teacher_logits" / f"{key}.npy"
    store.parent.mkdir(parents=True, exist_ok=True)
    np.save(store, logits_of(train.n_samples))


def _board(content: bytes):
    def setup(p: dict) -> None:
        path = runs.leaderboard_file(p["results"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)

    return setup


def _bad_number_board() -> bytes:
    header = ",".join(runs.COLUMNS)
    row = ["x"] * len(runs.COLUMNS)
    for col in ("val_macro_f1", "test_macro_f1", "params"):
        row[runs.COLUMNS.index(col)] = "0.5"
    row[runs.COLUMNS.index("test_macro_f1")] = "zero point eight"
    for col in runs.leaderboard.NUMERIC_COLUMNS:
        if col != "test_macro_f1":
            row[runs.COLUMNS.index(col)] = "1"
    return (header + "\n" + ",".join(row) + "\n").encode()


def _file(p: dict) -> None:
    Path(p["file"]).write_text("I am a file, not a folder\n")


def _manifest(**fields):
    def setup(p: dict) -> None:
        _file(p)
        data = {
            "name": "bad",
            "cache_dir": str(p["cache"]),
            "results_dir": str(p["results"]),
            "train": {"epochs": 1},
            "phase1": [{"model": "tinycnn"}],
        }
        data.update({k: (fill(v, p) if isinstance(v, str) else v) for k, v in fields.items()})
        Path(p["manifest"]).write_text(json.dumps(data))

    return setup


def _small_data(p: dict, source: str | None = None) -> Path:
    """A one-clip-per-class dataset under {tmp}/d (optionally with a source file)."""
    data = write_dataset(Path(p["tmp"]) / "d", per_class=1, splits=("train",))
    if source is not None:
        (data / SOURCE_FILE).write_text(source)
    return data


def _non_utf8_label(p: dict) -> None:
    data = _small_data(p)
    os.mkdir(os.fsencode(data / "train") + b"/sn\xffore")


def _garbage_cache(p: dict) -> None:
    folder = Path(p["tmp"]) / "badcache"
    folder.mkdir()
    (folder / "train.h5").write_bytes(garbage())


# ----------------------------------------------------------------------------- the table

TRAIN = ["train", "--model", "tinycnn", "--cache-dir", "{cache}", "--results-dir", "{results}",
         "--epochs", "1", "--batch-size", "16"]  # fmt: skip
DISTILL = ["distill", "--teacher-run", "{results}/runs/copy", "--student", "tinycnn",
           "--alpha", "0.5", "--tau", "2", "--cache-dir", "{cache}", "--results-dir",
           "{results}", "--epochs", "1", "--batch-size", "16"]  # fmt: skip
EVALUATE = ["evaluate", "--run", "{results}/runs/copy"]
PREPROCESS = ["preprocess", "--data", "{data}", "--workers", "1", "--cache-dir"]
NO_CUDA = "this machine has CUDA" if torch.cuda.is_available() else ""

ROWS = [
    # run names: one safe folder name (a bad one used to delete the folder it named)
    Bad("run-name-dotdot", [*TRAIN, "--run-name", ".."], ["--run-name", "'..'", "folder name"]),
    Bad("run-name-dot", [*TRAIN, "--run-name", "."], ["--run-name", "folder name"]),
    Bad("run-name-up", [*TRAIN, "--run-name", "../x"], ["--run-name", "folder name"]),
    Bad("run-name-absolute", [*TRAIN, "--run-name", "{tmp}/abs"], ["--run-name", "folder name"]),
    # non-finite numbers
    Bad("lr-inf", [*TRAIN, "--lr", "inf"], ["--lr", "finite"]),
    Bad("lr-nan", [*TRAIN, "--lr", "nan"], ["--lr"]),
    Bad("weight-decay-inf", [*TRAIN, "--weight-decay", "inf"], ["--weight-decay", "finite"]),
    Bad("grad-clip-nan", [*TRAIN, "--grad-clip", "nan"], ["--grad-clip"]),
    Bad("schedule-unknown", [*TRAIN, "--schedule", "linear"], ["--schedule", "cosine"]),
    Bad("class-weights-nan", [*TRAIN, "--class-weights", "nan,1,1"], ["--class-weights", "finite"]),
    Bad("class-weights-inf", [*TRAIN, "--class-weights", "1,inf,1"], ["--class-weights"]),
    Bad("tau-inf", [*DISTILL[:8], "inf", *DISTILL[9:]], ["--tau", "finite"], _copy_run),
    Bad("alpha-nan", [*DISTILL[:6], "nan", *DISTILL[7:]], ["--alpha"], _copy_run),
    # devices and model options
    Bad("device-cuda", [*TRAIN, "--device", "cuda"], ["--device cuda", "CUDA"], skip=NO_CUDA),
    Bad(
        "model-kwargs-unknown",
        [*TRAIN, "--model-kwargs", '{"bogus": 1}'],
        ["--model-kwargs", "bogus"],
    ),  # fmt: skip
    Bad(
        "model-kwargs-type",
        [*TRAIN[:2], "tinycnn_cbam", *TRAIN[3:], "--model-kwargs", '{"r": "eight"}'],
        ["--model-kwargs"],
    ),  # fmt: skip
    Bad("model-kwargs-not-json", [*TRAIN, "--model-kwargs", "{r: 8"], ["--model-kwargs", "JSON"]),
    Bad("model-kwargs-list", [*TRAIN, "--model-kwargs", "[8, 3]"], ["--model-kwargs"]),
    # a corrupt leaderboard, four kinds, for every command that reads it
    *[
        Bad(f"{cmd[0]}-board-{kind}", cmd, ["leaderboard.csv", why], _board(content))
        for cmd in (
            ["leaderboard", "--results-dir", "{results}"],
            ["report", "results", "--results-dir", "{results}"],
            ["export", "--run", "best", "--results-dir", "{results}", "--out", "{tmp}/export"],
        )
        for kind, content, why in (
            ("garbage", garbage(), "UTF-8"),
            ("columns", b"name,score\nx,1\n", "missing column"),
            ("numbers", _bad_number_board(), "not a finite number"),
            ("binary", b"run_name\x00\x00\x01\x02", "binary"),
            ("empty", b"", "empty"),
        )
    ],
    # checkpoints
    Bad(
        "ckpt-missing-keys",
        EVALUATE,
        ["best.pt", "lacks", "state_dict"],
        lambda p: _edit_best(p, _without_state_dict),
    ),  # fmt: skip
    Bad(
        "ckpt-wrong-shapes",
        EVALUATE,
        ["best.pt", "do not fit", "shape"],
        lambda p: _edit_best(p, _four_class_weights),
    ),  # fmt: skip
    Bad("ckpt-garbage", EVALUATE, ["best.pt", "not a readable checkpoint"], _garbage_checkpoint),
    Bad(
        "config-garbage",
        EVALUATE,
        ["config.json", "unreadable"],
        lambda p: runs.config_path(_copy_run(p)).write_bytes(garbage()),
    ),  # fmt: skip
    Bad(
        "export-ckpt-wrong-shapes",
        ["export", "--run", "{results}/runs/copy", "--out", "{tmp}/export"],
        ["best.pt", "do not fit"],
        lambda p: _edit_best(p, _four_class_weights),
    ),  # fmt: skip
    Bad(
        "teacher-ckpt-garbage",
        DISTILL,
        ["best.pt", "not a readable checkpoint"],
        _garbage_checkpoint,
    ),  # fmt: skip
    Bad("evaluate-no-run", ["evaluate", "--run", "{tmp}/nowhere"], ["nowhere", "not found"]),
    # teachers and their logits
    Bad(
        "teacher-wrong-classes",
        DISTILL,
        ["teacher", "shape", "3 classes"],
        lambda p: _edit_best(p, _four_class_teacher),
    ),  # fmt: skip
    Bad(
        "teacher-nan-weights",
        DISTILL,
        ["teacher", "not finite"],
        lambda p: _edit_best(p, _nan_weights),
    ),  # fmt: skip
    Bad(
        "stored-logits-wrong-classes",
        DISTILL,
        [".npy", "shape", "3 classes"],
        lambda p: _stored_logits(p, lambda n: np.zeros((n, 5), np.float32)),
    ),  # fmt: skip
    Bad(
        "stored-logits-nan",
        DISTILL,
        [".npy", "not finite"],
        lambda p: _stored_logits(p, lambda n: np.full((n, 3), np.nan, np.float32)),
    ),  # fmt: skip
    Bad(
        "teacher-missing",
        [*DISTILL[:2], "{tmp}/no-teacher", *DISTILL[3:]],
        ["no-teacher", "teacher"],
    ),  # fmt: skip
    # a file where an output folder belongs
    Bad(
        "synth-out-file",
        ["synth", "--out", "{file}", "--clips", "9"],
        ["--out", "not a folder"],
        _file,
    ),  # fmt: skip
    Bad(
        "synth-out-under-file",
        ["synth", "--out", "{file}/sub", "--clips", "9"],
        ["--out", "not a folder"],
        _file,
    ),  # fmt: skip
    Bad(
        "campaign-results-file",
        ["campaign", "--manifest", "{manifest}", "--results-dir", "{file}"],
        ["--results-dir", "not a folder"],
        _manifest(),
    ),  # fmt: skip
    Bad(
        "campaign-manifest-results-file",
        ["campaign", "--manifest", "{manifest}"],
        ["{file}"],
        _manifest(results_dir="{file}"),
    ),  # fmt: skip
    Bad(
        "report-results-file",
        ["report", "results", "--results-dir", "{file}"],
        ["--results-dir", "not a folder"],
        _file,
    ),  # fmt: skip
    # the other commands: missing inputs
    Bad(
        "preprocess-no-data",
        ["preprocess", "--data", "{tmp}/nodata", "--cache-dir", "{tmp}/c"],
        ["nodata"],
    ),  # fmt: skip
    Bad(
        "report-data-no-cache",
        ["report", "data", "--cache-dir", "{tmp}/nocache", "--figures-dir", "{tmp}/fig"],
        ["nocache"],
    ),  # fmt: skip
    Bad("fetch-out-file", ["fetch", "dreamcatcher", "--out", "{file}"], ["{file}"], _file),
    Bad(
        "detect-no-recording",
        ["detect", "{tmp}/night.wav", "--model", "{run}", "--out", "{tmp}/det"],
        ["night.wav"],
    ),  # fmt: skip
    # preprocess: folders, split names, source files, odd names
    Bad(
        "preprocess-cache-dir-file",
        [*PREPROCESS, "{file}"],
        ["--cache-dir", "not a folder"],
        _file,
    ),  # fmt: skip
    Bad(
        "preprocess-cache-dir-under-file",
        [*PREPROCESS, "{file}/sub"],
        ["--cache-dir", "not a folder"],
        _file,
    ),  # fmt: skip
    Bad(
        "preprocess-data-file",
        ["preprocess", "--data", "{file}", "--cache-dir", "{tmp}/c"],
        ["--data", "not a folder"],
        _file,
    ),  # fmt: skip
    Bad(
        "preprocess-split-unknown",
        [*PREPROCESS, "{tmp}/c", "--splits", "dev"],
        ["--splits", "'dev'"],
    ),
    Bad(
        "preprocess-split-escapes",
        [*PREPROCESS, "{tmp}/c", "--splits", "../../x"],
        ["--splits", "not a split"],
    ),  # fmt: skip
    Bad(
        "preprocess-split-twice",
        [*PREPROCESS, "{tmp}/c", "--splits", "train,train"],
        ["--splits", "twice"],
    ),  # fmt: skip
    Bad("preprocess-split-empty", [*PREPROCESS, "{tmp}/c", "--splits", "train,"], ["--splits"]),
    Bad(
        "preprocess-source-kind",
        ["preprocess", "--data", "{tmp}/d", "--cache-dir", "{tmp}/c", "--workers", "1"],
        [SOURCE_FILE, "unknown data-source kind"],
        lambda p: _small_data(p, '{"kind": "dreamcatcher-certified"}'),
    ),  # fmt: skip
    Bad(
        "preprocess-source-garbage",
        ["preprocess", "--data", "{tmp}/d", "--cache-dir", "{tmp}/c", "--workers", "1"],
        [SOURCE_FILE, "unreadable"],
        lambda p: _small_data(p, "{kind: synthetic"),
    ),  # fmt: skip
    Bad(
        "preprocess-label-not-utf8",
        ["preprocess", "--data", "{tmp}/d", "--cache-dir", "{tmp}/c", "--workers", "1"],
        ["sn\\xffore", "not a DreamCatcher label"],
        _non_utf8_label,
    ),  # fmt: skip
    # synth options
    Bad("synth-clips-zero", ["synth", "--out", "{tmp}/s", "--clips", "0"], ["--clips"]),
    Bad("synth-clips-negative", ["synth", "--out", "{tmp}/s", "--clips", "-5"], ["--clips"]),
    Bad("synth-seed-negative", ["synth", "--out", "{tmp}/s", "--seed", "-1"], ["--seed"]),
    Bad("synth-night-nan", ["synth", "--out", "{tmp}/s", "--night", "nan"], ["--night", "hours"]),
    Bad("synth-night-inf", ["synth", "--out", "{tmp}/s", "--night", "inf"], ["--night", "hours"]),
    Bad("synth-night-zero", ["synth", "--out", "{tmp}/s", "--night", "0"], ["--night"]),
    Bad("synth-night-huge", ["synth", "--out", "{tmp}/s", "--night", "1e9"], ["--night"]),
    # report data: folders and a corrupt cache, refused before the notebook starts
    Bad(
        "report-data-figures-file",
        ["report", "data", "--cache-dir", "{cache}", "--figures-dir", "{file}"],
        ["--figures-dir", "not a folder"],
        _file,
    ),  # fmt: skip
    Bad(
        "report-data-cache-file",
        ["report", "data", "--cache-dir", "{file}", "--figures-dir", "{tmp}/fig"],
        ["--cache-dir", "not a folder"],
        _file,
    ),  # fmt: skip
    Bad(
        "report-data-cache-garbage",
        ["report", "data", "--cache-dir", "{tmp}/badcache", "--figures-dir", "{tmp}/fig"],
        ["train.h5", "not a readable HDF5"],
        _garbage_cache,
    ),  # fmt: skip
    # manifest names that would leave results/runs
    Bad(
        "campaign-grid-path",
        ["campaign", "--manifest", "{manifest}", "--dry-run"],
        ["gate.tuning_grid", "folder name"],
        _manifest(
            teacher={"model": "tinycnn"},
            gate={"min_margin": 0.1, "tuning_grid": {"cache_dir": ["../../../x"]}},
        ),
    ),  # fmt: skip
]


GROUPS = ("report", "fetch")


def _paths(world: dict, tmp_path: Path) -> dict:
    return {
        "tmp": tmp_path,
        "cache": world["cache"],
        "data": Path(world["cache"]).parent / "data",
        "run": world["run"],
        "results": tmp_path / "results",
        "file": tmp_path / "afile",
        "manifest": tmp_path / "manifest.json",
    }


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_bad_input_is_refused_cleanly(row: Bad, world, tmp_path, monkeypatch):
    if row.skip:
        pytest.skip(row.skip)
    monkeypatch.chdir(tmp_path)  # default (relative) output folders land in the test's folder
    paths = _paths(world, tmp_path)
    if row.setup:
        row.setup(paths)
    expect = [fill(w, paths) for w in row.expect]
    assert_refused(run_cli(row.argv(paths)), expect)


def test_table_covers_every_subcommand():
    """A new subcommand needs at least one row here (or in tests/test_*bad*.py of its owner)."""
    from sleepsound.cli import app

    covered = {r.args[0] for r in ROWS} | {
        f"report {r.args[1]}" for r in ROWS if r.args[0] == "report"
    }
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    missing = commands - covered
    assert not missing, f"subcommands without a bad-input row: {sorted(missing)}"
