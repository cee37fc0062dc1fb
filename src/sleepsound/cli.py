"""The ``sleepsound`` command line: a thin layer over the library.

Options left unset fall back to the defaults in :mod:`sleepsound.config` (the only place they
live); the CLI passes on only what the user set.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from sleepsound.config import DEFAULT_CACHE_DIR, DEFAULT_DATA_DIR, NOTEBOOKS_DIR, RESULTS_DIR

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])
report_app = typer.Typer(no_args_is_help=True, help="Execute a report notebook, save figures.")
fetch_app = typer.Typer(no_args_is_help=True, help="Download a public dataset.")
app.add_typer(report_app, name="report")
app.add_typer(fetch_app, name="fetch")
out = Console()


def _set(**kwargs) -> dict:
    """Only the options the user actually gave."""
    return {k: v for k, v in kwargs.items() if v is not None}


def _message(err: Exception) -> str:
    """The text after ``error:``; pydantic errors become ``--option: reason`` (one line)."""
    from pydantic import ValidationError

    if isinstance(err, ValidationError):
        parts = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"] if p != "__root__")
            option = "--" + loc.replace("_", "-") if loc else "options"
            parts.append(f"{option}: {e['msg'].removeprefix('Value error, ')}")
        return "; ".join(parts)
    first, *rest = [line.strip() for line in str(err).splitlines() if line.strip()] or [""]
    return first + (": " + "; ".join(rest) if rest else "")  # one line, whatever the message


def _fail(err: Exception) -> None:
    from rich.markup import escape

    Console(stderr=True, soft_wrap=True).print(
        f"[bold red]error:[/] {escape(_message(err))}", highlight=False
    )
    raise typer.Exit(2)


def _out_folder(path: Path, option: str) -> Path:
    """``path`` if it is a folder or can become one; ValueError naming ``option`` otherwise."""
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{option} {path}: {parent} exists and is not a folder")
            break
    return path


# ----------------------------------------------------------------------------- data


@app.command()
def synth(
    out_dir: Path = typer.Option(DEFAULT_DATA_DIR, "--out", help="Output folder."),
    clips: int | None = typer.Option(None, help="Number of clips (all splits, all labels)."),
    seed: int = typer.Option(0, help="Random seed: the same seed gives the same files."),
    night: float | None = typer.Option(
        None, help="Instead of clips, write one night recording of this many hours."
    ),
) -> None:
    """Write the embedded synthetic earable dataset (DreamCatcher layout) or a synthetic night."""
    from sleepsound.data import synth as gen

    try:
        _out_folder(out_dir, "--out")
        _check_synth_options(clips, seed, night)
        if night is not None:
            info = gen.generate_night(out_dir, hours=night, seed=seed)
            out.print(f"night of {night} h -> {out_dir} ({info.get('n_events', '?')} events)")
            return
        info = gen.generate_dataset(out_dir, **_set(n_clips=clips), seed=seed)
    except (ValueError, OSError) as err:
        _fail(err)
    out.print(f"{info['n_clips']} clips -> {out_dir}")


MAX_NIGHT_HOURS = 18.0  # a WAV holds 4 GiB: 18.6 h of 2-channel 16-bit audio at 16 kHz


def _check_synth_options(clips: int | None, seed: int, night: float | None) -> None:
    """ValueError naming the option for a value ``synth`` cannot use."""
    if clips is not None and clips < 1:
        raise ValueError(f"--clips {clips}: must be at least 1")
    if seed < 0:
        raise ValueError(f"--seed {seed}: must be a non-negative integer")
    if night is not None and not 0 < night <= MAX_NIGHT_HOURS:  # NaN fails this too
        raise ValueError(f"--night {night}: must be a number of hours in (0, {MAX_NIGHT_HOURS:g}]")


@app.command()
def preprocess(
    data: Path = typer.Option(DEFAULT_DATA_DIR, "--data", help="Audio folder {split}/{label}/."),
    cache_dir: Path = typer.Option(DEFAULT_CACHE_DIR, "--cache-dir"),
    splits: str | None = typer.Option(None, help="Comma list, default all three."),
    classes: str | None = typer.Option(None, help="Task classes, default quiet,breathe,snore."),
    channels: str | None = typer.Option(None, help="mean | in_ear | outer | both."),
    workers: int | None = typer.Option(None, help="Processes, default all cores."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Reuse valid caches."),
    invalid_audio: str | None = typer.Option(None, help="skip (default) | error."),
) -> None:
    """Audio folder -> HDF5 log-mel cache ({split}.h5), resumable and validated."""
    from sleepsound.config import PreprocessConfig
    from sleepsound.features.cache import preprocess as run

    try:
        _out_folder(cache_dir, "--cache-dir")
        if data.exists() and not data.is_dir():
            raise ValueError(f"--data {data}: not a folder")
        cfg = PreprocessConfig(
            data_dir=data,
            cache_dir=cache_dir,
            skip_existing=skip_existing,
            **_set(
                splits=_split_names(splits) if splits is not None else None,
                classes=classes,
                channels=channels,
                workers=workers,
                invalid_audio=invalid_audio,
            ),
        )
        results = run(cfg)
    except (ValueError, OSError) as err:
        _fail(err)
    total = sum(r.n_clips + r.n_invalid for r in results if not r.reused)
    seconds = sum(r.seconds for r in results if not r.reused)
    if total:
        out.print(f"preprocessed {total} files in {seconds:.1f} s: {total / seconds:.0f} clips/s")


def _split_names(text: str) -> tuple[str, ...]:
    """``--splits`` as a tuple: each one of train, validation, test, none twice."""
    from sleepsound.data.audio import SPLITS

    names = tuple(text.split(","))
    for name in names:
        if name not in SPLITS:
            raise ValueError(f"--splits: {name!r} is not a split (expected {', '.join(SPLITS)})")
    if len(set(names)) < len(names):
        raise ValueError(f"--splits {text}: a split is named twice")
    return names


@fetch_app.command("dreamcatcher")
def fetch_dreamcatcher(
    revision: str | None = typer.Option(None, help="Hub revision, default the pinned one."),
    splits: str | None = typer.Option(None, help="Comma list, default all three."),
    out_dir: Path = typer.Option(Path("data") / "dreamcatcher", "--out"),
) -> None:
    """Fetch the gated DreamCatcher audio archives, verify and extract them safely."""
    from sleepsound.data import fetch

    try:
        result = fetch.fetch_dreamcatcher(
            out_dir, **_set(revision=revision, splits=tuple(splits.split(",")) if splits else None)
        )
    except fetch.FetchError as err:
        _fail(err)
    except Exception as err:  # archive errors and the like: message names the member
        _fail(err)
    if result.already_present:
        out.print(f"everything already present in {out_dir}: nothing to do")


# ----------------------------------------------------------------------------- training


def _train_config(**kwargs):
    from sleepsound.config import TrainConfig

    for key in ("model_kwargs", "augment"):
        text = kwargs.pop(key, None)
        if text:
            try:
                kwargs[key] = json.loads(text)
            except json.JSONDecodeError as exc:
                option = "--" + key.replace("_", "-")
                raise ValueError(f"{option} {text!r}: not JSON ({exc.msg})") from None
    return TrainConfig(**_set(**kwargs))


_TRAIN_OPTIONS = dict(
    cache_dir=typer.Option(DEFAULT_CACHE_DIR, "--cache-dir"),
    run_name=typer.Option(None, help="Default: model, kwargs and seed."),
    model_kwargs=typer.Option(None, help='JSON, e.g. \'{"r": 8, "k": 3}\'.'),
    epochs=typer.Option(None),
    batch_size=typer.Option(None),
    lr=typer.Option(None),
    weight_decay=typer.Option(None),
    grad_clip=typer.Option(None, help="Max gradient norm, 0 = off."),
    class_weights=typer.Option(None, help="reference | balanced | none | 1.0,1.5,5.5"),
    patience=typer.Option(None),
    schedule=typer.Option(None, help="constant (reference) | cosine (lr decays to ~0)"),
    seed=typer.Option(None),
    device=typer.Option(None, help="auto | cpu | cuda | mps"),
    frames=typer.Option(None, help="bucket (crop padding) | full (all 501 frames)"),
    memory_limit=typer.Option(
        None, help="Most RAM the data path may hold, e.g. 2GB (>= 32MB). Default: 1/4 of RAM."
    ),
    precision=typer.Option(None, help="fp32 | bf16 (autocast, CUDA only)"),
    augment=typer.Option(
        None,
        help='JSON, e.g. \'{"time_masks": 2, "freq_masks": 2, "mixup_alpha": 0.2, "gain_db": 6}\'.',
    ),
    results_dir=typer.Option(RESULTS_DIR, "--results-dir"),
    resume=typer.Option(False, "--resume", help="Continue from the last checkpoint."),
)


@app.command()
def train(
    model: str = typer.Option(..., help="tinycnn | crnn | tinycnn_cbam"),
    cache_dir: Path = _TRAIN_OPTIONS["cache_dir"],
    run_name: str | None = _TRAIN_OPTIONS["run_name"],
    model_kwargs: str | None = _TRAIN_OPTIONS["model_kwargs"],
    epochs: int | None = _TRAIN_OPTIONS["epochs"],
    batch_size: int | None = _TRAIN_OPTIONS["batch_size"],
    lr: float | None = _TRAIN_OPTIONS["lr"],
    weight_decay: float | None = _TRAIN_OPTIONS["weight_decay"],
    grad_clip: float | None = _TRAIN_OPTIONS["grad_clip"],
    class_weights: str | None = _TRAIN_OPTIONS["class_weights"],
    patience: int | None = _TRAIN_OPTIONS["patience"],
    schedule: str | None = _TRAIN_OPTIONS["schedule"],
    seed: int | None = _TRAIN_OPTIONS["seed"],
    device: str | None = _TRAIN_OPTIONS["device"],
    frames: str | None = _TRAIN_OPTIONS["frames"],
    memory_limit: str | None = _TRAIN_OPTIONS["memory_limit"],
    precision: str | None = _TRAIN_OPTIONS["precision"],
    augment: str | None = _TRAIN_OPTIONS["augment"],
    results_dir: Path = _TRAIN_OPTIONS["results_dir"],
    resume: bool = _TRAIN_OPTIONS["resume"],
) -> None:
    """Train one model on the cache; writes results/runs/<run_name>/ and a leaderboard row."""
    from sleepsound.training.train import train_run

    options = {k: v for k, v in locals().items() if k not in ("resume", "train_run")}
    try:
        train_run(_train_config(**options), resume=resume)
    except (ValueError, OSError) as err:
        _fail(err)


@app.command()
def distill(
    teacher_run: Path = typer.Option(..., "--teacher-run", help="Run dir of the teacher."),
    student: str = typer.Option(..., help="Student model name."),
    alpha: float = typer.Option(..., help="Weight of the distillation term."),
    tau: float = typer.Option(..., help="Temperature."),
    cache_dir: Path = _TRAIN_OPTIONS["cache_dir"],
    run_name: str | None = _TRAIN_OPTIONS["run_name"],
    model_kwargs: str | None = _TRAIN_OPTIONS["model_kwargs"],
    epochs: int | None = _TRAIN_OPTIONS["epochs"],
    batch_size: int | None = _TRAIN_OPTIONS["batch_size"],
    lr: float | None = _TRAIN_OPTIONS["lr"],
    weight_decay: float | None = _TRAIN_OPTIONS["weight_decay"],
    grad_clip: float | None = _TRAIN_OPTIONS["grad_clip"],
    class_weights: str | None = _TRAIN_OPTIONS["class_weights"],
    patience: int | None = _TRAIN_OPTIONS["patience"],
    schedule: str | None = _TRAIN_OPTIONS["schedule"],
    seed: int | None = _TRAIN_OPTIONS["seed"],
    device: str | None = _TRAIN_OPTIONS["device"],
    frames: str | None = _TRAIN_OPTIONS["frames"],
    memory_limit: str | None = _TRAIN_OPTIONS["memory_limit"],
    precision: str | None = _TRAIN_OPTIONS["precision"],
    augment: str | None = _TRAIN_OPTIONS["augment"],
    results_dir: Path = _TRAIN_OPTIONS["results_dir"],
    resume: bool = _TRAIN_OPTIONS["resume"],
) -> None:
    """Distil a teacher run into a student (teacher logits computed once and stored)."""
    from sleepsound.training.train import train_run

    options = {k: v for k, v in locals().items() if k not in ("resume", "train_run", "student")}
    try:
        train_run(_train_config(model=student, **options), resume=resume)
    except (ValueError, OSError) as err:
        _fail(err)


@app.command()
def evaluate(
    run: Path = typer.Option(..., "--run", help="Run directory."),
    split: str = typer.Option("test"),
    cache_dir: Path | None = typer.Option(None, "--cache-dir"),
) -> None:
    """Re-evaluate a saved run's best checkpoint on a split."""
    from sleepsound.training.train import evaluate_run

    try:
        m = evaluate_run(run, split, cache_dir)
    except (ValueError, OSError) as err:
        _fail(err)
    table = Table(title=f"{run.name} on {split}")
    for key in ("loss", "acc", "balanced_acc", "macro_f1", "macro_precision", "macro_recall"):
        table.add_row(key, f"{m[key]:.4f}")
    out.print(table)
    out.print(json.dumps(m["per_class"], indent=1))


