"""`loopcoder train` on a real agent trajectory, `loopcoder model build-default`, and the native server on the
result: a tiny GGUF stands in for the SmolLM2 one (same import path, seconds instead of minutes)."""
from __future__ import annotations

import json

import httpx
import pytest

from loopcoder.scenarios.cli import main
from loopcoder.scenarios.demo import make_demo_repo

from agent_support import FIX_NEW, FIX_OLD, PLAN, config, episode
from nano_support import write_tiny_gguf
from scripted_server import answer, call

SCRIPT = [
    call("search", {"pattern": "def median"}, reasoning="Where is median?"),
    answer("<tool_call>\n" + json.dumps({"name": "write_plan", "arguments": PLAN}) + "\n</tool_call>"),
    call("view", {"path": "stats.py"}),
    call("str_replace", {"path": "stats.py", "old_str": FIX_OLD, "new_str": FIX_NEW}),
    call("submit", {"summary": "median fixed"}),
]


@pytest.fixture
def trajectory_dir(scripted, tmp_path):
    server = scripted(list(SCRIPT), max_model_len=None)
    repo = make_demo_repo(tmp_path / "repo")
    result, _ = episode(config(server.url), repo, tmp_path / "episodes" / "one")
    assert result.reason == "submitted"
    # a second, unfinished episode: left out by default
    server2 = scripted([call("view", {"path": "stats.py"})], max_model_len=None)
    episode(config(server2.url, budgets__steps=1), repo, tmp_path / "episodes" / "two")
    return tmp_path / "episodes"


@pytest.mark.slow
def test_train_build_default_and_serve(trajectory_dir, tmp_path, capsys):
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    run = tmp_path / "run"
    main(["train", "--data", str(trajectory_dir), "--out", str(run), "--loops", "2", "--steps", "3",
          "--lora-rank", "4", "--lr", "0.01", "--batch-tokens", "6000", "--max-len", "6000", "--gguf", str(gguf),
          "--max-minutes", "0"])
    out = capsys.readouterr().out
    assert "stopped at step 1 of 3" in out and "--resume" in out
    assert "episodes left out (stopped: steps)" in out
    from loopcoder.model_server.training.data import read_samples

    samples = read_samples(run / "samples.jsonl.gz")
    assert len(samples) == 5 and samples[0]["request"]["chat_template_kwargs"] == {"enable_thinking": True}
    main(["train", "--out", str(run), "--resume"])
    assert "finished: step 3 of 3" in capsys.readouterr().out
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["loops"] == 2 and cfg["seed"] == 0 and len(cfg["gguf_sha256"]) == 64
    assert [json.loads(line)["step"] for line in (run / "loss.jsonl").read_text().splitlines()] == [1, 2, 3]

    built = tmp_path / "built"
    main(["model", "build-default", "--delta", str(run / "delta"), "--gguf", str(gguf), "--out", str(built)])
    assert "wrote LoopCoder-Nano (2 loops)" in capsys.readouterr().out
    from loopcoder.model_server.api import ServerThread, create_app
    from loopcoder.model_server.engine import AsyncLLMEngine, EngineConfig

    engine = AsyncLLMEngine.from_config(EngineConfig(model=str(built), max_model_len=6000, max_num_seqs=2))
    server = ServerThread(create_app(engine, served_model_name="nano")).start()
    try:
        body = {**samples[2]["request"], "model": "nano", "max_tokens": 8}
        reply = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120).json()
    finally:
        server.stop()
    from loopcoder.model_server.plt.tokenizer import load_tokenizer
    from loopcoder.model_server.training.data import encode_sample

    # the server rendered the request into exactly the prompt the sample trained on
    assert reply["usage"]["prompt_tokens"] == len(encode_sample(load_tokenizer(built), samples[2]).prompt_ids)


def test_train_usage_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--out", str(tmp_path / "run")])
    assert exc.value.code == 2 and "give training data with --data" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--out", str(tmp_path / "nothing"), "--resume"])
    assert "error: no run to resume" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["model", "build-default", "--delta", str(tmp_path / "missing"), "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert err.startswith("error: no delta in") and err.count("\n") == 1


def test_a_runs_gzipped_samples_file_is_training_data(tmp_path):
    import gzip

    from loopcoder.scenarios.train_cli import load_training_samples
    from nano_support import samples

    want = samples(3)
    gz = tmp_path / "samples.jsonl.gz"
    gz.write_bytes(gzip.compress("".join(json.dumps(s) + "\n" for s in want).encode()))
    plain = tmp_path / "more.jsonl"
    plain.write_text(json.dumps(want[0]) + "\n")
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_text("not gzip at all\n")
    got, counts = load_training_samples([gz, plain, fake])
    assert got == want + want[:1]
    assert counts["sample files"] == 2 and counts["files that are not JSONL records"] == 1
    # sample files alone need neither the agent nor its tree-sitter (a GPU host may lack them)
    import subprocess
    import sys

    probe = ("import sys; from pathlib import Path; from loopcoder.scenarios.train_cli import load_training_samples; "
             f"assert len(load_training_samples([Path({str(gz)!r})])[0]) == 3; "
             "print(sorted(m for m in sys.modules if m.startswith(('tree_sitter', 'loopcoder.agent'))))")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "[]\n"
