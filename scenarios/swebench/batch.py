"""A batch of evaluations: every instance in turn (an infra failure never stops the batch), then reports.

Reports, in the run directory: the official run report ``<model>.<run_id>.json`` written by
``swebench.harness.reporting.make_run_report`` (called from the run directory, which it reads and writes
relative to), and ``loopcoder.<model>.<run_id>.json``: every instance's status, the two verdicts, flags,
and infrastructure failures by reason, apart from model failures.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from collections import Counter
from pathlib import Path
from typing import Callable

from loopcoder.scenarios.swebench.evaluation import EvalContext, InstanceResult, evaluate_instance

Progress = Callable[[str], None]
OnResult = Callable[[InstanceResult], None]


def evaluate_batch(instances: list[dict], predictions: dict[str, dict], ctx: EvalContext,
                   progress: Progress | None = None, on_result: OnResult | None = None) -> "BatchReport":
    """Evaluate each instance that has a prediction, in dataset order; write both run reports."""
    results: list[InstanceResult] = []
    for inst in instances:
        pred = predictions.get(inst["instance_id"])
        if pred is None:
            continue
        res = evaluate_instance(inst, pred, ctx, progress=progress)
        results.append(res)
        if on_result:
            on_result(res)
    return write_reports(instances, predictions, results, ctx)


class BatchReport:
    def __init__(self, results: list[InstanceResult], official: Path | None, ours: Path) -> None:
        self.results = results
        self.official_report = official
        self.report = ours

    @property
    def counts(self) -> Counter:
        return Counter(r.status for r in self.results)


def write_reports(instances: list[dict], predictions: dict[str, dict], results: list[InstanceResult],
                  ctx: EvalContext) -> BatchReport:
    from swebench.harness.reporting import make_run_report

    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    evaluated = {r.instance_id for r in results}
    preds = {k: v for k, v in predictions.items() if k in evaluated}
    dataset = [i for i in instances if i["instance_id"] in evaluated]
    official = None
    if preds:
        cwd = os.getcwd()
        os.chdir(ctx.run_dir)  # make_run_report reads logs/run_evaluation/... relative to the working directory
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                official = ctx.run_dir / make_run_report(preds, dataset, ctx.run_id, client=None)
        finally:
            os.chdir(cwd)
    model = (next(iter(preds.values()))["model_name_or_path"] if preds else "none").replace("/", "__")
    counts = Counter(r.status for r in results)
    infra = Counter(r.infra_reason for r in results if r.status == "infra_failure")
    summary = {
        "run_id": ctx.run_id,
        "model_name_or_path": model,
        "images": ctx.cfg.images,
        "total_instances": len(results),
        "resolved_instances": counts["resolved"],
        "counts": dict(sorted(counts.items())),
        "infra_failures_by_reason": dict(sorted(infra.items())),
        "resolved_ids": sorted(r.instance_id for r in results if r.status == "resolved"),
        "unresolved_ids": sorted(r.instance_id for r in results if r.status == "unresolved"),
        "grading_conflict_ids": sorted(r.instance_id for r in results if r.status == "grading_conflict"),
        "suspicious_ids": sorted(r.instance_id for r in results if r.status == "suspicious"),
        "empty_patch_ids": sorted(r.instance_id for r in results if r.status == "empty_patch"),
        "infra_failure_ids": {r.instance_id: f"{r.infra_reason}: {r.detail}" for r in results
                              if r.status == "infra_failure"},
        "official_report": official.name if official else None,
        "instances": [r.model_dump() for r in results],
    }
    ours = ctx.run_dir / f"loopcoder.{model}.{ctx.run_id}.json"
    ours.write_text(json.dumps(summary, indent=2) + "\n")
    return BatchReport(results, official, ours)
