"""sleepsound.campaign: whole experiment campaigns from one JSON manifest.

    from sleepsound.campaign import load_manifest, plan, print_plan, run_campaign, summarize

    print_plan("experiments/reference.json")          # what would run (dry run)
    result = run_campaign("experiments/demo.json")    # phase 1, gate (+ tuning), phase 2
    result = run_campaign("experiments/demo.json", resume=True)
    result = run_campaign("experiments/demo.json", executor={"kind": "ray", "gpus_per_run": 0.5})

See :mod:`~sleepsound.campaign.manifest` (schema, run names), :mod:`~sleepsound.campaign.runner`
(phases, gate, resume, files), :mod:`~sleepsound.campaign.execute` (one run: the function both
executors call), :mod:`~sleepsound.campaign.ray_executor` (runs in parallel on a Ray cluster;
imported only for ``kind="ray"``) and :mod:`~sleepsound.campaign.summary` (across-seed
statistics).
"""

from .manifest import Manifest, ManifestError, load_manifest, parse_manifest
from .runner import (
    CampaignError,
    CampaignResult,
    PlannedRun,
    campaign_dir,
    plan,
    plan_counts,
    print_plan,
    run_campaign,
)
from .summary import Comparison, compare, summarize, t_interval, welch_test

__all__ = [
    "CampaignError",
    "CampaignResult",
    "Comparison",
    "Manifest",
    "ManifestError",
    "PlannedRun",
    "campaign_dir",
    "compare",
    "load_manifest",
    "parse_manifest",
    "plan",
    "plan_counts",
    "print_plan",
    "run_campaign",
    "summarize",
    "t_interval",
    "welch_test",
]