LEADERBOARD_VIEW = ["run_name", "params", "val_macro_f1", "test_macro_f1", "test_acc",
                    "latency_median_ms", "epochs_ran", "duration_s", "collapsed"]  # fmt: skip


@app.command()
def leaderboard(results_dir: Path = typer.Option(RESULTS_DIR, "--results-dir")) -> None:
    """Print the leaderboard as a table, best test macro-F1 first (complete runs missing from it
    are added first)."""
    from sleepsound import runs

    path = runs.leaderboard_file(results_dir)
    try:
        _out_folder(results_dir, "--results-dir")
        added = runs.reconcile(results_dir)
        rows = runs.read_leaderboard(path)
    except (ValueError, OSError) as err:
        _fail(err)
    if added:
        out.print(f"added {len(added)} complete run(s) missing from {path}: {', '.join(added)}")
    if not rows:
        _fail(FileNotFoundError(f"{path}: no finished runs yet"))
    rows.sort(key=lambda r: -_number(r["test_macro_f1"]))
    table = Table(title=f"{path} ({rows[0]['data_source']})")
    for col in LEADERBOARD_VIEW:
        table.add_column(col, justify="left" if col == "run_name" else "right")
    for r in rows:
        table.add_row(*[_fmt(r[c]) for c in LEADERBOARD_VIEW])
    out.print(table)


