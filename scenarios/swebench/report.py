"""A static HTML report of a run folder: one row per instance, each linking to its trajectory, readable.

``write_report(run_dir)`` reads what `swebench run` and `swebench eval` left there (status files,
trajectories, patches, the ``loopcoder.<model>.<run_id>.json`` eval report) and writes ``report.html`` plus
``report/<instance>.html`` (plan, thoughts, tool calls with their arguments, edits as diffs, tool results,
the final patch). Everything shown that came from the model, the sandbox or the dataset is untrusted:
Jinja2 autoescaping escapes it all, link targets are built only from sanitised names, and a
Content-Security-Policy forbids scripts and any network access, so a page can neither run code nor load
anything even if some text slipped through. The pages need nothing but a browser (no JS, inline CSS).
"""
from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape

from loopcoder.scenarios.swebench.rundir import RunDir, safe_name

TEMPLATES = Path(__file__).resolve().parent / "templates"
REPORT_FILE = "report.html"
PAGES_DIR = "report"
MAX_OUTPUT_LINES = 400  # a tool output longer than this is cut in the page (the trajectory keeps it whole)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(default=True,
                      default_for_string=True), trim_blocks=True, lstrip_blocks=True)
    env.filters["clean"] = clean
    return env


def clean(value: Any) -> str:
    """Text for a page: control characters (which HTML cannot show) as U+FFFD; escaping is the template's."""
    return _CONTROL.sub("\ufffd", "" if value is None else str(value))


def href(*parts: str) -> str:
    """A relative link from sanitised path parts (each percent-encoded)."""
    return "/".join(quote(p, safe="") for p in parts)


