"""A scripted model for SWE-bench runs: a real OpenAI-compatible HTTP server on 127.0.0.1, one script per instance.

Stateless on purpose, so any number of agents (threads, Ray worker processes, a resumed run) can share it:
each chat request is routed to an instance by the problem statement in its messages, to a phase by the
tools it offers (write_plan: planner, update_plan: executor, neither: single mode), and answered with the
script item whose index is the number of assistant turns already in the request. ``gold_script`` turns an
instance's gold patch into the agent tool calls that apply it (a str_replace per hunk), so a run that
goes through the agent's tools, sandbox and patch extraction resolves the instance.
"""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

# What a hostile model could write: the HTML report must show these as text.
HOSTILE = '<script>alert("pwned")</script><img src=x onerror=alert(1)> & </pre></div><a href="javascript:x">'


def call(name: str, arguments: dict, content: Optional[str] = None, reasoning: Optional[str] = None) -> dict:
    return {"tool_calls": [{"name": name, "arguments": arguments}], "content": content, "reasoning": reasoning}


def hunks(patch: str) -> list[tuple[str, str, str]]:
    """(path, old text, new text) of every hunk of a unified diff (context lines on both sides)."""
    out, path, old, new, in_hunk = [], None, [], [], False

    def flush():
        if in_hunk and path:
            out.append((path, "".join(old), "".join(new)))

    for line in patch.splitlines(keepends=True):
        if line.startswith("diff --git"):
            flush()
            in_hunk, path = False, None
        elif line.startswith("+++ b/"):
            path = line[6:].rstrip("\n")
        elif line.startswith("@@"):
            flush()
            in_hunk, old, new = True, [], []
        elif in_hunk and line.startswith("-"):
            old.append(line[1:])
        elif in_hunk and line.startswith("+"):
            new.append(line[1:])
        elif in_hunk and (line.startswith(" ") or line == "\n"):
            old.append(line[1:] if line.startswith(" ") else line)
            new.append(line[1:] if line.startswith(" ") else line)
    flush()
    return out


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


class InstanceModel:
    def __init__(self, instances: list[dict], scripts: dict[str, dict[str, list[dict]]], delay: float = 0.0,
                 model: str = "scripted-swe", max_model_len: int = 32768) -> None:
        self.instances = instances
        self.scripts = scripts
        self.delay = delay
        self.model = model
        self.max_model_len = max_model_len
        self.requests: list[tuple[str, str, int]] = []  # (instance, phase, index)
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "InstanceModel":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, body: dict) -> tuple[int, dict]:
        text = "\n".join(m.get("content") or "" for m in body.get("messages", []) if m.get("role") == "user")
        iid = next((i["instance_id"] for i in self.instances if i["problem_statement"][:300] in text), None)
        tools = {t["function"]["name"] for t in body.get("tools", [])}
        phase = "planner" if "write_plan" in tools else "executor" if "update_plan" in tools else "single"
        index = sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")
        with self.lock:
            self.requests.append((iid or "?", phase, index))
        script = self.scripts.get(iid, {}).get(phase, []) if iid else []
        if index >= len(script):
            return 400, {"error": {"message": f"no script item {index} for {iid} ({phase})", "type": "scripted"}}
        item = script[index]
        calls = [{"id": f"call_{phase}_{index}_{n}", "type": "function",
                  "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
                 for n, c in enumerate(item.get("tool_calls", []))]
        message = {"role": "assistant", "content": item.get("content"), **({"tool_calls": calls} if calls else {})}
        if item.get("reasoning"):
            message["reasoning_content"] = item["reasoning"]
        prompt = len(json.dumps(body.get("messages", []))) // 4
        completion = len(json.dumps(message)) // 4
        return 200, {"id": f"chatcmpl-{index}", "object": "chat.completion", "created": int(time.time()),
                     "model": self.model, "choices": [{"index": 0, "message": message,
                                                       "finish_reason": "tool_calls" if calls else "stop"}],
                     "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                               "total_tokens": prompt + completion}}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def send_json(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    return self.send_json(200, {"object": "list", "data": [
                        {"id": server.model, "object": "model", "created": 0, "owned_by": "test",
                         "max_model_len": server.max_model_len}]})
                self.send_json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if server.delay:
                    time.sleep(server.delay)
                self.send_json(*server.answer(body))

        return Handler


def model_patch_lines(patch: str) -> list[str]:
    """The +/- lines of a patch (what two patches of the same change share, whatever their context or index)."""
    return [l for l in patch.splitlines() if re.match(r"^[+-](?![+-]{2} )", l)]