def _number(value: str) -> float:
    """A leaderboard cell as a number; empty cells sort last."""
    return float(value) if value not in ("", None) else float("-inf")


def _fmt(value: str) -> str:
    try:
        f = float(value)
    except ValueError:
        return value
    return f"{f:,.0f}" if f.is_integer() and abs(f) >= 10 else f"{f:.4g}"


# ----------------------------------------------------------------------------- reports


@report_app.command("data")
def report_data(
    cache_dir: Path = typer.Option(DEFAULT_CACHE_DIR, "--cache-dir"),
    figures_dir: Path = typer.Option(RESULTS_DIR / "figures", "--figures-dir"),
) -> None:
    """Execute notebooks/data_story.ipynb against the cache; figures -> results/figures/."""
    from sleepsound.data.audio import SPLITS
    from sleepsound.features.cache import validate_cache
    from sleepsound.reports.notebook import NotebookError, run_notebook

    try:
        _out_folder(figures_dir, "--figures-dir")
        if not cache_dir.is_dir():
            raise ValueError(f"--cache-dir {cache_dir}: not a folder (run sleepsound preprocess)")
        for split in SPLITS:  # the notebook needs train and uses the others when present
            if split == "train" or (cache_dir / f"{split}.h5").exists():
                validate_cache(cache_dir / f"{split}.h5")
        result = run_notebook(
            NOTEBOOKS_DIR / "data_story.ipynb",
            figures_dir,
            executed_path=RESULTS_DIR / "reports" / "data_story.ipynb",
            env={"SLEEPSOUND_CACHE_DIR": str(cache_dir.resolve())},
        )
    except (NotebookError, ValueError, OSError) as err:
        _fail(err)
    out.print(
        f"data story: {len(result.figures)} figures in {figures_dir} "
        f"({result.seconds:.0f} s); executed notebook {result.executed_path}"
    )


