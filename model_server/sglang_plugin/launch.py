"""The ``python -m sglang.launch_server`` command that serves a LoopCoder checkpoint with this plugin.

No SGLang import here: ``loopcoder serve --engine sglang`` builds the command, checks that SGLang can be
imported by the interpreter that will run it, and replaces itself with the server process.

Flags are SGLang 0.5.23's (``python/sglang/srt/arg_groups/fields`` and ``server_args.py``):
- ``--disable-radix-cache``: prefix reuse follows the native engine's exactness rule (a PLT prefix is
  reusable only with the CLP carry and rings of its last token, which a radix node does not hold);
- ``--disable-prefill-cuda-graph``: the plugin's extend path reads the batch's lengths on the host;
  decode is captured as usual;
- ``--reasoning-parser qwen3`` (``<think>...</think>``), ``--tool-call-parser qwen25``
  (``<tool_call>\\n{json}\\n</tool_call>``): the checkpoints' ChatML template (plt_spec.md 8.3);
- ``--trust-remote-code``: SGLang reads config.json with AutoConfig in processes that never import this
  plugin, so the checkpoint must name its config class in ``auto_map`` (the released LoopCoder-V2 ships
  one; ``write_config_code`` adds a one-line module that re-exports this project's config class).
"""
from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError

SGLANG_VERSION = "0.5.23"  # the version this plugin is written against (pyproject's `sglang` extra)
PACKAGE = "loopcoder.model_server.sglang_plugin"
REASONING_PARSER = "qwen3"
TOOL_CALL_PARSER = "qwen25"
INSTALL_HINT = ("SGLang is not installed for {python}: pip install 'loopcoder[sglang]', or pass --sglang-python "
                "with the interpreter of an SGLang 0.5.23 environment (docs/sglang.md)")
ARCHITECTURES = {"iquestpltcoder": "IQuestPLTCoderForCausalLM", "iquestloopcoder": "IQuestLoopCoderForCausalLM"}
_CONFIG_CLASS = {"iquestpltcoder": "IQuestPLTCoderConfig", "iquestloopcoder": "IQuestLoopCoderConfig"}
CONFIG_MODULE = "configuration_loopcoder"


@dataclass(frozen=True)
class LaunchSpec:
    """What ``loopcoder serve --engine sglang`` passes on (None: SGLang's default)."""

    model: Path
    host: str = "127.0.0.1"
    port: int = 8000
    tp_size: int = 1
    context_length: int | None = None
    max_running_requests: int | None = None
    served_model_name: str | None = None
    api_key: str | None = None
    dtype: str | None = None


def read_checkpoint_config(model: Path) -> dict:
    """config.json of a LoopCoder checkpoint, checked for what SGLang needs; CheckpointError otherwise."""
    path = Path(model) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"no config.json in {model}")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise CheckpointError(f"{path}: model_type {model_type!r} is not served by the LoopCoder SGLang plugin "
                              f"(supported: {', '.join(ARCHITECTURES)})")
    arch = (config.get("architectures") or [None])[0]
    if arch != ARCHITECTURES[model_type]:
        raise CheckpointError(f"{path}: architectures[0] is {arch!r}; SGLang picks the model class by it, "
                              f"expected {ARCHITECTURES[model_type]!r}")
    if not (config.get("auto_map") or {}).get("AutoConfig"):
        raise CheckpointError(
            f"{path} has no auto_map.AutoConfig: SGLang reads the config before it imports model plugins; "
            "add --add-config-code to write the config module into the checkpoint (docs/sglang.md)")
    return config


def write_config_code(model: Path) -> Path:
    """Make the checkpoint name this project's config class in config.json's auto_map: writes
    ``configuration_loopcoder.py`` (one import) and adds ``auto_map.AutoConfig``. Returns the module path."""
    path = Path(model) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"no config.json in {model}")
    config = json.loads(path.read_text())
    model_type = config.get("model_type")
    if model_type not in _CONFIG_CLASS:
        raise CheckpointError(f"{path}: model_type {model_type!r} is not a LoopCoder model")
    cls = _CONFIG_CLASS[model_type]
    module = Path(model) / f"{CONFIG_MODULE}.py"
    module.write_text(f'"""Config class of this checkpoint, for AutoConfig with trust_remote_code (SGLang)."""\n'
                      f"from loopcoder.model_server.plt.configuration import {cls}  # noqa: F401\n")
    config.setdefault("auto_map", {})["AutoConfig"] = f"{CONFIG_MODULE}.{cls}"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return module


def launch_command(spec: LaunchSpec, python: str = "python") -> tuple[list[str], dict[str, str]]:
    """argv and the extra environment of the SGLang server for ``spec``."""
    argv = [python, "-m", "sglang.launch_server",
            "--model-path", str(spec.model),
            "--host", spec.host,
            "--port", str(spec.port),
            "--tp-size", str(spec.tp_size),
            "--trust-remote-code",
            "--reasoning-parser", REASONING_PARSER,
            "--tool-call-parser", TOOL_CALL_PARSER,
            "--disable-radix-cache",
            "--disable-prefill-cuda-graph"]
    if spec.context_length is not None:
        argv += ["--context-length", str(spec.context_length)]
    if spec.max_running_requests is not None:
        argv += ["--max-running-requests", str(spec.max_running_requests)]
    if spec.served_model_name:
        argv += ["--served-model-name", spec.served_model_name]
    if spec.api_key:
        argv += ["--api-key", spec.api_key]
    if spec.dtype and spec.dtype != "auto":
        argv += ["--dtype", spec.dtype]
    return argv, {"SGLANG_EXTERNAL_MODEL_PACKAGE": PACKAGE}


def shell_line(argv: list[str], env: dict[str, str]) -> str:
    """The command as one shell line (environment first), e.g. for --print-command."""
    return " ".join([f"{k}={shlex.quote(v)}" for k, v in env.items()] + [shlex.quote(a) for a in argv])


def sglang_importable(python: str | None = None) -> bool:
    """Whether ``python`` (None: this interpreter) can import SGLang and this plugin, checked without
    importing SGLang (that takes seconds)."""
    if python is None:
        return importlib.util.find_spec("sglang") is not None
    probe = ("import importlib.util as u, sys; "
             f"sys.exit(0 if u.find_spec('sglang') and u.find_spec({PACKAGE!r}) else 1)")
    try:
        return subprocess.run([python, "-c", probe], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
