"""Agent overhead per step and the prompt size of each phase; writes JSON.

    .venv/bin/python benchmarks/agent.py [--steps 300] [--episodes 3] [--out PATH]

- overhead per step: the loop's own time per step outside the model call (as the client measures it,
  HTTP included) and the tool calls, p50 / p99, over episodes of ``--steps`` ``view`` calls answered
  instantly by a scripted OpenAI-compatible server on loopback (tests/agent/scripted_server.py). With the
  trajectory fsync'd after every event (the default) and without. The context is 32K tokens, so the
  history grows to where old outputs are elided and old turns summarised, as in a long real episode.
- prompt tokens: the system prompt and tool schemas of each phase (planner, executor, single), counted by
  the served tokenizer: the native server on a tiny checkpoint answers a request with only the system
  message (and the tools) with ``max_tokens=1``, and its ``usage.prompt_tokens`` is the count (chat
  template included). Schemas compacted (the default) and as the registry writes them.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "agent"))

from scripted_server import ScriptedServer, call  # noqa: E402

from loopcoder.agent import AgentConfig, ModelClient, Task, read_trajectory, run_episode  # noqa: E402
from loopcoder.agent.loop import Agent  # noqa: E402
from loopcoder.agent.trajectory import Trajectory  # noqa: E402
from loopcoder.runtime.workspace import GitWorkspace  # noqa: E402
from loopcoder.scenarios.demo import make_demo_repo  # noqa: E402
from loopcoder.tools.toolbox import Toolbox  # noqa: E402


def overhead(repo: Path, tmp: Path, steps: int, fsync: bool, index: int) -> dict:
    # usage: the scripted server counts ~3 characters per token of what it received, so the history grows
    # into the 32K context and old turns get summarised, as in a long real episode
    script = [call("view", {"path": "stats.py"})] * (steps - 1) + [call("submit", {})]
    with ScriptedServer(script, max_model_len=32768) as server:
        cfg = AgentConfig()
        cfg.model.url = server.url
        cfg.mode = "single"
        cfg.fsync = fsync
        cfg.budgets.steps = steps
        out = tmp / f"overhead-{fsync}-{index}"
        ws = GitWorkspace.clone(repo, out / "workspace")
        result = run_episode(Task("fix median", ws), ModelClient(cfg.model), cfg, out)
    events = read_trajectory(result.trajectory)
    latency = sorted(e.latency_s for e in events if e.type == "model_response")
    tools = sorted(e.duration_s for e in events if e.type == "tool_result")
    return {"fsync": fsync, "steps": result.steps, "stop": result.reason,
            "overhead_ms_p50": result.stats["overhead_ms_p50"], "overhead_ms_p99": result.stats["overhead_ms_p99"],
            "model_call_ms_p50": round(latency[len(latency) // 2] * 1e3, 3),
            "tool_ms_p50": round(tools[len(tools) // 2] * 1e3, 3),
            "summaries": result.stats["summaries"]}


def prompt_tokens(repo: Path, tmp: Path) -> dict:
    from loopcoder.model_server.api import ServerThread, create_app
    from loopcoder.model_server.engine import AsyncLLMEngine, EngineConfig
    from loopcoder.model_server.plt.checkpoint import init_checkpoint

    checkpoint = init_checkpoint(tmp / "tiny", "tiny")
    engine = AsyncLLMEngine.from_config(EngineConfig(model=str(checkpoint), max_model_len=8192, max_num_seqs=2))
    server = ServerThread(create_app(engine, served_model_name="tiny")).start()
    try:
        cfg = AgentConfig()
        cfg.model.url = server.url + "/v1"
        client = ModelClient(cfg.model)
        agent = Agent(client, Toolbox(workspace=repo), cfg, Trajectory(tmp / "prompts.jsonl", fsync=False))
        out = {}
        for name in ("planner", "executor", "single"):
            phase = agent.new_phase(name, "task")
            system = phase.messages[:1]
            full = phase.registry.schemas()

            def count(tools):
                return client.chat(system, tools, None, 1).usage.prompt_tokens

            out[name] = {"tools": len(phase.tools), "system_only": count([]), "with_tools": count(phase.tools),
                         "with_full_schemas": count(full), "system_prompt_chars": len(system[0]["content"])}
        out["served_max_model_len"] = client.max_model_len()
        return out
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "agent.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="loopcoder-bench-agent-") as tmp_name:
        tmp = Path(tmp_name)
        repo = make_demo_repo(tmp / "repo")
        load_before = os.getloadavg()
        runs = [overhead(repo, tmp, args.steps, fsync, i) for fsync in (True, False) for i in range(args.episodes)]
        tokens = prompt_tokens(repo, tmp)
        load_after = os.getloadavg()
    result = {
        "command": "benchmarks/agent.py " + " ".join(sys.argv[1:]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in load_after]},
        "overhead_per_step": runs,
        "prompt_tokens": tokens,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