@report_app.command("results")
def report_results(
    results_dir: Path = typer.Option(RESULTS_DIR, "--results-dir"),
    campaign: str | None = typer.Option(None, help="Campaign name; default the latest."),
) -> None:
    """Execute notebooks/results_analysis.ipynb on the artifacts; writes results/report.md."""
    from sleepsound.reports.notebook import NotebookError
    from sleepsound.reports.results import report_results as run

    try:
        _out_folder(results_dir, "--results-dir")
        path = run(results_dir, campaign=campaign)
    except (NotebookError, ValueError, OSError) as err:
        _fail(err)
    out.print(f"results report -> {path}")


# ----------------------------------------------------------------------------- campaign


@app.command()
def campaign(
    manifest: Path = typer.Option(..., "--manifest", help="Campaign manifest (JSON)."),
    resume: bool = typer.Option(False, "--resume", help="Skip runs whose artifacts validate."),
    fresh_start: bool = typer.Option(False, "--fresh-start", help="Delete earlier results."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan only."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Override the manifest's."),
    results_dir: Path | None = typer.Option(None, "--results-dir", help="Override."),
    executor: str | None = typer.Option(
        None, "--executor", help="local (default: one run after another) or ray (in parallel)."
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="Local: runs at once in worker processes (default 1)."
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster: auto or HOST:PORT (default: a local instance)."
    ),
    cpus_per_run: float | None = typer.Option(None, "--cpus-per-run", help="Ray: CPUs per run."),
    gpus_per_run: float | None = typer.Option(
        None, "--gpus-per-run", help="Ray: GPUs per run (0.25: four runs share one GPU)."
    ),
    retries: int | None = typer.Option(None, "--retries", help="Ray: retries of a failed run."),
    memory_limit: str | None = typer.Option(
        None, "--memory-limit", help="Most RAM each run's data path may hold, e.g. 8GB."
    ),
) -> None:
    """Run a campaign: phase 1, the teacher gate, phase 2 (distillation), over seeds.

    Exits 1 naming the failed runs when any run failed (the others are complete)."""
    from sleepsound.campaign.manifest import ManifestError
    from sleepsound.campaign.runner import CampaignError, run_campaign

    if resume and fresh_start:
        _fail(ValueError("--resume and --fresh-start exclude each other"))
    overrides = _set(
        kind=executor, workers=workers, address=address, cpus_per_run=cpus_per_run,
        gpus_per_run=gpus_per_run, retries=retries,
    )  # fmt: skip
    try:
        for folder, option in ((results_dir, "--results-dir"), (cache_dir, "--cache-dir")):
            if folder is not None:
                _out_folder(folder, option)
        result = run_campaign(
            manifest,
            resume=resume,
            fresh_start=fresh_start,
            dry_run=dry_run,
            cache_dir=cache_dir,
            results_dir=results_dir,
            executor=overrides,
            memory_limit=memory_limit,
        )
    except (ManifestError, CampaignError, ValueError, OSError) as err:
        _fail(err)
    failed = result.failed_runs()
    if failed:
        Console(stderr=True, soft_wrap=True).print(
            f"[bold red]{len(failed)} run(s) failed:[/] {', '.join(failed)}", highlight=False
        )
        raise typer.Exit(1)


