"""`loopcoder serve`: the OpenAI-compatible server, in the foreground: the native engine (default) or
SGLang with the LoopCoder plugin (`--engine sglang`: this process becomes `python -m sglang.launch_server`).

torch, transformers and loopcoder.model_server are imported inside the command so the rest of the
CLI starts instantly.
"""
from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any, Literal, Optional

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console

from loopcoder.configs import ConfigError, load_config

console = Console(stderr=True)


class ServeConfig(BaseModel):
    """`loopcoder serve` settings (configs/serve.yaml). ``engine`` holds EngineConfig fields (docs/engine.md)."""

    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    served_model_name: Optional[str] = None
    api_key: Optional[str] = None
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    # forced: a grammar keeps required/named (and strict) tool calls valid; auto: also whenever tools are given
    constrain_tool_calls: Literal["forced", "auto"] = "forced"
    backend: Literal["native", "sglang"] = "native"  # --engine
    tp_size: int = Field(1, ge=1)  # SGLang's tensor parallel size (--tp-size); the native engine runs on one device
    sglang_python: Optional[str] = None  # interpreter of the SGLang environment (--sglang-python); None: this one
    engine: dict[str, Any] = Field(default_factory=dict)


def engine_config(settings: dict[str, Any]):
    """Validate the `engine` section as the engine's EngineConfig; errors become one ConfigError line."""
    from loopcoder.model_server.engine import EngineConfig

    if not settings.get("model"):
        raise ConfigError("no model to serve: pass --model DIR (or set engine.model in the config)")
    try:
        return EngineConfig.model_validate(settings)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = "engine." + ".".join(str(p) for p in err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            got = "" if err["type"] in ("extra_forbidden", "missing") else f" (got {err['input']!r})"
            problems.append(f"{key}: {msg}{got}")
        raise ConfigError("invalid config: " + "; ".join(problems)) from None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve_command(
    model: Optional[Path] = typer.Option(None, "--model", help="Checkpoint directory to serve."),
    host: Optional[str] = typer.Option(None, "--host", help="Address to listen on (default 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, "--port", help="Port to listen on (default 8000; 0 picks a free one)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda"),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto (as saved) | float32 | bfloat16 | float16"),
    num_loops: Optional[int] = typer.Option(None, "--num-loops", help="Loops per token (default: trained count)."),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", help="Requests decoded together (engine.max_num_seqs)."),
    max_model_len: Optional[int] = typer.Option(
        None, "--max-model-len", help="Prompt + output tokens per request (default: the checkpoint's context on "
        "cuda, up to 4096 on cpu)."),
    gpu_memory_utilization: Optional[float] = typer.Option(
        None, "--gpu-memory-utilization", help="Share of GPU memory for the engine in all; the KV cache gets what "
        "weights and activations leave (cuda; default 0.9)."),
    kv_cache_blocks: Optional[int] = typer.Option(
        None, "--kv-cache-blocks", help="Loop-0 KV blocks (16 tokens each by default); overrides "
        "--gpu-memory-utilization; default on cpu: max batch x full context."),
    prefix_caching: Optional[bool] = typer.Option(
        None, "--prefix-caching/--no-prefix-caching", help="Reuse the KV of shared prompt prefixes (default on)."),
    async_scheduling: Optional[bool] = typer.Option(
        None, "--async-scheduling/--no-async-scheduling", help="Launch the next decode step before reading the "
        "last one's tokens (default on with cuda, off on cpu; docs/engine.md)."),
    served_model_name: Optional[str] = typer.Option(None, "--served-model-name",
                                                    help="Model name clients use (default: checkpoint dir name)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="Require Authorization: Bearer KEY on /v1/*."),
    constrain_tool_calls: Optional[str] = typer.Option(
        None, "--constrain-tool-calls",
        help="forced (default): grammar-constrain required/named tool calls; auto: whenever tools are given."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML settings (default configs/serve.yaml)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a setting: --set engine.max_waiting=64"),
    engine: Optional[str] = typer.Option(None, "--engine", help="native (default) | sglang (GPU hosts, docs/sglang.md)"),
    tp_size: Optional[int] = typer.Option(None, "--tp-size", help="SGLang: tensor parallel size (GPUs per model)."),
    print_command: bool = typer.Option(False, "--print-command",
                                       help="SGLang: print the server command line and exit."),
    add_config_code: bool = typer.Option(False, "--add-config-code",
                                         help="SGLang: write the config module SGLang needs into the checkpoint."),
    sglang_python: Optional[str] = typer.Option(None, "--sglang-python",
                                                help="SGLang: python of the environment SGLang is installed in."),
) -> None:
    """Serve a checkpoint over an OpenAI-compatible HTTP API (chat, completions, models, health, metrics)."""
    flags = {"engine.model": str(model) if model else None, "host": host, "port": port, "engine.device": device,
             "engine.dtype": dtype, "engine.num_loops": num_loops, "engine.max_num_seqs": max_batch,
             "engine.max_model_len": max_model_len, "engine.gpu_memory_utilization": gpu_memory_utilization,
             "engine.num_kv_blocks": kv_cache_blocks, "engine.enable_prefix_caching": prefix_caching,
             "engine.async_scheduling": async_scheduling,
             "served_model_name": served_model_name, "api_key": api_key,
             "constrain_tool_calls": constrain_tool_calls, "backend": engine, "tp_size": tp_size,
             "sglang_python": sglang_python}
    # JSON is YAML: quoting keeps a value like --api-key 0123 a string
    overrides = list(overrides) + [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]
    cfg = load_config(ServeConfig, config, overrides, default="serve")
    if cfg.backend == "sglang":
        return _serve_sglang(cfg, print_command, add_config_code)
    if print_command or add_config_code or cfg.tp_size != 1 or cfg.sglang_python:
        raise ConfigError("--print-command, --add-config-code, --tp-size and --sglang-python apply to "
                          "--engine sglang only")
    engine_cfg = engine_config(cfg.engine)
    from loopcoder.model_server.api import bind_socket, create_app, serve_forever
    from loopcoder.model_server.plt.checkpoint import read_model_type

    read_model_type(Path(engine_cfg.model))  # a wrong path fails before the port is taken
    try:
        sock = bind_socket(cfg.host, cfg.port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}") from None
    from loopcoder.model_server.engine import AsyncLLMEngine
    from loopcoder.scenarios.model_cli import _quiet_transformers

    _quiet_transformers()
    from loopcoder.model_server.engine.memory import CacheSizingError

    def warmed_up(seconds: float) -> None:
        what = "kernels compiled, CUDA graphs captured" if engine_cfg.device == "cuda" else "one prefill and decode pass"
        console.print(f"warm-up took {seconds:.2f} s ({what}); /health is ready")

    with console.status(f"loading {engine_cfg.model} on {engine_cfg.device}"):
        try:
            engine = AsyncLLMEngine.from_config(engine_cfg, model_name=cfg.served_model_name, on_ready=warmed_up)
        except CacheSizingError as exc:
            raise ConfigError(str(exc)) from None
    app = create_app(engine, cfg.served_model_name, api_key=cfg.api_key, constrain_tool_calls=cfg.constrain_tool_calls)
    bound_host, bound_port = sock.getsockname()[:2]
    inner = engine.engine
    cache = inner.blocks.num_blocks * inner.cfg.block_size
    console.print(f"serving {engine.model_name!r} at http://{bound_host}:{bound_port}/v1 "
                  f"(max batch {inner.cfg.max_num_seqs}, context {engine.max_model_len}, KV cache {cache} tokens, "
                  f"prefix caching {'on' if inner.cfg.enable_prefix_caching else 'off'}, async scheduling "
                  f"{'on' if inner.async_scheduling else 'off'}); warming up; Ctrl-C stops")
    if inner.memory_plan is not None:
        console.print(inner.memory_plan.summary())
    if not _is_loopback(cfg.host) and not cfg.api_key:
        console.print(f"[yellow]listening on {cfg.host} without --api-key: anyone who can reach this port "
                      "can use the model[/]")
    serve_forever(app, sock, cfg.log_level)


_NATIVE_SIZING_DEFAULTS = {"gpu_memory_utilization": 0.9, "num_kv_blocks": None}  # configs/serve.yaml


def _serve_sglang(cfg: ServeConfig, print_command: bool, add_config_code: bool) -> None:
    """Replace this process with SGLang's server running the LoopCoder plugin (docs/sglang.md)."""
    import os
    import sys

    from loopcoder.model_server.engine import EngineConfig
    from loopcoder.model_server.sglang_plugin import launch

    settings = cfg.engine
    if cfg.constrain_tool_calls != "forced":
        raise ConfigError("--constrain-tool-calls is a native-server setting; SGLang constrains tool calls itself")
    if not settings.get("model"):
        raise ConfigError("no model to serve: pass --model DIR (or set engine.model in the config)")
    # engine.model, dtype, max_model_len and max_num_seqs have SGLang counterparts; device, max_waiting and
    # enable_prefix_caching are the native engine's own (SGLang runs on the GPUs, queues by itself and runs
    # the plugin with its radix cache off) and are not passed on; the KV sizing settings may only keep
    # their defaults (SGLang sizes its pool with its own --mem-fraction-static).
    for key, value in settings.items():
        if key == "async_scheduling":
            if value is not None:  # SGLang overlaps its own scheduling (its overlap scheduler)
                raise ConfigError("engine.async_scheduling is a native-engine setting; --engine sglang does not take it")
        elif key in ("gpu_memory_utilization", "num_kv_blocks"):
            if value != _NATIVE_SIZING_DEFAULTS[key]:
                raise ConfigError(f"engine.{key} is a native-engine setting; with --engine sglang size the KV "
                                  "pool with SGLang's own --mem-fraction-static (docs/sglang.md)")
        elif key == "loop_state_snapshots":
            if value != EngineConfig.model_fields[key].default:  # the plugin runs with SGLang's radix cache off
                raise ConfigError("engine.loop_state_snapshots is a native-engine setting; --engine sglang does not "
                                  "take it")
        elif key not in ("model", "dtype", "max_model_len", "max_num_seqs", "device", "max_waiting", "num_loops",
                         "enable_prefix_caching"):
            raise ConfigError(f"engine.{key} is a native-engine setting; --engine sglang does not take it")
        if key == "num_loops" and value is not None:
            raise ConfigError("--num-loops: the SGLang plugin runs the checkpoint's trained loop count")
    model = Path(settings["model"])
    if add_config_code:
        console.print(f"wrote {launch.write_config_code(model)} and auto_map.AutoConfig in config.json", soft_wrap=True)
    launch.read_checkpoint_config(model)
    spec = launch.LaunchSpec(model=model, host=cfg.host, port=cfg.port, tp_size=cfg.tp_size,
                             context_length=settings.get("max_model_len"),
                             max_running_requests=settings.get("max_num_seqs"),
                             # the native server's default name, so clients switch engines unchanged
                             served_model_name=cfg.served_model_name or model.resolve().name,
                             api_key=cfg.api_key, dtype=settings.get("dtype"))
    python = cfg.sglang_python or sys.executable
    argv, env = launch.launch_command(spec, python=python)
    if print_command:
        print(launch.shell_line(argv, env))
        return
    if not launch.sglang_importable(cfg.sglang_python):
        raise ConfigError(launch.INSTALL_HINT.format(python=python))
    if not _is_loopback(cfg.host) and not cfg.api_key:
        console.print(f"[yellow]listening on {cfg.host} without --api-key: anyone who can reach this port "
                      "can use the model[/]")
    console.print(f"starting SGLang {launch.SGLANG_VERSION} with the LoopCoder plugin: {launch.shell_line(argv, env)}")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(python, argv, {**os.environ, **env})
