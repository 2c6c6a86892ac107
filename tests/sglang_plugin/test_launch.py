"""`loopcoder serve --engine sglang`: the exact SGLang command, the install hint, the checkpoint checks."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from loopcoder.model_server.sglang_plugin import launch

from cli_support import run_cli


def checkpoint(tmp_path, model_type="iquestpltcoder", arch="IQuestPLTCoderForCausalLM", auto_map=True):
    config = {"model_type": model_type, "architectures": [arch], "num_hidden_layers": 2}
    if auto_map:
        config["auto_map"] = {"AutoConfig": "configuration_loopcoder.IQuestPLTCoderConfig"}
    path = tmp_path / "LoopCoder-V2"
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_launch_command_is_exact(tmp_path):
    spec = launch.LaunchSpec(model=tmp_path / "m", host="0.0.0.0", port=30000, tp_size=4, context_length=32768,
                             max_running_requests=64, served_model_name="loopcoder", api_key="k", dtype="bfloat16")
    argv, env = launch.launch_command(spec, python="/opt/venv/bin/python")
    assert env == {"SGLANG_EXTERNAL_MODEL_PACKAGE": "loopcoder.model_server.sglang_plugin"}
    assert argv == ["/opt/venv/bin/python", "-m", "sglang.launch_server", "--model-path", str(tmp_path / "m"),
                    "--host", "0.0.0.0", "--port", "30000", "--tp-size", "4", "--trust-remote-code",
                    "--reasoning-parser", "qwen3", "--tool-call-parser", "qwen25", "--disable-radix-cache",
                    "--disable-prefill-cuda-graph", "--context-length", "32768", "--max-running-requests", "64",
                    "--served-model-name", "loopcoder", "--api-key", "k", "--dtype", "bfloat16"]


def test_serve_print_command_maps_every_flag(tmp_path, capsys):
    model = checkpoint(tmp_path)
    code, out, err = run_cli(capsys, "serve", "--engine", "sglang", "--model", str(model), "--tp-size", "2",
                             "--port", "30001", "--max-model-len", "8192", "--max-batch", "16", "--dtype", "bfloat16",
                             "--print-command")
    assert code == 0, err
    assert out == (f"SGLANG_EXTERNAL_MODEL_PACKAGE=loopcoder.model_server.sglang_plugin {sys.executable} -m "
                   f"sglang.launch_server --model-path {model} --host 127.0.0.1 --port 30001 --tp-size 2 "
                   "--trust-remote-code --reasoning-parser qwen3 --tool-call-parser qwen25 --disable-radix-cache "
                   "--disable-prefill-cuda-graph --context-length 8192 --max-running-requests 16 "
                   "--served-model-name LoopCoder-V2 --dtype bfloat16\n")


def test_without_sglang_one_line_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(launch, "sglang_importable", lambda python: False)
    code, out, err = run_cli(capsys, "serve", "--engine", "sglang", "--model", str(checkpoint(tmp_path)))
    assert code == 2
    assert err == (f"error: SGLang is not installed for {sys.executable}: pip install 'loopcoder[sglang]', or pass "
                   "--sglang-python with the interpreter of an SGLang 0.5.23 environment (docs/sglang.md)\n")


def test_sglang_is_not_importable_on_this_machine():
    """The check itself, unpatched: SGLang is not installed where these tests run, in this interpreter or
    (through a subprocess probe) another one."""
    assert launch.sglang_importable() is False
    assert launch.sglang_importable(sys.executable) is False
    assert launch.sglang_importable("/nonexistent/python") is False


def test_sglang_python_is_probed_and_used(tmp_path, capsys, monkeypatch):
    """An interpreter whose environment has an importable ``sglang`` and the plugin passes the probe."""
    fake = tmp_path / "site"
    (fake / "sglang").mkdir(parents=True)
    (fake / "sglang" / "__init__.py").write_text("")
    wrapper = tmp_path / "python"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={fake} exec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    assert launch.sglang_importable(str(wrapper)) is True
    calls = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: calls.append((path, argv)))
    code, _, err = run_cli(capsys, "serve", "--engine", "sglang", "--model", str(checkpoint(tmp_path)),
                           "--sglang-python", str(wrapper))
    assert code == 0, err
    assert calls[0][0] == str(wrapper) and calls[0][1][:3] == [str(wrapper), "-m", "sglang.launch_server"]


def test_serve_execs_the_server_with_the_plugin_environment(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(launch, "sglang_importable", lambda python: True)
    monkeypatch.setattr(os, "execve", lambda path, argv, env: calls.append((path, argv, env)))
    model = checkpoint(tmp_path)
    code, _, err = run_cli(capsys, "serve", "--engine", "sglang", "--model", str(model))
    assert code == 0, err
    (path, argv, env), = calls
    assert path == sys.executable and argv[:3] == [sys.executable, "-m", "sglang.launch_server"]
    assert env["SGLANG_EXTERNAL_MODEL_PACKAGE"] == "loopcoder.model_server.sglang_plugin"
    assert env["PATH"] == os.environ["PATH"]
    assert "starting SGLang 0.5.23 with the LoopCoder plugin" in err


@pytest.mark.parametrize("args,message", [
    (["--num-loops", "3"], "error: --num-loops: the SGLang plugin runs the checkpoint's trained loop count"),
    (["--set", "engine.decode_mode=sequential"], "error: engine.decode_mode is a native-engine setting"),
    (["--constrain-tool-calls", "auto"], "error: --constrain-tool-calls is a native-server setting"),
    (["--gpu-memory-utilization", "0.5"], "error: engine.gpu_memory_utilization is a native-engine setting"),
    (["--kv-cache-blocks", "100"], "error: engine.num_kv_blocks is a native-engine setting"),
    (["--no-async-scheduling"], "error: engine.async_scheduling is a native-engine setting"),
    (["--set", "engine.loop_state_snapshots=4"], "error: engine.loop_state_snapshots is a native-engine setting"),
])
def test_native_only_settings_are_refused(tmp_path, capsys, args, message):
    code, _, err = run_cli(capsys, "serve", "--engine", "sglang", "--model", str(checkpoint(tmp_path)), *args)
    assert code == 2 and err.startswith(message) and err.count("\n") == 1, err


def test_sglang_only_flags_are_refused_for_the_native_engine(tmp_path, capsys):
    code, _, err = run_cli(capsys, "serve", "--model", str(checkpoint(tmp_path)), "--tp-size", "2")
    assert code == 2 and "apply to --engine sglang only" in err


@pytest.mark.parametrize("kind,message", [
    ("no-auto-map", "has no auto_map.AutoConfig"),
    ("wrong-arch", "architectures[0] is 'LlamaForCausalLM'"),
    ("llama", "model_type 'llama' is not served"),
    ("missing", "no config.json in"),
])
def test_checkpoint_problems_are_one_line(tmp_path, capsys, kind, message):
    if kind == "missing":
        model = tmp_path / "nothing"
    elif kind == "no-auto-map":
        model = checkpoint(tmp_path, auto_map=False)
    elif kind == "wrong-arch":
        model = checkpoint(tmp_path, arch="LlamaForCausalLM")
    else:
        model = checkpoint(tmp_path, model_type="llama", arch="LlamaForCausalLM")
    code, _, err = run_cli(capsys, "serve", "--engine", "sglang", "--model", str(model), "--print-command")
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_add_config_code_makes_autoconfig_resolve_the_project_class_in_a_fresh_process(tmp_path, capsys):
    model = checkpoint(tmp_path, auto_map=False)
    code, out, err = run_cli(capsys, "serve", "--engine", "sglang", "--model", str(model), "--add-config-code",
                             "--print-command")
    assert code == 0, err
    assert json.loads((model / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration_loopcoder.IQuestPLTCoderConfig"}
    # what SGLang's launcher does in a process that never imported the plugin
    probe = ("from transformers import AutoConfig; c = AutoConfig.from_pretrained(%r, trust_remote_code=True); "
             "print(type(c).__module__, type(c).__name__)" % str(model))
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HOME": str(tmp_path / "hf")})
    assert result.stdout.split() == ["loopcoder.model_server.plt.configuration", "IQuestPLTCoderConfig"], result.stderr
