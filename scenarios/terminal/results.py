"""Trial results in each generation's own format, and the run's summary table.

- 1.x trial: ``<task>/<trial>/results.json`` with terminal-bench's ``TrialResults`` fields (``trial_name``,
  ``task_id``, ``instruction``, ``is_resolved``, ``failure_mode``, ``parser_results``, token counts, the
  ``*_started_at``/``*_ended_at`` times); ``panes/post-agent.txt``, ``panes/post-test.txt``. The run folder's
  ``results.json`` aggregates the 1.x trials like terminal-bench's ``BenchmarkResults`` (``results``,
  ``n_resolved``, ``n_unresolved``, ``resolved_ids``, ``unresolved_ids``, ``accuracy``).
- 2.0 trial: ``<task>/<trial>/result.json`` with Harbor's ``TrialResult`` fields (``task_name``,
  ``trial_name``, ``trial_uri``, ``task_id``, ``task_checksum``, ``agent_info``, ``agent_result``,
  ``verifier_result.rewards``, ``exception_info``, timing sections); ``verifier/`` holds what the tests
  wrote under /logs/verifier (``reward.txt`` or ``reward.json``, ``test-stdout.txt``).
- both: ``summary.json`` and ``summary.md`` (the table the command prints) in the run folder.

Fields of our own that neither format has are kept under one key, ``loopcoder``.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path

from loopcoder.scenarios.terminal.tasks import V1
from loopcoder.scenarios.terminal.trial import TrialRecord, task_checksum


def _ours(rec: TrialRecord) -> dict:
    return {"agent": rec.agent, "image": rec.image, "workdir": rec.workdir, "warnings": rec.warnings,
            "error": rec.error, "agent_detail": rec.agent_run.detail if rec.agent_run else None,
            "agent_steps": rec.agent_run.steps if rec.agent_run else None, "test_exit_code": rec.test_exit_code,
            "test_timed_out": rec.test_timed_out, "parse_error": rec.parse_error, "reward_error": rec.reward_error,
            "seconds": rec.seconds, "resolved": rec.resolved}


def v1_result(rec: TrialRecord) -> dict:
    run = rec.agent_run
    return {
        "id": str(uuid.uuid4()),
        "trial_name": rec.trial_name,
        "task_id": rec.task.name,
        "instruction": rec.task.instruction,
        # terminal-bench leaves is_resolved None when the tests timed out or their output did not parse
        "is_resolved": None if (rec.error or rec.test_timed_out or rec.parse_error) else rec.resolved,
        "failure_mode": rec.failure_mode,
        "parser_results": rec.parser_results,
        "recording_path": None,
        "total_input_tokens": run.input_tokens if run else None,
        "total_output_tokens": run.output_tokens if run else None,
        "trial_started_at": rec.started_at,
        "trial_ended_at": rec.ended_at,
        "agent_started_at": rec.agent_started_at,
        "agent_ended_at": rec.agent_ended_at,
        "test_started_at": rec.test_started_at,
        "test_ended_at": rec.test_ended_at,
        "loopcoder": _ours(rec),
    }


def _exception(rec: TrialRecord) -> dict | None:
    if rec.error:
        kind, message, tb = rec.error_type or "RuntimeError", rec.error, rec.error_traceback
    elif rec.test_timed_out:
        kind, message, tb = "VerifierTimeoutError", f"Verifier execution timed out after {rec.task.test_timeout_s:g} seconds", ""
    elif rec.agent_run is not None and rec.agent_run.failure == "agent_timeout":
        kind, message, tb = "AgentTimeoutError", f"Agent execution timed out after {rec.task.agent_timeout_s:g} seconds", ""
    elif rec.reward_error:
        kind, message, tb = "RewardFileNotFoundError" if "no reward file" in rec.reward_error else "RewardParseError", \
            rec.reward_error, ""
    elif rec.agent_run is not None and rec.agent_run.failure != "none":
        kind, message, tb = "AgentError", rec.agent_run.detail, ""
    else:
        return None
    return {"exception_type": kind, "exception_message": message, "exception_traceback": tb,
            "occurred_at": rec.ended_at}


def v2_result(rec: TrialRecord) -> dict:
    run = rec.agent_run
    return {
        "schema_version": 1,
        "id": str(uuid.uuid4()),
        "task_name": rec.task.name,
        "trial_name": rec.trial_name,
        "trial_uri": rec.trial_dir.resolve().as_uri(),
        "task_id": {"path": str(rec.task.path)},
        "source": None,
        "task_checksum": task_checksum(rec.task),
        "config": {"task": {"path": str(rec.task.path)}, "agent": {"name": rec.agent},
                   "trials_dir": str(rec.trial_dir.parent.parent)},
        "agent_info": {"name": rec.agent, "version": "loopcoder", "model_info": None},
        "agent_result": None if run is None else {"n_input_tokens": run.input_tokens, "n_cache_tokens": None,
                                                   "n_output_tokens": run.output_tokens, "cost_usd": None,
                                                   "metadata": {"detail": run.detail}},
        "verifier_result": None if rec.rewards is None else {"rewards": rec.rewards},
        "exception_info": _exception(rec),
        "started_at": rec.started_at,
        "finished_at": rec.ended_at,
        "environment_setup": {"started_at": rec.env_started_at, "finished_at": rec.env_ended_at},
        "agent_setup": None,
        "agent_execution": {"started_at": rec.agent_started_at, "finished_at": rec.agent_ended_at},
        "verifier": {"started_at": rec.test_started_at, "finished_at": rec.test_ended_at},
        "loopcoder": _ours(rec),
    }


def write_trial(rec: TrialRecord) -> Path:
    rec.trial_dir.mkdir(parents=True, exist_ok=True)
    if rec.task.generation == V1:
        path, data = rec.trial_dir / "results.json", v1_result(rec)
    else:
        path, data = rec.trial_dir / "result.json", v2_result(rec)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def _score(rec: TrialRecord) -> str:
    if rec.task.generation == V1:
        if not rec.parser_results:
            return "-"
        passed = sum(v == "passed" for v in rec.parser_results.values())
        return f"{passed}/{len(rec.parser_results)} tests"
    if rec.rewards is None:
        return "-"
    return "reward " + ", ".join(f"{v:g}" if k == "reward" else f"{k}={v:g}" for k, v in rec.rewards.items())


def summary_rows(records: list[TrialRecord]) -> list[dict]:
    return [{"task": r.task.name, "format": r.task.generation, "trial": r.trial_name, "agent": r.agent,
             "resolved": r.resolved, "score": _score(r), "failure_mode": r.failure_mode,
             "agent_s": r.seconds["agent"], "tests_s": r.seconds["tests"],
             "result": str((r.trial_dir / ("results.json" if r.task.generation == V1 else "result.json")))}
            for r in records]


def summary_table(records: list[TrialRecord]) -> str:
    rows = summary_rows(records)
    head = ["task", "format", "agent", "resolved", "score", "failure", "agent s", "tests s"]
    body = [[r["task"], r["format"], r["agent"], "yes" if r["resolved"] else "no", r["score"], r["failure_mode"],
             "-" if r["agent_s"] is None else f"{r['agent_s']:.1f}", "-" if r["tests_s"] is None else f"{r['tests_s']:.1f}"]
            for r in rows]
    n = sum(r["resolved"] for r in rows)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    lines.append(f"\nresolved {n} of {len(rows)} trials" + (f" ({n / len(rows):.0%})" if rows else ""))
    return "\n".join(lines)


def write_run(records: list[TrialRecord], out: Path, meta: dict) -> str:
    """The run folder's aggregate files; returns the summary table."""
    v1 = [v1_result(r) for r in records if r.task.generation == V1]
    if v1:
        resolved = [t for t in v1 if t["is_resolved"]]
        (out / "results.json").write_text(json.dumps({
            "id": str(uuid.uuid4()), "results": v1, "n_resolved": len(resolved),
            "n_unresolved": len(v1) - len(resolved), "resolved_ids": [t["task_id"] for t in resolved],
            "unresolved_ids": [t["task_id"] for t in v1 if not t["is_resolved"]],
            "accuracy": len(resolved) / len(v1)}, indent=2) + "\n", encoding="utf-8")
    table = summary_table(records)
    n = sum(r.resolved for r in records)
    (out / "summary.json").write_text(json.dumps({**meta, "n_trials": len(records), "n_resolved": n,
                                                   "trials": summary_rows(records)}, indent=2) + "\n",
                                      encoding="utf-8")
    (out / "summary.md").write_text(table + "\n", encoding="utf-8")
    return table