# ----------------------------------------------------------------------------- deployment


def resolve_run(spec: str, results_dir: Path = RESULTS_DIR) -> Path:
    """A run directory, or ``best`` / ``best-student``: the finished run with the highest
    VALIDATION macro-F1 (students: fewer parameters than the largest model on the board)."""
    from sleepsound import runs

    if spec not in ("best", "best-student"):
        return Path(spec)
    path = runs.leaderboard_file(results_dir)
    runs.reconcile(results_dir)
    rows = [
        r
        for r in runs.read_leaderboard(path)
        if r["collapsed"] != "True" and r["params"] and r["val_macro_f1"]
    ]
    if spec == "best-student" and rows:
        largest = max(float(r["params"]) for r in rows)
        rows = [r for r in rows if float(r["params"]) < largest] or rows
    if not rows:
        raise FileNotFoundError(f"{path}: no finished run to pick")
    best = max(rows, key=lambda r: float(r["val_macro_f1"]))
    out.print(f"{spec}: {best['run_name']} (validation macro-F1 {float(best['val_macro_f1']):.4f})")
    return Path(best["run_dir"])


@app.command()
def export(
    run: str = typer.Option(..., "--run", help="Run directory, or best / best-student."),
    fmt: str = typer.Option("onnx", "--format", help="onnx"),
    int8: bool = typer.Option(False, "--int8", help="Also an int8-quantised model."),
    out_dir: Path | None = typer.Option(None, "--out", help="Default results/export/<run>."),
    results_dir: Path = typer.Option(RESULTS_DIR, "--results-dir"),
    operating_point: list[str] = typer.Option(
        [],
        "--operating-point",
        help="far=2/h or recall=0.9: thresholds chosen on validation, stored in the card "
        "(repeatable).",
    ),
) -> None:
    """Export a run to ONNX (dynamic time axis), check parity, measure latency and F1."""
    from sleepsound.deploy.export import compare_variants, export_run
    from sleepsound.deploy.operating import canonical

    if fmt != "onnx":
        _fail(ValueError(f"--format {fmt}: only onnx is supported"))
    try:
        points = [canonical(p) for p in operating_point]
        run_dir = resolve_run(run, results_dir)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"--run {run}: no such run directory")
        out_dir = out_dir or results_dir / "export" / run_dir.name
        _out_folder(out_dir, "--out")
        result = export_run(run_dir, out_dir, int8=int8, operating_points=points)
        rows = compare_variants(run_dir, result)
    except (ValueError, OSError) as err:
        _fail(err)
    table = Table(title=f"{run_dir.name}: batch 1, one 5 s clip, single thread")
    for col in rows[0]:
        table.add_column(col)
    for r in rows:
        table.add_row(*[_fmt(str(v)) for v in r.values()])
    out.print(table)
    out.print(f"exported -> {out_dir}")


