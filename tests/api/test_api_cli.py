"""`loopcoder serve`: a real process serving on loopback, and one-line errors for bad input."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import openai
import pytest

from loopcoder.model_server.api import bind_socket
from loopcoder.scenarios.cli import main


def run_cli(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code, capsys.readouterr().err


def test_serve_runs_answers_and_stops_on_ctrl_c(tiny_checkpoint):
    proc = subprocess.Popen(
        [sys.executable, "-m", "loopcoder.scenarios.cli", "serve", "--model", str(tiny_checkpoint), "--port", "0",
         "--max-batch", "4", "--set", "engine.max_model_len=512", "--served-model-name", "cli-tiny",
         "--constrain-tool-calls", "auto"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"})
    try:
        url, lines, deadline = None, [], time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
            found = re.search(r"at (http://127\.0\.0\.1:\d+/v1)", line)
            url = found and found.group(1)
        assert url, "".join(lines)
        assert "max batch 4, context 512" in "".join(lines)
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=5, timeout=60)
        out = client.chat.completions.create(model="cli-tiny", messages=[{"role": "user", "content": "hi"}],
                                             max_tokens=4, temperature=0)
        assert out.choices[0].finish_reason in ("stop", "length") and out.usage.prompt_tokens > 0
    finally:
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[0]
    assert proc.returncode in (0, 130), rest
    assert "Traceback" not in rest


@pytest.mark.parametrize("args,message", [
    ([], "error: no model to serve: pass --model DIR (or set engine.model in the config)"),
    (["--model", "/nonexistent/ckpt", "--port", "0"], "error: checkpoint directory not found: /nonexistent/ckpt"),
    (["--model", "m", "--set", "engine.max_num_seqs=0"], "error: invalid config: engine.max_num_seqs: "),
    (["--model", "m", "--set", "engine.paged=true"], "error: invalid config: engine.paged: unknown key"),
    (["--model", "m", "--port", "70000"], "error: invalid config"),
    (["--model", "m", "--device", "tpu"], "error: invalid config: engine.device:"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, args, message):
    code, err = run_cli(capsys, "serve", *args)
    assert code == 2 and err.startswith(message) and err.count("\n") == 1, err


def test_bad_constrain_tool_calls_names_the_setting(capsys):
    code, err = run_cli(capsys, "serve", "--model", "m", "--constrain-tool-calls", "always")
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: invalid config in ") and "constrain_tool_calls: Input should be 'forced' or 'auto'" in err


def test_busy_port_is_one_line(capsys, tiny_checkpoint):
    sock = bind_socket("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        code, err = run_cli(capsys, "serve", "--model", str(tiny_checkpoint), "--port", str(port))
    finally:
        sock.close()
    assert code == 2 and err.startswith(f"error: cannot listen on 127.0.0.1:{port}: ") and err.count("\n") == 1
