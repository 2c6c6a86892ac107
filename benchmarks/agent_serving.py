"""Agent serving: replay a recorded multi-turn agent conversation against `loopcoder serve` over HTTP.

An agent re-sends the whole conversation at every step, so without prefix caching each step prefills the
whole context again. This benchmark replays ``benchmarks/agent_conversation.json`` (24 requests: a
system prompt and a task, then 23 tool calls whose results are this repository's own source files,
growing past 16K tokens of the shipped tokenizer) against a real server on loopback, once with prefix
caching and once without, and reports per turn: the time to the first token, the time to the last, the
prompt tokens, the tokens the server computed (``loopcoder_prompt_tokens_total`` in /metrics, the
recomputed tail included) and those it reported cached (``usage.prompt_tokens_details.cached_tokens``).
It also reports the server's start-up (launch to a ready /health, which waits for the warm-up) and
single-stream decode tokens/s over HTTP (a streamed completion: tokens after the first over the time after
the response head) against the engine's own figure for the same request in the same server (decode steps
over their wall time, ``loopcoder_engine_decode_steps_total`` and ``_seconds_total`` in /metrics).

CPU, tiny checkpoint (a smoke run; numbers say nothing about the GPU):

    python benchmarks/agent_serving.py --device cpu --out benchmarks/results/agent_serving-cpu.json

CUDA, a LoopCoder-V2-shaped model with random bf16 weights (as benchmarks/engine.py; the server runs it
in a subprocess of this script, with the shipped tokenizer):

    python benchmarks/agent_serving.py --device cuda --out benchmarks/results/agent_serving-h200.json

Rebuild the fixture (deterministic: fixed files, fixed truncation) with ``--build-fixture``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).with_name("agent_conversation.json")
SERVED = "bench"
# The tool results of the recorded conversation: this project's own files, in this order, each cut to
# TOOL_CHARS characters (an agent reading the serving code to answer a question about it).
SOURCES = [
    "README.md", "docs/engine.md", "model_server/engine/config.py", "model_server/engine/sequence.py",
    "model_server/engine/scheduler.py", "model_server/engine/block_manager.py", "model_server/engine/memory.py",
    "model_server/engine/llm_engine.py", "model_server/engine/model_runner.py", "model_server/engine/sampler.py",
    "model_server/engine/types.py", "model_server/engine/grammar.py", "docs/server.md",
    "model_server/api/server.py", "model_server/api/generation.py", "model_server/api/metrics.py",
    "model_server/api/protocol.py", "model_server/api/embedded.py", "scenarios/serve_cli.py",
    "model_server/kernels/__init__.py", "model_server/plt/configuration.py", "configs/serve.yaml",
    "benchmarks/engine.py",
]
TOOL_CHARS = 1900
TOOLS = [{"type": "function", "function": {
    "name": "read_file", "description": "Read a file of the repository (UTF-8 text).",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}]


# -- the fixture ------------------------------------------------------------------------------------------
def build_fixture(out: Path) -> dict:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    messages = [
        {"role": "system", "content": "You are LoopCoder, a coding agent. Use the tools to read the repository "
                                      "before you answer. Be precise and cite file paths."},
        {"role": "user", "content": "How does the native engine serve an agent that re-sends its whole "
                                    "conversation every step? Read the engine and the server, then explain "
                                    "where the KV cache is sized, how shared prefixes are reused and what "
                                    "has to be recomputed for the loops >= 1."},
    ]
    for i, path in enumerate(SOURCES):
        text = (REPO / path).read_text(encoding="utf-8")[:TOOL_CHARS]
        messages.append({"role": "assistant", "content": f"Reading {path} next.", "tool_calls": [
            {"id": f"call_{i}", "type": "function",
             "function": {"name": "read_file", "arguments": json.dumps({"path": path})}}]})
        messages.append({"role": "tool", "tool_call_id": f"call_{i}", "content": text})
    fixture = {"description": "A recorded agent conversation: a task, then 23 read_file calls whose results "
                              f"are this repository's files (first {TOOL_CHARS} characters each) at commit "
                              f"{commit}. Request k sends the first 2 + 2k messages.",
               "source_commit": commit, "tools": TOOLS, "messages": messages}
    out.write_text(json.dumps(fixture, indent=1) + "\n")
    return fixture


def requests_of(fixture: dict) -> list[list[dict]]:
    """The message lists the agent sends: the task, then after every tool result."""
    msgs = fixture["messages"]
    return [msgs[: 2 + 2 * k] for k in range((len(msgs) - 2) // 2 + 1)]


# -- the server -------------------------------------------------------------------------------------------
def launch(args, prefix_caching: bool) -> tuple[subprocess.Popen, str, list[str]]:
    flag = "--prefix-caching" if prefix_caching else "--no-prefix-caching"
    if args.device == "cpu":
        cmd = [sys.executable, "-m", "loopcoder.scenarios.cli", "serve", "--model", str(args.model), "--port", "0",
               "--device", "cpu", "--max-model-len", str(args.max_model_len), "--max-batch", str(args.max_batch),
               "--served-model-name", SERVED, flag, "--set",
               f"engine.max_num_batched_tokens={args.chunk}", "--set", "log_level=warning"]
    else:
        cmd = [sys.executable, __file__, "serve-random", "--port", "0", "--layers", str(args.layers),
               "--max-model-len", str(args.max_model_len), "--max-batch", str(args.max_batch),
               "--chunk", str(args.chunk), flag]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "400"})
    log: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def read() -> None:
        for line in proc.stderr:
            log.append(line.rstrip())
            m = re.search(r"(http://[\w.\[\]:]+:\d+)/v1", line)
            if m and not url:
                url.append(m.group(1))
                found.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + args.start_timeout
    while not found.wait(0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("server did not start:\n" + "\n".join(log[-30:]))
    return proc, url[0], log


def wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited before it was ready")
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError("server not ready in time")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def metrics(url: str) -> dict[str, float]:
    out = {}
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split()
            out[name] = float(value)
    return out


def stream_request(url: str, path: str, body: dict, timeout: float) -> dict:
    """POST a streaming request; (time to the response head = first token, time to the end, usage)."""
    t0 = time.perf_counter()
    usage, first = None, None
    with httpx.stream("POST", url + path, json=body, timeout=timeout) as r:
        first = time.perf_counter() - t0
        if r.status_code != 200:
            raise RuntimeError(f"{path}: HTTP {r.status_code}: {r.read()[:300]!r}")
        for line in r.iter_lines():
            if line.startswith("data: {"):
                data = json.loads(line[len("data: "):])
                if "error" in data:
                    raise RuntimeError(f"{path}: {data['error']}")
                usage = data.get("usage") or usage
    return {"ttft_s": first, "total_s": time.perf_counter() - t0, "usage": usage}


def replay(url: str, fixture: dict, args) -> list[dict]:
    turns = []
    for k, messages in enumerate(requests_of(fixture)[: args.turns]):
        before = metrics(url)
        body = {"model": SERVED, "messages": messages, "tools": fixture["tools"], "max_tokens": args.max_tokens,
                "temperature": 0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
        got = stream_request(url, "/v1/chat/completions", body, args.request_timeout)
        after = metrics(url)
        usage = got["usage"]

        def delta(name: str) -> int:
            return int(after.get(f"loopcoder_{name}", 0) - before.get(f"loopcoder_{name}", 0))

        turns.append({"turn": k + 1, "messages": len(messages), "prompt_tokens": usage["prompt_tokens"],
                      "cached_tokens": usage["prompt_tokens_details"]["cached_tokens"],
                      "prefill_tokens_computed": delta("prompt_tokens_total"),
                      "recomputed_tail_tokens": delta("prefix_cache_recomputed_tokens_total"),
                      "completion_tokens": usage["completion_tokens"],
                      "ttft_s": round(got["ttft_s"], 4), "total_s": round(got["total_s"], 4)})
        print(f"  turn {k + 1:2d}: {usage['prompt_tokens']:6d} prompt tokens, "
              f"{turns[-1]['prefill_tokens_computed']:6d} computed, TTFT {got['ttft_s']:.3f} s, "
              f"total {got['total_s']:.3f} s", file=sys.stderr)
    return turns


def http_single_stream(url: str, args) -> dict:
    body = {"model": SERVED, "prompt": list(range(100, 100 + args.stream_prompt)), "max_tokens": args.stream_tokens,
            "temperature": 0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    runs = []
    for _ in range(args.stream_repeats):
        before = metrics(url)
        got = stream_request(url, "/v1/completions", body, args.request_timeout)
        after = metrics(url)
        n = got["usage"]["completion_tokens"]
        steps = after["loopcoder_engine_decode_steps_total"] - before["loopcoder_engine_decode_steps_total"]
        seconds = after["loopcoder_engine_decode_seconds_total"] - before["loopcoder_engine_decode_seconds_total"]
        runs.append({"ttft_s": got["ttft_s"], "total_s": got["total_s"], "tokens": n,
                     "decode_tok_s": (n - 1) / (got["total_s"] - got["ttft_s"]),
                     # the engine's own figure in the same process and run: one token per decode step
                     "engine_decode_steps": int(steps), "engine_decode_tok_s": steps / seconds})
    return {"runs": runs, "decode_tok_s_median": statistics.median(r["decode_tok_s"] for r in runs),
            "engine_decode_tok_s_median": statistics.median(r["engine_decode_tok_s"] for r in runs)}


# -- the engine in-process (its own figure) and the random CUDA model ------------------------------------
def build_random_v2(layers: int):
    import torch

    from loopcoder.model_server.plt import IQuestPLTCoderConfig, IQuestPLTCoderForCausalLM

    config = IQuestPLTCoderConfig(
        vocab_size=76800, hidden_size=5120, intermediate_size=27648, num_hidden_layers=layers,
        num_attention_heads=40, num_key_value_heads=8, head_dim=128, plt_window_size=[64, 0],
        plt_emb_scale=0.707, plt_hidden_scale=0.053, plt_normalize_per_loop=True,
        plt_gate_use_hidden_states=True, eos_token_id=[2], max_position_embeddings=131072,
    )
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = IQuestPLTCoderForCausalLM(config).eval()
    torch.set_default_dtype(torch.float32)
    return model


def engine_for(args, prefix_caching: bool = True):
    from loopcoder.model_server.engine import EngineConfig, LLMEngine
    from loopcoder.model_server.plt.tokenizer import ASSET_DIR, load_tokenizer

    fields = dict(max_model_len=args.max_model_len, max_num_seqs=args.max_batch, max_num_batched_tokens=args.chunk,
                  enable_prefix_caching=prefix_caching)
    if args.device == "cpu":
        return LLMEngine.from_config(EngineConfig(model=str(args.model), device="cpu", **fields))
    model = build_random_v2(args.layers)
    return LLMEngine(model, load_tokenizer(ASSET_DIR), EngineConfig(model="loopcoder-v2-random", device="cuda", **fields))


def serve_random(argv: list[str]) -> None:
    """The server subprocess for --device cuda: the random V2-shaped model behind the same app and uvicorn
    runner as `loopcoder serve` (engine, warm-up before /health is ready, prefix caching flag)."""
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--layers", type=int, default=14)
    p.add_argument("--max-model-len", type=int, default=32768)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--chunk", type=int, default=8192)
    p.add_argument("--prefix-caching", dest="prefix", action="store_true", default=True)
    p.add_argument("--no-prefix-caching", dest="prefix", action="store_false")
    a = p.parse_args(argv)
    a.device = "cuda"
    from loopcoder.model_server.api import bind_socket, create_app, serve_forever
    from loopcoder.model_server.engine import AsyncLLMEngine

    engine = engine_for(a, prefix_caching=a.prefix)
    front = AsyncLLMEngine(engine, SERVED, on_ready=lambda s: print(f"warm-up took {s:.1f} s", file=sys.stderr,
                                                                  flush=True))
    sock = bind_socket("127.0.0.1", a.port)
    host, port = sock.getsockname()[:2]
    print(f"serving at http://{host}:{port}/v1", file=sys.stderr, flush=True)
    serve_forever(create_app(front, SERVED), sock, "warning")


# -- main -------------------------------------------------------------------------------------------------
def run_server(args, fixture: dict, prefix_caching: bool) -> dict:
    label = "on" if prefix_caching else "off"
    print(f"prefix caching {label}: starting the server", file=sys.stderr)
    t0 = time.perf_counter()
    proc, url, log = launch(args, prefix_caching)
    try:
        wait_ready(url, proc, args.start_timeout)
        startup = time.perf_counter() - t0
        turns = replay(url, fixture, args)
        stream = http_single_stream(url, args) if prefix_caching else None
        final = metrics(url)
    finally:
        stop(proc)
    warm = [line for line in log if "warm-up took" in line]
    result = {"launch_to_ready_s": round(startup, 2), "warm_up_line": warm[0].strip() if warm else None,
              "turns": turns,
              "total_s": round(sum(t["total_s"] for t in turns), 3),
              "prefill_tokens_computed": sum(t["prefill_tokens_computed"] for t in turns),
              "prompt_tokens": sum(t["prompt_tokens"] for t in turns),
              "cached_tokens": sum(t["cached_tokens"] for t in turns),
              "server_metrics": {k: v for k, v in final.items() if "prefix_cache" in k or "prompt_tokens" in k}}
    if stream is not None:
        result["http_single_stream"] = stream
    return result


def main() -> None:
    if sys.argv[1:2] == ["serve-random"]:
        return serve_random(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    p.add_argument("--model", type=Path, help="checkpoint (cpu; default: a tiny one made in a temp dir)")
    p.add_argument("--layers", type=int, default=14, help="cuda: layers of the random V2-shaped model")
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--max-batch", type=int, default=None)
    p.add_argument("--chunk", type=int, default=None, help="max_num_batched_tokens")
    p.add_argument("--max-tokens", type=int, default=None, help="answer tokens per turn")
    p.add_argument("--stream-tokens", type=int, default=None)
    p.add_argument("--turns", type=int, default=None, help="replay only the first N requests (a quick check)")
    p.add_argument("--stream-prompt", type=int, default=64)
    p.add_argument("--stream-repeats", type=int, default=5)
    p.add_argument("--start-timeout", type=float, default=900)
    p.add_argument("--request-timeout", type=float, default=1800)
    p.add_argument("--out", type=Path)
    p.add_argument("--build-fixture", action="store_true", help="rewrite the fixture from the repository and exit")
    args = p.parse_args()
    if args.build_fixture:
        build_fixture(FIXTURE)
        print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")
        return
    cpu = args.device == "cpu"
    defaults = dict(max_model_len=24576 if cpu else 32768, max_batch=4 if cpu else 8, chunk=2048 if cpu else 8192,
                    max_tokens=8 if cpu else 32, stream_tokens=64 if cpu else 256)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if cpu and args.model is None:
        import tempfile

        from loopcoder.model_server.plt.checkpoint import init_checkpoint

        args.model = Path(init_checkpoint(Path(tempfile.mkdtemp(prefix="agent-serving-")) / "tiny", "tiny", seed=0))
    fixture = json.loads(FIXTURE.read_text())
    runs = {"prefix_caching_on": run_server(args, fixture, True), "prefix_caching_off": run_server(args, fixture, False)}
    on, off = runs["prefix_caching_on"], runs["prefix_caching_off"]
    http = on["http_single_stream"]
    result = {
        "benchmark": "agent_serving",
        "label": ("CPU smoke run: tiny checkpoint (2 layers, hidden 64, random weights) on a shared 2-core "
                  "machine; says nothing about GPU serving" if cpu else
                  f"CUDA: LoopCoder-V2 shape ({args.layers} layers), random bf16 weights"),
        "command": "python " + " ".join(sys.argv),
        "device": "cpu" if cpu else _gpu_name(),
        "host": platform.node(),
        "git_commit": _git_commit(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"},
        "fixture": {"file": str(FIXTURE.relative_to(REPO)), "requests": len(requests_of(fixture)),
                    "source_commit": fixture["source_commit"],
                    "last_prompt_tokens": on["turns"][-1]["prompt_tokens"]},
        "summary": {
            "prefill_tokens_computed_on": on["prefill_tokens_computed"],
            "prefill_tokens_computed_off": off["prefill_tokens_computed"],
            "prefill_tokens_ratio_off_over_on": round(off["prefill_tokens_computed"] / max(1, on["prefill_tokens_computed"]), 2),
            "conversation_time_on_s": on["total_s"], "conversation_time_off_s": off["total_s"],
            "conversation_speedup": round(off["total_s"] / on["total_s"], 2),
            "last_turn_ttft_on_s": on["turns"][-1]["ttft_s"], "last_turn_ttft_off_s": off["turns"][-1]["ttft_s"],
            "first_turn_ttft_after_ready_on_s": on["turns"][0]["ttft_s"],
            "launch_to_ready_on_s": on["launch_to_ready_s"],
            "http_decode_tok_s": round(http["decode_tok_s_median"], 2),
            "engine_decode_tok_s": round(http["engine_decode_tok_s_median"], 2),
            "http_over_engine": round(http["decode_tok_s_median"] / http["engine_decode_tok_s_median"], 3),
        },
        "runs": runs,
    }
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(json.dumps(result["summary"], indent=1))


def _git_commit() -> str:
    try:  # the device machine may have neither git nor .git
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0)


if __name__ == "__main__":
    main()
