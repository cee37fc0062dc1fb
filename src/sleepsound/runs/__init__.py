"""The owner of the results folder's run directories and leaderboard.

Layout and file names (:mod:`.layout`), status/config/metrics files (:mod:`.rundir`), the one
reuse/resume decision (:mod:`.resume`) and the leaderboard (:mod:`.leaderboard`). No other
module spells a run file's name. Importable without torch; imports only config-level modules.
"""

from sleepsound.runs.io import file_sha256, read_json, write_csv, write_json
from sleepsound.runs.layout import (
    BEST_CHECKPOINT,
    CONFIG_FILE,
    LAST_CHECKPOINT,
    LEADERBOARD_FILE,
    METRICS_FILE,
    REQUIRED_FILES,
    STATUS_FILE,
    best_checkpoint,
    config_path,
    epochs_path,
    last_checkpoint,
    leaderboard_file,
    metrics_path,
    run_dir,
    runs_dir,
    status_path,
)
from sleepsound.runs.leaderboard import (
    COLUMNS,
    LeaderboardError,
    ensure_row,
    read_leaderboard,
    reconcile,
    remove_runs,
    run_row,
    upsert_row,
    upsert_run,
)
from sleepsound.runs.resume import Decision, resume_decision
from sleepsound.runs.rundir import (
    environment,
    fresh_run_dir,
    read_config,
    read_metrics,
    remove_temporaries,
    run_status,
    set_status,
    write_config,
    write_env,
    write_epochs,
    write_evaluation,
    write_metrics,
)

__all__ = [
    "BEST_CHECKPOINT", "CONFIG_FILE", "COLUMNS", "LAST_CHECKPOINT", "LEADERBOARD_FILE",
    "METRICS_FILE", "REQUIRED_FILES", "STATUS_FILE", "Decision", "LeaderboardError",
    "best_checkpoint", "config_path", "ensure_row", "environment", "epochs_path", "file_sha256",
    "fresh_run_dir", "last_checkpoint", "leaderboard_file", "metrics_path", "read_config",
    "read_json", "read_leaderboard", "read_metrics", "reconcile", "remove_runs",
    "remove_temporaries", "resume_decision", "run_dir", "run_row", "run_status", "runs_dir",
    "set_status", "status_path", "upsert_row", "upsert_run", "write_config", "write_csv",
    "write_env", "write_epochs", "write_evaluation", "write_json", "write_metrics",
]  # fmt: skip
