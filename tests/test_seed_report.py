"""A short real multi-seed campaign -> the report's seed table, its comparisons and escaping.

One module-scoped fixture runs a real campaign (:func:`sleepsound.campaign.run_campaign`) on
the tiny tone cache: TinyCNN plain and with augmentation (set through the manifest's
``overrides``), three seeds each, one epoch. The tests recompute spreads and 95 % intervals
from each run's metrics.json with scipy and compare them with the report's.
"""

from __future__ import annotations

import json
import math
import shutil

import nbformat
import numpy as np
import pytest
from scipy import stats

from sleepsound.campaign import campaign_dir, load_manifest, run_campaign
from sleepsound.reports import load as L
from sleepsound.reports import results as R
from sleepsound.reports import tables as T
from sleepsound.reports import takeaways as K
from sleepsound.reports.markdown import escape_md

SEEDS = [1, 2, 3]
AUGMENT = {"time_masks": 1, "time_mask_frames": 5, "gain_db": 3}
EVIL = "<script>alert(1)</script> [click](javascript:x) **bold** $x$ | pipe"


@pytest.fixture(scope="module")
def campaign(tone_cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("seed_report")
    manifest = {
        "name": "seeds",
        "cache_dir": str(tone_cache),
        "results_dir": str(root / "results"),
        "seeds": SEEDS,
        "train": {"epochs": 1, "batch_size": 8, "lr": 0.003, "threads": 1, "device": "cpu"},
        "phase1": [
            {"model": "tinycnn"},
            {"model": "tinycnn", "label": "tinycnn_aug", "overrides": {"augment": AUGMENT}},
        ],
    }
    path = root / "manifest.json"
    path.write_text(json.dumps(manifest))
    run_campaign(path, progress=False)
    results = root / "results"
    cdir = campaign_dir(load_manifest(path))
    df = L.load_runs(results, cdir)
    paths = zip(df["run_name"], df["run_path"], strict=True)
    metrics = {name: json.loads((path / "metrics.json").read_text()) for name, path in paths}
    return results, cdir, df, metrics


def test_seed_table_has_real_spreads_and_intervals(campaign):
    _, _, df, metrics = campaign
    table = T.seed_table(df).set_index("configuration")
    assert sorted(table.index) == ["seeds-p1_tinycnn", "seeds-p1_tinycnn_aug"]  # not merged
    assert (
        table.loc["seeds-p1_tinycnn_aug", "augment"] == "time_masks=1 time_mask_frames=5 gain_db=3"
    )
    assert table.loc["seeds-p1_tinycnn", "augment"] == ""
    for config, row in table.iterrows():
        values = [metrics[f"{config}_s{s}"]["test"]["macro_f1"] for s in SEEDS]
        assert row["n_seeds"] == 3 and row["seeds"] == "1,2,3"
        assert row["test_macro_f1_mean"] == pytest.approx(np.mean(values))
        assert row["test_macro_f1_std"] == pytest.approx(np.std(values, ddof=1))
        mean, sem = np.mean(values), stats.sem(values)
        low, high = stats.t.interval(0.95, 2, loc=mean, scale=sem) if sem else (mean, mean)
        assert row["test_macro_f1_ci_low"] == pytest.approx(low)
        assert row["test_macro_f1_ci_high"] == pytest.approx(high)


def test_report_shows_the_table_and_the_augmentation_comparison(campaign, tmp_path):
    _, cdir, df, metrics = campaign
    text = R.render_report(df, cdir, [], tmp_path / "report.md")
    section = text.split("## Seeds", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| seeds-p1_")]
    assert len(rows) == 2
    aug = [r for r in rows if r.startswith("| seeds-p1_tinycnn_aug |")][0]
    cells = [c.strip() for c in aug.strip("|").split("|")]
    values = [metrics[f"seeds-p1_tinycnn_aug_s{s}"]["test"]["macro_f1"] for s in SEEDS]
    assert cells[3] == "3" and cells[5] == f"{100 * np.mean(values):.2f}"
    assert cells[6] == f"{100 * np.std(values, ddof=1):.2f}"
    takeaways = K.takeaways(df, cdir)
    line = [x for x in takeaways.splitlines() if x.startswith("- **Augmentation**")]
    assert (
        len(line) == 1 and "`seeds-p1_tinycnn_aug`" in line[0] and "`seeds-p1_tinycnn`" in line[0]
    )
    assert "Welch t-test p=" in line[0] or "NOT distinguishable" in line[0]
    ended = [m["early_stopping"]["convergence"] for m in metrics.values()]
    line = [x for x in takeaways.splitlines() if x.startswith("- Convergence: ")][0]
    assert f"{ended.count('early stop')} stopped early" in line
    assert f"{ended.count('plateau')} reached their epoch budget on a plateau" in line
    assert f"**{ended.count('improving')} still improving at their epoch budget**" in line
    improving = [n for n, m in metrics.items() if m["early_stopping"]["convergence"] == "improving"]
    assert all(f"`{n}`" in line for n in improving)


def test_data_source_label_is_escaped_in_report_and_notebook(campaign, tmp_path):
    results, cdir, _, _ = campaign
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    for cfg_path in (copy / "runs").glob("*/config.json"):
        cfg = json.loads(cfg_path.read_text())
        cfg["data_source"] = {"kind": "folder", "path": EVIL, "fingerprint": "0123456789abcdef"}
        cfg_path.write_text(json.dumps(cfg))
    executed = tmp_path / "executed.ipynb"
    report = R.report_results(copy, campaign="seeds", executed_path=executed).read_text()
    assert "<script>" not in report and "[click](" not in report and "**bold**" not in report
    assert (
        "&lt;script&gt;alert(1)&lt;/script&gt; \\[click\\](javascript:x) \\*\\*bold\\*\\*" in report
    )
    assert f"**Data source: {escape_md(L.source_line(L.load_runs(copy, cdir)))}**" in report
    shown = [
        out["data"]["text/markdown"]
        for cell in nbformat.read(executed, as_version=4).cells
        for out in cell.get("outputs", [])
        if "text/markdown" in out.get("data", {})
    ]
    source_md = [md for md in shown if md.startswith("### Data source:")]
    assert len(source_md) == 1 and "<script>" not in source_md[0] and "\\$x\\$" in source_md[0]
    assert not any("<script>" in md for md in shown)


def test_escape_md_neutralises_markup():
    assert escape_md("a <b> & [l](u) *e* _u_ `c` | $m$ # h\nnext") == (
        "a &lt;b&gt; &amp; \\[l\\](u) \\*e\\* \\_u\\_ \\`c\\` \\| \\$m\\$ \\# h next"
    )
    assert escape_md("SYNTHETIC embedded earable dataset (not DreamCatcher), seed 0") == (
        "SYNTHETIC embedded earable dataset (not DreamCatcher), seed 0"
    )
    assert math.isfinite(len(escape_md("")))
