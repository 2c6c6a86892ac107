"""Terminal tasks in their own formats: Terminal-Bench 1.x and Terminal-Bench 2.0 / Harbor.

1.x (``task.yaml`` + ``Dockerfile`` + ``docker-compose.yaml`` + ``run-tests.sh`` + ``tests/`` +
``solution.sh`` or ``solution.yaml``) as the ``terminal-bench`` package reads it (TrialHandler's ``Task``):
``instruction``, ``parser_name`` (pytest), ``max_agent_timeout_sec`` (360), ``max_test_timeout_sec`` (60),
``run_tests_in_same_shell``; the compose file's ``client`` service gives the build context, Dockerfile,
``environment`` (``${T_BENCH_*}`` substituted as the harness does) and ``working_dir``.

2.0 (``instruction.md`` + ``task.toml`` + ``environment/Dockerfile`` + ``tests/test.sh`` +
``solution/solve.sh``) as the ``harbor`` package reads it (``TaskConfig``): ``[agent] timeout_sec``,
``[verifier] timeout_sec`` (600) and ``env``, ``[environment] build_timeout_sec``, ``cpus``, ``memory_mb``
(or the older ``memory = "2G"``), ``workdir``, ``env``, ``network_mode`` / ``allow_internet``,
``[solution] env``. Unknown keys are kept out of the way (tasks carry metadata of every kind).

Network: ``none`` unless the task declares one (1.x: the client service's ``network_mode``, 2.0:
``network_mode = "public"`` or ``allow_internet = true``). Harbor's own default is public; ours is none,
so a task that needs the network must say so.
"""
from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from loopcoder.runtime.dockerfile import parse as parse_dockerfile

V1, V2 = "1.x", "2.0"
TEST_DIR = "/tests"  # both generations copy the tests here (DockerComposeManager.CONTAINER_TEST_DIR, Harbor)
DEFAULT_WORKDIR = "/app"
# What terminal-bench's harness sets for docker-compose.yaml (DockerComposeEnvVars, prefixed T_BENCH_).
COMPOSE_VARS = {
    "T_BENCH_TEST_DIR": TEST_DIR,
    "T_BENCH_CONTAINER_LOGS_PATH": "/logs",
    "T_BENCH_CONTAINER_AGENT_LOGS_PATH": "/agent-logs",
}
PARSERS = ("pytest",)  # parser_name values this runner can grade (terminal-bench's default and most common)


class TaskError(ValueError):
    """A task folder that cannot be run as it is; the message names the file and the problem."""


@dataclass
class SolutionCommand:
    """One step of a 1.x ``solution.yaml`` (terminal-bench's TerminalCommand)."""

    command: str
    max_timeout_sec: float = 180.0
    block: bool = False


@dataclass
class TerminalTask:
    name: str
    path: Path
    generation: Literal["1.x", "2.0"]
    instruction: str
    context: Path  # docker build context
    dockerfile: Path
    workdir: str | None  # declared by the task (compose working_dir / [environment] workdir); None: see runner
    network: str = "none"  # none | bridge
    env: dict[str, str] = field(default_factory=dict)  # container environment during agent and tests
    agent_timeout_s: float = 360.0
    test_timeout_s: float = 60.0
    build_timeout_s: float = 600.0
    tests_dir: Path | None = None
    test_script: Path | None = None  # 1.x run-tests.sh, 2.0 tests/test.sh
    parser_name: str = "pytest"  # 1.x only
    tests_in_same_shell: bool = False  # 1.x run_tests_in_same_shell: tests see the agent's shell state
    solution_sh: Path | None = None  # 1.x solution.sh or 2.0 solution/solve.sh
    solution_dir: Path | None = None  # 2.0 solution/ (copied whole to /solution)
    solution_yaml: list[SolutionCommand] | None = None  # 1.x solution.yaml
    solution_env: dict[str, str] = field(default_factory=dict)
    verifier_env: dict[str, str] = field(default_factory=dict)
    cpus: float | None = None
    memory_mb: int | None = None

    @property
    def dockerfile_sets_workdir(self) -> bool:
        """Whether the final build stage has a WORKDIR (else the image's comes from its FROM image)."""
        parsed = parse_dockerfile(self.dockerfile.read_text(encoding="utf-8"))
        if not parsed.stages:
            return False
        last = parsed.stages[-1].instruction
        return any(i.keyword == "WORKDIR" and i.first_line > last.first_line for i in parsed.instructions)