@app.command()
def detect(
    recording: Path = typer.Argument(
        ..., help="Audio file of any length (a whole night), or a folder of nights."
    ),
    model: str = typer.Option(..., help="Run dir, model.onnx, or best / best-student."),
    window: float = typer.Option(5.0, help="Window length, seconds."),
    hop: float = typer.Option(1.0, help="Hop between windows, seconds."),
    out_dir: Path = typer.Option(RESULTS_DIR / "detect", "--out"),
    truth: Path | None = typer.Option(
        None, help="Ground-truth events.csv to score against (single recording)."
    ),
    operating_point: str | None = typer.Option(
        None,
        "--operating-point",
        help="far=2/h or recall=0.9: per-class thresholds chosen on validation (default argmax).",
    ),
    results_dir: Path = typer.Option(RESULTS_DIR, "--results-dir"),
) -> None:
    """Stream a recording (or every recording of a folder) through a model: events, screening
    summary, hourly table, scores, interactive HTML report; a cohort table for a folder."""
    from sleepsound.deploy.cohort import detect_folder
    from sleepsound.deploy.detect import detect as run
    from sleepsound.deploy.events import EventsFileError
    from sleepsound.deploy.operating import canonical

    try:
        if operating_point is not None:
            canonical(operating_point)
        source = Path(model)
        if model in ("best", "best-student"):
            run_dir = resolve_run(model, results_dir)
            onnx = results_dir / "export" / run_dir.name / "model.onnx"
            source = onnx if onnx.is_file() else run_dir
        _out_folder(out_dir, "--out")
        if recording.is_dir():
            if truth is not None:
                raise ValueError("--truth: a folder of nights takes its truth files beside them")
            outcomes = detect_folder(
                recording, source, out_dir, operating_point, window=window, hop=hop
            )
            failed = [o for o in outcomes if o.status == "error"]
            out.print(
                f"{len(outcomes) - len(failed)} of {len(outcomes)} nights reported -> "
                f"{out_dir}/cohort.csv"
            )
            if failed:
                raise typer.Exit(2)
            return
        run(
            recording,
            source,
            window=window,
            hop=hop,
            out_dir=out_dir,
            truth=truth,
            operating_point=operating_point,
        )
    except (ValueError, OSError, EventsFileError) as err:
        _fail(err)
