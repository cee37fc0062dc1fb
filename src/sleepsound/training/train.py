"""Training one model on the cache: read it top to bottom.

    run_dir = train_run(TrainConfig(model="tinycnn", cache_dir="results/cache/spectrograms"))

Adam, class-weighted cross-entropy (or the distillation loss), early stopping on validation
macro-F1, best and last checkpoints, model selection on validation only, then ONE test
evaluation with the best checkpoint. Each epoch's shuffling comes from (seed, epoch), and
``last.pt`` holds model, optimizer, RNG and early-stopping state, so ``resume=True`` after an
interruption reaches exactly the result of an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sleepsound import runs
from sleepsound.config import TrainConfig
from sleepsound.features.cache import CacheError
from sleepsound.milestones import reached
from sleepsound.models import create_model
from sleepsound.models.inputs import InputSpec
from sleepsound.models.profile import deployment_figures
from sleepsound.progress import progress_bar, say
from sleepsound.taxonomy import default_class_weights
from sleepsound.training.augment import augment_batch, mixed_loss
from sleepsound.training.checkpoint import (
    checkpoint_payload,
    input_spec_of,
    load_checkpoint,
    place,
    save_checkpoint,
)
from sleepsound.training.data import SplitData, share_memory
from sleepsound.training.distill import teacher_checkpoint, teacher_digest, teacher_logits
from sleepsound.training.metrics import classification_metrics, convergence

EVAL_BATCH = 256  # batch size of evaluation passes (no gradients: larger is faster)
AUGMENT_STREAM = 1  # augmentation draws come from their own (seed, epoch, 1) generator
EPOCH_FIELDS = [
    "epoch",
    "lr",
    "train_loss",
    "val_loss",
    "val_acc",
    "val_balanced_acc",
    "val_macro_f1",
    "seconds",
    "samples_per_s",
]


# ----------------------------------------------------------------------------- pieces


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA device on this machine")
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError("--device mps: torch sees no MPS device on this machine")
    return torch.device(name)


def class_weights(spec: str, train: SplitData) -> list[float]:
    """'reference' (1.0/1.5/5.5 on the reference task, else balanced), 'balanced', 'none' or
    explicit numbers; 'balanced' = n / (K * count_k) over the training split."""
    k = len(train.classes)
    if spec == "reference":
        ref = default_class_weights(train.classes)
        spec = "balanced" if ref is None else ",".join(map(str, ref))
    if spec == "none":
        return [1.0] * k
    if spec == "balanced":
        counts = np.bincount(train.labels, minlength=k).astype(float)
        return [float(len(train.labels) / (k * max(c, 1.0))) for c in counts]
    values = [float(w) for w in spec.split(",")]
    if len(values) != k:
        raise ValueError(f"{len(values)} class weights given for {k} classes {train.classes}")
    return values


def epoch_lr(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate of ``epoch`` (1-based): ``cfg.lr`` throughout ("constant"), or with
    "cosine" ``lr * (1 + cos(pi * (epoch - 1) / epochs)) / 2``: ``lr`` in epoch 1, falling to
    ``lr * (1 - cos(pi / epochs)) / 2`` (2.5 % of it at 10 epochs) in the last."""
    if cfg.schedule == "constant":
        return cfg.lr
    return cfg.lr * (1.0 + math.cos(math.pi * (epoch - 1) / cfg.epochs)) / 2.0


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CUDA when asked (``--precision bf16``); a no-op otherwise."""
    enabled = precision == "bf16" and device.type == "cuda"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.inference_mode()
def predict(
    model,
    split: SplitData,
    spec: InputSpec,
    batch_size: int = EVAL_BATCH,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> np.ndarray:
    """Logits [N, K] for every row of the split, in row order."""
    model.eval()
    device = torch.device(device)
    out = np.zeros((len(split), model.config["n_classes"]), dtype=np.float32)
    with autocast(device, precision):
        for batch in split.batches(batch_size, spec, device=device):
            out[batch.index] = model(batch.x).float().cpu().numpy()
    return out


def evaluate(
    model,
    split: SplitData,
    cfg: TrainConfig,
    spec: InputSpec,
    weight: torch.Tensor,
    device: torch.device,
) -> tuple[dict, np.ndarray]:
    batch = max(cfg.batch_size, EVAL_BATCH)
    logits = predict(model, split, spec, batch, device, cfg.precision)
    y = torch.from_numpy(split.labels)
    loss = F.cross_entropy(torch.from_numpy(logits), y, weight=weight.cpu()).item()
    metrics, cm = classification_metrics(split.labels, logits.argmax(1), split.classes)
    metrics["loss"] = loss
    return metrics, cm


def open_split(cfg: TrainConfig, split: str, progress: bool = True, **kwargs) -> SplitData:
    """A split of the run's cache under the run's memory limit."""
    path = Path(cfg.cache_dir) / f"{split}.h5"
    return SplitData(path, memory_limit=cfg.memory_limit, progress=progress, **kwargs)


def load_splits(cfg: TrainConfig, progress: bool = True) -> tuple[SplitData, SplitData]:
    train = open_split(cfg, "train", progress)
    val = open_split(cfg, "validation", progress)
    share_memory([train, val], cfg.memory_limit)  # held at the same time
    for other in (val,):
        if other.classes != train.classes or other.n_channels != train.n_channels:
            raise CacheError(
                f"{other.path}: classes/channels {other.classes}/{other.n_channels} differ from "
                f"{train.path}: {train.classes}/{train.n_channels}"
            )
    return train, val


# ----------------------------------------------------------------------------- the run


def train_run(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train, select on validation, test once, write every artifact; returns the run dir."""
    t_start = time.perf_counter()
    run_name = cfg.run_name or cfg.default_run_name()
    run_dir = runs.run_dir(cfg.results_dir, run_name)
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    train, val = load_splits(cfg, progress)
    classes = train.classes
    weights = class_weights(cfg.class_weights, train)
    weight = torch.tensor(weights, dtype=torch.float32, device=device)

    try:
        model = create_model(
            cfg.model, len(classes), in_channels=train.n_channels, **cfg.model_kwargs
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"--model-kwargs {cfg.model_kwargs} for {cfg.model}: {exc}") from None
    place(model, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    resolved = {
        **cfg.model_dump(mode="json"),
        "run_name": run_name,
        "classes": list(classes),
        "n_channels": train.n_channels,
        "channels": train.info.attrs.get("channels", "mean"),
        "class_weight_values": weights,
        "input_spec": train.fit_spec(cfg.frames, cfg.bucket_frames).to_dict(),
        "data_source": train.info.source,
        "cache_fingerprints": {s.path.stem: s.fingerprint for s in (train, val)},
    }
    spec = InputSpec.from_dict(resolved["input_spec"])
    teacher = None
    if cfg.is_distillation:
        teacher, store, reused = teacher_logits(
            cfg.teacher_run,
            train,
            Path(cfg.results_dir) / "cache" / "teacher_logits",
            predict,
            device=device,
        )
        resolved["teacher_checkpoint"] = str(teacher_checkpoint(cfg.teacher_run))
        resolved["teacher_logits"] = str(store)
        say(f"teacher logits {'reused from' if reused else 'stored in'} {store}")
        teacher = torch.from_numpy(teacher).to(device)

    # -- state: fresh, or resumed from last.pt
    state = {
        "epoch": 0,
        "best_f1": -1.0,
        "best_epoch": 0,
        "bad_epochs": 0,
        "history": [],
        "stopped_early": False,
        "train_seconds": 0.0,
        "train_samples": 0,
    }
    last_path = runs.last_checkpoint(run_dir)
    if resume:
        decision = runs.resume_decision(
            run_dir,
            {**cfg.model_dump(mode="json"), "run_name": run_name},
            resolved["cache_fingerprints"],
            teacher_digest(cfg.teacher_run) if cfg.is_distillation else None,
        )
        if decision.state == "changed":
            raise ValueError(
                f"{run_dir}: cannot resume, {decision.reason}; drop --resume to train it "
                "afresh, or give another --run-name"
            )
        if decision.state == "complete":
            if runs.ensure_row(run_dir):
                say(f"{run_dir}: complete; its missing leaderboard row was added")
            say(f"{run_dir}: already complete")
            return run_dir
        if decision.state == "restart":
            say(f"{run_dir}: {decision.reason}: training from the start")
        resume = decision.state == "resumable"
    if resume:
        runs.remove_temporaries(run_dir)
        ckpt = load_checkpoint(last_path)
        missing = [k for k in ("state_dict", "optimizer", "torch_rng", "state") if k not in ckpt]
        if missing:
            raise ValueError(f"{last_path}: cannot resume, the checkpoint lacks {missing}")
        try:
            model.load_state_dict(ckpt["state_dict"])
            optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise ValueError(f"{last_path}: does not fit this model ({first})") from None
        torch.set_rng_state(ckpt["torch_rng"])
        state = ckpt["state"]
        runs.set_status(run_dir, "running")
        say(f"{run_dir}: resuming after epoch {state['epoch']}")
    else:
        runs.fresh_run_dir(run_dir)
        runs.write_config(run_dir, resolved)
        runs.write_env(run_dir, str(device))

    def payload(**extra):
        return checkpoint_payload(model, classes, spec, **extra)

    mode = train.hold(spec, device)
    say(
        f"training {run_name}: {cfg.model} on {len(train)} clips, classes {list(classes)}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, device {device}, "
        f"data {mode} ({train.prepared_bytes() / 1e6:,.0f} MB as float32; its share of the "
        f"memory limit {train.memory_limit / 1e6:,.0f} MB)"
    )

    # -- the loop
    while state["epoch"] < cfg.epochs and not state["stopped_early"]:
        epoch = state["epoch"] + 1
        model.train()
        rng = np.random.default_rng([cfg.seed, epoch])
        aug_rng = np.random.default_rng([cfg.seed, epoch, AUGMENT_STREAM])
        lr = epoch_lr(cfg, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        t0, total_loss, seen = time.perf_counter(), 0.0, 0
        with progress_bar(
            f"{run_name} epoch {epoch}/{cfg.epochs}", len(train), enabled=progress
        ) as advance:
            for batch in train.batches(cfg.batch_size, spec, rng, device):
                x, mix = augment_batch(batch.x, cfg.augment, spec.scale, aug_rng)
                t_logits = None if teacher is None else teacher[batch.index]
                with autocast(device, cfg.precision):
                    logits = model(x)
                loss = mixed_loss(
                    logits.float(), batch.y, weight, mix, t_logits, cfg.alpha, cfg.tau
                )
                if not torch.isfinite(loss):
                    runs.set_status(run_dir, "failed", reason=f"non-finite loss in epoch {epoch}")
                    raise ValueError(
                        f"{run_dir}: training diverged (loss {loss.item()} in epoch {epoch}); "
                        "the run is marked failed (try a lower --lr or --grad-clip)"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                total_loss += loss.item() * len(batch.y)
                seen += len(batch.y)
                advance(len(batch.y))
        seconds = time.perf_counter() - t0
        val_metrics, _ = evaluate(model, val, cfg, spec, weight, device)
        row = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": total_loss / seen,
            "val_loss": val_metrics["loss"],
            "val_acc": val_metrics["acc"],
            "val_balanced_acc": val_metrics["balanced_acc"],
            "val_macro_f1": val_metrics["macro_f1"],
            "seconds": seconds,
            "samples_per_s": seen / seconds,
        }
        state["history"].append(row)
        state["train_seconds"] += seconds
        state["train_samples"] += seen
        state["epoch"] = epoch
        if val_metrics["macro_f1"] > state["best_f1"]:
            state.update(best_f1=val_metrics["macro_f1"], best_epoch=epoch, bad_epochs=0)
            save_checkpoint(runs.best_checkpoint(run_dir), payload(epoch=epoch))
        else:
            state["bad_epochs"] += 1
            state["stopped_early"] = state["bad_epochs"] >= cfg.patience
        save_checkpoint(
            last_path,
            payload(optimizer=optimizer.state_dict(), torch_rng=torch.get_rng_state(), state=state),
        )
        runs.write_epochs(run_dir, EPOCH_FIELDS, state["history"])
        reached("train.epoch_saved", run_dir=run_dir, epoch=epoch)
        say(
            f"{run_name} epoch {epoch}: train loss {row['train_loss']:.4f}, val macro-F1 "
            f"{row['val_macro_f1']:.4f} (best {state['best_f1']:.4f} @ {state['best_epoch']}), "
            f"{row['samples_per_s']:.0f} samples/s"
        )

    train.release()  # the final evaluation holds validation, then test, not training data
    val.release()
    return finish_run(run_dir, cfg, resolved, state, weight, device, time.perf_counter() - t_start)


def finish_run(
    run_dir: Path,
    cfg: TrainConfig,
    resolved: dict,
    state: dict,
    weight: torch.Tensor,
    device: torch.device,
    seconds: float,
) -> Path:
    """Best checkpoint -> validation and the single test evaluation -> every artifact."""
    from sleepsound.training.checkpoint import load_model

    best_path = runs.best_checkpoint(run_dir)
    model, _ = load_model(best_path)
    place(model, device)
    val = open_split(cfg, "validation", progress=False)
    test = open_split(cfg, "test", expect={"classes": val.info.attrs["classes"]})
    spec = InputSpec.from_dict(resolved["input_spec"])
    val_metrics, val_cm = evaluate(model, val, cfg, spec, weight, device)
    val.release()
    test_metrics, test_cm = evaluate(model, test, cfg, spec, weight, device)
    classes = resolved["classes"]
    runs.write_evaluation(run_dir, "validation", val_metrics, val_cm, classes)
    runs.write_evaluation(run_dir, "test", test_metrics, test_cm, classes)
    deploy = deployment_figures(model.cpu().to(memory_format=torch.contiguous_format), n_runs=100)
    deploy["checkpoint_bytes"] = best_path.stat().st_size
    metrics = {
        "run_name": resolved["run_name"],
        "validation": val_metrics,
        "test": test_metrics,
        "collapsed": {"validation": val_metrics["collapsed"], "test": test_metrics["collapsed"]},
        "epochs_ran": state["epoch"],
        "best_epoch": state["best_epoch"],
        "early_stopping": {
            "patience": cfg.patience,
            "bad_epochs": state["bad_epochs"],
            "stopped_early": state["stopped_early"],
            "convergence": convergence(state["history"], state["stopped_early"]),
        },
        "duration_s": seconds,
        "train_seconds": state["train_seconds"],
        "train_samples_per_s": state["train_samples"] / max(state["train_seconds"], 1e-9),
        "deployment": deploy,
    }
    if cfg.is_distillation:
        teacher_model, _ = load_model(teacher_checkpoint(cfg.teacher_run))
        t_params = sum(p.numel() for p in teacher_model.parameters())
        metrics["teacher"] = {
            "run": str(cfg.teacher_run),
            "alpha": cfg.alpha,
            "tau": cfg.tau,
            "params": t_params,
            "compression_ratio": t_params / deploy["params"],
        }
    if val_metrics["collapsed"]:
        say(f"[bold red]warning[/]: {run_dir.name} predicts a single class on validation")
    runs.write_metrics(run_dir, metrics)
    reached("train.metrics_written", run_dir=run_dir)
    runs.set_status(run_dir, "complete")
    reached("train.status_complete", run_dir=run_dir)
    runs.upsert_run(run_dir)
    say(
        f"{run_dir.name}: test macro-F1 {test_metrics['macro_f1']:.4f}, acc "
        f"{test_metrics['acc']:.4f} (best epoch {state['best_epoch']}/{state['epoch']}), "
        f"{metrics['train_samples_per_s']:.0f} train samples/s, {seconds:.0f} s -> {run_dir}"
    )
    return run_dir


def _saved_run(run_dir: Path, split: str, cache_dir: Path | None):
    """(config, resolved config, model, its input spec, the split) of a finished run."""
    from sleepsound.training.checkpoint import load_model

    resolved = runs.read_config(run_dir)
    cfg = TrainConfig(**{k: v for k, v in resolved.items() if k in TrainConfig.model_fields})
    if cache_dir is not None:
        cfg = cfg.model_copy(update={"cache_dir": Path(cache_dir)})
    ckpt_path = runs.best_checkpoint(run_dir)
    model, ckpt = load_model(ckpt_path)
    place(model, torch.device("cpu"))
    data = open_split(cfg, split, progress=False)
    if tuple(ckpt["classes"]) != data.classes:
        raise CacheError(
            f"{data.path}: classes {list(data.classes)} differ from the run's {ckpt['classes']}"
        )
    return cfg, resolved, model, input_spec_of(ckpt, ckpt_path), data


def evaluate_run(run_dir: Path, split: str = "test", cache_dir: Path | None = None) -> dict:
    """Re-evaluate a saved run's best checkpoint on a split."""
    cfg, resolved, model, spec, data = _saved_run(run_dir, split, cache_dir)
    weight = torch.tensor(resolved["class_weight_values"], dtype=torch.float32)
    metrics, _ = evaluate(model, data, cfg, spec, weight, torch.device("cpu"))
    return metrics


def run_logits(
    run_dir: Path, split: str = "validation", cache_dir: Path | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(logits [N, K] float32, labels [N], classes) of a finished run's best checkpoint on a
    split of its cache (or ``cache_dir``): what operating points are chosen from."""
    cfg, _, model, spec, data = _saved_run(run_dir, split, cache_dir)
    return predict(model, data, spec), data.labels, data.classes