def load_task(path: str | Path) -> TerminalTask:
    """Read a task folder of either generation; TaskError (one line) when it is neither or is broken."""
    root = Path(path).resolve()
    if not root.is_dir():
        raise TaskError(f"{path}: not a folder")
    if (root / "task.toml").is_file():
        return _load_v2(root)
    if (root / "task.yaml").is_file():
        return _load_v1(root)
    raise TaskError(f"{path}: neither task.yaml (Terminal-Bench 1.x) nor task.toml (Terminal-Bench 2.0 / Harbor)")


def _timeout(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise TaskError(f"{where} must be a positive number of seconds, not {value!r}")
    return float(value)


def _str_map(value, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TaskError(f"{where} must be a table of NAME = value")
    out = {}
    for k, v in value.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(k)):
            raise TaskError(f"{where}: bad environment variable name {k!r}")
        out[str(k)] = "" if v is None else str(v)
    return out


# -- Terminal-Bench 1.x ---------------------------------------------------------------------------------------

def _load_v1(root: Path) -> TerminalTask:
    where = root / "task.yaml"
    try:
        data = yaml.safe_load(where.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise TaskError(f"{where}: not valid YAML ({' '.join(str(exc).split())[:200]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("instruction"), str) or not data["instruction"].strip():
        raise TaskError(f"{where}: needs an instruction (text)")
    parser_name = str(data.get("parser_name", "pytest"))
    if parser_name not in PARSERS:
        raise TaskError(f"{where}: parser_name {parser_name!r} is not supported here (supported: {', '.join(PARSERS)})")
    task = TerminalTask(
        name=root.name, path=root, generation=V1, instruction=data["instruction"],
        context=root, dockerfile=root / "Dockerfile", workdir=None, parser_name=parser_name,
        agent_timeout_s=_timeout(data.get("max_agent_timeout_sec", 360.0), f"{where}: max_agent_timeout_sec"),
        test_timeout_s=_timeout(data.get("max_test_timeout_sec", 60.0), f"{where}: max_test_timeout_sec"),
        tests_dir=root / "tests" if (root / "tests").is_dir() else None,
        test_script=root / "run-tests.sh",
        env={"TEST_DIR": TEST_DIR},
        tests_in_same_shell=bool(data.get("run_tests_in_same_shell", False)),
    )
    if not task.test_script.is_file():
        raise TaskError(f"{root}: no run-tests.sh")
    _read_compose(root, task)
    if not task.dockerfile.is_file():
        raise TaskError(f"{root}: no Dockerfile at {task.dockerfile}")
    if (root / "solution.sh").is_file():
        task.solution_sh = root / "solution.sh"
    elif (root / "solution.yaml").is_file():
        task.solution_yaml = _solution_yaml(root / "solution.yaml")
    return task


def _subst(text: str) -> str:
    """${VAR} and ${VAR:-default} of the harness's variables (others: empty, as compose does)."""
    def one(m: re.Match) -> str:
        name, default = m.group(1), m.group(3)
        return COMPOSE_VARS.get(name, default or "")
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?-([^}]*))?\}", one, text)


def _read_compose(root: Path, task: TerminalTask) -> None:
    where = root / "docker-compose.yaml"
    if not where.is_file():
        where = root / "docker-compose.yml"
    if not where.is_file():
        return  # the Dockerfile alone: the harness's defaults
    try:
        data = yaml.safe_load(where.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise TaskError(f"{where}: not valid YAML ({' '.join(str(exc).split())[:200]})") from None
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, dict) or not services:
        raise TaskError(f"{where}: no services")
    if "client" not in services:
        raise TaskError(f"{where}: no 'client' service (the container the agent works in)")
    if len(services) > 1:
        others = ", ".join(sorted(n for n in services if n != "client"))
        raise TaskError(f"{where}: services besides 'client' ({others}) are not supported; only single-container "
                        "tasks run here")
    client = services["client"] or {}
    build = client.get("build", ".")
    if isinstance(build, str):
        build = {"context": build}
    if not isinstance(build, dict):
        raise TaskError(f"{where}: client.build must be a path or a table")
    task.context = (root / _subst(str(build.get("context", ".")))).resolve()
    if not task.context.is_relative_to(root):
        raise TaskError(f"{where}: build context {task.context} lies outside the task folder")
    task.dockerfile = (task.context / _subst(str(build.get("dockerfile", "Dockerfile")))).resolve()
    env = client.get("environment") or {}
    if isinstance(env, list):
        pairs = {}
        for item in env:
            name, _, value = _subst(str(item)).partition("=")
            pairs[name] = value
        env = pairs
    task.env.update(_str_map({k: _subst(str(v)) if v is not None else "" for k, v in env.items()},
                             f"{where}: client.environment"))
    if client.get("working_dir"):
        task.workdir = _subst(str(client["working_dir"]))
    mode = client.get("network_mode")
    if mode is not None:
        if mode not in ("none", "bridge", "default"):
            raise TaskError(f"{where}: network_mode {mode!r} is not supported (none or bridge)")
        task.network = "none" if mode == "none" else "bridge"


