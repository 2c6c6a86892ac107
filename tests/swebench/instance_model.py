"""A scripted model for SWE-bench runs: a real OpenAI-compatible HTTP server on 127.0.0.1, one script per instance.

Built on ``loopcoder.agent.chat_server.ChatServer``. Stateless on purpose, so any number of agents (threads, Ray worker processes, a resumed run) can share it:
each chat request is routed to an instance by the problem statement in its messages, to a phase by the
tools it offers (write_plan: planner, update_plan: executor, neither: single mode), and answered with the
script item whose index is the number of assistant turns already in the request. ``gold_script`` turns an
instance's gold patch into the agent tool calls that apply it (a str_replace per hunk), so a run that
goes through the agent's tools, sandbox and patch extraction resolves the instance.
"""
from __future__ import annotations

import json
import re
from typing import Optional

from loopcoder.agent.chat_server import ChatServer
from loopcoder.scenarios.nano.teacher import parse_hunks

# What a hostile model could write: the HTML report must show these as text.
HOSTILE = '<script>alert("pwned")</script><img src=x onerror=alert(1)> & </pre></div><a href="javascript:x">'


def call(name: str, arguments: dict, content: Optional[str] = None, reasoning: Optional[str] = None) -> dict:
    return {"tool_calls": [{"name": name, "arguments": arguments}], "content": content, "reasoning": reasoning}


def hunks(patch: str) -> list[tuple[str, str, str]]:
    """(path, old text, new text) of every hunk of a unified diff (context lines on both sides)."""
    return [(h.path, "".join(h.old_lines), "".join(h.new_lines)) for h in parse_hunks(patch)]


def first_test_file(inst: dict) -> str:
    tests = json.loads(inst["PASS_TO_PASS"]) or json.loads(inst["FAIL_TO_PASS"])
    return tests[0].split("::")[0]


def gold_script(inst: dict, probe: Optional[str] = None) -> dict[str, list[dict]]:
    """Planner: look at the file, write a plan. Executor: (``probe`` in the shell,) the gold patch hunk by hunk,
    a test run, plan step done, submit."""
    edits = hunks(inst["patch"])
    files = sorted({p for p, _, _ in edits})
    plan = {"steps": [{"goal": "apply the fix", "files": files, "verify": f"run_tests {first_test_file(inst)}"}]}
    planner = [call("view", {"path": files[0]}, content=f"Reading the code first. {HOSTILE}",
                    reasoning=f"The issue is in {files[0]}. {HOSTILE}"),
               call("write_plan", plan)]
    executor = [call("shell", {"command": probe})] if probe else []
    executor += [call("str_replace", {"path": p, "old_str": o, "new_str": n}) for p, o, n in edits]
    executor += [call("run_tests", {"paths": [first_test_file(inst)]}),
                 call("update_plan", {"step": 1, "status": "done", "note": "tests pass"}),
                 call("submit", {"summary": f"fixed {inst['instance_id']} {HOSTILE}"})]
    return {"planner": planner, "executor": executor, "single": [c for c in executor if c["tool_calls"][0]["name"]
                                                                 != "update_plan"]}


def submit_script(summary: str = "nothing to change", looks: int = 0) -> dict[str, list[dict]]:
    """A model that looks around ``looks`` times in each phase, changes nothing and submits (an empty patch)."""
    plan = {"steps": [{"goal": "nothing", "files": [], "verify": "none"}]}
    look = [call("view", {"path": "."}) for _ in range(looks)]
    return {"planner": look + [call("write_plan", plan)], "executor": look + [call("submit", {"summary": summary})],
            "single": look + [call("submit", {"summary": summary})]}


class InstanceModel(ChatServer):
    def __init__(self, instances: list[dict], scripts: dict[str, dict[str, list[dict]]], delay: float = 0.0,
                 model: str = "scripted-swe", max_model_len: int = 32768) -> None:
        super().__init__(model, max_model_len)
        self.instances = instances
        self.scripts = scripts
        self.delay = delay
        self.requests: list[tuple[str, str, int]] = []  # (instance, phase, index)

    def __enter__(self) -> "InstanceModel":
        self.start()
        return self

    def respond(self, body: dict) -> dict:
        text = "\n".join(m.get("content") or "" for m in body.get("messages", []) if m.get("role") == "user")
        iid = next((i["instance_id"] for i in self.instances if i["problem_statement"][:300] in text), None)
        tools = {t["function"]["name"] for t in body.get("tools", [])}
        phase = "planner" if "write_plan" in tools else "executor" if "update_plan" in tools else "single"
        index = sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")
        with self.lock:
            self.requests.append((iid or "?", phase, index))
        script = self.scripts.get(iid, {}).get(phase, []) if iid else []
        if index >= len(script):
            return {"status": 400, "message": f"no script item {index} for {iid} ({phase})"}
        return {**script[index], **({"delay": self.delay} if self.delay else {})}

    def usage(self, body: dict, message: dict) -> tuple[int, int]:
        return len(json.dumps(body.get("messages", []))) // 4, len(json.dumps(message)) // 4


def model_patch_lines(patch: str) -> list[str]:
    """The +/- lines of a patch (what two patches of the same change share, whatever their context or index)."""
    return [l for l in patch.splitlines() if re.match(r"^[+-](?![+-]{2} )", l)]