def latest_eval(run_dir: Path, run_id: Optional[str] = None) -> Optional[dict]:
    """The loopcoder eval report in ``run_dir`` (of ``run_id``, else the newest), or None."""
    found = []
    for path in run_dir.glob("loopcoder.*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or "instances" not in data:
            continue
        if run_id is None or data.get("run_id") == run_id:
            found.append((path.stat().st_mtime, data))
    return max(found, key=lambda x: x[0])[1] if found else None


def write_report(run_dir: str | Path, eval_run_id: Optional[str] = None) -> Path:
    """Write ``report.html`` and the trajectory pages into ``run_dir``; returns the report's path."""
    run_dir = Path(run_dir)
    rd = RunDir(run_dir)
    meta = rd.read_meta()
    statuses = {s.instance_id: s for s in rd.statuses()}
    evaluation = latest_eval(run_dir, eval_run_id)
    verdicts = {r["instance_id"]: r for r in (evaluation or {}).get("instances", [])}
    order = list(dict.fromkeys(list(meta.get("instances", [])) + list(statuses) + list(verdicts)))
    env = _env()
    pages = run_dir / PAGES_DIR
    pages.mkdir(exist_ok=True)
    rows = []
    for iid in order:
        status, verdict = statuses.get(iid), verdicts.get(iid)
        if status is None and verdict is None:
            continue  # selected but never started (a run cut short before it got there)
        folder = rd.instance_dir(iid)
        page = None
        if (folder / "trajectory.jsonl").is_file() or (folder / "patch.diff").is_file() or status is not None:
            name = safe_name(iid) + ".html"
            (pages / name).write_text(env.get_template("trajectory.html.jinja").render(
                **trajectory_view(iid, folder, status, verdict, evaluation)))
            page = href(PAGES_DIR, name)
        rows.append(_row(iid, status, verdict, evaluation, page))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    eval_counts: dict[str, int] = {}
    for r in rows:
        if r["verdict"]:
            eval_counts[r["verdict"]] = eval_counts.get(r["verdict"], 0) + 1
    out = run_dir / REPORT_FILE
    out.write_text(env.get_template("report.html.jinja").render(
        meta=meta, rows=rows, counts=counts, eval_counts=eval_counts, evaluation=evaluation,
        totals={"tokens_in": sum(r["tokens_in"] for r in rows), "tokens_out": sum(r["tokens_out"] for r in rows),
                "cost": sum(r["cost"] for r in rows), "seconds": sum(r["seconds"] for r in rows)},
        resolved=eval_counts.get("resolved", 0), evaluated=sum(eval_counts.values())))
    return out


def _eval_dir(evaluation: Optional[dict], iid: str) -> Optional[str]:
    if not evaluation:
        return None
    return href("logs", "run_evaluation", str(evaluation.get("run_id", "")),
                str(evaluation.get("model_name_or_path", "")).replace("/", "__"), iid)


def _row(iid: str, status, verdict: Optional[dict], evaluation: Optional[dict], page: Optional[str]) -> dict:
    row = {"instance_id": iid, "page": page, "state": status.state if status else "-",
           "reason": status.reason if status else "", "detail": status.detail if status else "",
           "failure_kind": status.failure_kind if status else "-",
           "steps": status.steps if status else 0, "tokens_in": status.tokens_in if status else 0,
           "tokens_out": status.tokens_out if status else 0, "cost": status.cost_usd if status else 0.0,
           "seconds": status.seconds if status else 0.0, "patch_files": len(status.patch_files) if status else 0,
           "verdict": None, "infra_reason": None, "verdict_detail": "", "eval_log": None}
    if verdict:
        row["verdict"] = verdict.get("status")
        row["infra_reason"] = verdict.get("infra_reason")
        row["verdict_detail"] = verdict.get("detail") or ""
        base = _eval_dir(evaluation, iid)
        if base:
            row["eval_log"] = base + "/" + href("run_instance.log")
            row["eval_output"] = base + "/" + href("test_output.txt")
    return row


# -- one trajectory ------------------------------------------------------------------------------


def trajectory_view(iid: str, folder: Path, status, verdict: Optional[dict], evaluation: Optional[dict]) -> dict:
    """What trajectory.html.jinja shows for one instance."""
    from loopcoder.agent.trajectory import TrajectoryError, read_trajectory

    events, error = [], None
    path = folder / "trajectory.jsonl"
    if path.is_file():
        try:
            events = read_trajectory(path)
        except TrajectoryError as exc:
            error = str(exc)
    header = events[0] if events else None
    items = [item for event in events[1:] for item in _items(event)]
    plans = [e for e in events if e.type == "plan"]
    patch = (folder / "patch.diff").read_text(errors="replace") if (folder / "patch.diff").is_file() else ""
    summary = (folder / "summary.txt").read_text(errors="replace") if (folder / "summary.txt").is_file() else ""
    run_log = (folder / "run.log").read_text(errors="replace") if (folder / "run.log").is_file() else ""
    return {"instance_id": iid, "status": status, "verdict": verdict, "header": header, "items": items,
            "error": error, "plan": plans[-1].rendered if plans else "", "patch": diff_lines(patch),
            "summary": summary, "run_log": run_log, "back": href("..", REPORT_FILE),
            "eval_log": (_eval_dir(evaluation, iid) and "../" + _eval_dir(evaluation, iid) + "/" +
                         href("test_output.txt")) if verdict else None}


def _items(e) -> list[dict]:
    kind = e.type
    if kind == "phase":
        return [{"kind": "phase", "phase": e.phase, "reason": e.reason}]
    if kind == "model_request":
        shown = [{"role": m.get("role", "?"), "content": _message_text(m)} for m in e.new_messages
                 if m.get("role") in ("system", "user")]
        return [{"kind": "request", "step": e.step, "phase": e.phase, "n_messages": e.n_messages,
                 "estimated": e.estimated_tokens, "max_tokens": e.max_tokens, "thinking": e.thinking,
                 "messages": shown}]
    if kind == "model_response":
        return [{"kind": "answer", "step": e.step, "content": e.content or "", "reasoning": e.reasoning or "",
                 "prompt": e.prompt_tokens, "completion": e.completion_tokens, "latency": e.latency_s,
                 "finish": e.finish_reason or ""}]
    if kind == "tool_call":
        args = e.arguments or {}
        return [{"kind": "call", "step": e.step, "name": e.name or "(no name)", "source": e.source,
                 "repaired": e.repaired, "error": e.error or "", "raw": e.raw if e.arguments is None else "",
                 "diff": _edit_diff(e.name, args), "arguments": json.dumps(args, indent=2, ensure_ascii=False)}]
    if kind == "tool_result":
        lines = e.output.split("\n")
        cut = max(0, len(lines) - MAX_OUTPUT_LINES)
        return [{"kind": "result", "step": e.step, "name": e.name, "ok": e.ok, "duration": e.duration_s,
                 "output": "\n".join(lines[:MAX_OUTPUT_LINES]), "cut": cut, "lines": len(lines)}]
    if kind == "plan":
        return [{"kind": "plan", "step": e.step, "action": e.action, "rendered": e.rendered, "note": e.note}]
    if kind == "format_error":
        return [{"kind": "format_error", "step": e.step, "errors": e.errors, "consecutive": e.consecutive}]
    if kind == "retry":
        return [{"kind": "retry", "step": e.step, "attempt": e.attempt, "error": e.error, "wait": e.wait_s}]
    if kind == "context":
        return [{"kind": "context", "step": e.step, "action": e.action, "turns": e.turns_replaced,
                 "before": e.tokens_before, "after": e.tokens_after}]
    if kind == "stop":
        stats = [(k, v) for k, v in (e.stats or {}).items() if not isinstance(v, (dict, list))]
        budget = (e.stats or {}).get("budget") or {}
        return [{"kind": "stop", "step": e.step, "reason": e.reason, "detail": e.detail, "stats": stats,
                 "budget": list(budget.items()), "patch": e.patch.model_dump() if e.patch else None}]
    return []


def _message_text(message: dict) -> str:
    content = message.get("content")
    return content if isinstance(content, str) else json.dumps(content, indent=2, ensure_ascii=False)


def _edit_diff(name: Optional[str], args: dict) -> list[tuple[str, str]]:
    """An edit tool call as diff lines (str_replace: old -> new; insert: added lines; create: a new file)."""
    path = str(args.get("path", "?"))
    if name == "str_replace" and isinstance(args.get("old_str"), str) and isinstance(args.get("new_str"), str):
        diff = difflib.unified_diff(args["old_str"].splitlines(), args["new_str"].splitlines(),
                                    f"a/{path}", f"b/{path}", lineterm="", n=3)
        return diff_lines("\n".join(diff))
    if name == "insert" and isinstance(args.get("text"), str):
        return [("hunk", f"@@ after line {args.get('line')} of {path} @@")] + [
            ("add", "+" + line) for line in args["text"].splitlines()]
    if name == "create" and isinstance(args.get("content"), str):
        return [("meta", f"+++ b/{path} (new file{', overwrite' if args.get('overwrite') else ''})")] + [
            ("add", "+" + line) for line in args["content"].splitlines()]
    return []


def diff_lines(text: str) -> list[tuple[str, str]]:
    """(css class, line) for each line of a unified diff."""
    out = []
    for line in text.splitlines():
        if line.startswith(("+++", "---", "diff --git", "index ", "new file", "deleted file", "similarity",
                            "rename ", "old mode", "new mode")):
            cls = "meta"
        elif line.startswith("@@"):
            cls = "hunk"
        elif line.startswith("+"):
            cls = "add"
        elif line.startswith("-"):
            cls = "del"
        else:
            cls = "ctx"
        out.append((cls, line))
    return out


def relpath(target: Path, start: Path) -> str:
    return os.path.relpath(target, start)