def _solution_yaml(where: Path) -> list[SolutionCommand]:
    try:
        data = yaml.safe_load(where.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise TaskError(f"{where}: not valid YAML ({' '.join(str(exc).split())[:200]})") from None
    if not isinstance(data, list) or not all(isinstance(d, dict) and isinstance(d.get("command"), str) for d in data):
        raise TaskError(f"{where}: must be a list of {{command: ..., max_timeout_sec: ..., block: ...}}")
    return [SolutionCommand(d["command"], _timeout(d.get("max_timeout_sec", 180.0), f"{where}: max_timeout_sec"),
                            bool(d.get("block", False))) for d in data]


# -- Terminal-Bench 2.0 / Harbor --------------------------------------------------------------------------------

def _load_v2(root: Path) -> TerminalTask:
    where = root / "task.toml"
    try:
        data = tomllib.loads(where.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise TaskError(f"{where}: not valid TOML ({exc})") from None
    instruction_path = root / "instruction.md"
    if not instruction_path.is_file() or not instruction_path.read_text(encoding="utf-8").strip():
        raise TaskError(f"{root}: no instruction.md (or it is empty)")
    agent, verifier = data.get("agent") or {}, data.get("verifier") or {}
    env_cfg, solution = data.get("environment") or {}, data.get("solution") or {}
    for name, section in (("agent", agent), ("verifier", verifier), ("environment", env_cfg), ("solution", solution)):
        if not isinstance(section, dict):
            raise TaskError(f"{where}: [{name}] must be a table")
    if data.get("steps"):
        raise TaskError(f"{where}: multi-step tasks ([[steps]]) are not supported")
    task = TerminalTask(
        name=root.name, path=root, generation=V2, instruction=instruction_path.read_text(encoding="utf-8"),
        context=root / "environment", dockerfile=root / "environment" / "Dockerfile",
        workdir=str(env_cfg["workdir"]) if env_cfg.get("workdir") else None,
        agent_timeout_s=_timeout(agent.get("timeout_sec") or 600.0, f"{where}: agent.timeout_sec"),
        test_timeout_s=_timeout(verifier.get("timeout_sec", 600.0), f"{where}: verifier.timeout_sec"),
        build_timeout_s=_timeout(env_cfg.get("build_timeout_sec", 600.0), f"{where}: environment.build_timeout_sec"),
        tests_dir=root / "tests",
        test_script=root / "tests" / "test.sh",
        env=_str_map(env_cfg.get("env"), f"{where}: environment.env"),
        verifier_env=_str_map(verifier.get("env"), f"{where}: verifier.env"),
        solution_env=_str_map(solution.get("env"), f"{where}: solution.env"),
    )
    if env_cfg.get("docker_image") and not task.dockerfile.is_file():
        raise TaskError(f"{where}: environment.docker_image without environment/Dockerfile is not supported "
                        "(images are built here, never pulled for a task)")
    if not task.dockerfile.is_file():
        raise TaskError(f"{root}: no environment/Dockerfile")
    if not task.test_script.is_file():
        raise TaskError(f"{root}: no tests/test.sh")
    if (root / "solution" / "solve.sh").is_file():
        task.solution_dir, task.solution_sh = root / "solution", root / "solution" / "solve.sh"
    mode = env_cfg.get("network_mode")
    if mode is None:
        mode = "public" if env_cfg.get("allow_internet") else "no-network"
    if mode not in ("public", "no-network"):
        raise TaskError(f"{where}: environment.network_mode {mode!r} is not supported (public or no-network)")
    task.network = "bridge" if mode == "public" else "none"
    if env_cfg.get("cpus") is not None:
        task.cpus = _timeout(env_cfg["cpus"], f"{where}: environment.cpus")
    memory = env_cfg.get("memory_mb")
    if memory is None and isinstance(env_cfg.get("memory"), str):
        m = re.fullmatch(r"\s*([\d.]+)\s*([GMK])\s*", env_cfg["memory"].upper())
        if not m:
            raise TaskError(f"{where}: environment.memory {env_cfg['memory']!r} is not like '2G' or '512M'")
        memory = float(m.group(1)) * {"G": 1024, "M": 1, "K": 1 / 1024}[m.group(2)]
    if memory is not None:
        task.memory_mb = int(_timeout(memory, f"{where}: environment.memory_mb"))
    return task
